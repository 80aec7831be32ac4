"""Build the demo corpus: synthesize transcripts (espeak-ng), add FSDD, augment, compute features.

    python -m nim4_edge.recipes.demo.corpus --out work/demo/corpus [--en 4500 --zh 4500]

Writes (each file atomically; an existing complete corpus is kept unless --overwrite):
    train/features.npy   float16 (frames, 80): raw log-mel fbank of every training clip, concatenated
    train/index.jsonl    one line per clip: text, language, domain, entity, tags, frame offset/count,
                         phoneme ids (CTC labels from the lexicon)
    cmvn.json            global mean / inv_std over the training frames
    test/wav/*.wav       16 kHz 16-bit test clips
    test/test.jsonl      evaluation manifest: audio, text, language, hotwords, entity, tags

Speech: espeak-ng (English accents x voice variants; Mandarin through `cmn-latn-pinyin` fed pinyin
with tone numbers, docs/FACTS.md) and the FSDD recordings (train takes 5-49 for training, takes 0-4 for
test). Test voices, speeds and pitches are values training never used; test entities never occur
in training (recipes/demo/text.py).
Augmentation (as the NIM4-ASR paper): 0-1 s of silence padding, car-like noise (recipes/noise.py) at
SNR ~ N(10, 5) dB on 20% of clips, noise-only clips with an empty transcript; every clip gets a faint
noise floor (no digital silence, as from a real microphone) and a random level.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import subprocess
import sys
import tempfile
import wave
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
import pypinyin
from pypinyin import Style
from tqdm import tqdm

from nim4_edge.recipes.demo.speakers import FESTIVAL_VOICES, MissingSyllable, augment, festival_speech, gcin_speech
from nim4_edge.recipes.demo.text import Utterance, make_utterances
from nim4_edge.recipes.noise import car_noise, mix_at_snr, other_noise
from nim4_edge.recipes.vad_data import FSDD_DIR, fsdd_recordings
from nim4_edge.runtime.atomic import atomic_directory
from nim4_edge.runtime.audio import load_audio
from nim4_edge.runtime.features import SAMPLE_RATE_HZ, Cmvn, FbankOptions, compute_fbank
from nim4_edge.runtime.hotwords.lexicon import Lexicon
from nim4_edge.runtime.phonemes import PhonemeInventory

log = logging.getLogger(__name__)

RATE = SAMPLE_RATE_HZ

# espeak-ng voices: language voice + variant. Test combinations never occur in training.
EN_TRAIN_VOICES = tuple(f"{a}{v}" for a in ("en-us", "en-gb", "en-gb-x-rp", "en-029", "en-gb-x-gbclan")
                        for v in ("", "+m1", "+m2", "+m3", "+m4", "+f1", "+f2", "+f3"))
EN_TEST_VOICES = ("en-us+f4", "en-gb+m6", "en-gb-x-rp+f5", "en-029+m7", "en-gb-scotland+m1")
ZH_TRAIN_VOICES = tuple(f"cmn-latn-pinyin{v}" for v in ("", "+m1", "+m2", "+m3", "+f1", "+f2", "+f3"))
ZH_TEST_VOICES = ("cmn-latn-pinyin+m6", "cmn-latn-pinyin+f4", "cmn-latn-pinyin+f5")
TRAIN_SPEEDS, TEST_SPEEDS = (130, 145, 160, 175, 190), (138, 168, 182)  # words per minute
TRAIN_PITCHES, TEST_PITCHES = (30, 40, 50, 60, 70), (35, 55, 65)

# Version 2 (issue 16): more voices and augmentation for training only, drawn from random streams of
# their own so that the test set (and every earlier draw) stays exactly as it was.
EXTRA_EN_VARIANTS = ("+Andy", "+Annie", "+Denis", "+Gene", "+Lee", "+linda", "+max", "+Michael", "+paul",
                     "+steph", "+travis", "+victor", "+grandma", "+grandpa", "+klatt2", "+klatt4")
EXTRA_ZH_VARIANTS = ("+Andy", "+Annie", "+Denis", "+linda", "+max", "+steph", "+travis", "+klatt2")
# Mandarin training commands also spoken by gcin speaker 5 (real syllables), as an extra clip: the espeak
# one stays. v2's first two runs replaced it (30%, then 50%), and the test set's espeak Mandarin lost
# 1.2 and 3.4 points of CER (recipes/demo/README.md)
GCIN_SHARE = 0.5
FESTIVAL_SHARE = 0.25  # English training commands read by a festival voice
EXTRA_VARIANT_SHARE = 0.3  # the rest: an espeak voice with one of the extra variants
FESTIVAL_STRETCH = (0.85, 1.0, 1.15)
SPEED_SHARE, REVERB_SHARE, BAND_SHARE = 0.3, 0.25, 0.1  # training clips (FSDD too)
# another speaker made from the clip's (speakers.voice_changed; not in v2's first run): most gcin clips,
# since gcin 5 is the one real Mandarin voice, and some of every other source
VOICE_SHARE, GCIN_VOICE_SHARE = 0.35, 0.8

NOISY_SHARE = 0.2
# clip peak level, dB; augmented (v2 training) clips reach quieter microphones (the raw FSDD takes of
# yweweler peak at -23 dB median and are the worst read); test clips are never augmented
LEVEL_DB, AUGMENTED_LEVEL_DB = (-20, -1), (-35, -1)
SNR_MEAN_DB, SNR_STD_DB = 10.0, 5.0


@dataclass(frozen=True)
class ClipSpec:
    """Everything needed to render one clip, picklable for worker processes."""

    index: int
    split: str
    utterance: Utterance | None  # None: noise-only / silence-only
    source: str  # "espeak", "fsdd", "noise", "silence"
    voice: str = ""
    speed: int = 0
    pitch: int = 0
    fsdd_path: str = ""
    seed: int = 0
    augment: bool = False  # speed / reverberation / telephone band (recipes/demo/speakers.py)


def spoken_form(utterance: Utterance) -> str:
    """What espeak-ng reads: the English text, or pinyin with tone numbers for Mandarin."""
    if utterance.language != "zh":
        return utterance.text

    return " ".join(pypinyin.lazy_pinyin(utterance.text, style=Style.TONE3, neutral_tone_with_five=True))


def espeak(text: str, voice: str, speed: int, pitch: int, ssml: bool = False) -> np.ndarray:
    """`ssml`: the text is SSML (e.g. `<break time="400ms"/>` for a pause)."""
    with tempfile.NamedTemporaryFile(suffix=".wav") as f:
        subprocess.run(["espeak-ng", *(["-m"] if ssml else []), "-v", voice, "-s", str(speed), "-p", str(pitch),
                        "-w", f.name, text], check=True, capture_output=True)
        return load_audio(Path(f.name), RATE)


def render(spec: ClipSpec) -> np.ndarray:
    """The clip's audio: speech (or nothing) + padding + optional noise + noise floor + level."""
    return render_placed(spec)[0]


