"""WAV decoding (every encoding the issue names), resampling, sample cleaning, the ring buffer."""

from __future__ import annotations

import numpy as np
import pytest
from wavutil import write_wav

from nim4_edge.runtime.audio import AudioError, InputStats, clean_samples, load_audio, read_wav, read_wav_info
from nim4_edge.runtime.ring_buffer import RingBuffer

RATE = 16000
TONE = (0.5 * np.sin(2 * np.pi * 440 * np.arange(RATE // 2) / RATE)).astype(np.float32)


@pytest.mark.parametrize(
    "encoding, tolerance",
    [("pcm8", 2e-2), ("pcm16", 1e-4), ("pcm24", 1e-6), ("pcm32", 1e-6), ("float32", 1e-7), ("float64", 1e-7)],
)
def test_every_encoding_decodes_to_the_same_signal(tmp_path, encoding, tolerance):
    path = write_wav(tmp_path / f"{encoding}.wav", TONE, RATE, encoding)
    samples, rate = read_wav(path)
    assert rate == RATE
    assert np.abs(samples - TONE).max() <= tolerance


def test_extensible_multichannel_is_downmixed(tmp_path):
    stereo = np.stack([TONE, -TONE * 0.5], axis=1)
    path = write_wav(tmp_path / "st.wav", stereo, RATE, "pcm24", channels=2, extensible=True)
    samples, _ = read_wav(path)
    assert np.abs(samples - TONE * 0.25).max() < 1e-5


def test_other_rates_are_resampled(tmp_path):
    rate = 44100
    tone = 0.5 * np.sin(2 * np.pi * 440 * np.arange(rate) / rate)
    samples = load_audio(write_wav(tmp_path / "44k.wav", tone, rate), RATE)
    assert abs(len(samples) - RATE) <= 2
    spectrum = np.abs(np.fft.rfft(samples[1000:-1000]))
    peak_hz = np.argmax(spectrum) * RATE / len(samples[1000:-1000])
    assert abs(peak_hz - 440) < 2


def test_bad_files_raise_one_clear_error(tmp_path):
    (tmp_path / "empty.wav").write_bytes(b"")
    (tmp_path / "text.wav").write_text("hello, not audio")
    with pytest.raises(AudioError, match="empty file"):
        read_wav_info(tmp_path / "empty.wav")
    with pytest.raises(AudioError, match="not a WAV file"):
        read_wav_info(tmp_path / "text.wav")
    with pytest.raises(AudioError, match="mu-law.*sox"):
        read_wav_info(write_wav(tmp_path / "ulaw.wav", TONE, RATE, "mulaw"))
    with pytest.raises(AudioError, match="no such file"):
        read_wav_info(tmp_path / "missing.wav")
    header_only = write_wav(tmp_path / "h.wav", TONE, RATE)
    header_only.write_bytes(header_only.read_bytes()[:30])
    with pytest.raises(AudioError, match="truncated"):
        read_wav_info(header_only)


def test_truncated_data_is_used_and_flagged(tmp_path):
    path = write_wav(tmp_path / "t.wav", TONE, RATE, declared_data_bytes=10 * len(TONE) * 2)
    info = read_wav_info(path)
    assert info.truncated and info.num_frames == len(TONE)


def test_clean_samples_counts_nan_inf_and_clipping():
    stats = InputStats()
    x = np.array([0.1, np.nan, np.inf, -2.0, 0.99, 1.0], dtype=np.float32)
    y = clean_samples(x, stats)
    assert y.tolist() == pytest.approx([0.1, 0.0, 0.0, -1.0, 0.99, 1.0])
    assert (stats.samples, stats.non_finite, stats.clipped) == (6, 2, 2)
    with pytest.raises(AudioError, match="mono"):
        clean_samples(np.zeros((3, 2)), stats)


def test_ring_buffer_wraps_and_counts_overflow():
    ring = RingBuffer(10)
    assert ring.write(np.arange(6, dtype=np.float32)) == 6
    assert ring.read(4).tolist() == [0, 1, 2, 3]
    assert ring.write(np.arange(6, 14, dtype=np.float32)) == 8  # wraps around the end
    assert ring.available == 10
    assert ring.write(np.ones(5, np.float32)) == 0 and ring.dropped == 5
    assert ring.read().tolist() == [4, 5, 6, 7, 8, 9, 10, 11, 12, 13]
    assert ring.read().size == 0
