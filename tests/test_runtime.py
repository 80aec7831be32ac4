"""The streaming runtime end to end: `listen --wav --json`, streaming == transcribe, the exact flush
at the endpoint, and the bad inputs a microphone or a file can produce."""

from __future__ import annotations

import json
import subprocess
import sys
import time
import types

import numpy as np
import pytest
from wavutil import write_wav

pytest.importorskip("llama_cpp")

from nim4_edge.runtime.audio import AudioError  # noqa: E402
from nim4_edge.runtime.endpoint import EndpointConfig, Endpointer  # noqa: E402
from nim4_edge.runtime.errors import Nim4Error  # noqa: E402
from nim4_edge.runtime.recognizer import Recognizer, RecognizerConfig  # noqa: E402
from nim4_edge.runtime.vad import VadConfig  # noqa: E402

RATE = 16000


def speech_like(seconds: float, seed: int) -> np.ndarray:
    from nim4_edge.runtime.audio import synthetic_utterance

    return synthetic_utterance(seconds, RATE, seed)


# The synthetic 'speech' is a harmonic buzz with digital silence around it: webrtcvad segments it
# exactly, which keeps these tests about the runtime; the learned VAD is tested on real speech below
# and in test_vad.py.
WEBRTC = ("--vad", "webrtc")


def conversation() -> np.ndarray:
    """0.5 s silence, 1.9 s 'speech', 1 s silence, 1.3 s 'speech', 1 s silence."""
    z = lambda s: np.zeros(int(s * RATE), np.float32)  # noqa: E731
    return np.concatenate([z(0.5), speech_like(1.9, 1), z(1.0), speech_like(1.3, 2), z(1.0)])


@pytest.fixture(scope="module")
def speech_wav(tmp_path_factory):
    return write_wav(tmp_path_factory.mktemp("wav") / "talk.wav", conversation(), RATE)


def _cli(*args, stdin=None):
    if args[0] in ("listen", "transcribe") and "--vad" not in args:
        args = (*args, *WEBRTC)
    return subprocess.run([sys.executable, "-m", "nim4_edge.cli", *args], capture_output=True, text=True,
                          input=stdin)


def _events(stdout: str) -> list[dict]:
    return [json.loads(line) for line in stdout.splitlines() if line.strip()]


def test_listen_wav_json_events_and_transcribe_agree(demo_bundle, speech_wav):
    proc = _cli("listen", "--bundle", str(demo_bundle), "--wav", str(speech_wav), "--json")
    assert proc.returncode == 0, proc.stderr
    events = _events(proc.stdout)
    finals = [e for e in events if e["kind"] == "final"]
    assert [e["utterance"] for e in finals] == [0, 1]
    for e in events:
        assert e["start_s"] < e["end_s"]
        assert {"encoder_ms", "prefill_ms", "decode_ms"} <= set(e["timings"])
        assert e["timings"]["encoder_ms"] > 0
    for f in finals:
        assert f["timings"]["final_latency_ms"] > 0 and f["stopped_by"] in ("eos", "cap")
        partials = [e for e in events if e["kind"] == "partial" and e["utterance"] == f["utterance"]]
        assert partials, "a partial per 640 ms chunk was expected before each final"
        assert events.index(partials[-1]) < events.index(f)
    # utterance boundaries where the audio has them: speech at 0.5-2.4 s and 3.4-4.7 s
    assert finals[0]["start_s"] == pytest.approx(0.2, abs=0.15) and 2.4 < finals[0]["end_s"] < 3.4
    assert finals[1]["start_s"] >= finals[0]["end_s"] - 0.015 and finals[1]["start_s"] == pytest.approx(3.1, abs=0.15)

    whole = _cli("transcribe", "--bundle", str(demo_bundle), str(speech_wav), "--json")
    assert whole.returncode == 0, whole.stderr
    assert [e["kind"] for e in _events(whole.stdout)] == ["final", "final"]
    assert [e["text"] for e in _events(whole.stdout)] == [f["text"] for f in finals]


