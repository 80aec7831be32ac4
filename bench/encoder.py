"""`nim4-edge bench encoder`: per-chunk latency of the encoder step: the bundle's ONNX variants (fp32,
fp16, int8-*) and, given the checkpoint, PyTorch eager on the same weights.

All run the same inputs in one process, interleaved repeat by repeat (the order rotates) so that load
from other processes on a shared machine hits all alike; ratios of medians are the figures to compare.
NIM4: the state is that of the middle of an utterance (full caches). A windowed-encoder bundle
(Qwen3-ASR): two rows per variant, the 640 ms update at the end of a window (one chunk's front end +
the window graph over all 104 rows: the worst case) and in a window's first chunk (13 rows).
Needs torch only with --checkpoint.
"""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np

from nim4_edge.bench.report import format_table, median, peak_rss_bytes, percentile, rss_bytes
from nim4_edge.runtime.audio import synthetic_utterance
from nim4_edge.runtime.bundle import Bundle
from nim4_edge.runtime.encoder import EncoderSession, EncoderStream
from nim4_edge.runtime.errors import Nim4Error
from nim4_edge.runtime.features import compute_fbank
from nim4_edge.runtime.qwen3_asr.encoder import UPDATE_SAMPLES, WindowedEncoderSession


def bench_encoder(checkpoint_path: Path | None, bundle_path: Path, repeats: int = 20, warmup: int = 3,
                  num_threads: int = 2, precisions: list[str] | None = None) -> dict:
    """Per-chunk latency of each of the bundle's encoder variants in `precisions` (default: its
    default variant) and, when `checkpoint_path` is given, of PyTorch eager on the same weights.
    The first backend is the reference of the speed-up column."""
    if repeats < 1:
        raise ValueError("--repeats must be >= 1")
    bundle = Bundle.load(bundle_path, family=None)
    names = precisions or [bundle.manifest.encoder.precision]
    if bundle.manifest.family == "qwen3-asr":
        if checkpoint_path is not None:
            raise Nim4Error("--checkpoint: PyTorch eager is timed for NIM4 checkpoints only")
        runs, loaded, chunk_ms, extra = _windowed_runs(bundle, names, num_threads)
    else:
        runs, loaded, chunk_ms, extra = _nim4_runs(bundle, names, num_threads, checkpoint_path)

    for _ in range(warmup):
        for run in runs.values():
            run()
    times: dict[str, list[float]] = {name: [] for name in runs}
    order = list(runs)
    for i in range(repeats):  # interleaved, the order rotating: load from other processes hits all alike
        k = i % len(order)
        for name in order[k:] + order[:k]:
            times[name].append(runs[name]())

    reference = median(times[order[0]])
    backends = []
    for name in order:
        backends.append({
            "backend": name, **loaded[name],
            "ms_median": median(times[name]), "ms_p90": percentile(times[name], 90),
            "real_time_factor": median(times[name]) / chunk_ms,
            "speedup_vs_first": reference / median(times[name]),
        })
    return {"bundle": str(bundle_path), "threads": num_threads, "repeats": repeats, "chunk_audio_ms": chunk_ms,
            "backends": backends, "peak_rss_mb": peak_rss_bytes() / 2**20, **extra}


def windowed_update_runs(session: WindowedEncoderSession) -> dict:
    """{"worst": ..., "first_chunk": ...}: callables timing one 640 ms update (ms) of a windowed
    encoder: a chunk's front end plus the window graph over a full window / over one chunk's rows."""
    spec = session.spec
    rng = np.random.default_rng(0)
    chunk = rng.standard_normal((spec.chunk_frames, session.features.num_mel_bins)).astype(np.float32)
    full = rng.standard_normal((spec.positions_per_window, spec.d_model)).astype(np.float32)

    def timed(rows: int):
        def run() -> float:
            t0 = time.perf_counter()
            session.chunk_rows(chunk)
            session.window_embeddings(full[:rows])
            return (time.perf_counter() - t0) * 1000
        return run

    return {"worst": timed(spec.positions_per_window), "first_chunk": timed(spec.positions_per_chunk)}


def _windowed_runs(bundle: Bundle, names: list[str], num_threads: int):
    runs, loaded = {}, {}
    spec = bundle.manifest.encoder
    for name in names:
        before = rss_bytes()
        session = WindowedEncoderSession(bundle, num_threads=num_threads, precision=name)
        facts = {"precision": name, "rss_added_mb": (rss_bytes() - before) / 2**20,
                 "file_mb": bundle.encoder_bytes(name) / 2**20}
        update = windowed_update_runs(session)
        for kind, label in (("worst", f"end of a window, {spec.positions_per_window} rows"),
                            ("first_chunk", f"first chunk, {spec.positions_per_chunk} rows")):
            runs[f"onnxruntime {name} ({label})"] = update[kind]
            loaded[f"onnxruntime {name} ({label})"] = facts
    return runs, loaded, UPDATE_SAMPLES / bundle.manifest.sample_rate_hz * 1000, {}


