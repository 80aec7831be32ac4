"""Did the audio say the final's text? The text against the phoneme head's own reading, and the
decoder's own certainty.

The decoder writes a fluent in-domain command for audio it cannot hear (a voice unlike any it was
trained on): for an assistant that acts on the text that is worse than no text. The phoneme head
reads the same audio on its own, so a final whose text the head does not support is marked not
confident (the text is kept; the caller decides, e.g. asks again).

acoustic confidence, in [0, 1]:  exp((log F - log B) / n)
    F   the CTC forward probability of the text's pronunciation (the lexicon's phonemes) given the
        utterance's phoneme log-probs: every alignment of those phonemes (hotwords/ctc.py)
    B   the probability of the head's best path (the most likely label per frame): its own reading
    n   the text's phonemes, so the figure is a per-phoneme log-likelihood ratio whatever the length
        (measured on the joe and gcin dev voices against dividing by max(text, greedy reading) phonemes
        and by frames: area under the wrong/right curve 0.888 against 0.872 and 0.840)
    A text the head heard as it reads scores near 1 (F sums many alignments and can pass B: clipped);
    each phoneme the head heard otherwise costs it several nats, so the scale is steep: a model that
    reads unseen voices poorly gets a threshold of a few hundredths (the bundle's manifest says which).
decoder confidence, in [0, 1]: the probability the decoder gave its least likely token of the text
    (greedy, so each token was its first choice): low where it guessed between words.
language check: the share of Mandarin phonemes (pinyin, lower case) in the text's pronunciation and
    in the greedy reading differ by at most LANGUAGE_MARGIN (English text for Mandarin sounds fails).
A final is confident when the language check holds and acoustic x decoder confidence is above the
threshold (chosen on held-out voices, never on a test set: the bundle's manifest names it;
DEFAULT_THRESHOLD otherwise). Threshold 0 flags only a text that cannot fit in the frames; 1 flags
every final. Why the product: the two see different failures (the head: sounds it did not hear; the
decoder: words it had to guess among), and on the demo model's dev voices it flagged more wrong finals
within 5% of the right ones than either alone (70.4% against acoustic 69.0%, decoder 45.3%; on the
test voices 82.2% / 78.7% / 43.1%: MODEL_CARD.md "Confidence"). A model that hears unseen voices
better leans more on the decoder: on the third v2 run (recipes/demo/README.md) the decoder alone
flagged 38.2% of all test sets' wrong finals, the acoustic score 9.6%, the product 13.1%.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from nim4_edge.runtime.hotwords import Lexicon
from nim4_edge.runtime.hotwords.ctc import ctc_log_likelihood
from nim4_edge.runtime.phonemes import BLANK, UNKNOWN

DEFAULT_THRESHOLD = 0.01259  # the demo model's, chosen on its held-out dev voices (MODEL_CARD.md "Confidence")
LANGUAGE_MARGIN = 0.5


@dataclass(frozen=True)
class Judgement:
    acoustic_confidence: float | None  # None: no text, or no pronunciation of it
    language_match: bool
    confident: bool


def mandarin_share(symbols: list[str]) -> float | None:
    """Share of pinyin symbols among the phonemes (ARPAbet is upper case); None without any."""
    spoken = [s for s in symbols if s not in (BLANK, UNKNOWN)]
    if not spoken:
        return None
    return sum(s[0].islower() for s in spoken) / len(spoken)


def acoustic_confidence(log_probs: np.ndarray, labels: list[int], blank: int) -> float:
    """exp of the per-phoneme log-ratio of the text's CTC forward score to the best path's score.
    log_probs (T, P); labels: the text's phoneme ids."""
    if not labels or not len(log_probs):
        return 0.0
    forward = ctc_log_likelihood(log_probs, labels, blank)
    if not math.isfinite(forward):
        return 0.0  # the pronunciation does not fit in the frames
    best = float(log_probs.max(axis=1).astype(np.float64).sum())
    return min(1.0, math.exp((forward - best) / len(labels)))


def decoder_confidence(token_logprobs: list[float]) -> float | None:
    """The probability of the least likely token the decoder wrote (None: it wrote none)."""
    return math.exp(min(token_logprobs)) if token_logprobs else None


def combined_confidence(acoustic: float | None, decoder: float | None) -> float | None:
    """acoustic x decoder confidence, what the threshold is compared with (None without an acoustic
    score; a decoder figure not known counts as 1)."""
    return None if acoustic is None else acoustic * (1.0 if decoder is None else decoder)


def judge(text: str, lexicon: Lexicon, heard_ids: list[int], log_probs: np.ndarray, blank: int,
          threshold: float, decoder: float | None = None) -> Judgement:
    """text: the final's text; heard_ids: the greedy CTC reading; log_probs (T, P) of the utterance;
    decoder: its decoder confidence (None: not known, counts as 1)."""
    heard = [lexicon.inventory.symbols[i] for i in heard_ids]
    if not text.strip():
        return Judgement(None, True, True)  # nothing to act on
    said = [p for _, _, phonemes in lexicon.words(text) for p in phonemes]
    if not said:
        return Judgement(None, True, False)  # text with no sound in the inventory
    score = acoustic_confidence(log_probs, lexicon.ids(said), blank)
    text_share, heard_share = mandarin_share(said), mandarin_share(heard)
    match = heard_share is None or abs(text_share - heard_share) <= LANGUAGE_MARGIN
    return Judgement(score, match, match and combined_confidence(score, decoder) > threshold)
