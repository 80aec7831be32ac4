"""OpenAI-compatible HTTP on the same loaded recognizer: `POST /v1/audio/transcriptions`, so any
OpenAI client (`openai.OpenAI(base_url=...)`, curl) transcribes a recording; `GET /v1/models`;
`GET /health` (200 once the model is loaded); `GET /metrics` (Prometheus text).

The HTTP server is the standard library's threading server (one thread per request, as the gRPC
side); the multipart form is parsed by python-multipart (the parser Starlette and FastAPI use). The
audio is a WAV file (read by the runtime's own reader), or FLAC / OGG (decoded by soundfile, whose
wheel carries libsndfile: no system codec); `prompt` phrases, comma-separated, become this request's
hotwords. response_format: json | text | verbose_json (segments: one per utterance, with start/end
and confidence, end_reason and speech_end (why the turn ended, where its speech did); words with
`timestamp_granularities[]=word`) | srt | vtt; `stream=true` sends
server-sent events `transcript.text.delta` (each final) and `transcript.text.done`. A connection
silent for the idle timeout is closed.
"""

from __future__ import annotations

import hmac
import io
import json
import logging
import socket
import ssl
import threading
import time
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import numpy as np
import soundfile
from python_multipart.multipart import MultipartParser, parse_options_header

from nim4_edge.runtime.audio import MAX_CHANNELS, MAX_RATE_HZ, MIN_RATE_HZ, AudioError, WavReader
from nim4_edge.runtime.errors import Nim4Error, Nim4RuntimeError
from nim4_edge.runtime.hotwords import HotwordEntry, LexiconError
from nim4_edge.runtime.recognizer import Event, Recognizer
from nim4_edge.runtime.text import has_han
from nim4_edge.serve.metrics import CONTENT_TYPE as METRICS_CONTENT_TYPE
from nim4_edge.serve.metrics import Metrics
from nim4_edge.serve.riva import IDLE_TIMEOUT_S, MODEL_NAME, StreamSlots

log = logging.getLogger(__name__)

MAX_UPLOAD_BYTES = 64 << 20  # one upload: 64 MiB (~35 min of 16 kHz 16-bit WAV)
# decoded samples at most: those of the largest 16-bit WAV upload (a compressed file can hold far more
# audio than its bytes; this bounds the memory one FLAC/OGG request can take to 128 MiB of floats)
MAX_UPLOAD_SAMPLES = MAX_UPLOAD_BYTES // 2
FORMATS = ("json", "text", "verbose_json", "srt", "vtt")
PROTOCOL = "http"


class HttpError(Exception):
    def __init__(self, status: HTTPStatus, message: str, kind: str = "invalid_request_error"):
        super().__init__(message)
        self.status, self.kind = status, kind


def _timestamp(seconds: float, separator: str) -> str:
    ms = int(round(seconds * 1000))
    h, ms = divmod(ms, 3_600_000)
    m, ms = divmod(ms, 60_000)
    s, ms = divmod(ms, 1000)
    return f"{h:02d}:{m:02d}:{s:02d}{separator}{ms:03d}"


