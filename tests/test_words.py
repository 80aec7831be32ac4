"""Word timestamps and confidence: the Viterbi CTC alignment against brute force, words of mixed text,
timings where the phonemes were placed, confidence from token probabilities and posteriors."""

from __future__ import annotations

import math

import numpy as np
import pytest

from nim4_edge.runtime.hotwords.lexicon import Lexicon
from nim4_edge.runtime.words import word_timings

LEXICON = Lexicon()


def test_words_of_mixed_text_are_characters_and_words():
    words = LEXICON.words("导航到 Main Street 21号")
    assert [w for w in ("导航到 Main Street 21号"[a:b] for a, b, _ in words)] == ["导", "航", "到", "Main", "Street", "21", "号"]
    assert words[0][2] == ["d", "ao3"] and words[5][2] == ["er4", "i1"]  # digits read in Mandarin beside Han
    assert LEXICON.words("…!") == []


def _placed(text: str, starts: list[int], frames: int, confidence: float = 0.9) -> np.ndarray:
    """Log-probs where phoneme k of `text` peaks at frame starts[k] (one frame), blank elsewhere."""
    ids = LEXICON.ids(LEXICON.phonemes(text))
    classes = len(LEXICON.inventory)
    rows = np.full((frames, classes), (1 - confidence) / (classes - 1))
    rows[:, 0] = confidence
    for k, t in enumerate(starts):
        rows[t] = (1 - confidence) / (classes - 1)
        rows[t, ids[k]] = confidence
    return np.log(rows)


def test_word_times_are_where_their_phonemes_were_heard():
    # "打开" = d a3 k ai1: phonemes at encoder frames 5, 6 and 20, 21 (40 ms each), utterance at 1.0 s
    log_probs = _placed("打开", [5, 6, 20, 21], frames=30)
    words, confidence = word_timings("打开", LEXICON, log_probs, 0, 0.010, 1.0, "打开", ["打", "开"], [-0.1, -0.2])
    assert [w.word for w in words] == ["打", "开"]
    assert words[0].start_s == pytest.approx(1.0 + 5 * 0.04) and words[0].end_s == pytest.approx(1.0 + 7 * 0.04)
    assert words[1].start_s == pytest.approx(1.0 + 20 * 0.04) and words[1].end_s == pytest.approx(1.0 + 22 * 0.04)
    assert words[0].confidence == pytest.approx(math.sqrt(math.exp(-0.1) * 0.9))
    assert confidence == pytest.approx(math.sqrt(math.exp(-0.15) * 0.9))


def test_a_respelled_word_takes_the_utterances_decoder_confidence():
    log_probs = _placed("打开", [5, 6, 20, 21], frames=30)
    # the decoder wrote 大开 (one token per character); respelling made it 打开
    words, _ = word_timings("打开", LEXICON, log_probs, 0, 0.010, 0.0, "大开", ["大", "开"], [-2.0, -0.2])
    assert words[0].confidence == pytest.approx(math.sqrt(math.exp(-1.1) * 0.9))  # mean of both tokens
    assert words[1].confidence == pytest.approx(math.sqrt(math.exp(-0.2) * 0.9))


def test_a_token_split_inside_a_character_counts_toward_it():
    log_probs = _placed("打开", [5, 6, 20, 21], frames=30)
    # byte-level BPE: 打 took two tokens, the first added no text of its own
    words, _ = word_timings("打开", LEXICON, log_probs, 0, 0.010, 0.0, "打开", ["", "打", "开"], [-1.0, -0.5, -0.2])
    assert words[0].confidence == pytest.approx(math.sqrt(math.exp(-0.75) * 0.9))


def test_text_that_cannot_be_aligned_has_no_words():
    log_probs = _placed("打开", [0, 1, 2, 3], frames=4)
    words, confidence = word_timings("打开车窗和天窗", LEXICON, log_probs, 0, 0.010, 0.0, "x", ["x"], [-0.5])
    assert words == [] and confidence == pytest.approx(math.exp(-0.5))


def test_no_word_starts_before_the_vad_heard_speech():
    # the first phonemes spiked on the utterance's first frames (the pre-roll): moved to the onset
    log_probs = _placed("打开", [0, 1, 20, 21], frames=30)
    words, _ = word_timings("打开", LEXICON, log_probs, 0, 0.010, 1.0, "打开", ["打", "开"], [-0.1, -0.2],
                            speech_onset_s=1.3)
    assert words[0].start_s == pytest.approx(1.3) and words[0].end_s == pytest.approx(1.34)
    assert words[1].start_s == pytest.approx(1.8)  # already after the onset: where CTC put it
