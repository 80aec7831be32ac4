"""Audio input: a streaming WAV reader, sample cleaning, and a streaming resampler.

WAV files are read block by block (an hour-long file never sits in memory whole): PCM 8/16/24/32-bit
and IEEE float 32/64, plain or WAVE_FORMAT_EXTENSIBLE, any channel count (downmixed by averaging),
any rate (resampled to the model's with soxr's streaming resampler).
"""

from __future__ import annotations

import struct
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import soxr

from nim4_edge.runtime.errors import Nim4Error

FORMAT_PCM = 0x0001
FORMAT_FLOAT = 0x0003
FORMAT_EXTENSIBLE = 0xFFFE
_FORMAT_NAMES = {0x0002: "MS ADPCM", 0x0006: "A-law", 0x0007: "mu-law", 0x0011: "IMA ADPCM", 0x0055: "MP3"}
CONVERT_HINT = "convert it, e.g. `sox IN.wav -b 16 -e signed-integer OUT.wav`"


class AudioError(Nim4Error):
    """An audio input that cannot be used as speech input."""


@dataclass(frozen=True)
class WavInfo:
    path: Path
    encoding: str  # "pcm" or "float"
    bits_per_sample: int
    channels: int
    sample_rate_hz: int
    data_offset: int  # byte offset of the first sample
    data_bytes: int  # bytes of sample data actually present in the file
    truncated: bool  # the header promised more data than the file holds

    @property
    def frame_bytes(self) -> int:
        return self.channels * self.bits_per_sample // 8

    @property
    def num_frames(self) -> int:
        return self.data_bytes // self.frame_bytes

    @property
    def duration_s(self) -> float:
        return self.num_frames / self.sample_rate_hz


