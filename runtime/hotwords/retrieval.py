"""Hotword retrieval for one stream and one utterance.

Per utterance (`RetrievalSession`) the greedy CTC phoneme string grows chunk by chunk and only
signatures ending in the new part are looked up (signatures.py); matches inside a longer match are
dropped (NIO inside NIO House); keys of fewer than `min_syllables` syllables (two-syllable names cause
most false matches at a million entries, docs/FACTS.md) count only if they are per-stream additions;
the top K by length, then weight, go into the prompt. Per-stream additions and removals
(`HotwordRetriever.add/remove`) sit on top of the shared database (`LiveDatabase`: picked up again
when `hotwords add/remove` replaces its file). The tolerant modes add keys heard with one phoneme
error (two in keys of >= 10 phonemes), found and verified by edit distance with tones forgiven in
one C call per index and chunk (SignatureIndex.search); of tolerant matches that overlap, only the
closest are kept (fewer wrong names than keeping every match).
"""

from __future__ import annotations

import enum
import sys
import threading
import time
from collections.abc import Iterable
from dataclasses import dataclass, field, replace

import numpy as np

from nim4_edge.runtime.hotwords import _query
from nim4_edge.runtime.hotwords.database import HotwordDatabase, HotwordEntry, HotwordError, Segment, file_state
from nim4_edge.runtime.hotwords.lexicon import Lexicon, LexiconError


class RetrievalMode(str, enum.Enum):
    """Where the prompt's hints come from (`--hotwords-mode`)."""

    EXACT = "exact"  # the CTC phonemes as heard
    TOLERANT = "tolerant"  # also keys one phoneme error away (two in long keys); needs a tolerant database
    TEXT = "text"  # only the lexicon phonemes of a first-pass transcript (a second decode)
    EXACT_TEXT = "exact+text"  # both: the first pass already has the CTC hints
    TOLERANT_TEXT = "tolerant+text"

    @property
    def tolerant(self) -> bool:  # `is`, not `in`: a str enum's == costs ~0.4 us, asked several times a query
        return self is RetrievalMode.TOLERANT or self is RetrievalMode.TOLERANT_TEXT

    @property
    def first_pass(self) -> bool:
        """The final is decoded twice: a first pass whose transcript is retrieved from, then the final."""
        return self is RetrievalMode.TEXT or self is RetrievalMode.EXACT_TEXT or self is RetrievalMode.TOLERANT_TEXT

    def hints(self, heard: list[str], from_transcript: list[str]) -> list[str]:
        """The prompt's hints, given what the CTC phonemes retrieved (`heard`) and what the first-pass
        transcript retrieved (empty until that pass ran)."""
        if self is RetrievalMode.TEXT:
            return from_transcript
        if self.first_pass:
            return list(dict.fromkeys(heard + from_transcript))
        return heard


HOTWORD_MODES = tuple(mode.value for mode in RetrievalMode)


@dataclass(frozen=True)
class RetrievalConfig:
    mode: RetrievalMode = RetrievalMode.EXACT
    top_k: int = 10  # words put into the prompt at most
    min_syllables: int = 3  # shorter base keys (two-syllable names) need to be per-stream additions
    max_group: int = 5  # homophones of one key put into the prompt at most (heaviest first)

    def __post_init__(self) -> None:
        if not isinstance(self.mode, RetrievalMode):
            raise ValueError(f"mode must be a RetrievalMode, e.g. RetrievalMode({self.mode!r}); "
                             f"choose from {', '.join(HOTWORD_MODES)}")
        if self.top_k < 0 or self.min_syllables < 0 or self.max_group < 1:
            raise ValueError("top_k and min_syllables must be >= 0 and max_group >= 1")

    @classmethod
    def from_mode(cls, mode: str, **overrides) -> "RetrievalConfig":
        """The `--hotwords-mode` of listen/eval/bench (HOTWORD_MODES) as a config."""
        if mode not in HOTWORD_MODES:
            raise ValueError(f"unknown hotword mode {mode!r}; choose from {', '.join(HOTWORD_MODES)}")
        return cls(mode=RetrievalMode(mode), **overrides)


class MatchSource(str, enum.Enum):
    BASE = "base"  # the shared database, exact
    STREAM = "stream"  # this stream's additions, exact
    TOLERANT = "tolerant"  # the shared database, within the tolerant index's edit distance


