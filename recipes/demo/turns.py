"""The end-of-turn test sets: demo test-set utterances as said, and the same with a pause inside.

    python -m nim4_edge.recipes.demo.turns --out work/demo/turns [--split test|dev]

Writes OUT/plain.jsonl and OUT/paused.jsonl (manifests for `nim4-edge eval --testset`) and their WAVs:
    plain   the demo test set's espeak utterances of two words or more (the same texts, voices, speeds,
            pitches, noise and levels as recipes/demo/corpus.py draws them)
    paused  each of them with one pause of 300-700 ms at a word boundary (SSML <break/>, so the
            sentence keeps its intonation, as a driver who hesitates mid-command does)
Every row carries `speech_end_s` (where the last word ends: the last 10 ms frame of the clean speech
within 40 dB of its loudest, before noise), which `eval` measures end-of-speech -> final latency from;
paused rows carry `pause_s` [start, end] (the measured silence). Both sets get 1.5 s more trailing
padding than the corpus's test clips, so every turn ends by the endpointer, not by the end of the file.

`--split dev` draws other utterances (seed 1) with the same held-out voices: the end-of-turn thresholds
are chosen on it, never on the test split.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import numpy as np
from pypinyin.seg.simpleseg import seg
from tqdm import tqdm

from nim4_edge.recipes.demo.corpus import ClipSpec, espeak, plan, render_placed, spoken_form
from nim4_edge.recipes.demo.examples import write_pcm16
from nim4_edge.recipes.demo.text import Utterance
from nim4_edge.runtime.atomic import atomic_directory
from nim4_edge.runtime.features import SAMPLE_RATE_HZ

RATE = SAMPLE_RATE_HZ
FRAME = RATE // 100  # 10 ms
PAUSE_MS = (300, 700)
EXTRA_TAIL_S = 1.5
LOUD_DB = -40.0  # a 10 ms frame within this of the loudest is speech (clean TTS: digital silence between)


def words_of(utterance: Utterance) -> list[str]:
    """The spoken form in words: English words; Mandarin words (pypinyin's phrase segmentation) as
    pinyin syllables with tone numbers."""
    if utterance.language != "zh":
        return utterance.text.split()
    return [spoken_form(Utterance(piece, "zh", "")) for piece in seg(utterance.text) if piece.strip()]


def speech_frames(speech: np.ndarray) -> np.ndarray:
    """Per 10 ms frame: is it speech (within LOUD_DB of the loudest frame)."""
    n = len(speech) // FRAME
    rms = np.sqrt((speech[: n * FRAME].reshape(n, FRAME).astype(np.float64) ** 2).mean(1))
    return rms > rms.max() * 10 ** (LOUD_DB / 20)


def longest_gap(loud: np.ndarray) -> tuple[int, int]:
    """(first, end) frame of the longest quiet run between the first and the last speech frame."""
    idx = np.flatnonzero(loud)
    gaps = np.diff(idx)
    k = int(np.argmax(gaps))
    return int(idx[k] + 1), int(idx[k + 1])


def paused_speech(spec: ClipSpec, rng: np.random.Generator) -> tuple[np.ndarray, tuple[int, int]] | None:
    """The utterance with a pause at a random inner word boundary; None for a one-word utterance.
    espeak stretches a break by its speed, so the request is corrected (up to twice) to land in PAUSE_MS;
    None also when it never does (the utterance is left out of both sets)."""
    words = words_of(spec.utterance)
    if len(words) < 2:
        return None
    cut = int(rng.integers(1, len(words)))
    want = float(rng.uniform(*PAUSE_MS))
    request = want
    for _ in range(3):
        text = f'<speak>{" ".join(words[:cut])} <break time="{int(request)}ms"/> {" ".join(words[cut:])}</speak>'
        speech = espeak(text, spec.voice, spec.speed, spec.pitch, ssml=True)
        start, end = longest_gap(speech_frames(speech))
        got = (end - start) * 10
        if PAUSE_MS[0] <= got <= PAUSE_MS[1]:
            return speech, (start, end)
        request = max(50.0, request * want / max(got, 1))
    return None  # espeak would not make a pause in range here: left out of both sets


def _work(job: tuple[ClipSpec, int]) -> dict | None:
    spec, seed = job
    rng = np.random.default_rng(seed)
    paused = paused_speech(spec, rng)
    if paused is None:
        return None
    plain = espeak(spoken_form(spec.utterance), spec.voice, spec.speed, spec.pitch)
    out = {}
    for name, speech, pause in (("plain", plain, None), ("paused", paused[0], paused[1])):
        speech = speech / max(1e-6, float(np.abs(speech).max()))
        audio, offset = render_placed(spec, speech, EXTRA_TAIL_S)
        loud = np.flatnonzero(speech_frames(speech))
        row = {"text": spec.utterance.text, "language": spec.utterance.language,
               "hotwords": [spec.utterance.entity] if spec.utterance.entity else [], "entity": spec.utterance.entity,
               "tags": list(spec.utterance.tags) + [name], "voice": spec.voice, "speed": spec.speed,
               "speech_start_s": round((offset + loud[0] * FRAME) / RATE, 3),
               "speech_end_s": round((offset + (loud[-1] + 1) * FRAME) / RATE, 3)}
        if pause is not None:
            row["pause_s"] = [round((offset + pause[0] * FRAME) / RATE, 3), round((offset + pause[1] * FRAME) / RATE, 3)]
        out[name] = (row, (np.clip(audio, -1, 1) * 32767).astype(np.int16))
    return out


def build(out: Path, split: str, jobs: int, limit: int) -> dict:
    if split == "test":
        _, specs = plan(4000, 4000, 250, 250, 0, 0, 0, seed=0)  # the corpus's test draws (run.sh's counts)
    else:
        _, specs = plan(4000, 4000, 100, 100, 0, 0, 0, seed=1)
    specs = [s for s in specs if s.source == "espeak"][: limit or None]
    seeds = np.random.default_rng(7 if split == "test" else 8).integers(2**31, size=len(specs))
    counts = {"plain": 0, "paused": 0, "left_out": 0}  # left out: one word, or no pause in range
    with atomic_directory(out, overwrite=True) as tmp:
        (tmp / "wav").mkdir()
        manifests = {name: open(tmp / f"{name}.jsonl", "w", encoding="utf-8") for name in ("plain", "paused")}
        try:
            with ProcessPoolExecutor(max_workers=jobs) as pool:
                results = pool.map(_work, [(s, int(k)) for s, k in zip(specs, seeds)], chunksize=8)
                for spec, result in tqdm(zip(specs, results), total=len(specs), desc=f"{split} turns", unit="utt",
                                         file=sys.stderr, mininterval=5):
                    if result is None:
                        counts["left_out"] += 1
                        continue
                    for name, (row, pcm) in result.items():
                        wav = f"wav/{spec.index:05d}-{name}.wav"
                        write_pcm16(tmp / wav, pcm.astype(np.float32) / 32767)
                        manifests[name].write(json.dumps({"audio": wav, **row}, ensure_ascii=False) + "\n")
                        counts[name] += 1
        finally:
            for f in manifests.values():
                f.close()
    return counts


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m nim4_edge.recipes.demo.turns", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out", type=Path, required=True, help="folder to (re)write")
    p.add_argument("--split", choices=("test", "dev"), default="test")
    p.add_argument("--limit", type=int, default=0, help="only the first N utterances")
    p.add_argument("--jobs", type=int, default=0, help="worker processes (0 = all cores)")
    args = p.parse_args(argv)
    print(json.dumps(build(args.out, args.split, args.jobs or os.cpu_count() or 1, args.limit)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