def render_placed(spec: ClipSpec, speech: np.ndarray | None = None, extra_tail_s: float = 0.0) -> tuple[np.ndarray, int]:
    """render(), and the sample where the speech starts. `speech`: this audio instead of the spec's
    synthesis (the end-of-turn test set's paused variants); `extra_tail_s`: more trailing padding."""
    rng = np.random.default_rng(spec.seed)
    if speech is None and spec.source == "gcin":
        try:
            speech = gcin_speech(spec.utterance.text, spec.voice.split(":")[1], np.random.default_rng(spec.seed + 1))
        except MissingSyllable:  # a syllable speaker 5 never recorded: espeak reads this one
            speech = espeak(spoken_form(spec.utterance), ZH_TRAIN_VOICES[spec.seed % len(ZH_TRAIN_VOICES)], 160, 50)
    elif speech is None and spec.source == "festival":
        speech = festival_speech(spec.utterance.text, spec.voice.split(":")[1], spec.speed / 100)
    elif speech is None and spec.source == "espeak":
        speech = espeak(spoken_form(spec.utterance), spec.voice, spec.speed, spec.pitch)
    elif speech is None and spec.source == "fsdd":
        speech = load_audio(Path(spec.fsdd_path), RATE)
    elif speech is None:
        speech = np.zeros(int(rng.uniform(1.0, 3.0) * RATE), np.float32)
    if spec.augment:
        voice = GCIN_VOICE_SHARE if spec.source == "gcin" else VOICE_SHARE
        speech = augment(speech, np.random.default_rng(spec.seed + 2), voice, SPEED_SHARE, REVERB_SHARE, BAND_SHARE)
    speech = speech / max(1e-6, float(np.abs(speech).max()))
    pad = rng.uniform(0.0, 1.0)
    head = rng.uniform(0.0, pad)
    if spec.split == "test":  # room for the runtime's VAD pre-roll and end-of-speech silence
        head, pad = head + 0.3, pad + 0.9
    pad += extra_tail_s
    n_head = int(head * RATE)
    audio = np.zeros(len(speech) + int(pad * RATE), np.float32)
    audio[n_head : n_head + len(speech)] = speech
    mask = np.zeros(len(audio), bool)
    mask[n_head : n_head + len(speech)] = True
    seconds = len(audio) / RATE + 0.1
    if spec.source == "noise":
        audio = (car_noise if rng.random() < 0.7 else other_noise)(seconds, RATE, rng)[: len(audio)]
    elif spec.source != "silence" and rng.random() < NOISY_SHARE:
        noise = (car_noise if rng.random() < 0.75 else other_noise)(seconds, RATE, rng)[: len(audio)]
        audio = mix_at_snr(audio, noise, float(rng.normal(SNR_MEAN_DB, SNR_STD_DB)), mask)
    floor_db = rng.uniform(-75, -55)
    audio = audio + other_noise(seconds, RATE, rng)[: len(audio)] * 10 ** (floor_db / 20)
    level_db = rng.uniform(*(AUGMENTED_LEVEL_DB if spec.augment else LEVEL_DB)) if spec.source != "silence" else 0.0
    peak = float(np.abs(audio).max()) if spec.source != "silence" else 1.0
    return (audio * (10 ** (level_db / 20) / max(peak, 1e-6))).astype(np.float32), n_head


