"""A Branch: the utterance's KV sequence copied to a decoder session's scratch sequence, to decode an
ending on without touching the utterance (runtime/recognizer.py's speculative final at a pause):

    branch = session.branch()        # seq 2 := seq 1 (cells shared, nothing re-decoded)
    branch.append(flush_embeddings)  # the encoder's flush, as if the utterance ended here
    first = branch.partial(hints)    # decoded, then rolled back to the audio's end
    final = branch.final(hints2)     # the final as DecoderSession.final would decode it
    branch.discard()                 # seq 2 emptied: no trace in the utterance

Greedy decoding on a copy at the same positions is the same computation as on the original, so the
branch's final equals the final of the utterance ended here (tests/test_end_of_turn.py checks it for
NIM4, tests/test_qwen3_asr.py for a windowed utterance, which also rolls the branch back: truncate).
A Branch offers the part of DecoderSession's utterance interface that an utterance's finish() uses,
so the same finish() runs on a fork of the utterance.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:  # the session module imports this one
    from nim4_edge.runtime.decoder import DecodeResult, DecoderSession


class Branch:
    def __init__(self, session: DecoderSession):
        self.session = session
        self.seq = session.branch_seq
        session._seq_cp(session.utterance_seq, self.seq)
        self.position = session.position

    @property
    def prefix_ids(self) -> list[int]:
        return self.session.prefix_ids

    def end_utterance(self) -> None:
        """Nothing decoded on the branch (an utterance shorter than one encoder frame)."""
        self.discard()

    def append(self, embeddings: np.ndarray) -> None:
        if len(embeddings):
            self.session._decode_embeddings(embeddings, self.seq, self.position, "none")
            self.position += len(embeddings)

    def truncate(self, position: int) -> None:
        """Roll the branch back to `position` (a windowed encoder's current window, recomputed)."""
        if not len(self.prefix_ids) <= position <= self.position:
            raise ValueError(f"truncate to {position}: outside the branch ({len(self.prefix_ids)}..{self.position})")
        self.session._seq_truncate(self.seq, position)
        self.position = position

    def partial(self, hotwords: Sequence[str] = (), audio_seconds: float | None = None) -> DecodeResult:
        return self._decode(hotwords, audio_seconds, probabilities=False)

    def final(self, hotwords: Sequence[str] = (), audio_seconds: float | None = None) -> DecodeResult:
        return self._decode(hotwords, audio_seconds, probabilities=True)

    def final_with_prefix(self, prefix: str, rows: np.ndarray, audio_seconds: float | None = None) -> DecodeResult:
        """DecoderSession.final_with_prefix on the scratch sequence: the branch's copy gives way to
        `prefix` + `rows` (the hints change what comes before the audio); the utterance stays."""
        return self.session._decode_after_prefix(prefix, rows, audio_seconds)

    def _decode(self, hotwords: Sequence[str], audio_seconds: float | None, probabilities: bool) -> DecodeResult:
        """Decoded after the branch's audio, then rolled back to it (the next decode starts there too)."""
        try:
            return self.session._ending(self.seq, self.position, hotwords, audio_seconds, probabilities)
        finally:
            self.session._seq_truncate(self.seq, self.position)

    def discard(self) -> None:
        self.session._seq_rm(self.seq)