def read_wav_info(path: Path) -> WavInfo:
    """Parse the RIFF header. Raises AudioError naming the file and the problem."""
    path = Path(path)
    try:
        f = open(path, "rb")
    except FileNotFoundError:
        raise AudioError(f"{path}: no such file") from None
    except IsADirectoryError:
        raise AudioError(f"{path}: is a directory, not a WAV file") from None
    with f:
        file_bytes = path.stat().st_size
        head = f.read(12)
        if len(head) == 0:
            raise AudioError(f"{path}: empty file")
        if len(head) < 12 or head[:4] not in (b"RIFF", b"RF64") or head[8:12] != b"WAVE":
            raise AudioError(f"{path}: not a WAV file (no RIFF/WAVE header); {CONVERT_HINT}")
        fmt = None
        while True:
            chunk = f.read(8)
            if len(chunk) < 8:
                if fmt is None:
                    raise AudioError(f"{path}: truncated WAV header (no 'fmt ' chunk)")
                raise AudioError(f"{path}: no 'data' chunk (truncated or corrupt WAV)")
            chunk_id, size = chunk[:4], struct.unpack("<I", chunk[4:])[0]
            if chunk_id == b"fmt ":
                body = f.read(size)
                if len(body) < 16:
                    raise AudioError(f"{path}: truncated 'fmt ' chunk")
                tag, channels, rate, _, _, bits = struct.unpack("<HHIIHH", body[:16])
                if tag == FORMAT_EXTENSIBLE and len(body) >= 26:
                    tag = struct.unpack("<H", body[24:26])[0]  # first 2 bytes of the sub-format GUID
                fmt = (tag, channels, rate, bits)
                if size % 2:
                    f.read(1)
            elif chunk_id == b"data":
                if fmt is None:
                    raise AudioError(f"{path}: 'data' before 'fmt ' (corrupt WAV)")
                offset = f.tell()
                present = max(0, file_bytes - offset)
                # 0xFFFFFFFF (or 0) is what a recorder writes while still recording.
                declared = present if size in (0, 0xFFFFFFFF) else size
                data_bytes = min(declared, present)
                tag, channels, rate, bits = fmt
                info = WavInfo(path, _encoding(path, tag, bits), bits, channels, rate, offset,
                               data_bytes - data_bytes % max(1, channels * bits // 8), declared > present)
                if channels < 1 or rate < 1000:
                    raise AudioError(f"{path}: implausible header ({channels} channels, {rate} Hz)")
                return info
            else:
                f.seek(size + size % 2, 1)


def _encoding(path: Path, tag: int, bits: int) -> str:
    if tag == FORMAT_PCM and bits in (8, 16, 24, 32):
        return "pcm"
    if tag == FORMAT_FLOAT and bits in (32, 64):
        return "float"
    name = _FORMAT_NAMES.get(tag, f"format tag {tag:#06x}")
    raise AudioError(f"{path}: unsupported WAV encoding ({name}, {bits}-bit); {CONVERT_HINT}")


def _decode(raw: bytes, info: WavInfo) -> np.ndarray:
    """Interleaved bytes -> float32 (frames, channels) in [-1, 1]."""
    bits = info.bits_per_sample
    if info.encoding == "float":
        data = np.frombuffer(raw, dtype="<f4" if bits == 32 else "<f8").astype(np.float32)
    elif bits == 8:  # 8-bit WAV is unsigned
        data = (np.frombuffer(raw, dtype=np.uint8).astype(np.float32) - 128.0) / 128.0
    elif bits == 16:
        data = np.frombuffer(raw, dtype="<i2").astype(np.float32) / 32768.0
    elif bits == 24:
        b = np.frombuffer(raw, dtype=np.uint8).reshape(-1, 3).astype(np.int32)
        value = b[:, 0] | (b[:, 1] << 8) | (b[:, 2] << 16)
        data = (np.where(value >= 1 << 23, value - (1 << 24), value) / float(1 << 23)).astype(np.float32)
    else:
        data = (np.frombuffer(raw, dtype="<i4") / 2147483648.0).astype(np.float32)
    return data.reshape(-1, info.channels)


def iter_wav_blocks(info: WavInfo, block_frames: int) -> Iterator[np.ndarray]:
    """Mono float32 blocks of up to `block_frames` samples at the file's own rate."""
    remaining = info.data_bytes
    with open(info.path, "rb") as f:
        f.seek(info.data_offset)
        while remaining > 0:
            raw = f.read(min(remaining, block_frames * info.frame_bytes))
            if not raw:
                break
            remaining -= len(raw)
            raw = raw[: len(raw) - len(raw) % info.frame_bytes]
            frames = _decode(raw, info)
            yield frames[:, 0].copy() if info.channels == 1 else frames.mean(axis=1)


def read_wav(path: Path) -> tuple[np.ndarray, int]:
    """A whole file: (float32 mono samples, sample_rate_hz). For short files (tests, verification)."""
    info = read_wav_info(path)
    blocks = list(iter_wav_blocks(info, 1 << 16))
    samples = np.concatenate(blocks) if blocks else np.zeros(0, np.float32)
    return samples, info.sample_rate_hz


class StreamResampler:
    """Streaming resampler to `out_rate_hz` (soxr, HQ). Identity when the rates match."""

    def __init__(self, in_rate_hz: int, out_rate_hz: int):
        self.in_rate_hz, self.out_rate_hz = in_rate_hz, out_rate_hz
        self._soxr = None
        if in_rate_hz != out_rate_hz:
            self._soxr = soxr.ResampleStream(in_rate_hz, out_rate_hz, 1, dtype="float32", quality="HQ")

    def process(self, samples: np.ndarray, last: bool = False) -> np.ndarray:
        samples = np.ascontiguousarray(samples, dtype=np.float32)
        if self._soxr is None:
            return samples
        return self._soxr.resample_chunk(samples, last=last)


def resample(samples: np.ndarray, from_hz: int, to_hz: int) -> np.ndarray:
    return StreamResampler(from_hz, to_hz).process(samples, last=True)


def load_audio(path: Path, sample_rate_hz: int) -> np.ndarray:
    """A whole file as float32 mono at `sample_rate_hz`."""
    samples, rate = read_wav(path)
    return resample(samples, rate, sample_rate_hz)


@dataclass
class InputStats:
    """What the cleaning of input samples found (reported, never silent)."""

    samples: int = 0
    non_finite: int = 0  # NaN/Inf samples replaced by 0
    clipped: int = 0  # samples at or beyond full scale

    def to_json(self) -> dict:
        return dict(self.__dict__)


def clean_samples(samples: np.ndarray, stats: InputStats) -> np.ndarray:
    """float32 copy with NaN/Inf replaced by 0 and values limited to [-1, 1]; counts both."""
    x = np.asarray(samples, dtype=np.float32)
    if x.ndim != 1:
        raise AudioError(f"expected mono samples of shape (n,), got {x.shape}")
    stats.samples += len(x)
    finite = np.isfinite(x)
    if not finite.all():
        stats.non_finite += int((~finite).sum())
        x = np.where(finite, x, np.float32(0.0))
    over = np.abs(x) >= 1.0
    if over.any():
        stats.clipped += int(over.sum())
        x = np.clip(x, -1.0, 1.0)
    return x


def synthetic_utterance(seconds: float, sample_rate_hz: int, seed: int) -> np.ndarray:
    """A speech-like test signal: voiced segments (harmonics of a gliding f0, syllable-rate envelope),
    noise bursts like fricatives, and pauses. float32 in [-1, 1]."""
    rng = np.random.default_rng(seed)
    n = int(round(seconds * sample_rate_hz))
    t = np.arange(n) / sample_rate_hz
    f0 = 120 + 40 * np.sin(2 * np.pi * 0.7 * t + rng.uniform(0, 6.28))
    phase = 2 * np.pi * np.cumsum(f0) / sample_rate_hz
    voiced = sum(np.sin(h * phase) / h for h in range(1, 12))
    envelope = np.clip(np.sin(2 * np.pi * 4.0 * t + rng.uniform(0, 6.28)), 0, None)
    noise = rng.standard_normal(n) * (rng.uniform(size=n // 800 + 1).repeat(800)[:n] > 0.7)
    signal = 0.25 * voiced * envelope + 0.05 * noise
    return (0.5 * signal / max(1e-9, np.abs(signal).max())).astype(np.float32)
