"""Audio sources: each yields (samples float32 mono, sample_rate_hz) blocks for Stream.accept_waveform.

    wav_blocks(path)            a WAV file, streamed (any size), optionally paced at real time
    stdin_blocks(rate)          raw 16-bit little-endian mono PCM on standard input
    Microphone(device)          sounddevice capture; the callback only copies into a RingBuffer
"""

from __future__ import annotations

import logging
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import numpy as np

from nim4_edge.runtime.audio import AudioError, WavReader, check_sample_rate
from nim4_edge.runtime.features import SAMPLE_RATE_HZ
from nim4_edge.runtime.ring_buffer import RingBuffer

log = logging.getLogger(__name__)

NO_MIC_HINT = "use --wav FILE (add --realtime to pace it like a microphone) or --stdin"


def wav_blocks(path: Path, block_ms: int = 100, realtime: bool = False) -> Iterator[tuple[np.ndarray, int]]:
    """Blocks of `block_ms` at the file's own rate, from a WAV file or a pipe/FIFO carrying one.
    `realtime`: yield no faster than the audio plays."""
    with WavReader(path) as reader:
        info = reader.info
        if info.truncated:
            log.warning("%s: header promises more audio than the file holds (truncated); using the %.2f s present",
                        path, info.duration_s)
        if info.num_frames == 0:
            raise AudioError(f"{path}: the WAV file holds no audio")
        block_frames = max(1, info.sample_rate_hz * block_ms // 1000)
        started, played_s, frames = time.monotonic(), 0.0, 0
        for block in reader.blocks(block_frames):
            frames += len(block)
            if realtime:
                ahead = played_s - (time.monotonic() - started)
                if ahead > 0:
                    time.sleep(ahead)
                played_s += len(block) / info.sample_rate_hz
            yield block, info.sample_rate_hz
        if frames == 0:
            raise AudioError(f"{path}: the WAV stream holds no audio")


def stdin_blocks(sample_rate_hz: int = SAMPLE_RATE_HZ, block_ms: int = 100, stream=None) -> Iterator[tuple[np.ndarray, int]]:
    """Raw s16le mono PCM from standard input (e.g. `arecord -f S16_LE -r 16000 -c 1 | nim4-edge listen --stdin`)."""
    check_sample_rate(sample_rate_hz, "--stdin-rate")
    stream = stream or sys.stdin.buffer
    block_bytes = 2 * max(1, sample_rate_hz * block_ms // 1000)
    carry = b""
    while True:
        data = stream.read(block_bytes)
        if not data:
            break
        data = carry + data
        usable = len(data) - len(data) % 2
        carry = data[usable:]
        if usable:
            yield np.frombuffer(data[:usable], dtype="<i2").astype(np.float32) / 32768.0, sample_rate_hz


def _sounddevice():
    try:
        import sounddevice  # optional at run time: PortAudio is needed only for a microphone
    except OSError as e:  # the Python package is there, the PortAudio library is not
        raise AudioError(f"PortAudio is not installed ({e}); apt-get install libportaudio2, or {NO_MIC_HINT}") from None
    except ImportError:
        raise AudioError(f"sounddevice is not installed (pip install sounddevice); or {NO_MIC_HINT}") from None
    return sounddevice


def list_input_devices() -> list[dict]:
    sd = _sounddevice()
    devices = []
    for index, dev in enumerate(sd.query_devices()):
        if dev["max_input_channels"] > 0:
            devices.append({"index": index, "name": dev["name"], "channels": dev["max_input_channels"],
                            "default_sample_rate_hz": int(dev["default_samplerate"])})
    return devices


class Microphone:
    """Capture from an input device into a ring buffer; iterate to get blocks.

    The PortAudio callback runs on its own thread and must never block: it copies channel 0 into the
    ring buffer (no lock, no buffer allocation) and counts status flags; it never raises. Overflow of
    the ring buffer is counted (`dropped_samples`) and reported by the CLI.
    """

    def __init__(self, device: int | str | None = None, sample_rate_hz: int | None = None,
                 block_ms: int = 50, buffer_seconds: float = 10.0):
        self._sd = _sounddevice()
        if device is None and not list_input_devices():
            raise AudioError(f"this machine has no microphone (no audio input device); {NO_MIC_HINT}")
        if isinstance(device, str) and device.isdigit():
            device = int(device)
        try:
            info = self._sd.query_devices(device, kind="input")
        except (ValueError, self._sd.PortAudioError) as e:
            raise AudioError(f"no usable microphone {device!r} ({e}); see --list-devices, or {NO_MIC_HINT}") from None
        self.sample_rate_hz = int(sample_rate_hz or info["default_samplerate"])
        self.device_name = info["name"]
        self.block_samples = max(1, self.sample_rate_hz * block_ms // 1000)
        self.ring = RingBuffer(int(self.sample_rate_hz * buffer_seconds))
        self.status_flags = 0  # PortAudio reported an input overflow or similar
        self.callback_errors = 0
        try:
            self._stream = self._sd.InputStream(device=device, channels=1, samplerate=self.sample_rate_hz,
                                                dtype="float32", blocksize=self.block_samples, callback=self._callback)
            self._stream.start()
        except self._sd.PortAudioError as e:
            raise AudioError(f"cannot open microphone {self.device_name!r} ({e}); {NO_MIC_HINT}") from None

    def _callback(self, indata, frames, time_info, status) -> None:
        try:
            if status:
                self.status_flags += 1
            self.ring.write(indata[:, 0])
        except BaseException:  # never let an exception reach PortAudio's thread
            self.callback_errors += 1

    @property
    def dropped_samples(self) -> int:
        return self.ring.dropped

    def __iter__(self) -> Iterator[tuple[np.ndarray, int]]:
        wait_s = self.block_samples / self.sample_rate_hz / 4
        while True:
            if self.ring.available >= self.block_samples:
                yield self.ring.read(self.block_samples), self.sample_rate_hz
            elif not self._stream.active:
                raise AudioError(f"microphone {self.device_name!r} stopped delivering audio (unplugged?); {NO_MIC_HINT}")
            else:
                time.sleep(wait_s)

    def close(self) -> None:
        try:
            self._stream.stop()
            self._stream.close()
        except Exception:  # already gone with the device
            pass
