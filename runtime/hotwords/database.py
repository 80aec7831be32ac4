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
from nim4_edge.runtime.hotwords.strings import StringTable, build_automaton, dump_automaton, load_automaton
from nim4_edge.runtime.phonemes import PhonemeInventory

MAGIC = b"NIM4HOTW"
FORMAT_VERSION = 1


class HotwordError(Nim4Error):
    """A hotword file or database that cannot be used."""


@dataclass(frozen=True)
class HotwordEntry:
    word: str
    weight: float = 1.0
    category: str = ""


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
        path = Path(path)
        try:
            data = path.read_bytes()
        except FileNotFoundError:
            raise HotwordError(f"{path}: no such hotword database (build one: nim4-edge hotwords build LIST -o {path})") from None
        if not data.startswith(MAGIC) or len(data) < len(MAGIC) + 8:
            raise HotwordError(f"{path}: not a nim4-edge hotword database")
        version, header_bytes = struct.unpack("<II", data[len(MAGIC) : len(MAGIC) + 8])
        if version != FORMAT_VERSION:
            raise HotwordError(f"{path}: database format {version}, this nim4-edge reads {FORMAT_VERSION}; rebuild it")
        start = len(MAGIC) + 8
        try:
            header = json.loads(data[start : start + header_bytes])
            inventory = PhonemeInventory(header["inventory"]["version"], tuple(header["inventory"]["symbols"]))
        except (ValueError, KeyError, TypeError):
            raise HotwordError(f"{path}: corrupt header (truncated or tampered); rebuild the database") from None
        if expected_inventory is not None and inventory_fingerprint(inventory) != inventory_fingerprint(expected_inventory):
            raise HotwordError(f"{path}: built with phoneme inventory {inventory.version} ({header['inventory']['sha256'][:12]}), "
                               f"the bundle uses {expected_inventory.version} ({inventory_fingerprint(expected_inventory)[:12]}); "
                               "rebuild it with --bundle")
        body = start + header_bytes
        sections = {}
        for name, where in header["sections"].items():
            chunk = data[body + where["offset"] : body + where["offset"] + where["bytes"]]
            if len(chunk) != where["bytes"] or hashlib.sha256(chunk).hexdigest() != where["sha256"]:
                raise HotwordError(f"{path}: section {name!r} is truncated or was modified; rebuild the database")
            sections[name] = chunk
        try:
            automaton = load_automaton(sections["automaton"])
            # a database built before the thirds existed has halves only: it still retrieves with one error
            tolerant = tuple(index for errors, _ in TOLERANT_INDEXES
                             if (index := PartIndex.from_sections(errors, sections)) is not None)
        except (pickle.UnpicklingError, EOFError, ValueError, TypeError) as e:
            raise HotwordError(f"{path}: automaton section rejected ({e})") from None
        words = StringTable(sections["words"])
        categories = StringTable(sections["categories"])  # all-empty categories: one "" less; see category()
        return cls(inventory, words, np.frombuffer(sections["weights"], "<f4"), categories,
                   StringTable(sections["keys"]), np.frombuffer(sections["key_syllables"], "<i2"),
                   np.frombuffer(sections["group_offsets"], "<i8"),
                   np.frombuffer(sections["group_entries"], "<i4"), automaton, tolerant)


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
        if word in seen:
            problems.append((number, f"duplicate entry {word!r} (first one kept)"))
            continue
        seen.add(word)
        entries.append((number, HotwordEntry(word, weight, parts[2].strip() if len(parts) > 2 else "")))
    return entries, problems
