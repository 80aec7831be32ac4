"""Storage pieces the database and the piece index share: a string table and the automaton's
(de)serializer.

A loaded automaton comes from a pickle, read by an unpickler that can construct nothing but
`ahocorasick.Automaton`: a file never runs code.
"""

from __future__ import annotations

import io
import pickle

import ahocorasick
import numpy as np

CODE_POINT_BASE = 0xE000  # phoneme id i <-> chr(0xE000 + i): Unicode private use area (lexicon.py, the manifest)


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


def build_automaton(keys: list[str]) -> ahocorasick.Automaton:
    """An Aho-Corasick automaton over `keys`; a match yields the key's index in `keys`."""
    automaton = ahocorasick.Automaton()
    for key_id, key in enumerate(keys):
        automaton.add_word(key, key_id)
    if keys:
        automaton.make_automaton()
    return automaton


def dump_automaton(automaton: ahocorasick.Automaton) -> bytes:
    return pickle.dumps(automaton, protocol=5)


class _AutomatonOnly(pickle.Unpickler):
    """Unpickles an ahocorasick.Automaton and refuses every other global (no code from the file)."""

    def find_class(self, module: str, name: str):
        if (module, name) == ("ahocorasick", "Automaton"):
            return ahocorasick.Automaton
        raise pickle.UnpicklingError(f"{module}.{name} is not allowed in a hotword database")


def load_automaton(data: bytes) -> ahocorasick.Automaton:
    """The automaton stored by `dump_automaton`; raises pickle.UnpicklingError for anything else."""
    return _AutomatonOnly(io.BytesIO(data)).load()


# --- checks of loaded data (a file is data: an edited one must fail at load, not in a query) --------------

class CorruptData(ValueError):
    """A loaded structure that is out of range; HotwordDatabase.load turns it into one HotwordError."""


def require(condition: bool, what: str) -> None:
    if not condition:
        raise CorruptData(f"corrupt database ({what})")


def check_offsets(offsets: np.ndarray, groups: int, total: int, what: str) -> None:
    """CSR offsets: groups + 1 of them, from 0 to `total`, never decreasing."""
    require(len(offsets) == groups + 1 and int(offsets[0]) == 0 and int(offsets[-1]) == total
             and not np.any(np.diff(offsets) < 0), f"{what}: offsets out of range")


def check_phoneme_codes(table: StringTable, num_phonemes: int, what: str) -> None:
    """Every string of `table` made of phoneme code points of an inventory of `num_phonemes`."""
    text = table.blob.decode("utf-8")
    codes = np.frombuffer(text.encode("utf-32-le"), dtype="<u4")
    ok = (codes == 10) | ((codes >= CODE_POINT_BASE) & (codes < CODE_POINT_BASE + num_phonemes))
    require(bool(np.all(ok)), f"{what}: a code that is no phoneme of the inventory")
    require(not len(table) or int(table.code_point_lengths().min()) > 0, f"{what}: an empty key")


def check_automaton(automaton, size: int, what: str) -> None:
    require(isinstance(automaton, ahocorasick.Automaton), f"{what} is not an Aho-Corasick automaton")
    require(len(automaton) == size, f"{what} holds {len(automaton)} keys, the table {size}")
    require(automaton.kind == (ahocorasick.AHOCORASICK if size else ahocorasick.EMPTY), f"{what} was never built")
