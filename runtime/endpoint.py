"""Endpointing: turns per-frame speech decisions into utterance start and end points.

    silence --(min_speech_ms of consecutive speech)--> speech: the utterance starts pre_roll_ms
    before the first speech frame of that run (the first phoneme's onset is often below the VAD).
    speech --(trailing_silence_ms without speech, or max_utterance_ms)--> endpoint.

Frame by frame and nothing else, so the same audio gives the same segmentation whatever block sizes
it arrives in (streaming and `transcribe` agree).
"""

from __future__ import annotations

from dataclasses import dataclass

from nim4_edge.runtime.vad import FRAME_MS


@dataclass(frozen=True)
class EndpointConfig:
    """Defaults for an in-car assistant: commands are short and the driver expects a quick answer."""

    pre_roll_ms: int = 300  # audio kept before detected speech
    min_speech_ms: int = 120  # speech run that opens an utterance (shorter bursts: clicks, bumps)
    trailing_silence_ms: int = 600  # silence that closes it (sherpa-onnx's default rule uses 1.2 s)
    max_utterance_ms: int = 20000  # hard cut: memory and decoder context stay bounded

    def __post_init__(self) -> None:
        for name in ("pre_roll_ms", "min_speech_ms", "trailing_silence_ms", "max_utterance_ms"):
            value = getattr(self, name)
            if value < 0 or value % FRAME_MS:
                raise ValueError(f"{name}={value}: must be a non-negative multiple of {FRAME_MS} ms")
        if self.max_utterance_ms < self.min_speech_ms + FRAME_MS:
            raise ValueError("max_utterance_ms must exceed min_speech_ms")

    def frames(self, ms: int) -> int:
        return ms // FRAME_MS


class Endpointer:
    """Feed one decision per 10 ms frame; `step` says when an utterance starts or ends."""

    def __init__(self, config: EndpointConfig):
        self.config = config
        self.reset()

    def reset(self) -> None:
        self.in_speech = False
        self._speech_run = 0  # consecutive speech frames (silence state)
        self._silence_run = 0  # consecutive non-speech frames (speech state)
        self._utterance_frames = 0

    def step(self, is_speech: bool) -> tuple[str | None, int]:
        """Returns (event, frames): ("start", k) = the utterance began k frames before and including
        this one (speech run + pre-roll, as far as audio exists); ("end", 0) = this frame closes it;
        (None, 0) otherwise."""
        c = self.config
        if not self.in_speech:
            self._speech_run = self._speech_run + 1 if is_speech else 0
            if self._speech_run >= max(1, c.frames(c.min_speech_ms)):
                self.in_speech = True
                self._silence_run = 0
                back = self._speech_run + c.frames(c.pre_roll_ms)
                self._utterance_frames = back
                self._speech_run = 0
                return "start", back
            return None, 0
        self._utterance_frames += 1
        self._silence_run = 0 if is_speech else self._silence_run + 1
        if self._silence_run >= c.frames(c.trailing_silence_ms) or self._utterance_frames >= c.frames(c.max_utterance_ms):
            self.in_speech = False
            self._speech_run = 0
            return "end", 0
        return None, 0
