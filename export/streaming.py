"""The exported graph: one 640 ms step of the acoustic model with flat, explicit caches.

Fixed shapes throughout (TensorRT builds one engine, no optimization profiles):

inputs
  features           (1, 67, F) float32   fbank window [64k, 64k + 67), CMVN applied, zero-padded at the end
  num_valid_frames   (1,) int64           encoder frames of this chunk that are real (1..16; < 16 only last)
  num_cached_frames  (1,) int64           how many of the 64 cache slots hold real frames (0, 16, .., 64)
  key_cache          (L, 1, H, 64, dh)    attention keys of the previous 64 frames, per layer
  value_cache        (L, 1, H, 64, dh)    attention values, likewise
  conv_cache         (L, 1, d, k - 1)     last k - 1 inputs of each layer's causal depthwise conv
outputs
  phoneme_log_probs  (1, 16, P)           CTC log-probs per encoder frame
  embeddings         (1, 4, D)            adaptor output; ceil(num_valid_frames / 4) of them are real
  new_key_cache, new_value_cache, new_conv_cache   same shapes as the inputs

The cache holds the newest frames at the end; slots before `64 - num_cached_frames` are masked out,
which is how the first chunks (partly filled caches) stay exact.
"""

from __future__ import annotations

import torch
from torch import nn

from nim4_edge.export.model import Nim4AcousticModel, relative_position_index, relative_position_table

INPUT_NAMES = (
    "features",
    "num_valid_frames",
    "num_cached_frames",
    "key_cache",
    "value_cache",
    "conv_cache",
)
OUTPUT_NAMES = (
    "phoneme_log_probs",
    "embeddings",
    "new_key_cache",
    "new_value_cache",
    "new_conv_cache",
)


class StreamingEncoderStep(nn.Module):
    def __init__(self, model: Nim4AcousticModel):
        super().__init__()
        self.model = model
        enc = model.cfg.encoder
        geometry = model.cfg.streaming
        self.chunk_frames = geometry.chunk_frames
        self.cache_frames = geometry.left_context_frames
        num_keys = self.cache_frames + self.chunk_frames
        # Constants of the fixed geometry, folded into the graph.
        self.register_buffer(
            "rel_pos", relative_position_table(self.chunk_frames, num_keys, enc.d_model), persistent=False
        )
        self.register_buffer(
            "rel_index", relative_position_index(self.chunk_frames, num_keys), persistent=False
        )
        self.register_buffer("key_slot", torch.arange(num_keys), persistent=False)
        self.register_buffer("frame_slot", torch.arange(self.chunk_frames), persistent=False)

    def cache_shapes(self) -> dict[str, tuple[int, ...]]:
        enc = self.model.cfg.encoder
        kv = (enc.num_layers, 1, enc.num_heads, self.cache_frames, enc.head_dim)
        return {
            "key_cache": kv,
            "value_cache": kv,
            "conv_cache": (enc.num_layers, 1, enc.d_model, enc.conv_kernel - 1),
        }

    def example_inputs(self) -> tuple[torch.Tensor, ...]:
        """Zero caches and a random window: the state at the start of an utterance."""
        geometry = self.model.cfg.streaming
        shapes = self.cache_shapes()
        return (
            torch.randn(1, geometry.fbank_frames_per_chunk, self.model.cfg.encoder.num_mel_bins),
            torch.tensor([self.chunk_frames], dtype=torch.int64),
            torch.tensor([0], dtype=torch.int64),
            torch.zeros(shapes["key_cache"]),
            torch.zeros(shapes["value_cache"]),
            torch.zeros(shapes["conv_cache"]),
        )

    def forward(
        self,
        features: torch.Tensor,
        num_valid_frames: torch.Tensor,
        num_cached_frames: torch.Tensor,
        key_cache: torch.Tensor,
        value_cache: torch.Tensor,
        conv_cache: torch.Tensor,
    ) -> tuple[torch.Tensor, ...]:
        model = self.model
        x = model.encoder.subsampling(features)  # (1, 16, d)

        # Key slots 0..63 are the cache (oldest first), 64..79 this chunk.
        in_cache = self.key_slot < self.cache_frames
        cache_ok = self.key_slot >= (self.cache_frames - num_cached_frames)
        chunk_ok = (self.key_slot - self.cache_frames) < num_valid_frames
        key_ok = (in_cache & cache_ok) | (~in_cache & chunk_ok)  # (80,); no bool Where in ORT CPU
        allowed = key_ok[None, None, :].expand(1, self.chunk_frames, -1)  # (1, 16, 80)

        new_keys, new_values, new_convs = [], [], []
        for i, layer in enumerate(model.encoder.layers):
            x, keys, values, conv_input = layer(
                x, self.rel_pos, self.rel_index, allowed, key_cache[i], value_cache[i], conv_cache[i]
            )
            new_keys.append(keys[:, :, self.chunk_frames :])  # newest 64 frames
            new_values.append(values[:, :, self.chunk_frames :])
            new_convs.append(conv_input[:, :, self.chunk_frames :])  # newest k - 1 inputs

        frame_lengths = num_valid_frames  # (1,): the adaptor zeroes frames past it
        embeddings, _ = model.adaptor(x, frame_lengths)
        return (
            model.phoneme_head(x),
            embeddings,
            torch.stack(new_keys),
            torch.stack(new_values),
            torch.stack(new_convs),
        )
