"""The hotword database: entries grouped by pronunciation, their signature indexes, in-place updates,
and the file format.

    entries ("惠新西街", weight, category) --lexicon--> phoneme key --> signature indexes (key id)
    key id -> homophone group (every entry with that pronunciation: 惠新西街, 彗新西街)

A database is one or two segments: the base, as built, and the changes since (`add`, `remove`): the
entries added, and which base entries are gone. An update writes a new file that keeps the base
segment's bytes as they are (copied by the kernel) and a new changes segment, then renames it over
the old one: a kill at any moment leaves the old file or the new one. `compact` folds the changes in.

File (format 3): MAGIC, version, the sections (arrays, 8-byte aligned), a JSON header (inventory,
segments, each section's offset, size, dtype and CRC-32), its length, MAGIC. The header sits at the
end so that an update can keep every base byte in place. Loading maps the file into memory: arrays
are views of it (its pages are shared by every process that loads it), checked for range, never
code (format 1's pickled automata are gone).
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import mmap
import os
import struct
import tempfile
import zlib
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from nim4_edge.runtime.atomic import copy_prefix, remove_dead_writers_files, same_file, set_default_permissions
from nim4_edge.runtime.errors import Nim4Error
from nim4_edge.runtime.hotwords import _query
from nim4_edge.runtime.hotwords.lexicon import Lexicon
from nim4_edge.runtime.hotwords.signatures import MAX_KEY, SignatureIndex, mix, prefix_hashes, span_hash
from nim4_edge.runtime.hotwords.strings import (CODE_POINT_BASE, CorruptData, LineBreakError, StringTable, blocks,
                                                check_offsets, code_ids, ids_code, increasing, require)
from nim4_edge.runtime.phonemes import PhonemeInventory

MAGIC = b"NIM4HOTW"
FORMAT_VERSION = 3  # 3: tolerant signatures as 32-bit fingerprints, popular ones refined
_TRAILER = struct.Struct("<Q8s")  # header length, MAGIC

# Limits of one entry (`hotwords build` skips and reports a line beyond them): names and places are a
# few words; the key's syllable count is stored as int16; weights are float32 ranks.
MAX_ENTRY_CHARS = 100
MAX_ENTRY_SYLLABLES = 64
MAX_WEIGHT = 1e6

# (errors tolerated, shortest and longest key in phonemes): one error in keys of 4-9 phonemes, two in
# keys of >= 10 (at most one in five: a long name heard with two errors is found, a short one is not
# matched by chance). A long key heard with one error is the two-error index's too, so the one-error
# index leaves long keys out (measured at 1M, 500 utterances: the same recall to the utterance,
# tolerant p50 1.30 -> 1.17 ms, file 213 -> 193 MB, index 5.5 -> 4.8 s)
TOLERANT_INDEXES = ((1, 4, 9), (2, 10, MAX_KEY))


class HotwordError(Nim4Error):
    """A hotword file or database that cannot be used."""


@dataclass(frozen=True)
class HotwordEntry:
    word: str
    weight: float = 1.0
    category: str = ""


@contextlib.contextmanager
def input_errors(path: Path, what: str, fix: str):
    """A missing, folder or unreadable hotword list or database is one line."""
    try:
        yield
    except FileNotFoundError:
        raise HotwordError(f"{path}: no such {what} ({fix})") from None
    except IsADirectoryError:
        raise HotwordError(f"{path}: is a directory, not a {what}") from None
    except OSError as e:
        raise HotwordError(f"{path}: cannot be read ({e.strerror})") from None


def read_input(path: Path, what: str, fix: str) -> bytes:
    """The bytes of a hotword list."""
    with input_errors(path, what, fix):
        return Path(path).read_bytes()


def inventory_fingerprint(inventory: PhonemeInventory) -> str:
    return hashlib.sha256("\n".join(inventory.symbols).encode()).hexdigest()


def word_hashes(words: StringTable) -> np.ndarray:
    """A 64-bit hash of each word's UTF-8 bytes, vectorized over the table (finding a word to update
    or remove among a million without a dict of a million strings)."""
    h, inv = prefix_hashes(np.frombuffer(words.blob, np.uint8))
    with np.errstate(over="ignore"):
        return mix(span_hash(h, inv, words.starts, words.ends) + (words.ends - words.starts).astype(np.uint64))


class Segment:
    """Entries grouped by phoneme key, with the exact index, the tolerant indexes when built with
    them, and a word index (sorted word hashes) for updates."""

    def __init__(self, words: StringTable, weights: np.ndarray, categories: StringTable, key_ids: np.ndarray,
                 key_starts: np.ndarray, key_syllables: np.ndarray, group_offsets: np.ndarray,
                 group_entries: np.ndarray, exact: SignatureIndex, tolerant: tuple[SignatureIndex, ...],
                 word_order: np.ndarray, word_sorted_hashes: np.ndarray):
        self.words, self.weights, self.categories = words, weights, categories
        self.key_ids_flat, self.key_starts = key_ids, key_starts  # CSR: key k = ids[starts[k]:starts[k + 1]]
        self.key_lengths = np.subtract(key_starts[1:], key_starts[:-1], out=np.empty(max(0, len(key_starts) - 1), np.int32),
                                       casting="unsafe")  # no int64 temporary
        self.key_syllables = key_syllables
        self.group_offsets, self.group_entries = group_offsets, group_entries  # CSR: key id -> entry ids
        self.exact, self.tolerant = exact, tolerant
        self.word_order, self.word_sorted_hashes = word_order, word_sorted_hashes

    def __len__(self) -> int:
        return len(self.words)

    @property
    def num_keys(self) -> int:
        return len(self.key_starts) - 1

    @classmethod
    def build(cls, words: list[str], weights: list[float], categories: list[str], keys: list[str],
              syllables: list[int], tolerant: bool) -> "Segment":
        """keys: each entry's phonemes in code-point form (Lexicon.encode)."""
        unique = list(dict.fromkeys(keys))  # in first-seen order; the dict's own loops are C, not a generator's
        key_ids = dict(zip(unique, range(len(unique))))
        key_of = np.fromiter(map(key_ids.__getitem__, keys), np.int64, len(keys))
        lengths = np.fromiter(map(len, unique), np.int64, len(unique))
        starts = np.zeros(len(unique) + 1, np.int64)
        np.cumsum(lengths, out=starts[1:])
        flat = code_ids("".join(unique)).astype(np.uint16)
        key_syllables = np.zeros(len(unique), np.int16)
        key_syllables[key_of] = np.asarray(syllables, np.int16)
        weights_arr = np.asarray(weights, np.float32)
        order = np.lexsort((-weights_arr, key_of))  # by key, heaviest first
        offsets = np.zeros(len(unique) + 1, np.int64)
        np.cumsum(np.bincount(key_of, minlength=len(unique)), out=offsets[1:])
        word_table = StringTable.from_strings(words)
        h = prefix_hashes(flat)
        exact = SignatureIndex.build(flat, starts[:-1], lengths, 0, 1, h)
        indexes = tuple(SignatureIndex.build(flat, starts[:-1], lengths, e, shortest, h, longest)
                        for e, shortest, longest in TOLERANT_INDEXES) if tolerant else ()
        hashes = word_hashes(word_table)
        word_order = np.argsort(hashes, kind="stable").astype(np.int32)
        return cls(word_table, weights_arr, StringTable.from_strings(categories), flat, starts, key_syllables,
                   offsets, order.astype(np.int32), exact, indexes, word_order, hashes[word_order])

    def find_exact(self, code: str, new_from: int = 0) -> list[tuple[int, int, int]]:
        """(key id, x, length) of every key heard exactly at x, for spans ending past `new_from` (the
        phonemes before were searched already). One call into C (_query.c: every key length at every
        position hashed, the bitmap, a search of the sorted signatures for the few it lets through,
        the key compared with what was heard)."""
        e = self.exact
        return _query.find_exact(code, new_from, e.lengths, e.signatures, e.key_ids, e.bitmap, self.key_starts, self.key_ids_flat)

    def key(self, key_id: int) -> str:
        """A key in code-point form."""
        return ids_code(self.key_ids_flat[self.key_starts[key_id] : self.key_starts[key_id + 1]])

    def keys_of(self, key_ids: list[int]) -> list[str]:
        """Many keys in code-point form, decoded at once (one gather and one decode, not one per key)."""
        if not key_ids:
            return []
        ids = np.asarray(key_ids, np.int64)
        starts, lengths = self.key_starts[ids], self.key_lengths[ids].astype(np.int64)
        out = np.full(int(lengths.sum()) + len(ids) - 1, 10, "<u4")  # newline between keys
        first = np.cumsum(lengths + 1) - (lengths + 1)  # where each key begins in `out`
        within = np.arange(int(lengths.sum())) - np.repeat(np.cumsum(lengths) - lengths, lengths)
        out[np.repeat(first, lengths) + within] = self.key_ids_flat[np.repeat(starts, lengths) + within] + CODE_POINT_BASE
        return out.tobytes().decode("utf-32-le").split("\n")

    def group(self, key_id: int) -> np.ndarray:
        """Entry ids of one pronunciation, heaviest first."""
        return self.group_entries[self.group_offsets[key_id] : self.group_offsets[key_id + 1]]

    def category(self, entry_id: int) -> str:
        return self.categories[entry_id] if len(self.categories) == len(self.words) else ""

    def find_words(self, words: list[str]) -> list[int | None]:
        """The entry id of each word, or None."""
        if not words or not len(self):
            return [None] * len(words)
        # no stored word holds a line break (the table's separator): such a word hashes without it, and
        # the comparison below finds it nowhere
        hashes = word_hashes(StringTable.from_strings([w.replace("\n", "") for w in words]))
        at = np.searchsorted(self.word_sorted_hashes, hashes)
        out: list[int | None] = []
        for word, h, i in zip(words, hashes.tolist(), at.tolist()):
            found = None
            while i < len(self.word_order) and int(self.word_sorted_hashes[i]) == h:
                entry = int(self.word_order[i])
                if self.words[entry] == word:
                    found = entry
                    break
                i += 1
            out.append(found)
        return out

    def entries(self, keep: np.ndarray | None = None):
        """(entry, key in code-point form, syllables) of every entry (or of those `keep` marks)."""
        key_of = np.empty(len(self), np.int64)
        key_of[self.group_entries] = np.repeat(np.arange(self.num_keys), np.diff(self.group_offsets))
        for i in (range(len(self)) if keep is None else np.flatnonzero(keep).tolist()):
            k = int(key_of[i])
            yield HotwordEntry(self.words[i], float(self.weights[i]), self.category(i)), self.key(k), int(self.key_syllables[k])

    # --- file sections ----------------------------------------------------------------------------

    def arrays(self) -> dict[str, np.ndarray]:
        out = {
            "words": np.frombuffer(self.words.blob, np.uint8), "word_starts": self.words.starts,
            "categories": np.frombuffer(self.categories.blob, np.uint8), "category_starts": self.categories.starts,
            "weights": self.weights, "key_ids": self.key_ids_flat, "key_starts": self.key_starts,
            "key_syllables": self.key_syllables, "group_offsets": self.group_offsets,
            "group_entries": self.group_entries, "word_order": self.word_order,
            "word_hashes": self.word_sorted_hashes,
        }
        for name, index in [("exact", self.exact)] + [(f"tolerant{i.errors}", i) for i in self.tolerant]:
            out |= {f"{name}_signatures": index.signatures, f"{name}_keys": index.key_ids, f"{name}_lengths": index.lengths,
                    f"{name}_pieces": index.pieces}
            if index.errors:
                out |= {f"{name}_refined_signatures": index.sub_signatures, f"{name}_refined_keys": index.sub_key_ids}
        return out

    DTYPES = {"words": "u1", "word_starts": "<i8", "categories": "u1", "category_starts": "<i8", "weights": "<f4",
              "key_ids": "<u2", "key_starts": "<i8", "key_syllables": "<i2", "group_offsets": "<i8",
              "group_entries": "<i4", "word_order": "<i4", "word_hashes": "<u8"}
    INDEX_DTYPES = {"signatures": "<u8", "keys": "<i4", "lengths": "<i4", "pieces": "<u8"}
    # tolerant signatures are kept as 32-bit fingerprints (signatures.py: fingerprint)
    TOLERANT_DTYPES = INDEX_DTYPES | {"signatures": "<u4", "refined_signatures": "<u4", "refined_keys": "<i4"}

    @classmethod
    def from_arrays(cls, a: dict[str, np.ndarray]) -> "Segment":
        def index(name: str, errors: int) -> SignatureIndex:
            refined = (a[f"{name}_refined_signatures"], a[f"{name}_refined_keys"]) if errors else (None, None)
            return SignatureIndex(errors, a[f"{name}_signatures"], a[f"{name}_keys"], a[f"{name}_lengths"],
                                  a[f"{name}_pieces"], *refined)

        tolerant = tuple(index(f"tolerant{e}", e) for e, _, _ in TOLERANT_INDEXES if f"tolerant{e}_signatures" in a)
        return cls(StringTable(memoryview(a["words"]), a["word_starts"]), a["weights"],
                   StringTable(memoryview(a["categories"]), a["category_starts"]), a["key_ids"],
                   a["key_starts"], a["key_syllables"], a["group_offsets"], a["group_entries"], index("exact", 0),
                   tolerant, a["word_order"], a["word_hashes"])

    def check(self, num_phonemes: int) -> None:
        """Every count, offset, id and length in range, every string valid; raises CorruptData naming
        the first thing that is not."""
        n, k = len(self.words), self.num_keys
        require(len(self.weights) == n, "weights do not match the entries")
        require(all(bool(np.all(np.isfinite(w) & (w >= 0))) for w in blocks(self.weights)), "a weight is not finite or < 0")
        require(len(self.categories) <= n, "more categories than entries")
        for table in (self.words, self.categories):
            table.check()
        check_offsets(self.key_starts, k, len(self.key_ids_flat), "keys")
        require(k == 0 or int(self.key_lengths.min()) > 0, "an empty key")
        require(not len(self.key_ids_flat) or int(self.key_ids_flat.max()) < num_phonemes,
                "a key code that is no phoneme of the inventory")
        require(len(self.key_syllables) == k and (not k or int(self.key_syllables.min()) >= 0), "key syllables out of range")
        check_offsets(self.group_offsets, k, n, "homophone groups")
        require(len(self.group_entries) == n, "homophone groups do not cover the entries")
        require(not n or (self.group_entries.min() >= 0 and self.group_entries.max() < n),
                "a homophone group names an entry that does not exist")
        require(len(self.word_order) == n and len(self.word_sorted_hashes) == n
                and (not n or (self.word_order.min() >= 0 and self.word_order.max() < n)), "word index out of range")
        for index in (self.exact, *self.tolerant):
            problem = index.check(k)
            require(problem is None, problem or "")


