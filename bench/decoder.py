"""`nim4-edge bench decoder`: decoder speed through the session, against a bare llama_decode loop on
the same GGUF, and against the memory-bandwidth bound.

For each variant, in one process and interleaved repeat by repeat:
  * decode tokens/s: greedy generation of `tokens` tokens (argmax on the CPU each step);
  * prefill rows/s: speech embeddings appended 4 rows at a time, as the stream does every 640 ms;
both through DecoderSession and through a minimal loop of llama_decode calls on its own context.
session / bare is the session's overhead (1.0 = none). The bound: a token reads every weight once,
so tokens/s <= memory bandwidth / weight bytes; the bandwidth is measured here with a large copy.
"""

from __future__ import annotations

import ctypes
import os
import time

import llama_cpp as lib
import numpy as np

from nim4_edge.bench.report import format_table, median
from nim4_edge.runtime.bundle import Bundle
from nim4_edge.runtime.decoder import KV_TYPES, DecoderSession, DecoderSettings


def measure_copy_bandwidth(megabytes: int = 512, repeats: int = 5) -> float:
    """Bytes per second moved by numpy copying a large buffer (read + write counted)."""
    src = np.ones(megabytes * 2**20 // 8, dtype=np.float64)
    dst = np.empty_like(src)
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        np.copyto(dst, src)
        times.append(time.perf_counter() - t0)
    return 2 * src.nbytes / median(times)


class BareLoop:
    """The least code that drives llama.cpp: its own context, one batch, argmax on the logits."""

    def __init__(self, gguf_path, n_ctx: int, threads: int, kv_type: int):
        self.lib = lib
        self.model = lib.llama_model_load_from_file(str(gguf_path).encode(), lib.llama_model_default_params())
        params = lib.llama_context_default_params()
        params.n_ctx = n_ctx
        params.n_batch = params.n_ubatch = 512
        params.n_threads = params.n_threads_batch = threads
        params.type_k = params.type_v = kv_type
        params.flash_attn_type = lib.LLAMA_FLASH_ATTN_TYPE_DISABLED
        self.ctx = lib.llama_init_from_model(self.model, params)
        self.n_vocab = lib.llama_vocab_n_tokens(lib.llama_model_get_vocab(self.model))
        self.n_embd = lib.llama_model_n_embd(self.model)
        self.tok = lib.llama_batch_init(1, 0, 1)
        self.emb = lib.llama_batch_init(64, self.n_embd, 1)

    def _set(self, batch, i, pos, logits):
        batch.pos[i] = pos
        batch.n_seq_id[i] = 1
        batch.seq_id[i][0] = 0
        batch.logits[i] = logits

    def prefill(self, rows: np.ndarray, chunk_rows: int) -> float:
        """Seconds to decode `rows` in pieces of `chunk_rows`, from position 0."""
        self.lib.llama_memory_clear(self.lib.llama_get_memory(self.ctx), True)
        t0 = time.perf_counter()
        for start in range(0, len(rows), chunk_rows):
            piece = np.ascontiguousarray(rows[start : start + chunk_rows])
            ctypes.memmove(self.emb.embd, piece.ctypes.data, piece.nbytes)
            for i in range(len(piece)):
                self._set(self.emb, i, start + i, False)
            self.emb.n_tokens = len(piece)
            self.lib.llama_decode(self.ctx, self.emb)
        return time.perf_counter() - t0

    def generate(self, first_token: int, start_pos: int, count: int) -> float:
        """Seconds for `count` greedy steps after the prefill."""
        token, t0 = first_token, time.perf_counter()
        for i in range(count):
            self.tok.token[0] = token
            self._set(self.tok, 0, start_pos + i, True)
            self.tok.n_tokens = 1
            self.lib.llama_decode(self.ctx, self.tok)
            logits = np.ctypeslib.as_array(self.lib.llama_get_logits_ith(self.ctx, -1), shape=(self.n_vocab,))
            token = int(np.argmax(logits))
        return time.perf_counter() - t0

    def close(self):
        self.lib.llama_batch_free(self.tok)
        self.lib.llama_batch_free(self.emb)
        self.lib.llama_free(self.ctx)
        self.lib.llama_model_free(self.model)


def bench_decoder(bundle_path, variants: list[str] | None = None, tokens: int = 32, rows: int = 32,
                  repeats: int = 3, threads: int = 2) -> dict:
    bundle = Bundle.load(bundle_path, family=None)
    spec = bundle.manifest.decoder
    variants = variants or sorted(spec.variants)
    bandwidth = measure_copy_bandwidth()
    # The token cap is exactly `tokens` so both loops generate the same count (unless EOS comes first).
    settings = DecoderSettings(n_threads=threads, n_threads_batch=threads, n_ctx=1024,
                               min_new_tokens=tokens, max_tokens_per_second=0.0)
    rng = np.random.default_rng(0)
    speech = (rng.standard_normal((rows, spec.hidden_size)) * 0.02).astype(np.float32)
    # the rows one step appends: NIM4's 4 per 640 ms chunk; a windowed encoder's 13 per 1 s chunk
    manifest = bundle.manifest
    chunk_rows = manifest.streaming.embeddings_per_chunk if manifest.family == "nim4" else manifest.encoder.positions_per_chunk
    results = []
    for variant in variants:
        path = bundle.decoder_file(variant)
        session = DecoderSession.open(path, spec, settings, bundle.manifest.seconds_per_embedding)
        bare = BareLoop(path, settings.n_ctx, threads, KV_TYPES[settings.kv_cache_type])
        weight_bytes = session.decoder_model.weight_bytes()
        s_decode, b_decode, s_prefill, b_prefill = [], [], [], []

        def run_session():
            session.start_utterance()
            t0 = time.perf_counter()
            for start in range(0, rows, chunk_rows):
                session.append(speech[start : start + chunk_rows])
            s_prefill.append(rows / (time.perf_counter() - t0))
            result = session.final()
            if result.token_ids:
                s_decode.append(len(result.token_ids) / (result.decode_ms / 1000))

        def run_bare():
            b_prefill.append(rows / bare.prefill(speech, chunk_rows))
            b_decode.append(tokens / bare.generate(spec.token_ids["im_start"], rows, tokens))

        try:
            for repeat in range(repeats + 1):  # repeat 0 warms caches and page-ins; not counted
                if repeat == 1:
                    for measured in (s_decode, b_decode, s_prefill, b_prefill):
                        measured.clear()
                # Alternate which loop goes first, so drift on a shared machine hits both alike.
                loops = (run_session, run_bare) if repeat % 2 else (run_bare, run_session)
                for loop in loops:
                    loop()
        finally:
            session.close()
            bare.close()
        bound = bandwidth / weight_bytes
        results.append({
            "variant": variant,
            "file_bytes": path.stat().st_size,
            "weight_bytes": weight_bytes,
            "session_decode_tok_s": median(s_decode),
            "bare_decode_tok_s": median(b_decode),
            "decode_ratio_session_over_bare": median(s_decode) / median(b_decode),
            "session_prefill_rows_s": median(s_prefill),
            "bare_prefill_rows_s": median(b_prefill),
            "prefill_ratio_session_over_bare": median(s_prefill) / median(b_prefill),
            "bandwidth_bound_tok_s": bound,
            "decode_fraction_of_bound": median(b_decode) / bound,
        })
    return {
        "bundle": str(bundle_path),
        "decoder": {"hidden_size": spec.hidden_size, "num_layers": spec.num_layers, "vocab_size": spec.vocab_size},
        "threads": threads,
        "repeats": repeats,
        "tokens": tokens,
        "prefill_rows": rows,
        "prefill_chunk_rows": chunk_rows,
        "copy_bandwidth_gb_s": bandwidth / 1e9,
        "cpu_count": os.cpu_count(),
        "results": results,
    }


def table(report: dict) -> str:
    rows = [
        [r["variant"], r["file_bytes"] / 1e6, r["session_decode_tok_s"], r["bare_decode_tok_s"],
         r["decode_ratio_session_over_bare"], r["session_prefill_rows_s"], r["bare_prefill_rows_s"],
         r["prefill_ratio_session_over_bare"], r["bandwidth_bound_tok_s"]]
        for r in report["results"]
    ]
    headers = ["variant", "MB", "decode tok/s", "bare tok/s", "ratio", "prefill rows/s", "bare rows/s", "ratio",
               "bound tok/s"]
    d = report["decoder"]
    return (f"decoder hidden {d['hidden_size']} x {d['num_layers']} layers, vocab {d['vocab_size']}; "
            f"{report['threads']} threads, median of {report['repeats']}; copy bandwidth "
            f"{report['copy_bandwidth_gb_s']:.1f} GB/s\n" + format_table(headers, rows))