def test_endpoint_flush_equals_offline_run(demo_bundle):
    """The stream's final (phonemes and text) equals decoding the same audio segment offline."""
    from nim4_edge.runtime.encoder import EncoderStream
    from nim4_edge.runtime.features import compute_fbank

    recognizer = Recognizer(RecognizerConfig(bundle=demo_bundle, partial_every_chunks=0, vad=VadConfig("webrtc")))
    stream = recognizer.create_stream()
    audio = conversation()
    events = []
    for start in range(0, len(audio), 1234):  # odd block size
        events += stream.accept_waveform(audio[start : start + 1234], RATE)
    events += stream.input_finished()
    finals = [e for e in events if e.kind == "final"]
    manifest = recognizer.bundle.manifest
    for final in finals:
        segment = audio[int(round(final.start_s * RATE)) : int(round(final.end_s * RATE))]
        offline = EncoderStream(recognizer.encoder)
        chunks = offline.accept_frames(manifest.cmvn.apply(compute_fbank(segment, manifest.fbank))) + offline.flush()
        labels = np.argmax(np.concatenate([c.phoneme_log_probs for c in chunks]), axis=1)
        phonemes = [manifest.phonemes.symbols[k] for i, k in enumerate(labels) if k and (i == 0 or k != labels[i - 1])]
        assert phonemes == final.phonemes
        stream.decoder.start_utterance()
        stream.decoder.append(np.concatenate([c.embeddings for c in chunks]))
        assert stream.decoder.final(audio_seconds=len(segment) / RATE).text == final.text
        whole = recognizer.create_stream()  # the offline mode of `eval`: the same segment, one decode
        (offline_final,) = whole.decode_whole(segment)
        assert (offline_final.kind, offline_final.phonemes, offline_final.text) == ("final", final.phonemes, final.text)
        with pytest.raises(Nim4Error, match="fresh stream"):
            whole.decode_whole(segment)
        whole.close()
    stream.close()
    recognizer.close()


def test_sample_rate_change_mid_stream_keeps_going(demo_bundle):
    import soxr

    recognizer = Recognizer(RecognizerConfig(bundle=demo_bundle, partial_every_chunks=0, vad=VadConfig("webrtc")))
    stream = recognizer.create_stream()
    audio = conversation()
    half = len(audio) // 2
    events = stream.accept_waveform(soxr.resample(audio[:half], RATE, 48000), 48000)
    events += stream.accept_waveform(audio[half:], RATE)
    events += stream.input_finished()
    assert len([e for e in events if e.kind == "final"]) == 2
    stream.close()
    recognizer.close()


def test_nan_inf_clipping_and_dc_offset_do_not_break_the_stream(demo_bundle, tmp_path):
    audio = conversation() * 3.0 + 0.2  # clipped and offset
    audio[5000:5100] = np.nan
    audio[9000] = np.inf
    path = write_wav(tmp_path / "bad.wav", audio, RATE, "float32")
    proc = _cli("listen", "--bundle", str(demo_bundle), "--wav", str(path), "--json", "--partial-every", "0")
    assert proc.returncode == 0, proc.stderr
    assert any(e["kind"] == "final" for e in _events(proc.stdout))
    assert "NaN/Inf" in proc.stderr and "clipped" in proc.stderr
    assert "Traceback" not in proc.stderr


@pytest.mark.parametrize("content, message", [
    (b"", "empty file"),
    (b"RIFF\x10\x00\x00\x00WAVEfmt ", "truncated"),
    (b"ID3\x03 mp3 bytes" * 10, "not a WAV file"),
])
def test_bad_files_exit_2_with_one_line(demo_bundle, tmp_path, content, message):
    path = tmp_path / "bad.wav"
    path.write_bytes(content)
    proc = _cli("listen", "--bundle", str(demo_bundle), "--wav", str(path))
    assert proc.returncode == 2
    assert message in proc.stderr and proc.stderr.count("\n") == 1 and "Traceback" not in proc.stderr


