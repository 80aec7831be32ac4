"""Hotword retrieval: a phoneme-keyed Aho-Corasick database, scanned over the greedy CTC phonemes.

    entries ("惠新西街", weight, category) --lexicon--> phoneme key --> automaton (key -> key id)
    key id -> homophone group (every entry with that pronunciation: 惠新西街, 彗新西街)

Retrieval per utterance (`RetrievalSession`): the phoneme string grows chunk by chunk and only the
new part (plus the longest key minus one) is scanned; matches inside a longer match are dropped
(NIO inside NIO House); keys of fewer than `min_syllables` syllables (two-syllable names cause most
false matches at a million entries, FACTS.md) count only if they are per-stream additions; the top K
by length, then weight, go into the prompt. Per-stream additions and removals sit on top of the shared base.
Tolerant retrieval (`PartIndex`) adds keys heard with one phoneme error (two in keys of >= 10 phonemes).

The file never runs code when loaded: arrays and text in checksummed sections, and the automaton as
a pickle read by an unpickler that can construct nothing but `ahocorasick.Automaton`.
"""

from __future__ import annotations

import collections
import hashlib
import io
import json
import pickle
import struct
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from nim4_edge.runtime.errors import Nim4Error
from nim4_edge.runtime.lexicon import Lexicon
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


class _AutomatonOnly(pickle.Unpickler):
    """Unpickles an ahocorasick.Automaton and refuses every other global (no code from the file)."""

    def find_class(self, module: str, name: str):
        if (module, name) == ("ahocorasick", "Automaton"):
            import ahocorasick

            return ahocorasick.Automaton
        raise pickle.UnpicklingError(f"{module}.{name} is not allowed in a hotword database")


def _build_automaton(keys: list[str]):
    import ahocorasick

    automaton = ahocorasick.Automaton()
    for key_id, key in enumerate(keys):
        automaton.add_word(key, key_id)
    if keys:
        automaton.make_automaton()
    return automaton