def _work(spec: ClipSpec) -> tuple[int, np.ndarray | None, np.ndarray]:
    """Worker: training clips come back as float16 features, test clips as int16 audio."""
    audio = render(spec)
    pcm = (np.clip(audio, -1, 1) * 32767).astype(np.int16)
    if spec.split == "test":
        return spec.index, None, pcm
    feats = compute_fbank(pcm.astype(np.float32) / 32767, FbankOptions())  # the same 16-bit audio as test
    return spec.index, feats.astype(np.float16), np.zeros(0, np.int16)


def plan(en: int, zh: int, test_en: int, test_zh: int, noise_train: int, noise_test: int, silence_test: int,
         seed: int, voices_v2: bool = False) -> tuple[list[ClipSpec], list[ClipSpec]]:
    """Training and test clips. voices_v2: training clips also come from gcin speaker 5, festival and
    extra espeak variants, and are augmented (the test clips are the same either way)."""
    rng = np.random.default_rng(seed)
    train_utts = make_utterances(en, "en", "train", seed) + make_utterances(zh, "zh", "train", seed)
    seen = {u.entity for u in train_utts if u.entity}
    test_utts = make_utterances(test_en, "en", "test", seed, seen) + make_utterances(test_zh, "zh", "test", seed, seen)

    def espeak_spec(i, split, u):
        if u.language == "zh":
            voices = ZH_TRAIN_VOICES if split == "train" else ZH_TEST_VOICES
        else:
            voices = EN_TRAIN_VOICES if split == "train" else EN_TEST_VOICES
        speeds, pitches = (TRAIN_SPEEDS, TRAIN_PITCHES) if split == "train" else (TEST_SPEEDS, TEST_PITCHES)
        return ClipSpec(i, split, u, "espeak", voices[rng.integers(len(voices))], int(rng.choice(speeds)),
                        int(rng.choice(pitches)), seed=int(rng.integers(2**31)))

    def digit(path: Path) -> Utterance:
        return Utterance(path.stem.split("_")[0], "en", "digit", "", ("en", "digit", "fsdd", path.stem.split("_")[1]))

    train = [espeak_spec(i, "train", u) for i, u in enumerate(train_utts)]
    for copy in range(2):  # real speech is scarce: each FSDD train take twice, augmented differently
        for p in fsdd_recordings("train"):
            train.append(ClipSpec(len(train), "train", digit(p), "fsdd", fsdd_path=str(p), seed=int(rng.integers(2**31))))
    if voices_v2:
        train = [_v2_spec(s, np.random.default_rng([seed, 2, s.index])) for s in train]
        extra = np.random.default_rng([seed, 3])
        for s in [s for s in train if s.source == "espeak" and s.utterance.language == "zh"]:
            if extra.random() < GCIN_SHARE:
                train.append(replace(s, index=len(train), source="gcin", voice="gcin:5", augment=True,
                                     seed=int(extra.integers(2**31))))
    for _ in range(noise_train):
        train.append(ClipSpec(len(train), "train", None, "noise", seed=int(rng.integers(2**31))))

    test = [espeak_spec(i, "test", u) for i, u in enumerate(test_utts)]
    for p in fsdd_recordings("test"):
        test.append(ClipSpec(len(test), "test", digit(p), "fsdd", fsdd_path=str(p), seed=int(rng.integers(2**31))))
    for kind, count in (("noise", noise_test), ("silence", silence_test)):
        for _ in range(count):
            test.append(ClipSpec(len(test), "test", None, kind, seed=int(rng.integers(2**31))))
    return train, test


