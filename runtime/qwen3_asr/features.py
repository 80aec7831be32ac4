"""Qwen3-ASR's log-mel features (Whisper's recipe), offline and streaming, in numpy.

    frames    400-sample periodic-Hann windows every 160 samples, centred (the signal reflected by 200
              samples at both ends); the frame past the last full hop is dropped: N // 160 frames
    mel       power spectrum through 128 Slaney-scale, Slaney-normalized triangular filters, 0-8 kHz
              (Slaney's Auditory Toolbox, as librosa builds them)
    log       log10(max(mel, 1e-10)), then the dynamic-range clamp max(x, utterance max - 8) and
              (x + 4) / 4
    short     clips under 0.5 s are zero-padded to 0.5 s first (the official inference code does this)

Why numpy and not kaldi-native-fbank's OnlineWhisperFbank: measured on the same 2 s of noise, its
log10 mel differs from the official extractor's by a median 0.12 and up to 3.1 (its frame options are
ignored; another window or filter bank), while this module agrees within 1e-4 (tests/test_qwen3_asr.py).

The clamp needs the utterance's maximum, which a stream does not know in advance: `LogMelStream` gives
raw log10 frames and the encoder normalizes them with the maximum seen so far (encoder.py says what
that changes).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np


@dataclass(frozen=True)
class LogMelOptions:
    """Everything that changes the numbers of a frame (from the model's preprocessor config)."""

    sample_rate_hz: int = 16000
    num_mel_bins: int = 128
    n_fft: int = 400
    hop_length: int = 160
    min_samples: int = 8000  # shorter clips are zero-padded to this
    dynamic_range: float = 8.0  # log10 units kept below the utterance maximum

    def __post_init__(self) -> None:
        if self.n_fft % 2 or self.n_fft <= 0 or self.hop_length <= 0 or self.num_mel_bins <= 0:
            raise ValueError("log-mel n_fft must be even and positive; hop_length and num_mel_bins positive")

    def num_frames(self, num_samples: int) -> int:
        return max(num_samples, self.min_samples) // self.hop_length

    def to_json(self) -> dict:
        return asdict(self)

    @classmethod
    def from_json(cls, data: dict) -> "LogMelOptions":
        return cls(**data)


def _hz_to_mel(hz: np.ndarray) -> np.ndarray:
    """Slaney's mel scale: linear below 1 kHz (200/3 Hz per mel), logarithmic above (27 mels per 6.4x)."""
    hz = np.asarray(hz, dtype=np.float64)
    linear = hz / (200.0 / 3.0)
    log = 15.0 + np.log(np.maximum(hz, 1e-12) / 1000.0) / (np.log(6.4) / 27.0)
    return np.where(hz >= 1000.0, log, linear)


def _mel_to_hz(mel: np.ndarray) -> np.ndarray:
    mel = np.asarray(mel, dtype=np.float64)
    linear = mel * (200.0 / 3.0)
    log = 1000.0 * np.exp((np.log(6.4) / 27.0) * (mel - 15.0))
    return np.where(mel >= 15.0, log, linear)


def mel_filters(options: LogMelOptions) -> np.ndarray:
    """(num_mel_bins, n_fft // 2 + 1) triangular filters, each scaled to unit area (Slaney norm)."""
    nyquist = options.sample_rate_hz / 2
    edges = _mel_to_hz(np.linspace(_hz_to_mel(0.0), _hz_to_mel(nyquist), options.num_mel_bins + 2))
    bins = np.linspace(0, nyquist, options.n_fft // 2 + 1)
    lower, centre, upper = edges[:-2, None], edges[1:-1, None], edges[2:, None]
    rising = (bins[None, :] - lower) / (centre - lower)
    falling = (upper - bins[None, :]) / (upper - centre)
    filters = np.maximum(0.0, np.minimum(rising, falling))
    return filters * (2.0 / (upper - lower))


class _Spectrogram:
    """Frames -> raw log10 mel, with the window and filters built once."""

    def __init__(self, options: LogMelOptions):
        self.options = options
        n = np.arange(options.n_fft)
        self.window = 0.5 - 0.5 * np.cos(2 * np.pi * n / options.n_fft)  # periodic Hann
        self.filters = mel_filters(options)

    def log10_mel(self, padded: np.ndarray, first: int, count: int) -> np.ndarray:
        """Frames first .. first+count-1 of a signal already reflected by n_fft // 2 at the start."""
        hop, n_fft = self.options.hop_length, self.options.n_fft
        if count <= 0:
            return np.zeros((0, self.options.num_mel_bins), dtype=np.float32)
        starts = (first + np.arange(count)) * hop
        frames = padded[starts[:, None] + np.arange(n_fft)[None, :]] * self.window
        power = np.abs(np.fft.rfft(frames, axis=1)) ** 2
        return np.log10(np.maximum(power @ self.filters.T, 1e-10)).astype(np.float32)


def normalize(raw: np.ndarray, maximum: float, options: LogMelOptions) -> np.ndarray:
    """Raw log10 mel -> model input: the dynamic-range clamp under `maximum`, then (x + 4) / 4."""
    return ((np.maximum(raw, maximum - options.dynamic_range) + 4.0) / 4.0).astype(np.float32)


def log_mel(samples: np.ndarray, options: LogMelOptions) -> np.ndarray:
    """(frames, bins) model input of a whole utterance (float32 samples in [-1, 1])."""
    samples = _padded_to_minimum(np.asarray(samples, dtype=np.float64), options)
    half = options.n_fft // 2
    padded = np.pad(samples, (half, half), mode="reflect")
    raw = _Spectrogram(options).log10_mel(padded, 0, options.num_frames(len(samples)))
    return normalize(raw, float(raw.max()) if len(raw) else 0.0, options)


def _padded_to_minimum(samples: np.ndarray, options: LogMelOptions) -> np.ndarray:
    if len(samples) < options.min_samples:
        return np.pad(samples, (0, options.min_samples - len(samples)))
    return samples


class LogMelStream:
    """One utterance's raw log10 mel frames, each as soon as its window has arrived.

    Frame t covers samples [t*160 - 200, t*160 + 200); the first frames reach left of the signal (its
    reflection), the last ones right of it, which only `finish()` knows: so a frame is given once its
    window's right edge has arrived, and `finish()` gives the rest exactly as `log_mel` computes them.
    """

    def __init__(self, options: LogMelOptions):
        self.options = options
        self._spectrogram = _Spectrogram(options)
        self._samples = np.zeros(0, dtype=np.float64)
        self.num_frames = 0  # frames given so far

    @property
    def num_samples(self) -> int:
        return len(self._samples)

    def accept(self, samples: np.ndarray) -> np.ndarray:
        """New samples in; the (n, bins) raw frames that became complete out (often none)."""
        self._samples = np.concatenate([self._samples, np.asarray(samples, dtype=np.float64)])
        half = self.options.n_fft // 2
        if len(self._samples) <= half:
            return self._spectrogram.log10_mel(self._samples, 0, 0)
        # frame t's window ends at t*hop + half: complete when that many samples are here
        ready = (len(self._samples) - half) // self.options.hop_length + 1
        ready = min(ready, len(self._samples) // self.options.hop_length)  # never past the last kept frame
        return self._frames(self._left_padded(), ready)

    def finish(self) -> np.ndarray:
        """End of utterance: the remaining frames, the end reflected (after the short-clip padding)."""
        samples = _padded_to_minimum(self._samples, self.options)
        half = self.options.n_fft // 2
        padded = np.pad(samples, (half, half), mode="reflect")
        return self._frames(padded, self.options.num_frames(len(self._samples)))

    def _left_padded(self) -> np.ndarray:
        half = self.options.n_fft // 2
        return np.concatenate([self._samples[half:0:-1], self._samples])

    def _frames(self, padded: np.ndarray, ready: int) -> np.ndarray:
        out = self._spectrogram.log10_mel(padded, self.num_frames, ready - self.num_frames)
        self.num_frames = max(self.num_frames, ready)
        return out
