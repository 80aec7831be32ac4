"""The VADs: streaming decisions equal whole-clip decisions, and the learned VAD ignores car noise
that webrtcvad calls speech (the reason it is the default)."""

from __future__ import annotations

import numpy as np
import pytest

from nim4_edge.recipes.noise import car_noise, mix_at_snr
from nim4_edge.runtime.features import FbankOptions, OnlineFbank, compute_fbank
from nim4_edge.runtime.vad import LearnedVad, VadConfig, WebRtcVad, make_vad, stack_context

RATE = 16000


def _stream(vad, audio, block):
    fbank, out = OnlineFbank(FbankOptions()), []
    for start in range(0, len(audio), block):
        piece = audio[start : start + block]
        out.append(vad.decide(fbank.accept(piece), piece))
    return np.concatenate(out)


def test_stack_context_orders_oldest_first():
    frames = np.arange(5, dtype=np.float32)[:, None]
    stacked = stack_context(frames)
    assert stacked.shape == (5, 11)
    assert stacked[4].tolist() == [0] * 7 + [1, 2, 3, 4]  # frames 0..4, the first repeated before them
    assert stacked[0].tolist() == [0] * 11


@pytest.mark.parametrize("make", [LearnedVad, lambda: WebRtcVad(2)])
def test_block_size_does_not_change_decisions(make):
    rng = np.random.default_rng(0)
    audio = (0.3 * car_noise(2.0, RATE, rng) + 0.3 * np.sin(np.arange(2 * RATE) * 0.07)).astype(np.float32)
    a = _stream(make(), audio, 160)
    b = _stream(make(), audio, 1700)
    assert len(a) == len(compute_fbank(audio, FbankOptions())) == len(b)
    assert np.array_equal(a, b)


def test_learned_vad_ignores_car_noise_that_webrtc_calls_speech():
    rng = np.random.default_rng(7)
    noise = 0.5 * car_noise(4.0, RATE, rng)
    learned = _stream(LearnedVad(), noise, 1600).mean()
    webrtc = _stream(WebRtcVad(2), noise, 1600).mean()
    assert learned < 0.05
    assert webrtc > 0.5  # docs/FACTS.md: webrtcvad calls low-frequency car noise speech


def test_learned_vad_hears_real_speech_in_car_noise():
    from pathlib import Path

    from nim4_edge.runtime.audio import load_audio

    fsdd = Path(__file__).resolve().parents[2] / "shared" / "data" / "fsdd"
    wavs = sorted(fsdd.glob("*_0.wav"))[:8] if fsdd.is_dir() else []  # take 0: FSDD test split
    if not wavs:
        pytest.skip("shared/data/fsdd is not next to this checkout")
    rng = np.random.default_rng(3)
    found = []
    for wav in wavs:
        speech = load_audio(wav, RATE)
        padded = np.concatenate([np.zeros(RATE // 2, np.float32), speech, np.zeros(RATE // 2, np.float32)])
        mask = np.zeros(len(padded), bool)
        mask[RATE // 2 : RATE // 2 + len(speech)] = np.abs(speech) > 0.02
        mixed = mix_at_snr(padded, car_noise(len(padded) / RATE, RATE, rng)[: len(padded)], 10.0, mask)
        decisions = _stream(LearnedVad(), mixed, 1600)
        centre = decisions[RATE // 2 // 160 : (RATE // 2 + len(speech)) // 160]
        found.append(centre.mean())
    assert np.mean(found) > 0.5


def test_default_is_the_learned_vad():
    assert VadConfig().kind == "learned" and isinstance(make_vad(VadConfig()), LearnedVad)
    with pytest.raises(ValueError, match="webrtc"):
        VadConfig(kind="energy")
