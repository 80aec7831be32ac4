"""`nim4-edge serve`: one process, one loaded recognizer, many concurrent streams over gRPC (Riva's
ASR API, riva.py) and HTTP (OpenAI's transcription API, openai_http.py).

Each stream gets its own runtime Stream (resampler, VAD, endpointer, llama.cpp context, hotword
additions); the encoder session, the decoder weights and the hotword base are shared. gRPC runs each
call on a worker thread; onnxruntime and llama.cpp release the GIL while they compute, so streams
proceed in parallel on the cores.

Each stream decodes in its own llama.cpp context unless --batched-decode (runtime/shared_decoder.py:
one context, the streams' decode steps batched): measured (bench/batching.py), a context per stream
is faster for the demo decoder on this CPU (batching 0.53x at 4 streams) and slower for a
Qwen3-1.7B-size one (batching 1.32x; README "Serving other programs").

Safety: 127.0.0.1 by default; with a token file every call needs `authorization: Bearer <token>`
(compared in constant time); TLS with a certificate and key; at most `max_streams` streams (one over
is refused at once); streams and connections silent for `idle_timeout_s` are closed; SIGTERM/SIGINT
refuse new streams at once and let those in flight finish (up to 5 s). GET /metrics counts it all.
"""

from __future__ import annotations

import hmac
import logging
import signal
import threading
import time
from concurrent import futures
from dataclasses import dataclass
from pathlib import Path

import grpc
from riva.client.proto import riva_asr_pb2_grpc

from nim4_edge.runtime.errors import Nim4Error
from nim4_edge.runtime.recognizer import Recognizer, RecognizerConfig
from nim4_edge.serve.metrics import Metrics
from nim4_edge.serve.openai_http import OpenAIHttpServer
from nim4_edge.serve.riva import IDLE_TIMEOUT_S, RivaSpeechRecognition, StreamSlots

log = logging.getLogger(__name__)

LOOPBACK = ("127.0.0.1", "localhost", "::1")
GRACE_S = 5.0  # SIGTERM: calls in flight get this long to finish
MAX_MESSAGE_BYTES = 64 << 20


@dataclass(frozen=True)
class ServeConfig:
    host: str = "127.0.0.1"
    grpc_port: int = 50051  # 0: any free port (printed)
    http_port: int = 8000  # OpenAI-compatible HTTP; 0: any free port (printed)
    max_streams: int = 8
    token_file: Path | None = None
    tls_cert: Path | None = None
    tls_key: Path | None = None
    idle_timeout_s: float = IDLE_TIMEOUT_S  # a stream or connection silent this long is closed

    def __post_init__(self) -> None:
        if self.max_streams < 1:
            raise ValueError("--max-streams must be >= 1")
        if not self.idle_timeout_s > 0:
            raise ValueError("--idle-timeout-s must be > 0")
        if (self.tls_cert is None) != (self.tls_key is None):
            raise ValueError("TLS needs both --tls-cert and --tls-key")


def read_token(path: Path) -> str:
    try:
        token = Path(path).read_text(encoding="utf-8").strip()
    except (OSError, UnicodeDecodeError) as e:
        raise Nim4Error(f"--token-file {path}: cannot be read ({e}); one line holding the token") from None
    if len(token) < 16:
        raise Nim4Error(f"--token-file {path}: the token must be at least 16 characters (e.g. `openssl rand -hex 24`)")
    return token


class _BearerToken(grpc.ServerInterceptor):
    """Every call carries `authorization: Bearer <token>`, or it is refused with UNAUTHENTICATED."""

    def __init__(self, token: str):
        self._expected = f"Bearer {token}".encode()

        def deny(request, context):
            context.abort(grpc.StatusCode.UNAUTHENTICATED,
                          "missing or wrong token: send metadata 'authorization: Bearer <token>' (the server's --token-file)")

        self._deny_unary = grpc.unary_unary_rpc_method_handler(deny)
        self._deny_stream = grpc.stream_stream_rpc_method_handler(lambda it, ctx: deny(None, ctx))

    def intercept_service(self, continuation, handler_call_details):
        given = dict(handler_call_details.invocation_metadata).get("authorization", "").encode()
        if hmac.compare_digest(given, self._expected):
            return continuation(handler_call_details)
        return self._deny_stream if handler_call_details.method.endswith("StreamingRecognize") else self._deny_unary