def test_unsupported_encoding_and_truncated_data(demo_bundle, tmp_path):
    ulaw = write_wav(tmp_path / "u.wav", np.zeros(1600), RATE, "mulaw")
    proc = _cli("listen", "--bundle", str(demo_bundle), "--wav", str(ulaw))
    assert proc.returncode == 2 and "mu-law" in proc.stderr
    cut = write_wav(tmp_path / "cut.wav", conversation(), RATE, declared_data_bytes=10**8)
    proc = _cli("transcribe", "--bundle", str(demo_bundle), str(cut), "--json")
    assert proc.returncode == 0 and "truncated" in proc.stderr
    assert len(_events(proc.stdout)) == 2


def test_missing_or_mismatched_bundle(demo_bundle, tmp_path, speech_wav):
    proc = _cli("listen", "--bundle", str(tmp_path / "nope"), "--wav", str(speech_wav))
    assert proc.returncode == 2 and "not a bundle" in proc.stderr
    import shutil

    shutil.copytree(demo_bundle, tmp_path / "b")
    manifest = json.loads((tmp_path / "b" / "manifest.json").read_text())
    manifest["decoder"]["hidden_size"] = 512
    manifest["encoder"]["embedding_dim"] = 512
    for spec in manifest["encoder"]["outputs"]:
        if spec["name"] == "embeddings":
            spec["shape"][2] = 512
    (tmp_path / "b" / "manifest.json").write_text(json.dumps(manifest))
    proc = _cli("listen", "--bundle", str(tmp_path / "b"), "--wav", str(speech_wav))
    assert proc.returncode == 2 and proc.stderr.count("\n") == 1 and "manifest" in proc.stderr


def test_no_microphone_says_how_to_use_a_file(demo_bundle):
    proc = _cli("listen", "--bundle", str(demo_bundle))
    if proc.returncode == 0:
        pytest.skip("this machine has a microphone")
    assert proc.returncode == 2 and "--wav" in proc.stderr and "Traceback" not in proc.stderr


def test_microphone_that_disappears_ends_with_an_error():
    """No sound card here: the PortAudio stream is replaced by the one fact the loop reads (active)."""
    from nim4_edge.runtime.ring_buffer import RingBuffer
    from nim4_edge.runtime.sources import Microphone

    mic = object.__new__(Microphone)
    mic.ring, mic.block_samples, mic.sample_rate_hz, mic.device_name = RingBuffer(1000), 160, 16000, "usb mic"
    mic._stream = types.SimpleNamespace(active=True)
    mic.ring.write(np.ones(320, np.float32))
    blocks = iter(mic)
    assert len(next(blocks)[0]) == 160 and len(next(blocks)[0]) == 160
    mic._stream.active = False
    with pytest.raises(AudioError, match="stopped delivering audio.*--wav"):
        next(blocks)


def test_microphone_callback_never_raises_or_blocks():
    from nim4_edge.runtime.ring_buffer import RingBuffer
    from nim4_edge.runtime.sources import Microphone

    mic = object.__new__(Microphone)
    mic.ring, mic.status_flags, mic.callback_errors = RingBuffer(100), 0, 0
    mic._callback(np.ones((80, 1), np.float32), 80, None, "input overflow")
    mic._callback(np.ones((80, 1), np.float32), 80, None, None)  # 60 of these do not fit
    mic._callback(None, 0, None, None)  # garbage from the driver: counted, not raised
    assert (mic.ring.available, mic.dropped_samples, mic.status_flags, mic.callback_errors) == (100, 60, 1, 1)