@dataclass
class Match:
    start: int  # phoneme index in the utterance
    end: int  # exclusive
    key_id: int  # in its segment's keys
    source: MatchSource
    errors: int = 0  # tolerant: edit distance to the key, tones forgiven
    segment: int = 0  # the database's base (0) or its changes (1); the stream's additions for STREAM
    distance: int = 0  # tolerant: edit distance with tones counted (ranks matches of equal `errors`)

    @property
    def score(self) -> tuple[int, int]:
        return self.errors, self.distance


class Rejection(str, enum.Enum):
    """Why a match does not reach the prompt."""

    INSIDE_LONGER = "inside a longer match"
    TOO_SHORT = "fewer syllables than min_syllables"
    REMOVED = "removed for this stream"
    CLOSER_MATCH = "a closer match overlaps it"


@dataclass(frozen=True)
class Candidate:
    match: Match
    words: list[str]  # the match's homophone group, heaviest first, at most max_group
    weight: float
    rejected: Rejection | None = None  # None: kept

    @property
    def kept(self) -> bool:
        return self.rejected is None


class LiveDatabase:
    """The database a recognizer's streams share, picked up again when its file is replaced (`hotwords
    add/remove`, a rebuild): the file is looked at, at most every `interval` seconds, when an utterance
    begins. A replacement that cannot be loaded keeps the database in use, said once on stderr."""

    def __init__(self, database: HotwordDatabase, interval: float = 1.0):
        self.database, self.interval = database, interval
        self._checked = time.monotonic()
        self._lock = threading.Lock()
        self._failed_state = None

    def get(self) -> HotwordDatabase:
        now = time.monotonic()
        if now - self._checked < self.interval or self.database.source is None:
            return self.database
        with self._lock:
            if now - self._checked >= self.interval:
                self._checked = now
                if self.database.changed_on_disk():
                    self._reload()
        return self.database

    def _reload(self) -> None:
        state = file_state(self.database.source)
        if state == self._failed_state:
            return
        try:
            self.database = HotwordDatabase.load(self.database.source, self.database.inventory)
        except HotwordError as e:
            self._failed_state = state
            print(f"nim4-edge: hotwords: keeping the database in use: {e}", file=sys.stderr)


class HotwordRetriever:
    """One stream's view: the shared database plus this stream's additions and removals."""

    def __init__(self, database: HotwordDatabase | LiveDatabase | None, lexicon: Lexicon,
                 config: RetrievalConfig = RetrievalConfig()):
        self.live = LiveDatabase(database) if isinstance(database, HotwordDatabase) else database
        self.lexicon = lexicon
        self.config = config
        self.removed: set[str] = set()
        self._added: dict[str, HotwordEntry] = {}
        self._additions: Segment | None = None

    @property
    def base(self) -> HotwordDatabase | None:
        return self.live.get() if self.live is not None else None

    @property
    def has_additions(self) -> bool:
        return self._additions is not None

    def add(self, entries: Iterable[HotwordEntry]) -> None:
        """Per-stream additions (e.g. the driver's contacts); the shared database stays untouched."""
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
        entries = list(self._added.values())
        if not entries:
            self._additions = None
            return
        phonemes = [self.lexicon.phonemes(e.word) for e in entries]
        self._additions = Segment.build([e.word for e in entries], [e.weight for e in entries],
                                        [e.category for e in entries], [self.lexicon.encode(p) for p in phonemes],
                                        [self.lexicon.syllables(p) for p in phonemes], tolerant=False)

    def segments(self, database: HotwordDatabase | None) -> list[tuple[MatchSource, int, Segment]]:
        """(source, segment number, segment) of each exact search: the database's, then the additions."""
        out = [(MatchSource.BASE, i, s) for i, s in enumerate(database.segments)] if database is not None else []
        if self._additions is not None:
            out.append((MatchSource.STREAM, 0, self._additions))
        return out

    def group_of(self, database: HotwordDatabase | None, match: Match) -> tuple[Segment, list[int], float]:
        """The segment of a match, the entry ids of its homophone group still in the database, and the
        group's weight (its heaviest entry's; 0 when none is left)."""
        segment = self._additions if match.source is MatchSource.STREAM else database.segments[match.segment]
        ids = segment.group(match.key_id).tolist()
        if match.source is not MatchSource.STREAM and len(database.removed):
            ids = [i for i in ids if not database.is_removed(match.segment, i)]
        return segment, ids, float(segment.weights[ids[0]]) if ids else 0.0

    def words_of(self, segment: Segment, ids: list[int]) -> list[str]:
        """The group's words not removed for this stream, heaviest first, at most max_group."""
        return [w for w in (segment.words[i] for i in ids) if w not in self.removed][: self.config.max_group]

    def rejection(self, segment: Segment, ids: list[int]) -> Rejection | None:
        """REMOVED when every word of a group is gone, else None (RetrievalSession._judged judges the rest)."""
        if not ids or (self.removed and not self.words_of(segment, ids)):
            return Rejection.REMOVED
        return None

    def session(self) -> "RetrievalSession":
        return RetrievalSession(self, self.base)

    def retrieve(self, phonemes: list[str]) -> list[str]:
        """Whole-utterance retrieval (a session fed once)."""
        session = self.session()
        session.extend(phonemes)
        return session.words()

    def retrieve_from_text(self, text: str) -> list[str]:
        """Text-based retrieval, for models without a phoneme head: the lexicon's phonemes of a
        first-pass transcript stand in for the CTC phonemes."""
        try:
            return self.retrieve(self.lexicon.phonemes(text))
        except LexiconError:
            return []


