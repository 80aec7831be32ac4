"""The demo corpus's transcripts: homophone groups really are homophones, test entities are unseen."""

from __future__ import annotations

import pytest

from nim4_edge.recipes.demo.text import (
    EN_FIRST_GROUPS,
    ZH_GROUPS,
    common_form,
    make_utterances,
    reserved_for_test,
    similar_entities,
    zh_number,
)
from nim4_edge.runtime.hotwords.lexicon import Lexicon, split_syllable


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


def test_encoder_cache_holds_the_frozen_encoders_output(tmp_path):
    pytest.importorskip("torch", reason="training needs the export extra (torch)")
    import json
    import random

    import numpy as np
    import torch

    from nim4_edge.export.config import preset
    from nim4_edge.export.model import Nim4AcousticModel
    from nim4_edge.recipes.demo.encoded import build_cache
    from nim4_edge.recipes.demo.train import Corpus
    from nim4_edge.runtime.features import Cmvn
    from nim4_edge.runtime.phonemes import PhonemeInventory

    torch.manual_seed(0)
    model = Nim4AcousticModel(preset("tiny", len(PhonemeInventory.default())).model).eval()
    lengths = [90, 40, 130, 70]
    features = np.random.default_rng(0).standard_normal((sum(lengths), 80)).astype(np.float16)
    starts = np.concatenate([[0], np.cumsum(lengths)[:-1]])
    rows = [{"frames": [int(s), n]} for s, n in zip(starts, lengths)]
    corpus = Corpus(features, rows, Cmvn(mean=(0.0,) * 80, inv_std=(1.0,) * 80))
    directory = tmp_path / "encoded"
    cache = build_cache(directory, corpus, model, {"steps": 1}, 16, 4, versions=2, max_frames=200)

    encoded, enc_lengths = cache.batch([2, 1], random.Random(0), augment=False)
    for k, i in enumerate([2, 1]):
        start, n = rows[i]["frames"]
        with torch.no_grad():
            want, want_len = model.encoder(torch.from_numpy(features[start : start + n].astype(np.float32))[None],
                                           torch.tensor([n]), 16, 4)
        assert int(enc_lengths[k]) == int(want_len[0])
        np.testing.assert_allclose(encoded[k, : int(want_len[0])].numpy(), want[0].numpy(), atol=2e-2, rtol=1e-2)
    assert not np.array_equal(np.load(directory / "encoded-0.npy"), np.load(directory / "encoded-1.npy"))  # SpecAugment

    meta = (directory / "meta.json").stat().st_mtime_ns
    build_cache(directory, corpus, model, {"steps": 1}, 16, 4, versions=2)  # same encoder: reused
    assert (directory / "meta.json").stat().st_mtime_ns == meta
    build_cache(directory, corpus, model, {"steps": 2}, 16, 4, versions=2)  # another encoder: rebuilt
    assert json.loads((directory / "meta.json").read_text())["source"] == {"steps": 2}


def test_head_stage_trains_the_phoneme_head_alone(tmp_path):
    """`train head`: CTC on the cached encoder outputs moves the phoneme head and nothing else (the
    adaptor, hence the decoder's input, stays what `context` trained)."""
    pytest.importorskip("torch", reason="training needs the export extra (torch)")
    import random
    from types import SimpleNamespace

    import numpy as np
    import torch

    from nim4_edge.export.config import preset
    from nim4_edge.export.model import Nim4AcousticModel
    from nim4_edge.recipes.demo.encoded import build_cache
    from nim4_edge.recipes.demo.train import Corpus, Trainer
    from nim4_edge.runtime.features import Cmvn
    from nim4_edge.runtime.phonemes import PhonemeInventory

    torch.manual_seed(0)
    model = Nim4AcousticModel(preset("tiny", len(PhonemeInventory.default())).model)
    lengths = [90, 40, 130, 70]
    features = np.random.default_rng(0).standard_normal((sum(lengths), 80)).astype(np.float16)
    starts = np.concatenate([[0], np.cumsum(lengths)[:-1]])
    labels = [[5, 9, 12], [7], [3, 3, 8, 20, 11], [14, 2]]
    rows = [{"frames": [int(s), n], "phonemes": p} for s, n, p in zip(starts, lengths, labels)]
    corpus = Corpus(features, rows, Cmvn(mean=(0.0,) * 80, inv_std=(1.0,) * 80))
    cache = build_cache(tmp_path / "encoded", corpus, model.eval(), {"steps": 1}, 16, 4, versions=2, max_frames=200)

    trainer = Trainer.__new__(Trainer)  # the stage's own set-up and loss, without a corpus on disk
    trainer.args, trainer.rng, trainer.cache, trainer.corpus = SimpleNamespace(stage="head"), random.Random(0), cache, corpus
    params = trainer.trainable(model, None)
    assert {id(p) for p in params} == {id(p) for p in model.phoneme_head.parameters()}
    before = {k: v.clone() for k, v in model.state_dict().items()}
    optimizer = torch.optim.AdamW(params, lr=1e-2)
    losses = []
    for _ in range(40):
        loss, _ = trainer.loss(model, None, None, [0, 1, 2, 3], None)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
    assert losses[-1] < 0.5 * losses[0]
    changed = {k for k, v in model.state_dict().items() if not torch.equal(before[k], v)}
    assert changed and all(k.startswith("phoneme_head.") for k in changed)


