"""PyTorch reference of the NIM4-ASR acoustic side: Conformer encoder, adaptor, phoneme head.

    fbank (B, T, 80)
      -> Conv2dSubsampling           (B, T', d)      T' = (T - 3) // 4, 40 ms frames
      -> ConformerBlock x N           (B, T', d)      chunk-masked rel-pos attention, causal conv
      -> PhonemeHead                  (B, T', P)      CTC log-probs over the phoneme inventory
      -> Adaptor                      (B, ceil(T'/4), D)  LLM embeddings at 6.25 Hz

Streaming is exact by construction: attention only sees the current chunk and `left_chunks` chunks
before it (dynamic-chunk training picks both per batch), and the depthwise convolution only looks
left. Every block takes explicit caches (attention keys/values of earlier frames and the last
`conv_kernel - 1` convolution inputs); the offline forward passes empty caches, the streaming step
(export/streaming.py) passes real ones, so both run the same code.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from nim4_edge.export.config import AdaptorConfig, EncoderConfig, Nim4Config, PhonemeHeadConfig
from nim4_edge.runtime.geometry import num_encoder_frames


def chunk_attention_mask(num_frames: int, chunk_frames: int, left_chunks: int, device=None) -> torch.Tensor:
    """(T, T) bool, True where query frame i may attend to key frame j.

    chunk_frames <= 0 means full context; left_chunks < 0 means unlimited left context.
    Query i sees every frame of its own chunk and of the `left_chunks` chunks before it.
    """
    if chunk_frames <= 0:
        return torch.ones(num_frames, num_frames, dtype=torch.bool, device=device)
    chunk_index = torch.arange(num_frames, device=device) // chunk_frames
    chunks_back = chunk_index[:, None] - chunk_index[None, :]  # (T, T): query chunk - key chunk
    allowed = chunks_back >= 0
    if left_chunks >= 0:
        allowed &= chunks_back <= left_chunks
    return allowed


def relative_position_table(num_queries: int, num_keys: int, d_model: int) -> torch.Tensor:
    """Sinusoidal encodings of relative distances, (Q + K - 1, d_model).

    Queries are the last Q of the K key frames (query i sits at key position K - Q + i). Row m holds
    distance d = K - 1 - m, from K - 1 (the oldest key seen by the newest query) down to -(Q - 1).
    """
    distance = torch.arange(num_keys - 1, -num_queries, -1, dtype=torch.float32)  # (Q+K-1,)
    inv_freq = torch.exp(torch.arange(0, d_model, 2, dtype=torch.float32) * (-math.log(10000.0) / d_model))
    angles = distance[:, None] * inv_freq[None, :]  # (Q+K-1, d/2)
    table = torch.zeros(distance.numel(), d_model)
    table[:, 0::2] = torch.sin(angles)
    table[:, 1::2] = torch.cos(angles)
    return table


def relative_position_index(num_queries: int, num_keys: int) -> torch.Tensor:
    """(Q, K) int64: row of `relative_position_table` for query i and key j (= Q - 1 - i + j)."""
    return (num_queries - 1) - torch.arange(num_queries)[:, None] + torch.arange(num_keys)[None, :]


class Conv2dSubsampling(nn.Module):
    """Two 3x3 stride-2 Conv2d + ReLU, no padding: (B, T, F) -> (B, (T - 3) // 4, d_model)."""

    def __init__(self, num_mel_bins: int, channels: int, d_model: int):
        super().__init__()
        self.conv = nn.Sequential(
            nn.Conv2d(1, channels, kernel_size=3, stride=2),
            nn.ReLU(),
            nn.Conv2d(channels, channels, kernel_size=3, stride=2),
            nn.ReLU(),
        )
        freq_out = ((num_mel_bins - 1) // 2 - 1) // 2
        self.out = nn.Linear(channels * freq_out, d_model)

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        x = self.conv(features.unsqueeze(1))  # (B, C, T', F')
        b, c, t, f = x.shape
        return self.out(x.transpose(1, 2).reshape(b, t, c * f))  # (B, T', d)


class FeedForward(nn.Module):
    """Pre-LayerNorm FFN with Swish; used twice per block (macaron, half-step residuals)."""

    def __init__(self, d_model: int, ffn_dim: int, dropout: float):
        super().__init__()
        self.norm = nn.LayerNorm(d_model)
        self.expand = nn.Linear(d_model, ffn_dim)
        self.project = nn.Linear(ffn_dim, d_model)
        self.dropout = nn.Dropout(dropout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.dropout(self.project(self.dropout(F.silu(self.expand(self.norm(x))))))


class RelPositionSelfAttention(nn.Module):
    """Multi-head self-attention with Transformer-XL relative positions (content bias u, position
    bias v), as in the Conformer paper and FireRedASR."""

    def __init__(self, d_model: int, num_heads: int, dropout: float):
        super().__init__()
        self.num_heads = num_heads
        self.head_dim = d_model // num_heads
        self.linear_q = nn.Linear(d_model, d_model)
        self.linear_k = nn.Linear(d_model, d_model)
        self.linear_v = nn.Linear(d_model, d_model)
        self.linear_pos = nn.Linear(d_model, d_model, bias=False)
        self.linear_out = nn.Linear(d_model, d_model)
        self.pos_bias_u = nn.Parameter(torch.empty(num_heads, self.head_dim))
        self.pos_bias_v = nn.Parameter(torch.empty(num_heads, self.head_dim))
        nn.init.xavier_uniform_(self.pos_bias_u)
        nn.init.xavier_uniform_(self.pos_bias_v)
        self.dropout = nn.Dropout(dropout)

    def _heads(self, x: torch.Tensor) -> torch.Tensor:
        b, t, _ = x.shape
        return x.view(b, t, self.num_heads, self.head_dim).transpose(1, 2)  # (B, H, T, dh)

    def project_kv(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(B, T, d) -> keys, values (B, H, T, dh): what the streaming cache stores."""
        return self._heads(self.linear_k(x)), self._heads(self.linear_v(x))

    def forward(
        self,
        x: torch.Tensor,  # (B, Q, d) queries: the newest Q of the K key frames
        keys: torch.Tensor,  # (B, H, K, dh)
        values: torch.Tensor,  # (B, H, K, dh)
        rel_pos: torch.Tensor,  # (Q + K - 1, d), see relative_position_table
        rel_index: torch.Tensor,  # (Q, K) int64, see relative_position_index
        allowed: torch.Tensor,  # (B or 1, Q, K) bool
    ) -> torch.Tensor:
        b, q_len, _ = x.shape
        q = self._heads(self.linear_q(x))  # (B, H, Q, dh)
        pos = self.linear_pos(rel_pos).view(-1, self.num_heads, self.head_dim).transpose(0, 1)  # (H, M, dh)
        content = torch.matmul(q + self.pos_bias_u[:, None, :], keys.transpose(-2, -1))  # (B, H, Q, K)
        position = torch.matmul(q + self.pos_bias_v[:, None, :], pos.transpose(-2, -1))  # (B, H, Q, M)
        index = rel_index[None, None].expand(b, self.num_heads, -1, -1)
        position = torch.gather(position, -1, index)  # (B, H, Q, K)
        scores = (content + position) / math.sqrt(self.head_dim)
        blocked = ~allowed[:, None]  # (B, 1, Q, K)
        probs = torch.softmax(scores.masked_fill(blocked, float("-inf")), dim=-1)
        probs = probs.masked_fill(blocked, 0.0)  # rows with no allowed key (padding) -> 0, not NaN
        out = torch.matmul(self.dropout(probs), values)  # (B, H, Q, dh)
        return self.linear_out(out.transpose(1, 2).reshape(b, q_len, -1))


class CausalConvModule(nn.Module):
    """Conformer convolution module with a causal depthwise conv (left context only).

    LayerNorm instead of FireRedASR's BatchNorm: per-frame, so streaming needs no batch statistics
    and padded frames never leak into valid ones.
    """

    def __init__(self, d_model: int, kernel: int, dropout: float):
        super().__init__()
        self.kernel = kernel
        self.norm = nn.LayerNorm(d_model)
        self.pointwise_in = nn.Linear(d_model, 2 * d_model)
        self.depthwise = nn.Conv1d(d_model, d_model, kernel, groups=d_model)
        self.depthwise_norm = nn.LayerNorm(d_model)
        self.pointwise_out = nn.Linear(d_model, d_model)
        self.dropout = nn.Dropout(dropout)

    def forward(self, x: torch.Tensor, cache: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """x: (B, T, d); cache: (B, d, kernel - 1) earlier inputs of the depthwise conv (zeros at the
        start). Returns the output (B, T, d) and the extended input (B, d, kernel - 1 + T)."""
        h = F.glu(self.pointwise_in(self.norm(x)), dim=-1)  # (B, T, d)
        extended = torch.cat([cache, h.transpose(1, 2)], dim=2)  # (B, d, k - 1 + T)
        h = self.depthwise(extended).transpose(1, 2)  # (B, T, d)
        h = self.pointwise_out(F.silu(self.depthwise_norm(h)))
        return self.dropout(h), extended


class ConformerBlock(nn.Module):
    """Macaron FFN, rel-pos MHSA, conv module, FFN, LayerNorm (FireRedASR-AED block order)."""

    def __init__(self, cfg: EncoderConfig):
        super().__init__()
        self.ffn_macaron = FeedForward(cfg.d_model, cfg.ffn_dim, cfg.dropout)
        self.attn_norm = nn.LayerNorm(cfg.d_model)
        self.attn = RelPositionSelfAttention(cfg.d_model, cfg.num_heads, cfg.dropout)
        self.attn_dropout = nn.Dropout(cfg.dropout)
        self.conv = CausalConvModule(cfg.d_model, cfg.conv_kernel, cfg.dropout)
        self.ffn = FeedForward(cfg.d_model, cfg.ffn_dim, cfg.dropout)
        self.final_norm = nn.LayerNorm(cfg.d_model)

    def forward(
        self,
        x: torch.Tensor,  # (B, T, d)
        rel_pos: torch.Tensor,  # (T + K - 1, d) with K = C + T
        rel_index: torch.Tensor,  # (T, K)
        allowed: torch.Tensor,  # (B or 1, T, K)
        key_cache: torch.Tensor,  # (B, H, C, dh), C cached frames (0 offline)
        value_cache: torch.Tensor,  # (B, H, C, dh)
        conv_cache: torch.Tensor,  # (B, d, kernel - 1)
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
        """Returns x (B, T, d), keys and values (B, H, C + T, dh), conv input (B, d, kernel - 1 + T)."""
        x = x + 0.5 * self.ffn_macaron(x)
        h = self.attn_norm(x)
        new_keys, new_values = self.attn.project_kv(h)
        keys = torch.cat([key_cache, new_keys], dim=2)
        values = torch.cat([value_cache, new_values], dim=2)
        x = x + self.attn_dropout(self.attn(h, keys, values, rel_pos, rel_index, allowed))
        conv_out, conv_input = self.conv(x, conv_cache)
        x = x + conv_out
        x = x + 0.5 * self.ffn(x)
        return self.final_norm(x), keys, values, conv_input


class ConformerEncoder(nn.Module):
    def __init__(self, cfg: EncoderConfig):
        super().__init__()
        self.cfg = cfg
        self.subsampling = Conv2dSubsampling(cfg.num_mel_bins, cfg.subsampling_channels, cfg.d_model)
        self.layers = nn.ModuleList(ConformerBlock(cfg) for _ in range(cfg.num_layers))

    def forward(
        self,
        features: torch.Tensor,  # (B, T, num_mel_bins), CMVN applied
        feature_lengths: torch.Tensor,  # (B,) int64
        chunk_frames: int = -1,  # <= 0: full context
        left_chunks: int = -1,  # < 0: unlimited left context
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Whole-utterance (offline / training) forward. Returns (B, T', d) and lengths (B,)."""
        cfg = self.cfg
        x = self.subsampling(features)  # (B, T', d)
        b, t, _ = x.shape
        lengths = torch.clamp((feature_lengths - 3) // 4, min=0)
        key_valid = torch.arange(t, device=x.device)[None, :] < lengths[:, None]  # (B, T')
        allowed = chunk_attention_mask(t, chunk_frames, left_chunks, x.device)[None] & key_valid[:, None, :]
        rel_pos = relative_position_table(t, t, cfg.d_model).to(x)
        rel_index = relative_position_index(t, t).to(x.device)
        no_keys = x.new_zeros(b, cfg.num_heads, 0, cfg.head_dim)
        conv_zeros = x.new_zeros(b, cfg.d_model, cfg.conv_kernel - 1)  # = causal zero padding
        for layer in self.layers:
            x, _, _, _ = layer(x, rel_pos, rel_index, allowed, no_keys, no_keys, conv_zeros)
        return x, lengths


class Adaptor(nn.Module):
    """Concatenate `downsample` consecutive encoder frames, Linear-ReLU-Linear to the LLM width.

    A tail shorter than `downsample` is zero-padded (frames past the length are zeroed first), so an
    utterance of T' frames gives ceil(T' / downsample) embeddings, in streaming and offline alike.
    """

    def __init__(self, d_model: int, cfg: AdaptorConfig):
        super().__init__()
        self.downsample = cfg.downsample
        self.linear_in = nn.Linear(d_model * cfg.downsample, cfg.hidden_dim)
        self.linear_out = nn.Linear(cfg.hidden_dim, cfg.output_dim)

    def forward(self, encoded: torch.Tensor, lengths: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """encoded (B, T', d), lengths (B,) -> embeddings (B, ceil(T'/k), D), lengths (B,)."""
        b, t, d = encoded.shape
        valid = torch.arange(t, device=encoded.device)[None, :, None] < lengths[:, None, None]
        x = encoded * valid
        pad = (-t) % self.downsample
        x = F.pad(x, (0, 0, 0, pad))
        x = x.reshape(b, (t + pad) // self.downsample, d * self.downsample)
        embeddings = self.linear_out(F.relu(self.linear_in(x)))
        return embeddings, (lengths + self.downsample - 1) // self.downsample


class PhonemeHead(nn.Module):
    """MLP (Linear-ReLU x (n-1), Linear) over encoder frames -> CTC log-probs (blank = 0)."""

    def __init__(self, d_model: int, cfg: PhonemeHeadConfig):
        super().__init__()
        dims = [d_model] + [cfg.hidden_dim] * (cfg.num_layers - 1) + [cfg.num_phonemes]
        layers: list[nn.Module] = []
        for i, (d_in, d_out) in enumerate(zip(dims[:-1], dims[1:])):
            layers.append(nn.Linear(d_in, d_out))
            if i < len(dims) - 2:
                layers.append(nn.ReLU())
        self.mlp = nn.Sequential(*layers)

    def forward(self, encoded: torch.Tensor) -> torch.Tensor:
        return torch.log_softmax(self.mlp(encoded), dim=-1)  # (B, T', P)


@dataclass
class AcousticOutput:
    phoneme_log_probs: torch.Tensor  # (B, T', P)
    frame_lengths: torch.Tensor  # (B,)
    embeddings: torch.Tensor  # (B, ceil(T'/4), D)
    embedding_lengths: torch.Tensor  # (B,)


class Nim4AcousticModel(nn.Module):
    """Encoder + adaptor + phoneme head: everything of NIM4-ASR except the Qwen3 decoder."""

    def __init__(self, cfg: Nim4Config):
        super().__init__()
        self.cfg = cfg
        self.encoder = ConformerEncoder(cfg.encoder)
        self.adaptor = Adaptor(cfg.encoder.d_model, cfg.adaptor)
        self.phoneme_head = PhonemeHead(cfg.encoder.d_model, cfg.phoneme_head)

    def forward(
        self,
        features: torch.Tensor,
        feature_lengths: torch.Tensor,
        chunk_frames: int = -1,
        left_chunks: int = -1,
    ) -> AcousticOutput:
        encoded, lengths = self.encoder(features, feature_lengths, chunk_frames, left_chunks)
        embeddings, embedding_lengths = self.adaptor(encoded, lengths)
        return AcousticOutput(self.phoneme_head(encoded), lengths, embeddings, embedding_lengths)

    def forward_streaming_reference(self, features: torch.Tensor) -> AcousticOutput:
        """One utterance (1, T, F) under the exported chunk geometry: what the ONNX stream must equal."""
        geometry = self.cfg.streaming
        lengths = torch.tensor([features.shape[1]], dtype=torch.int64)
        return self(features, lengths, geometry.chunk_frames, geometry.left_chunks)


def count_parameters(module: nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


__all__ = [
    "AcousticOutput",
    "Nim4AcousticModel",
    "chunk_attention_mask",
    "count_parameters",
    "num_encoder_frames",
    "relative_position_index",
    "relative_position_table",
]
