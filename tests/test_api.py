"""The public API (nim4_edge): what docs/API.md promises, on the shipped demo model (no torch needed)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("llama_cpp")

from nim4_edge import (  # noqa: E402
    DecoderSettings,
    Event,
    HotwordEntry,
    Nim4RuntimeError,
    Recognizer,
    RecognizerConfig,
    Timings,
    demo_bundle,
)
from nim4_edge.runtime.audio import load_audio  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
EXAMPLES = ROOT / "examples"


@pytest.fixture(scope="module")
def recognizer():
    with Recognizer(RecognizerConfig(bundle=demo_bundle(), partial_every_chunks=0)) as r:
        yield r


def test_the_readme_example_in_five_lines(tmp_path):
    code = ("from nim4_edge import Recognizer, RecognizerConfig, demo_bundle\n"
            "with Recognizer(RecognizerConfig(bundle=demo_bundle())) as recognizer:\n"
            f"    print(recognizer.transcribe({str(EXAMPLES / 'en_temperature.wav')!r}).text)\n")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=tmp_path, timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == "set the temperature to 21 degrees"


def test_transcribe_takes_a_path_or_samples_at_any_rate(recognizer):
    path = EXAMPLES / "zh_window.wav"
    by_path = recognizer.transcribe(path)
    samples = load_audio(path, 48000)
    by_samples = recognizer.transcribe(samples, 48000)
    assert by_path.text and by_samples.text == by_path.text and str(by_path) == by_path.text
    int16 = (load_audio(path, 16000) * 32767).astype(np.int16)
    assert recognizer.transcribe(int16, 16000).text == by_path.text
    (final,) = by_path.finals
    assert isinstance(final, Event) and isinstance(final.timings, Timings)
    assert final.timings.final_latency_ms > 0 and final.timings.encoder_ms > 0 and not by_path.errors
    assert set(final.to_json()["timings"]) >= {"encoder_ms", "prefill_ms", "decode_ms", "final_latency_ms"}


def test_arguments_are_checked_with_the_fix_in_the_message(recognizer):
    with recognizer.create_stream() as stream:
        with pytest.raises(TypeError, match="swapped"):
            stream.accept_waveform(16000, np.zeros(160, np.float32))
        with pytest.raises(TypeError, match="must be an int"):
            stream.accept_waveform(np.zeros(160, np.float32), 16000.0)
        with pytest.raises(ValueError, match="mono"):
            stream.accept_waveform(np.zeros((160, 2), np.float32), 16000)
        with pytest.raises(TypeError, match="must be numbers"):
            stream.accept_waveform(np.array(["a", "b"]), 16000)
        with pytest.raises(TypeError, match="hotwords are strings"):
            stream.add_hotwords([42])
    with pytest.raises(TypeError, match="RecognizerConfig"):
        Recognizer({"bundle": "x"})
    with pytest.raises(TypeError, match="folder path"):
        RecognizerConfig(bundle=3)


def test_per_stream_hotwords_reach_the_prompt(recognizer):
    """彗心大道 is a homophone spelling (惠新 sounds the same): only a stream that was given it can
    write it, and only that stream's prompt carries it."""
    audio = load_audio(EXAMPLES / "zh_navigate.wav", 16000)
    with recognizer.create_stream(hotwords=[HotwordEntry("彗心大道", weight=2.0)]) as own, \
            recognizer.create_stream() as plain:
        own_final = [e for e in own.accept_waveform(audio, 16000) + own.input_finished() if e.kind == "final"][-1]
        plain_final = [e for e in plain.accept_waveform(audio, 16000) + plain.input_finished() if e.kind == "final"][-1]
        assert own_final.hotwords == ["彗心大道"] and "彗心大道" in own_final.text
        assert plain_final.hotwords == [] and "彗心大道" not in plain_final.text
        own.remove_hotwords("彗心大道")
        again = [e for e in own.accept_waveform(audio, 16000) + own.input_finished() if e.kind == "final"][-1]
        assert again.hotwords == []


def test_a_failing_utterance_is_dropped_and_the_stream_goes_on():
    """A decoder context too small for a long utterance (a runtime failure, not bad input): that
    utterance is reported in stream.errors, the short one after it still comes out."""
    speech = load_audio(EXAMPLES / "en_temperature.wav", 16000)
    loud = np.flatnonzero(np.abs(speech) > 0.02)
    long_one = np.concatenate([speech[loud[0] : loud[-1]]] * 4)  # ~12 s without a pause: 72+ embeddings
    short = load_audio(EXAMPLES / "fsdd_3_george_0.wav", 16000)  # 0.5 s: 4 embeddings
    silence = np.zeros(16000, np.float32)
    config = RecognizerConfig(bundle=demo_bundle(), partial_every_chunks=0, decoder=DecoderSettings(n_ctx=96))
    with Recognizer(config) as recognizer:
        transcript = recognizer.transcribe(np.concatenate([silence, long_one, silence, short, silence]))
    assert len(transcript.errors) >= 1 and "context" in " ".join(transcript.errors).lower(), transcript.errors
    assert transcript.finals and transcript.finals[-1].text, transcript
    assert Nim4RuntimeError.exit_code == 1  # a runtime failure, not bad input, for the CLI


def test_recognizer_and_stream_close_as_context_managers():
    with Recognizer(RecognizerConfig(bundle=demo_bundle())) as recognizer:
        with recognizer.create_stream() as stream:
            pass
        assert stream.decoder._ctx is None
    assert recognizer.decoder_model is None
