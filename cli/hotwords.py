"""The `hotwords build`, `add`, `remove` and `query` commands (part of the CLI: this module prints)."""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path

from nim4_edge.cli.common import check_output_file
from nim4_edge.runtime.bundle import Bundle
from nim4_edge.runtime.errors import Nim4Error
from nim4_edge.runtime.hotwords import (
    Candidate,
    HotwordDatabase,
    HotwordError,
    HotwordRetriever,
    Rejection,
    RetrievalConfig,
    RetrievalMode,
    parse_hotword_lines,
)
from nim4_edge.runtime.hotwords.database import MAX_ENTRY_SYLLABLES, read_input
from nim4_edge.runtime.hotwords.updates import update_database
from nim4_edge.runtime.hotwords.lexicon import Lexicon, LexiconError, pronounce_many
from nim4_edge.runtime.phonemes import PhonemeInventory


def _inventory(bundle: Path | None) -> PhonemeInventory:
    if bundle is None:
        return PhonemeInventory.default()
    return Bundle.load(bundle).manifest.phonemes


def _read_lines(path: Path) -> list[str]:
    raw = read_input(path, "hotword list", "one entry per line: WORD[<TAB>WEIGHT[<TAB>CATEGORY]]")
    try:
        return raw.decode("utf-8-sig").splitlines()
    except UnicodeDecodeError as e:
        line = raw[: e.start].count(b"\n") + 1
        raise HotwordError(f"{path}: line {line} is not valid UTF-8; save the list as UTF-8") from None


def cmd_build(args) -> int:
    check_output_file(args.output, "-o")
    lines = _read_lines(args.file)
    entries, problems = parse_hotword_lines(lines)
    lexicon = Lexicon(_inventory(args.bundle))
    t0 = time.perf_counter()

    def progress(done: int, total: int) -> None:
        if sys.stderr.isatty():
            print(f"\rpronouncing {done}/{total} ({time.perf_counter() - t0:.0f} s)", end="", file=sys.stderr, flush=True)

    pronounced = []
    results = pronounce_many([entry.word for _, entry in entries], lexicon.inventory, args.jobs, progress=progress,
                             as_keys=True)
    for (number, entry), key in zip(entries, results):
        if isinstance(key, LexiconError):
            problems.append((number, str(key)))
        elif key[1] > MAX_ENTRY_SYLLABLES:
            problems.append((number, f"{key[1]} syllables; at most {MAX_ENTRY_SYLLABLES} (a name, not a text)"))
        else:
            pronounced.append((entry, *key))
    if sys.stderr.isatty():
        print("\r\033[K", end="", file=sys.stderr)
    _report_problems(args.file, problems)
    if problems and args.strict:
        raise Nim4Error(f"{len(problems)} bad line(s) in {args.file} and --strict was given; nothing written")
    if not pronounced:
        raise HotwordError(f"{args.file}: no usable entries (one word or name per line, optional TAB weight TAB category)")
    database = HotwordDatabase.build_keyed(pronounced, lexicon.inventory, tolerant=args.tolerant)
    database.save(args.output)
    print(f"wrote {args.output}: {len(database)} entries, {database.num_keys} pronunciations, "
          f"{len(problems)} line(s) skipped, {time.perf_counter() - t0:.1f} s", file=sys.stderr)
    return 0


def _report_problems(path: Path, problems: list[tuple[int, str]]) -> None:
    for number, problem in sorted(problems)[:20]:
        print(f"nim4-edge: {path}:{number}: {problem}", file=sys.stderr)
    if len(problems) > 20:
        print(f"nim4-edge: ... and {len(problems) - 20} more skipped lines", file=sys.stderr)


def cmd_add(args) -> int:
    entries, problems = parse_hotword_lines(_read_lines(args.file))
    _report_problems(args.file, problems)
    if problems and args.strict:
        raise Nim4Error(f"{len(problems)} bad line(s) in {args.file} and --strict was given; the database is unchanged")
    t0 = time.perf_counter()
    report = update_database(args.database, add=[entry for _, entry in entries], jobs=args.jobs, strict=args.strict)
    for problem in report["problems"][:20]:
        print(f"nim4-edge: {args.file}: skipped {problem}", file=sys.stderr)
    print(f"{args.database}: {report['added'] - report['replaced']} added, {report['replaced']} replaced "
          f"(same word), {len(report['problems'])} skipped; {report['entries']} entries"
          f"{' (changes folded into the base)' if report['compacted'] else ''}, {time.perf_counter() - t0:.2f} s",
          file=sys.stderr)
    return 0


def cmd_remove(args) -> int:
    lines = _read_lines(args.file)
    words = [line.split("\t")[0].strip() for line in lines if line.strip() and not line.lstrip().startswith("#")]
    t0 = time.perf_counter()
    report = update_database(args.database, remove=words)
    if report["not_found"]:
        shown = ", ".join(repr(w) for w in report["not_found"][:5])
        print(f"nim4-edge: {len(report['not_found'])} word(s) were not in the database: {shown}"
              f"{' ...' if len(report['not_found']) > 5 else ''}", file=sys.stderr)
    print(f"{args.database}: {report['removed']} removed; {report['entries']} entries"
          f"{' (changes folded into the base)' if report['compacted'] else ''}, {time.perf_counter() - t0:.2f} s",
          file=sys.stderr)
    return 0


