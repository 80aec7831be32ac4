"""Hint respelling: only spans that sound exactly like a hint are rewritten."""

from __future__ import annotations

from nim4_edge.runtime.lexicon import Lexicon
from nim4_edge.runtime.respell import respell

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
