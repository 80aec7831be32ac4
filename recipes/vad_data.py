"""Labelled VAD clips: real (FSDD) and synthetic (espeak-ng) speech in synthetic car noise.

Each clip is a few seconds of background (car noise mostly, other noise, or near-silence), with a
speech recording placed at a random offset in most clips and none in the rest; SNR ~ U(-5, 20) dB.
A 10 ms frame is labelled speech when the clean speech in it is within 35 dB of the recording's
loudest frame. Training and evaluation draw disjoint speakers/takes and voices.
"""

from __future__ import annotations

import subprocess
import tempfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from nim4_edge.recipes.noise import car_noise, mix_at_snr, other_noise
from nim4_edge.runtime.audio import load_audio
from nim4_edge.runtime.features import SAMPLE_RATE_HZ

RATE = SAMPLE_RATE_HZ
FRAME = 160
FSDD_DIR = Path(__file__).resolve().parents[2] / "shared" / "data" / "fsdd"

TRAIN_VOICES = ("en-us", "en-gb", "en-us+f3", "en-gb+m3", "en-us+m7", "cmn-latn-pinyin", "en-029")
HELD_OUT_VOICES = ("en-gb-scotland", "en-us+f4", "cmn-latn-pinyin+f2")
ENGLISH_TEXTS = (
    "navigate to the nearest charging station", "call mom on her mobile", "play the next song please",
    "set the temperature to twenty two degrees", "open the driver window halfway", "turn the volume up",
    "find a parking garage near the airport", "read my last message", "cancel", "yes please",
)
PINYIN_TEXTS = (
    "dao3 hang2 dao4 zui4 jin4 de5 chong1 dian4 zhan4", "da3 dian4 hua4 gei3 ma1 ma5", "bo1 fang4 xia4 yi1 shou3 ge1",
    "ba3 kong1 tiao2 wen1 du4 tiao2 dao4 er4 shi2 er4 du4", "da3 kai1 che1 chuang1", "qu3 xiao1",
)


@dataclass
class Clip:
    audio: np.ndarray  # float32 (n,) at 16 kHz
    labels: np.ndarray  # bool (n // 160,) speech per 10 ms frame
    kind: str  # "speech" or "noise-only"
    snr_db: float | None


def fsdd_recordings(split: str, fsdd_dir: Path = FSDD_DIR) -> list[Path]:
    """FSDD's own split: takes 0-4 are test, 5-49 train (its README)."""
    files = sorted(fsdd_dir.glob("*.wav"))
    take = lambda p: int(p.stem.split("_")[-1])  # noqa: E731
    return [p for p in files if (take(p) < 5) == (split == "test")]


def espeak(text: str, voice: str, speed: int, pitch: int) -> np.ndarray:
    with tempfile.NamedTemporaryFile(suffix=".wav") as f:
        subprocess.run(["espeak-ng", "-v", voice, "-s", str(speed), "-p", str(pitch), "-w", f.name, text],
                       check=True, capture_output=True)
        return load_audio(Path(f.name), RATE)


def speech_pool(split: str, rng: np.random.Generator, espeak_count: int) -> list[np.ndarray]:
    pool = [load_audio(p, RATE) for p in fsdd_recordings(split)]
    voices = TRAIN_VOICES if split == "train" else HELD_OUT_VOICES
    for _ in range(espeak_count):
        voice = voices[rng.integers(len(voices))]
        texts = PINYIN_TEXTS if voice.startswith("cmn") else ENGLISH_TEXTS
        pool.append(espeak(texts[rng.integers(len(texts))], voice, int(rng.integers(120, 200)), int(rng.integers(20, 80))))
    return pool


def frame_labels(speech: np.ndarray, floor_db: float = 35.0) -> np.ndarray:
    frames = speech[: len(speech) // FRAME * FRAME].reshape(-1, FRAME).astype(np.float64)
    energy_db = 10 * np.log10(np.mean(frames ** 2, axis=1) + 1e-12)
    return energy_db > max(energy_db.max() - floor_db, -70.0)


def make_clip(pool: list[np.ndarray], rng: np.random.Generator, seconds: float = 4.0, speech_prob: float = 0.7,
              snr_db: float | None = None, background: str | None = None) -> Clip:
    n = int(seconds * RATE) // FRAME * FRAME
    background = background or rng.choice(["car", "car", "car", "other", "quiet"])
    if background == "car":
        noise = car_noise(seconds, RATE, rng)[:n]
    elif background == "other":
        noise = other_noise(seconds, RATE, rng)[:n]
    else:
        noise = other_noise(seconds, RATE, rng)[:n] * 1e-3
    clean = np.zeros(n, np.float32)
    labels = np.zeros(n // FRAME, bool)
    kind = "noise-only"
    if rng.uniform() < speech_prob:
        speech = pool[rng.integers(len(pool))][: n - FRAME]
        start = int(rng.integers(0, n - len(speech))) // FRAME * FRAME
        clean[start : start + len(speech)] = speech
        seg = frame_labels(speech)
        labels[start // FRAME : start // FRAME + len(seg)] = seg
        kind = "speech"
    snr = float(rng.uniform(-5, 20)) if snr_db is None else snr_db
    audio = mix_at_snr(clean, noise, snr, np.repeat(labels, FRAME)[:n]) if kind == "speech" else noise
    gain = 10 ** (rng.uniform(-20, 0) / 20) * 0.9 / max(1e-6, float(np.abs(audio).max()))
    return Clip((audio * gain).astype(np.float32), labels, kind, snr if kind == "speech" else None)
