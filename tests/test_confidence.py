"""Final confidence (runtime/confidence.py): the acoustic score against the CTC best path, the
language check, on synthetic log-probs and on the demo model's own reading of the examples; the
threshold choice of `bench confidence` (dev only) and its report."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from nim4_edge.bench.confidence import THRESHOLDS, Judged, bench_confidence, choose_threshold, read_results, write_report
from nim4_edge.runtime.audio import load_audio
from nim4_edge.runtime.bundle import Bundle
from nim4_edge.runtime.confidence import (DEFAULT_THRESHOLD, acoustic_confidence, combined_confidence, decoder_confidence,
                                          judge, mandarin_share)
from nim4_edge.runtime.encoder import EncoderSession, EncoderStream
from nim4_edge.runtime.features import compute_fbank
from nim4_edge.runtime.hotwords.lexicon import Lexicon

LEXICON = Lexicon()
EXAMPLES = Path(__file__).resolve().parents[1] / "examples"


def _reading(text: str, frames_per_phoneme: int = 3, sure: float = 0.95) -> np.ndarray:
    """Log-probs of a head that heard `text`: each phoneme on one frame, blanks around it."""
    ids = LEXICON.ids(LEXICON.phonemes(text))
    classes = len(LEXICON.inventory)
    rows = np.full((len(ids) * frames_per_phoneme + 2, classes), (1 - sure) / (classes - 1))
    rows[:, 0] = sure
    for k, i in enumerate(ids):
        t = 1 + k * frames_per_phoneme
        rows[t, 0] = (1 - sure) / (classes - 1)
        rows[t, i] = sure
    return np.log(rows)


def test_the_text_the_head_heard_is_confident_and_another_is_not():
    heard = _reading("打开车窗")
    ids = LEXICON.ids(LEXICON.phonemes("打开车窗"))
    assert acoustic_confidence(heard, ids, 0) > 0.9
    wrong = LEXICON.ids(LEXICON.phonemes("关闭车窗"))  # two characters of four heard otherwise
    assert acoustic_confidence(heard, wrong, 0) < 0.2
    assert acoustic_confidence(heard[:3], ids, 0) == 0.0  # does not fit in 3 frames
    heard_ids = list(np.argmax(heard, axis=1)[np.argmax(heard, axis=1) != 0])
    assert judge("打开车窗", LEXICON, heard_ids, heard, 0, 0.5).confident
    assert not judge("关闭车窗", LEXICON, heard_ids, heard, 0, 0.5).confident
    assert judge("关闭车窗", LEXICON, heard_ids, heard, 0, 0.0).confident  # threshold 0: never flagged
    assert not judge("导航回家", LEXICON, heard_ids, heard, 0, DEFAULT_THRESHOLD).confident  # nothing of it heard: flagged


def test_a_heard_text_the_decoder_had_to_guess_is_flagged_by_the_product():
    """confident = language match and acoustic x decoder confidence above the threshold."""
    heard = _reading("打开车窗")
    heard_ids = list(np.argmax(heard, axis=1)[np.argmax(heard, axis=1) != 0])
    sure = judge("打开车窗", LEXICON, heard_ids, heard, 0, 0.5, decoder=0.9)
    guessed = judge("打开车窗", LEXICON, heard_ids, heard, 0, 0.5, decoder=0.3)
    assert sure.confident and not guessed.confident
    assert combined_confidence(0.5, 0.3) == pytest.approx(0.15) and combined_confidence(0.5, None) == 0.5
    assert combined_confidence(None, 0.3) is None
    assert sure.acoustic_confidence == guessed.acoustic_confidence > 0.9  # the head heard it either way
    assert judge("打开车窗", LEXICON, heard_ids, heard, 0, 0.5).confident  # no decoder figure: counts as 1
    assert decoder_confidence([-0.1, -2.0, -0.5]) == pytest.approx(np.exp(-2.0)) and decoder_confidence([]) is None


def test_english_text_for_mandarin_sounds_fails_the_language_check():
    heard = _reading("打开车窗")
    heard_ids = list(np.argmax(heard, axis=1)[np.argmax(heard, axis=1) != 0])
    verdict = judge("open the window", LEXICON, heard_ids, heard, 0, 0.0)
    assert not verdict.language_match and not verdict.confident
    assert mandarin_share(["d", "a3", "AH"]) == pytest.approx(2 / 3) and mandarin_share(["<blk>"]) is None
    nothing = judge("", LEXICON, heard_ids, heard, 0, 0.5)
    assert nothing.confident and nothing.acoustic_confidence is None  # no text: nothing to act on
    assert not judge("…!", LEXICON, heard_ids, heard, 0, 0.5).confident  # text without a sound


def _demo_reading(bundle_path: Path, wav: Path) -> tuple[np.ndarray, list[int]]:
    """The demo model's phoneme log-probs of a whole file, streamed as listen does, and its greedy reading."""
    bundle = Bundle.load(bundle_path)
    manifest = bundle.manifest
    stream = EncoderStream(EncoderSession(bundle, num_threads=1))
    frames = manifest.cmvn.apply(compute_fbank(load_audio(wav, 16000), manifest.fbank))
    chunks = stream.accept_frames(frames) + stream.flush()
    log_probs = np.concatenate([c.phoneme_log_probs for c in chunks])
    best = np.argmax(log_probs, axis=1)
    keep = (best != 0) & np.r_[True, best[1:] != best[:-1]]
    return log_probs, [int(i) for i in best[keep]]


