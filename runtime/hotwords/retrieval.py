"""Hotword retrieval for one stream and one utterance.

Per utterance (`RetrievalSession`) the greedy CTC phoneme string grows chunk by chunk and only the
new part (plus the longest key minus one) is scanned; matches inside a longer match are dropped
(NIO inside NIO House); keys of fewer than `min_syllables` syllables (two-syllable names cause most
false matches at a million entries, docs/FACTS.md) count only if they are per-stream additions; the
top K by length, then weight, go into the prompt. Per-stream additions and removals
(`HotwordRetriever.add/remove`) sit on top of the shared base database. The tolerant modes add keys
heard with one phoneme error (two in keys of >= 10 phonemes) through the piece index (index.py).
"""

from __future__ import annotations

import enum
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field, replace

from rapidfuzz import process
from rapidfuzz.distance import Levenshtein

from nim4_edge.runtime.hotwords.database import HotwordDatabase, HotwordEntry, HotwordError
from nim4_edge.runtime.hotwords.index import PartIndex
from nim4_edge.runtime.hotwords.lexicon import Lexicon, LexiconError
from nim4_edge.runtime.hotwords.strings import build_automaton


class RetrievalMode(str, enum.Enum):
    """Where the prompt's hints come from (`--hotwords-mode`)."""

    EXACT = "exact"  # the CTC phonemes as heard
    TOLERANT = "tolerant"  # also keys one phoneme error away (two in long keys); needs a tolerant database
    TEXT = "text"  # only the lexicon phonemes of a first-pass transcript (a second decode)
    EXACT_TEXT = "exact+text"  # both: the first pass already has the CTC hints
    TOLERANT_TEXT = "tolerant+text"

    @property
    def tolerant(self) -> bool:
        return self in (RetrievalMode.TOLERANT, RetrievalMode.TOLERANT_TEXT)

    @property
    def first_pass(self) -> bool:
        """The final is decoded twice: a first pass whose transcript is retrieved from, then the final."""
        return self in (RetrievalMode.TEXT, RetrievalMode.EXACT_TEXT, RetrievalMode.TOLERANT_TEXT)

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
    max_piece_candidates: int = 20000  # a key part shared by more keys is too common to verify (batched in C)

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
    TOLERANT = "tolerant"  # the shared database, within the piece index's edit distance


@dataclass
class Match:
    start: int  # phoneme index in the utterance
    end: int  # exclusive
    key_id: int  # in the base database's keys, or in the stream's additions for MatchSource.STREAM
    source: MatchSource
    errors: int = 0  # tolerant: edit distance to the key (tones forgiven)


class Rejection(str, enum.Enum):
    """Why a match does not reach the prompt."""

    INSIDE_LONGER = "inside a longer match"
    TOO_SHORT = "fewer syllables than min_syllables"
    REMOVED = "removed for this stream"


@dataclass(frozen=True)
class Candidate:
    match: Match
    words: list[str]  # the match's homophone group, heaviest first, at most max_group
    weight: float
    rejected: Rejection | None = None  # None: kept

    @property
    def kept(self) -> bool:
        return self.rejected is None


