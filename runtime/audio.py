"""Audio input: a streaming WAV reader, sample cleaning, and a streaming resampler.

WAV files are read block by block (an hour-long file never sits in memory whole): PCM 8/16/24/32-bit
and IEEE float 32/64, plain or WAVE_FORMAT_EXTENSIBLE, any channel count (downmixed by averaging),
any rate (resampled to the model's with soxr's streaming resampler).
"""

from __future__ import annotations

import logging
import os
import select
import stat
import struct
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

import numpy as np
import soxr

from nim4_edge.runtime.errors import Nim4Error

log = logging.getLogger(__name__)

FORMAT_PCM = 0x0001
FORMAT_FLOAT = 0x0003
FORMAT_EXTENSIBLE = 0xFFFE
_FORMAT_NAMES = {0x0002: "MS ADPCM", 0x0006: "A-law", 0x0007: "mu-law", 0x0011: "IMA ADPCM", 0x0055: "MP3"}
CONVERT_HINT = "convert it, e.g. `sox IN.wav -b 16 -e signed-integer OUT.wav`"


class AudioError(Nim4Error):
    """An audio input that cannot be used as speech input."""


# Headers outside these ranges are refused (one line), not streamed: a rate of 10^9 Hz or 65,535
# channels is a corrupt or hostile file, and resampling from 1 Hz would run for minutes.
MIN_RATE_HZ = 1_000
MAX_RATE_HZ = 384_000
MAX_CHANNELS = 64
FIFO_WRITER_WAIT_S = 10.0  # a FIFO whose writer does not appear within this is reported, not waited on
# WAVE_FORMAT_EXTENSIBLE: the sub-format GUID is the format tag followed by these 14 bytes
# (KSDATAFORMAT_SUBTYPE_PCM / _IEEE_FLOAT, Microsoft's mmreg.h); any other GUID is another codec.
_EXTENSIBLE_GUID_TAIL = b"\x00\x00\x00\x00\x10\x00\x80\x00\x00\xaa\x00\x38\x9b\x71"


def check_sample_rate(rate_hz: int, where: str) -> None:
    if not MIN_RATE_HZ <= rate_hz <= MAX_RATE_HZ:
        raise AudioError(f"{where}: sample rate {rate_hz} Hz is outside {MIN_RATE_HZ}-{MAX_RATE_HZ} Hz; "
                         f"a corrupt header, or {CONVERT_HINT}")


@dataclass(frozen=True)
class WavInfo:
    path: Path
    encoding: str  # "pcm" or "float"
    bits_per_sample: int
    channels: int
    sample_rate_hz: int
    data_offset: int  # byte offset of the first sample
    data_bytes: int | None  # bytes of sample data to read; None: a stream, read to its end
    truncated: bool  # the header promised more data than the file holds (files; streams tell at the end)

    @property
    def frame_bytes(self) -> int:
        return self.channels * self.bits_per_sample // 8

    @property
    def num_frames(self) -> int | None:
        return None if self.data_bytes is None else self.data_bytes // self.frame_bytes

    @property
    def duration_s(self) -> float | None:
        frames = self.num_frames
        return None if frames is None else frames / self.sample_rate_hz


def _open_input(path: Path) -> tuple[BinaryIO, int | None]:
    """(binary file, size in bytes) for a regular file; (file, None) for a pipe or FIFO, which is read
    as a stream and never seeked. Every failure is one AudioError line."""
    try:
        st = os.stat(path)
    except FileNotFoundError:
        raise AudioError(f"{path}: no such file") from None
    except OSError as e:
        raise AudioError(f"{path}: cannot be read ({e.strerror})") from None
    if stat.S_ISDIR(st.st_mode):
        raise AudioError(f"{path}: is a directory, not a WAV file")
    try:
        if stat.S_ISFIFO(st.st_mode):
            # opening a FIFO blocks until a writer opens it: open without blocking, wait a bounded time
            fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK)
            ready, _, _ = select.select([fd], [], [], FIFO_WRITER_WAIT_S)
            if not ready:
                os.close(fd)
                raise AudioError(f"{path}: a FIFO with no writer ({FIFO_WRITER_WAIT_S:g} s waited); start the "
                                 "program that writes to it first")
            os.set_blocking(fd, True)
            return os.fdopen(fd, "rb"), None
        if not stat.S_ISREG(st.st_mode):
            return open(path, "rb"), None  # a character device or socket: a stream too
        return open(path, "rb"), st.st_size
    except PermissionError:
        raise AudioError(f"{path}: permission denied; check the file's permissions (ls -l)") from None
    except OSError as e:
        raise AudioError(f"{path}: cannot be read ({e.strerror})") from None


