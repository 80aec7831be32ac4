"""The shipped demo bundle: small enough, the default of `listen`, and right on the example WAVs."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from nim4_edge.bench.evaluate import normalize
from nim4_edge.runtime.bundle import DEMO_BUNDLE

ROOT = Path(__file__).resolve().parents[1]
EXAMPLES = ROOT / "examples"

pytestmark = pytest.mark.skipif(not (DEMO_BUNDLE / "manifest.json").is_file(),
                                reason="no shipped demo bundle at runtime/demo_bundle")


def examples() -> list[dict]:
    return [json.loads(line) for line in (EXAMPLES / "transcripts.jsonl").read_text(encoding="utf-8").splitlines()]


def test_bundle_fits_the_size_budget():
    size = sum(p.stat().st_size for p in DEMO_BUNDLE.rglob("*") if p.is_file())
    assert size <= 40 * 2**20, f"demo bundle is {size / 2**20:.1f} MB"


def test_listen_defaults_to_the_demo_bundle_and_transcribes_an_example():
    (first,) = [e for e in examples() if e["audio"] == "en_temperature.wav"]
    proc = subprocess.run([sys.executable, "-m", "nim4_edge.cli", "listen", "--wav",
                           str(EXAMPLES / first["audio"]), "--json"], capture_output=True, text=True, timeout=120,
                          env={k: v for k, v in __import__("os").environ.items() if k != "NIM4_EDGE_BUNDLE"})
    assert proc.returncode == 0, proc.stderr
    finals = [json.loads(line) for line in proc.stdout.splitlines() if '"final"' in line]
    assert [normalize(f["text"]) for f in finals] == [normalize(first["text"])]


def test_every_example_is_transcribed_right_with_its_hotwords(tmp_path):
    out = tmp_path / "r.json"
    proc = subprocess.run([sys.executable, "-m", "nim4_edge.cli", "eval", "--testset",
                           str(EXAMPLES / "transcripts.jsonl"), "--manifest-hotwords", "--hotwords-mode", "tolerant+text", "--modes", "streaming",
                           "--out", str(out)], capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    saved = json.loads(out.read_text(encoding="utf-8"))
    got = {Path(u["audio"]).name: u["streaming"] for u in saved["utterances"]}
    for example in examples():
        assert normalize(got[example["audio"]]) == normalize(example["text"]), example["audio"]
    # the homophone names come from the hotwords: without them the common spellings are written
    hints = {Path(u["audio"]).name: u.get("streaming_hints", []) for u in saved["utterances"]}
    assert hints["zh_navigate.wav"] == ["彗心大道"] and hints["en_call.wav"] == ["Jon Okafor"]
    # the trained phoneme head hears the examples (4.5% when written; a random head is near 100%)
    assert saved["modes"]["streaming"]["phoneme_error_rate"] < 10
