"""Endpointing: turns per-frame speech decisions into utterance start and end points.

    silence --(min_speech_ms of consecutive speech)--> speech: the utterance starts pre_roll_ms
    before the first speech frame of that run (the first phoneme's onset is often below the VAD).
    speech --(eot_pause_ms without speech)--> pause: the stream asks the decoder whether the turn is
    complete (a speculative final, runtime/recognizer.py) and ends it there when it is
    ("eos-predicted"); speech again --> resume: the turn goes on as if nothing happened.
    speech --(trailing_silence_ms without speech, or max_utterance_ms)--> end ("silence", "max-length").

Frame by frame and nothing else, so the same audio gives the same segmentation whatever block sizes
it arrives in (streaming and `transcribe` agree).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from nim4_edge.runtime.vad import FRAME_MS

END_REASONS = ("eos-predicted", "silence", "max-length", "end-of-input")


@dataclass(frozen=True)
class EndpointConfig:
    """Defaults for an in-car assistant: commands are short and the driver expects a quick answer.

    End of turn is adaptive: after eot_pause_ms of silence the final is decoded on a branch, and the
    turn ends there if its end score (the decoder's P(<|im_end|>) after the text x the phoneme head's
    confidence in the last word: Event.end_score) is above eot_threshold; else at trailing_silence_ms.
    eot_pause_ms = 0 (the default) is the fixed endpointer (always trailing_silence_ms): with the demo
    model the adaptive end costs about a point of CER (the turn ends 150 ms after the VAD's last speech
    frame, clipping weak word endings) and its end score separates pauses from ends only partly, so it
    is opt-in (README "End of turn" has the measurements). eot_threshold was chosen on the end-of-turn
    dev set (recipes/demo/turns.py --split dev), never on the test split."""

    pre_roll_ms: int = 300  # audio kept before detected speech
    min_speech_ms: int = 120  # speech run that opens an utterance (shorter bursts: clicks, bumps)
    trailing_silence_ms: int = 600  # silence that closes it (sherpa-onnx's default rule uses 1.2 s)
    max_utterance_ms: int = 20000  # hard cut: memory and decoder context stay bounded
    eot_pause_ms: int = 0  # silence after which the turn may end early (150 with 800 ms trailing: README); 0 = off
    eot_threshold: float = 0.6  # end score above which it does (1 = never, 0 = at every pause)

    def __post_init__(self) -> None:
        for name in ("pre_roll_ms", "min_speech_ms", "trailing_silence_ms", "max_utterance_ms", "eot_pause_ms"):
            value = getattr(self, name)
            if value < 0 or value % FRAME_MS:
                raise ValueError(f"{name}={value}: must be a non-negative multiple of {FRAME_MS} ms")
        if self.max_utterance_ms < self.min_speech_ms + FRAME_MS:
            raise ValueError("max_utterance_ms must exceed min_speech_ms")
        if self.eot_pause_ms and self.eot_pause_ms >= self.trailing_silence_ms:
            raise ValueError(f"eot_pause_ms={self.eot_pause_ms} must be shorter than trailing_silence_ms="
                             f"{self.trailing_silence_ms} (or 0: no early end of turn)")
        if not (isinstance(self.eot_threshold, (int, float)) and 0.0 <= self.eot_threshold <= 1.0
                and not math.isnan(self.eot_threshold)):
            raise ValueError(f"eot_threshold={self.eot_threshold}: a probability, 0 to 1")

    def frames(self, ms: int) -> int:
        return ms // FRAME_MS


class Endpointer:
    """Feed one decision per 10 ms frame; `step` says when an utterance starts, pauses, resumes or ends."""

    def __init__(self, config: EndpointConfig):
        self.config = config
        self.reset()

    def reset(self) -> None:
        self.in_speech = False
        self._speech_run = 0  # consecutive speech frames (silence state)
        self._silence_run = 0  # consecutive non-speech frames (speech state)
        self._utterance_frames = 0
        self.end_reason = ""  # after "end": "silence" or "max-length"

    def step(self, is_speech: bool) -> tuple[str | None, int]:
        """Returns (event, frames): ("start", k) = the utterance began k frames before and including
        this one (speech run + pre-roll, as far as audio exists); ("pause", 0) = this frame completes
        eot_pause_ms of silence (once per silence run); ("resume", 0) = speech after a pause;
        ("end", 0) = this frame closes it (end_reason says why); (None, 0) otherwise."""
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
        pause = c.frames(c.eot_pause_ms)
        paused = bool(pause) and self._silence_run >= pause
        self._silence_run = 0 if is_speech else self._silence_run + 1
        if self._silence_run >= c.frames(c.trailing_silence_ms) or self._utterance_frames >= c.frames(c.max_utterance_ms):
            self.end_reason = "silence" if self._silence_run >= c.frames(c.trailing_silence_ms) else "max-length"
            self.in_speech = False
            self._speech_run = 0
            return "end", 0
        if paused and is_speech:
            return "resume", 0
        if pause and self._silence_run == pause:
            return "pause", 0
        return None, 0
