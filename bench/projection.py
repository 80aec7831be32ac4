"""Projection of per-chunk encoder time and decoder tokens/s to Jetson Orin modules.

A PROJECTION, not a measurement: time per step = max(bytes moved / usable bandwidth, FLOPs / usable
compute), with the bytes and FLOPs of one step counted from the model's shape and each module's
published bandwidth and peak throughput. Assumptions (stated with every table):
  - usable bandwidth = 70% of the published peak (STREAM-like efficiency of LPDDR5 on Orin; this x86
    machine reaches ~25 of ~35 GB/s, docs/FACTS.md);
  - usable compute = 30% of the dense Tensor Core peak for the encoder's small-batch GEMMs (16 frames
    per chunk), FP16 or INT8;
  - the decoder is bandwidth-bound at batch 1 (every weight read once per token; on this CPU the 1.7B
    Q4_K_M reached 80% of that bound, README); its usable bandwidth on Orin is calibrated on the one
    published llama.cpp figure we have: ~32 tok/s for a 1.5B Q4_K_M (~0.99 GB) on an Orin Nano 8 GB
    (docs/FACTS.md, the architecture's numbers), i.e. 32 GB/s of 68 = 47% of the peak;
  - no contention between encoder and decoder (they alternate within a chunk).
Published figures (NVIDIA Jetson Orin module data sheets): memory bandwidth AGX Orin 204.8 GB/s, Orin NX
16 GB 102.4 GB/s, Orin Nano 8 GB 68 GB/s (102 GB/s in JetPack 6.1's Super mode); AI performance (INT8
sparse, GPU + DLA) 275 / 100 / 40 TOPS. GPU dense FP16 Tensor Core peaks used here are derived from the
GPU INT8 sparse figures (170 / 50 / 40 TOPS: /2 for dense, /2 again for FP16): 42.5 / 12.5 / 10 TFLOPS.
"""

from __future__ import annotations

import json
import sys
from dataclasses import dataclass

from nim4_edge.bench.report import format_table
from nim4_edge.export.config import DecoderConfig, EncoderConfig

BYTES_PER_WEIGHT = {"fp32": 4.0, "fp16": 2.0, "int8": 1.0}
# GGUF bits per weight, measured on the Qwen3-1.7B-shaped decoder (file bytes / parameters).
GGUF_BITS = {"f16": 16.0, "Q8_0": 8.5, "Q6_K": 6.56, "Q5_K_M": 5.69, "Q4_K_M": 4.89, "Q4_0": 4.5}
BANDWIDTH_EFFICIENCY = 0.7  # encoder (TensorRT) weight streaming
DECODER_BANDWIDTH_EFFICIENCY = 0.47  # llama.cpp CUDA on Orin, calibrated (module docstring)
COMPUTE_EFFICIENCY = 0.3


@dataclass(frozen=True)
class Device:
    name: str
    bandwidth_gbs: float
    fp16_tflops: float  # dense Tensor Core peak (derived, see the module docstring)

    @property
    def int8_tops(self) -> float:
        return 2 * self.fp16_tflops


ORIN = (
    Device("AGX Orin 64 GB", 204.8, 42.5),
    Device("Orin NX 16 GB", 102.4, 12.5),
    Device("Orin Nano 8 GB", 68.0, 10.0),
)


def encoder_step_cost(cfg: EncoderConfig, chunk_frames: int = 16, left_frames: int = 64) -> dict:
    """Multiply-accumulates x2 (FLOPs) and parameters of one streaming step (chunk_frames encoder frames,
    attending to left_frames cached ones). Subsampling counted over the 67 fbank frames of a chunk."""
    d, f, k, L = cfg.d_model, cfg.ffn_dim, cfg.conv_kernel, cfg.num_layers
    t, keys = chunk_frames, chunk_frames + left_frames
    per_frame = (
        2 * (2 * d * f)  # two FFNs
        + 4 * d * d  # q, k, v, out projections
        + d * d  # relative-position projection (per distance row; ~one row per frame)
        + 2 * keys * d  # content and position scores
        + keys * d  # weighted sum of values
        + 2 * d * d + d * k + d * d  # conv module: pointwise in (2d), depthwise, pointwise out
    )
    c = cfg.subsampling_channels
    freq1, freq2 = (cfg.num_mel_bins - 1) // 2, ((cfg.num_mel_bins - 1) // 2 - 1) // 2
    subsampling = 2 * t * (9 * c * freq1 + 9 * c * c * freq2) + t * c * freq2 * d
    macs = L * t * per_frame + subsampling
    params = L * (2 * 2 * d * f + 5 * d * d + 3 * d * d + d * k) + c * freq2 * d
    return {"flops": 2 * macs, "params": params}


