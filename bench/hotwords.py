"""`nim4-edge bench hotwords --size N`: build, load, memory and query figures at scale.

Entries are generated: Mandarin place names (2-3 characters + a suffix such as 路, 公园, 大厦; 60%)
and English names (first name, optional middle initial, a surname like Ashford or Whitmore; 40%). Utterances plant one entry in a carrier phrase
("导航到 X", "call X please"); phonemes come from the lexicon (a perfect phoneme head: this measures the
database, not the model). Per query: latency of the automaton scan + filtering, recall of the planted
entry (or a homophone of it), and other entries retrieved (false retrievals). A naive baseline
(substring test of every key) runs on a few of the same queries, so the ratio is from one run.
"""

from __future__ import annotations

import copy
import json
import os
import random
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from rapidfuzz import process
from rapidfuzz.distance import Levenshtein

from nim4_edge.bench.report import format_table, percentile
from nim4_edge.runtime.hotwords import HotwordDatabase, HotwordEntry, HotwordRetriever, RetrievalConfig, RetrievalMode
from nim4_edge.runtime.hotwords.index import PartIndex
from nim4_edge.runtime.hotwords.lexicon import Lexicon, pronounce_many
from nim4_edge.runtime.text import has_han

_CHARS = "惠新西街朝阳东南北中华海淀安宁平和兴旺福寿长春龙凤金银石花明光山水天德建国民生康乐泰丰盛嘉宝林园湖桥"
_SUFFIXES = ("路", "街", "公园", "广场", "大厦", "酒店", "医院", "小区", "站", "中心")
_FIRST = ("James Mary Robert Patricia John Jennifer Michael Linda David Elizabeth William Barbara Richard Susan "
          "Joseph Jessica Thomas Sarah Charles Karen Daniel Nancy Matthew Lisa Anthony Betty Mark Sandra").split()
# Surnames built from English place-name parts (Ash+ford, Whit+more, ...): a large, plausible space.
_LAST_HEADS = ("Ash Brad Brook Cal Carl Chad Cliff Craw Dal Dun Ed Fair Gold Green Hal Hart Hay Kings Lang Lock "
               "Mar Mid Mont New North Old Pem Red Rich Rock Ross Rut South Stan Stock Thorn West Whit Wood York").split()
_LAST_TAILS = "ford more ton ley field wood son by well worth ham stead burn dale wick ridge".split()


def generate_entries(size: int, seed: int = 0) -> list[str]:
    rng = random.Random(seed)
    names: set[str] = set()
    while len(names) < size:
        if rng.random() < 0.6:
            names.add("".join(rng.choice(_CHARS) for _ in range(rng.randint(2, 3))) + rng.choice(_SUFFIXES))
        else:
            middle = rng.choice(("", "") + tuple(f"{c}. " for c in "ABCDEFGHJKLMNPRSTW"))
            names.add(f"{rng.choice(_FIRST)} {middle}{rng.choice(_LAST_HEADS)}{rng.choice(_LAST_TAILS)}")
    return sorted(names)


def _load_in_fresh_process(path: Path) -> tuple[float, float]:
    """Load time and RSS growth measured in a new interpreter (this one has freed memory to reuse)."""
    code = (
        "import json, sys, time\n"
        "from nim4_edge.runtime.hotwords.database import HotwordDatabase\n"
        "from nim4_edge.bench.report import rss_bytes\n"
        "import ahocorasick, numpy\n"
        "before = rss_bytes(); t0 = time.perf_counter()\n"
        "db = HotwordDatabase.load(sys.argv[1])\n"
        "print(json.dumps([time.perf_counter() - t0, (rss_bytes() - before) / 2**20]))\n"
    )
    out = subprocess.run([sys.executable, "-c", code, str(path)], capture_output=True, text=True, check=True)
    load_s, rss_mb = json.loads(out.stdout)
    return load_s, rss_mb


def inject_error(phonemes: list[str], start: int, end: int, rng: random.Random, symbols: list[str]) -> list[str]:
    """One error inside [start, end): a wrong tone when there is a tonal final to change, else a
    substitution, deletion or insertion (equally likely)."""
    out = list(phonemes)
    i = rng.randrange(start, end)
    kind = rng.choice(("tone", "substitute", "delete", "insert"))
    if kind == "tone" and out[i][-1:] in "12345" and out[i].islower():
        out[i] = out[i][:-1] + rng.choice([t for t in "12345" if t != out[i][-1]])
    elif kind == "delete":
        del out[i]
    elif kind == "insert":
        out.insert(i, rng.choice(symbols))
    else:
        out[i] = rng.choice([s for s in symbols if s != out[i]])
    return out


STREAM_STEP = 4  # phonemes per step of the streamed queries: about what a 640 ms encoder chunk adds


def _halves_only(database: HotwordDatabase, lexicon: Lexicon) -> HotwordRetriever:
    """A retriever over the same database without its thirds index (own piece cache, so both start cold)."""
    halves = copy.copy(database)
    h = database.tolerant[0]
    halves.tolerant = (PartIndex(h.errors, h.pieces, h.offsets, h.entries, h.automaton),)
    return HotwordRetriever(halves, lexicon, RetrievalConfig(mode=RetrievalMode.TOLERANT))


