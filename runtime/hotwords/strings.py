"""Storage pieces the database and its indexes share: a string table, and range checks of loaded
data (a file is data: an edited one must fail at load, not in a query)."""

from __future__ import annotations

import codecs

import numpy as np

CODE_POINT_BASE = 0xE000  # phoneme id i <-> chr(0xE000 + i): Unicode private use area (lexicon.py, the manifest)
_BASE = np.uint32(CODE_POINT_BASE)


def code_ids(code: str) -> np.ndarray:
    """Phonemes in code-point form -> their ids (uint32; any other character, e.g. a newline between
    keys, wraps around to a value above every id, and ids_code brings it back)."""
    return np.frombuffer(code.encode("utf-32-le"), "<u4") - _BASE


def ids_code(ids: np.ndarray) -> str:
    """Phoneme ids -> code-point form (the inverse of code_ids)."""
    return (ids.astype("<u4") + _BASE).tobytes().decode("utf-32-le")


class LineBreakError(ValueError):
    """A string given to a StringTable holds its separator, a line break."""

    def __init__(self, string: str):
        super().__init__(f"{string[:40]!r} holds a line break")
        self.string = string


class StringTable:
    """Many strings as one UTF-8 blob (newline-separated) and where each starts: a million Python str
    objects would cost ~70 MB more and slow the load; loaded, the blob is a view of the mapped file."""

    def __init__(self, blob, starts: np.ndarray):
        self.blob = blob  # bytes, or a memoryview of the mapped file
        self.starts = starts

    @classmethod
    def from_strings(cls, items: list[str]) -> "StringTable":
        if not any(items):  # e.g. a million entries without a category: no string to encode
            return cls(b"\n" * max(0, len(items) - 1), np.arange(len(items), dtype=np.int64))
        blob = "\n".join(items).encode("utf-8")  # the starts from where its separators are: no loop per string
        starts = np.zeros(len(items), np.int64)
        separators = np.flatnonzero(np.frombuffer(blob, np.uint8) == 10)
        if len(separators) != len(items) - 1:
            raise LineBreakError(next(item for item in items if "\n" in item))
        starts[1:] = separators + 1
        return cls(blob, starts)

    def __len__(self) -> int:
        return len(self.starts)

    @property
    def ends(self) -> np.ndarray:
        return np.append(self.starts[1:] - 1, len(self.blob)).astype(np.int64)

    def __getitem__(self, i: int) -> str:
        end = int(self.starts[i + 1]) - 1 if i + 1 < len(self.starts) else len(self.blob)
        return str(self.blob[int(self.starts[i]) : end], "utf-8")  # decoded from the view: no copy first

    def __iter__(self):
        return (self[i] for i in range(len(self)))

    def __eq__(self, other) -> bool:
        return list(self) == list(other)

    def check(self) -> None:
        """Starts in order and in the blob, each string ending at a separator, the blob valid UTF-8."""
        n, size = len(self.starts), len(self.blob)
        if not n:
            require(size == 0, "strings without a table")
            return
        require(int(self.starts[0]) == 0 and int(self.starts[-1]) <= size and increasing(self.starts, strict=True),
                "string offsets out of range")
        data = np.frombuffer(self.blob, np.uint8)
        separators = sum(int(np.count_nonzero(block == 10)) for block in blocks(data))
        require(separators == n - 1 and all(bool(np.all(data[b - 1] == 10)) for b in blocks(self.starts[1:])),
                "strings and their separators do not match")
        decoder = codecs.getincrementaldecoder("utf-8")()  # UnicodeDecodeError: caught by load
        for lo in range(0, size, BLOCK):
            decoder.decode(self.blob[lo : lo + BLOCK], final=lo + BLOCK >= size)


class CorruptData(ValueError):
    """A loaded structure that is out of range; HotwordDatabase.load turns it into one HotwordError."""


def require(condition: bool, what: str) -> None:
    if not condition:
        raise CorruptData(f"corrupt database ({what})")


def check_offsets(offsets: np.ndarray, groups: int, total: int, what: str) -> None:
    """CSR offsets: groups + 1 of them, from 0 to `total`, never decreasing."""
    require(len(offsets) == groups + 1 and int(offsets[0]) == 0 and int(offsets[-1]) == total
             and increasing(offsets), f"{what}: offsets out of range")


# Checks run block by block: a whole-array comparison of a million-entry section makes a temporary
# as large (5.6 MB of booleans for the two-error signatures, a 20 MB copy to decode the words), and
# glibc keeps such freed blocks in the heap: measured at 1M, 37 MB of the process's RSS after load.
BLOCK = 1 << 18


def blocks(array):
    return (array[lo : lo + BLOCK] for lo in range(0, len(array), BLOCK))


def increasing(array: np.ndarray, strict: bool = False) -> bool:
    """Sorted (strictly: no two equal), looked at a block at a time, each with its predecessor."""
    for lo in range(0, max(0, len(array) - 1), BLOCK):
        a, b = array[lo : lo + BLOCK], array[lo + 1 : lo + 1 + BLOCK]
        if bool(np.any(b <= a[: len(b)])) if strict else bool(np.any(b < a[: len(b)])):
            return False
    return True
