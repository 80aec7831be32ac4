"""Write the example WAVs under examples/ (held-out voices and speeds, one real FSDD test take).

    python -m nim4_edge.recipes.demo.examples --out examples

examples/transcripts.jsonl is a test-set manifest of them (`nim4-edge eval --testset` reads it; a
test checks the shipped model's transcripts). examples/hotwords.txt is a contact list for --hotwords.
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import wave
from pathlib import Path

import numpy as np

from nim4_edge.recipes.demo.corpus import espeak, spoken_form
from nim4_edge.recipes.demo.text import Utterance
from nim4_edge.recipes.vad_data import FSDD_DIR
from nim4_edge.runtime.features import SAMPLE_RATE_HZ

# (file, text, language, voice, speed, pitch, entity): voices/speeds/pitches from the test lists only
EXAMPLES = (
    ("en_temperature.wav", "set the temperature to 21 degrees", "en", "en-us+f4", 168, 55, ""),
    ("en_call.wav", "call Jon Okafor", "en", "en-gb+m6", 138, 35, "Jon Okafor"),
    ("zh_navigate.wav", "导航到彗心大道", "zh", "cmn-latn-pinyin+f4", 168, 55, "彗心大道"),
    ("zh_window.wav", "打开车窗", "zh", "cmn-latn-pinyin+m6", 138, 35, ""),
)
FSDD_EXAMPLE = "3_george_0.wav"  # FSDD test take (CC BY-SA 4.0, Jakobovski et al.)


def write_pcm16(path: Path, audio: np.ndarray, rate: int = SAMPLE_RATE_HZ) -> None:
    with wave.open(str(path), "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(rate)
        w.writeframes((np.clip(audio, -1, 1) * 32767).astype(np.int16).tobytes())


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out", type=Path, default=Path("examples"))
    args = p.parse_args(argv)
    args.out.mkdir(parents=True, exist_ok=True)
    rows = []
    silence = np.zeros(int(0.4 * SAMPLE_RATE_HZ), np.float32)
    for name, text, language, voice, speed, pitch, entity in EXAMPLES:
        speech = espeak(spoken_form(Utterance(text, language, "")), voice, speed, pitch)
        speech = 0.5 * speech / max(1e-6, float(np.abs(speech).max()))
        floor = np.random.default_rng(len(rows)).standard_normal(len(speech) + 2 * len(silence)) * 3e-4
        write_pcm16(args.out / name, np.concatenate([silence, speech, silence]) + floor)
        rows.append({"audio": name, "text": text, "language": language, "entity": entity,
                     "hotwords": [entity] if entity else [], "tags": [language]})
    shutil.copyfile(FSDD_DIR / FSDD_EXAMPLE, args.out / "fsdd_3_george_0.wav")
    rows.append({"audio": "fsdd_3_george_0.wav", "text": "3", "language": "en", "entity": "", "hotwords": [],
                 "tags": ["en", "digit", "fsdd"]})
    with open(args.out / "transcripts.jsonl", "w", encoding="utf-8") as f:
        for row in rows:
            f.write(json.dumps(row, ensure_ascii=False) + "\n")
    entities = [row["entity"] for row in rows if row["entity"]]
    (args.out / "hotwords.txt").write_text("\n".join(entities) + "\n", encoding="utf-8")
    print(f"wrote {len(rows)} examples to {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
