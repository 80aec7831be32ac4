"""Decode steps of several streams: one llama.cpp context per stream (what `serve` runs) against one
context with a sequence per stream and one `llama_decode` per step for all of them (batched).

Both sides decode the same work in the same process, interleaved repeat by repeat: `streams`
sequences, each the prompt prefix plus `rows` speech-embedding rows, then `steps` greedy tokens per
sequence. Per context, each stream runs on its own thread (as the server's streams do) with
`threads_per_context` llama.cpp threads; batched, one thread steps all sequences at once with every
core. The figure is wall time of the token steps (prefill excluded); ratio = per-context / batched
(> 1: batching is faster).
"""

from __future__ import annotations

import ctypes
import os
import threading
import time

import numpy as np

from nim4_edge.bench.report import format_table, median
from nim4_edge.runtime.bundle import Bundle
from nim4_edge.runtime.decoder import KV_TYPES, UTTERANCE_SEQ, DecoderModel, DecoderSession, DecoderSettings


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
                session._decode_tokens([token], UTTERANCE_SEQ, pos, logits="last")
                token = int(np.argmax(session._read_last_logits()))
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


def _batched(model: DecoderModel, streams: int, rows: int, steps: int, embeddings: np.ndarray,
             kv_type: str = "f16") -> float:
    """One context, sequence i = stream i; every step decodes one token of every sequence in one call."""
    lib = model.lib
    prefix = model.tokenize(model.spec.prompt.prefix)
    params = lib.llama_context_default_params()
    params.n_ctx = streams * (len(prefix) + rows + steps + 8)
    params.n_batch = params.n_ubatch = max(512, streams)
    params.n_seq_max = streams
    params.kv_unified = True
    params.n_threads = params.n_threads_batch = os.cpu_count() or 1
    params.type_k = params.type_v = KV_TYPES[kv_type]
    params.flash_attn_type = lib.LLAMA_FLASH_ATTN_TYPE_DISABLED
    params.no_perf = True
    ctx = lib.llama_init_from_model(model.model, params)
    tokens = lib.llama_batch_init(max(len(prefix), streams), 0, 1)
    embd = lib.llama_batch_init(rows, model.n_embd, 1)
    try:
        def decode(batch, n):
            batch.n_tokens = n
            if lib.llama_decode(ctx, batch) != 0:
                raise RuntimeError("llama_decode failed")

        for seq in range(streams):  # prefix + rows per sequence (not timed)
            for i, t in enumerate(prefix):
                tokens.token[i], tokens.pos[i], tokens.n_seq_id[i], tokens.logits[i] = t, i, 1, False
                tokens.seq_id[i][0] = seq
            decode(tokens, len(prefix))
            block = np.ascontiguousarray(embeddings[:rows], np.float32)
            ctypes.memmove(embd.embd, block.ctypes.data, block.nbytes)
            for i in range(rows):
                embd.pos[i], embd.n_seq_id[i], embd.logits[i] = len(prefix) + i, 1, False
                embd.seq_id[i][0] = seq
            decode(embd, rows)
        pos = len(prefix) + rows
        next_tokens = [0] * streams
        t0 = time.perf_counter()
        for _ in range(steps):
            for seq in range(streams):
                tokens.token[seq], tokens.pos[seq], tokens.n_seq_id[seq], tokens.logits[seq] = next_tokens[seq], pos, 1, True
                tokens.seq_id[seq][0] = seq
            decode(tokens, streams)
            for seq in range(streams):
                row = np.ctypeslib.as_array(lib.llama_get_logits_ith(ctx, seq), shape=(model.n_vocab,))
                next_tokens[seq] = int(np.argmax(row))
            pos += 1
        return time.perf_counter() - t0
    finally:
        lib.llama_batch_free(tokens)
        lib.llama_batch_free(embd)
        lib.llama_free(ctx)


def bench_batching(bundle_path, streams: int = 4, rows: int = 24, steps: int = 24, repeats: int = 3,
                   variant: str | None = None) -> dict:
    bundle = Bundle.load(bundle_path)
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
            runs["batched"].append(_batched(model, streams, rows, steps, embeddings))
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
