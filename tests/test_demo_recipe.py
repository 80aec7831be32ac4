"""The demo corpus's transcripts: homophone groups really are homophones, test entities are unseen."""

from __future__ import annotations

import pytest

from nim4_edge.recipes.demo.text import (EN_FIRST_GROUPS, ZH_GROUPS, common_form, make_utterances,
                                         similar_entities, reserved_for_test, zh_number)
from nim4_edge.runtime.lexicon import Lexicon, split_syllable


@pytest.fixture(scope="module")
def lexicon():
    return Lexicon()


def test_mandarin_groups_share_one_reading(lexicon):
    for syllable, chars in ZH_GROUPS.items():
        for ch in chars:
            assert lexicon.phonemes(ch) == split_syllable(syllable), (syllable, ch)


def test_english_spellings_share_one_pronunciation(lexicon):
    for group in EN_FIRST_GROUPS:
        prons = {tuple(lexicon.phonemes(name)) for name in group}
        assert len(prons) == 1, group


def test_test_entities_never_occur_in_training():
    train = make_utterances(2000, "zh", "train", 0) + make_utterances(2000, "en", "train", 0)
    seen = {u.entity for u in train if u.entity}
    assert not any(reserved_for_test(e) for e in seen)
    test = make_utterances(300, "zh", "test", 0, seen) + make_utterances(300, "en", "test", 0, seen)
    entities = [u for u in test if u.entity]
    assert entities and not {u.entity for u in entities} & seen
    hard = [u for u in entities if "homophone" in u.tags]
    assert len(hard) > len(entities) // 4
    # a homophone entity sounds like its common form but is written differently
    for u in hard:
        assert common_form(u.entity, u.language) != u.entity


def test_distractors_differ_from_the_entity():
    import random

    rng = random.Random(0)
    for entity, language in (("李彗欣", "zh"), ("Jon Okafor", "en"), ("彗心大道", "zh"), ("Lakeview Mall", "en")):
        distractors = similar_entities(entity, language, rng, 3)
        assert distractors and entity not in distractors


def test_chinese_numerals():
    assert [zh_number(n) for n in (0, 7, 10, 16, 20, 22, 30)] == ["零", "七", "十", "十六", "二十", "二十二", "三十"]


def test_homophone_variants_sound_the_same_and_read_differently(lexicon):
    import random

    from nim4_edge.recipes.demo.text import homophone_variant

    rng = random.Random(0)
    for entity, language in (("李彗欣", "zh"), ("Jon Okafor", "en"), ("惠新大道", "zh")):
        variant = homophone_variant(entity, language, rng)
        assert variant != entity and lexicon.phonemes(variant) == lexicon.phonemes(entity)
    assert homophone_variant("Lakeview Mall", "en", rng) is None
