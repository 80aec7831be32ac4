"""Hashed signatures: the index behind exact and tolerant hotword retrieval.

A key (phoneme ids) of length L is cut into parts (PARTS); a signature is a 64-bit hash of a set of
its parts, which set, and L. `errors` edits touch at most `errors` parts, so `parts - errors` parts of
a key heard that badly are intact (pigeonhole), and the signature of those is found exactly; the exact
index is the same with one part, the whole key. The indexes are built here in numpy; they are
searched in C (_query.c), which computes with the same arithmetic the signatures a key of every
indexed length would have at every heard position (prefix hashes: any substring's hash in two
operations; shifts for the insertions and deletions between parts), after a first filter (a bitmap
of the exact signatures; the single parts of the tolerant ones), and looks them up in the sorted
arrays. A tolerant signature shared by more than COMMON keys is looked up again with a part it leaves
out, as heard (_popular_variants): the lists verified stay short however popular a part is. A
tolerant hit names a key and where it would lie; the C code verifies it by edit distance.

Why not the Aho-Corasick automata of format 1 (measured at a million entries, docs/MEASUREMENTS.md):
an automaton is a tree of millions of malloc'd nodes, built in Python one key at a time (~10 s),
unpickled node by node at every load (~1 s, ~360 MB private memory per process); these arrays are
built by a sort, memory-mapped at load (pages shared between processes) and never grow with the
popularity of a part, where format 1's halves listed every key sharing one half (thousands for "...西街").

Hash: polynomial over phoneme id + 1 with an odd 64-bit base, modulo 2^64 (unsigned overflow, in
numpy and in C); tolerant signatures are stored as their top 32 bits (fingerprint). A collision costs one
wasted verification, never a wrong result.
"""

from __future__ import annotations

from dataclasses import dataclass
from itertools import combinations

import numpy as np

from nim4_edge.runtime.hotwords import _query
from nim4_edge.runtime.hotwords.strings import increasing

BASE = np.uint64(0x9E3779B97F4A7C15)  # odd: invertible modulo 2^64
MAX_KEY = 255  # longest key indexed (tags keep L in 8 bits); the database allows 64 syllables, ~200 phonemes


def _inverse(b: np.uint64) -> np.uint64:
    x = b  # Newton's iteration for the inverse modulo 2^64 (b odd): 6 steps double 3 correct bits to 64+
    with np.errstate(over="ignore"):
        for _ in range(6):
            x = x * (np.uint64(2) - b * x)
    return x


def _accumulated_powers(n: int, b: np.uint64) -> np.ndarray:
    p = np.full(n, b, np.uint64)
    p[0] = 1
    return np.multiply.accumulate(p)


_BLOCK = 4096
_POW, _INV = _accumulated_powers(_BLOCK, BASE), _accumulated_powers(_BLOCK, _inverse(BASE))  # any utterance's


