"""In-place updates of a database file: `hotwords add/remove` and `update_database` in the API.

The new file keeps the base segment's bytes and gets a new changes segment (database.py), written
to a temporary file and renamed over the old one, under a lock so that two updates at once do not
lose one's entries.
"""

from __future__ import annotations

import contextlib
import fcntl
from collections.abc import Iterable
from pathlib import Path

from nim4_edge.runtime.hotwords.database import MAX_ENTRY_SYLLABLES, HotwordDatabase, HotwordEntry, HotwordError
from nim4_edge.runtime.hotwords.lexicon import LexiconError, pronounce_many
from nim4_edge.runtime.phonemes import PhonemeInventory

# changes beyond this share of the base (and more than COMPACT_MIN of them) are folded into a new base:
# every query looks at both segments, and an update rewrites all the changes
COMPACT_SHARE, COMPACT_MIN = 0.25, 1000


@contextlib.contextmanager
def _update_lock(path: Path):
    """One update of a database at a time (two `hotwords add` at once would lose one's entries)."""
    lock = path.with_name(f".{path.name}.lock")
    with open(lock, "a") as f:
        fcntl.flock(f.fileno(), fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(f.fileno(), fcntl.LOCK_UN)


def update_database(path: Path, add: Iterable[HotwordEntry] = (), remove: Iterable[str] = (), jobs: int = 0,
                    expected_inventory: PhonemeInventory | None = None, compact: bool | None = None,
                    strict: bool = False) -> dict:
    """Add entries to (an entry of the same word is replaced) and remove words from a database file in
    place: what `hotwords add/remove` run. Recognizers and servers using the file pick the change up at
    their next utterance. `compact`: fold the changes into the base (None: when they have grown past
    COMPACT_SHARE). `strict`: an entry that cannot be pronounced changes nothing. Returns counts, the words not found, and entries that could not be pronounced."""
    path = Path(path)
    add = list(add)
    with _update_lock(path):
        database = HotwordDatabase.load(path, expected_inventory)
        words = [e.word for e in add]
        keyed, problems = [], []
        jobs = jobs or (1 if len(words) < 20000 else 0)  # a pool costs ~1 s to start: not for a few thousand
        for entry, key in zip(add, pronounce_many(words, database.inventory, jobs, as_keys=True)):
            if isinstance(key, LexiconError):
                problems.append(str(key))
            elif key[1] > MAX_ENTRY_SYLLABLES:
                problems.append(f"{entry.word[:40]!r}: {key[1]} syllables; at most {MAX_ENTRY_SYLLABLES}")
            else:
                keyed.append((entry, *key))
        if problems and strict:
            raise HotwordError(f"{len(problems)} entr{'y' if len(problems) == 1 else 'ies'} cannot be pronounced "
                               f"({problems[0]}) and strict was asked; the database is unchanged")
        updated, report = database.updated(keyed, remove)
        changes = (len(updated.changes) if updated.changes is not None else 0) + len(updated.removed)
        report["compacted"] = compact if compact is not None else (
            changes > COMPACT_MIN and changes > COMPACT_SHARE * len(updated.base))
        if report["compacted"]:
            updated = updated.compacted()
        updated.save(path)
    report["problems"] = problems
    report["entries"] = len(updated)
    return report