def test_gcin_folders_follow_pypinyins_bopomofo():
    from pypinyin import Style, lazy_pinyin

    from nim4_edge.recipes.demo.speakers import gcin_folder

    folders = [gcin_folder(b) for b in lazy_pinyin("中国的好吧", style=Style.BOPOMOFO)]
    assert folders == ["ㄓㄨㄥ", "ㄍㄨㄛ2", "ㄉㄜ1", "ㄏㄠ3", "ㄅㄚ1"]  # tone 1 bare, the neutral tone as 1


def test_version_2_voices_change_training_clips_only():
    from collections import Counter

    from nim4_edge.recipes.demo.corpus import FSDD_DIR, plan

    if not FSDD_DIR.is_dir():
        pytest.skip(f"the FSDD recordings are not at {FSDD_DIR}")
    train, test = plan(300, 300, 50, 50, 10, 5, 5, seed=0)
    train2, test2 = plan(300, 300, 50, 50, 10, 5, 5, seed=0, voices_v2=True)
    assert test2 == test
    # the same texts, other voices; gcin speaker 5's clips come on top of the Mandarin espeak ones
    speech = [s for s in train2 if s.source != "noise"]
    assert [s.utterance for s in speech[:len(train) - 10]] == [s.utterance for s in train[:len(train) - 10]]
    gcin = [s for s in train2 if s.source == "gcin"]
    zh = [s for s in train2 if s.source == "espeak" and s.utterance.language == "zh"]
    assert len(zh) == 300 and {s.utterance for s in gcin} <= {s.utterance for s in zh}
    assert len({s.index for s in train2}) == len(train2)
    sources = Counter(s.source for s in train2)
    assert 110 < sources["gcin"] < 190 and 40 < sources["festival"] < 120, sources  # ~50% of 300 zh / ~25% of 300 en
    assert not any(s.augment for s in train) and sum(s.augment for s in train2) > 0.9 * (len(train2) - 10)
    assert not any(s.voice.startswith("gcin:3") for s in train2)  # speaker 3 is held out


def test_augmentations_keep_the_speech_and_change_the_sound():
    import numpy as np

    from nim4_edge.recipes.demo.speakers import band_limited, speed_perturbed

    rng = np.random.default_rng(0)
    audio = rng.standard_normal(16000).astype(np.float32)
    assert abs(len(speed_perturbed(audio, 1.1)) - 16000 / 1.1) < 5
    narrow = band_limited(audio)
    spectrum = np.abs(np.fft.rfft(narrow)) ** 2
    assert len(narrow) == 16000 and spectrum[4200:].sum() < 0.01 * spectrum[:3800].sum()  # nothing above 4 kHz
    pytest.importorskip("pyroomacoustics", reason="the voices extra simulates reverberation")
    from nim4_edge.recipes.demo.speakers import reverberant

    wet = reverberant(audio, rng)
    assert len(wet) == len(audio) and not np.allclose(wet, audio)


def test_another_speaker_gets_the_drawn_pitch():
    import numpy as np

    pytest.importorskip("parselmouth", reason="the voices extra changes speakers with Praat")
    from nim4_edge.recipes.demo.speakers import pitch_median_hz, voice_changed

    def f0(audio):  # the autocorrelation peak between 70 and 400 Hz, median over 40 ms frames
        peaks = []
        for start in range(0, len(audio) - 640, 320):
            x = audio[start : start + 640] - audio[start : start + 640].mean()
            c = np.correlate(x, x, "full")[639:]
            peaks.append(16000 / (40 + int(np.argmax(c[40:229]))))
        return float(np.median(peaks))

    t = np.arange(16000) / 16000  # a 1 s vowel-like sound at 220 Hz: harmonics under a formant-ish tilt
    vowel = sum(np.sin(2 * np.pi * 220 * k * t) / k for k in range(1, 20)).astype(np.float32) * 0.1
    assert abs(f0(vowel) - 220) < 10 and pitch_median_hz(0) == 85 and abs(pitch_median_hz(1) - 260) < 1e-9
    for seed in range(3):
        want = pitch_median_hz(np.random.default_rng(seed).random())  # voice_changed's first draw
        changed = voice_changed(vowel, np.random.default_rng(seed))
        assert abs(f0(changed) / want - 1) < 0.1, (seed, want, f0(changed))
