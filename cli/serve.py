"""`nim4-edge serve`: the recognizer as a service: gRPC (NVIDIA Riva's ASR API) and HTTP (OpenAI's)."""

from __future__ import annotations

import os
import sys
from pathlib import Path

from nim4_edge.cli.common import freeze_loaded_objects
from nim4_edge.cli.listen import add_recognizer_flags, config_from_args
from nim4_edge.runtime.errors import Nim4Error

SERVE_EXTRA_HINT = "pip install -e '.[serve]'"


def cmd_serve(args) -> int:
    try:  # optional dependency: the serve extra (grpcio, nvidia-riva-client)
        from nim4_edge.serve.server import ServeConfig, serve
    except ImportError as e:  # a package missing, or a version without what the server uses
        raise Nim4Error(f"`serve` needs the serve extra ({e}): {SERVE_EXTRA_HINT}") from None
    try:
        config = ServeConfig(host=args.host, grpc_port=args.grpc_port, http_port=args.http_port, max_streams=args.max_streams,
                             token_file=args.token_file, tls_cert=args.tls_cert, tls_key=args.tls_key,
                             **({"idle_timeout_s": args.idle_timeout_s} if args.idle_timeout_s is not None else {}))
    except ValueError as e:
        raise Nim4Error(str(e)) from None
    args.decoder_batch_streams = config.max_streams if args.batched_decode else 0
    if args.threads is None:
        # Streams run side by side: each llama.cpp context and encoder run on cores // max-streams
        # threads instead of all of them (bench serve, demo, 2 cores, 8 streams: the server's final
        # compute p95 85 -> 49 ms, CPU per audio second 0.058 -> 0.038; README "Serving").
        args.threads = max(1, (os.cpu_count() or 1) // config.max_streams)
    _, recognizer_config = config_from_args(args)

    def ready(server) -> None:
        freeze_loaded_objects()  # the model and the lexicon are loaded by now
        scheme, web = ("grpcs", "https") if config.tls_cert else ("grpc", "http")
        print(f"nim4-edge serve: {scheme}://{config.host}:{server.port} (Riva RivaSpeechRecognition), "
              f"{web}://{config.host}:{server.http_port}/v1 (OpenAI audio transcriptions), {config.max_streams} streams "
              "at most; Ctrl-C or SIGTERM to stop", file=sys.stderr, flush=True)

    return serve(recognizer_config, config, ready)


def add_commands(sub) -> None:
    p = sub.add_parser("serve", help="serve the recognizer to many streams: gRPC (Riva's ASR API) and HTTP (OpenAI's)",
                       description="One process, one loaded model, many concurrent streams. Any Riva client "
                                   "(riva.client.ASRService, Riva's C++ clients) works unchanged: StreamingRecognize "
                                   "with interim results and speech_contexts as per-stream hotwords, Recognize, "
                                   "GetRivaSpeechRecognitionConfig; and any OpenAI client through POST /v1/audio/transcriptions. "
                                   "Needs the serve extra.",
                       epilog="Example: nim4-edge serve --grpc-port 50051 --token-file token.txt")
    p.add_argument("--host", default="127.0.0.1", help="address to listen on (default 127.0.0.1: this machine only)")
    p.add_argument("--grpc-port", type=int, default=50051, help="gRPC port (default 50051; 0 = any free port, printed)")
    p.add_argument("--http-port", type=int, default=8000,
                   help="OpenAI-compatible HTTP port (default 8000; 0 = any free port, printed)")
    p.add_argument("--max-streams", type=int, default=8, help="concurrent streams at most; one more is refused (default 8)")
    p.add_argument("--idle-timeout-s", type=float, metavar="S",
                   help="close a stream or connection that sends nothing for S seconds (default 30)")
    p.add_argument("--token-file", type=Path, help="require 'authorization: Bearer <token>' with the token in this file")
    p.add_argument("--tls-cert", type=Path, help="serve TLS with this certificate (PEM) ...")
    p.add_argument("--tls-key", type=Path, help="... and this private key (PEM)")
    p.add_argument("--batched-decode", action="store_true",
                   help="one llama.cpp context for all streams, their decode steps batched (faster for large decoders; "
                        "for the demo model a context per stream is faster: README 'Serving other programs')")
    add_recognizer_flags(p, threads_help="encoder and decoder threads per stream, 0 = all cores (default: cores // "
                                         "--max-streams, at least 1)")
    p.set_defaults(func=cmd_serve)
