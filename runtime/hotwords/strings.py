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