@pytest.mark.parametrize("wav,text,other", [
    ("zh_window.wav", None, "set the temperature to 21 degrees"),
    ("en_temperature.wav", "set the temperature to 21 degrees", "open the sunroof"),
    ("en_temperature.wav", "set the temperature to 21 degrees", "set the temperature to 26 degrees"),
])
def test_the_demo_models_reading_supports_the_right_text_only(demo_bundle, wav, text, other):
    transcripts = {json.loads(line)["audio"]: json.loads(line)["text"]
                   for line in (EXAMPLES / "transcripts.jsonl").read_text(encoding="utf-8").splitlines()}
    text = text or transcripts[wav]
    log_probs, heard = _demo_reading(demo_bundle, EXAMPLES / wav)
    right = judge(text, LEXICON, heard, log_probs, 0, 0.5)
    wrong = judge(other, LEXICON, heard, log_probs, 0, 0.5)
    assert right.confident and right.acoustic_confidence > 0.6, right
    assert not wrong.confident and wrong.acoustic_confidence < right.acoustic_confidence, wrong


def test_listen_json_carries_the_confidence_fields(demo_bundle):
    out = subprocess.run([sys.executable, "-m", "nim4_edge.cli", "listen", "--bundle", str(demo_bundle), "--wav",
                          str(EXAMPLES / "en_temperature.wav"), "--json", "--no-verify", "--threads", "1"],
                         capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr
    finals = [e for e in map(json.loads, out.stdout.splitlines()) if e["kind"] == "final"]
    assert finals and all(f["confident"] and f["language_match"] and f["acoustic_confidence"] > 0.5 for f in finals)
    strict = subprocess.run([sys.executable, "-m", "nim4_edge.cli", "listen", "--bundle", str(demo_bundle), "--wav",
                             str(EXAMPLES / "en_temperature.wav"), "--json", "--no-verify", "--threads", "1",
                             "--confidence-threshold", "1.0"], capture_output=True, text=True, timeout=300)
    finals = [e for e in map(json.loads, strict.stdout.splitlines()) if e["kind"] == "final"]
    assert finals and not any(f["confident"] for f in finals)  # the text is kept, the flag set
    assert finals[0]["text"].strip()
    bad = subprocess.run([sys.executable, "-m", "nim4_edge.cli", "listen", "--bundle", str(demo_bundle), "--wav",
                          str(EXAMPLES / "en_temperature.wav"), "--confidence-threshold", "7"],
                         capture_output=True, text=True, timeout=120)
    assert bad.returncode == 2 and "confidence_threshold=7.0 must be within 0-1" in bad.stderr
    assert "Traceback" not in bad.stderr


def _results(tmp_path: Path, name: str, rows: list[tuple]) -> Path:
    """An eval result file: (reference, hypothesis, acoustic confidence[, decoder confidence]) per utterance."""
    utterances = [{"audio": f"{i}.wav", "text": ref, "language": "en", "tags": ["en"], "streaming": hyp,
                   "streaming_confidence": [] if not hyp else [{"acoustic": score, "language_match": True,
                                                                 "confident": True, "decoder": decoder[0] if decoder else 1.0}]}
                  for i, (ref, hyp, score, *decoder) in enumerate(rows)]
    path = tmp_path / f"{name}.json"
    path.write_text(json.dumps({"modes": {}, "utterances": utterances}))
    return path


def test_the_threshold_is_chosen_on_dev_and_read_on_test(tmp_path):
    dev = _results(tmp_path, "dev", [("turn left", "turn left", 0.9)] * 19 + [("turn left", "turn left", 0.3)]
                   + [("turn left", "open the sunroof", 0.2)] * 10)
    test = _results(tmp_path, "test", [("go home", "go home", 0.8)] * 10 + [("go home", "play music", 0.1)] * 5
                    + [("go home", "go away", 0.6)] + [("", "", None)] + [("", "beep", 0.05)])
    items = read_results(dev)
    # flagging grows with the threshold; 5% of 20 right ones is the one at 0.3: the highest within it is
    # the last step at or below 0.9 (0.8913); with no right one to spare, the last at or below 0.3
    assert choose_threshold(items, 5.0) == max(t for t in THRESHOLDS if t <= 0.9) == 0.8913
    assert choose_threshold(items, 0.0) == max(t for t in THRESHOLDS if t <= 0.3)
    report = bench_confidence([dev], [test], right_budget_pct=5.0)
    assert report["threshold"] == 0.8913
    assert report["test"]["wrong"] == 7 and report["test"]["right"] == 10  # silence as silence is not judged
    assert report["test"]["wrong_flagged_pct"] == 100.0 and report["test"]["right_flagged_pct"] == 100.0
    at_half = next(s for s in report["sweep_test"] if s["threshold"] == 0.5012)
    assert at_half["right_flagged_pct"] == 0.0 and at_half["wrong_flagged_pct"] == pytest.approx(100 * 6 / 7, abs=0.01)
    write_report(report, tmp_path / "out")
    md = (tmp_path / "out" / "confidence.md").read_text()
    assert sum(line.startswith("test: all") for line in md.splitlines()) == 1 and "signal" in md
    assert json.loads((tmp_path / "out" / "confidence.json").read_text())["threshold"] == 0.8913
    assert (tmp_path / "out" / "confidence.png").stat().st_size > 1000


def test_a_result_without_confidence_is_refused(tmp_path):
    path = tmp_path / "old.json"
    path.write_text(json.dumps({"utterances": [{"text": "a", "streaming": "a"}]}))
    with pytest.raises(Exception, match="rerun `nim4-edge eval`"):
        read_results(path)
    assert Judged(True, ((None, 1.0, True),), "x").flagged(0.0)  # a spoken final with no score is flagged


def test_the_product_flags_what_either_signal_alone_misses(tmp_path):
    """Wrong finals the head half-heard but the decoder guessed, and ones the decoder was sure of but
    the head did not hear: the product's dev-chosen threshold flags both kinds; each signal alone,
    with its own dev-chosen threshold, only one (the report's "signals" table)."""
    right = [("turn left", "turn left", 0.9, 0.9)] * 20
    guessed = [("turn left", "turn right", 0.95, 0.05)] * 5  # the head heard it as well, the decoder unsure
    unheard = [("turn left", "open the sunroof", 0.05, 0.95)] * 5  # fluent, nothing of it heard
    dev = _results(tmp_path, "dev", right + guessed + unheard)
    report = bench_confidence([dev], [dev], right_budget_pct=0.0)
    assert report["test"]["wrong_flagged_pct"] == 100.0 and report["test"]["right_flagged_pct"] == 0.0
    alone = report["signals"]
    assert alone["acoustic"]["test"]["wrong_flagged_pct"] == 50.0 and alone["decoder"]["test"]["wrong_flagged_pct"] == 50.0
    assert alone["combined"]["threshold"] == report["threshold"]
    old = tmp_path / "old.json"  # results of an eval from before the decoder factor: refused
    old.write_text(json.dumps({"utterances": [{"text": "a", "streaming": "a", "language": "en",
                                               "streaming_confidence": [{"acoustic": 0.5, "language_match": True}]}]}))
    with pytest.raises(Exception, match="no decoder confidence"):
        read_results(old)
