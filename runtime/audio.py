"""Reading audio files into float32 mono at the model's rate.

WAV PCM 8/16/24/32-bit through the standard library, downmixed to mono by averaging channels, and
resampled with soxr (high quality, the same resampler the streaming sources use).
"""

from __future__ import annotations

import wave
from pathlib import Path

import numpy as np

from nim4_edge.runtime.errors import Nim4Error


class AudioError(Nim4Error):
    """An audio file that cannot be read as speech input."""


def _pcm_to_float(raw: bytes, sample_width: int) -> np.ndarray:
    if sample_width == 1:  # 8-bit WAV is unsigned
        return (np.frombuffer(raw, dtype=np.uint8).astype(np.float32) - 128.0) / 128.0
    if sample_width == 2:
        return np.frombuffer(raw, dtype="<i2").astype(np.float32) / 32768.0
    if sample_width == 3:
        b = np.frombuffer(raw, dtype=np.uint8).reshape(-1, 3).astype(np.int32)
        value = b[:, 0] | (b[:, 1] << 8) | (b[:, 2] << 16)
        value = np.where(value >= 1 << 23, value - (1 << 24), value)
        return value.astype(np.float32) / float(1 << 23)
    if sample_width == 4:
        return (np.frombuffer(raw, dtype="<i4").astype(np.float64) / 2147483648.0).astype(np.float32)
    raise AudioError(f"unsupported sample width {sample_width} bytes")


def read_wav(path: Path) -> tuple[np.ndarray, int]:
    """Returns (samples float32 (n,) mono in [-1, 1], sample_rate_hz)."""
    path = Path(path)
    try:
        with wave.open(str(path), "rb") as w:
            channels, width, rate = w.getnchannels(), w.getsampwidth(), w.getframerate()
            raw = w.readframes(w.getnframes())
    except FileNotFoundError:
        raise AudioError(f"{path}: no such file") from None
    except (wave.Error, EOFError) as e:
        raise AudioError(f"{path}: not a PCM WAV file ({e}); convert it, e.g. `sox IN -b 16 OUT.wav`") from None
    try:
        samples = _pcm_to_float(raw[: len(raw) - len(raw) % (width * channels)], width)
    except AudioError as e:
        raise AudioError(f"{path}: {e}; convert it to 16-bit PCM") from None
    if channels > 1:
        samples = samples.reshape(-1, channels).mean(axis=1)
    return samples, rate


def resample(samples: np.ndarray, from_hz: int, to_hz: int) -> np.ndarray:
    if from_hz == to_hz:
        return samples.astype(np.float32, copy=False)
    import soxr

    return soxr.resample(samples, from_hz, to_hz, quality="HQ").astype(np.float32, copy=False)


def load_audio(path: Path, sample_rate_hz: int) -> np.ndarray:
    """A whole file as float32 mono at `sample_rate_hz`."""
    samples, rate = read_wav(path)
    return resample(samples, rate, sample_rate_hz)
