"""The phoneme inventory of the CTC phoneme head (our decision; the NIM4-ASR paper does not publish one).

One inventory covers both languages of the in-car domain:

* index 0 is the CTC blank ``<blk>``; index 1 ``<unk>`` is for sounds no lexicon entry explains;
* English: the 39 ARPAbet phonemes of CMUdict, stress removed (``AA`` .. ``ZH``);
* Mandarin: the 23 pinyin initials (``y``/``w`` kept as initials, as pypinyin's strict style does)
  and every pinyin final with its tone 1-5 (``ang2``, ``v4`` for ü; tone 5 = neutral).

Mandarin initials and ARPAbet symbols never collide because ARPAbet is upper case. The inventory is
versioned: a checkpoint, a bundle and a hotword database record the version and the full list, and
refuse to be combined with another one.
"""

from __future__ import annotations

from dataclasses import dataclass

INVENTORY_VERSION = "nim4-phonemes-v1"
BLANK = "<blk>"
UNKNOWN = "<unk>"

ARPABET = (
    "AA AE AH AO AW AY B CH D DH EH ER EY F G HH IH IY JH K L M N NG OW OY P R S SH T TH "
    "UH UW V W Y Z ZH"
).split()

PINYIN_INITIALS = "b p m f d t n l g k h j q x zh ch sh r z c s y w".split()

# Finals in pypinyin's strict spelling (ü written v; "iou", "uei", "uen" unabbreviated).
PINYIN_FINALS = (
    "a o e i u v ai ei ao ou an en ang eng ong er "
    "ia ie iao iou ian in iang ing iong io "
    "ua uo uai uei uan uen uang ueng "
    "ve van vn "
    "m n ng ê"
).split()

TONES = (1, 2, 3, 4, 5)


def default_symbols() -> tuple[str, ...]:
    """All symbols of the v1 inventory, blank first: 2 + 39 + 23 + 41 finals x 5 tones = 269."""
    tonal_finals = [f"{final}{tone}" for final in PINYIN_FINALS for tone in TONES]
    return (BLANK, UNKNOWN, *ARPABET, *PINYIN_INITIALS, *tonal_finals)


@dataclass(frozen=True)
class PhonemeInventory:
    """An ordered phoneme list; the index of a symbol is its CTC class id (blank = 0)."""

    version: str
    symbols: tuple[str, ...]

    def __post_init__(self) -> None:
        if not self.symbols or self.symbols[0] != BLANK:
            raise ValueError(f"phoneme inventory must start with the CTC blank {BLANK!r}")
        if len(set(self.symbols)) != len(self.symbols):
            seen: set[str] = set()
            dup = next(s for s in self.symbols if s in seen or seen.add(s))
            raise ValueError(f"phoneme inventory lists {dup!r} twice; each symbol must be unique")
        bad = [s for s in self.symbols if not s or any(c.isspace() for c in s)]
        if bad:
            raise ValueError(f"phoneme symbol {bad[0]!r} is empty or contains whitespace")

    @classmethod
    def default(cls) -> "PhonemeInventory":
        return cls(INVENTORY_VERSION, default_symbols())

    def __len__(self) -> int:
        return len(self.symbols)

    @property
    def blank_id(self) -> int:
        return 0

    def to_text(self) -> str:
        """The on-disk form: a header line with the version, then one symbol per line."""
        return f"# {self.version}\n" + "\n".join(self.symbols) + "\n"

    @classmethod
    def from_text(cls, text: str, source: str = "phonemes.txt") -> "PhonemeInventory":
        lines = [line.strip() for line in text.splitlines()]
        if not lines or not lines[0].startswith("# "):
            raise ValueError(f"{source}: first line must be '# <inventory version>'")
        version = lines[0][2:].strip()
        symbols = tuple(line for line in lines[1:] if line)
        try:
            return cls(version, symbols)
        except ValueError as e:
            raise ValueError(f"{source}: {e}") from None

    def to_json(self) -> dict:
        # code_point_base: phoneme id i is the character chr(base + i) in hotword keys (runtime/hotwords/lexicon.py)
        return {"version": self.version, "blank_id": self.blank_id, "code_point_base": 0xE000,
                "symbols": list(self.symbols)}

    @classmethod
    def from_json(cls, data: dict) -> "PhonemeInventory":
        return cls(str(data["version"]), tuple(data["symbols"]))