def _v2_spec(spec: ClipSpec, rng: np.random.Generator) -> ClipSpec:
    """A training clip of version 2: maybe another voice, and augmented."""
    if spec.source == "espeak":
        u, pick = spec.utterance, rng.random()
        if u.language != "zh" and pick < FESTIVAL_SHARE:
            voice = FESTIVAL_VOICES[int(rng.integers(len(FESTIVAL_VOICES)))]
            stretch = FESTIVAL_STRETCH[int(rng.integers(len(FESTIVAL_STRETCH)))]
            return replace(spec, source="festival", voice=f"festival:{voice}", speed=int(stretch * 100), augment=True)
        # English: festival below 0.25, an extra variant below 0.8 (as in the first runs); Mandarin: a variant below 0.3
        if pick < (EXTRA_VARIANT_SHARE if u.language == "zh" else 0.8):
            variants = EXTRA_ZH_VARIANTS if u.language == "zh" else EXTRA_EN_VARIANTS
            base = spec.voice.split("+")[0]
            return replace(spec, voice=base + variants[int(rng.integers(len(variants)))], augment=True)
    return replace(spec, augment=spec.source in ("espeak", "fsdd"))


def _run(specs: list[ClipSpec], jobs: int, label: str):
    with ProcessPoolExecutor(max_workers=jobs) as pool:
        for result in tqdm(pool.map(_work, specs, chunksize=32), total=len(specs), desc=label, unit="clip",
                           file=sys.stderr, mininterval=5):
            yield result