@dataclass
class RetrievalSession:
    """One utterance: phonemes arrive chunk by chunk; each call looks up only what is new. The
    database is the one in use when the utterance began (an update takes effect at the next)."""

    retriever: HotwordRetriever
    database: HotwordDatabase | None
    code: str = ""
    matches: list[Match] = field(default_factory=list)
    transcript_words: list[str] = field(default_factory=list)  # retrieved from the first-pass transcript
    # tolerant, per (segment, index number): the hits whose windows ran past the phonemes heard so far
    # (SignatureIndex.search looks at them again with the next phonemes), and each key's closest window
    # (rows of a _table); bytes from C, handed back to it with the next phonemes
    _pending: dict[tuple[int, int], bytes] = field(default_factory=dict)
    _tolerant: dict[tuple[int, int], bytes] = field(default_factory=dict)

    @property
    def mode(self) -> RetrievalMode:
        return self.retriever.config.mode

    def fork(self) -> "RetrievalSession":
        """An independent copy (a speculative final goes on with it; this session stays as it is)."""
        return replace(self, matches=list(self.matches), transcript_words=list(self.transcript_words),
                       _pending=dict(self._pending), _tolerant=dict(self._tolerant))

    def extend(self, phonemes: list[str]) -> None:
        self.extend_code(self.retriever.lexicon.encode(phonemes))

    def extend_code(self, code: str) -> None:
        """Append phonemes in code-point form (Lexicon.encode / encode_ids) and look up what is new."""
        if not code:
            return
        old = len(self.code)
        self.code += code
        tolerant = self.mode.tolerant
        for source, number, segment in self.retriever.segments(self.database):
            for key_id, x, length in segment.find_exact(self.code, old):  # each compared with its key
                self.matches.append(Match(x, x + length, key_id, source, segment=number))
            if tolerant and source is MatchSource.BASE:
                for index_number, index in enumerate(segment.tolerant):
                    at = number, index_number
                    self._tolerant[at], self._pending[at] = index.search(
                        self.code, old, self._pending.get(at, b""), self._tolerant.get(at, b""), number,
                        segment.key_starts, segment.key_ids_flat, self.retriever.lexicon.toneless_ids())

    def take_first_pass(self, transcript: str) -> None:
        """The first-pass transcript of a `first_pass` mode: what its phonemes retrieve joins the hints."""
        self.transcript_words = self.retriever.retrieve_from_text(transcript)

    def hints(self) -> list[str]:
        """The words for the prompt, as the mode says."""
        heard = [] if self.mode is RetrievalMode.TEXT else self.words()
        return self.mode.hints(heard, self.transcript_words)

    def tolerant_matches(self) -> list[Match]:
        """Database keys within their index's edit distance (substitutions, insertions, deletions;
        tones forgiven) of the heard phonemes, and not matched exactly (verified as the phonemes come:
        extend_code)."""
        return [Match(*row) for row in _Table(self._tolerant_table())]

    def _tolerant_table(self) -> np.ndarray:
        """The tolerant matches of keys not matched exactly, as a _table."""
        table = _table_of(b"".join(self._tolerant.values()))
        exact = [(m.segment, m.key_id) for m in self.matches if m.source is MatchSource.BASE]
        if exact and len(table):  # a few keys: compared one by one (np.isin costs ~25 us)
            other = np.ones(len(table), bool)
            for segment, key_id in exact:
                other &= (table[:, _KEY] != key_id) | (table[:, _SEGMENT] != segment)
            table = table[other]
        return table

    def _judged(self) -> "_Judgement":
        """Every match judged. Few exact matches (an exact query has a few) one by one in Python; many,
        or any tolerant ones (a busy tolerant utterance has ~150: making each a Python object cost more
        than the rules), as a table in C (_query.judge and settle), where a group is read only for a
        stream's additions or while entries are removed (else it is whole: the weights, to rank, are
        read in C, and words() reads the groups of the few it returns)."""
        rows = [(m.start, m.end, m.key_id, m.source, m.errors, m.segment, m.distance) for m in self.matches]
        if not self.mode.tolerant and len(rows) <= _FEW_MATCHES:
            return self._judged_few(rows)
        if not self.mode.tolerant:
            return self._judged_table(_table(rows))
        tolerant = self._tolerant_table()
        return self._judged_table(np.concatenate([_table(rows), tolerant]) if rows else tolerant)

    def _judged_few(self, rows: list[tuple]) -> "_Judgement":
        # an exact query's whole judgement, on its hot path: ~5 us of a ~15 us warm exact query at 1M (12-03)
        min_syllables, segments = self.retriever.config.min_syllables, self.database.segments if self.database else ()
        rejected: list[Rejection | None] = [None] * len(rows)
        weights, groups, kept = [0.0] * len(rows), {}, []
        for i, row in enumerate(rows):
            if _inside_a_longer(row, rows):
                rejected[i] = Rejection.INSIDE_LONGER
            elif row[_SOURCE] is not MatchSource.STREAM and segments[row[_SEGMENT]].key_syllables[row[_KEY]] < min_syllables:
                rejected[i] = Rejection.TOO_SHORT  # a database key that short matches by chance (additions are trusted)
            else:
                segment, ids, weights[i] = self.retriever.group_of(self.database, Match(*row))
                groups[i] = (segment, ids)
                rejected[i] = self.retriever.rejection(segment, ids)
                if rejected[i] is None:
                    kept.append(i)
        ranked = kept if len(kept) < 2 else sorted(kept, key=lambda i: _rank(rows[i], weights[i], True))
        return _Judgement(rows, rejected, weights, groups, ranked)

    def _judged_table(self, table: np.ndarray) -> "_Judgement":
        database, retriever = self.database, self.retriever
        segments = [(s.key_syllables, s.group_offsets, s.group_entries, s.weights)
                    for s in (database.segments if database is not None else ())]
        verdicts, weights = _query.judge(table, retriever.config.min_syllables, segments)
        weight = memoryview(weights).cast("d")
        groups = {}
        whole = database is not None and not len(database.removed) and not retriever.removed
        if not whole or retriever.has_additions:  # groups to read, in Python
            rows = _Table(table)
            for i, verdict in enumerate(verdicts):
                if verdict == _KEPT and (not whole or table[i, _SOURCE] == _SOURCE_NUMBER[MatchSource.STREAM]):
                    segment, ids, weight[i] = retriever.group_of(database, Match(*rows[i]))
                    groups[i] = (segment, ids)
                    if retriever.rejection(segment, ids) is not None:
                        verdicts[i] = _VERDICTS.index(Rejection.REMOVED)
        # The closer-match rule, then _rank: tolerant matches that overlap a kept match heard more closely
        # are not kept (a wrong tone or one phoneme off a name heard exactly is another name, not a second
        # guess), unless the match contains that one and is two phonemes or more longer: then both are
        # kept, the longer name's extra syllable heard nearly right is evidence the reader of the prompt can
        # weigh (天福盛中心 at two errors around 福盛中心 at one). Measured at 1M, 500 utterances against the
        # rule without that exception (and without _inside_a_longer's): exactly heard names in tolerant mode
        # 94.0 -> 100%, one error 92.8 -> 91.6%, two errors 73.2 -> 81.3%, wrong names per utterance 0.73
        # -> 0.79.
        verdicts, ranked = _query.settle(table, verdicts, weights)
        return _Judgement(_Table(table), [_VERDICTS[v] for v in verdicts], weight.tolist(), groups, ranked)

    def candidates(self) -> list[Candidate]:
        """Every match with its words, best first; rejected ones last, each with its reason."""
        judged = self._judged()
        out = []
        for i, row in enumerate(judged.rows):
            match = Match(*row)
            segment, ids, weight = ((*judged.groups[i], judged.weights[i]) if i in judged.groups
                                    else self.retriever.group_of(self.database, match))
            out.append((_rank(row, weight, judged.rejected[i] is None),
                        Candidate(match, self.retriever.words_of(segment, ids), weight, judged.rejected[i])))
        out.sort(key=lambda ranked: ranked[0])
        return [c for _, c in out]

    def words(self) -> list[str]:
        """The kept matches' words, best first, at most top_k (only those are decoded: of ~160 matches
        in a busy tolerant utterance most are rejected, and decoding every group cost ~0.5 ms)."""
        chosen: list[str] = []
        top_k = self.retriever.config.top_k
        judged = self._judged()
        for i in judged.ranked:
            if len(chosen) >= top_k:
                break
            segment, ids = (judged.groups[i] if i in judged.groups
                            else self.retriever.group_of(self.database, Match(*judged.rows[i]))[:2])
            for word in self.retriever.words_of(segment, ids):
                if word not in chosen and len(chosen) < top_k:
                    chosen.append(word)
        return chosen


