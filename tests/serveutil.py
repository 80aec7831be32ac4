"""Helpers of the server tests: start the real `nim4-edge serve` on free loopback ports, talk to it
with NVIDIA's Riva client."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import threading
import time
import wave
from pathlib import Path

import riva.client as riva_client

EXAMPLES = Path(__file__).resolve().parents[1] / "examples"
TOKEN = "test-token-0123456789abcdef"
SERVER_HTTP: dict[int, int] = {}  # gRPC port -> HTTP port of the same server


def start(tmp_path, *flags) -> tuple[subprocess.Popen, int, int]:
    proc = subprocess.Popen([sys.executable, "-m", "nim4_edge.cli", "serve", "--grpc-port", "0", "--http-port", "0", *flags],
                            stderr=subprocess.PIPE, text=True, env=os.environ | {"OMP_WAIT_POLICY": "PASSIVE"})
    deadline = time.monotonic() + 120
    for line in proc.stderr:
        found = re.search(r"grpcs?://[\w.]+:(\d+).*https?://[\w.]+:(\d+)", line)
        if found:  # keep reading its log, so that a full pipe never blocks the server
            threading.Thread(target=proc.stderr.read, daemon=True).start()
            return proc, int(found.group(1)), int(found.group(2))
        if time.monotonic() > deadline:
            break
    proc.kill()
    raise AssertionError(f"the server did not start: {proc.stderr.read() if proc.stderr else ''}")


def stop(proc: subprocess.Popen) -> float:
    t0 = time.monotonic()
    proc.send_signal(signal.SIGTERM)
    proc.wait(timeout=30)
    return time.monotonic() - t0


def asr(port: int, token: str | None = TOKEN):
    metadata = [["authorization", f"Bearer {token}"]] if token else None
    return riva_client.ASRService(riva_client.Auth(uri=f"127.0.0.1:{port}", metadata_args=metadata))


def pcm(name: str) -> tuple[bytes, int]:
    with wave.open(str(EXAMPLES / name), "rb") as w:
        return w.readframes(w.getnframes()), w.getframerate()


def streaming_config(rate: int, interim: bool = True, phrases=()):
    config = riva_client.RecognitionConfig(encoding=riva_client.AudioEncoding.LINEAR_PCM, sample_rate_hertz=rate,
                                           language_code="en-US", max_alternatives=1)
    if phrases:
        riva_client.add_word_boosting_to_config(config, list(phrases), 10.0)
    return riva_client.StreamingRecognitionConfig(config=config, interim_results=interim)


def chunks(audio: bytes, size: int = 3200):
    return [audio[i : i + size] for i in range(0, len(audio), size)]


