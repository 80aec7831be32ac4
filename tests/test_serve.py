"""`nim4-edge serve`: the real server on a free loopback port, spoken to only through NVIDIA's own
Riva client (riva.client.ASRService). Bounded: every call has a deadline, the server is stopped."""

from __future__ import annotations

import json
import subprocess
import sys
import threading
import time

import pytest

riva_client = pytest.importorskip("riva.client", reason="the server's tests need the serve extra (nvidia-riva-client)")
grpc = pytest.importorskip("grpc")
pytest.importorskip("llama_cpp")

from serveutil import EXAMPLES, SERVER_HTTP, TOKEN, asr, chunks, pcm, start, stop, streaming_config  # noqa: E402


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("serve")
    (tmp / "token").write_text(TOKEN + "\n")
    proc, port, http_port = start(tmp, "--token-file", str(tmp / "token"), "--max-streams", "2")
    SERVER_HTTP[port] = http_port
    yield port
    seconds = stop(proc)
    assert proc.returncode == 0 and seconds < 10


def test_streaming_with_interim_results_gives_partials_and_the_final(server):
    audio, rate = pcm("en_temperature.wav")
    responses = list(asr(server).streaming_response_generator(chunks(audio), streaming_config(rate)))
    results = [r for response in responses for r in response.results]
    partials = [r for r in results if not r.is_final]
    finals = [r for r in results if r.is_final]
    assert partials and all(0 < r.stability < 1 for r in partials)
    assert [r.alternatives[0].transcript for r in finals] == ["set the temperature to 21 degrees"]
    assert finals[0].audio_processed > 2.0


def test_speech_contexts_become_this_streams_hotwords(server):
    audio, rate = pcm("zh_navigate.wav")
    service = asr(server)
    plain = [r.alternatives[0].transcript for resp in service.streaming_response_generator(chunks(audio), streaming_config(rate, False))
             for r in resp.results if r.is_final]
    boosted = [r.alternatives[0].transcript
               for resp in service.streaming_response_generator(chunks(audio), streaming_config(rate, False, ["彗心大道"]))
               for r in resp.results if r.is_final]
    assert "彗心大道" in "".join(boosted) and "彗心大道" not in "".join(plain)


def test_offline_recognize_takes_raw_pcm_and_wav_bytes(server):
    audio, rate = pcm("en_call.wav")
    config = riva_client.RecognitionConfig(encoding=riva_client.AudioEncoding.LINEAR_PCM, sample_rate_hertz=rate,
                                           language_code="en-US")
    raw = asr(server).offline_recognize(audio, config)
    wav = asr(server).offline_recognize((EXAMPLES / "en_call.wav").read_bytes(), config)
    assert raw.results and raw.results[0].alternatives[0].transcript.lower().startswith("call")
    assert [r.alternatives[0].transcript for r in wav.results] == [r.alternatives[0].transcript for r in raw.results]


def test_config_describes_the_served_model(server):
    from riva.client.proto import riva_asr_pb2

    response = asr(server).stub.GetRivaSpeechRecognitionConfig(
        riva_asr_pb2.RivaSpeechRecognitionConfigRequest(), metadata=[("authorization", f"Bearer {TOKEN}")], timeout=30)
    assert response.model_config[0].model_name == "nim4-edge"
    assert response.model_config[0].parameters["sample_rate_hz"] == "16000"


@pytest.mark.parametrize("token", [None, "wrong-token-0123456789"])
def test_calls_without_the_token_are_unauthenticated(server, token):
    audio, rate = pcm("en_call.wav")
    with pytest.raises(grpc.RpcError) as error:
        list(asr(server, token).streaming_response_generator(chunks(audio), streaming_config(rate)))
    assert error.value.code() == grpc.StatusCode.UNAUTHENTICATED and "Bearer" in error.value.details()


