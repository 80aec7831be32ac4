"""`nim4-edge bench encoder`: per-chunk latency of the encoder step, onnxruntime vs PyTorch eager.

Both run the same weights and the same inputs in one process, interleaved repeat by repeat (the order
alternates) so that load from other processes on a shared machine hits both alike; the ratio of the
medians is the figure to compare. The state is that of the middle of an utterance (full caches).
"""

from __future__ import annotations

import time
from pathlib import Path


from nim4_edge.runtime.report import median, peak_rss_bytes, percentile, rss_bytes


def bench_encoder(checkpoint_path: Path, bundle_path: Path, repeats: int = 20, warmup: int = 3, num_threads: int = 2) -> dict:
    import torch

    from nim4_edge.export.checkpoint import read_checkpoint
    from nim4_edge.export.model import count_parameters
    from nim4_edge.export.streaming import StreamingEncoderStep
    from nim4_edge.export.verify import synthetic_utterance
    from nim4_edge.runtime.bundle import Bundle
    from nim4_edge.runtime.encoder import EncoderSession, EncoderStream
    from nim4_edge.runtime.features import compute_fbank

    if repeats < 1:
        raise ValueError("--repeats must be >= 1")
    torch.set_num_threads(num_threads)
    rss_start = rss_bytes()
    bundle = Bundle.load(bundle_path)
    session = EncoderSession(bundle, num_threads=num_threads)
    rss_after_ort = rss_bytes()
    checkpoint = read_checkpoint(checkpoint_path)
    model = checkpoint.load_acoustic_model()
    step = StreamingEncoderStep(model).eval()
    rss_after_torch = rss_bytes()

    # Mid-utterance state: stream 5 chunks of a synthetic utterance so the caches are full.
    manifest = bundle.manifest
    geometry = manifest.streaming
    samples = synthetic_utterance(7 * geometry.chunk_duration_ms(manifest.fbank.frame_shift_ms) / 1000,
                                  manifest.fbank.sample_rate_hz, seed=0)
    frames = manifest.cmvn.apply(compute_fbank(samples, manifest.fbank))
    stream = EncoderStream(session)
    stream.accept_frames(frames[: 5 * geometry.fbank_shift_per_chunk + 3])
    state = stream.state
    window = frames[5 * geometry.fbank_shift_per_chunk :][: geometry.fbank_frames_per_chunk]
    valid = geometry.chunk_frames
    torch_inputs = (
        torch.from_numpy(window)[None],
        torch.tensor([valid]),
        torch.tensor([state.num_cached_frames]),
        torch.from_numpy(state.key_cache),
        torch.from_numpy(state.value_cache),
        torch.from_numpy(state.conv_cache),
    )

    def run_ort() -> float:
        t0 = time.perf_counter()
        session.step(window, valid, state)
        return (time.perf_counter() - t0) * 1000

    def run_torch() -> float:
        t0 = time.perf_counter()
        with torch.no_grad():
            step(*torch_inputs)
        return (time.perf_counter() - t0) * 1000

    for _ in range(warmup):
        run_ort()
        run_torch()
    ort_ms, torch_ms = [], []
    for i in range(repeats):
        if i % 2:
            ort_ms.append(run_ort())
            torch_ms.append(run_torch())
        else:
            torch_ms.append(run_torch())
            ort_ms.append(run_ort())

    chunk_ms = geometry.chunk_duration_ms(manifest.fbank.frame_shift_ms)
    encoder_params = count_parameters(model.encoder)
    return {
        "bundle": str(bundle_path),
        "encoder": {k: getattr(checkpoint.config.encoder, k) for k in ("d_model", "num_layers", "num_heads", "ffn_dim", "conv_kernel")},
        "parameters_total": count_parameters(model),
        "parameters_encoder": encoder_params,
        "threads": num_threads,
        "repeats": repeats,
        "chunk_audio_ms": chunk_ms,
        "onnxruntime_ms_median": median(ort_ms),
        "onnxruntime_ms_p90": percentile(ort_ms, 90),
        "torch_eager_ms_median": median(torch_ms),
        "torch_eager_ms_p90": percentile(torch_ms, 90),
        "speedup_onnxruntime_over_torch": median(torch_ms) / median(ort_ms),
        "onnxruntime_real_time_factor": median(ort_ms) / chunk_ms,
        "torch_real_time_factor": median(torch_ms) / chunk_ms,
        "rss_start_mb": rss_start / 2**20,
        "rss_onnxruntime_session_mb": (rss_after_ort - rss_start) / 2**20,
        "rss_torch_model_mb": (rss_after_torch - rss_after_ort) / 2**20,
        "peak_rss_mb": peak_rss_bytes() / 2**20,
        "onnx_bytes": sum(f["bytes"] for f in manifest.files.values()),
    }


def table(report: dict) -> str:
    from nim4_edge.runtime.report import format_table

    rows = [
        ["onnxruntime", report["onnxruntime_ms_median"], report["onnxruntime_ms_p90"], report["onnxruntime_real_time_factor"], report["rss_onnxruntime_session_mb"]],
        ["torch eager", report["torch_eager_ms_median"], report["torch_eager_ms_p90"], report["torch_real_time_factor"], report["rss_torch_model_mb"]],
    ]
    text = format_table(["backend", "ms/chunk (median)", "ms/chunk (p90)", "RTF", "RSS added (MB)"], rows)
    return (
        f"{text}\n"
        f"onnxruntime speed-up over torch eager: {report['speedup_onnxruntime_over_torch']:.2f}x "
        f"({report['repeats']} interleaved repeats, {report['threads']} threads, {report['chunk_audio_ms']:.0f} ms chunks)\n"
        f"parameters: {report['parameters_total'] / 1e6:.1f}M (encoder {report['parameters_encoder'] / 1e6:.1f}M); "
        f"peak RSS {report['peak_rss_mb']:.0f} MB"
    )