# a Row: Match's fields in order
_ROW_FIELDS = ("start", "end", "key_id", "source", "errors", "segment", "distance")
_START, _END, _KEY, _SOURCE, _ERRORS, _SEGMENT, _DISTANCE = range(len(_ROW_FIELDS))
_SOURCES = (MatchSource.BASE, MatchSource.STREAM, MatchSource.TOLERANT)  # a _table's source column: the index here
_SOURCE_NUMBER = {source: number for number, source in enumerate(_SOURCES)}
# a match's verdict, as _keep.c numbers it (KEPT, INSIDE_LONGER, TOO_SHORT, REMOVED, CLOSER_MATCH)
_VERDICTS = (None, Rejection.INSIDE_LONGER, Rejection.TOO_SHORT, Rejection.REMOVED, Rejection.CLOSER_MATCH)
_KEPT = _VERDICTS.index(None)


def _table(rows: list[tuple]) -> np.ndarray:
    """Rows as an int64 array, one row each, the source as its index in _SOURCES (_query.c reads it)."""
    return np.array([(*r[:_SOURCE], _SOURCE_NUMBER[r[_SOURCE]], *r[_SOURCE + 1 :]) for r in rows],
                    np.int64).reshape(len(rows), len(_ROW_FIELDS))


def _table_of(data: bytes) -> np.ndarray:
    """The rows SignatureIndex.search returns (bytes) as a _table."""
    return np.frombuffer(data, np.int64).reshape(-1, len(_ROW_FIELDS))