def bench_hotwords(size: int, queries: int = 500, naive_queries: int = 10, seed: int = 0, jobs: int = 0,
                   tolerant: bool = True) -> dict:
    lexicon = Lexicon()
    words = generate_entries(size, seed)
    t0 = time.perf_counter()
    pronounced = [(HotwordEntry(w), p) for w, p in zip(words, pronounce_many(words, lexicon.inventory, jobs))]
    g2p_s = time.perf_counter() - t0
    t0 = time.perf_counter()
    database = HotwordDatabase.build(pronounced, lexicon, tolerant=tolerant)
    index_s = time.perf_counter() - t0
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "bench.db"
        database.save(path)
        file_bytes = os.path.getsize(path)
        del database, pronounced
        load_s, rss_mb = _load_in_fresh_process(path)
        database = HotwordDatabase.load(path)
    retriever = HotwordRetriever(database, lexicon)
    all_keys = list(database.keys)  # for the baselines only
    fuzzy = HotwordRetriever(database, lexicon, RetrievalConfig(mode=RetrievalMode.TOLERANT)) if tolerant else None
    halves = _halves_only(database, lexicon) if tolerant else None  # what the thirds add, same queries
    symbols = [s for s in lexicon.inventory.symbols[2:]]
    rng = random.Random(seed + 1)
    latencies, hits, false_per_utt, naive_ms = [], 0, [], []
    err_exact_hits = err_fuzzy_hits = 0
    fuzzy_latencies, fuzzy_false, rapidfuzz_ms = [], [], []
    two_error_hits, two_error_queries = 0, 0  # entries of >= 10 phonemes (the thirds index), two errors
    two_error_halves_hits, two_error_us, two_error_halves_us = 0, [], []
    streamed_us = []  # one-error utterances fed STREAM_STEP phonemes at a time, words() after each
    for i in range(queries):
        target = words[rng.randrange(len(words))]
        carrier = ("导航到{}", "我要去{}附近") if has_han(target[0]) else ("call {} please", "navigate to {} now")
        phonemes = lexicon.phonemes(rng.choice(carrier).format(target))
        code = lexicon.encode(phonemes)
        t0 = time.perf_counter()
        session = retriever.session()
        session.extend_code(code)
        got = session.words()
        latencies.append((time.perf_counter() - t0) * 1e6)
        target_key = lexicon.encode(lexicon.phonemes(target))
        same_sound = {w for w in got if lexicon.encode(lexicon.phonemes(w)) == target_key}
        hits += bool(same_sound)
        false_per_utt.append(len(set(got) - same_sound))
        if i < naive_queries:
            t0 = time.perf_counter()
            _ = [k for k in all_keys if k in code]
            naive_ms.append((time.perf_counter() - t0) * 1000)
        if fuzzy is None:
            continue
        # the same utterance with one phoneme error inside the planted entry
        start = code.find(target_key)
        broken = inject_error(phonemes, start, start + len(target_key), rng, symbols)
        broken_code = lexicon.encode(broken)
        err_exact_hits += any(lexicon.encode(lexicon.phonemes(w)) == target_key for w in retriever.retrieve(broken))
        t0 = time.perf_counter()
        session = fuzzy.session()
        session.extend_code(broken_code)
        got = session.words()
        fuzzy_latencies.append((time.perf_counter() - t0) * 1e6)
        same_sound = {w for w in got if lexicon.encode(lexicon.phonemes(w)) == target_key}
        err_fuzzy_hits += bool(same_sound)
        fuzzy_false.append(len(set(got) - same_sound))
        # the same utterance as a stream delivers it: a few phonemes per chunk, a partial (words()) each
        t0 = time.perf_counter()
        session = fuzzy.session()
        for step in range(0, len(broken_code), STREAM_STEP):
            session.extend_code(broken_code[step : step + STREAM_STEP])
            session.words()
        streamed_us.append((time.perf_counter() - t0) * 1e6)
        if len(target_key) >= 10:  # the same utterance with two errors inside the planted entry
            twice = inject_error(phonemes, start, start + len(target_key), rng, symbols)
            twice = inject_error(twice, start, start + len(target_key) - 1, rng, symbols)
            t0 = time.perf_counter()
            session = halves.session()
            session.extend_code(lexicon.encode(twice))
            halves_got = session.words()
            two_error_halves_us.append((time.perf_counter() - t0) * 1e6)
            two_error_halves_hits += any(lexicon.encode(lexicon.phonemes(w)) == target_key for w in halves_got)
            t0 = time.perf_counter()
            session = fuzzy.session()
            session.extend_code(lexicon.encode(twice))
            got = session.words()
            fuzzy_latencies.append((time.perf_counter() - t0) * 1e6)
            two_error_us.append(fuzzy_latencies[-1])
            same_sound = {w for w in got if lexicon.encode(lexicon.phonemes(w)) == target_key}
            two_error_hits += bool(same_sound)
            two_error_queries += 1
            fuzzy_false.append(len(set(got) - same_sound))
        if i < naive_queries:  # brute-force fuzzy: every key against the one right window (a lower bound)

            window = broken_code[start : start + len(target_key)]
            t0 = time.perf_counter()
            process.extract(window, all_keys, scorer=Levenshtein.distance, score_cutoff=1, limit=None)
            rapidfuzz_ms.append((time.perf_counter() - t0) * 1000)
    return {
        "entries": size,
        "pronunciations": len(database.keys),
        "g2p_seconds": g2p_s,
        "g2p_processes": jobs or os.cpu_count(),
        "index_seconds": index_s,
        "build_seconds": g2p_s + index_s,
        "load_seconds": load_s,
        "rss_after_load_mb": rss_mb,
        "file_mb": file_bytes / 1e6,
        "queries": queries,
        "query_us_p50": percentile(latencies, 50),
        "query_us_p99": percentile(latencies, 99),
        "recall_exact": hits / queries,
        "false_retrievals_per_utterance": float(np.mean(false_per_utt)),
        "naive_substring_ms_p50": percentile(naive_ms, 50),
        "speedup_over_naive": percentile(naive_ms, 50) * 1000 / percentile(latencies, 50),
        "tolerant_index": tolerant,
        "one_error_recall_exact": err_exact_hits / queries if tolerant else None,
        "one_error_recall_tolerant": err_fuzzy_hits / queries if tolerant else None,
        "two_error_queries": two_error_queries if tolerant else None,
        "two_error_recall_tolerant": two_error_hits / max(1, two_error_queries) if tolerant else None,
        "two_error_recall_halves_only": two_error_halves_hits / max(1, two_error_queries) if tolerant else None,
        "two_error_query_us_p50": percentile(two_error_us, 50) if tolerant else None,
        "two_error_query_us_p50_halves_only": percentile(two_error_halves_us, 50) if tolerant else None,
        "tolerant_streamed_us_p50": percentile(streamed_us, 50) if tolerant else None,
        "tolerant_streamed_us_p99": percentile(streamed_us, 99) if tolerant else None,
        "tolerant_query_us_p50": percentile(fuzzy_latencies, 50) if tolerant else None,
        "tolerant_query_us_p99": percentile(fuzzy_latencies, 99) if tolerant else None,
        "tolerant_false_retrievals_per_utterance": float(np.mean(fuzzy_false)) if tolerant else None,
        "rapidfuzz_all_keys_one_window_ms_p50": percentile(rapidfuzz_ms, 50) if tolerant else None,
    }


