"""The piece index behind tolerant retrieval (pigeonhole): keys cut into parts, an exact scan for the
parts, then edit-distance verification of the keys behind each part found."""

from __future__ import annotations

import collections
import threading

import numpy as np

from nim4_edge.runtime.hotwords.lexicon import Lexicon
from nim4_edge.runtime.hotwords.strings import (
    StringTable,
    build_automaton,
    check_automaton,
    check_offsets,
    check_phoneme_codes,
    dump_automaton,
    load_automaton,
    require,
)


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
        self.automaton = automaton if automaton is not None else build_automaton(list(pieces))
        self.max_length = int(self.piece_lengths.max()) if len(self.piece_lengths) else 0
        self._toneless: collections.OrderedDict = collections.OrderedDict()  # see toneless_keys
        self._toneless_lock = threading.Lock()

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

    def check(self, num_keys: int, num_phonemes: int) -> None:
        """Offsets, entries and pieces in range for a database of `num_keys` keys (raises CorruptData)."""
        pieces = len(self.pieces)
        check_offsets(self.offsets, pieces, len(self.entries), f"{self.errors}-error piece index")
        require(not len(self.entries) or (self.entries.min() >= 0 and self.entries.max() < num_keys * self.parts),
                f"{self.errors}-error piece index names a key that does not exist")
        check_phoneme_codes(self.pieces, num_phonemes, f"{self.errors}-error pieces")
        check_automaton(self.automaton, pieces, f"{self.errors}-error piece automaton")

    def group(self, piece_id: int) -> np.ndarray:
        return self.entries[self.offsets[piece_id] : self.offsets[piece_id + 1]]

    TONELESS_CACHE_PIECES = 4096  # bounded: a long-running stream must not grow without limit

    def toneless_keys(self, piece_id: int, keys: StringTable, lexicon: Lexicon) -> dict:
        """A piece's keys with tones forgiven, grouped by (part, length): {(part, length): (key ids,
        toneless keys)}, so one window per group is compared in one batched call. Cached (LRU): common
        pieces come back utterance after utterance."""
        cache = self._toneless
        with self._toneless_lock:  # streams of a server share the database: one writer at a time
            if piece_id in cache:
                cache.move_to_end(piece_id)
                return cache[piece_id]
        # one decode of the group's keys joined, split again (a million-entry piece group is
        # thousands of keys: per-key slicing and translating was most of a cold query)
        key_ids, parts = np.divmod(self.group(piece_id).astype(np.int64), self.parts)
        blob = b"\n".join(keys.blob[s:e] for s, e in zip(keys.starts[key_ids].tolist(), keys.ends[key_ids].tolist()))
        groups: dict[tuple[int, int], tuple[list[int], list[str]]] = {}
        for key_id, part, want in zip(key_ids.tolist(), parts.tolist(), lexicon.toneless(blob.decode("utf-8")).split("\n")):
            ids, wants = groups.setdefault((part, len(want)), ([], []))
            ids.append(key_id)
            wants.append(want)
        with self._toneless_lock:
            cache[piece_id] = groups
            if len(cache) > self.TONELESS_CACHE_PIECES:
                cache.popitem(last=False)
        return groups

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
            f"{prefix}_automaton": dump_automaton(self.automaton),
        }

    @classmethod
    def from_sections(cls, errors: int, sections: dict[str, bytes]) -> "PartIndex | None":
        prefix = cls.SECTION_PREFIX[errors]
        if f"{prefix}_automaton" not in sections:
            return None
        offsets, entries = sections[f"{prefix}_offsets"], sections[f"{prefix}_entries"]
        require(len(offsets) % 8 == 0 and len(entries) % 4 == 0, f"{prefix} index sections are not whole arrays")
        return cls(errors, StringTable(sections[f"{prefix}_keys"]), np.frombuffer(offsets, "<i8"),
                   np.frombuffer(entries, "<i4"), load_automaton(sections[f"{prefix}_automaton"]))


TOLERANT_INDEXES = ((1, 4), (2, 10))  # (errors tolerated, shortest key in phonemes): halves, thirds