def decoder_token_bytes(cfg: DecoderConfig, level: str) -> float:
    """Weight bytes read per generated token (embeddings tied: the output matrix is read, the input
    embedding row is not)."""
    h, f, L = cfg.hidden_size, cfg.intermediate_size, cfg.num_hidden_layers
    q, kv = cfg.num_attention_heads * cfg.head_dim, cfg.num_key_value_heads * cfg.head_dim
    params = L * (h * q + 2 * h * kv + q * h + 3 * h * f) + cfg.vocab_size * h
    return params * GGUF_BITS[level] / 8


def project(encoder_cfg: EncoderConfig, decoder_cfg: DecoderConfig, encoder_precisions=("fp16", "int8"),
            decoder_levels=("Q8_0", "Q4_K_M"), devices=ORIN) -> list[dict]:
    """One row per device x encoder precision x decoder level (NIM4: a 640 ms streaming step)."""
    token_bytes = {level: decoder_token_bytes(decoder_cfg, level) for level in decoder_levels}
    return project_cost(encoder_step_cost(encoder_cfg), token_bytes, encoder_precisions, devices)


def project_cost(encoder_cost: dict, token_bytes: dict, encoder_precisions=("fp16", "int8"), devices=ORIN,
                 step_key: str = "encoder_ms_per_chunk") -> list[dict]:
    """The projection of any model family: `encoder_cost` {"flops", "params"} of one encoder step,
    `token_bytes` {GGUF level: weight bytes read per token}."""
    rows = []
    for device in devices:
        bandwidth = device.bandwidth_gbs * 1e9 * BANDWIDTH_EFFICIENCY
        for precision in encoder_precisions:
            peak = (device.int8_tops if precision == "int8" else device.fp16_tflops) * 1e12 * COMPUTE_EFFICIENCY
            weight_bytes = encoder_cost["params"] * BYTES_PER_WEIGHT[precision]
            memory_ms = weight_bytes / bandwidth * 1e3
            compute_ms = encoder_cost["flops"] / peak * 1e3
            for level, per_token in token_bytes.items():
                rows.append({
                    "device": device.name, "encoder": precision, "decoder": level,
                    step_key: round(max(memory_ms, compute_ms), 1),
                    "encoder_bound": "memory" if memory_ms >= compute_ms else "compute",
                    "decoder_tokens_per_s": round(device.bandwidth_gbs * 1e9 * DECODER_BANDWIDTH_EFFICIENCY
                                                  / per_token, 1),
                    "weights_gb": round((weight_bytes + per_token) / 1e9, 2),
                })
    return rows


def main() -> int:
    """python -m nim4_edge.bench.projection: the full-size projection table (JSON on stdout, table on stderr)."""
    rows = project(EncoderConfig(), DecoderConfig(), decoder_levels=("Q8_0", "Q4_K_M"))
    print(json.dumps({"assumptions": {"encoder_bandwidth_efficiency": BANDWIDTH_EFFICIENCY,
                                      "decoder_bandwidth_efficiency": DECODER_BANDWIDTH_EFFICIENCY,
                                      "compute_efficiency": COMPUTE_EFFICIENCY},
                      "encoder_step": encoder_step_cost(EncoderConfig()), "rows": rows}))
    print(format_table(list(rows[0]), [list(r.values()) for r in rows]), file=sys.stderr)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
