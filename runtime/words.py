"""Word timestamps and confidence of a final text.

Timestamps: the final text is pronounced word by word (a Han character or an English word is a word)
and force-aligned to the utterance's phoneme log-probabilities from the CTC head (Viterbi, the same
states as the forward respelling uses). A word starts at its first phoneme's first frame and ends
after its last phoneme's last frame (40 ms encoder frames). CTC places a phoneme as a spike of one or
two frames, so an end is where the word's last sound was heard, not where its decay ended. The
encoder attends over a whole 640 ms chunk, so within a chunk a spike may come early: the demo model
puts an utterance's first phonemes on its very first frames, in the pre-roll before anyone spoke.
So no word starts before the VAD's speech onset (words before it are moved to it, one frame long
at least).

Confidence, each in [0, 1]:
    decoder   geometric mean of the probabilities the decoder gave the tokens it chose (softmax of
              the logits, greedy); of a word: of the tokens that spelled it
    ctc       mean over the word's phonemes of the phoneme's peak frame posterior on the alignment
    word      sqrt(decoder x ctc) of the word; the utterance: sqrt(decoder x ctc) over all of it
A word respelled from a hotword hint (not spelled by the decoder's tokens) takes the utterance's
decoder figure.
"""

from __future__ import annotations

import difflib
import math
from dataclasses import dataclass

import numpy as np

from nim4_edge.runtime.geometry import SUBSAMPLING_FACTOR
from nim4_edge.runtime.hotwords import Lexicon
from nim4_edge.runtime.hotwords.ctc import ctc_align


@dataclass(frozen=True)
class Word:
    word: str
    start_s: float  # in the stream's audio timeline
    end_s: float
    confidence: float

    def to_json(self) -> dict:
        return {"word": self.word, "start_s": round(self.start_s, 3), "end_s": round(self.end_s, 3),
                "confidence": round(self.confidence, 4)}


def _char_tokens(text: str, decoded: str, token_texts: list[str]) -> list[set[int]]:
    """For each character of `text`, the decoder tokens that spelled it (empty where `text` differs
    from what the decoder wrote, i.e. a respelled span). A token that ended inside a UTF-8 character
    (no text of its own) counts toward the character the next token completes."""
    owners: list[set[int]] = []
    pending: set[int] = set()
    for i, piece in enumerate(token_texts):
        pending.add(i)
        if piece:
            owners += [set(pending) for _ in piece]
            pending = set()
    owners += [set() for _ in range(len(decoded) - len(owners))]  # the detokenizer's flushed tail
    mapped: list[set[int]] = [set() for _ in text]
    for a, b, size in difflib.SequenceMatcher(None, decoded, text, autojunk=False).get_matching_blocks():
        for k in range(size):
            mapped[b + k] = owners[a + k]
    return mapped


def word_timings(text: str, lexicon: Lexicon, log_probs: np.ndarray, blank: int, frame_shift_s: float,
                 offset_s: float, decoded: str, token_texts: list[str],
                 token_logprobs: list[float], speech_onset_s: float = 0.0) -> tuple[list[Word], float | None]:
    """(words, utterance confidence) of a final. log_probs: (T, P) of the utterance's encoder frames;
    frame_shift_s: the fbank shift (an encoder frame is SUBSAMPLING_FACTOR of them); offset_s: the
    utterance's start in the stream; speech_onset_s: where the VAD heard speech begin (no word starts
    earlier). Words are [] when the text cannot be pronounced or aligned."""
    decoder_all = math.exp(float(np.mean(token_logprobs))) if token_logprobs else None
    words = lexicon.words(text)
    labels = [i for _, _, phonemes in words for i in lexicon.ids(phonemes)]
    spans = ctc_align(log_probs, labels, blank) if labels else None
    if spans is None:
        return [], decoder_all
    frame_s = SUBSAMPLING_FACTOR * frame_shift_s
    owners = _char_tokens(text, decoded, token_texts)
    out, peaks_all, k = [], [], 0
    for start, end, phonemes in words:
        mine = spans[k : k + len(phonemes)]
        k += len(phonemes)
        peaks = [math.exp(peak) for _, _, peak in mine]
        peaks_all += peaks
        tokens = set().union(*owners[start:end])
        decoder = math.exp(float(np.mean([token_logprobs[t] for t in tokens]))) if tokens else decoder_all
        confidence = math.sqrt((decoder if decoder is not None else 1.0) * float(np.mean(peaks)))
        begin = max(offset_s + mine[0][0] * frame_s, speech_onset_s, out[-1].end_s if out else 0.0)
        finish = max(offset_s + (mine[-1][1] + 1) * frame_s, begin + frame_s)
        out.append(Word(text[start:end], begin, finish, confidence))
    ctc_all = float(np.mean(peaks_all))
    return out, math.sqrt((decoder_all if decoder_all is not None else 1.0) * ctc_all)
