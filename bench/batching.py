"""Decode steps of several streams: one llama.cpp context per stream (what `serve` runs) against one
context with a sequence per stream and one `llama_decode` per step for all of them (batched).

Both sides decode the same work in the same process, interleaved repeat by repeat: `streams`
sequences, each the prompt prefix plus `rows` speech-embedding rows, then `steps` greedy tokens per
sequence. Per context, each stream runs on its own thread (as the server's streams do) with
1 or all cores' llama.cpp threads; batched, the shared context `serve --batched-decode` runs
(runtime/shared_decoder.py), one thread stepping all sequences in one call with every core. The
figure is wall time of the token steps (prefill excluded); ratio = per-context / batched (> 1:
batching is faster).
"""

from __future__ import annotations

import os
import threading
import time

import numpy as np

from nim4_edge.bench.report import format_table, median
from nim4_edge.runtime.bundle import Bundle
from nim4_edge.runtime.decoder import DecoderModel, DecoderSession, DecoderSettings
from nim4_edge.runtime.shared_decoder import SharedContext, SharedDecoderSession


def _per_context(model: DecoderModel, spec_seconds: float, streams: int, rows: int, steps: int,
                 threads: int, embeddings: np.ndarray) -> float:
    sessions = [DecoderSession(model, DecoderSettings(n_threads=threads, n_threads_batch=threads), spec_seconds)
                for _ in range(streams)]
    try:
        for session in sessions:
            session.start_utterance()
            session.append(embeddings[:rows])
        barrier = threading.Barrier(streams + 1)
        elapsed = [0.0] * streams

        def run(i: int) -> None:
            session, pos, token = sessions[i], sessions[i].position, 0
            barrier.wait()
            t0 = time.perf_counter()
            for _ in range(steps):
                token = int(np.argmax(session._step(token, session.utterance_seq, pos)))
                pos += 1
            elapsed[i] = time.perf_counter() - t0

        workers = [threading.Thread(target=run, args=(i,)) for i in range(streams)]
        for w in workers:
            w.start()
        t0 = time.perf_counter()
        barrier.wait()
        for w in workers:
            w.join()
        return time.perf_counter() - t0
    finally:
        for session in sessions:
            session.close()


def _batched(model: DecoderModel, spec_seconds: float, streams: int, rows: int, steps: int,
             embeddings: np.ndarray) -> float:
    """The shared context `serve --batched-decode` runs (runtime/shared_decoder.py): a session per
    stream; each step, every stream's token in one llama_decode (SharedContext.decode_steps)."""
    shared = SharedContext(model, DecoderSettings(), streams)
    sessions = [SharedDecoderSession(shared, spec_seconds) for _ in range(streams)]
    try:
        for session in sessions:
            session.start_utterance()
            session.append(embeddings[:rows])
        pos, tokens = sessions[0].position, [0] * streams
        t0 = time.perf_counter()
        for _ in range(steps):
            logits = shared.decode_steps([(s.utterance_seq, token, pos) for s, token in zip(sessions, tokens)])
            tokens = [int(np.argmax(row)) for row in logits]
            pos += 1
        return time.perf_counter() - t0
    finally:
        for session in sessions:
            session.close()
        shared.close()


def bench_batching(bundle_path, streams: int = 4, rows: int = 24, steps: int = 24, repeats: int = 3,
                   variant: str | None = None) -> dict:
    bundle = Bundle.load(bundle_path, family=None)  # the decoder alone: any family
    manifest = bundle.manifest
    model = DecoderModel(bundle.decoder_file(variant), manifest.decoder)
    rng = np.random.default_rng(0)
    embeddings = (rng.standard_normal((rows, model.n_embd)) * 0.02).astype(np.float32)
    cores = os.cpu_count() or 1
    configs = {"per_context_all_threads": cores, "per_context_1_thread": 1}
    runs: dict[str, list[float]] = {name: [] for name in [*configs, "batched"]}
    try:
        for _ in range(repeats):
            for name, threads in configs.items():
                runs[name].append(_per_context(model, manifest.seconds_per_embedding, streams, rows, steps, threads,
                                               embeddings))
            runs["batched"].append(_batched(model, manifest.seconds_per_embedding, streams, rows, steps, embeddings))
    finally:
        model.close()
    medians = {name: median(times) for name, times in runs.items()}
    best_per_context = min(medians[name] for name in configs)
    return {"bundle": str(bundle_path), "variant": variant or manifest.decoder.default_variant, "streams": streams,
            "rows": rows, "steps": steps, "repeats": repeats, "cores": cores,
            "step_ms": {name: round(1000 * t / steps, 3) for name, t in medians.items()},
            "tokens_per_s": {name: round(streams * steps / t, 1) for name, t in medians.items()},
            "ratio_per_context_over_batched": round(best_per_context / medians["batched"], 3)}


def table(report: dict) -> str:
    rows = [[name, f"{report['step_ms'][name]:.2f}", f"{report['tokens_per_s'][name]:.0f}"] for name in report["step_ms"]]
    return (format_table(["decode", "ms per step (all streams)", "tokens/s"], rows)
            + f"\nper-context / batched at {report['streams']} streams: {report['ratio_per_context_over_batched']:.2f}x")