class HotwordRetriever:
    """One stream's view: the shared base database plus this stream's additions and removals."""

    def __init__(self, database: HotwordDatabase | None, lexicon: Lexicon, config: RetrievalConfig = RetrievalConfig()):
        self.base = database
        self.lexicon = lexicon
        self.config = config
        self.removed: set[str] = set()
        self._added: dict[str, HotwordEntry] = {}
        self._added_keys: list[str] = []
        self._added_lengths: list[int] = []
        self._added_groups: list[list[str]] = []
        self._added_automaton = None

    @property
    def part_indexes(self) -> tuple[PartIndex, ...]:
        """The piece indexes tolerant retrieval scans: the base database's, in the tolerant modes."""
        return self.base.tolerant if self.config.mode.tolerant and self.base is not None else ()

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
        self._added_lengths = [len(k) for k in self._added_keys]
        self._added_groups = list(groups.values())
        self._added_automaton = build_automaton(self._added_keys) if groups else None

    def automata(self) -> Iterator[tuple[MatchSource, object, list, int]]:
        """(source, automaton, key lengths, longest key) for each exact scan: base, then additions."""
        if self.base is not None and len(self.base.keys):
            yield MatchSource.BASE, self.base.automaton, self.base.key_lengths, self.base.max_key_length
        if self._added_automaton is not None:
            yield MatchSource.STREAM, self._added_automaton, self._added_lengths, max(self._added_lengths)

    def candidate(self, match: Match, rejected: Rejection | None) -> Candidate:
        """The words and weight behind a match; REMOVED when this stream removed all of them."""
        if match.source is MatchSource.STREAM:
            words = self._added_groups[match.key_id][: self.config.max_group]
            weight = max(self._added[w].weight for w in words)
        else:
            ids = self.base.group(match.key_id)
            words = [w for w in (self.base.words[i] for i in ids.tolist()) if w not in self.removed][: self.config.max_group]
            weight = float(self.base.weights[ids[0]]) if len(ids) else 0.0
            if rejected is None and self.base.key_syllables[match.key_id] < self.config.min_syllables:
                rejected = Rejection.TOO_SHORT  # short base keys match by chance; additions are trusted
        if rejected is None and not words:
            rejected = Rejection.REMOVED
        return Candidate(match, words, weight, rejected)

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
    transcript_words: list[str] = field(default_factory=list)  # retrieved from the first-pass transcript
    # tolerant verification is incremental: piece matches before `_verified` are done, except those in
    # `_pending` (a window ran past the phonemes heard so far); `_tolerant` holds the best match per key
    _verified: int = 0
    _pending: list[int] = field(default_factory=list)
    _tolerant: dict[int, Match] = field(default_factory=dict)

    @property
    def mode(self) -> RetrievalMode:
        return self.retriever.config.mode

    def fork(self) -> "RetrievalSession":
        """An independent copy (a speculative final goes on with it; this session stays as it is)."""
        return replace(self, matches=list(self.matches), piece_matches=list(self.piece_matches),
                       transcript_words=list(self.transcript_words), _pending=list(self._pending),
                       _tolerant=dict(self._tolerant))

    def extend(self, phonemes: list[str]) -> None:
        self.extend_code(self.retriever.lexicon.encode(phonemes))

    def extend_code(self, code: str) -> None:
        """Append phonemes in code-point form (Lexicon.encode / encode_ids) and scan what is new."""
        if not code:
            return
        old = len(self.code)
        self.code += code
        for source, automaton, lengths, longest in self.retriever.automata():
            overlap = max(0, old - (longest - 1))  # a key ending in the new part starts here at the earliest
            for end_index, key_id in automaton.iter(self.code, overlap):
                if not 0 <= key_id < len(lengths):  # an automaton edited in the file (checked where used)
                    raise HotwordError(f"corrupt hotword database: the automaton names key {key_id}; rebuild it")
                end = end_index + 1
                if end > old:  # ends in the new part: not found before
                    self.matches.append(Match(end - lengths[key_id], end, key_id, source))
        for number, index in enumerate(self.retriever.part_indexes):
            for end_index, piece_id in index.automaton.iter(self.code, max(0, old - (index.max_length - 1))):
                if not 0 <= piece_id < len(index.piece_lengths):
                    raise HotwordError(f"corrupt hotword database: a piece automaton names piece {piece_id}; rebuild it")
                if end_index + 1 > old:
                    start = end_index + 1 - int(index.piece_lengths[piece_id])
                    self.piece_matches.append((number, start, end_index + 1, piece_id))

    def take_first_pass(self, transcript: str) -> None:
        """The first-pass transcript of a `first_pass` mode: what its phonemes retrieve joins the hints."""
        self.transcript_words = self.retriever.retrieve_from_text(transcript)

    def hints(self) -> list[str]:
        """The words for the prompt, as the mode says."""
        heard = [] if self.mode is RetrievalMode.TEXT else self.words()
        return self.mode.hints(heard, self.transcript_words)

    def tolerant_matches(self) -> list[Match]:
        """Base keys within their index's edit distance (substitutions, insertions, deletions; tones
        forgiven) of the phonemes around an intact part, and not matched exactly; a key found by both
        indexes keeps its fewest errors. Only piece matches that are new, or whose windows reached past
        the phonemes heard so far, are verified: a partial per chunk does not redo the utterance."""
        indexes = self.retriever.part_indexes
        if indexes:
            todo = self._pending + list(range(self._verified, len(self.piece_matches)))
            self._verified, self._pending = len(self.piece_matches), []
            for i in todo:
                if self._verify(indexes, *self.piece_matches[i]):
                    self._pending.append(i)
        exact = {m.key_id for m in self.matches if m.source is MatchSource.BASE}
        return [m for key_id, m in self._tolerant.items() if key_id not in exact]

    def _verify(self, indexes: tuple[PartIndex, ...], number: int, start: int, end: int, piece_id: int) -> bool:
        """Verify the keys behind one found piece; True when a window lay past the end (check again later)."""
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
                        self._tolerant[key_id] = Match(a, b, key_id, MatchSource.TOLERANT, int(errors))
        return beyond

    def candidates(self) -> list[Candidate]:
        """Every match with its words, best first; rejected ones last, each with its reason."""
        matches = self.matches + self.tolerant_matches()
        spans = [(m.start, m.end, m.errors) for m in matches]
        out = []
        for m in matches:
            # shadowed by a longer match, unless that one is a two-error guess at a long name and this
            # one was heard better (exact or one error)
            inside = any(s <= m.start and m.end <= e and (e - s) > (m.end - m.start) and errors <= max(m.errors, 1)
                         for s, e, errors in spans)
            out.append(self.retriever.candidate(m, Rejection.INSIDE_LONGER if inside else None))
        out.sort(key=lambda c: (not c.kept, c.match.source is MatchSource.TOLERANT, c.match.errors,
                                -(c.match.end - c.match.start), -c.weight, c.match.start))
        return out

    def words(self) -> list[str]:
        chosen: list[str] = []
        for candidate in self.candidates():
            if not candidate.kept:
                continue
            for word in candidate.words:
                if word not in chosen and len(chosen) < self.retriever.config.top_k:
                    chosen.append(word)
        return chosen
