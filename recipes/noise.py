"""Synthetic in-car noise, and mixing speech with noise at a chosen SNR.

No recordings of car cabins can be fetched here, so the noise is synthesized from what dominates a
cabin: tyre/road noise (broadband, falling steeply above a few hundred Hz), engine harmonics (the
firing frequency of a 4-cylinder engine is rpm / 30, 25-120 Hz, with a few overtones), wind and
ventilation (broadband hiss, slowly modulated). The low-frequency weight is what makes simple energy
and GMM detectors call it speech (docs/FACTS.md: webrtcvad false alarm 0.96-1.0 at 10 and 0 dB).
"""

from __future__ import annotations

import numpy as np


def _shaped_noise(n: int, rate: int, rng: np.random.Generator, gain_fn) -> np.ndarray:
    spectrum = np.fft.rfft(rng.standard_normal(n))
    freqs = np.fft.rfftfreq(n, 1 / rate)
    return np.fft.irfft(spectrum * gain_fn(np.maximum(freqs, 1.0)), n)


def car_noise(seconds: float, rate: int, rng: np.random.Generator) -> np.ndarray:
    """float32 (n,) with unit RMS: road + engine + wind/fan, parameters drawn from `rng`."""
    n = int(seconds * rate)
    t = np.arange(n) / rate
    cutoff = rng.uniform(80, 300)  # road noise corner frequency
    road = _shaped_noise(n, rate, rng, lambda f: 1.0 / (1.0 + (f / cutoff) ** 2))
    rpm = rng.uniform(800, 3500) * (1 + 0.1 * np.sin(2 * np.pi * rng.uniform(0.05, 0.3) * t))
    phase = 2 * np.pi * np.cumsum(rpm / 30.0) / rate
    engine = sum(np.sin(k * phase + rng.uniform(0, 2 * np.pi)) / k ** rng.uniform(0.8, 1.5) for k in range(1, 7))
    hiss = _shaped_noise(n, rate, rng, lambda f: 1.0 / np.sqrt(f))  # pink: wind, fan
    hiss *= 1 + 0.5 * np.sin(2 * np.pi * rng.uniform(0.1, 0.5) * t)
    parts = [road, engine, hiss]
    weights = rng.dirichlet([4.0, 2.0, 1.0])
    mix = sum(w * p / (np.sqrt(np.mean(p ** 2)) + 1e-12) for w, p in zip(weights, parts))
    return (mix / (np.sqrt(np.mean(mix ** 2)) + 1e-12)).astype(np.float32)


def other_noise(seconds: float, rate: int, rng: np.random.Generator) -> np.ndarray:
    """White, pink or brown noise with unit RMS (non-car backgrounds for variety)."""
    n = int(seconds * rate)
    exponent = rng.choice([0.0, 0.5, 1.0])
    x = _shaped_noise(n, rate, rng, lambda f: f ** -exponent)
    return (x / (np.sqrt(np.mean(x ** 2)) + 1e-12)).astype(np.float32)


def mix_at_snr(speech: np.ndarray, noise: np.ndarray, snr_db: float, speech_mask: np.ndarray | None = None) -> np.ndarray:
    """speech + noise scaled so that the speech-to-noise power ratio (over `speech_mask` samples, or
    all samples) is `snr_db`. Both of equal length."""
    active = speech[speech_mask] if speech_mask is not None and speech_mask.any() else speech
    p_speech = float(np.mean(active.astype(np.float64) ** 2)) + 1e-12
    p_noise = float(np.mean(noise.astype(np.float64) ** 2)) + 1e-12
    scale = np.sqrt(p_speech / (p_noise * 10 ** (snr_db / 10)))
    return (speech + scale * noise).astype(np.float32)