def build(out: Path, args) -> dict:
    if not FSDD_DIR.is_dir():
        raise SystemExit(f"error: FSDD recordings not found at {FSDD_DIR}; the corpus needs ../shared/data/fsdd")
    train, test = plan(args.en, args.zh, args.test_en, args.test_zh, args.noise_train, args.noise_test,
                       args.silence_test, args.seed, voices_v2=args.voices_v2)
    inventory = PhonemeInventory.default()
    lexicon = Lexicon(inventory)
    ids = {s: i for i, s in enumerate(inventory.symbols)}
    jobs = args.jobs or os.cpu_count() or 1
    if args.test_only:
        train = []
    with atomic_directory(out, overwrite=args.overwrite) as tmp:
        (tmp / "train").mkdir()
        feats, index, offset = [], [], 0
        for i, f, _ in _run(train, jobs, "train clips"):
            spec = train[i]
            u = spec.utterance
            phonemes = [ids[p] for p in lexicon.phonemes(u.text)] if u else []
            row = (u.to_json() if u else {"text": "", "language": "", "domain": "noise", "entity": "", "tags": ["noise"]})
            row.update(frames=[offset, len(f)], phonemes=phonemes, source=spec.source, voice=spec.voice)
            index.append(row)
            feats.append(f)
            offset += len(f)
        if train:
            all_feats = np.concatenate(feats)
            np.save(tmp / "train" / "features.npy", all_feats)
            with open(tmp / "train" / "index.jsonl", "w", encoding="utf-8") as fh:
                for row in index:
                    fh.write(json.dumps(row, ensure_ascii=False) + "\n")
            cmvn = Cmvn.from_stats(all_feats[:: 7].astype(np.float32))
            (tmp / "cmvn.json").write_text(json.dumps(cmvn.to_json()) + "\n", encoding="utf-8")

        (tmp / "test" / "wav").mkdir(parents=True)
        rows = []
        for i, _, pcm in _run(test, jobs, "test clips"):
            spec = test[i]
            name = f"wav/{i:05d}.wav"
            with wave.open(str(tmp / "test" / name), "wb") as w:
                w.setnchannels(1)
                w.setsampwidth(2)
                w.setframerate(RATE)
                w.writeframes(pcm.tobytes())
            u = spec.utterance
            row = {"audio": name, "text": u.text if u else "", "language": u.language if u else "",
                   "hotwords": [u.entity] if u and u.entity else [], "entity": u.entity if u else "",
                   "tags": list(u.tags) if u else [spec.source + "-only"], "voice": spec.voice,
                   "speed": spec.speed}
            rows.append(row)
        with open(tmp / "test" / "test.jsonl", "w", encoding="utf-8") as fh:
            for row in rows:
                fh.write(json.dumps(row, ensure_ascii=False) + "\n")
    hours = offset * 0.01 / 3600
    summary = {"train_clips": len(train), "train_hours": round(hours, 2), "test_clips": len(test)}
    log.info("corpus: %s", summary)
    return summary


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m nim4_edge.recipes.demo.corpus", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out", type=Path, required=True, help="corpus directory to create")
    p.add_argument("--en", type=int, default=4500, help="English training transcripts")
    p.add_argument("--zh", type=int, default=4500, help="Mandarin training transcripts")
    p.add_argument("--test-en", type=int, default=250)
    p.add_argument("--test-zh", type=int, default=250)
    p.add_argument("--noise-train", type=int, default=300, help="noise-only training clips (empty transcript)")
    p.add_argument("--noise-test", type=int, default=60)
    p.add_argument("--silence-test", type=int, default=40)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--jobs", type=int, default=0, help="worker processes (0 = all cores)")
    p.add_argument("--overwrite", action="store_true", help="replace an existing corpus directory")
    p.add_argument("--voices-v2", action="store_true",
                   help="training clips also from gcin speaker 5, festival voices and more espeak variants, with "
                        "speed, reverberation and telephone-band augmentation (issue 16; needs the voices extra, "
                        "gcin-voice and festival); the test set is the same")
    p.add_argument("--test-only", action="store_true",
                   help="only the test set (the same clips as a full build; no training features): to evaluate a bundle")
    args = p.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    if args.out.exists() and not args.overwrite:
        print(f"error: {args.out} exists; pass --overwrite to rebuild it", file=sys.stderr)
        return 2
    print(json.dumps(build(args.out, args)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