@pytest.mark.parametrize("change, message", [
    (dict(sample_rate_hertz=10**9), "sample_rate_hertz"),
    (dict(encoding=riva_client.AudioEncoding.FLAC), "LINEAR_PCM"),
    (dict(language_code="fr-FR"), "language_code"),
])
def test_bad_configs_are_invalid_arguments_that_name_the_fix(server, change, message):
    streaming = streaming_config(16000)
    for field, value in change.items():
        setattr(streaming.config, field, value)
    with pytest.raises(grpc.RpcError) as error:
        list(asr(server).streaming_response_generator([b"\0\0" * 800], streaming))
    assert error.value.code() == grpc.StatusCode.INVALID_ARGUMENT and message in error.value.details()


def test_audio_before_the_config_is_a_failed_precondition(server):
    from riva.client.proto import riva_asr_pb2

    requests = iter([riva_asr_pb2.StreamingRecognizeRequest(audio_content=b"\0\0" * 100)])
    with pytest.raises(grpc.RpcError) as error:
        list(asr(server).stub.StreamingRecognize(requests, metadata=[("authorization", f"Bearer {TOKEN}")], timeout=30))
    assert error.value.code() == grpc.StatusCode.FAILED_PRECONDITION and "streaming_config" in error.value.details()


def test_one_stream_over_the_limit_is_refused_at_once_and_the_others_go_on(server):
    """--max-streams 2: two streams held open, a third refused with RESOURCE_EXHAUSTED; the two finish."""
    audio, rate = pcm("en_call.wav")
    gate = threading.Event()
    outputs: dict[int, list] = {}

    def slow_chunks():
        yield from chunks(audio)[:3]
        gate.wait(60)  # holds the stream open
        yield from chunks(audio)[3:]

    def run(i):
        outputs[i] = [r.alternatives[0].transcript for resp in
                      asr(server).streaming_response_generator(slow_chunks(), streaming_config(rate, False))
                      for r in resp.results if r.is_final]

    threads = [threading.Thread(target=run, args=(i,)) for i in range(2)]
    for t in threads:
        t.start()
    time.sleep(3)
    t0 = time.monotonic()
    with pytest.raises(grpc.RpcError) as error:
        list(asr(server).streaming_response_generator(chunks(audio), streaming_config(rate)))
    assert error.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED and time.monotonic() - t0 < 5
    gate.set()
    for t in threads:
        t.join(120)
    assert outputs[0] and outputs[0] == outputs[1]


