"""Voice activity detection on 10 ms frames of 16 kHz audio (the fbank frame grid).

`WebRtcVad` wraps webrtcvad (the GMM detector from WebRTC): microseconds per frame, but docs/FACTS.md
measured it calling low-frequency car noise speech at 10 dB and 0 dB SNR.
`LearnedVad` is a small MLP over 11 frames (110 ms) of the model's own 80-bin log-mel fbank (computed
once per stream and shared with the encoder), trained here on real and synthetic speech mixed with
synthetic car noise (recipes/vad_train.py); its weights ship with the package (runtime/assets/).
Which one is the default was decided by `nim4-edge bench vad` (README).
"""

from __future__ import annotations

import collections
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

import numpy as np

from nim4_edge.runtime.errors import Nim4Error
from nim4_edge.runtime.features import SAMPLE_RATE_HZ

FRAME_MS = 10
FRAME_SAMPLES = SAMPLE_RATE_HZ * FRAME_MS // 1000  # 160


@dataclass(frozen=True)
class VadConfig:
    """kind: which detector. webrtc_mode: 0 (least aggressive) .. 3 (most aggressive filtering)."""

    kind: str = "learned"
    webrtc_mode: int = 2
    threshold: float | None = None  # learned VAD speech probability threshold; None = the trained one

    def __post_init__(self) -> None:
        if self.kind not in VAD_KINDS:
            raise ValueError(f"VAD kind {self.kind!r}: choose one of {sorted(VAD_KINDS)}")
        if not 0 <= self.webrtc_mode <= 3:
            raise ValueError("webrtc_mode must be 0..3")


class Vad(Protocol):
    """Speech decisions for fbank frames. The stream computes one fbank (the model's) over all audio;
    detectors that need raw audio get the 16 kHz samples too. Fbank frame j spans samples
    [160 j, 160 j + 400); its decision refers to its middle 10 ms (samples [160 (j+1), 160 (j+2)))."""

    def decide(self, frames: np.ndarray, samples: np.ndarray) -> np.ndarray:
        """frames: (n, bins) new raw log-mel fbank frames; samples: the new 16 kHz samples of this
        call. Returns bool (n,)."""

    def reset(self) -> None: ...


class WebRtcVad:
    """webrtcvad on 10 ms sample frames; fbank frame j takes the decision of sample frame j + 1."""

    def __init__(self, mode: int = 2):
        try:  # optional at run time: only --vad webrtc needs it (the learned VAD is the default)
            import webrtcvad
        except ImportError:
            raise Nim4Error("webrtcvad is not installed: pip install webrtcvad-wheels (or use --vad learned)") from None
        self._vad = webrtcvad.Vad(mode)
        self.reset()

    def reset(self) -> None:
        self._pending = np.zeros(0, np.float32)
        self._decisions: collections.deque[bool] = collections.deque()
        self._first = 1  # sample-frame index of _decisions[0]; fbank frame j needs sample frame j + 1
        self._next_frame = 0  # next fbank frame to decide
        self._sample_frame = 0

    def is_speech(self, frame: np.ndarray) -> bool:
        pcm = (np.clip(frame, -1.0, 1.0) * 32767.0).astype("<i2").tobytes()
        return bool(self._vad.is_speech(pcm, SAMPLE_RATE_HZ))

    def decide(self, frames: np.ndarray, samples: np.ndarray) -> np.ndarray:
        audio = np.concatenate([self._pending, samples]) if len(self._pending) else samples
        n = len(audio) // FRAME_SAMPLES
        for i in range(n):
            decision = self.is_speech(audio[i * FRAME_SAMPLES : (i + 1) * FRAME_SAMPLES])
            if self._sample_frame >= 1:
                self._decisions.append(decision)
            self._sample_frame += 1
        self._pending = audio[n * FRAME_SAMPLES :].copy()
        # fbank frame j is ready only after samples up to 160 j + 400, so sample frame j + 1 is decided
        return np.array([self._decisions.popleft() for _ in range(len(frames))], dtype=bool)


LEARNED_VAD_WEIGHTS = Path(__file__).resolve().parent / "assets" / "vad-mlp-v2.npz"
VAD_CONTEXT_FRAMES = 11  # the newest fbank frame and the 10 before it


def stack_context(frames: np.ndarray, history: np.ndarray | None = None) -> np.ndarray:
    """(n, bins) -> (n, context * bins): row j holds frames j-10 .. j. Before the first frame of a
    stream the first frame is repeated; `history` (the previous call's last 10 frames) continues a
    stream. The same function builds training examples and streaming inputs."""
    if history is None:
        history = np.repeat(frames[:1], VAD_CONTEXT_FRAMES - 1, axis=0)
    padded = np.concatenate([history, frames])
    return np.concatenate([padded[i : i + len(frames)] for i in range(VAD_CONTEXT_FRAMES)], axis=1)


class MlpWeights:
    """The learned VAD's parameters: input normalization, 3 linear layers, decision threshold, and
    the fbank options its features were computed with."""

    def __init__(self, path: Path = LEARNED_VAD_WEIGHTS):
        if not Path(path).is_file():
            raise Nim4Error(f"{path}: learned VAD weights missing (reinstall nim4-edge, or use --vad webrtc)")
        with np.load(path, allow_pickle=False) as data:  # never unpickle: data only
            self.arrays = {k: data[k].astype(np.float32) for k in data.files if k != "meta"}
            self.meta = json.loads(str(data["meta"]))

    def probability(self, features: np.ndarray) -> np.ndarray:
        """features (n, context * bins) -> speech probability (n,)."""
        a = self.arrays
        x = (features - a["mean"]) / a["std"]
        x = np.maximum(x @ a["w1"] + a["b1"], 0)
        x = np.maximum(x @ a["w2"] + a["b2"], 0)
        logit = (x @ a["w3"] + a["b3"])[:, 0]
        return 1.0 / (1.0 + np.exp(-np.clip(logit, -60.0, 60.0)))


class LearnedVad:
    """A small MLP over 11 fbank frames (110 ms): the 10 before and the frame itself."""

    def __init__(self, threshold: float | None = None, weights: MlpWeights | None = None):
        self.weights = weights or MlpWeights()
        self.threshold = self.weights.meta["threshold"] if threshold is None else threshold
        self.reset()

    @property
    def fbank(self) -> dict:
        """The fbank options (FbankOptions fields) the weights were trained on."""
        return self.weights.meta["fbank"]

    def reset(self) -> None:
        self._history: np.ndarray | None = None

    def decide(self, frames: np.ndarray, samples: np.ndarray) -> np.ndarray:
        if len(frames) == 0:
            return np.zeros(0, bool)
        history = self._history if self._history is not None else np.repeat(frames[:1], VAD_CONTEXT_FRAMES - 1, axis=0)
        features = stack_context(frames, history)
        self._history = np.concatenate([history, frames])[-(VAD_CONTEXT_FRAMES - 1) :]
        return self.weights.probability(features) >= self.threshold


VAD_KINDS = {"webrtc", "learned"}


def make_vad(config: VadConfig) -> Vad:
    if config.kind == "webrtc":
        return WebRtcVad(config.webrtc_mode)
    if config.kind == "learned":
        return LearnedVad(config.threshold)
    raise ValueError(f"VAD kind {config.kind!r}: choose one of {sorted(VAD_KINDS)}")
