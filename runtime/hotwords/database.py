"""The hotword database: entries grouped by pronunciation, the automaton over the pronunciations,
and the file format.

    entries ("惠新西街", weight, category) --lexicon--> phoneme key --> automaton (key -> key id)
    key id -> homophone group (every entry with that pronunciation: 惠新西街, 彗新西街)

File: MAGIC, format version, a JSON header (inventory, section layout with sha256 per section), then
the sections: arrays and text, and automata as pickles that can construct nothing but an
`ahocorasick.Automaton` (strings.py). Loading never runs code from the file. Retrieval is in
retrieval.py, the tolerant piece index in index.py.
"""

from __future__ import annotations

import hashlib
import json
import pickle
import struct
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from nim4_edge.runtime.atomic import write_bytes_atomic
from nim4_edge.runtime.errors import Nim4Error
from nim4_edge.runtime.hotwords.index import TOLERANT_INDEXES, PartIndex
from nim4_edge.runtime.hotwords.lexicon import Lexicon
from nim4_edge.runtime.hotwords.strings import (
    CorruptData,
    StringTable,
    build_automaton,
    check_automaton,
    check_offsets,
    check_phoneme_codes,
    dump_automaton,
    load_automaton,
    require,
)
from nim4_edge.runtime.phonemes import PhonemeInventory

MAGIC = b"NIM4HOTW"
FORMAT_VERSION = 1


# Limits of one entry (`hotwords build` skips and reports a line beyond them): names and places are a
# few words; the key's syllable count is stored as int16; weights are float32 ranks.
MAX_ENTRY_CHARS = 100
MAX_ENTRY_SYLLABLES = 64
MAX_WEIGHT = 1e6


class HotwordError(Nim4Error):
    """A hotword file or database that cannot be used."""


@dataclass(frozen=True)
class HotwordEntry:
    word: str
    weight: float = 1.0
    category: str = ""


def _sections(data: bytes, body: int, layout: dict) -> dict[str, bytes]:
    sections = {}
    for name, where in layout.items():
        offset, size = int(where["offset"]), int(where["bytes"])
        require(offset >= 0 and size >= 0, f"section {name!r} has a negative offset or size")
        chunk = data[body + offset : body + offset + size]
        require(len(chunk) == size and hashlib.sha256(chunk).hexdigest() == where["sha256"],
                 f"section {name!r} is truncated or was modified")
        sections[name] = chunk
    return sections


def _array(sections: dict[str, bytes], name: str, dtype: str) -> np.ndarray:
    data = sections[name]
    require(len(data) % np.dtype(dtype).itemsize == 0, f"section {name!r} is not a whole number of values")
    return np.frombuffer(data, dtype)


def read_input(path: Path, what: str, fix: str) -> bytes:
    """The bytes of a hotword list or database; a missing, folder or unreadable path is one line."""
    try:
        return Path(path).read_bytes()
    except FileNotFoundError:
        raise HotwordError(f"{path}: no such {what} ({fix})") from None
    except IsADirectoryError:
        raise HotwordError(f"{path}: is a directory, not a {what}") from None
    except OSError as e:
        raise HotwordError(f"{path}: cannot be read ({e.strerror})") from None


def inventory_fingerprint(inventory: PhonemeInventory) -> str:
    return hashlib.sha256("\n".join(inventory.symbols).encode()).hexdigest()


