"""`nim4-edge eval`: CER/WER, entity and digit accuracy, false text and hallucination on a test set."""

from __future__ import annotations

import json
import sys
import tempfile
import time
from pathlib import Path

from nim4_edge.bench.evaluate import MODES, evaluate, read_manifest, report_rows
from nim4_edge.bench.report import format_table
from nim4_edge.cli.common import check_output_file
from nim4_edge.cli.listen import add_recognizer_flags, config_from_args
from nim4_edge.devices.config import describe
from nim4_edge.runtime.atomic import write_text_atomic
from nim4_edge.runtime.errors import Nim4Error
from nim4_edge.runtime.hotwords import HotwordDatabase, HotwordEntry, RetrievalConfig
from nim4_edge.runtime.hotwords.lexicon import LexiconError, pronounce_many
from nim4_edge.runtime.phonemes import PhonemeInventory
from nim4_edge.runtime.recognizer import Recognizer


def build_manifest_hotwords(items, directory: Path, extra: Path | None, tolerant: bool = False) -> Path:
    """A hotword database of every hotword in the manifest (plus the entries of `extra`, a list
    file), as `nim4-edge hotwords build [--tolerant]` would write it."""
    words = sorted({h for item in items for h in item.hotwords})
    if extra is not None:
        try:
            words += [line.split("\t")[0].strip() for line in extra.read_text(encoding="utf-8").splitlines() if line.strip()]
        except (OSError, UnicodeDecodeError) as e:
            raise Nim4Error(f"{extra}: cannot read the extra hotword list ({e}); one UTF-8 entry per line") from None
    words = list(dict.fromkeys(words))
    inventory = PhonemeInventory.default()
    keyed = [(HotwordEntry(w), *k) for w, k in zip(words, pronounce_many(words, inventory, as_keys=True))
             if not isinstance(k, LexiconError)]
    path = directory / "manifest-hotwords.db"
    HotwordDatabase.build_keyed(keyed, inventory, tolerant=tolerant).save(path)
    return path


def cmd_eval(args) -> int:
    for option, path in (("--out", args.out), ("--phoneme-edits", args.phoneme_edits)):
        if path:
            check_output_file(path, option)
    items = read_manifest(args.testset)
    if args.tags:
        wanted = set(args.tags.split(","))
        items = [i for i in items if wanted & set(i.tags)]
    if args.limit:
        items = items[: args.limit]
    if not items:
        raise Nim4Error(f"{args.testset}: no utterance has any of the tags {args.tags!r}")
    modes = [m.strip() for m in args.modes.split(",") if m.strip()]
    unknown = [m for m in modes if m not in MODES]
    if unknown or not modes:
        raise Nim4Error(f"unknown mode(s) {unknown}; choose from {', '.join(MODES)}")
    with tempfile.TemporaryDirectory(prefix="nim4-eval-") as tmp:
        if args.manifest_hotwords:
            t0 = time.perf_counter()
            args.hotwords = build_manifest_hotwords(items, Path(tmp), args.extra_hotwords,
                                                   tolerant=RetrievalConfig.from_mode(args.hotwords_mode).mode.tolerant)
            print(f"hotword database from the manifest built in {time.perf_counter() - t0:.1f} s", file=sys.stderr)
        bundle, config = config_from_args(args)
        recognizer = Recognizer(config)
        try:
            t0 = time.perf_counter()

            def progress(mode: str, done: int, total: int) -> None:
                if sys.stderr.isatty() or done == total or done % 100 == 0:
                    end = "\n" if done == total or not sys.stderr.isatty() else ""
                    print(f"\r{mode}: {done}/{total} ({time.perf_counter() - t0:.0f} s)", end=end,
                          file=sys.stderr, flush=True)

            summary = evaluate(recognizer, items, modes, progress)
        finally:
            recognizer.close()
    summary["testset"] = str(args.testset)
    summary["bundle"] = str(recognizer.config.bundle)
    summary |= describe(config, bundle)  # what ran: variants, threads, providers, hotword mode
    summary["respell"] = not args.no_respell
    summary["hotwords"] = ("manifest" + (f" + {args.extra_hotwords}" if args.extra_hotwords else "")
                           if args.manifest_hotwords else (str(args.hotwords) if args.hotwords else None))
    details = summary.pop("utterances")
    # the edit counts are long (a few hundred phoneme pairs): in --out and --phoneme-edits, not on stdout
    edits = {mode: figures.pop("phoneme_edits", None) for mode, figures in summary["modes"].items()}
    if args.phoneme_edits:
        mode = modes[0]
        if edits[mode] is None:
            raise Nim4Error(f"{args.testset}: no utterance with a transcript was decoded by a phoneme head, so there are "
                            f"no phoneme edits to write to {args.phoneme_edits}")
        write_text_atomic(args.phoneme_edits, json.dumps(edits[mode] | {"mode": mode, "testset": str(args.testset),
                                                                        "bundle": summary["bundle"]},
                                                         ensure_ascii=False, indent=1) + "\n")
    if args.out:
        write_text_atomic(args.out, json.dumps(summary | {"phoneme_edits": edits, "utterances": details},
                                               ensure_ascii=False, indent=1) + "\n")
    print(json.dumps(summary, ensure_ascii=False))
    rows = report_rows(summary)
    print(format_table(list(rows[0]), [list(r.values()) for r in rows]), file=sys.stderr)
    if "streaming_minus_offline" in summary:
        print(f"streaming - offline: {summary['streaming_minus_offline']}", file=sys.stderr)
    return 0


def add_commands(sub) -> None:
    p = sub.add_parser(
        "eval", help="accuracy of a bundle on a test-set manifest (CER/WER, entities, hallucination)",
        description="Run every utterance of a JSONL test-set manifest through the recognizer (streaming "
                    "and/or offline) and print JSON on stdout and a table on stderr. Manifest lines: "
                    '{"audio": "a.wav", "text": "reference", "hotwords": [...], "entity": "...", '
                    '"language": "zh|en", "tags": [...]}. Normalization and metric definitions: '
                    "bench/evaluate.py.",
        epilog="Example: nim4-edge eval --testset work/demo/corpus/test/test.jsonl --manifest-hotwords --out r.json")
    p.add_argument("--testset", type=Path, required=True, metavar="MANIFEST", help="JSONL test-set manifest")
    p.add_argument("--modes", default="streaming,offline", help="streaming, offline or both (default both)")
    p.add_argument("--manifest-hotwords", action="store_true",
                   help="build a hotword database of all the manifest's hotwords and use it")
    p.add_argument("--extra-hotwords", type=Path, metavar="LIST",
                   help="with --manifest-hotwords: add these entries (one per line), e.g. a million distractors")
    p.add_argument("--tags", help="only utterances with any of these comma-separated tags")
    p.add_argument("--limit", type=int, default=0, help="only the first N utterances")
    p.add_argument("--out", type=Path, help="also write the figures and every hypothesis to this JSON file")
    p.add_argument("--phoneme-edits", type=Path, metavar="FILE",
                   help="write the phoneme head's edits against the references (deletions, insertions and "
                        "substitutions per phoneme, the first of --modes) to this JSON file, for "
                        "`bench hotwords --edit-rates FILE`; use a held-out split, e.g. the corpus's --seed 2 test set")
    add_recognizer_flags(p)
    p.set_defaults(func=cmd_eval)