def table(report: dict) -> str:
    rows = [
        ["entries / pronunciations", f"{report['entries']} / {report['pronunciations']}"],
        ["build (g2p + index)", f"{report['build_seconds']:.1f} s ({report['g2p_seconds']:.1f} + {report['index_seconds']:.1f})"],
        ["load", f"{report['load_seconds']:.2f} s"],
        ["RSS added by load / file", f"{report['rss_after_load_mb']:.0f} MB / {report['file_mb']:.0f} MB"],
        ["query p50 / p99 (exact)", f"{report['query_us_p50']:.0f} / {report['query_us_p99']:.0f} us"],
        ["recall of planted entries (exact)", f"{100 * report['recall_exact']:.1f}%"],
        ["false retrievals per utterance", f"{report['false_retrievals_per_utterance']:.2f}"],
        ["naive substring scan p50", f"{report['naive_substring_ms_p50']:.1f} ms ({report['speedup_over_naive']:.0f}x slower)"],
    ]
    if report["tolerant_index"]:
        rows += [
            ["one phoneme error: recall exact / tolerant", f"{100 * report['one_error_recall_exact']:.1f}% / "
                                                          f"{100 * report['one_error_recall_tolerant']:.1f}%"],
            ["two errors, entries of >= 10 phonemes: recall tolerant", f"{100 * report['two_error_recall_tolerant']:.1f}% "
                                                                      f"of {report['two_error_queries']}"],
            ["the same, halves only (no thirds): recall, p50", f"{100 * report['two_error_recall_halves_only']:.1f}%, "
                                                              f"{report['two_error_query_us_p50_halves_only']:.0f} us "
                                                              f"(with thirds {report['two_error_query_us_p50']:.0f} us)"],
            ["tolerant query p50 / p99 (one- and two-error utterances)", f"{report['tolerant_query_us_p50']:.0f} / {report['tolerant_query_us_p99']:.0f} us"],
            [f"tolerant, streamed {STREAM_STEP} phonemes a step (words() each): p50 / p99 per utterance",
             f"{report['tolerant_streamed_us_p50']:.0f} / {report['tolerant_streamed_us_p99']:.0f} us"],
            ["tolerant false retrievals per utterance", f"{report['tolerant_false_retrievals_per_utterance']:.2f}"],
            ["rapidfuzz over all keys, one window", f"{report['rapidfuzz_all_keys_one_window_ms_p50']:.1f} ms"],
        ]
    return format_table(["figure", "value"], rows)
