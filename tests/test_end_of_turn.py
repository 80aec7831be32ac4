"""Adaptive end of turn (runtime/endpoint.py, Stream._pause): the endpointer's pause/resume rules, a
speculative final that is discarded leaves no trace, one that is adopted is the exact final of the
audio up to the pause, and events say why a turn ended and where its speech did."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
from wavutil import paused_example

pytest.importorskip("llama_cpp")

from nim4_edge.runtime.endpoint import EndpointConfig, Endpointer  # noqa: E402
from nim4_edge.runtime.features import compute_fbank  # noqa: E402
from nim4_edge.runtime.recognizer import Recognizer, RecognizerConfig  # noqa: E402

RATE = 16000


def test_endpointer_pause_and_resume_rules():
    ep = Endpointer(EndpointConfig(pre_roll_ms=0, min_speech_ms=20, trailing_silence_ms=60, eot_pause_ms=30))
    steps = [ep.step(bool(s))[0] for s in [1, 1, 0, 0, 0, 0, 1, 0, 0, 0, 0, 0, 0]]
    #                                      start   .  . pause . resume    pause       end
    assert steps == [None, "start", None, None, "pause", None, "resume", None, None, "pause", None, None, "end"]
    assert ep.end_reason == "silence"
    fixed = Endpointer(EndpointConfig(pre_roll_ms=0, min_speech_ms=20, trailing_silence_ms=60))
    assert "pause" not in [fixed.step(bool(s))[0] for s in [1, 1, 0, 0, 0, 0, 0, 0]]
    with pytest.raises(ValueError, match="shorter than trailing_silence_ms"):
        EndpointConfig(trailing_silence_ms=200, eot_pause_ms=200)
    with pytest.raises(ValueError, match="probability"):
        EndpointConfig(eot_pause_ms=100, eot_threshold=1.5)


def run(recognizer, audio, endpoint: EndpointConfig) -> list:
    events = []
    with recognizer.create_stream(endpoint=endpoint) as stream:
        for start in range(0, len(audio), 1600):
            events += stream.accept_waveform(audio[start : start + 1600], RATE)
        events += stream.input_finished()
        assert not stream.errors
    return [e for e in events if e.kind == "final"]


@pytest.fixture(scope="module")
def recognizer(demo_bundle):
    with Recognizer(RecognizerConfig(bundle=demo_bundle)) as r:
        yield r


def test_turn_ends_at_the_pause_when_predicted_and_waits_when_not(recognizer):
    audio, _ = paused_example()
    fixed = run(recognizer, audio, EndpointConfig(eot_pause_ms=0))
    assert [f.end_reason for f in fixed] == ["silence"]
    assert fixed[0].text == "set the temperature to 21 degrees"
    # threshold 0: every pause ends the turn, the hesitation included: cut in two
    eager = run(recognizer, audio, EndpointConfig(eot_pause_ms=200, eot_threshold=0.0))
    assert [f.end_reason for f in eager] == ["eos-predicted", "eos-predicted"]
    # threshold 1: never early: one turn, ended by the silence, at the pause after the last word
    patient = run(recognizer, audio, EndpointConfig(eot_pause_ms=200, eot_threshold=1.0, trailing_silence_ms=800))
    assert [f.end_reason for f in patient] == ["silence"] and patient[0].text == fixed[0].text
    for final in eager + patient:
        assert 0 < final.end_probability <= 1
        # the turn's audio ends at the pause: eot_pause_ms after the last speech frame (+ the 15 ms
        # a 25 ms fbank window reaches past its 10 ms shift)
        assert final.end_s - final.speech_end_s == pytest.approx(0.2 + 0.015, abs=1e-6)
    # what the driver feels: the final ready eot_pause_ms after speech, not trailing_silence_ms
    assert fixed[0].end_s - fixed[0].speech_end_s == pytest.approx(0.6 + 0.015, abs=1e-6)


def test_adopted_speculation_is_the_exact_final_of_its_audio(recognizer):
    """A turn that ended at a pause has the final of decoding exactly its audio offline."""
    audio, _ = paused_example()
    for final in run(recognizer, audio, EndpointConfig(eot_pause_ms=200, eot_threshold=0.0)):
        segment = audio[int(round(final.start_s * RATE)) : int(round(final.end_s * RATE))]
        with recognizer.create_stream() as whole:
            (offline,) = whole.decode_whole(segment)
        assert (offline.text, offline.phonemes) == (final.text, final.phonemes)


def test_discarded_speculation_leaves_no_trace(recognizer):
    """An utterance whose speculative final at a pause was discarded (speech resumed) gives the same
    text, phonemes and decoder KV positions as the same utterance without it."""
    audio, cut = paused_example()
    manifest = recognizer.bundle.manifest
    frames = manifest.cmvn.apply(compute_fbank(audio[: len(audio) - RATE], manifest.fbank))
    split = (cut + RATE // 2) // 160  # in the pause
    results = []
    for speculate in (False, True):
        with recognizer.create_stream() as stream:
            utterance = stream._new_utterance(0)
            utterance.feed(frames[:split])
            if speculate:
                early = utterance.speculate()
                assert early is not None and early.text.strip()
                assert stream.decoder.seq_positions(stream.decoder.branch_seq) == (-1, -1)  # branch emptied
            utterance.feed(frames[split:])
            decoder = stream.decoder
            state = (decoder.position, decoder.seq_positions(decoder.utterance_seq), utterance.phonemes,
                     decoder.partial().token_ids)
            (final,) = utterance.finish(0.0)
            results.append((state, final.text, final.phonemes, final.words))
    assert results[0] == results[1]
    # and the speculation equals ending the utterance at the same point
    with recognizer.create_stream() as stream:
        utterance = stream._new_utterance(0)
        utterance.feed(frames[:split])
        early = utterance.speculate()
        (ended,) = utterance.finish(0.0)
    assert (early.text, early.phonemes, early.end_probability) == (ended.text, ended.phonemes, ended.end_probability)


def test_end_of_input_during_a_pause_adopts_its_final(recognizer):
    audio, cut = paused_example()
    finals = run(recognizer, audio[: cut + RATE // 2 - 1600], EndpointConfig(eot_pause_ms=200, eot_threshold=1.0))
    assert [f.end_reason for f in finals] == ["end-of-input"]
    assert finals[0].end_s - finals[0].speech_end_s == pytest.approx(0.215, abs=1e-6)


def test_bad_end_of_turn_flags_are_one_line_naming_the_flag():
    for flags, message in ((["--eot-pause-ms", "700"], "--eot-pause-ms=700 must be shorter than --trailing-silence-ms=600"),
                           (["--eot-threshold", "2"], "--eot-threshold=2.0: a probability")):
        proc = subprocess.run([sys.executable, "-m", "nim4_edge.cli", "listen", "--wav", "examples/en_temperature.wav",
                               *flags], capture_output=True, text=True, timeout=120,
                              cwd=Path(__file__).resolve().parents[1])
        assert proc.returncode == 2 and message in proc.stderr and len(proc.stderr.strip().splitlines()) == 1