def render(finals: list[Event], text: str, response_format: str, duration_s: float, language: str,
           words: bool = False) -> tuple[str, str]:
    """(content type, body) of a transcription in one of FORMATS; `words`: verbose_json lists them."""
    if response_format == "text":
        return "text/plain; charset=utf-8", text + "\n"
    if response_format == "json":
        return "application/json", json.dumps({"text": text}, ensure_ascii=False)
    segments = [{"id": i, "start": round(e.start_s, 3), "end": round(e.end_s, 3), "text": e.text,
                 "confidence": round(e.confidence or 0.0, 4), "end_reason": e.end_reason,
                 "speech_end": round(e.speech_end_s or 0.0, 3), "confident": e.confident,
                 "acoustic_confidence": None if e.acoustic_confidence is None else round(e.acoustic_confidence, 4),
                 "decoder_confidence": None if e.decoder_confidence is None else round(e.decoder_confidence, 4)}
                for i, e in enumerate(finals)]
    if response_format == "verbose_json":
        body = {"task": "transcribe", "language": language, "duration": round(duration_s, 3), "text": text,
                "segments": segments}
        if words:
            body["words"] = [{"word": w.word, "start": round(w.start_s, 3), "end": round(w.end_s, 3),
                              "confidence": round(w.confidence, 4)} for e in finals for w in e.words]
        return "application/json", json.dumps(body, ensure_ascii=False)
    if response_format == "srt":
        blocks = [f"{i + 1}\n{_timestamp(s['start'], ',')} --> {_timestamp(s['end'], ',')}\n{s['text']}\n" for i, s in enumerate(segments)]
        return "text/plain; charset=utf-8", "\n".join(blocks)
    cues = [f"{_timestamp(s['start'], '.')} --> {_timestamp(s['end'], '.')}\n{s['text']}\n" for s in segments]
    return "text/vtt; charset=utf-8", "WEBVTT\n\n" + "\n".join(cues)


def decode_upload(data: bytes) -> tuple[np.ndarray, int]:
    """(mono float samples, rate) of an uploaded WAV, FLAC or OGG file; HttpError naming the fix."""
    if data[:4] == b"RIFF":
        try:
            with WavReader.from_file(io.BytesIO(data), "file") as reader:
                return reader.read_all()
        except AudioError as e:
            raise HttpError(HTTPStatus.BAD_REQUEST, f"{e} (send a WAV, FLAC or OGG file)") from None
    try:
        info = soundfile.info(io.BytesIO(data))
        if info.format not in ("FLAC", "OGG"):
            raise HttpError(HTTPStatus.BAD_REQUEST, f"file: {info.format} audio is not served; send WAV, FLAC or OGG")
        if not MIN_RATE_HZ <= info.samplerate <= MAX_RATE_HZ or not 1 <= info.channels <= MAX_CHANNELS:
            raise HttpError(HTTPStatus.BAD_REQUEST, f"file: {info.samplerate} Hz x {info.channels} channels is outside "
                            f"{MIN_RATE_HZ}-{MAX_RATE_HZ} Hz x 1-{MAX_CHANNELS}")
        if info.frames * info.channels > MAX_UPLOAD_SAMPLES:
            raise HttpError(HTTPStatus.REQUEST_ENTITY_TOO_LARGE, f"file: {info.frames / info.samplerate:.0f} s x "
                            f"{info.channels} channels of audio; at most {MAX_UPLOAD_SAMPLES} samples per request, "
                            "as in the largest WAV (split it, or stream it over gRPC)")
        samples, rate = soundfile.read(io.BytesIO(data), dtype="float32", always_2d=True)
    except (RuntimeError, ValueError, TypeError, EOFError) as e:  # libsndfile's errors are RuntimeErrors
        raise HttpError(HTTPStatus.BAD_REQUEST, f"file: not a readable WAV, FLAC or OGG file ({e})") from None
    return samples.mean(axis=1), int(rate)


def _form(body: bytes, content_type: str) -> dict[str, list[bytes]]:
    """multipart/form-data fields: name -> its values, in order (`timestamp_granularities[]` repeats)."""
    kind, params = parse_options_header(content_type)
    if kind != b"multipart/form-data" or b"boundary" not in params:
        raise HttpError(HTTPStatus.BAD_REQUEST, "send multipart/form-data with a 'file' field (the audio)")
    fields: dict[str, list[bytes]] = {}
    state = {"name": None, "data": []}

    def on_header_value(data, start, end):
        text = data[start:end].decode("utf-8", "replace")
        if "name=" in text:
            _, options = parse_options_header(text)
            state["name"] = options.get(b"name", b"").decode("utf-8", "replace")

    def on_part_data(data, start, end):
        state["data"].append(data[start:end])

    def on_part_end():
        if state["name"]:
            fields.setdefault(state["name"], []).append(b"".join(state["data"]))
        state["name"], state["data"] = None, []

    parser = MultipartParser(params[b"boundary"], callbacks={"on_header_value": on_header_value,
                                                               "on_part_data": on_part_data, "on_part_end": on_part_end})
    parser.write(body)
    parser.finalize()
    return fields


