"""Voice activity detection on 10 ms frames of 16 kHz audio (the fbank frame grid).

`WebRtcVad` wraps webrtcvad (the GMM detector from WebRTC): microseconds per frame, but FACTS.md
measured it calling low-frequency car noise speech at 10 dB and 0 dB SNR. The learned detector for
car noise is chosen by measurement (README, "VAD").
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

import numpy as np

FRAME_MS = 10
SAMPLE_RATE_HZ = 16000
FRAME_SAMPLES = SAMPLE_RATE_HZ * FRAME_MS // 1000  # 160


@dataclass(frozen=True)
class VadConfig:
    """kind: which detector. webrtc_mode: 0 (least aggressive) .. 3 (most aggressive filtering)."""

    kind: str = "webrtc"
    webrtc_mode: int = 2

    def __post_init__(self) -> None:
        if self.kind not in VAD_KINDS:
            raise ValueError(f"VAD kind {self.kind!r}: choose one of {sorted(VAD_KINDS)}")
        if not 0 <= self.webrtc_mode <= 3:
            raise ValueError("webrtc_mode must be 0..3")


class FrameVad(Protocol):
    def is_speech(self, frame: np.ndarray) -> bool:
        """frame: float32 (160,) in [-1, 1]."""

    def reset(self) -> None: ...


class WebRtcVad:
    def __init__(self, mode: int = 2):
        try:
            import webrtcvad
        except ImportError as e:
            raise ImportError("webrtcvad is missing: pip install webrtcvad-wheels") from e
        self._vad = webrtcvad.Vad(mode)

    def is_speech(self, frame: np.ndarray) -> bool:
        pcm = (np.clip(frame, -1.0, 1.0) * 32767.0).astype("<i2").tobytes()
        return bool(self._vad.is_speech(pcm, SAMPLE_RATE_HZ))

    def reset(self) -> None:
        pass  # webrtcvad keeps only adaptive noise estimates, which should carry over


VAD_KINDS = {"webrtc"}


def make_vad(config: VadConfig) -> FrameVad:
    if config.kind == "webrtc":
        return WebRtcVad(config.webrtc_mode)
    raise ValueError(f"VAD kind {config.kind!r}: choose one of {sorted(VAD_KINDS)}")