def _write_segments(out, segments: list[tuple[Segment, np.ndarray]], start: int) -> list[dict]:
    """Append each segment's arrays (and the base ids it removes) to `out` at `start`; their layout."""
    layout, offset = [], start
    for segment, removed in segments:
        sections = {}
        for name, array in [*segment.arrays().items(), ("removed", removed)]:
            data = np.ascontiguousarray(array).tobytes()
            pad = -offset % 8
            out.write(b"\0" * pad)
            offset += pad
            out.write(data)
            dtype = section_dtype(name)
            sections[name] = {"offset": offset, "bytes": len(data), "dtype": dtype, "crc32": zlib.crc32(data)}
            offset += len(data)
        layout.append({"entries": len(segment), "keys": segment.num_keys, "sections": sections})
    return layout


class HotwordDatabase:
    """A base segment, the changes since it was built, and what was removed from it."""

    def __init__(self, inventory: PhonemeInventory, base: Segment, changes: Segment | None = None,
                 removed: np.ndarray | None = None, source: Path | None = None, layout=None, state=None):
        self.inventory = inventory
        self.base = base
        self.changes = changes  # entries added since the base was built (None: none)
        self.removed = np.zeros(0, np.int32) if removed is None else removed  # base entry ids removed, sorted
        self._removed_set = set(self.removed.tolist())
        # the file it was loaded from (its arrays are views of its mapping), its layout and what it was then
        self.source, self._layout, self.file_state = source, layout, state

    @property
    def segments(self) -> list[Segment]:
        return [self.base] if self.changes is None else [self.base, self.changes]

    @property
    def tolerant(self) -> bool:
        return bool(self.base.tolerant)

    def __len__(self) -> int:
        return len(self.base) - len(self.removed) + (len(self.changes) if self.changes is not None else 0)

    @property
    def num_keys(self) -> int:
        return sum(s.num_keys for s in self.segments)

    def is_removed(self, segment: int, entry_id: int) -> bool:
        return segment == 0 and entry_id in self._removed_set

    @classmethod
    def build(cls, entries: Iterable[tuple[HotwordEntry, list[str]]], lexicon: Lexicon,
              tolerant: bool = False) -> "HotwordDatabase":
        """entries: (entry, phonemes) pairs, phonemes of `lexicon`'s inventory. `tolerant` adds the
        indexes for retrieval despite phoneme errors (more memory and build time)."""
        keyed = []
        for entry, phonemes in entries:
            keyed.append((entry, lexicon.encode(phonemes), lexicon.syllables(phonemes)))
        return cls.build_keyed(keyed, lexicon.inventory, tolerant)

    @classmethod
    def build_columns(cls, words: list[str], keys: list[str], syllables: list[int], inventory: PhonemeInventory,
                      weights: list[float] | None = None, categories: list[str] | None = None,
                      tolerant: bool = False) -> "HotwordDatabase":
        """The same from parallel lists (no entry object per word: a million cost ~2 s to create)."""
        return cls(inventory, _segment(words, keys, syllables, weights, categories, tolerant))

    @classmethod
    def build_keyed(cls, keyed: list[tuple[HotwordEntry, str, int]], inventory: PhonemeInventory,
                    tolerant: bool = False) -> "HotwordDatabase":
        """From (entry, key in code-point form, syllables): what `pronounce_many(as_keys=True)` gives."""
        return cls(inventory, _keyed_segment(keyed, tolerant))

    # --- updates ----------------------------------------------------------------------------------

    def updated(self, add: list[tuple[HotwordEntry, str, int]] = (), remove: Iterable[str] = ()) -> tuple["HotwordDatabase", dict]:
        """A new database with `add` (entry, key, syllables) added (replacing an entry of the same word)
        and the words of `remove` removed; the base segment is shared, only the changes are rebuilt."""
        remove = list(dict.fromkeys(remove))
        changed = {e.word for e, _, _ in add}
        gone_words = set(remove) | changed
        removed = set(self._removed_set)
        base_ids = self.base.find_words(list(gone_words))
        removed.update(i for i in base_ids if i is not None)
        in_base = {w for w, i in zip(gone_words, base_ids) if i is not None and i not in self._removed_set}
        kept: list[tuple[HotwordEntry, str, int]] = []
        in_changes = set()
        if self.changes is not None:
            for entry, key, syllables in self.changes.entries():
                if entry.word in gone_words:
                    in_changes.add(entry.word)
                else:
                    kept.append((entry, key, syllables))
        report = {"added": len(add), "replaced": len(changed & (in_base | in_changes)),
                  "removed": len(set(remove) & (in_base | in_changes)),
                  "not_found": sorted(set(remove) - in_base - in_changes)}
        changes = kept + list(add)
        removed_arr = np.array(sorted(removed), np.int32)
        db = HotwordDatabase(self.inventory, self.base, _keyed_segment(changes, self.tolerant) if changes else None, removed_arr)
        # the base is this one's: save() may copy its bytes from the file it came from, if that is unchanged
        db.source, db._layout, db.file_state = self.source, self._layout, self.file_state
        return db, report

    def compacted(self) -> "HotwordDatabase":
        """The same entries as one base segment (an update then copies less)."""
        keep = np.ones(len(self.base), bool)
        keep[self.removed] = False
        keyed = list(self.base.entries(keep)) + (list(self.changes.entries()) if self.changes is not None else [])
        if not keyed:
            raise HotwordError("a database needs at least one entry")
        return HotwordDatabase(self.inventory, _keyed_segment(keyed, self.tolerant))

    # --- file format ----------------------------------------------------------------------------

    def save(self, path: Path) -> None:
        """Write through a temporary file, fsync, rename: a kill at any moment leaves the old file or the
        new one. When this database's base was loaded from `path` (an update), its bytes are copied as
        they are, by the kernel, and only the changes are written."""
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        remove_dead_writers_files(path)
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.tmp-{os.getpid()}-", dir=path.parent)
        try:
            with os.fdopen(fd, "wb") as out:
                reuse = (self._layout is not None and self.source is not None and same_file(self.source, path)
                         and self.file_state == file_state(path))
                if reuse:
                    base_layout, base_end = self._layout[0], _segment_end(self._layout[0])
                    with open(self.source, "rb") as src:
                        if copy_prefix(src, out, base_end) < base_end:
                            raise HotwordError(f"{self.source}: shorter than its header says; rebuild the database")
                    layout = [base_layout] + _write_segments(out, self._change_segments(), base_end)
                else:
                    out.write(MAGIC + struct.pack("<II", FORMAT_VERSION, 0))
                    layout = _write_segments(out, [(self.base, np.zeros(0, np.int32))] + self._change_segments(), len(MAGIC) + 8)
                header = json.dumps({
                    "format_version": FORMAT_VERSION,
                    "inventory": {"version": self.inventory.version, "sha256": inventory_fingerprint(self.inventory),
                                  "symbols": list(self.inventory.symbols)},
                    "entries": len(self), "segments": layout,
                }, ensure_ascii=False).encode("utf-8")
                out.write(header + _TRAILER.pack(len(header), MAGIC))
                out.flush()
                os.fsync(out.fileno())
            set_default_permissions(Path(tmp))
            os.replace(tmp, path)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise

    def _change_segments(self) -> list[tuple[Segment, np.ndarray]]:
        if self.changes is None and not len(self.removed):
            return []
        changes = self.changes if self.changes is not None else _keyed_segment([], self.tolerant)
        return [(changes, self.removed)]

    @classmethod
    def load(cls, path: Path, expected_inventory: PhonemeInventory | None = None) -> "HotwordDatabase":
        """Map and check a database file. Anything wrong with it (truncated, edited, even with its
        checksums recomputed) is one HotwordError line; a loaded database never fails a query."""
        path = Path(path)
        with input_errors(path, "hotword database", f"build one: nim4-edge hotwords build LIST -o {path}"), \
                open(path, "rb") as f:
            stat = os.fstat(f.fileno())  # of the file mapped, not of whatever the path names a moment later
            size = stat.st_size
            mapping = mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ) if size else b""
        if size < len(MAGIC) + 8 + _TRAILER.size or mapping[: len(MAGIC)] != MAGIC:
            raise HotwordError(f"{path}: not a nim4-edge hotword database")
        (version,) = struct.unpack("<I", mapping[len(MAGIC) : len(MAGIC) + 4])
        if version != FORMAT_VERSION:
            raise HotwordError(f"{path}: database format {version}, this nim4-edge reads {FORMAT_VERSION}; rebuild it "
                               f"with nim4-edge hotwords build")
        header_bytes, magic = _TRAILER.unpack(mapping[size - _TRAILER.size :])
        try:
            require(magic == MAGIC and header_bytes < size, "truncated: no header at its end")
            header = json.loads(bytes(mapping[size - _TRAILER.size - header_bytes : size - _TRAILER.size]))
            inventory = PhonemeInventory(str(header["inventory"]["version"]),
                                         tuple(str(s) for s in header["inventory"]["symbols"]))
        except CorruptData as e:
            raise HotwordError(f"{path}: {e}; rebuild the database") from None
        except (ValueError, KeyError, TypeError, AttributeError):
            raise HotwordError(f"{path}: corrupt header (truncated or tampered); rebuild the database") from None
        if expected_inventory is not None and inventory_fingerprint(inventory) != inventory_fingerprint(expected_inventory):
            raise HotwordError(f"{path}: built with phoneme inventory {inventory.version}, the bundle uses "
                               f"{expected_inventory.version} ({inventory_fingerprint(expected_inventory)[:12]}); "
                               "rebuild it with --bundle")
        try:
            layout = header["segments"]
            require(isinstance(layout, list) and 1 <= len(layout) <= 2, "one or two segments")
            segments, removed = [], np.zeros(0, np.int32)
            for number, seg in enumerate(layout):
                arrays = _arrays(mapping, seg["sections"], size - _TRAILER.size - header_bytes)
                segment = Segment.from_arrays(arrays)
                require(int(seg["entries"]) == len(segment) and int(seg["keys"]) == segment.num_keys,
                        f"the header counts {seg['entries']} entries / {seg['keys']} keys, the sections "
                        f"{len(segment)} / {segment.num_keys}")
                segment.check(len(inventory.symbols))
                segments.append(segment)
                if number:
                    removed = arrays["removed"]
                    require(not len(removed) or (removed.min() >= 0 and removed.max() < len(segments[0])
                                                 and increasing(removed, strict=True)), "removed entries out of range")
            require(int(header["entries"]) == len(segments[0]) - len(removed) + sum(len(s) for s in segments[1:]),
                    "the header's entry count does not match the segments")
        except CorruptData as e:
            raise HotwordError(f"{path}: {e}; rebuild the database") from None
        except (KeyError, TypeError, ValueError, IndexError, AttributeError, OverflowError, UnicodeDecodeError) as e:
            raise HotwordError(f"{path}: corrupt database ({type(e).__name__}: {e}); rebuild it") from None
        return cls(inventory, segments[0], segments[1] if len(segments) > 1 else None, removed, path, layout,
                   _state(stat))

    def changed_on_disk(self) -> bool:
        """True when the file this was loaded from has been replaced since (an update)."""
        return self.source is not None and file_state(self.source) != self.file_state