class StringTable:
    """Many strings as one UTF-8 blob (newline-separated, as stored in the file) and offsets: a
    million Python str objects would cost ~70 MB more and slow the load."""

    def __init__(self, blob: bytes):
        self.blob = blob
        if blob:
            newlines = np.flatnonzero(np.frombuffer(blob, dtype=np.uint8) == 10)
            self.starts = np.concatenate([[0], newlines + 1]).astype(np.int64)
            self.ends = np.concatenate([newlines, [len(blob)]]).astype(np.int64)
        else:
            self.starts = self.ends = np.zeros(0, np.int64)

    @classmethod
    def from_strings(cls, items: list[str]) -> "StringTable":
        return cls("\n".join(items).encode("utf-8"))

    def __len__(self) -> int:
        return len(self.starts)

    def __getitem__(self, i: int) -> str:
        return self.blob[self.starts[i] : self.ends[i]].decode("utf-8")

    def __iter__(self):
        return (self[i] for i in range(len(self)))

    def __eq__(self, other) -> bool:
        return list(self) == list(other)

    def code_point_lengths(self) -> np.ndarray:
        """Lengths of strings made only of phoneme code points (U+E000.., 3 bytes each in UTF-8)."""
        return ((self.ends - self.starts) // 3).astype(np.int32)


class PartIndex:
    """For tolerant retrieval (pigeonhole): each key of >= `min_key` phonemes split into `errors + 1`
    parts. That many substituted, inserted or deleted phonemes (or wrong tones) leave at least one part
    intact, so an exact scan for parts finds every candidate; candidates are then verified by edit
    distance. Two indexes are built: halves (one error, keys of >= 4 phonemes) and thirds (two errors,
    keys of >= 10 phonemes: at most one error in five, so a long name heard with two errors is found and
    a short one is not matched by chance)."""

    def __init__(self, errors: int, pieces: StringTable, offsets: np.ndarray, entries: np.ndarray, automaton=None):
        self.errors, self.parts = errors, errors + 1
        self.pieces = pieces
        self.piece_lengths = pieces.code_point_lengths()
        self.offsets, self.entries = offsets, entries  # CSR: piece id -> key_id * parts + part
        self.automaton = automaton if automaton is not None else _build_automaton(list(pieces))
        self.max_length = int(self.piece_lengths.max()) if len(self.piece_lengths) else 0

    @staticmethod
    def bounds(length: int, parts: int) -> list[int]:
        """Where a key of `length` phonemes is cut: part p is key[b[p]:b[p + 1]]."""
        return [length * i // parts for i in range(parts + 1)]

    @classmethod
    def build(cls, keys: list[str], errors: int, min_key: int) -> "PartIndex":
        parts = errors + 1
        ids: dict[str, int] = {}
        pieces: list[str] = []
        pairs: list[tuple[int, int]] = []
        for key_id, key in enumerate(keys):
            if len(key) < min_key:
                continue
            b = cls.bounds(len(key), parts)
            for part in range(parts):
                piece = key[b[part] : b[part + 1]]
                if piece not in ids:
                    ids[piece] = len(pieces)
                    pieces.append(piece)
                pairs.append((ids[piece], key_id * parts + part))
        pairs.sort()
        piece_of = np.fromiter((h for h, _ in pairs), dtype=np.int64, count=len(pairs))
        offsets = np.zeros(len(pieces) + 1, dtype=np.int64)
        np.cumsum(np.bincount(piece_of, minlength=len(pieces)), out=offsets[1:])
        entries = np.fromiter((e for _, e in pairs), dtype=np.int32, count=len(pairs))
        return cls(errors, StringTable.from_strings(pieces), offsets, entries)

    def group(self, piece_id: int) -> np.ndarray:
        return self.entries[self.offsets[piece_id] : self.offsets[piece_id + 1]]

    TONELESS_CACHE_PIECES = 4096  # bounded: a long-running stream must not grow without limit

    def toneless_keys(self, piece_id: int, keys: StringTable, lexicon: Lexicon) -> dict:
        """A piece's keys with tones forgiven, grouped by (part, length): {(part, length): (key ids,
        toneless keys)}, so one window per group is compared in one batched call. Cached (LRU): common
        pieces come back utterance after utterance."""
        cache = self.__dict__.setdefault("_toneless", collections.OrderedDict())
        if piece_id in cache:
            cache.move_to_end(piece_id)
        else:
            # one decode of the group's keys joined, split again (a million-entry piece group is
            # thousands of keys: per-key slicing and translating was most of a cold query)
            key_ids, parts = np.divmod(self.group(piece_id).astype(np.int64), self.parts)
            blob = b"\n".join(keys.blob[s:e] for s, e in zip(keys.starts[key_ids].tolist(), keys.ends[key_ids].tolist()))
            groups: dict[tuple[int, int], tuple[list[int], list[str]]] = {}
            for key_id, part, want in zip(key_ids.tolist(), parts.tolist(), lexicon.toneless(blob.decode("utf-8")).split("\n")):
                ids, wants = groups.setdefault((part, len(want)), ([], []))
                ids.append(key_id)
                wants.append(want)
            cache[piece_id] = groups
            if len(cache) > self.TONELESS_CACHE_PIECES:
                cache.popitem(last=False)
        return cache[piece_id]

    def windows(self, start: int, end: int, part: int, length: int) -> list[tuple[int, int]]:
        """Spans of the heard phonemes where a key of `length` whose `part` was found at [start, end)
        can lie with at most `errors` edits: shifted by the edits before the part (none for the first
        part) and after it (none for the last)."""
        b = self.bounds(length, self.parts)
        e = self.errors
        out = []
        for before in range(-e, e + 1) if part else (0,):
            for after in range(-e, e + 1) if part < self.parts - 1 else (0,):
                if abs(before) + abs(after) <= e:
                    out.append((start - b[part] - before, end + (length - b[part + 1]) + after))
        return out

    SECTION_PREFIX = {1: "half", 2: "third"}  # file sections by tolerated errors (format 1 had halves only)

    def sections(self) -> dict[str, bytes]:
        prefix = self.SECTION_PREFIX[self.errors]
        return {
            f"{prefix}_keys": self.pieces.blob,
            f"{prefix}_offsets": self.offsets.astype("<i8").tobytes(),
            f"{prefix}_entries": self.entries.astype("<i4").tobytes(),
            f"{prefix}_automaton": pickle.dumps(self.automaton, protocol=5),
        }

    @classmethod
    def from_sections(cls, errors: int, sections: dict[str, bytes]) -> "PartIndex | None":
        prefix = cls.SECTION_PREFIX[errors]
        if f"{prefix}_automaton" not in sections:
            return None
        return cls(errors, StringTable(sections[f"{prefix}_keys"]),
                   np.frombuffer(sections[f"{prefix}_offsets"], "<i8"), np.frombuffer(sections[f"{prefix}_entries"], "<i4"),
                   _AutomatonOnly(io.BytesIO(sections[f"{prefix}_automaton"])).load())


TOLERANT_INDEXES = ((1, 4), (2, 10))  # (errors tolerated, shortest key in phonemes): halves, thirds


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
        self.automaton = automaton if automaton is not None else _build_automaton(list(keys))
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
        from nim4_edge.runtime.atomic import write_bytes_atomic

        sections = {
            "words": self.words.blob,
            "categories": self.categories.blob,
            "weights": self.weights.astype("<f4").tobytes(),
            "keys": self.keys.blob,
            "key_syllables": self.key_syllables.astype("<i2").tobytes(),
            "group_offsets": self.group_offsets.astype("<i8").tobytes(),
            "group_entries": self.group_entries.astype("<i4").tobytes(),
            "automaton": pickle.dumps(self.automaton, protocol=5),
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
            automaton = _AutomatonOnly(io.BytesIO(sections["automaton"])).load()
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


@dataclass(frozen=True)
class RetrievalConfig:
    top_k: int = 10  # words put into the prompt at most
    min_syllables: int = 3  # shorter base keys (two-syllable names) need to be per-stream additions
    max_group: int = 5  # homophones of one key put into the prompt at most (heaviest first)
    tolerant: bool = False  # also keys one phoneme error away (two in keys of >= 10), tones forgiven; needs a tolerant db
    from_text: bool = False  # retrieve from a first-pass transcript instead of the CTC phonemes (2 decodes)
    # also retrieve from a first pass that had the CTC hints, and add what it finds (2 decodes): a name
    # the CTC head heard with errors but the decoder wrote with the right sound is found this way
    add_text: bool = False
    max_piece_candidates: int = 20000  # a key part shared by more keys is too common to verify (batched in C)

    @classmethod
    def from_mode(cls, mode: str) -> "RetrievalConfig":
        """The `--hotwords-mode` of listen/eval/bench (HOTWORD_MODES) as a config."""
        if mode not in HOTWORD_MODES:
            raise ValueError(f"unknown hotword mode {mode!r}; choose from {', '.join(HOTWORD_MODES)}")
        return cls(tolerant=mode.startswith("tolerant"), from_text=mode == "text", add_text=mode.endswith("+text"))


HOTWORD_MODES = ("exact", "tolerant", "text", "exact+text", "tolerant+text")


@dataclass
class Match:
    start: int  # phoneme index in the utterance
    end: int  # exclusive
    key_id: int
    source: str  # "base", "stream" or "tolerant"
    errors: int = 0  # tolerant: edit distance to the key (tones forgiven)


class HotwordRetriever:
    """One stream's view: the shared base database plus this stream's additions and removals."""

    def __init__(self, database: HotwordDatabase | None, lexicon: Lexicon, config: RetrievalConfig = RetrievalConfig()):
        self.base = database
        self.lexicon = lexicon
        self.config = config
        self.removed: set[str] = set()
        self._added: dict[str, HotwordEntry] = {}
        self._added_keys: list[str] = []
        self._added_groups: list[list[str]] = []
        self._added_automaton = None

    def add(self, entries: Iterable[HotwordEntry]) -> None:
        """Per-stream additions (e.g. the driver's contacts); the base stays untouched."""
        for entry in entries:
            self.lexicon.phonemes(entry.word)  # raises for words with no pronunciation
            self._added[entry.word] = entry
            self.removed.discard(entry.word)
        self._rebuild_additions()

    def remove(self, words: Iterable[str]) -> None:
        for word in words:
            self.removed.add(word)
            self._added.pop(word, None)
        self._rebuild_additions()

    def _rebuild_additions(self) -> None:
        groups: dict[str, list[str]] = {}
        for entry in sorted(self._added.values(), key=lambda e: -e.weight):
            groups.setdefault(self.lexicon.encode(self.lexicon.phonemes(entry.word)), []).append(entry.word)
        self._added_keys = list(groups)
        self._added_groups = list(groups.values())
        self._added_automaton = _build_automaton(self._added_keys) if groups else None

    def session(self) -> "RetrievalSession":
        return RetrievalSession(self)

    def retrieve(self, phonemes: list[str]) -> list[str]:
        """Whole-utterance retrieval (a session fed once)."""
        session = self.session()
        session.extend(phonemes)
        return session.words()

    def retrieve_from_text(self, text: str) -> list[str]:
        """Text-based retrieval, for models without a phoneme head: the lexicon's phonemes of a
        first-pass transcript stand in for the CTC phonemes."""
        from nim4_edge.runtime.lexicon import LexiconError

        try:
            return self.retrieve(self.lexicon.phonemes(text))
        except LexiconError:
            return []


@dataclass
class RetrievalSession:
    """One utterance: phonemes arrive chunk by chunk; each call scans only what is new."""

    retriever: HotwordRetriever
    code: str = ""
    matches: list[Match] = field(default_factory=list)
    piece_matches: list[tuple[int, int, int, int]] = field(default_factory=list)  # (index, start, end, piece id)
    # tolerant verification is incremental: piece matches before `_verified` are done, except those in
    # `_pending` (a window ran past the phonemes heard so far); `_tolerant` holds the best match per key
    _verified: int = 0
    _pending: list[int] = field(default_factory=list)
    _tolerant: dict[int, Match] = field(default_factory=dict)

    def extend(self, phonemes: list[str]) -> None:
        self.extend_code(self.retriever.lexicon.encode(phonemes))

    def extend_code(self, code: str) -> None:
        """Append phonemes in code-point form (Lexicon.encode / encode_ids) and scan what is new."""
        if not code:
            return
        old = len(self.code)
        self.code += code
        for source, automaton, lengths, longest in self._automata():
            overlap = max(0, old - (longest - 1))  # a key ending in the new part starts here at the earliest
            for end_index, key_id in automaton.iter(self.code, overlap):
                end = end_index + 1
                if end > old:  # ends in the new part: not found before
                    self.matches.append(Match(end - lengths[key_id], end, key_id, source))
        for number, index in enumerate(self._part_indexes()):
            for end_index, piece_id in index.automaton.iter(self.code, max(0, old - (index.max_length - 1))):
                if end_index + 1 > old:
                    start = end_index + 1 - int(index.piece_lengths[piece_id])
                    self.piece_matches.append((number, start, end_index + 1, piece_id))

    def _part_indexes(self) -> tuple[PartIndex, ...]:
        r = self.retriever
        return r.base.tolerant if r.config.tolerant and r.base is not None else ()

    def tolerant_matches(self) -> list[Match]:
        """Base keys within their index's edit distance (substitutions, insertions, deletions; tones
        forgiven) of the phonemes around an intact part, and not matched exactly; a key found by both
        indexes keeps its fewest errors. Only piece matches that are new, or whose windows reached past
        the phonemes heard so far, are verified: a partial per chunk does not redo the utterance."""
        indexes = self._part_indexes()
        if indexes:
            todo = self._pending + list(range(self._verified, len(self.piece_matches)))
            self._verified, self._pending = len(self.piece_matches), []
            for i in todo:
                if self._verify(indexes, *self.piece_matches[i]):
                    self._pending.append(i)
        exact = {m.key_id for m in self.matches if m.source == "base"}
        return [m for key_id, m in self._tolerant.items() if key_id not in exact]

    def _verify(self, indexes: tuple[PartIndex, ...], number: int, start: int, end: int, piece_id: int) -> bool:
        """Verify the keys behind one found piece; True when a window lay past the end (check again later)."""
        from rapidfuzz import process
        from rapidfuzz.distance import Levenshtein

        r, index, n = self.retriever, indexes[number], len(self.code)
        if len(index.group(piece_id)) > r.config.max_piece_candidates:
            return False  # too common a piece: another part of the key has to find it
        lexicon, beyond = r.lexicon, False
        for (part, length), (ids, wants) in index.toneless_keys(piece_id, r.base.keys, lexicon).items():
            for a, b in index.windows(start, end, part, length):
                if a < 0 or b > n:
                    beyond |= b > n and a >= 0
                    continue
                heard = lexicon.toneless(self.code[a:b])
                for _, errors, i in process.extract(heard, wants, scorer=Levenshtein.distance,
                                                    score_cutoff=index.errors, limit=None):
                    key_id = ids[i]
                    if key_id not in self._tolerant or errors < self._tolerant[key_id].errors:
                        self._tolerant[key_id] = Match(a, b, key_id, "tolerant", int(errors))
        return beyond

    def _automata(self):
        r = self.retriever
        if r.base is not None and len(r.base.keys):
            yield "base", r.base.automaton, r.base.key_lengths, r.base.max_key_length
        if r._added_automaton is not None:
            lengths = [len(k) for k in r._added_keys]
            yield "stream", r._added_automaton, lengths, max(lengths)

    def candidates(self) -> list[tuple[Match, list[str], float, str]]:
        """(match, words, weight, why) for every match, best first; `why` is "" for kept ones."""
        r, cfg = self.retriever, self.retriever.config
        matches = self.matches + self.tolerant_matches()
        spans = [(m.start, m.end, m.errors) for m in matches]
        out = []
        for m in matches:
            # shadowed by a longer match, unless that one is a two-error guess at a long name and this
            # one was heard better (exact or one error)
            inside = any(s <= m.start and m.end <= e and (e - s) > (m.end - m.start) and errors <= max(m.errors, 1)
                         for s, e, errors in spans)
            if m.source in ("base", "tolerant"):
                ids = r.base.group(m.key_id)
                words = [w for w in (r.base.words[i] for i in ids.tolist()) if w not in r.removed][: cfg.max_group]
                weight = float(r.base.weights[ids[0]]) if len(ids) else 0.0
            else:
                words = r._added_groups[m.key_id][: cfg.max_group]
                weight = max(r._added[w].weight for w in words)
            why = ("inside a longer match" if inside else
                   f"fewer than {cfg.min_syllables} syllables" if m.source != "stream" and r.base.key_syllables[m.key_id] < cfg.min_syllables else
                   "removed for this stream" if not words else "")
            out.append((m, words, weight, why))
        out.sort(key=lambda c: (c[3] != "", c[0].source == "tolerant", c[0].errors, -(c[0].end - c[0].start), -c[2],
                                c[0].start))
        return out

    def words(self) -> list[str]:
        chosen: list[str] = []
        for _, words, _, why in self.candidates():
            if why:
                continue
            for word in words:
                if word not in chosen and len(chosen) < self.retriever.config.top_k:
                    chosen.append(word)
        return chosen


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