class HotwordDatabase:
    """Entries grouped by phoneme key, and the automaton over the keys."""

    def __init__(self, inventory: PhonemeInventory, words: StringTable, weights: np.ndarray, categories: StringTable,
                 keys: StringTable, key_syllables: np.ndarray, group_offsets: np.ndarray, group_entries: np.ndarray,
                 automaton=None, tolerant: tuple["PartIndex", ...] = ()):
        self.inventory = inventory
        # PartIndex per TOLERANT_INDEXES when built with tolerant=True, else (); one without keys long
        # enough has no automaton to scan and is left out
        self.tolerant = tuple(index for index in tolerant if len(index.pieces))
        self.key_syllables = key_syllables  # key id -> syllable count
        self.words, self.weights, self.categories = words, weights, categories
        self.keys = keys  # key id -> code-point string
        self.key_lengths = keys.code_point_lengths()
        self.group_offsets, self.group_entries = group_offsets, group_entries  # CSR: key id -> entry ids
        self.automaton = automaton if automaton is not None else build_automaton(list(keys))
        self.max_key_length = int(self.key_lengths.max()) if len(keys) else 0

    def __len__(self) -> int:
        return len(self.words)

    @classmethod
    def build(cls, entries: Iterable[tuple[HotwordEntry, list[str]]], lexicon: Lexicon,
              tolerant: bool = False) -> "HotwordDatabase":
        """entries: (entry, phonemes) pairs, phonemes of `lexicon`'s inventory. `tolerant` adds the
        part indexes for retrieval despite phoneme errors (more memory and build time)."""
        encode = lexicon.encode
        words, weights, categories, key_of, syllables = [], [], [], [], []
        key_ids: dict[str, int] = {}
        keys: list[str] = []
        for entry, phonemes in entries:
            if not 0 <= entry.weight <= MAX_WEIGHT:
                raise HotwordError(f"hotword {entry.word!r}: weight {entry.weight} is outside 0-{MAX_WEIGHT:g}")
            if lexicon.syllables(phonemes) > MAX_ENTRY_SYLLABLES:
                raise HotwordError(f"hotword {entry.word[:40]!r}...: more than {MAX_ENTRY_SYLLABLES} syllables")
            key = encode(phonemes)
            if key not in key_ids:
                key_ids[key] = len(keys)
                keys.append(key)
                syllables.append(lexicon.syllables(phonemes))
            words.append(entry.word)
            weights.append(entry.weight)
            categories.append(entry.category)
            key_of.append(key_ids[key])
        key_of_arr = np.asarray(key_of, dtype=np.int32)
        order = np.lexsort((-np.asarray(weights, dtype=np.float32), key_of_arr))  # by key, heaviest first
        counts = np.bincount(key_of_arr, minlength=len(keys))
        offsets = np.zeros(len(keys) + 1, dtype=np.int64)
        np.cumsum(counts, out=offsets[1:])
        return cls(lexicon.inventory, StringTable.from_strings(words), np.asarray(weights, dtype=np.float32),
                   StringTable.from_strings(categories), StringTable.from_strings(keys),
                   np.asarray(syllables, dtype=np.int16), offsets, order.astype(np.int32),
                   tolerant=tuple(PartIndex.build(keys, e, k) for e, k in TOLERANT_INDEXES) if tolerant else ())

    def category(self, entry_id: int) -> str:
        return self.categories[entry_id] if len(self.categories) == len(self.words) else ""

    def group(self, key_id: int) -> np.ndarray:
        """Entry ids of one pronunciation, heaviest first."""
        return self.group_entries[self.group_offsets[key_id] : self.group_offsets[key_id + 1]]

    # --- file format ----------------------------------------------------------------------------

    def save(self, path: Path) -> None:
        """Write through a temporary file and rename (nothing half-written)."""
        sections = {
            "words": self.words.blob,
            "categories": self.categories.blob,
            "weights": self.weights.astype("<f4").tobytes(),
            "keys": self.keys.blob,
            "key_syllables": self.key_syllables.astype("<i2").tobytes(),
            "group_offsets": self.group_offsets.astype("<i8").tobytes(),
            "group_entries": self.group_entries.astype("<i4").tobytes(),
            "automaton": dump_automaton(self.automaton),
            **{name: data for index in self.tolerant for name, data in index.sections().items()},
        }
        layout, offset = {}, 0
        for name, data in sections.items():
            layout[name] = {"offset": offset, "bytes": len(data), "sha256": hashlib.sha256(data).hexdigest()}
            offset += len(data)
        header = json.dumps({
            "format_version": FORMAT_VERSION,
            "inventory": {"version": self.inventory.version, "sha256": inventory_fingerprint(self.inventory),
                          "symbols": list(self.inventory.symbols)},
            "entries": len(self.words),
            "keys": len(self.keys),
            "sections": layout,
        }, ensure_ascii=False).encode("utf-8")
        blob = MAGIC + struct.pack("<II", FORMAT_VERSION, len(header)) + header + b"".join(sections.values())
        write_bytes_atomic(Path(path), blob)

    @classmethod
    def load(cls, path: Path, expected_inventory: PhonemeInventory | None = None) -> "HotwordDatabase":
        """Read and check a database file. Anything wrong with it (truncated, edited, even with its
        checksums recomputed) is one HotwordError line; a loaded database never fails a query."""
        path = Path(path)
        data = read_input(path, "hotword database", f"build one: nim4-edge hotwords build LIST -o {path}")
        if not data.startswith(MAGIC) or len(data) < len(MAGIC) + 8:
            raise HotwordError(f"{path}: not a nim4-edge hotword database")
        version, header_bytes = struct.unpack("<II", data[len(MAGIC) : len(MAGIC) + 8])
        if version != FORMAT_VERSION:
            raise HotwordError(f"{path}: database format {version}, this nim4-edge reads {FORMAT_VERSION}; rebuild it")
        start = len(MAGIC) + 8
        try:
            header = json.loads(data[start : start + header_bytes])
            inventory = PhonemeInventory(str(header["inventory"]["version"]),
                                         tuple(str(s) for s in header["inventory"]["symbols"]))
        except (ValueError, KeyError, TypeError, AttributeError):
            raise HotwordError(f"{path}: corrupt header (truncated or tampered); rebuild the database") from None
        if expected_inventory is not None and inventory_fingerprint(inventory) != inventory_fingerprint(expected_inventory):
            raise HotwordError(f"{path}: built with phoneme inventory {inventory.version}, the bundle uses "
                               f"{expected_inventory.version} ({inventory_fingerprint(expected_inventory)[:12]}); "
                               "rebuild it with --bundle")
        try:
            sections = _sections(data, start + header_bytes, header["sections"])
            database = cls._from_sections(inventory, sections)
            database.check(header["entries"], header["keys"])
        except CorruptData as e:
            raise HotwordError(f"{path}: {e}; rebuild the database") from None
        except (pickle.UnpicklingError, EOFError) as e:
            raise HotwordError(f"{path}: corrupt database (an automaton section was rejected: {e}); rebuild it") from None
        except (KeyError, TypeError, ValueError, IndexError, AttributeError, OverflowError, UnicodeDecodeError) as e:
            raise HotwordError(f"{path}: corrupt database ({type(e).__name__}: {e}); rebuild it") from None
        return database

    @classmethod
    def _from_sections(cls, inventory: PhonemeInventory, sections: dict[str, bytes]) -> "HotwordDatabase":
        automaton = load_automaton(sections["automaton"])
        # a database built before the thirds existed has halves only: it still retrieves with one error
        tolerant = tuple(index for errors, _ in TOLERANT_INDEXES
                         if (index := PartIndex.from_sections(errors, sections)) is not None)
        return cls(inventory, StringTable(sections["words"]), _array(sections, "weights", "<f4"),
                   StringTable(sections["categories"]),  # all-empty categories: one "" less; see category()
                   StringTable(sections["keys"]), _array(sections, "key_syllables", "<i2"),
                   _array(sections, "group_offsets", "<i8"), _array(sections, "group_entries", "<i4"),
                   automaton, tolerant)

    def check(self, entries: int, keys: int) -> None:
        """Every count, offset, id and length in range, every string valid, the automata of the right
        type and size; raises CorruptData naming the first thing that is not."""
        n, k = len(self.words), len(self.keys)
        require(entries == n and keys == k, f"the header counts {entries} entries / {keys} keys, the sections {n} / {k}")
        require(len(self.weights) == n, "weights do not match the entries")
        require(bool(np.all(np.isfinite(self.weights))) and not np.any(self.weights < 0), "a weight is not finite or < 0")
        require(len(self.categories) <= n, "more categories than entries")
        for table in (self.words, self.categories):
            table.blob.decode("utf-8")  # UnicodeDecodeError: caught by load
        require(len(self.key_syllables) == k and not np.any(self.key_syllables < 0), "key syllables out of range")
        check_offsets(self.group_offsets, k, n, "homophone groups")
        require(not len(self.group_entries) or (self.group_entries.min() >= 0 and self.group_entries.max() < n),
                 "a homophone group names an entry that does not exist")
        require(len(self.group_entries) == n, "homophone groups do not cover the entries")
        check_phoneme_codes(self.keys, len(self.inventory.symbols), "keys")
        check_automaton(self.automaton, k, "automaton")
        for index in self.tolerant:
            index.check(k, len(self.inventory.symbols))