def _why_not(candidate: Candidate, config: RetrievalConfig) -> str:
    if candidate.rejected is Rejection.TOO_SHORT:
        return f"fewer than {config.min_syllables} syllables"
    return candidate.rejected.value if candidate.rejected else ""


def cmd_query(args) -> int:
    database = HotwordDatabase.load(args.database)
    lexicon = Lexicon(database.inventory)
    if args.tolerant and not database.tolerant:
        raise Nim4Error(f"{args.database} was built without --tolerant; rebuild it to query tolerantly")
    mode = RetrievalMode.TOLERANT if args.tolerant else RetrievalMode.EXACT
    retriever = HotwordRetriever(database, lexicon, RetrievalConfig(mode=mode, top_k=args.top_k,
                                                                    min_syllables=args.min_syllables))
    phonemes = args.phonemes.split() if args.phonemes is not None else lexicon.phonemes(args.text)
    unknown = [p for p in phonemes if p not in lexicon.inventory.symbols]
    if unknown:
        raise Nim4Error(f"phoneme {unknown[0]!r} is not in inventory {database.inventory.version}")
    session = retriever.session()
    session.extend(phonemes)
    report = {
        "phonemes": " ".join(phonemes),
        "retrieved": session.words(),
        "matches": [
            {"span": [c.match.start, c.match.end], "phonemes": " ".join(phonemes[c.match.start : c.match.end]),
             "words": c.words, "weight": c.weight, "kept": c.kept, "why_not": _why_not(c, retriever.config)}
            for c in session.candidates()
        ],
    }
    if args.json:
        print(json.dumps(report, ensure_ascii=False, indent=2))
        return 0
    print(f"phonemes:  {report['phonemes']}")
    print(f"retrieved: {', '.join(report['retrieved']) or '(nothing)'}")
    for m in report["matches"]:
        status = "kept" if m["kept"] else f"dropped: {m['why_not']}"
        print(f"  [{m['span'][0]}:{m['span'][1]}] {m['phonemes']} -> {', '.join(m['words'])}  ({status})")
    return 0


def add_commands(sub) -> None:
    p = sub.add_parser("hotwords", help="build and query hotword databases (entity names for the prompt)")
    hw = p.add_subparsers(dest="hotwords", required=True, metavar="WHAT")
    b = hw.add_parser("build", help="build a database from a UTF-8 list",
                      description="One entry per line: WORD[<TAB>WEIGHT[<TAB>CATEGORY]]; '#' starts a comment. "
                                  "Lines that cannot be used are reported with their numbers and skipped "
                                  "(--strict: nothing is written). Entries that sound alike form one group.")
    b.add_argument("file", type=Path)
    b.add_argument("-o", "--output", type=Path, required=True, help="database file to write")
    b.add_argument("--bundle", type=Path, help="take the phoneme inventory from this bundle (default: v1)")
    b.add_argument("--strict", action="store_true", help="fail on any bad line")
    b.add_argument("--jobs", type=int, default=0, help="processes for pronouncing entries (0 = all cores)")
    b.add_argument("--tolerant", action="store_true",
                   help="also index signatures of 2 of 3 (3 of 5) parts of each key, so retrieval forgives one phoneme "
                        "error (two in keys of >= 10 phonemes) and wrong tones (more memory and build time; README "
                        "has the figures)")
    b.set_defaults(func=cmd_build)
    update_help = ("The file is replaced by rename (a kill at any moment leaves the old or the new one); "
                   "recognizers and `serve` using it pick the change up at their next utterance, no restart.")
    a = hw.add_parser("add", help="add entries to a built database in place (same word: replaced)",
                      description="Entries as for build: WORD[<TAB>WEIGHT[<TAB>CATEGORY]] per line. " + update_help)
    a.add_argument("database", type=Path)
    a.add_argument("file", type=Path, help="the entries to add")
    a.add_argument("--strict", action="store_true", help="change nothing if any line is bad")
    a.add_argument("--jobs", type=int, default=0, help="processes for pronouncing (0: one below 20,000 entries, else all cores)")
    a.set_defaults(func=cmd_add)
    r = hw.add_parser("remove", help="remove entries from a built database in place",
                      description="One word per line (the first column of a build list also works). " + update_help)
    r.add_argument("database", type=Path)
    r.add_argument("file", type=Path, help="the words to remove")
    r.set_defaults(func=cmd_remove)
    q = hw.add_parser("query", help="show what a text or phoneme string would retrieve, and why")
    q.add_argument("database", type=Path)
    src = q.add_mutually_exclusive_group(required=True)
    src.add_argument("--text", help="text to pronounce with the lexicon, as if it had been spoken")
    src.add_argument("--phonemes", help="space-separated phonemes, e.g. the 'phonemes' of a listen --json event")
    q.add_argument("--top-k", type=int, default=RetrievalConfig.top_k)
    q.add_argument("--min-syllables", type=int, default=RetrievalConfig.min_syllables)
    q.add_argument("--tolerant", action="store_true", help="also find entries one phoneme error away")
    q.add_argument("--json", action="store_true")
    q.set_defaults(func=cmd_query)
