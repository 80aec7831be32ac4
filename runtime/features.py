"""Log-Mel filterbank features (kaldi-native-fbank) and global CMVN, configured from the bundle.

The front end of NIM4-ASR: 80-dim log-Mel fbank, 25 ms window, 10 ms shift, 16 kHz, then a global
mean/variance normalization. Training (export/recipes) and the runtime call this same module, so a
model never sees features computed another way.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import kaldi_native_fbank as knf
import numpy as np

SAMPLE_RATE_HZ = 16000


@dataclass(frozen=True)
class FbankOptions:
    """Everything that changes the numbers an fbank frame holds. Written into the manifest."""

    sample_rate_hz: int = SAMPLE_RATE_HZ
    num_mel_bins: int = 80
    frame_length_ms: float = 25.0
    frame_shift_ms: float = 10.0
    # Kaldi defaults to dither on, which makes features random: off, so streaming == offline exactly.
    dither: float = 0.0
    # snip_edges=True: frame i covers samples [i*shift, i*shift + length); no reflection at the edges,
    # so a frame is final as soon as its samples have arrived (what streaming needs).
    snip_edges: bool = True
    # Samples in [-1, 1] are multiplied by this before the fbank (Kaldi's int16 convention). The
    # scale shifts every log-mel value by log(scale**2) = 20.79 for 32768: training and runtime must agree.
    waveform_scale: float = 32768.0

    def __post_init__(self) -> None:
        if self.sample_rate_hz <= 0 or self.num_mel_bins <= 0:
            raise ValueError("fbank sample_rate_hz and num_mel_bins must be positive")
        if not 0 < self.frame_shift_ms <= self.frame_length_ms:
            raise ValueError("fbank frame_shift_ms must be in (0, frame_length_ms]")

    @property
    def frame_shift_samples(self) -> int:
        return int(round(self.sample_rate_hz * self.frame_shift_ms / 1000))

    @property
    def frame_length_samples(self) -> int:
        return int(round(self.sample_rate_hz * self.frame_length_ms / 1000))

    def num_frames(self, num_samples: int) -> int:
        """Frames an utterance of ``num_samples`` yields with snip_edges=True."""
        if num_samples < self.frame_length_samples:
            return 0
        return 1 + (num_samples - self.frame_length_samples) // self.frame_shift_samples

    def to_json(self) -> dict:
        return asdict(self)

    @classmethod
    def from_json(cls, data: dict) -> "FbankOptions":
        return cls(**data)

    def to_knf(self):
        opts = knf.FbankOptions()
        opts.frame_opts.samp_freq = float(self.sample_rate_hz)
        opts.frame_opts.frame_length_ms = float(self.frame_length_ms)
        opts.frame_opts.frame_shift_ms = float(self.frame_shift_ms)
        opts.frame_opts.dither = float(self.dither)
        opts.frame_opts.snip_edges = bool(self.snip_edges)
        opts.mel_opts.num_bins = int(self.num_mel_bins)
        return opts


def compute_fbank(samples: np.ndarray, options: FbankOptions) -> np.ndarray:
    """Whole-utterance fbank. ``samples``: float32 (num_samples,) in [-1, 1] at options.sample_rate_hz.

    Returns float32 (num_frames, num_mel_bins): the same frames OnlineFbank gives in pieces.
    """
    return OnlineFbank(options).accept(np.ascontiguousarray(samples, dtype=np.float32))


class OnlineFbank:
    """Streaming fbank: samples in (any block size), the frames they completed out (raw log-mel).

    Frames equal compute_fbank's on the same audio: with snip_edges a frame depends only on its own
    25 ms window.
    """

    def __init__(self, options: FbankOptions):
        self.options = options
        self._fbank = knf.OnlineFbank(options.to_knf())
        self._next = 0  # next frame index (kaldi-native-fbank keeps indices absolute after pop)

    def accept(self, samples: np.ndarray) -> np.ndarray:
        """samples: float32 (n,) in [-1, 1] at options.sample_rate_hz -> (frames, num_mel_bins)."""
        self._fbank.accept_waveform(float(self.options.sample_rate_hz), samples * np.float32(self.options.waveform_scale))
        ready = self._fbank.num_frames_ready
        if ready <= self._next:
            return np.zeros((0, self.options.num_mel_bins), np.float32)
        # np.stack copies: get_frame returns views into a buffer that pop() frees
        frames = np.stack([self._fbank.get_frame(i) for i in range(self._next, ready)])
        self._fbank.pop(ready - self._next)
        self._next = ready
        return frames


@dataclass(frozen=True)
class Cmvn:
    """Global CMVN: ``(x - mean) * inv_std`` per mel bin, statistics gathered over training data."""

    mean: tuple[float, ...]
    inv_std: tuple[float, ...]

    def __post_init__(self) -> None:
        if len(self.mean) != len(self.inv_std):
            raise ValueError(
                f"CMVN mean has {len(self.mean)} values but inv_std has {len(self.inv_std)}"
            )
        if not all(np.isfinite(self.mean)) or not all(np.isfinite(self.inv_std)):
            raise ValueError("CMVN statistics contain NaN or Inf; recompute them")

    @classmethod
    def identity(cls, dim: int) -> "Cmvn":
        return cls((0.0,) * dim, (1.0,) * dim)

    @classmethod
    def from_stats(cls, frames: np.ndarray, min_std: float = 1e-5) -> "Cmvn":
        """Statistics of ``frames`` (num_frames, dim)."""
        frames = np.asarray(frames, dtype=np.float64)
        std = np.maximum(frames.std(axis=0), min_std)
        return cls(tuple(frames.mean(axis=0).tolist()), tuple((1.0 / std).tolist()))

    @property
    def dim(self) -> int:
        return len(self.mean)

    def apply(self, frames: np.ndarray) -> np.ndarray:
        """frames: (num_frames, dim) -> float32 (num_frames, dim)."""
        mean = np.asarray(self.mean, dtype=np.float32)
        inv_std = np.asarray(self.inv_std, dtype=np.float32)
        return ((frames - mean) * inv_std).astype(np.float32, copy=False)

    def to_json(self) -> dict:
        return {"mean": list(self.mean), "inv_std": list(self.inv_std)}

    @classmethod
    def from_json(cls, data: dict) -> "Cmvn":
        return cls(tuple(float(v) for v in data["mean"]), tuple(float(v) for v in data["inv_std"]))
