"""Writing test WAV files of any encoding (the standard library writes PCM only)."""

from __future__ import annotations

import struct
from pathlib import Path

import numpy as np


def write_wav(path: Path, samples: np.ndarray, rate: int, encoding: str = "pcm16", channels: int = 1,
              extensible: bool = False, declared_data_bytes: int | None = None) -> Path:
    """samples: float (n,) or (n, channels) in [-1, 1] (float encodings may exceed it)."""
    x = np.asarray(samples, dtype=np.float64)
    if x.ndim == 1:
        x = np.repeat(x[:, None], channels, axis=1)
    if encoding == "pcm8":
        data, bits, tag = (np.clip(x, -1, 1) * 127 + 128).astype(np.uint8).tobytes(), 8, 1
    elif encoding == "pcm16":
        data, bits, tag = (np.clip(x, -1, 1) * 32767).astype("<i2").tobytes(), 16, 1
    elif encoding == "pcm24":
        v = (np.clip(x, -1, 1) * (2**23 - 1)).astype("<i4").reshape(-1)
        data = np.stack([v & 0xFF, (v >> 8) & 0xFF, (v >> 16) & 0xFF], axis=1).astype(np.uint8).tobytes()
        bits, tag = 24, 1
    elif encoding == "pcm32":
        data, bits, tag = (np.clip(x, -1, 1) * (2**31 - 1)).astype("<i4").tobytes(), 32, 1
    elif encoding == "float32":
        data, bits, tag = x.astype("<f4").tobytes(), 32, 3
    elif encoding == "float64":
        data, bits, tag = x.astype("<f8").tobytes(), 64, 3
    elif encoding == "mulaw":
        data, bits, tag = bytes(len(x) * channels), 8, 7
    else:
        raise ValueError(encoding)
    block = channels * bits // 8
    if extensible:
        guid = struct.pack("<H", tag) + b"\x00\x00\x00\x00\x10\x00\x80\x00\x00\xaa\x00\x38\x9b\x71"
        fmt = struct.pack("<HHIIHHHHI", 0xFFFE, channels, rate, rate * block, block, bits, 22, bits, 0) + guid
    else:
        fmt = struct.pack("<HHIIHH", tag, channels, rate, rate * block, block, bits)
    size = len(data) if declared_data_bytes is None else declared_data_bytes
    body = b"WAVE" + b"fmt " + struct.pack("<I", len(fmt)) + fmt + b"data" + struct.pack("<I", size) + data
    Path(path).write_bytes(b"RIFF" + struct.pack("<I", len(body)) + body)
    return Path(path)


def paused_example() -> tuple[np.ndarray, int]:
    """examples/en_temperature.wav ("set the temperature to 21 degrees") with 0.5 s of its own noise
    floor spliced in at the quietest 10 ms in its middle (a word boundary), 2 s of floor after it."""
    from nim4_edge.runtime.audio import load_audio

    audio = load_audio(Path(__file__).resolve().parents[1] / "examples" / "en_temperature.wav", 16000)
    frames = audio[: len(audio) // 160 * 160].reshape(-1, 160)
    energy = (frames**2).mean(1)
    loud = np.flatnonzero(energy > energy.max() * 1e-3)
    middle = np.arange(loud[0] + (loud[-1] - loud[0]) // 3, loud[0] + 2 * (loud[-1] - loud[0]) // 3)
    cut = int(middle[np.argmin(energy[middle])]) * 160
    floor = np.random.default_rng(0).standard_normal(32000).astype(np.float32) * 3e-4
    return np.concatenate([audio[:cut], floor[:8000], audio[cut:], floor]), cut
