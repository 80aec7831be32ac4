"""Hint respelling: only spans that sound exactly like a hint are rewritten."""

from __future__ import annotations

import itertools

import numpy as np

from nim4_edge.runtime.hotwords.ctc import ctc_align, ctc_log_likelihood
from nim4_edge.runtime.hotwords.lexicon import Lexicon
from nim4_edge.runtime.hotwords.respell import respell, respell_by_sound

LEXICON = Lexicon()


def test_a_homophone_span_takes_the_hints_spelling():
    assert respell("导航到惠新大道", ["彗心大道"], LEXICON) == "导航到彗心大道"
    assert respell("call John Okafor on mobile", ["Jon Okafor"], LEXICON) == "call Jon Okafor on mobile"


def test_hints_that_sound_different_change_nothing():
    assert respell("导航到惠新大道", ["惠明大道", "彗心商场"], LEXICON) == "导航到惠新大道"
    assert respell("call John Okafor", ["Sean Okafor", "Jon Novak"], LEXICON) == "call John Okafor"


def test_a_tone_difference_is_a_different_sound():
    assert respell("打电话给王辉", ["王惠"], LEXICON) == "打电话给王辉"  # hui1 vs hui4


def test_text_already_holding_a_homophone_hint_is_left_alone():
    # both spellings are hotwords: the decoder chose one of them, the pass does not overrule it
    assert respell("导航到惠新大道", ["彗心大道", "惠新大道"], LEXICON) == "导航到惠新大道"
    assert respell("", ["彗心大道"], LEXICON) == ""
    assert respell("打开车窗", [], LEXICON) == "打开车窗"


# --- respelling by sound: CTC rescoring of the hint replacement -------------------------------------


def _collapse(path, blank):
    out, prev = [], blank
    for label in path:
        if label != prev and label != blank:
            out.append(label)
        prev = label
    return out


def test_ctc_log_likelihood_equals_the_sum_over_all_alignments():
    rng = np.random.default_rng(0)
    frames, classes = 5, 3
    logits = rng.normal(size=(frames, classes)) * 2
    log_probs = logits - np.logaddexp.reduce(logits, axis=1, keepdims=True)
    for labels in ([1], [1, 2], [1, 1], [2, 1, 2], []):
        total = -np.inf
        for path in itertools.product(range(classes), repeat=frames):  # every frame labelling
            if _collapse(path, 0) == labels:
                total = np.logaddexp(total, sum(log_probs[t, c] for t, c in enumerate(path)))
        assert abs(ctc_log_likelihood(log_probs, labels, blank=0) - total) < 1e-9, labels
    assert ctc_log_likelihood(log_probs[:2], [1, 1, 1], blank=0) == -np.inf  # cannot fit in 2 frames


def test_the_alignment_is_the_best_single_path():
    rng = np.random.default_rng(1)
    frames, classes = 6, 3
    logits = rng.normal(size=(frames, classes)) * 2
    log_probs = logits - np.logaddexp.reduce(logits, axis=1, keepdims=True)
    for labels in ([1], [1, 2], [1, 1], [2, 1, 2]):
        best, best_path = -np.inf, None
        for path in itertools.product(range(classes), repeat=frames):
            if _collapse(path, 0) == labels:
                score = sum(log_probs[t, c] for t, c in enumerate(path))
                if score > best:
                    best, best_path = score, path
        spans = ctc_align(log_probs, labels, blank=0)
        # the frames each label holds on the best path: runs of that label, in order
        expected, k, prev = [], -1, 0
        for t, c in enumerate(best_path):
            if c != 0 and (c != prev or t == 0):
                k += 1
                expected.append([t, t])
            elif c != 0:
                expected[k][1] = t
            prev = c
        assert [(a, b) for a, b, _ in spans] == [tuple(e) for e in expected], labels
    assert ctc_align(log_probs[:2], [1, 1, 1], blank=0) is None  # cannot fit


def _posteriors_of(text: str, frames_per_phoneme: int = 3, confidence: float = 0.9) -> np.ndarray:
    """Phoneme log-probs as a well-trained CTC head would give for `text`: each phoneme peaks for a
    few frames, blanks between."""
    ids = LEXICON.ids(LEXICON.phonemes(text))
    classes = len(LEXICON.inventory)
    rows = []
    for i in ids + [0]:
        for label in [i] * frames_per_phoneme + [0]:
            row = np.full(classes, (1 - confidence) / (classes - 1))
            row[label] = confidence
            rows.append(np.log(row))
    return np.array(rows)


def test_a_half_copied_hint_is_completed_when_the_audio_says_so():
    heard = _posteriors_of("去锐平火车站")
    assert respell_by_sound("去锐锐火车站", ["锐平火车站"], LEXICON, heard, blank=0) == "去锐平火车站"
    heard = _posteriors_of("dial Lindsey Whitlock")
    assert respell_by_sound("dial Cyndi Whitlock", ["Lindsey Whitlock"], LEXICON, heard, blank=0) == "dial Lindsey Whitlock"


def test_a_hint_the_audio_does_not_support_changes_nothing():
    heard = _posteriors_of("去锐锐火车站")  # the audio really says 锐锐
    assert respell_by_sound("去锐锐火车站", ["锐平火车站"], LEXICON, heard, blank=0) == "去锐锐火车站"
    heard = _posteriors_of("dial Cyndi Whitlock")
    assert respell_by_sound("dial Cyndi Whitlock", ["Lindsey Whitlock"], LEXICON, heard, blank=0) == "dial Cyndi Whitlock"


def test_only_spans_sharing_a_unit_with_the_hint_are_tried():
    heard = _posteriors_of("去锐平火车站")
    # 睿萍 (rui4 ping2) is what the audio says at 锐锐, but it shares no character with the text: a
    # span the decoder wrote with none of the hint in it is not the hint's misheard copy
    assert respell_by_sound("去锐锐火车站", ["睿萍"], LEXICON, heard, blank=0) == "去锐锐火车站"
    assert respell_by_sound("去锐锐火车站", ["锐萍"], LEXICON, heard, blank=0) == "去锐萍火车站"  # shares 锐
    assert respell_by_sound("", ["锐平火车站"], LEXICON, heard, blank=0) == ""
    assert respell_by_sound("去锐锐火车站", ["锐平火车站"], LEXICON, heard[:0], blank=0) == "去锐锐火车站"