def test_serve_needs_a_good_token_file_and_a_free_port(tmp_path):
    (tmp_path / "short").write_text("abc")
    proc = subprocess.run([sys.executable, "-m", "nim4_edge.cli", "serve", "--grpc-port", "0", "--token-file",
                           str(tmp_path / "short")], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2 and "at least 16 characters" in proc.stderr and "Traceback" not in proc.stderr


# --- the OpenAI-compatible HTTP side of the same server ----------------------------------------------------

def _openai(port: int, token: str = TOKEN):
    openai = pytest.importorskip("openai", reason="the HTTP tests talk to the server with OpenAI's client")
    return openai, openai.OpenAI(base_url=f"http://127.0.0.1:{SERVER_HTTP[port]}/v1", api_key=token, max_retries=0,
                                 timeout=120)


def test_openai_transcription_of_an_example(server):
    openai, client = _openai(server)
    with open(EXAMPLES / "en_call.wav", "rb") as f:
        text = client.audio.transcriptions.create(model="nim4-edge", file=f).text
    assert text.lower().startswith("call")
    with open(EXAMPLES / "zh_navigate.wav", "rb") as f:
        verbose = client.audio.transcriptions.create(model="nim4-edge", file=f, response_format="verbose_json",
                                                     prompt="彗心大道")
    assert "彗心大道" in verbose.text and verbose.segments[0].end > verbose.segments[0].start >= 0
    segment = verbose.model_dump()["segments"][0]  # the runtime's end of turn, as extra segment fields
    assert segment["end_reason"] in ("silence", "end-of-input") and 0 < segment["speech_end"] < segment["end"]
    assert segment["confident"] is True and 0 < segment["acoustic_confidence"] <= 1  # runtime/confidence.py
    assert 0 < segment["decoder_confidence"] <= 1
    with open(EXAMPLES / "en_temperature.wav", "rb") as f:
        srt = client.audio.transcriptions.create(model="nim4-edge", file=f, response_format="srt")
    assert "-->" in srt and "set the temperature to 21 degrees" in srt
    assert [m.id for m in client.models.list().data] == ["nim4-edge"]


def test_openai_streaming_sends_deltas_then_done(server):
    _, client = _openai(server)
    with open(EXAMPLES / "en_temperature.wav", "rb") as f:
        events = list(client.audio.transcriptions.create(model="nim4-edge", file=f, stream=True))
    assert [e.type for e in events] == ["transcript.text.delta", "transcript.text.done"]
    assert events[-1].text == "set the temperature to 21 degrees"


def test_openai_errors_are_http_statuses(server):
    openai, client = _openai(server)
    _, anonymous = _openai(server, token="not-the-token-000000")
    with open(EXAMPLES / "en_call.wav", "rb") as f, pytest.raises(openai.AuthenticationError):
        anonymous.audio.transcriptions.create(model="nim4-edge", file=f)
    with pytest.raises(openai.BadRequestError, match="WAV"):
        client.audio.transcriptions.create(model="nim4-edge", file=("notes.wav", b"this is text, not audio"))
    with open(EXAMPLES / "en_call.wav", "rb") as f, pytest.raises(openai.BadRequestError, match="response_format"):
        client.audio.transcriptions.create(model="nim4-edge", file=f, response_format="yaml")
    import urllib.request

    health = urllib.request.urlopen(f"http://127.0.0.1:{SERVER_HTTP[server]}/health", timeout=30)
    assert health.status == 200 and json.loads(health.read())["status"] == "ok"


def test_tls_on_both_protocols(tmp_path):
    """A self-signed certificate for localhost: the Riva client and an HTTPS client verify it."""
    import ssl
    import urllib.request

    cert, key = tmp_path / "cert.pem", tmp_path / "key.pem"
    made = subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", str(key), "-out", str(cert),
                           "-days", "1", "-subj", "/CN=localhost", "-addext", "subjectAltName=DNS:localhost,IP:127.0.0.1"],
                          capture_output=True, text=True, timeout=60)
    if made.returncode != 0:
        pytest.skip(f"openssl could not make a test certificate: {made.stderr.strip()[:200]}")
    proc, port, http_port = start(tmp_path, "--tls-cert", str(cert), "--tls-key", str(key))
    try:
        audio, rate = pcm("en_call.wav")
        config = riva_client.RecognitionConfig(encoding=riva_client.AudioEncoding.LINEAR_PCM, sample_rate_hertz=rate,
                                               language_code="en-US")
        secure = riva_client.ASRService(riva_client.Auth(uri=f"localhost:{port}", use_ssl=True, ssl_root_cert=str(cert)))
        assert secure.offline_recognize(audio, config).results[0].alternatives[0].transcript.lower().startswith("call")
        context = ssl.create_default_context(cafile=str(cert))
        health = urllib.request.urlopen(f"https://localhost:{http_port}/health", context=context, timeout=30)
        assert json.loads(health.read())["status"] == "ok"
        with pytest.raises(grpc.RpcError):  # a client that does not speak TLS gets nowhere
            asr(port, token=None).offline_recognize(audio, config)
    finally:
        stop(proc)


# --- word timestamps, confidence, endpointing, metrics, compressed uploads -----------------------------------

