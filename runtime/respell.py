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
"""

from __future__ import annotations

import re

from nim4_edge.runtime.lexicon import Lexicon, LexiconError

_HAN = re.compile(r"[\u3400-\u9fff]")


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
        if _HAN.search(hint):
            text = _respell_han(text, hint, target, hints, lexicon)
        else:
            text = _respell_words(text, hint, target, hints, lexicon)
    return text


def _respell_han(text: str, hint: str, target: tuple, hints: list[str], lexicon: Lexicon) -> str:
    n = len(hint)
    for start in range(len(text) - n + 1):
        window = text[start : start + n]
        if window in hints or not all(_HAN.match(c) for c in window):
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
