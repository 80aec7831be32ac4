"""Chunk geometry of the streaming encoder: how fbank frames map to encoder frames and embeddings.

Numbers for NIM4-ASR (docs/FACTS.md, "The architecture's numbers"): 10 ms fbank frames, Conv2d
subsampling 4x -> 40 ms encoder frames, chunk = 16 encoder frames (640 ms), left context = 4 chunks (64 frames), adaptor 4x ->
4 LLM embeddings per chunk (6.25 Hz).

The subsampling is two 3x3 stride-2 convolutions without padding, so encoder frame ``t`` is computed
from fbank frames ``[4t, 4t + 6]``. Chunk ``k`` (encoder frames ``16k .. 16k+15``) therefore needs
fbank frames ``[64k, 64k + 67)``: a 67-frame window that advances by 64 frames; consecutive windows
share 3 frames. An utterance of ``T`` fbank frames has ``(T - 3) // 4`` encoder frames.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

SUBSAMPLING_FACTOR = 4
# Fbank frames beyond 4*t that encoder frame t still reads: two kernel-3 convs, (3-1) + 2*(3-1) = 6,
# minus the stride overlap: a window of 4*n + 3 frames yields exactly n encoder frames.
SUBSAMPLING_EXTRA_FRAMES = 3


def num_encoder_frames(num_fbank_frames: int) -> int:
    """Encoder frames produced by ``num_fbank_frames`` (no padding in the subsampling)."""
    return max(0, (num_fbank_frames - SUBSAMPLING_EXTRA_FRAMES) // SUBSAMPLING_FACTOR)


@dataclass(frozen=True)
class ChunkGeometry:
    """Streaming geometry of one exported encoder step. Written into the manifest and ONNX metadata."""

    chunk_frames: int = 16  # encoder frames per step (16 x 40 ms = 640 ms)
    left_chunks: int = 4  # chunks of left context the attention sees (64 frames)
    adaptor_downsample: int = 4  # encoder frames concatenated into one LLM embedding

    def __post_init__(self) -> None:
        if self.chunk_frames <= 0 or self.left_chunks < 0:
            raise ValueError("chunk_frames must be > 0 and left_chunks >= 0")
        if self.chunk_frames % self.adaptor_downsample:
            raise ValueError(
                f"chunk_frames ({self.chunk_frames}) must be a multiple of the adaptor downsample "
                f"({self.adaptor_downsample}) so every chunk yields whole embeddings"
            )

    @property
    def left_context_frames(self) -> int:
        """Encoder frames held in the attention cache (64)."""
        return self.chunk_frames * self.left_chunks

    @property
    def fbank_frames_per_chunk(self) -> int:
        """Fbank frames in one step's input window (67)."""
        return self.chunk_frames * SUBSAMPLING_FACTOR + SUBSAMPLING_EXTRA_FRAMES

    @property
    def fbank_shift_per_chunk(self) -> int:
        """Fbank frames the window advances per step (64)."""
        return self.chunk_frames * SUBSAMPLING_FACTOR

    @property
    def embeddings_per_chunk(self) -> int:
        return self.chunk_frames // self.adaptor_downsample

    def chunk_duration_ms(self, frame_shift_ms: float) -> float:
        return self.fbank_shift_per_chunk * frame_shift_ms

    def to_json(self) -> dict:
        data = asdict(self)
        data.update(
            left_context_frames=self.left_context_frames,
            fbank_frames_per_chunk=self.fbank_frames_per_chunk,
            fbank_shift_per_chunk=self.fbank_shift_per_chunk,
            embeddings_per_chunk=self.embeddings_per_chunk,
            subsampling_factor=SUBSAMPLING_FACTOR,
        )
        return data

    @classmethod
    def from_json(cls, data: dict) -> "ChunkGeometry":
        geometry = cls(
            chunk_frames=int(data["chunk_frames"]),
            left_chunks=int(data["left_chunks"]),
            adaptor_downsample=int(data["adaptor_downsample"]),
        )
        # The derived numbers are stored for readers in other languages; they must agree.
        derived = geometry.to_json()
        for key, value in data.items():
            if key in derived and derived[key] != value:
                raise ValueError(f"chunk geometry field {key}={value} contradicts derived {derived[key]}")
        return geometry