def test_stdin_and_realtime_sources(demo_bundle, speech_wav):
    from nim4_edge.runtime.audio import read_wav

    samples, _ = read_wav(speech_wav)
    pcm = (samples * 32767).astype("<i2").tobytes()
    proc = subprocess.run([sys.executable, "-m", "nim4_edge.cli", "listen", "--bundle", str(demo_bundle),
                           "--stdin", "--json", "--partial-every", "0", *WEBRTC], input=pcm, capture_output=True)
    assert proc.returncode == 0, proc.stderr
    assert len(_events(proc.stdout.decode())) == 2
    t0 = time.monotonic()
    short = write_wav(speech_wav.parent / "short.wav", samples[: RATE * 3 // 2], RATE)
    assert _cli("listen", "--bundle", str(demo_bundle), "--wav", str(short), "--realtime", "--json").returncode == 0
    assert time.monotonic() - t0 >= 1.4  # paced like a microphone


def test_long_input_keeps_memory_bounded(demo_bundle):
    """Ten minutes streamed faster than real time: the stream's state stays bounded."""
    from nim4_edge.bench.report import rss_bytes

    recognizer = Recognizer(RecognizerConfig(bundle=demo_bundle, partial_every_chunks=0, vad=VadConfig("webrtc")))
    stream = recognizer.create_stream()
    pattern = conversation()  # 5.7 s, two utterances
    finals = 0
    rss = []
    for i in range(int(600 / 5.7)):
        finals += sum(e.kind == "final" for e in stream.accept_waveform(pattern, RATE))
        if i in (20, int(600 / 5.7) - 1):
            rss.append(rss_bytes())
    assert finals >= 2 * int(600 / 5.7) - 1
    assert len(stream._history) <= stream._history.maxlen
    assert rss[1] - rss[0] < 20 * 2**20
    stream.close()
    recognizer.close()


def test_endpointer_rules():
    ep = Endpointer(EndpointConfig(pre_roll_ms=30, min_speech_ms=20, trailing_silence_ms=30, max_utterance_ms=100))
    steps = [ep.step(s) for s in [0, 0, 1, 0, 1, 1, 1, 0, 0, 0, 1]]
    assert steps[5] == ("start", 2 + 3)  # 2 speech frames + 3 frames of pre-roll
    assert steps[9] == ("end", 0)  # third silent frame
    assert [s for s in steps if s[0]] == [("start", 5), ("end", 0)]
    ep.reset()
    assert ep.step(True)[0] is None and ep.step(True) == ("start", 5)  # utterance is 5 frames long now
    events = [ep.step(True)[0] for _ in range(20)]
    assert events.index("end") == 4  # forced at max_utterance_ms = 10 frames, speech or not
    with pytest.raises(ValueError, match="multiple of 10"):
        EndpointConfig(trailing_silence_ms=15)


def test_default_learned_vad_on_real_speech(demo_bundle, tmp_path):
    """The default configuration end to end on real recordings (FSDD test takes) in car noise."""
    from pathlib import Path

    from nim4_edge.recipes.noise import car_noise, mix_at_snr
    from nim4_edge.runtime.audio import load_audio

    fsdd = Path(__file__).resolve().parents[2] / "shared" / "data" / "fsdd"
    if not fsdd.is_dir():
        pytest.skip("shared/data/fsdd is not next to this checkout")
    z = lambda s: np.zeros(int(s * RATE), np.float32)  # noqa: E731
    digits = [load_audio(fsdd / name, RATE) for name in ("3_george_0.wav", "7_jackson_1.wav")]
    clean = np.concatenate([z(0.8), digits[0], z(1.5), digits[1], z(1.2)])
    mask = np.abs(clean) > 0.02
    audio = mix_at_snr(clean, car_noise(len(clean) / RATE, RATE, np.random.default_rng(0))[: len(clean)], 10.0, mask)
    path = write_wav(tmp_path / "digits_in_car.wav", audio * 0.5, RATE)
    proc = subprocess.run([sys.executable, "-m", "nim4_edge.cli", "listen", "--bundle", str(demo_bundle),
                           "--wav", str(path), "--json"], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
    finals = [e for e in _events(proc.stdout) if e["kind"] == "final"]
    assert len(finals) == 2  # two digits, and the car noise between them wakes nothing
    starts = [0.8, 0.8 + len(digits[0]) / RATE + 1.5]
    for final, start in zip(finals, starts):
        assert start - 0.5 < final["start_s"] < start + 0.3