class WavReader:
    """One pass over a WAV file or stream (pipe, FIFO, process substitution): the header is parsed
    on opening, then `blocks()` reads the samples in order. Nothing is seeked, so a stream works as a
    file does. Raises AudioError naming the file and the problem."""

    def __init__(self, path: Path, _opened: tuple[BinaryIO, int | None] | None = None):
        self.path = Path(path)
        self._file, self._size = _opened or _open_input(self.path)
        self._position = 0
        try:
            self.info = self._parse()
        except BaseException:
            self._file.close()
            raise

    @classmethod
    def from_file(cls, file: BinaryIO, name: str) -> "WavReader":
        """A reader over an open binary file object (e.g. an upload in memory), read as a stream."""
        return cls(Path(name), (file, None))

    def _read(self, n: int) -> bytes:
        try:
            data = self._file.read(n)
        except OSError as e:
            raise AudioError(f"{self.path}: read failed ({e.strerror})") from None
        self._position += len(data)
        return data

    def _skip(self, n: int) -> None:
        while n > 0:
            got = self._read(min(n, 1 << 16))
            if not got:
                return
            n -= len(got)

    def _parse(self) -> WavInfo:
        path = self.path
        head = self._read(12)
        if len(head) == 0:
            raise AudioError(f"{path}: empty file")
        if len(head) < 12 or head[:4] not in (b"RIFF", b"RF64") or head[8:12] != b"WAVE":
            raise AudioError(f"{path}: not a WAV file (no RIFF/WAVE header); {CONVERT_HINT}")
        fmt = None
        while True:
            chunk = self._read(8)
            if len(chunk) < 8:
                if fmt is None:
                    raise AudioError(f"{path}: truncated WAV header (no 'fmt ' chunk)")
                raise AudioError(f"{path}: no 'data' chunk (truncated or corrupt WAV)")
            chunk_id, size = chunk[:4], struct.unpack("<I", chunk[4:])[0]
            if chunk_id == b"fmt ":
                body = self._read(min(size, 1 << 16))
                if len(body) < 16:
                    raise AudioError(f"{path}: truncated 'fmt ' chunk")
                tag, channels, rate, _, _, bits = struct.unpack("<HHIIHH", body[:16])
                if tag == FORMAT_EXTENSIBLE:
                    if len(body) < 40:
                        raise AudioError(f"{path}: truncated WAVE_FORMAT_EXTENSIBLE 'fmt ' chunk")
                    guid_tag = struct.unpack("<H", body[24:26])[0]
                    tag = guid_tag if body[26:40] == _EXTENSIBLE_GUID_TAIL else -1  # -1: another codec
                fmt = (tag, channels, rate, bits)
                self._skip(size - len(body) + size % 2)
            elif chunk_id == b"data":
                if fmt is None:
                    raise AudioError(f"{path}: 'data' before 'fmt ' (corrupt WAV)")
                tag, channels, rate, bits = fmt
                if not 1 <= channels <= MAX_CHANNELS:
                    raise AudioError(f"{path}: implausible header ({channels} channels; 1-{MAX_CHANNELS} are read)")
                check_sample_rate(rate, str(path))
                encoding = _encoding(path, tag, bits)
                frame = channels * bits // 8
                # 0xFFFFFFFF (or 0) is what a recorder writes while still recording: read to the end
                until_end = size in (0, 0xFFFFFFFF)
                if self._size is None:  # a stream: its length is known only at its end
                    return WavInfo(path, encoding, bits, channels, rate, self._position,
                                   None if until_end else size, False)
                present = max(0, self._size - self._position)
                declared = present if until_end else size
                data_bytes = min(declared, present)
                return WavInfo(path, encoding, bits, channels, rate, self._position,
                               data_bytes - data_bytes % frame, declared > present)
            else:
                self._skip(size + size % 2)

    def blocks(self, block_frames: int) -> Iterator[np.ndarray]:
        """Mono float32 blocks of up to `block_frames` samples at the file's own rate."""
        info = self.info
        remaining = info.data_bytes
        carry = b""
        while remaining is None or remaining > 0:
            want = block_frames * info.frame_bytes - len(carry)
            raw = self._read(want if remaining is None else min(remaining, want))
            if not raw:
                if remaining:  # a stream that ended before its header's length
                    log.warning("%s: the stream ended %d bytes before the length its header gives", self.path, remaining)
                break
            if remaining is not None:
                remaining -= len(raw)
            raw = carry + raw
            usable = len(raw) - len(raw) % info.frame_bytes
            carry = raw[usable:]
            if usable:
                frames = _decode(raw[:usable], info)
                yield frames[:, 0].copy() if info.channels == 1 else frames.mean(axis=1)

    def read_all(self) -> tuple[np.ndarray, int]:
        """The rest of the file: (float32 mono samples, sample_rate_hz)."""
        blocks = list(self.blocks(1 << 16))
        return (np.concatenate(blocks) if blocks else np.zeros(0, np.float32)), self.info.sample_rate_hz

    def close(self) -> None:
        self._file.close()

    def __enter__(self) -> "WavReader":
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def read_wav_info(path: Path) -> WavInfo:
    """Parse the RIFF header. Raises AudioError naming the file and the problem."""
    with WavReader(path) as reader:
        return reader.info


def _encoding(path: Path, tag: int, bits: int) -> str:
    if tag == FORMAT_PCM and bits in (8, 16, 24, 32):
        return "pcm"
    if tag == FORMAT_FLOAT and bits in (32, 64):
        return "float"
    name = _FORMAT_NAMES.get(tag, "an unknown WAVE_FORMAT_EXTENSIBLE sub-format" if tag == -1 else f"format tag {tag:#06x}")
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


def read_wav(path: Path) -> tuple[np.ndarray, int]:
    """A whole file: (float32 mono samples, sample_rate_hz). For short files (tests, verification)."""
    with WavReader(path) as reader:
        return reader.read_all()


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