def test_words_with_times_and_confidence_over_both_protocols(server):
    _, client = _openai(server)
    with open(EXAMPLES / "en_call.wav", "rb") as f:
        verbose = client.audio.transcriptions.create(model="nim4-edge", file=f, response_format="verbose_json",
                                                     timestamp_granularities=["word", "segment"])
    words = [(w.word, w.start, w.end) for w in verbose.words]
    assert [w for w, _, _ in words] == verbose.text.split() and verbose.text.lower().startswith("call")
    assert all(0 <= start < end <= verbose.duration for _, start, end in words)
    assert all(a[2] <= b[1] for a, b in zip(words, words[1:]))  # in order, not overlapping
    assert 0 < verbose.segments[0].model_extra["confidence"] <= 1

    audio, rate = pcm("zh_navigate.wav")
    streaming = streaming_config(rate, interim=False)
    streaming.config.enable_word_time_offsets = True
    finals = [r for resp in asr(server).streaming_response_generator(chunks(audio), streaming)
              for r in resp.results if r.is_final]
    alternative = finals[0].alternatives[0]
    assert "".join(w.word for w in alternative.words) == alternative.transcript  # a word per Han character
    assert all(0 <= w.start_time < w.end_time <= 3000 and 0 < w.confidence <= 1 for w in alternative.words)
    assert 0 < alternative.confidence <= 1


def _two_utterances() -> bytes:
    """en_call then en_temperature: ~1.2 s of silence between the two commands."""
    return pcm("en_call.wav")[0] + pcm("en_temperature.wav")[0]


def test_endpointing_config_sets_this_streams_endpointer(server):
    audio = _two_utterances()

    def finals(**endpointing) -> list[str]:
        streaming = streaming_config(16000, interim=False)
        for name, value in endpointing.items():
            setattr(streaming.config.endpointing_config, name, value)
        return [r.alternatives[0].transcript for resp in asr(server).streaming_response_generator(chunks(audio), streaming)
                for r in resp.results if r.is_final]

    assert len(finals()) == 2  # the server's 600 ms of trailing silence ends the first command
    assert len(finals(stop_history=2000)) == 1  # this stream waits 2 s: one utterance
    for bad, message in ((dict(stop_history=-1), "stop_history"), (dict(start_threshold=2.0), "start_threshold")):
        with pytest.raises(grpc.RpcError) as error:
            finals(**bad)
        assert error.value.code() == grpc.StatusCode.INVALID_ARGUMENT and message in error.value.details()


def test_end_of_turn_reasons_and_speech_end_in_the_trailing_metadata(server):
    """stop_history_eou turns the adaptive end of turn on for this stream; why each turn ended and
    where its speech did come back in the call's trailing metadata (Riva's messages have no field)."""
    from riva.client.proto import riva_asr_pb2

    from nim4_edge.runtime.endpoint import END_REASONS

    audio = _two_utterances()
    service = asr(server)

    def call(**endpointing):
        streaming = streaming_config(16000, interim=False)
        for name, value in endpointing.items():
            setattr(streaming.config.endpointing_config, name, value)
        requests = [riva_asr_pb2.StreamingRecognizeRequest(streaming_config=streaming)]
        requests += [riva_asr_pb2.StreamingRecognizeRequest(audio_content=c) for c in chunks(audio)]
        responses = service.stub.StreamingRecognize(iter(requests), metadata=service.auth.get_auth_metadata(), timeout=60)
        finals = [r for resp in responses for r in resp.results if r.is_final]
        trailing = dict(responses.trailing_metadata())
        reasons = trailing["nim4-end-reasons"].split(",")
        speech_end_ms = [int(ms) for ms in trailing["nim4-speech-end-ms"].split(",")]
        assert len(reasons) == len(speech_end_ms) == len(finals) == 2
        confident = trailing["nim4-confident"].split(",")
        acoustic = [float(x) for x in trailing["nim4-acoustic-confidence"].split(",")]
        decoder = [float(x) for x in trailing["nim4-decoder-confidence"].split(",")]
        assert len(confident) == len(acoustic) == len(decoder) == 2 and set(confident) <= {"0", "1"}
        assert all(0 < a <= 1 for a in acoustic + decoder)
        for final, ms in zip(finals, speech_end_ms):
            assert 0 < ms < final.audio_processed * 1000  # the speech ended before the audio the final covers
        return reasons, [round(f.audio_processed * 1000) - ms for f, ms in zip(finals, speech_end_ms)]

    fixed, fixed_wait = call()
    assert fixed[0] == "silence" and fixed[1] in ("silence", "end-of-input")
    assert fixed_wait[0] == 600 + 15  # the server's trailing silence, + the last fbank window's reach
    adaptive, wait = call(stop_history_eou=150, stop_history=800)
    assert set(adaptive) <= set(END_REASONS)
    for reason, ms in zip(adaptive, wait):  # ended at the pause, or waited the whole stop_history
        assert ms == (150 + 15 if reason in ("eos-predicted", "end-of-input") else 800 + 15)
    with pytest.raises(grpc.RpcError) as error:
        call(stop_history_eou=900, stop_history=800)
    assert error.value.code() == grpc.StatusCode.INVALID_ARGUMENT and "stop_history_eou" in error.value.details()