class _Table:
    """A _table read as rows: row i as a Row (Match(*row) is the match), made when asked for."""

    def __init__(self, table: np.ndarray):
        self.table = table

    def __len__(self) -> int:
        return len(self.table)

    def __getitem__(self, i: int) -> tuple:
        row = self.table[i].tolist()
        row[_SOURCE] = _SOURCES[row[_SOURCE]]
        return tuple(row)

    def __iter__(self):
        return (self[i] for i in range(len(self)))


def _rank(row: tuple, weight: float, kept: bool) -> tuple:
    """Kept first; exact before tolerant; fewer errors, closer with tones, longer, heavier, earlier."""
    return (not kept, row[_SOURCE] is MatchSource.TOLERANT, row[_ERRORS], row[_DISTANCE], row[_START] - row[_END],
            -weight, row[_START])


@dataclass
class _Judgement:
    """An utterance's matches judged: rows (Match's fields in order), why each is rejected (None: kept),
    its group's weight, the groups already read ({row: (segment, entry ids)}), and the kept rows, best
    first (_rank; ties in row order)."""

    rows: list[tuple] | _Table
    rejected: list[Rejection | None]
    weights: list[float]
    groups: dict[int, tuple[Segment, list[int]]]
    ranked: list[int]


def _inside_a_longer(match: tuple, rows: list[tuple]) -> bool:
    """`match` lies inside a longer one of `rows` heard with no more errors than it: NIO inside NIO
    House; 康西路 inside 阳康西路, both heard one phoneme off. So a name heard exactly stays when a
    longer guess contains it (the carrier's 去 is one phoneme from 桥, and 桥明园站 at one error
    swallowed 明园站 heard exactly in 6% of utterances when it could)."""
    start, end, errors = match[_START], match[_END], match[_ERRORS]
    for other in rows:
        if other[_START] <= start and end <= other[_END] and other[_END] - other[_START] > end - start \
                and other[_ERRORS] <= errors:
            return True
    return False


# up to this many exact matches they are judged one by one in Python (an exact utterance has a few:
# building the table costs more than the pairs); beyond, as a table (_keep.c compares the pairs).
# 16 is a round number, not tuned
_FEW_MATCHES = 16
