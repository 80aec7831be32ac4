"""`nim4-edge bench serve`: many streams through the real server, at real-time pace, with Riva's client.

The server (`nim4-edge serve`) runs as its own process on free loopback ports. For each stream count,
that many clients (threads here, each with its own gRPC channel) stream the example commands, each
followed by 1 s of silence, in 100 ms messages sent when a microphone would have them (message m at
t0 + (m+1) x 100 ms). Measured per final:

    final_ms          end of speech (last spoken sample of the clip, in wall time) -> final received;
                      includes the endpointer's trailing silence (600 ms by default; with --eot-pause-ms
                      the pause, when the turn ends there) and the 100 ms
                      message the last sample waited in
    final_compute_ms  the message holding the endpoint was sent -> final received (what the server adds)
    partial_ms        the message completing a chunk was sent -> its partial received

and per stream count: finals per utterance sent (exactly one each is right), exact texts, errors, the
server's CPU time per second of audio per stream (rtf_cpu), its CPU use and RSS. The soak is the same run, long: `--streams 8 --seconds 600`.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import threading
import time
import wave
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import psutil
import riva.client as riva_client
from riva.client.proto import riva_asr_pb2, riva_asr_pb2_grpc

from nim4_edge.bench.report import format_table, percentile
from nim4_edge.runtime.errors import Nim4Error

EXAMPLES = Path(__file__).resolve().parents[1] / "examples"
CLIPS = ("en_temperature.wav", "zh_window.wav", "en_call.wav", "zh_navigate.wav")
RATE = 16000
MESSAGE_S = 0.1
GAP_S = 1.0  # silence after each clip
SPEECH_LEVEL = 0.02  # |sample| above this counts as speech when finding a clip's end of speech


@dataclass
class Clip:
    pcm: bytes
    text: str
    speech_end_s: float  # within the clip


def load_clips() -> list[Clip]:
    texts = {json.loads(line)["audio"]: json.loads(line)["text"]
             for line in (EXAMPLES / "transcripts.jsonl").read_text(encoding="utf-8").splitlines() if line.strip()}
    clips = []
    for name in CLIPS:
        with wave.open(str(EXAMPLES / name), "rb") as w:
            if w.getframerate() != RATE or w.getnchannels() != 1 or w.getsampwidth() != 2:
                raise Nim4Error(f"{name}: bench serve streams 16 kHz mono 16-bit examples")
            pcm = w.readframes(w.getnframes())
        samples = np.frombuffer(pcm, "<i2").astype(np.float32) / 32768
        loud = np.flatnonzero(np.abs(samples) > SPEECH_LEVEL)
        clips.append(Clip(pcm, texts[name], (loud[-1] + 1) / RATE if len(loud) else 0.0))
    return clips


@dataclass
class Plan:
    """One client's audio: clips back to back with silence, cut into 100 ms messages."""

    messages: list[bytes]
    starts_s: list[float]  # each clip's start in the stream
    speech_ends_s: list[float]  # each clip's end of speech in the stream
    texts: list[str]


def plan_stream(clips: list[Clip], seconds: float, rotation: int) -> Plan:
    audio, starts, ends, texts, t = bytearray(), [], [], [], 0.0
    gap = b"\0\0" * int(GAP_S * RATE)
    k = rotation
    while True:
        clip = clips[k % len(clips)]
        length = len(clip.pcm) / 2 / RATE + GAP_S
        if t + length > seconds and starts:
            break
        starts.append(t)
        ends.append(t + clip.speech_end_s)
        texts.append(clip.text)
        audio += clip.pcm + gap
        t += length
        k += 1
    size = int(MESSAGE_S * RATE) * 2
    return Plan([bytes(audio[i : i + size]) for i in range(0, len(audio), size)], starts, ends, texts)


@dataclass
class StreamResult:
    finals: list[tuple[float, float, str]] = field(default_factory=list)  # (received, audio_processed, text)
    partials: list[tuple[float, float]] = field(default_factory=list)  # (received, audio_processed)
    sent: list[float] = field(default_factory=list)  # wall time each message was sent
    t0: float = 0.0
    error: str = ""