class Server:
    """The running service: `start()`, `port`, `wait()`, `stop()`."""

    def __init__(self, recognizer: Recognizer, config: ServeConfig):
        self.recognizer = recognizer
        self.config = config
        self.slots = StreamSlots(config.max_streams)
        self.metrics = Metrics(lambda: self.slots.active, config.max_streams)
        token = read_token(config.token_file) if config.token_file else None
        interceptors = [_BearerToken(token)] if token else []
        self._grpc = grpc.server(
            futures.ThreadPoolExecutor(max_workers=config.max_streams + 4, thread_name_prefix="nim4-stream"),
            interceptors=interceptors, maximum_concurrent_rpcs=config.max_streams + 4,
            options=[("grpc.max_receive_message_length", MAX_MESSAGE_BYTES),
                     ("grpc.max_send_message_length", MAX_MESSAGE_BYTES)])
        servicer = RivaSpeechRecognition(recognizer, self.slots, self.metrics, config.idle_timeout_s)
        riva_asr_pb2_grpc.add_RivaSpeechRecognitionServicer_to_server(servicer, self._grpc)
        address = f"[{config.host}]:{config.grpc_port}" if ":" in config.host else f"{config.host}:{config.grpc_port}"
        try:
            if config.tls_cert is not None:
                try:
                    pair = (Path(config.tls_key).read_bytes(), Path(config.tls_cert).read_bytes())
                except OSError as e:
                    raise Nim4Error(f"--tls-cert / --tls-key: cannot be read ({e.strerror}); give PEM files") from None
                self.port = self._grpc.add_secure_port(address, grpc.ssl_server_credentials([pair]))
            else:
                self.port = self._grpc.add_insecure_port(address)
        except (OSError, RuntimeError) as e:
            raise Nim4Error(f"cannot listen on {address} ({e}); is another server using the port? (--grpc-port)") from None
        if not self.port:
            raise Nim4Error(f"cannot listen on {address}: the port is taken or the address is not this machine's (--grpc-port)")
        tls = (Path(config.tls_cert), Path(config.tls_key)) if config.tls_cert is not None else None
        self.http = OpenAIHttpServer(recognizer, self.slots, self.metrics, config.host, config.http_port, token, tls,
                                     config.idle_timeout_s)
        self.http_port = self.http.port
        self._stopped = threading.Event()

    def start(self) -> "Server":
        self._grpc.start()
        self.http.start()
        return self

    def stop(self, grace_s: float = GRACE_S) -> None:
        """Refuse new streams at once (UNAVAILABLE / 503), let those in flight finish for up to
        grace_s (their finals are delivered), then close."""
        deadline = time.monotonic() + grace_s
        self.slots.draining = True
        grpc_done = self._grpc.stop(grace_s)  # new calls refused now; calls in flight get grace_s
        self.http.stop_accepting()
        self.slots.drain(max(0.0, deadline - time.monotonic()))
        grpc_done.wait(max(0.0, deadline - time.monotonic()) + 0.5)
        self.http.stop()
        self._stopped.set()

    def wait(self) -> None:
        self._stopped.wait()


def serve(recognizer_config: RecognizerConfig, config: ServeConfig, ready=None) -> int:
    """Run until SIGTERM or SIGINT. `ready(server)` is called once it listens."""
    if config.host not in LOOPBACK and config.token_file is None:
        log.warning("warning: listening on %s without --token-file: anyone who can reach this address can use it",
                    config.host)
    with Recognizer(recognizer_config) as recognizer:
        server = Server(recognizer, config).start()
        for sig in (signal.SIGTERM, signal.SIGINT):
            signal.signal(sig, lambda *_: threading.Thread(target=server.stop, daemon=True).start())
        if ready is not None:
            ready(server)
        server.wait()
    return 0
