"""OpenAI-compatible HTTP on the same loaded recognizer: `POST /v1/audio/transcriptions`, so any
OpenAI client (`openai.OpenAI(base_url=...)`, curl) transcribes a recording; `GET /v1/models`;
`GET /health` (200 once the model is loaded).

The HTTP server is the standard library's threading server (one thread per request, as the gRPC
side); the multipart form is parsed by python-multipart (the parser Starlette and FastAPI use). The
audio is a WAV file (any rate and channel count the runtime reads); `prompt` phrases, comma-separated,
become this request's hotwords. response_format: json | text | verbose_json (segments: one per
utterance, with start/end) | srt | vtt; `stream=true` sends server-sent events
`transcript.text.delta` (each final) and `transcript.text.done`.

Not yet (issue 15): word timestamps (`timestamp_granularities[]=word` answers with segments only),
FLAC/OGG uploads, /metrics.
"""

from __future__ import annotations

import hmac
import io
import json
import logging
import ssl
import threading
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import numpy as np
from python_multipart.multipart import MultipartParser, parse_options_header

from nim4_edge.runtime.audio import AudioError, WavReader
from nim4_edge.runtime.errors import Nim4Error
from nim4_edge.runtime.hotwords import HotwordEntry, LexiconError
from nim4_edge.runtime.recognizer import Event, Recognizer
from nim4_edge.runtime.text import has_han
from nim4_edge.serve.riva import MODEL_NAME, StreamSlots

log = logging.getLogger(__name__)

MAX_UPLOAD_BYTES = 64 << 20  # one upload: 64 MiB (~35 min of 16 kHz 16-bit WAV)
FORMATS = ("json", "text", "verbose_json", "srt", "vtt")


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


def render(finals: list[Event], text: str, response_format: str, duration_s: float, language: str) -> tuple[str, str]:
    """(content type, body) of a transcription in one of FORMATS."""
    if response_format == "text":
        return "text/plain; charset=utf-8", text + "\n"
    if response_format == "json":
        return "application/json", json.dumps({"text": text}, ensure_ascii=False)
    segments = [{"id": i, "start": round(e.start_s, 3), "end": round(e.end_s, 3), "text": e.text}
                for i, e in enumerate(finals)]
    if response_format == "verbose_json":
        return "application/json", json.dumps({"task": "transcribe", "language": language, "duration": round(duration_s, 3),
                                               "text": text, "segments": segments}, ensure_ascii=False)
    if response_format == "srt":
        blocks = [f"{i + 1}\n{_timestamp(s['start'], ',')} --> {_timestamp(s['end'], ',')}\n{s['text']}\n" for i, s in enumerate(segments)]
        return "text/plain; charset=utf-8", "\n".join(blocks)
    cues = [f"{_timestamp(s['start'], '.')} --> {_timestamp(s['end'], '.')}\n{s['text']}\n" for s in segments]
    return "text/vtt; charset=utf-8", "WEBVTT\n\n" + "\n".join(cues)


def _form(body: bytes, content_type: str) -> dict[str, bytes]:
    """multipart/form-data fields (name -> bytes; the last value of a repeated name wins)."""
    kind, params = parse_options_header(content_type)
    if kind != b"multipart/form-data" or b"boundary" not in params:
        raise HttpError(HTTPStatus.BAD_REQUEST, "send multipart/form-data with a 'file' field (the audio)")
    fields: dict[str, bytes] = {}
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
            fields[state["name"]] = b"".join(state["data"])
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
    token: str | None

    def log_message(self, format, *args) -> None:  # noqa: A002 - the base class's name
        log.debug("http %s: " + format, self.address_string(), *args)

    def _send(self, status: HTTPStatus, content_type: str, body: str) -> None:
        data = body.encode("utf-8")
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def _error(self, error: HttpError) -> None:
        self._send(error.status, "application/json",
                   json.dumps({"error": {"message": str(error), "type": error.kind, "code": error.status.value}}))

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
                raise HttpError(HTTPStatus.REQUEST_ENTITY_TOO_LARGE, f"upload of {length} bytes; at most {MAX_UPLOAD_BYTES}")
            fields = _form(self.rfile.read(length), self.headers.get("Content-Type", ""))
            self._transcribe(fields)
        except HttpError as e:
            self._error(e)
        except (ValueError, Nim4Error) as e:
            self._error(HttpError(HTTPStatus.BAD_REQUEST, str(e)))

    def _transcribe(self, fields: dict[str, bytes]) -> None:
        if "file" not in fields or not fields["file"]:
            raise HttpError(HTTPStatus.BAD_REQUEST, "the form has no 'file' (the audio to transcribe)")
        response_format = fields.get("response_format", b"json").decode() or "json"
        if response_format not in FORMATS:
            raise HttpError(HTTPStatus.BAD_REQUEST, f"response_format {response_format!r}; choose from {', '.join(FORMATS)}")
        prompt = fields.get("prompt", b"").decode("utf-8", "replace")
        hotwords = [HotwordEntry(p.strip()) for p in prompt.replace("，", ",").split(",") if p.strip()]
        try:
            with WavReader.from_file(io.BytesIO(fields["file"]), "file") as reader:
                rate = reader.info.sample_rate_hz
                samples = np.concatenate(list(reader.blocks(1 << 16)) or [np.zeros(0, np.float32)])
        except AudioError as e:
            raise HttpError(HTTPStatus.BAD_REQUEST, f"{e} (send a WAV file)") from None
        if not self.slots.take():
            raise HttpError(HTTPStatus.TOO_MANY_REQUESTS, f"all {self.slots.limit} streams are in use; retry later",
                            "rate_limit_error")
        if fields.get("stream", b"").decode().lower() == "true":
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
        language = fields.get("language", b"").decode() or ("zh" if has_han(transcript.text) else "en")
        content_type, body = render(transcript.finals, transcript.text, response_format, len(samples) / rate, language)
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
                    send({"type": "transcript.text.delta", "delta": (" " if texts else "") + event.text.strip()})
                    texts.append(event.text.strip())

        step = max(1, rate // 10)  # 100 ms blocks, as a microphone would deliver them
        with stream:
            for start in range(0, len(samples), step):
                deliver(stream.accept_waveform(samples[start : start + step], rate))
            deliver(stream.input_finished())
        send({"type": "transcript.text.done", "text": " ".join(texts)})


class OpenAIHttpServer:
    """The HTTP side of `nim4-edge serve`, on its own thread."""

    def __init__(self, recognizer: Recognizer, slots: StreamSlots, host: str, port: int, token: str | None,
                 tls: tuple[Path, Path] | None = None):
        handler = type("Handler", (_Handler,), {"recognizer": recognizer, "slots": slots, "token": token})
        try:
            self._http = ThreadingHTTPServer((host, port), handler)
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
            self._http.socket = context.wrap_socket(self._http.socket, server_side=True)
        self._http.daemon_threads = True
        self.port = self._http.server_address[1]
        self._thread = threading.Thread(target=self._http.serve_forever, name="nim4-http", daemon=True)

    def start(self) -> "OpenAIHttpServer":
        self._thread.start()
        return self

    def stop(self) -> None:
        self._http.shutdown()
        self._http.server_close()