def _nim4_runs(bundle: Bundle, names: list[str], num_threads: int, checkpoint_path: Path | None):
    manifest = bundle.manifest
    sessions, loaded = {}, {}  # loaded: backend -> precision, RSS growth when loaded, file size
    for name in names:  # loaded one after another: each one's RSS growth is its own
        before = rss_bytes()
        sessions[name] = EncoderSession(bundle, num_threads=num_threads, precision=name)
        rss_mb = (rss_bytes() - before) / 2**20
        file_mb = bundle.encoder_bytes(name) / 2**20
        loaded[f"onnxruntime {name}"] = {"precision": name, "rss_added_mb": rss_mb, "file_mb": file_mb}

    # Mid-utterance state: stream 5 chunks of a synthetic utterance so the caches are full.
    geometry = manifest.streaming
    samples = synthetic_utterance(7 * geometry.chunk_duration_ms(manifest.fbank.frame_shift_ms) / 1000,
                                  manifest.fbank.sample_rate_hz, seed=0)
    frames = manifest.cmvn.apply(compute_fbank(samples, manifest.fbank))
    stream = EncoderStream(sessions[names[0]])
    stream.accept_frames(frames[: 5 * geometry.fbank_shift_per_chunk + 3])
    state = stream.state
    window = frames[5 * geometry.fbank_shift_per_chunk :][: geometry.fbank_frames_per_chunk]
    valid = geometry.chunk_frames

    def timed(session):
        def run() -> float:
            t0 = time.perf_counter()
            session.step(window, valid, state)
            return (time.perf_counter() - t0) * 1000
        return run

    runs = {f"onnxruntime {name}": timed(session) for name, session in sessions.items()}
    extra = {}
    if checkpoint_path is not None:
        # optional dependency: PyTorch eager (the export extra) is timed only with --checkpoint
        import torch

        from nim4_edge.export.checkpoint import read_checkpoint  # optional: needs torch
        from nim4_edge.export.model import count_parameters  # optional: needs torch
        from nim4_edge.export.streaming import StreamingEncoderStep  # optional: needs torch

        torch.set_num_threads(num_threads)
        before = rss_bytes()
        model = read_checkpoint(checkpoint_path).load_acoustic_model()
        step = StreamingEncoderStep(model).eval()
        loaded["torch eager"] = {"precision": "fp32", "rss_added_mb": (rss_bytes() - before) / 2**20, "file_mb": None}
        torch_inputs = (torch.from_numpy(window)[None], torch.tensor([valid]), torch.tensor([state.num_cached_frames]),
                        torch.from_numpy(state.key_cache), torch.from_numpy(state.value_cache),
                        torch.from_numpy(state.conv_cache))

        def run_torch() -> float:
            t0 = time.perf_counter()
            with torch.no_grad():
                step(*torch_inputs)
            return (time.perf_counter() - t0) * 1000

        runs["torch eager"] = run_torch
        extra = {"parameters_total": count_parameters(model), "parameters_encoder": count_parameters(model.encoder),
                 "encoder": {k: getattr(model.cfg.encoder, k) for k in ("d_model", "num_layers", "num_heads", "ffn_dim", "conv_kernel")}}
    return runs, loaded, geometry.chunk_duration_ms(manifest.fbank.frame_shift_ms), extra


def table(report: dict) -> str:
    rows = [[b["backend"], b["ms_median"], b["ms_p90"], b["real_time_factor"], b["speedup_vs_first"],
             b["rss_added_mb"], b["file_mb"]] for b in report["backends"]]
    text = format_table(["backend", "ms/chunk (median)", "ms/chunk (p90)", "RTF", f"speed-up vs {rows[0][0]}",
                         "RSS added (MB)", "file (MB)"], rows)
    params = (f"parameters: {report['parameters_total'] / 1e6:.1f}M (encoder {report['parameters_encoder'] / 1e6:.1f}M); "
              if "parameters_total" in report else "")
    return (f"{text}\n({report['repeats']} interleaved repeats, {report['threads']} threads, "
            f"{report['chunk_audio_ms']:.0f} ms chunks)\n{params}peak RSS {report['peak_rss_mb']:.0f} MB")