def _metrics(port: int) -> dict[str, float]:
    import urllib.request

    request = urllib.request.Request(f"http://127.0.0.1:{SERVER_HTTP[port]}/metrics",
                                     headers={"Authorization": f"Bearer {TOKEN}"})
    text = urllib.request.urlopen(request, timeout=30).read().decode()
    return {line.rsplit(" ", 1)[0]: float(line.rsplit(" ", 1)[1]) for line in text.splitlines()
            if line and not line.startswith("#")}


def test_metrics_count_streams_utterances_errors_and_latency(server):
    before = _metrics(server)
    audio, rate = pcm("en_temperature.wav")
    list(asr(server).streaming_response_generator(chunks(audio), streaming_config(rate)))
    with pytest.raises(grpc.RpcError):
        list(asr(server).streaming_response_generator([b"\0\0"], streaming_config(10**9)))
    after = _metrics(server)
    assert after['nim4_utterances_total{protocol="grpc"}'] == before.get('nim4_utterances_total{protocol="grpc"}', 0) + 1
    key = 'nim4_errors_total{protocol="grpc",status="INVALID_ARGUMENT"}'
    assert after[key] == before.get(key, 0) + 1
    assert after["nim4_active_streams"] == 0 and after["nim4_max_streams"] == 2
    assert after["nim4_final_latency_seconds_count"] == before.get("nim4_final_latency_seconds_count", 0) + 1
    turns = [k for k in after if k.startswith('nim4_turns_total{protocol="grpc"')]
    assert sum(after[k] for k in turns) == sum(before.get(k, 0) for k in turns) + 1
    assert after["nim4_partial_latency_seconds_count"] > before.get("nim4_partial_latency_seconds_count", 0)
    assert after['nim4_audio_seconds_total{protocol="grpc"}'] > 3.0


@pytest.mark.parametrize("container, subtype", [("FLAC", "PCM_16"), ("OGG", "VORBIS")])
def test_flac_and_ogg_uploads_are_decoded(server, tmp_path, container, subtype):
    soundfile = pytest.importorskip("soundfile")
    samples, rate = soundfile.read(EXAMPLES / "en_temperature.wav", dtype="float32")
    path = tmp_path / f"command.{container.lower()}"
    soundfile.write(path, samples, rate, format=container, subtype=subtype)
    _, client = _openai(server)
    with open(path, "rb") as f:
        assert client.audio.transcriptions.create(model="nim4-edge", file=f).text == "set the temperature to 21 degrees"


def test_batched_decode_serves_concurrent_streams(tmp_path):
    """--batched-decode: one llama.cpp context for the streams; two at once read what they read alone."""
    proc, port, _ = start(tmp_path, "--batched-decode", "--max-streams", "2")
    try:
        got: dict[str, list[str]] = {}

        def run(name: str) -> None:
            audio, rate = pcm(name)
            got[name] = [r.alternatives[0].transcript for resp in
                         asr(port, None).streaming_response_generator(chunks(audio), streaming_config(rate))
                         for r in resp.results if r.is_final]

        threads = [threading.Thread(target=run, args=(n,)) for n in ("en_temperature.wav", "zh_window.wav")]
        for t in threads:
            t.start()
        for t in threads:
            t.join(120)
        assert got == {"en_temperature.wav": ["set the temperature to 21 degrees"], "zh_window.wav": ["打开车窗"]}
    finally:
        assert stop(proc) < 10 and proc.returncode == 0