def powers(n: int) -> tuple[np.ndarray, np.ndarray]:
    """BASE^k and BASE^-k for k < n. Beyond one block, as BASE^(4096 j) x BASE^i for k = 4096 j + i:
    one multiplication per element instead of a sequential accumulate (the 10M phonemes of a 1M
    database took ~0.25 s a table that way); products modulo 2^64, so the values are the same."""
    if n <= _BLOCK:
        return _POW[:n].copy(), _INV[:n].copy()
    blocks = -(-n // _BLOCK)
    with np.errstate(over="ignore"):
        return tuple(np.multiply.outer(_accumulated_powers(blocks, small[-1] * step), small).ravel()[:n]
                     for small, step in ((_POW, BASE), (_INV, _inverse(BASE))))


_S30, _S27, _S31 = np.uint64(30), np.uint64(27), np.uint64(31)
_M1, _M2 = np.uint64(0xBF58476D1CE4E5B9), np.uint64(0x94D049BB133111EB)


def mix(x: np.ndarray) -> np.ndarray:
    """splitmix64's finalizer: neighbouring inputs to unrelated outputs (so the sort spreads evenly)."""
    x = x ^ (x >> _S30)  # a new array: the caller's stays as it was; in place from here on
    x *= _M1
    x ^= x >> _S27
    x *= _M2
    x ^= x >> _S31
    return x


def prefix_hashes(ids: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """H with H[k] = sum_{t<k} (ids[t] + 1) BASE^t, and BASE^-t: substring [a, b) hashes to
    (H[b] - H[a]) * BASE^-a, the same wherever the substring stands."""
    n = len(ids)
    pw, inv = (_POW[:n], _INV[: n + 1]) if n < len(_POW) else powers(n + 1)
    h = np.zeros(n + 1, np.uint64)
    np.cumsum((ids.astype(np.uint64) + np.uint64(1)) * pw[:n], out=h[1:])
    return h, inv


def span_hash(h: np.ndarray, inv: np.ndarray, a, b):
    """The hash of phonemes [a, b) from prefix_hashes (arrays of positions broadcast)."""
    with np.errstate(over="ignore"):
        return (h[b] - h[a]) * inv[a]


def joined_hash(h: np.ndarray, inv: np.ndarray, a, cut, after, b):
    """The hash of [a, cut) followed by [after, b): a substring with [cut, after) taken out (one
    phoneme deleted when after = cut + 1; the whole [a, b) when after = cut)."""
    with np.errstate(over="ignore"):
        return span_hash(h, inv, a, cut) + span_hash(h, inv, after, b) * _POW[cut - a]


_SLOTS = np.array([0xD6E8FEB86659FD93, 0xA0761D6478BD642F, 0x8EBC6AF09C88C6E3, 0x589965CC75374CC3], np.uint64)
_TAG = np.uint64(0xE7037ED1A0B428DB)


def combine(hashes: list[np.ndarray], tag: np.ndarray) -> np.ndarray:
    """The signature of parts with these hashes (one array per slot) under `tag`."""
    with np.errstate(over="ignore"):
        total = tag.astype(np.uint64) * _TAG
        for slot, h in enumerate(hashes):
            total = total + h * _SLOTS[slot]
        return mix(total)


def bounds(length: int, parts: int) -> list[int]:
    """Where a key of `length` phonemes is cut: part p is key[b[p]:b[p + 1]]."""
    return [length * i // parts for i in range(parts + 1)]


# parts a key is cut into, by errors tolerated: e errors touch at most e parts, so parts - e stay intact.
# One error: 2 of 3 parts (pairs: two thirds of the key). Two errors: 3 of 5, not 2 of 4: a pair of
# quarters is half a key, and half of "James A. Ashford" is shared by thousands of names (measured:
# ~2,900 hits per query at a million entries against ~100 with 3 of 5).
PARTS = {0: 1, 1: 3, 2: 5}
# keys behind one tolerant signature, at most, for it to be verified as it is; a more popular one is
# refined (_popular_variants). Chosen when popular ones were skipped (1M, 300 utterances: 32 -> one-
# error recall 92.0%, p99 2.7 ms; 128 -> 98.3%, 6.1 ms; no limit -> 99.0%, 36 ms); refined lists
# beyond it are skipped (a one-phoneme missing part: its deletion is empty and names them all)
COMMON = 64


def _shift_choices(gaps: list[int], errors: int) -> list[tuple[int, ...]]:
    """Insertions minus deletions between consecutive chosen parts: no more deletions than the
    phonemes between them, none where they touch, at most `errors` edits in all."""
    choices = [()]
    for gap in gaps:
        choices = [c + (d,) for c in choices for d in (range(-min(errors, gap), errors + 1) if gap else (0,))]
    return [c for c in choices if sum(abs(d) for d in c) <= errors]


@dataclass(frozen=True)
class Probe:
    """One way a key of `length` can lie in the heard phonemes: the parts `chosen` intact, the first at
    x, the others at x + offsets[t] (the shifts of insertions and deletions between them included)."""

    length: int
    subset: int  # which set of parts (its number among the combinations of `parts`)
    chosen: tuple[int, ...]
    first_start: int  # where the first chosen part begins in the key
    offsets: tuple[int, ...]  # each chosen part's start in the heard phonemes, relative to x
    lengths: tuple[int, ...]
    spare: int  # edits the shifts leave for before the first and after the last chosen part
    tail: int  # phonemes of the key after the last chosen part
    last: bool  # the last chosen part ends the key


class SignatureIndex:
    """Signatures of every key's `parts - errors` parts out of `parts` (the whole key when exact), the
    key behind each, sorted; `pieces` are the signatures of single parts (by place and length), a cheap
    first filter: a probe is looked up only where each of its parts is that part of some key."""

    def __init__(self, errors: int, signatures: np.ndarray, key_ids: np.ndarray, lengths: np.ndarray,
                 pieces: np.ndarray | None = None, sub_signatures: np.ndarray | None = None,
                 sub_key_ids: np.ndarray | None = None):
        self.errors = errors
        self.parts = PARTS[errors]
        self.keep = self.parts - errors  # intact parts guaranteed: 1 (the whole key), 2 of 3, 3 of 5
        self.signatures, self.key_ids = signatures, key_ids  # sorted by signature
        self.lengths = lengths  # the distinct key lengths indexed, ascending
        self.pieces = pieces if pieces is not None else np.zeros(0, np.uint64)
        # the popular signatures, refined (see _popular_variants), sorted
        self.sub_signatures = sub_signatures if sub_signatures is not None else np.zeros(0, np.uint32)
        self.sub_key_ids = sub_key_ids if sub_key_ids is not None else np.zeros(0, np.int32)
        self.plan = self._probes()
        self.bitmap = _bitmap(signatures, _BITMAP_BITS) if errors == 0 else None
        self.piece_bits = _bitmap(self.pieces, _PIECE_BITS) if errors else None
        self.kinds, self.probe_table = self._probe_table() if errors else (None, None)

    def _probe_table(self) -> tuple[np.ndarray, np.ndarray]:
        """The probes as _query.c reads them: the distinct (part, part length) kinds of the single-part
        filter, and one int64 row per probe (_query.c's COL_* columns: tag, where the first chosen part
        begins in the key, the edits left, whether the last chosen part ends the key, the key's end and
        the span's end relative to x, how many extents the first missing part has; then per chosen part
        its offset, length and kind; then the extents' starts and lengths, -1 padded)."""
        k = self.keep
        slot_kinds = np.array([[c * 256 + n for c, n in zip(p.chosen, p.lengths)] for p in self.plan], np.int64).reshape(-1, k)
        kinds, slot_kind = np.unique(slot_kinds, return_inverse=True)
        extents = [_missing_extents(p, self.parts, self.errors) for p in self.plan]
        width = max((len(e) for e in extents), default=0)
        rows = []
        for p, e, kind in zip(self.plan, extents, slot_kind.reshape(-1, k).tolist()):
            pad = [0] * (width - len(e))
            rows.append([(p.length << 8) | p.subset, p.first_start, p.spare, p.last, p.offsets[-1] + p.lengths[-1] + p.tail,
                         max(o + n for o, n in zip(p.offsets, p.lengths)), len(e), *p.offsets, *p.lengths, *kind,
                         *(a for a, _ in e), *pad, *(n for _, n in e), *[-1] * len(pad)])
        return kinds, np.array(rows, np.int64).reshape(len(rows), 7 + 3 * k + 2 * width)

    def _probes(self) -> list[Probe]:
        out = []
        for length in self.lengths.tolist():
            b = bounds(length, self.parts)
            for subset, chosen in enumerate(combinations(range(self.parts), self.keep)):
                gaps = [b[chosen[t + 1]] - b[chosen[t] + 1] for t in range(self.keep - 1)]
                for shifts in _shift_choices(gaps, self.errors):
                    offsets = [b[c] - b[chosen[0]] + sum(shifts[:t]) for t, c in enumerate(chosen)]
                    out.append(Probe(length, subset, chosen, b[chosen[0]], tuple(offsets),
                                     tuple(b[c + 1] - b[c] for c in chosen), self.errors - sum(abs(d) for d in shifts),
                                     length - b[chosen[-1] + 1], chosen[-1] == self.parts - 1))
        return out

    def __len__(self) -> int:
        return len(self.signatures)

    @classmethod
    def build(cls, ids: np.ndarray, starts: np.ndarray, lengths: np.ndarray, errors: int, min_key: int,
              h=None, max_key: int = MAX_KEY) -> "SignatureIndex":
        """Over keys laid end to end in `ids` (key k: ids[starts[k] : starts[k] + lengths[k]]);
        keys shorter than `min_key` (or than the parts) or longer than `max_key` are left out. `h`: prefix_hashes(ids), when the
        caller builds several indexes over the same keys (hashed once for all of them)."""
        parts = PARTS[errors]
        keep_parts = parts - errors
        keep = np.flatnonzero((lengths >= max(min_key, parts)) & (lengths <= min(max_key, MAX_KEY)))
        h, inv = h if h is not None else prefix_hashes(ids)
        sigs, owners, pieces, batches = [], [], [], []
        with np.errstate(over="ignore"):
            for length in np.unique(lengths[keep]).tolist():  # per length: its cut points are constants
                keys = keep[lengths[keep] == length]
                s = starts[keys]
                b = bounds(length, parts)
                part_hash = [span_hash(h, inv, s + b[p], s + b[p + 1]) for p in range(parts)]
                if errors:
                    for p in range(parts):
                        pieces.append(combine([part_hash[p]], np.int64(p * 256 + b[p + 1] - b[p])))
                for subset, chosen in enumerate(combinations(range(parts), keep_parts)):
                    sigs.append(combine([part_hash[c] for c in chosen], np.int64((length << 8) | subset)))
                    owners.append(keys)
                    batches.append((s, b, chosen))
        sigs_all = np.concatenate(sigs) if sigs else np.zeros(0, np.uint64)
        if errors:
            sigs_all = fingerprint(sigs_all)
        owners_all = np.concatenate(owners).astype(np.int32) if owners else np.zeros(0, np.int32)
        order = np.argsort(sigs_all)  # equal signatures in any order: no stable sort needed (faster)
        piece_sigs = np.unique(np.concatenate(pieces)) if pieces else np.zeros(0, np.uint64)
        sigs_sorted = sigs_all[order]
        sub_sigs, sub_keys = _popular_variants(sigs, owners, batches, sigs_sorted, (h, inv), parts) if errors else (None, None)
        return cls(errors, sigs_sorted, owners_all[order], np.unique(lengths[keep]).astype(np.int32), piece_sigs,
                   sub_sigs, sub_keys)

    def search(self, code: str, new_from: int, pending: bytes, best: bytes, segment: int, key_starts: np.ndarray,
               key_phonemes: np.ndarray, toneless: np.ndarray) -> tuple[bytes, bytes]:
        """Keys of this tolerant index heard within its errors in `code`, for probes whose span ends past
        `new_from` and for the hits `pending` from the call before (windows that ran past what was heard
        then), merged into `best` (the call before's; b"" at first): each key's closest window, as
        retrieval.py's table rows of segment number `segment`, in the order keys were first found; and
        the hits pending now. Both go back in with the next call of the same utterance. One call into C
        (_query.c)."""
        if not len(self.plan):
            return best, b""
        return _query.find_tolerant(code, new_from, pending, best, segment, self.errors, COMMON, self.keep, self.probe_table.shape[1],
                                    self.probe_table, self.kinds, self.signatures, self.key_ids, self.pieces,
                                    self.piece_bits, self.sub_signatures, self.sub_key_ids, key_starts, key_phonemes, toneless)

    def check(self, num_keys: int) -> str | None:
        """What is out of range, or None (a file is data: an edited one fails at load, not in a query)."""
        if len(self.signatures) != len(self.key_ids):
            return f"{self.errors}-error signatures and key ids differ in length"
        if len(self.key_ids) and (int(self.key_ids.min()) < 0 or int(self.key_ids.max()) >= num_keys):
            return f"{self.errors}-error index names a key that does not exist"
        if len(self.lengths) and (int(self.lengths.min()) < 1 or int(self.lengths.max()) > MAX_KEY):
            return f"{self.errors}-error index has a key length out of range"
        if len(self.sub_signatures) != len(self.sub_key_ids):
            return f"{self.errors}-error refined signatures and key ids differ in length"
        if len(self.sub_key_ids) and (int(self.sub_key_ids.min()) < 0 or int(self.sub_key_ids.max()) >= num_keys):
            return f"{self.errors}-error refined index names a key that does not exist"
        for name, array in (("signatures", self.signatures), ("pieces", self.pieces),
                            ("refined signatures", self.sub_signatures)):
            if not increasing(array):
                return f"{self.errors}-error {name} are not sorted"
        return None


# The exact index's first filter (_query.c reads it): one bit per 2^40 signature values, set where a
# key's signature falls (2 MB; 6% of the bits set at a million keys, so 94% of the probes that are no
# key stop there). A binary search of the 1M signatures is ~20 reads scattered over 8 MB: measured at
# 1M with numpy, the search was 43 of an exact query's 58 us (cProfile, 300 utterances). Built at load
# (4 ms at 1M), never stored. A tolerant index's single parts have one of 2^16 bits (8 KB; ~6,000
# pieces at 1M set ~9% of them): most parts heard are no key's and stop before the search.
_BITMAP_BITS = 24  # _query.c's BITMAP_BITS
_PIECE_BITS = 16  # _query.c's PIECE_BITS


def _bitmap(signatures: np.ndarray, bits: int) -> np.ndarray:
    """The set top `bits` bits of 64-bit signatures, as 64-bit words (every operation of the test stays
    in uint64: no mixed-type casts)."""
    table = np.zeros(1 << bits, bool)
    table[signatures >> np.uint64(64 - bits)] = True
    return np.packbits(table, bitorder="little").view("<u8").astype(np.uint64)


def _missing_extents(p: Probe, parts: int, errors: int) -> list[tuple[int, int]]:
    """(start relative to x, length) of the heard phonemes that can stand for a probe's first missing
    part. Between two chosen parts it is fixed by the probe; next to one chosen part that edge is,
    and the length moves by up to `errors` (more than the probe's spare edits: the next missing part
    may take back what this one gained); the first part of a key whose second is missing too has
    neither edge: its start moves by the insertions minus deletions of both, its length by its own.
    Too many extents cost lookups, never a wrong key (hits are verified)."""
    b = bounds(p.length, parts)
    missing = min(set(range(parts)) - set(p.chosen))
    n = b[missing + 1] - b[missing]
    where = {c: (o, o + length) for c, o, length in zip(p.chosen, p.offsets, p.lengths)}  # chosen part -> heard span
    slack = range(-errors, errors + 1)
    if missing - 1 in where and missing + 1 in where:
        start, end = where[missing - 1][1], where[missing + 1][0]
        return [(start, end - start)]
    if missing - 1 in where:
        return [(where[missing - 1][1], n + d) for d in slack if n + d >= 0]
    if missing + 1 in where:
        return [(where[missing + 1][0] - (n + d), n + d) for d in slack if n + d >= 0]
    nominal = b[missing] - b[p.chosen[0]]  # the key's start, no edit before its first chosen part
    # start moved by -D (D: net insertions in both missing parts), length by d: |d| + |D - d| edits
    return [(nominal + shift, n + d) for shift in slack for d in slack if n + d >= 0 and abs(d) + abs(shift + d) <= errors]


def _popular_variants(sigs: list[np.ndarray], owners: list[np.ndarray], batches: list, sigs_sorted: np.ndarray,
                      h: tuple[np.ndarray, np.ndarray], parts: int) -> tuple[np.ndarray, np.ndarray]:
    """The refinement of popular signatures (shared by more than COMMON keys: two thirds of "Linda M.
    Whitdale"): each such key's first missing part, whole and with each one phoneme deleted, hashed
    with the signature. A key one error from what was heard, with its two parts intact, has a
    missing part one edit from the heard one, and one edit means some deletion of each is the same
    string (a substitution: both lose it; an insertion or a deletion: one side loses it); with two
    errors and three of five parts intact, the two missing parts share them, so one of the two holds
    at most one (the first is indexed: if it holds both, the second and three others are intact, and
    other signatures of the key see it). A list behind such a refined signature holds keys that share
    most of their phonemes. Measured at 1M: 109,000 of the 1.3M one-error signatures and 1.13M of
    the 5.6M two-error ones are in popular groups (0.43M and 3.74M refined signatures)."""
    hashes, inv = h
    runs = np.flatnonzero(np.r_[True, sigs_sorted[1:] != sigs_sorted[:-1], True])
    popular = sigs_sorted[runs[:-1][np.diff(runs) > COMMON]]  # sorted fingerprints
    out_sigs, out_keys = [], []
    for batch_sigs, keys, (s, b, chosen) in zip(sigs, owners, batches) if len(popular) else ():
        f = fingerprint(batch_sigs)
        pick = np.flatnonzero(popular[np.minimum(np.searchsorted(popular, f), len(popular) - 1)] == f)
        if not len(pick):
            continue
        missing = min(set(range(parts)) - set(chosen))
        a, ell = s[pick] + b[missing], b[missing + 1] - b[missing]
        for j in range(-1, ell):  # -1: nothing deleted; else the phoneme at a + j
            which = pick
            if j > 0:  # deleting either of two equal neighbours gives one string: listed once
                new = span_hash(hashes, inv, a + j, a + j + 1) != span_hash(hashes, inv, a + j - 1, a + j)
                a_j, which = a[new], pick[new]
            else:
                a_j = a
            cut = a_j + max(j, 0)
            v = joined_hash(hashes, inv, a_j, cut, cut + (j >= 0), a_j + ell)
            out_sigs.append(fingerprint(combine([batch_sigs[which], v], np.int64(ell - (j >= 0)))))
            out_keys.append(keys[which])
    if not out_sigs:
        return np.zeros(0, np.uint32), np.zeros(0, np.int32)
    sig, key = np.concatenate(out_sigs), np.concatenate(out_keys).astype(np.int32)
    order = np.argsort(sig)
    return sig[order], key[order]


# Tolerant signatures are stored as their top 32 bits: a chance equality with one of the 5.6M
# two-error signatures has odds 5.6M / 2^32 = 0.13% per probe and costs one verified (rejected)
# window; it saves 4 bytes per signature (54 MB at a million entries, with the refined ones).
_32 = np.uint64(32)


def fingerprint(signatures: np.ndarray) -> np.ndarray:
    return (signatures >> _32).astype(np.uint32)

