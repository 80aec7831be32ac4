"""Hint respelling: a span of the decoder's text that sounds exactly like a retrieved hotword is written
as that hotword.

Why: a homophone name (彗心大道 / 惠新大道, both hui4 xin1; Jon / John) cannot be told apart by sound, only
by the hotword database. The decoder is trained to copy the hint's spelling (the `context` stage); a
small decoder often writes the right sounds in the common spelling instead. This pass makes the
spelling follow the hint in that case. It never changes what was heard: a span is replaced only when
its lexicon phonemes (tones included) equal the hotword's, and the hotword itself was retrieved
because the CTC head heard those phonemes. Hints that sound different change nothing, so distractors
cannot force a name in. The same idea as the homophone replacers of production ASR stacks, restricted
to the hints of this utterance. `RecognizerConfig.respell_hints` (listen/eval `--no-respell`) turns
it off; `nim4-edge eval` reports both ways for the demo model (MODEL_CARD.md).

A second pass, `respell_by_sound`, handles the decoder's other miss: it copies the hint only in part
(锐平 written 锐锐, Lindsey Whitlock written Cyndi Whitlock). A span that shares a character (a word)
with a retrieved hint is replaced by the hint when the whole transcript then explains the audio
better: a higher CTC log-likelihood of its lexicon phonemes under the utterance's phoneme
log-probabilities (the forward algorithm; Graves et al. 2006). That is acoustic rescoring of two
hypotheses, as CTC rescoring of attention/LLM n-best lists does; a distractor hint that sounds
different scores lower and changes nothing.
"""

from __future__ import annotations

import re

import numpy as np
from rapidfuzz.distance import Levenshtein

from nim4_edge.runtime.hotwords.ctc import ctc_log_likelihood
from nim4_edge.runtime.hotwords.lexicon import Lexicon, LexiconError
from nim4_edge.runtime.text import HAN_CHARACTER


def _sound(lexicon: Lexicon, text: str) -> tuple[str, ...] | None:
    try:
        return tuple(lexicon.phonemes(text))
    except LexiconError:
        return None


def respell(text: str, hints: list[str], lexicon: Lexicon) -> str:
    """`text` with every span that sounds like one of `hints` (and is not already a hint) spelled as
    that hint. Hints are tried longest first; the first hint of a group of homophones wins (the
    retriever lists the heaviest first)."""
    if not text or not hints:
        return text
    for hint in sorted(dict.fromkeys(hints), key=len, reverse=True):
        if not hint or hint in text:
            continue
        target = _sound(lexicon, hint)
        if target is None:
            continue
        if HAN_CHARACTER.search(hint):
            text = _respell_han(text, hint, target, hints, lexicon)
        else:
            text = _respell_words(text, hint, target, hints, lexicon)
    return text


def _respell_han(text: str, hint: str, target: tuple, hints: list[str], lexicon: Lexicon) -> str:
    n = len(hint)
    for start in range(len(text) - n + 1):
        window = text[start : start + n]
        if window in hints or not all(HAN_CHARACTER.match(c) for c in window):
            continue
        if _sound(lexicon, window) == target:
            return text[:start] + hint + text[start + n :]
    return text


def _respell_words(text: str, hint: str, target: tuple, hints: list[str], lexicon: Lexicon) -> str:
    words = text.split(" ")
    k = len(hint.split())
    lowered = {h.lower() for h in hints}
    for start in range(len(words) - k + 1):
        window = " ".join(words[start : start + k])
        if not window or window.lower() in lowered:
            continue
        if _sound(lexicon, window) == target:
            return " ".join(words[:start] + [hint] + words[start + k :])
    return text


def respell_by_sound(text: str, hints: list[str], lexicon: Lexicon, log_probs: np.ndarray, blank: int,
                     margin: float = 0.0) -> str:
    """`text` with a span that shares a character (a word) with a hint and sounds roughly like it (at
    most half its phonemes differ, tones forgiven) replaced by that hint, where the whole text then
    scores higher under CTC (by more than `margin` nats). Hints longest first; each hint replaces at
    most one span. Cost: one or two CTC forwards per candidate (~1 ms per 5 s of audio on one core)."""
    if not text or not hints or not len(log_probs):
        return text
    pieces = _Pieces(lexicon)
    if pieces.ids(text) is None:
        return text
    scores: dict[tuple, float] = {}

    def score(ids: list[int]) -> float:
        if tuple(ids) not in scores:
            scores[tuple(ids)] = ctc_log_likelihood(log_probs, ids, blank)
        return scores[tuple(ids)]

    for hint in sorted(dict.fromkeys(hints), key=len, reverse=True):
        target = pieces.code(hint)
        if not hint or target is None or hint.lower() in text.lower():
            continue
        best = None
        for start, end in _overlapping_spans(text, hint):
            window = pieces.code(text[start:end])
            if window is None or Levenshtein.distance(lexicon.toneless(window), lexicon.toneless(target)) > len(target) // 2:
                continue  # sounds too different to be a misheard copy of the hint
            # both hypotheses pronounced the same way, piece by piece (a prefix or suffix of punctuation
            # only has no sound: the lexicon's None counts as none)
            before, after = pieces.ids(text[:start]) or [], pieces.ids(text[end:]) or []
            gain = score(before + pieces.ids(hint) + after) - score(before + pieces.ids(text[start:end]) + after)
            if gain > margin and (best is None or gain > best[0]):
                best = (gain, text[:start] + hint + text[end:])
        if best is not None:
            text = best[1]
    return text


class _Pieces:
    """Phonemes of text pieces, cached for one call: a candidate's phonemes are its prefix's, the
    hint's and its suffix's (no lexicon run over every whole candidate)."""

    def __init__(self, lexicon: Lexicon):
        self.lexicon = lexicon
        self._cache: dict[str, list[int] | None] = {}

    def ids(self, text: str) -> list[int] | None:
        if not text.strip():
            return []
        if text not in self._cache:
            try:
                self._cache[text] = self.lexicon.ids(self.lexicon.phonemes(text))
            except LexiconError:
                self._cache[text] = None
        return self._cache[text]

    def code(self, text: str) -> str | None:
        ids = self.ids(text)
        return self.lexicon.encode_ids(ids) if ids else None


def _overlapping_spans(text: str, hint: str):
    """(start, end) character spans of `text` as long as the hint (Han characters for a Han hint, else
    words) that share a unit with it."""
    if HAN_CHARACTER.search(hint):
        n, units = len(hint), set(hint)
        for start in range(len(text) - n + 1):
            window = text[start : start + n]
            if all(HAN_CHARACTER.match(c) for c in window) and units & set(window):
                yield start, start + n
    else:
        units, k = {w.lower() for w in hint.split()}, len(hint.split())
        words = list(re.finditer(r"\S+", text))
        for i in range(len(words) - k + 1):
            if units & {w.group().lower() for w in words[i : i + k]}:
                yield words[i].start(), words[i + k - 1].end()