class _Handler(BaseHTTPRequestHandler):
    server_version = "nim4-edge"
    protocol_version = "HTTP/1.1"

    # set by OpenAIHttpServer
    recognizer: Recognizer
    slots: StreamSlots
    metrics: Metrics
    token: str | None
    timeout: float  # idle seconds on the socket (a read or write that waits longer closes it)

    def setup(self) -> None:
        super().setup()  # sets the socket timeout
        if isinstance(self.connection, ssl.SSLSocket):  # the TLS handshake here, on this request's thread
            self.connection.do_handshake()

    def log_message(self, format, *args) -> None:  # noqa: A002 - the base class's name
        log.debug("http %s: " + format, self.address_string(), *args)

    def _send(self, status: HTTPStatus, content_type: str, body: str | bytes) -> None:
        data = body.encode("utf-8") if isinstance(body, str) else body
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def _error(self, error: HttpError) -> None:
        self.metrics.errors.labels(PROTOCOL, str(error.status.value)).inc()
        self._send(error.status, "application/json",
                   json.dumps({"error": {"message": str(error), "type": error.kind, "code": error.status.value}}))

    def _linger(self, max_bytes: int = 4 << 20, seconds: float = 2.0) -> None:
        """The body of a refused upload was not read: close our side for writing, then read and drop
        what the client still sends (bounded), so that closing does not reset the connection before
        the client has read the 413 (Apache's "lingering close")."""
        try:
            self.wfile.flush()
            self.connection.shutdown(socket.SHUT_WR)
            self.connection.settimeout(seconds)
            deadline, dropped = time.monotonic() + seconds, 0
            while dropped < max_bytes and time.monotonic() < deadline:
                data = self.connection.recv(65536)
                if not data:
                    break
                dropped += len(data)
        except OSError:
            pass  # the client is gone: nothing left to protect

    def _authorized(self) -> bool:
        if self.token is None:
            return True
        given = self.headers.get("Authorization", "").encode()
        return hmac.compare_digest(given, f"Bearer {self.token}".encode())

    def do_GET(self) -> None:  # noqa: N802 - the base class's name
        if self.path == "/health":
            return self._send(HTTPStatus.OK, "application/json", json.dumps({"status": "ok", "model": MODEL_NAME}))
        if not self._authorized():
            return self._error(HttpError(HTTPStatus.UNAUTHORIZED, "missing or wrong token: send 'Authorization: Bearer <token>'",
                                         "authentication_error"))
        if self.path == "/v1/models":
            return self._send(HTTPStatus.OK, "application/json", json.dumps(
                {"object": "list", "data": [{"id": MODEL_NAME, "object": "model", "owned_by": "nim4-edge"}]}))
        if self.path == "/metrics":
            return self._send(HTTPStatus.OK, METRICS_CONTENT_TYPE, self.metrics.exposition())
        self._error(HttpError(HTTPStatus.NOT_FOUND, f"no route {self.path}; POST /v1/audio/transcriptions"))

    def do_POST(self) -> None:  # noqa: N802
        try:
            if not self._authorized():
                raise HttpError(HTTPStatus.UNAUTHORIZED, "missing or wrong token: send 'Authorization: Bearer <token>'",
                                "authentication_error")
            if self.path != "/v1/audio/transcriptions":
                raise HttpError(HTTPStatus.NOT_FOUND, f"no route {self.path}; POST /v1/audio/transcriptions")
            length = int(self.headers.get("Content-Length") or 0)
            if length > MAX_UPLOAD_BYTES:
                self.close_connection = True  # the body is not read: this connection cannot carry another request
                raise HttpError(HTTPStatus.REQUEST_ENTITY_TOO_LARGE,
                                f"upload of {length} bytes; at most {MAX_UPLOAD_BYTES} (split the recording, or stream "
                                "it over gRPC)")
            fields = _form(self.rfile.read(length), self.headers.get("Content-Type", ""))
            self._transcribe(fields)
        except HttpError as e:
            self._error(e)
            if e.status == HTTPStatus.REQUEST_ENTITY_TOO_LARGE and self.close_connection:
                self._linger()
        except Nim4RuntimeError as e:  # valid input, failed run (e.g. no memory for a decoder context)
            self._error(HttpError(HTTPStatus.INTERNAL_SERVER_ERROR, str(e), "server_error"))
        except (ValueError, Nim4Error) as e:
            self._error(HttpError(HTTPStatus.BAD_REQUEST, str(e)))
        except (ConnectionError, TimeoutError):
            self.close_connection = True  # the client went away or went quiet: nobody to answer
        except Exception as e:  # noqa: BLE001 - a bug must cost this request, not the server
            log.exception("http: request failed")
            self._error(HttpError(HTTPStatus.INTERNAL_SERVER_ERROR, f"{type(e).__name__}: {e}", "server_error"))

    def _transcribe(self, fields: dict[str, list[bytes]]) -> None:
        def last(name: str, default: bytes = b"") -> str:
            return fields.get(name, [default])[-1].decode("utf-8", "replace")

        if not fields.get("file", [b""])[-1]:
            raise HttpError(HTTPStatus.BAD_REQUEST, "the form has no 'file' (the audio to transcribe)")
        response_format = last("response_format") or "json"
        if response_format not in FORMATS:
            raise HttpError(HTTPStatus.BAD_REQUEST, f"response_format {response_format!r}; choose from {', '.join(FORMATS)}")
        granularities = {g.decode("utf-8", "replace") for g in fields.get("timestamp_granularities[]", [])}
        if granularities - {"word", "segment"}:
            raise HttpError(HTTPStatus.BAD_REQUEST, f"timestamp_granularities[] {sorted(granularities)}: word and/or segment")
        prompt = last("prompt")
        hotwords = [HotwordEntry(p.strip()) for p in prompt.replace("，", ",").split(",") if p.strip()]
        samples, rate = decode_upload(fields["file"][-1])
        if self.slots.draining:
            raise HttpError(HTTPStatus.SERVICE_UNAVAILABLE, "the server is shutting down; retry on another instance",
                            "server_error")
        if not self.slots.take():
            self.metrics.refused.labels(PROTOCOL).inc()
            raise HttpError(HTTPStatus.TOO_MANY_REQUESTS, f"all {self.slots.limit} streams are in use; retry later",
                            "rate_limit_error")
        self.metrics.streams.labels(PROTOCOL).inc()
        self.metrics.audio_seconds.labels(PROTOCOL).inc(len(samples) / rate)
        if last("stream").lower() == "true":
            try:
                return self._stream(samples, rate, hotwords)
            finally:
                self.slots.give()
        try:
            try:
                transcript = self.recognizer.transcribe(samples, rate, hotwords=hotwords)
            except LexiconError as e:
                raise HttpError(HTTPStatus.BAD_REQUEST, f"prompt: {e}") from None
        finally:
            self.slots.give()
        if transcript.errors:
            raise HttpError(HTTPStatus.INTERNAL_SERVER_ERROR, f"{len(transcript.errors)} utterance(s) failed: "
                            f"{transcript.errors[0]}", "server_error")
        for event in transcript.finals:
            self.metrics.final(PROTOCOL, event.timings.final_latency_ms, event.end_reason)
        language = last("language") or ("zh" if has_han(transcript.text) else "en")
        content_type, body = render(transcript.finals, transcript.text, response_format, len(samples) / rate, language,
                                    words="word" in granularities)
        self._send(HTTPStatus.OK, content_type, body)

    def _stream(self, samples: np.ndarray, rate: int, hotwords: list[HotwordEntry]) -> None:
        """Server-sent events as the finals come: one transcript.text.delta per utterance, then
        transcript.text.done with the whole text (the connection closes after it)."""
        try:
            stream = self.recognizer.create_stream(hotwords)
        except LexiconError as e:
            raise HttpError(HTTPStatus.BAD_REQUEST, f"prompt: {e}") from None
        self.send_response(HTTPStatus.OK)
        self.send_header("Content-Type", "text/event-stream")
        self.send_header("Cache-Control", "no-cache")
        self.send_header("Connection", "close")
        self.end_headers()
        self.close_connection = True
        texts: list[str] = []

        def send(event: dict) -> None:
            self.wfile.write(f"data: {json.dumps(event, ensure_ascii=False)}\n\n".encode("utf-8"))
            self.wfile.flush()

        def deliver(events: list[Event]) -> None:  # each final as soon as its utterance ends
            for event in events:
                if event.kind == "final" and event.text.strip():
                    self.metrics.final(PROTOCOL, event.timings.final_latency_ms, event.end_reason)
                    send({"type": "transcript.text.delta", "delta": (" " if texts else "") + event.text.strip(),
                          "end_reason": event.end_reason, "speech_end": round(event.speech_end_s or 0.0, 3)})
                    texts.append(event.text.strip())

        step = max(1, rate // 10)  # 100 ms blocks, as a microphone would deliver them
        with stream:
            for start in range(0, len(samples), step):
                deliver(stream.accept_waveform(samples[start : start + step], rate))
            deliver(stream.input_finished())
        if stream.errors:  # the status line is sent: an error event, as OpenAI's streams do
            self.metrics.errors.labels(PROTOCOL, "500").inc()
            send({"type": "error", "error": {"message": f"an utterance failed: {stream.errors[0]}", "type": "server_error"}})
            return
        send({"type": "transcript.text.done", "text": " ".join(texts)})


class _Server(ThreadingHTTPServer):
    daemon_threads = True

    def handle_error(self, request, client_address) -> None:
        """A connection that breaks (random bytes, a failed TLS handshake, a client gone) is logged
        at debug level, not printed as a traceback; the server goes on."""
        log.debug("http %s: connection failed", client_address, exc_info=True)


class OpenAIHttpServer:
    """The HTTP side of `nim4-edge serve`, on its own thread."""

    def __init__(self, recognizer: Recognizer, slots: StreamSlots, metrics: Metrics, host: str, port: int,
                 token: str | None, tls: tuple[Path, Path] | None = None, idle_timeout_s: float = IDLE_TIMEOUT_S):
        handler = type("Handler", (_Handler,), {"recognizer": recognizer, "slots": slots, "metrics": metrics,
                                                "token": token, "timeout": idle_timeout_s})
        try:
            self._http = _Server((host, port), handler)
        except OSError as e:
            raise Nim4Error(f"cannot listen on {host}:{port} ({e.strerror}); is another server using the port? "
                            "(--http-port)") from None
        if tls is not None:  # HTTPS with the same certificate and key as the gRPC side
            cert, key = tls
            context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
            try:
                context.load_cert_chain(certfile=str(cert), keyfile=str(key))
            except (OSError, ssl.SSLError) as e:
                self._http.server_close()
                raise Nim4Error(f"--tls-cert {cert} / --tls-key {key}: not a usable PEM certificate and key ({e})") from None
            # the handshake on the request's thread (_Handler.setup), not in accept(): a client that
            # connects and sends nothing must not hold up everyone else's accept
            self._http.socket = context.wrap_socket(self._http.socket, server_side=True, do_handshake_on_connect=False)
        self.port = self._http.server_address[1]
        self._thread = threading.Thread(target=self._http.serve_forever, name="nim4-http", daemon=True)

    def start(self) -> "OpenAIHttpServer":
        self._thread.start()
        return self

    def stop_accepting(self) -> None:
        self._http.shutdown()

    def stop(self) -> None:
        self._http.shutdown()
        self._http.server_close()