def run_stream(port: int, plan: Plan, delay_s: float) -> StreamResult:
    result = StreamResult()
    channel = riva_client.Auth(uri=f"127.0.0.1:{port}").channel
    stub = riva_asr_pb2_grpc.RivaSpeechRecognitionStub(channel)
    config = riva_client.StreamingRecognitionConfig(
        config=riva_client.RecognitionConfig(encoding=riva_client.AudioEncoding.LINEAR_PCM, sample_rate_hertz=RATE,
                                             language_code="en-US"), interim_results=True)
    time.sleep(delay_s)

    def requests():
        yield riva_asr_pb2.StreamingRecognizeRequest(streaming_config=config)
        result.t0 = time.perf_counter()
        for m, message in enumerate(plan.messages):
            pause = result.t0 + (m + 1) * MESSAGE_S - time.perf_counter()
            if pause > 0:
                time.sleep(pause)
            result.sent.append(time.perf_counter())
            yield riva_asr_pb2.StreamingRecognizeRequest(audio_content=message)

    try:
        for response in stub.StreamingRecognize(requests(), timeout=len(plan.messages) * MESSAGE_S + 120):
            received = time.perf_counter()
            for r in response.results:
                if r.is_final:
                    result.finals.append((received, r.audio_processed, r.alternatives[0].transcript))
                else:
                    result.partials.append((received, r.audio_processed))
    except Exception as e:  # noqa: BLE001 - a failed stream is counted in the report, not raised
        details = e.details() if hasattr(e, "details") else str(e)  # a grpc.RpcError says what happened
        result.error = f"{type(e).__name__}: {details}"
    finally:
        channel.close()
    return result


def _sent_at(result: StreamResult, audio_s: float) -> float:
    """When the message holding stream time `audio_s` was sent."""
    index = min(max(0, int(np.ceil(audio_s / MESSAGE_S)) - 1), len(result.sent) - 1)
    return result.sent[index]


def score_stream(plan: Plan, result: StreamResult) -> dict:
    per_clip = [0] * len(plan.starts_s)
    final_ms, compute_ms, exact = [], [], 0
    for received, processed, text in result.finals:
        clip = max([i for i, s in enumerate(plan.starts_s) if s < processed] or [0])
        per_clip[clip] += 1
        final_ms.append((received - (result.t0 + plan.speech_ends_s[clip])) * 1000)
        compute_ms.append((received - _sent_at(result, processed)) * 1000)
        exact += text == plan.texts[clip]
    partial_ms = [(received - _sent_at(result, processed)) * 1000 for received, processed in result.partials]
    return {"utterances": len(plan.starts_s), "finals": len(result.finals),
            "exactly_one": sum(c == 1 for c in per_clip), "exact_text": exact, "error": result.error,
            "final_ms": final_ms, "final_compute_ms": compute_ms, "partial_ms": partial_ms}


class ServerProcess:
    """`nim4-edge serve` on free loopback ports, watched with psutil."""

    def __init__(self, flags: list[str]):
        self.proc = subprocess.Popen([sys.executable, "-m", "nim4_edge.cli", "serve", "--grpc-port", "0",
                                      "--http-port", "0", *flags], stderr=subprocess.PIPE, text=True,
                                     env=os.environ | {"OMP_WAIT_POLICY": "PASSIVE"})
        self.log: list[str] = []
        for line in self.proc.stderr:
            self.log.append(line)
            found = re.search(r"grpcs?://[\w.]+:(\d+)", line)
            if found:
                self.port = int(found.group(1))
                threading.Thread(target=lambda: self.log.extend(self.proc.stderr), daemon=True).start()
                break
        else:
            raise Nim4Error("the server did not start: " + "".join(self.log[-5:]).strip())
        self.process = psutil.Process(self.proc.pid)

    def cpu_s(self) -> float:
        times = self.process.cpu_times()
        return times.user + times.system

    def rss_mb(self) -> float:
        return self.process.memory_info().rss / 1e6

    def stop(self) -> None:
        self.proc.terminate()
        try:
            self.proc.wait(30)
        except subprocess.TimeoutExpired:
            self.proc.kill()