def parse_hotword_lines(lines: Iterable[str]) -> tuple[list[tuple[int, HotwordEntry]], list[tuple[int, str]]]:
    """`word[<TAB>weight[<TAB>category]]` per line; '#' comments and blank lines are skipped.
    Returns (line number, entry) pairs and (line number, problem) for lines that were skipped."""
    entries, problems, seen = [], [], set()
    for number, raw in enumerate(lines, 1):
        line = raw.rstrip("\r\n")
        if not line.strip() or line.lstrip().startswith("#"):
            continue
        parts = line.split("\t")
        word = parts[0].strip()
        weight = 1.0
        if len(parts) > 1 and parts[1].strip():
            try:
                weight = float(parts[1])
            except ValueError:
                problems.append((number, f"weight {parts[1]!r} is not a number"))
                continue
            if not 0 <= weight <= MAX_WEIGHT:  # NaN fails this too
                problems.append((number, f"weight {parts[1].strip()!r} is outside 0-{MAX_WEIGHT:g}"))
                continue
        if len(word) > MAX_ENTRY_CHARS:
            problems.append((number, f"entry of {len(word)} characters; at most {MAX_ENTRY_CHARS} (a name, not a text)"))
            continue
        if word in seen:
            problems.append((number, f"duplicate entry {word!r} (first one kept)"))
            continue
        seen.add(word)
        entries.append((number, HotwordEntry(word, weight, parts[2].strip() if len(parts) > 2 else "")))
    return entries, problems