def _segment(words: list[str], keys: list[str], syllables: list[int], weights: list[float] | None,
             categories: list[str] | None, tolerant: bool) -> Segment:
    """A segment of these entries, after the limits every entry must keep."""
    weights = [1.0] * len(words) if weights is None else weights
    w, counts = np.asarray(weights, np.float64), np.asarray(syllables, np.int64)  # checked at once, the first bad one named
    bad = np.flatnonzero(~((w >= 0) & (w <= MAX_WEIGHT)) | (counts > MAX_ENTRY_SYLLABLES))
    if len(bad):
        i = int(bad[0])
        if not 0 <= weights[i] <= MAX_WEIGHT:
            raise HotwordError(f"hotword {words[i]!r}: weight {weights[i]} is outside 0-{MAX_WEIGHT:g}")
        raise HotwordError(f"hotword {words[i][:40]!r}...: more than {MAX_ENTRY_SYLLABLES} syllables")
    categories = [""] * len(words) if categories is None else categories
    try:
        return Segment.build(words, weights, categories, keys, syllables, tolerant)
    except LineBreakError as e:  # the tables separate their strings by line breaks
        what = "hotword" if "\n" in "".join(words) else "category"
        raise HotwordError(f"{what} {e}: one hotword per line, without breaks") from None