def _phase(server: ServerProcess, clips: list[Clip], streams: int, seconds: float) -> dict:
    plans = [plan_stream(clips, seconds, i) for i in range(streams)]
    results: list[StreamResult | None] = [None] * streams
    began = time.perf_counter()
    rss, done = [(0.0, server.rss_mb())], threading.Event()

    def sample() -> None:
        while not done.wait(0.5):
            rss.append((time.perf_counter() - began, server.rss_mb()))

    def client(i: int) -> None:
        results[i] = run_stream(server.port, plans[i], delay_s=0.25 * i % 1.0)  # start de-synchronized

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    cpu0, wall0 = server.cpu_s(), time.perf_counter()
    threads = [threading.Thread(target=client, args=(i,)) for i in range(streams)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    wall, cpu = time.perf_counter() - wall0, server.cpu_s() - cpu0
    done.set()
    sampler.join()
    scores = [score_stream(p, r) for p, r in zip(plans, results)]
    audio_s = sum(len(p.messages) * MESSAGE_S for p in plans)
    finals = [x for s in scores for x in s["final_ms"]]
    compute = [x for s in scores for x in s["final_compute_ms"]]
    partials = [x for s in scores for x in s["partial_ms"]]

    def stats(values):
        return {"p50": round(percentile(values, 50), 1), "p95": round(percentile(values, 95), 1), "n": len(values)}

    return {"streams": streams, "audio_s_per_stream": round(audio_s / streams, 1),
            "utterances": sum(s["utterances"] for s in scores), "finals": sum(s["finals"] for s in scores),
            "exactly_one_final": sum(s["exactly_one"] for s in scores), "exact_text": sum(s["exact_text"] for s in scores),
            "errors": [s["error"] for s in scores if s["error"]],
            "final_ms": stats(finals), "final_compute_ms": stats(compute), "partial_ms": stats(partials),
            "rtf_cpu_per_stream": round(cpu / audio_s, 3), "cpu_percent": round(100 * cpu / wall, 1),
            "rss_mb_start": round(rss[0][1], 1), "rss_mb_max": round(max(r for _, r in rss), 1),
            "rss_mb_end": round(rss[-1][1], 1),
            # steady state: from the first minute (or fifth of the run) on, once every stream is open
            "rss_growth_mb_after_warmup": round(rss[-1][1] - next(r for t, r in rss if t >= min(60.0, wall / 5)), 1)}


def bench_serve(bundle: Path | None, counts: list[int], seconds: float = 30.0, threads: int | None = None,
                profile: str | None = None, batching: bool = True, decoder_variant: str | None = None,
                partial_every: int | None = None, batched_decode: bool = False, eot_pause_ms: int | None = None,
                trailing_silence_ms: int | None = None, progress=None) -> dict:
    if not counts or min(counts) < 1:
        raise Nim4Error("--streams takes stream counts >= 1, e.g. 1,2,4,8")
    flags = ["--max-streams", str(max(counts)), "--idle-timeout-s", "60"]
    flags += ["--bundle", str(bundle)] if bundle else []
    flags += ["--threads", str(threads)] if threads is not None else []
    flags += ["--profile", profile] if profile else []
    flags += ["--decoder-variant", decoder_variant] if decoder_variant else []
    flags += ["--partial-every", str(partial_every)] if partial_every is not None else []
    flags += ["--batched-decode"] if batched_decode else []
    flags += ["--eot-pause-ms", str(eot_pause_ms)] if eot_pause_ms is not None else []
    flags += ["--trailing-silence-ms", str(trailing_silence_ms)] if trailing_silence_ms is not None else []
    clips = load_clips()
    server = ServerProcess(flags)
    try:
        _phase(server, clips, 1, 8.0)  # warm-up: first contexts, allocator pools (not reported)
        phases = []
        for n in counts:
            if progress:
                progress(f"{n} stream(s) x {seconds:g} s at real-time pace ...")
            phases.append(_phase(server, clips, n, seconds))
    finally:
        server.stop()
    report = {"bundle": str(bundle or "demo"), "decoder_variant": decoder_variant, "partial_every": partial_every,
              "batched_decode": batched_decode,
              "threads": threads,
              "profile": profile, "seconds": seconds,
              "cores": os.cpu_count(), "phases": phases}
    if batching:
        from nim4_edge.bench.batching import bench_batching  # optional part: loads the decoder in this process
        from nim4_edge.runtime.bundle import resolve_bundle

        report["batching_4_streams"] = bench_batching(resolve_bundle(bundle), streams=4, variant=decoder_variant)
    single = next((p for p in phases if p["streams"] == 1), None)
    if single:
        for p in phases:
            p["final_p95_over_single"] = round(p["final_ms"]["p95"] / single["final_ms"]["p95"], 2)
    return report


def table(report: dict) -> str:
    rows = [[p["streams"], f"{p['finals']}/{p['utterances']}", p["exactly_one_final"], p["exact_text"], len(p["errors"]),
             p["final_ms"]["p50"], p["final_ms"]["p95"], p["final_compute_ms"]["p95"], p["partial_ms"]["p50"],
             p["partial_ms"]["p95"], p["rtf_cpu_per_stream"], p["cpu_percent"], p["rss_mb_max"],
             p.get("final_p95_over_single", "")] for p in report["phases"]]
    text = format_table(["streams", "finals/utt", "one each", "exact", "errors", "final p50 ms", "final p95 ms",
                         "compute p95", "partial p50", "partial p95", "cpu-RTF/stream", "cpu %", "RSS MB",
                         "p95 / 1 stream"], rows)
    if "batching_4_streams" in report:
        b = report["batching_4_streams"]
        text += (f"\ndecode at 4 streams, per context / batched: {b['ratio_per_context_over_batched']:.2f}x "
                 f"(ms per step: {b['step_ms']})")
    return text