def _keyed_segment(keyed: list[tuple[HotwordEntry, str, int]], tolerant: bool) -> Segment:
    return _segment([e.word for e, _, _ in keyed], [k for _, k, _ in keyed], [n for _, _, n in keyed],
                    [e.weight for e, _, _ in keyed], [e.category for e, _, _ in keyed], tolerant)


def _arrays(mapping, sections: dict, body_end: int) -> dict[str, np.ndarray]:
    out = {}
    for name, where in sections.items():
        offset, size, dtype = int(where["offset"]), int(where["bytes"]), np.dtype(str(where["dtype"]))
        require(dtype.kind in "iuf" and dtype.itemsize <= 8, f"section {name!r} has dtype {dtype}")
        require(0 <= offset and 0 <= size and offset + size <= body_end and offset % dtype.itemsize == 0,
                f"section {name!r} lies outside the file")
        require(size % dtype.itemsize == 0, f"section {name!r} is not a whole number of values")
        view = memoryview(mapping)[offset : offset + size]
        require(zlib.crc32(view) == int(where["crc32"]), f"section {name!r} is truncated or was modified")
        out[name] = np.frombuffer(view, dtype)
    missing = sorted(REQUIRED_SECTIONS - set(out))
    require(not missing, f"section {missing[0]!r} is missing" if missing else "")
    for name, array in out.items():
        want = section_dtype(name)
        require(want is not None and array.dtype == np.dtype(want), f"section {name!r} is not {want}")
    return out


REQUIRED_SECTIONS = set(Segment.DTYPES) | {f"exact_{name}" for name in Segment.INDEX_DTYPES} | {"removed"}


def section_dtype(name: str) -> str | None:
    """The dtype a section must have; None for a name no segment has."""
    if name in Segment.DTYPES:
        return Segment.DTYPES[name]
    if name == "removed":
        return "<i4"
    index, _, field = name.partition("_")
    if index == "exact":
        return Segment.INDEX_DTYPES.get(field)
    if index in {f"tolerant{e}" for e, _, _ in TOLERANT_INDEXES}:
        return Segment.TOLERANT_DTYPES.get(field)
    return None


def _segment_end(layout: dict) -> int:
    return max((int(w["offset"]) + int(w["bytes"]) for w in layout["sections"].values()), default=len(MAGIC) + 8)


def _state(st: os.stat_result) -> tuple:
    return (st.st_ino, st.st_dev, st.st_size, st.st_mtime_ns)


def file_state(path: Path):
    """What tells a replaced file from the one loaded: inode, device, size, modification time."""
    try:
        return _state(os.stat(path))
    except OSError:
        return None


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
