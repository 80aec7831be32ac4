"""Lexicon (polyphones, mixed scripts), the hotword database (homophone groups, longest match,
per-stream additions, incremental scans), its safe file format, and hotwords reaching the prompt."""

from __future__ import annotations

import json
import os
import signal
import struct
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("pypinyin")

from nim4_edge.runtime.hotwords import (  # noqa: E402
    HotwordDatabase,
    HotwordEntry,
    HotwordError,
    HotwordRetriever,
    Rejection,
    RetrievalConfig,
    RetrievalMode,
    parse_hotword_lines,
)
from nim4_edge.runtime.hotwords import LiveDatabase  # noqa: E402
from nim4_edge.runtime.hotwords import _query, retrieval, signatures  # noqa: E402
from nim4_edge.runtime.hotwords.database import MAGIC  # noqa: E402
from nim4_edge.runtime.hotwords.updates import update_database  # noqa: E402
from nim4_edge.runtime.hotwords.lexicon import Lexicon, LexiconError  # noqa: E402
from nim4_edge.runtime.hotwords.strings import code_ids  # noqa: E402
from nim4_edge.runtime.phonemes import PhonemeInventory  # noqa: E402

LEX = Lexicon()
WORDS = [("惠新西街", 2.0), ("彗新西街", 1.0), ("朝阳公园", 1.0), ("NIO House", 1.0), ("NIO", 1.0),
         ("蔚来ES8", 1.0), ("张伟", 1.0)]


def _db(words=WORDS) -> HotwordDatabase:
    entries = [(HotwordEntry(w, weight), LEX.phonemes(w)) for w, weight in words]
    return HotwordDatabase.build(entries, LEX)


def test_polyphones_follow_the_phrase():
    assert LEX.phonemes("朝阳") == ["ch", "ao2", "iang2"]  # the place, not zhao1 yang2 "morning sun"
    assert LEX.phonemes("朝阳公园")[:3] == ["ch", "ao2", "iang2"]
    assert LEX.phonemes("重庆") == ["ch", "ong2", "q", "ing4"]
    assert LEX.phonemes("银行") == ["in2", "h", "ang2"]  # strict spelling: zero initial, final "in"


def test_mixed_script_digits_and_english():
    assert LEX.phonemes("蔚来ES8") == ["uei4", "l", "ai2", "IY", "EH", "S", "b", "a1"]
    assert LEX.phonemes("Route 66")[-4:] == ["S", "IH", "K", "S"]  # "sixty six"
    assert LEX.phonemes("Zyxqor")  # not in CMUdict: letter-to-sound fallback
    with pytest.raises(LexiconError, match="no pronounceable"):
        LEX.phonemes("!!! ...")


def test_homophones_share_one_key_heaviest_first():
    db = _db()
    retriever = HotwordRetriever(db, LEX)
    got = retriever.retrieve(LEX.phonemes("导航到惠新西街"))
    assert got == ["惠新西街", "彗新西街"]
    assert len(db) == 7 and db.num_keys == 6


def test_longest_match_wins():
    retriever = HotwordRetriever(_db(), LEX, RetrievalConfig(min_syllables=1))
    assert retriever.retrieve(LEX.phonemes("go to NIO House")) == ["NIO House"]
    assert retriever.retrieve(LEX.phonemes("NIO")) == ["NIO"]


def test_short_entries_need_a_stream_addition():
    retriever = HotwordRetriever(_db(), LEX)
    spoken = LEX.phonemes("打电话给张伟")
    assert retriever.retrieve(spoken) == []  # 2 syllables: too short to trust from a million-entry base
    retriever.add([HotwordEntry("张伟", 1.0, "contact")])  # the driver's contacts
    assert retriever.retrieve(spoken) == ["张伟"]
    other = HotwordRetriever(_db(), LEX)  # another stream over the same base: unaffected
    assert other.retrieve(spoken) == []
    retriever.remove(["惠新西街"])
    assert retriever.retrieve(LEX.phonemes("惠新西街")) == ["彗新西街"]


def test_incremental_scan_equals_whole_scan():
    retriever = HotwordRetriever(_db(), LEX, RetrievalConfig(min_syllables=1))
    phonemes = LEX.phonemes("导航到惠新西街再去朝阳公园看NIO House")
    whole = retriever.session()
    whole.extend(phonemes)
    pieces = retriever.session()
    for start in range(0, len(phonemes), 3):  # keys straddle the piece edges
        pieces.extend(phonemes[start : start + 3])
    key = lambda s: sorted((m.start, m.end, m.key_id) for m in s.matches)  # noqa: E731
    assert key(whole) == key(pieces) and len(whole.matches) >= 4
    assert pieces.words() == whole.words()


def test_the_exact_query_in_c_finds_what_the_numpy_signatures_say():
    """_query.c hashes as signatures.py builds: every (x, length) whose numpy signature is in the
    index and whose key is what was heard, and nothing else, from a fresh start and from the middle
    (new_from); a signature whose key differs from the heard phonemes (a collision, an edited file)
    finds nothing."""
    rng = np.random.default_rng(0)
    words = [("".join(rng.choice(list("惠新西街朝阳公园海淀安宁"), size=int(rng.integers(2, 6)))), 1.0) for _ in range(300)]
    words = list(dict(words).items()) + [("NIO House", 1.0), ("James Ashford", 1.0)]
    segment = _db(words).base
    index = segment.exact
    heard = LEX.encode(LEX.phonemes("导航到" + "".join(w for w, _ in words[:40:3]) + "call James Ashford"))
    ids = code_ids(heard)
    h, inv = signatures.prefix_hashes(ids)
    stored = dict(zip(index.signatures.tolist(), index.key_ids.tolist()))
    for new_from in (0, 17):
        want = set()
        for length in index.lengths.tolist():
            for x in range(max(0, new_from - length + 1), len(ids) - length + 1):
                q = int(signatures.combine([signatures.span_hash(h, inv, np.array([x]), np.array([x + length]))],
                                           np.array([length << 8]))[0])
                if q in stored:
                    assert segment.key(stored[q]) == heard[x : x + length]
                    want.add((stored[q], x, length))
        got = segment.find_exact(heard, new_from)
        assert set(got) == want and len(got) == len(want) and len(want) >= (12 if new_from else 14)
    arrays = [index.lengths, index.signatures, index.key_ids, index.bitmap, segment.key_starts, segment.key_ids_flat]
    lying = np.roll(index.key_ids, 1)  # every signature names another key: nothing is found
    assert _query.find_exact(heard, 0, *arrays[:2], lying, *arrays[3:]) == []
    with pytest.raises(ValueError, match="do not fit"):  # arrays that do not belong together are refused
        _query.find_exact(heard, 0, *arrays[:2], index.key_ids[:-1], *arrays[3:])


def test_save_load_roundtrip(tmp_path):
    db = _db()
    db.save(tmp_path / "hw.db")
    loaded = HotwordDatabase.load(tmp_path / "hw.db", expected_inventory=LEX.inventory)
    assert loaded.base.words == db.base.words
    assert [loaded.base.key(k) for k in range(6)] == [db.base.key(k) for k in range(6)] == db.base.keys_of(list(range(6)))
    assert HotwordRetriever(loaded, LEX).retrieve(LEX.phonemes("惠新西街")) == ["惠新西街", "彗新西街"]


def _header(path):
    data = path.read_bytes()
    n, magic = struct.unpack("<Q8s", data[-16:])
    assert magic == MAGIC
    return data, json.loads(data[-16 - n : -16]), len(data) - 16 - n


def _write_with_header(path, data: bytes, header: dict, body_end: int) -> None:
    raw = json.dumps(header).encode()
    path.write_bytes(data[:body_end] + raw + struct.pack("<Q8s", len(raw), MAGIC))


def test_tampered_truncated_or_foreign_files_are_refused(tmp_path):
    path = tmp_path / "hw.db"
    _db().save(path)
    data, header, _ = _header(path)
    where = header["segments"][0]["sections"]["words"]
    flipped = bytearray(data)
    flipped[where["offset"]] ^= 0x01
    (tmp_path / "t.db").write_bytes(bytes(flipped))
    with pytest.raises(HotwordError, match="'words' is truncated or was modified"):
        HotwordDatabase.load(tmp_path / "t.db")
    (tmp_path / "cut.db").write_bytes(data[: len(data) // 2])
    with pytest.raises(HotwordError, match="truncated"):
        HotwordDatabase.load(tmp_path / "cut.db")
    (tmp_path / "x.db").write_bytes(b"not a database")
    with pytest.raises(HotwordError, match="not a nim4-edge hotword database"):
        HotwordDatabase.load(tmp_path / "x.db")
    other = PhonemeInventory("other-v9", ("<blk>", "a1", "b"))
    with pytest.raises(HotwordError, match="other-v9"):
        HotwordDatabase.load(path, expected_inventory=other)
    old = bytearray(data)
    old[len(MAGIC) : len(MAGIC) + 4] = struct.pack("<I", 1)  # a format-1 file (pickled automata): rebuild
    (tmp_path / "v1.db").write_bytes(bytes(old))
    with pytest.raises(HotwordError, match="format 1, this nim4-edge reads 3; rebuild it"):
        HotwordDatabase.load(tmp_path / "v1.db")


def test_a_section_of_python_objects_is_refused_even_with_valid_checksums(tmp_path):
    """A file is data: arrays of numbers only (an object dtype would make numpy build objects)."""
    path = tmp_path / "hw.db"
    _db().save(path)
    data, header, body_end = _header(path)
    header["segments"][0]["sections"]["weights"]["dtype"] = "|O"
    _write_with_header(path, data, header, body_end)
    with pytest.raises(HotwordError, match="'weights' has dtype object"):
        HotwordDatabase.load(path)


def test_parse_reports_bad_lines():
    entries, problems = parse_hotword_lines(["# comment", "", "惠新西街\t2\tpoi", "Alice\tx", "惠新西街", "NIO"])
    assert [(n, e.word, e.weight, e.category) for n, e in entries] == [(3, "惠新西街", 2.0, "poi"), (6, "NIO", 1.0, "")]
    assert [n for n, _ in problems] == [4, 5]


def _cli(*args):
    return subprocess.run([sys.executable, "-m", "nim4_edge.cli", *args], capture_output=True, text=True)


def test_build_cli_reports_lines_and_strict_writes_nothing(tmp_path):
    lst = tmp_path / "list.txt"
    lst.write_text("惠新西街\t2\n!!!\n朝阳公园\n", encoding="utf-8")
    proc = _cli("hotwords", "build", str(lst), "-o", str(tmp_path / "a.db"))
    assert proc.returncode == 0 and f"{lst}:2:" in proc.stderr and (tmp_path / "a.db").is_file()
    proc = _cli("hotwords", "build", str(lst), "-o", str(tmp_path / "b.db"), "--strict")
    assert proc.returncode == 2 and not (tmp_path / "b.db").exists()
    (tmp_path / "bad.txt").write_bytes("惠新\n".encode() + b"\xff\xfe\n")
    proc = _cli("hotwords", "build", str(tmp_path / "bad.txt"), "-o", str(tmp_path / "c.db"))
    assert proc.returncode == 2 and "line 2 is not valid UTF-8" in proc.stderr
    (tmp_path / "empty.txt").write_text("")
    proc = _cli("hotwords", "build", str(tmp_path / "empty.txt"), "-o", str(tmp_path / "d.db"))
    assert proc.returncode == 2 and "no usable entries" in proc.stderr and "Traceback" not in proc.stderr
    proc = _cli("hotwords", "query", str(tmp_path / "a.db"), "--text", "去惠新西街")
    assert proc.returncode == 0 and "retrieved: 惠新西街" in proc.stdout


def test_runtime_puts_retrieved_hotwords_into_the_final_prompt(demo_bundle, tmp_path):
    """Phonemes the demo model really hears in an example are registered as a made-up name's
    pronunciation: the stream must retrieve it and the final prompt must carry it."""
    pytest.importorskip("llama_cpp")
    from nim4_edge.runtime.audio import load_audio
    from nim4_edge.runtime.recognizer import Recognizer, RecognizerConfig

    audio = load_audio(Path(__file__).parents[1] / "examples" / "zh_navigate.wav", 16000)

    def run(config):
        with Recognizer(config) as recognizer, recognizer.create_stream() as stream:
            events = stream.accept_waveform(audio, 16000) + stream.input_finished()
            return [e for e in events if e.kind == "final"][0], stream.decoder.last_suffix

    base = RecognizerConfig(bundle=demo_bundle, partial_every_chunks=0)
    plain, plain_suffix = run(base)
    assert len(plain.phonemes) >= 8 and "Contextual hints" not in plain_suffix
    heard = plain.phonemes[2:8]
    db = HotwordDatabase.build([(HotwordEntry("奇名甲"), heard), (HotwordEntry("奇名乙"), heard)], LEX)
    db.save(tmp_path / "hw.db")
    final, suffix = run(RecognizerConfig(bundle=demo_bundle, partial_every_chunks=0, hotwords=tmp_path / "hw.db",
                                         respell_hints=False))
    assert final.hotwords == ["奇名甲", "奇名乙"]
    assert "奇名甲, 奇名乙" in suffix, suffix


def test_bench_hotwords_reports_measured_figures(tmp_path):
    from nim4_edge.bench.hotwords import bench_hotwords, generate_entries, table

    assert len(set(generate_entries(500))) == 500
    rates = tmp_path / "edits.json"
    rates.write_text(json.dumps(_edit_counts(deleted={"d": 50}, substituted={"b d": 20}, inserted={"AA": 5})), encoding="utf-8")
    report = bench_hotwords(300, queries=40, naive_queries=5, updates=50, edit_rates=rates)
    assert report["entries"] == 300 and report["recall_exact"] == 1.0
    assert report["query_us_p50"] > 0 and report["load_seconds"] > 0 and report["naive_substring_ms_p50"] > 0
    assert "false retrievals" in table(report)
    assert report["two_error_queries"] > 0 and report["two_error_recall_tolerant"] > 0.8
    assert report["tolerant_streamed_us_p50"] > 0 and "streamed" in table(report)
    assert report["tolerant_recall_heard_exactly"] == 1.0  # 300 names: no carrier syllable makes another
    assert report["ambiguity_queries"] == 40 and 0 <= report["one_error_ambiguous_share"] <= 1
    assert report["g2p_agreement_with_pypinyin"] == 1.0 and report["g2p_mismatches"] == []
    # 300 sparse names: few ties, so the least wrong names at the recall reached are few
    assert 0 <= report["tie_bound_wrong_names_at_measured_recall"] <= report["tolerant_false_retrievals_per_utterance"] + 0.5
    assert "same-span ties" in table(report)
    assert report["added_found_by_running_stream"] and not report["removed_still_found"] and report["removed"] == 50
    # the same utterances with the errors the rates draw: recall and wrong names on them too
    assert report["head_errors_one_error_recall_tolerant"] > 0.8 and report["head_errors_two_error_queries"] > 0
    assert report["head_errors_false_retrievals_per_utterance"] >= 0 and "phoneme head makes them" in table(report)
    if report["aho_corasick"] is not None:  # the baseline of format 1, where pyahocorasick is installed
        assert report["aho_corasick"]["scan_us_p50"] > 0


def _edit_counts(**kinds) -> dict:
    counts = {"format": "nim4-edge phoneme edits 1", "utterances": 10, "reference": {"AA": 1000, "d": 1000, "b": 1000},
              "deleted": {}, "inserted": {}, "substituted": {}}
    return counts | kinds


def test_edit_rates_draw_errors_as_the_head_made_them():
    import random

    from rapidfuzz.distance import Levenshtein

    from nim4_edge.bench.hotwords import EditRates

    symbols = list(LEX.inventory.symbols[2:])
    rng = random.Random(0)
    dropped = EditRates(_edit_counts(deleted={"d": 900}), symbols)  # the head drops d 9 times in 10
    draws = [dropped.draw(["AA", "d", "AA"], 0, 3, rng) for _ in range(300)]
    assert all(Levenshtein.distance(LEX.encode(d), LEX.encode(["AA", "d", "AA"])) == 1 for d in draws)  # one edit each
    assert sum(d == ["AA", "AA"] for d in draws) > 250  # smoothing leaves the rest a small chance
    swapped = EditRates(_edit_counts(substituted={"b d": 500}), symbols)
    draws = [swapped.draw(["sh", "b", "AA", "b"], 1, 2, rng) for _ in range(300)]  # only the first b may change
    assert sum(d == ["sh", "d", "AA", "b"] for d in draws) > 250
    assert all(d[0] == "sh" and d[-1] == "b" for d in draws)


def test_edit_rates_refuse_a_file_that_is_not_one(tmp_path):
    from nim4_edge.bench.hotwords import EditRates
    from nim4_edge.runtime.errors import Nim4Error

    symbols = list(LEX.inventory.symbols[2:])
    path = tmp_path / "e.json"
    for counts, message in ((["not", "a", "dict"], "not a phoneme edits file"),
                            (_edit_counts(deleted={"zz9": 3}), "phoneme 'zz9' in 'deleted'"),
                            (_edit_counts(substituted={"b d": -1}), "'substituted' must map phonemes to counts"),
                            (_edit_counts(substituted={"b d AA": 1}), "is not 'REFERENCE HEARD'"),
                            (_edit_counts(reference={}), "no reference phonemes")):
        path.write_text(json.dumps(counts), encoding="utf-8")
        with pytest.raises(Nim4Error, match=message):
            EditRates.load(path, symbols)
    path.write_text("{", encoding="utf-8")
    with pytest.raises(Nim4Error, match="--phoneme-edits"):
        EditRates.load(path, symbols)


def test_the_tie_bound_takes_the_cheapest_utterances_first():
    from nim4_edge.bench.hotwords import tie_bound

    costs = [3, 0, None, 1, 0]  # wrong names each utterance costs to keep its planted entry (None: not found)
    assert tie_bound(costs, 0.4) == 0.0 and tie_bound(costs, 0.6) == 1 / 5 and tie_bound(costs, 0.8) == 4 / 5
    assert tie_bound(costs, 1.0) == float("inf")  # one planted entry is never found
    assert tie_bound([], 0.9) == 0.0  # no utterance of that kind (a bench without long names)


def test_syllable_split_equals_pypinyin_strict_style():
    """The lexicon asks pypinyin once per run (TONE3) and splits syllables itself; over every
    character of the CJK block this must agree with pypinyin's own strict initials/finals, except a
    few interjections whose strict spelling is not a final of the inventory."""
    import pypinyin
    from pypinyin import Style

    from nim4_edge.runtime.hotwords.lexicon import split_syllable

    differ = set()
    for code in range(0x4E00, 0x9FA6):
        ch = chr(code)
        whole = pypinyin.lazy_pinyin(ch, style=Style.TONE3, neutral_tone_with_five=True)[0]
        if whole[-1:] not in "12345":
            continue
        initial = pypinyin.lazy_pinyin(ch, style=Style.INITIALS, strict=True)[0]
        final = pypinyin.lazy_pinyin(ch, style=Style.FINALS_TONE3, strict=True, neutral_tone_with_five=True)[0]
        if split_syllable(whole) != ([initial] if initial else []) + [final or whole]:
            differ.add(ch)
    assert differ <= {"哟", "唷", "喲", "噷"}  # yo1 -> io1 (pypinyin: o1), hm5 -> h m5 (pypinyin: h hm5)


def test_tolerant_retrieval_forgives_one_error_or_a_wrong_tone(tmp_path):
    words = [(w, 1.0) for w in ("惠新西街", "朝阳公园", "NIO House", "Jessica Oldham")]
    db = HotwordDatabase.build([(HotwordEntry(w), LEX.phonemes(w)) for w, _ in words], LEX, tolerant=True)
    db.save(tmp_path / "t.db")
    db = HotwordDatabase.load(tmp_path / "t.db")
    exact = HotwordRetriever(db, LEX)
    tolerant = HotwordRetriever(db, LEX, RetrievalConfig(mode=RetrievalMode.TOLERANT))
    heard = LEX.phonemes("导航到惠新西街")
    i = heard.index("uei4")
    cases = {
        "wrong tone": heard[:i] + ["uei2"] + heard[i + 1 :],
        "substitution": heard[:i + 1] + ["s"] + heard[i + 2 :],
        "deletion": heard[:i] + heard[i + 1 :],
        "insertion": heard[:i] + ["n"] + heard[i:],
    }
    for name, phonemes in cases.items():
        assert exact.retrieve(phonemes) == [], name
        assert tolerant.retrieve(phonemes) == ["惠新西街"], name
    two_errors = [{"x": "s", "j": "zh"}.get(p, p) for p in heard]  # 西 -> si, 街 -> zhie: two edits
    assert tolerant.retrieve(two_errors) == []
    no_index = HotwordDatabase.build([(HotwordEntry("惠新西街"), LEX.phonemes("惠新西街"))], LEX)
    assert HotwordRetriever(no_index, LEX, RetrievalConfig(mode=RetrievalMode.TOLERANT)).retrieve(cases["deletion"]) == []


def test_long_keys_forgive_two_errors_short_keys_one(tmp_path):
    names = ("Carole Quintero", "惠新西街")  # 13 phonemes (thirds index), 8 (halves only)
    built = HotwordDatabase.build([(HotwordEntry(w), LEX.phonemes(w)) for w in names], LEX, tolerant=True)
    built.save(tmp_path / "t.db")
    db = HotwordDatabase.load(tmp_path / "t.db")
    assert [(i.errors, i.parts, i.keep) for i in db.base.tolerant] == [(1, 3, 2), (2, 5, 3)]
    tolerant = HotwordRetriever(db, LEX, RetrievalConfig(mode=RetrievalMode.TOLERANT))
    heard = LEX.phonemes("phone Carole Quintero")  # F OW N K AE R AH L K W IY N T EH R OW
    two_errors = heard[:5] + ["AA"] + heard[6:10] + heard[11:]  # R AH -> R AA (sub), W IY -> W (del)
    assert LEX.phonemes("phone Karl Quintero") != two_errors
    assert tolerant.retrieve(two_errors) == ["Carole Quintero"]
    assert HotwordRetriever(db, LEX).retrieve(two_errors) == []  # exact retrieval does not
    three_errors = two_errors[:-1] + ["AH"]
    assert tolerant.retrieve(three_errors) == []
    session = tolerant.session()
    session.extend(two_errors)
    (candidate,) = session.candidates()
    assert (candidate.match.source, candidate.match.errors, candidate.words, candidate.kept) == (
        "tolerant", 2, ["Carole Quintero"], True)
    # a short key is not matched with two errors (one in four phonemes would match names by chance)
    short = [{"x": "s", "j": "zh"}.get(p, p) for p in LEX.phonemes("惠新西街")]
    assert tolerant.retrieve(short) == []


def test_a_name_heard_exactly_survives_a_longer_guess_and_a_longer_name_its_inner_one():
    """Two cases the bench found at a million names. 桥明园站 is one phoneme from 我要去明园站's 去明园站
    (q v -> q iao): it must not shadow 明园站, heard exactly. 天福盛中心 heard with two errors (one in 天)
    holds 福盛中心 one error away: the longer name is kept too, not rejected for the closer inner one."""
    names = ("明园站", "桥明园站", "福盛中心", "天福盛中心")
    db = HotwordDatabase.build([(HotwordEntry(w), LEX.phonemes(w)) for w in names], LEX, tolerant=True)
    tolerant = HotwordRetriever(db, LEX, RetrievalConfig(mode=RetrievalMode.TOLERANT))
    heard = LEX.phonemes("我要去明园站")
    got = {c.words[0]: c for c in _candidates(tolerant, heard)}
    assert got["明园站"].kept and got["明园站"].match.errors == 0
    assert got["桥明园站"].kept and got["桥明园站"].match.errors == 1  # a guess next to it, not instead
    # the shadow rule is still there for matches heard no better than the longer one
    exact_only = HotwordRetriever(db, LEX)
    assert exact_only.retrieve(LEX.phonemes("我要去桥明园站")) == ["桥明园站"]
    spoken = LEX.phonemes("导航到天福盛中心")
    t, s = spoken.index("ian1"), spoken.index("eng4")
    two_errors = spoken[:t] + ["ia1"] + spoken[t + 1 : s] + ["en4"] + spoken[s + 1 :]  # 天 -> tia, 盛 -> shen
    got = {c.words[0]: c for c in _candidates(tolerant, two_errors)}
    assert got["福盛中心"].kept and got["福盛中心"].match.errors == 1
    assert got["天福盛中心"].kept and got["天福盛中心"].match.errors == 2


def test_two_thirds_shared_by_many_keys_are_refined_by_the_missing_third(tmp_path):
    """100 keys (more than COMMON) share the first two of their three parts, as the first names and
    middle initials of a million contacts do: that signature names no one key, so the one-error index
    looks it up again with the missing third as heard, whole and with each phoneme deleted. Without
    the refinement none of the three errors finds the key."""
    head = ["K", "AE", "T", "D", "AO", "G"]  # parts 0 and 1 of 9-phoneme keys (the one-error index's longest)
    tails = [[c1, v1, c2] for c1 in "B D F G K L M N P S T V".split() for v1 in ("AA", "AE", "AH")
             for c2 in ("B", "D", "F")][:100]
    assert len(tails) == 100 > signatures.COMMON
    entries = [(HotwordEntry(f"name{i:03d}"), head + t) for i, t in enumerate(tails)]
    HotwordDatabase.build(entries, LEX, tolerant=True).save(tmp_path / "many.db")
    db = HotwordDatabase.load(tmp_path / "many.db")  # the refinement is saved and loaded too
    one_error = db.base.tolerant[0]
    assert one_error.errors == 1 and len(one_error.sub_signatures) >= 100 * 4
    config = RetrievalConfig(mode=RetrievalMode.TOLERANT, min_syllables=0)
    c1, v1, c2 = tails[37]
    heard_tails = {"substitution": [c1, "OY", c2], "deletion": [c1, c2], "insertion": [c1, v1, "OY", c2]}
    around = (["W", "IY"], ["P", "L", "IY", "Z"])
    for kind, tail in heard_tails.items():
        got = HotwordRetriever(db, LEX, config).retrieve(around[0] + head + tail + around[1])
        assert "name037" in got, kind
        assert len(got) <= 3, kind  # the three vowels of its syllable at most: a short list
    plain = signatures.SignatureIndex(1, one_error.signatures, one_error.key_ids, one_error.lengths, one_error.pieces)
    db.base.tolerant = (plain,)
    for kind, tail in heard_tails.items():
        assert "name037" not in HotwordRetriever(db, LEX, config).retrieve(around[0] + head + tail + around[1]), kind


def test_three_fifths_shared_by_many_long_keys_are_refined_too():
    """Two errors, one in each of the two parts a popular 3-of-5 signature leaves out: only that
    signature is intact, and the first missing part (one error) refines it."""
    first, middle, last = ["K", "AE", "T"], ["D", "AO", "G"], ["M", "AA", "N"]  # parts 0, 2, 4 of 15
    varied = [[c, v, z] for c in "B D F G K L M N P S T V".split() for v in ("AA", "AE", "AH", "EH", "IH") for z in "SZ"]
    keys = [first + varied[i] + middle + varied[(7 * i + 3) % len(varied)] + last for i in range(100)]
    entries = [(HotwordEntry(f"name{i:03d}"), k) for i, k in enumerate(keys)]
    db = HotwordDatabase.build(entries, LEX, tolerant=True)
    two_errors = db.base.tolerant[1]
    assert two_errors.errors == 2 and len(two_errors.sub_signatures) > 0
    db.base.tolerant = (two_errors,)  # the one-error index cannot see two errors; this one alone
    config = RetrievalConfig(mode=RetrievalMode.TOLERANT, min_syllables=0)
    target = keys[37]
    heard_cases = {
        "two substitutions": target[:4] + ["OY"] + target[5:10] + ["UW"] + target[11:],
        "a deletion and an insertion": target[:4] + target[5:10] + ["OY"] + target[10:],  # inside parts 1 and 3
    }
    for kind, heard in heard_cases.items():
        assert "name037" in HotwordRetriever(db, LEX, config).retrieve(["W", "IY"] + heard + ["P", "IY"]), kind
    plain = signatures.SignatureIndex(2, two_errors.signatures, two_errors.key_ids, two_errors.lengths, two_errors.pieces)
    db.base.tolerant = (plain,)
    for kind, heard in heard_cases.items():
        assert "name037" not in HotwordRetriever(db, LEX, config).retrieve(["W", "IY"] + heard + ["P", "IY"]), kind


def _candidates(retriever, phonemes):
    session = retriever.session()
    session.extend(phonemes)
    return [c for c in session.candidates() if c.words]


def test_text_based_retrieval():
    retriever = HotwordRetriever(_db(), LEX)
    assert retriever.retrieve_from_text("导航到彗新西街") == ["惠新西街", "彗新西街"]  # same sound
    assert retriever.retrieve_from_text("...") == []


def test_hotword_modes_map_to_retrieval_configs():
    assert RetrievalConfig.from_mode("exact") == RetrievalConfig()
    both = RetrievalConfig.from_mode("tolerant+text").mode
    assert both.tolerant and both.first_pass
    assert RetrievalMode.TEXT.first_pass and not RetrievalMode.EXACT_TEXT.tolerant and not RetrievalMode.EXACT.first_pass
    with pytest.raises(ValueError, match="unknown hotword mode"):
        RetrievalConfig.from_mode("fuzzy")
    with pytest.raises(ValueError, match="RetrievalMode"):
        RetrievalConfig(mode="tolerant")


def test_each_mode_combines_hints_as_it_says():
    heard, transcript = ["惠新西街"], ["朝阳公园", "惠新西街"]
    assert RetrievalMode.EXACT.hints(heard, transcript) == heard
    assert RetrievalMode.TOLERANT.hints(heard, transcript) == heard
    assert RetrievalMode.TEXT.hints(heard, transcript) == transcript
    assert RetrievalMode.EXACT_TEXT.hints(heard, transcript) == ["惠新西街", "朝阳公园"]
    # a session's hints: before the first pass only what was heard; after it, both
    session = HotwordRetriever(_db(), LEX, RetrievalConfig(mode=RetrievalMode.EXACT_TEXT, min_syllables=1)).session()
    session.extend(LEX.phonemes("导航到惠新西街"))
    assert session.hints() == ["惠新西街", "彗新西街"]  # the homophone group
    session.take_first_pass("去朝阳公园")
    assert session.hints() == ["惠新西街", "彗新西街", "朝阳公园"]


def test_rejected_candidates_say_why():
    retriever = HotwordRetriever(_db(), LEX, RetrievalConfig(min_syllables=3))
    retriever.remove(["朝阳公园"])
    session = retriever.session()
    session.extend(LEX.phonemes("张伟去朝阳公园 NIO House"))
    why = {c.words[0] if c.words else "": c.rejected for c in session.candidates()}
    assert why["张伟"] is Rejection.TOO_SHORT
    assert why[""] is Rejection.REMOVED
    assert why["NIO House"] is None and why["NIO"] is Rejection.INSIDE_LONGER


def test_tolerant_retrieval_chunk_by_chunk_equals_one_pass():
    """Verification is incremental (a partial per chunk must not redo the utterance): phonemes fed a
    few at a time, with words() asked after each, end with the matches of a single pass."""
    names = ("Carole Quintero", "惠新西街", "朝阳公园南门", "Jessica Oldham")
    db = HotwordDatabase.build([(HotwordEntry(w), LEX.phonemes(w)) for w in names], LEX, tolerant=True)
    retriever = HotwordRetriever(db, LEX, RetrievalConfig(mode=RetrievalMode.TOLERANT))
    # the errors sit at the ends of the names: only a first part is intact, and when it is found the
    # rest of the name has not been heard yet (the verification has to come back to it)
    heard = LEX.phonemes("phone Carole Quintero then go to 朝阳公园南门 and 惠新西街 now")
    i = heard.index("OW", heard.index("EH"))
    heard = heard[: i - 2] + ["AE"] + heard[i - 1 : i] + heard[i + 1 :]  # Quintero: T EH R OW -> T AE R
    j = heard.index("en2")
    heard = heard[:j] + ["en3"] + heard[j + 1 :]  # a wrong tone in 南门
    k = heard.index("ie1")
    heard = heard[:k] + heard[k + 1 :]  # a deletion in 西街
    one_pass = retriever.session()
    one_pass.extend(heard)
    for step in (1, 2, 3, 5):
        session = retriever.session()
        for start in range(0, len(heard), step):
            session.extend(heard[start : start + step])
            session.words()
        key = lambda m: (m.key_id, m.start, m.end, m.errors)  # noqa: E731
        assert sorted(map(key, session.tolerant_matches())) == sorted(map(key, one_pass.tolerant_matches())), step
        assert session.words() == one_pass.words()
    assert set(one_pass.words()) == {"Carole Quintero", "朝阳公园南门", "惠新西街"}


def test_the_tolerant_query_in_c_finds_every_key_a_brute_force_scan_finds():
    """_query.c's tolerant search against brute force: every key within its index's errors of some
    heard window (edit distance with tones counted: the signatures hash tones) is found, and every
    match it reports has the edit distances it says (tones forgiven, and counted). Names from a small
    alphabet and edits at random, so that many keys lie near each heard window; no signature is
    popular at this size (refinement has its own tests), so none is skipped."""
    from rapidfuzz.distance import Levenshtein

    rng = np.random.default_rng(3)
    chars, first = list("惠新西街朝阳安宁平和兴旺福寿"), ["Carole", "James", "Mary", "Linda"]
    last = ["Quintero", "Ashford", "Whitmore", "Oldham", "Bradley"]
    names = {"".join(rng.choice(chars, size=int(rng.integers(2, 5)))) + str(rng.choice(["路", "公园", "大厦"]))
             for _ in range(250)} | {f"{a} {b}" for a in first for b in last}
    db = HotwordDatabase.build([(HotwordEntry(w), LEX.phonemes(w)) for w in sorted(names)], LEX, tolerant=True)
    segment, toneless = db.base, LEX.toneless_ids()
    assert all(not len(index.sub_signatures) for index in segment.tolerant)
    symbols = sorted({p for w in names for p in LEX.phonemes(w)})
    keys = [segment.key(k) for k in range(segment.num_keys)]
    checked = found_with_errors = 0
    for trial in range(60):
        target = sorted(names)[int(rng.integers(len(names)))]
        heard = LEX.phonemes(f"导航到{target}附近" if trial % 2 else f"call {target} please")
        for _ in range(int(rng.integers(0, 3))):  # substitutions, deletions, insertions anywhere
            i, kind = int(rng.integers(len(heard))), int(rng.integers(3))
            heard[i : i + 1] = [[str(rng.choice(symbols))], [], [heard[i], str(rng.choice(symbols))]][kind]
        code = LEX.encode(heard)
        plain = LEX.toneless(code)
        for index in segment.tolerant:
            got, pending = index.search(code, 0, b"", b"", 0, segment.key_starts, segment.key_ids_flat, toneless)
            assert pending == b""  # a whole utterance: no window runs past it
            best = {}
            for a, b, key_id, source, errors, number, distance in retrieval._Table(retrieval._table_of(got)):
                assert source is retrieval.MatchSource.TOLERANT and number == 0
                assert errors == Levenshtein.distance(plain[a:b], LEX.toneless(keys[key_id])) <= index.errors
                assert distance == Levenshtein.distance(code[a:b], keys[key_id])
                best[key_id] = errors
            lengths = set(index.lengths.tolist())
            for key_id, key in enumerate(keys):
                if len(key) not in lengths:
                    continue
                for a in range(len(code)):
                    for b in range(a + max(1, len(key) - index.errors), min(len(code), a + len(key) + index.errors) + 1):
                        if Levenshtein.distance(code[a:b], key) <= index.errors:
                            assert key_id in best, (target, a, b, LEX.decode(key))
                            checked += 1
                            found_with_errors += best[key_id] > 0
    assert checked > 60 and found_with_errors > 10  # most trials have a key to find, many heard with errors
    index = segment.tolerant[0]
    arrays = lambda table: (code, 0, b"", b"", 0, index.errors, signatures.COMMON, index.keep, table.shape[1], table,  # noqa: E731
                            index.kinds, index.signatures, index.key_ids, index.pieces, index.piece_bits,
                            index.sub_signatures, index.sub_key_ids, segment.key_starts, segment.key_ids_flat, toneless)
    assert _query.find_tolerant(*arrays(index.probe_table))[0] == index.search(code, 0, b"", b"", 0, segment.key_starts,
                                                                               segment.key_ids_flat, toneless)[0]
    bad = index.probe_table.copy()
    bad[0, 7 + 2 * index.keep] = len(index.kinds)  # a part of a kind that does not exist: refused, not read
    with pytest.raises(ValueError, match="out of range"):
        _query.find_tolerant(*arrays(bad))
    with pytest.raises(ValueError, match="do not fit"):
        _query.find_tolerant(*arrays(index.probe_table)[:12], index.key_ids[:-1], *arrays(index.probe_table)[13:])


def test_a_tolerant_database_of_short_keys_only(tmp_path):
    """No key is long enough for the two-error index (or even the one-error one): the database still
    saves, loads and retrieves (an empty index has nothing to look up)."""
    for words in (["惠新西街"], ["王辉"]):
        db = HotwordDatabase.build([(HotwordEntry(w), LEX.phonemes(w)) for w in words], LEX, tolerant=True)
        db.save(tmp_path / "s.db")
        loaded = HotwordDatabase.load(tmp_path / "s.db")
        retriever = HotwordRetriever(loaded, LEX, RetrievalConfig(mode=RetrievalMode.TOLERANT, min_syllables=1))
        assert retriever.retrieve(LEX.phonemes("导航到" + words[0])) == words


def test_fast_g2p_equals_pypinyin_own_call():
    """The lexicon reads pypinyin's tables itself (its segmenter, phrase and character readings);
    pypinyin's lazy_pinyin per run is the reference, on phrases of its own dictionary run together
    (where segmentation decides the reading) and on generated place names."""
    import random

    from pypinyin.constants import PHRASES_DICT

    from nim4_edge.bench.hotwords import generate_entries
    from nim4_edge.runtime.hotwords import lexicon as lexicon_module

    reference = Lexicon()
    reference._han = lexicon_module.reference_han
    rng = random.Random(3)
    phrases = list(PHRASES_DICT)
    texts = ["".join(rng.choice(phrases) for _ in range(rng.randint(1, 4))) for _ in range(3000)]
    texts += generate_entries(3000, seed=5) + ["重庆", "朝阳公园", "银行行长", "长春长安街", "蔚来ES8"]
    fast = Lexicon()
    differ = [t for t in texts if fast.phonemes(t) != reference.phonemes(t)]
    assert differ == []


def test_a_names_key_from_cached_words_equals_its_phonemes_encoded():
    """Lexicon.key joins cached per-word codes; it must give what encoding the whole name's phonemes
    gives, with the same error for what cannot be pronounced, also when a word is seen a second time
    and digits read in Mandarin in one name and in English in the next."""
    from nim4_edge.bench.hotwords import generate_entries

    texts = generate_entries(2000, seed=7) + [
        "蔚来ES8", "Route 66", "66", "3号楼", "ES8", "Ωmega Road", "don't stop", "x", "北京123456789", "Route 1234567",
        "CRV 2024 重庆", "重庆朝阳路", "银行行长", "", "!!!", "𠀀", "𠀀路"]
    fast, whole = Lexicon(), Lexicon()
    for text in texts + texts[::-1]:  # the second time from the word cache
        try:
            want = (whole.encode(whole.phonemes(text)), whole.syllables(whole.phonemes(text)))
        except LexiconError as e:
            want = str(e)
        try:
            got = fast.key(text)
        except LexiconError as e:
            got = str(e)
        assert got == want, text
    assert len(fast._word_keys) < len(texts)  # names share words


def test_powers_by_blocks_equal_the_sequential_product():
    """signatures.powers beyond one block multiplies block powers by small ones: modulo 2^64 that
    is the sequential product, to the last element."""
    for n in (1, 4095, 4096, 4097, 3 * 4096 + 5):
        p, q = signatures.powers(n)
        want_p = np.multiply.accumulate(np.r_[np.uint64(1), np.full(n - 1, signatures.BASE, np.uint64)])
        assert (p == want_p).all() and len(p) == len(q) == n
        with np.errstate(over="ignore"):
            assert (p * q == 1).all()  # BASE^k x BASE^-k


def test_a_word_with_a_line_break_is_refused_in_one_line():
    with pytest.raises(HotwordError, match="hotword '张江\\\\n高科' holds a line break"):
        HotwordDatabase.build_columns(["惠新西街", "张江\n高科"], ["ab", "cd"], [4, 4], LEX.inventory)
    with pytest.raises(HotwordError, match="category 'x\\\\ny' holds a line break"):
        HotwordDatabase.build_columns(["惠新西街", "张江"], ["ab", "cd"], [4, 4], LEX.inventory, categories=["poi", "x\ny"])
    db = _db()
    assert db.base.find_words(["惠新西街\n", "惠新西街"])[0] is None


def _entries(*words):
    return [HotwordEntry(w) for w in words]


def test_add_and_remove_in_place_keep_the_base_and_the_rest(tmp_path):
    path = tmp_path / "hw.db"
    _db().save(path)
    base_bytes = path.read_bytes()
    report = update_database(path, add=[HotwordEntry("张江高科技园区", 3.0, "poi"), HotwordEntry("惠新西街", 9.0)])
    assert (report["added"], report["replaced"], report["compacted"]) == (2, 1, False)
    data = path.read_bytes()
    _, header, _ = _header(path)
    base_end = max(w["offset"] + w["bytes"] for w in header["segments"][0]["sections"].values())
    assert data[:base_end] == base_bytes[:base_end] and len(header["segments"]) == 2  # the base, byte for byte
    db = HotwordDatabase.load(path)
    retriever = HotwordRetriever(db, LEX)
    assert len(db) == 8
    assert retriever.retrieve(LEX.phonemes("导航到张江高科技园区")) == ["张江高科技园区"]
    session = retriever.session()
    session.extend(LEX.phonemes("导航到惠新西街"))
    kept = [c for c in session.candidates() if c.kept]
    assert [(c.words, c.weight) for c in kept] == [(["惠新西街"], 9.0), (["彗新西街"], 1.0)]  # the new weight
    report = update_database(path, remove=["彗新西街", "张江高科技园区", "不存在"])
    assert report["removed"] == 2 and report["not_found"] == ["不存在"]
    db = HotwordDatabase.load(path)
    assert HotwordRetriever(db, LEX).retrieve(LEX.phonemes("导航到惠新西街 张江高科技园区")) == ["惠新西街"]
    assert HotwordRetriever(db, LEX, RetrievalConfig(min_syllables=1)).retrieve(LEX.phonemes("go to NIO House")) == ["NIO House"]
    compacted = db.compacted()
    assert len(compacted) == len(db) == 6 and compacted.changes is None
    many = update_database(path, add=[HotwordEntry(f"测试地点{i}号") for i in range(10)], compact=True)
    assert many["compacted"]
    assert len(_header(path)[1]["segments"]) == 1 and len(HotwordDatabase.load(path)) == 16


def test_cli_add_and_remove(tmp_path):
    lst = tmp_path / "list.txt"
    lst.write_text("惠新西街\t2\n朝阳公园\n", encoding="utf-8")
    db = tmp_path / "hw.db"
    assert _cli("hotwords", "build", str(lst), "-o", str(db)).returncode == 0
    (tmp_path / "more.txt").write_text("张江高科技园区\t1\tpoi\n!!!\n", encoding="utf-8")
    proc = _cli("hotwords", "add", str(db), str(tmp_path / "more.txt"))
    assert proc.returncode == 0 and "1 added" in proc.stderr and "1 skipped" in proc.stderr, proc.stderr
    assert "retrieved: 张江高科技园区" in _cli("hotwords", "query", str(db), "--text", "去张江高科技园区").stdout
    proc = _cli("hotwords", "add", str(db), str(tmp_path / "more.txt"), "--strict")
    assert proc.returncode == 2 and "unchanged" in proc.stderr
    (tmp_path / "gone.txt").write_text("朝阳公园\n", encoding="utf-8")
    proc = _cli("hotwords", "remove", str(db), str(tmp_path / "gone.txt"))
    assert proc.returncode == 0 and "1 removed" in proc.stderr
    assert "retrieved: (nothing)" in _cli("hotwords", "query", str(db), "--text", "去朝阳公园").stdout
    proc = _cli("hotwords", "add", str(tmp_path / "nope.db"), str(lst))
    assert proc.returncode == 2 and "no such hotword database" in proc.stderr and "Traceback" not in proc.stderr


def test_a_removal_from_a_database_never_added_to(tmp_path):
    # its changes segment is empty: every table of it holds no string
    path = tmp_path / "hw.db"
    _db().save(path)
    spoken = LEX.phonemes("去朝阳公园")
    assert "朝阳公园" in HotwordRetriever(HotwordDatabase.load(path), LEX).retrieve(spoken)
    assert update_database(path, remove=["朝阳公园"])["removed"] == 1
    assert "朝阳公园" not in HotwordRetriever(HotwordDatabase.load(path), LEX).retrieve(spoken)


def test_a_running_stream_picks_up_an_update_at_its_next_utterance(tmp_path):
    path = tmp_path / "hw.db"
    _db().save(path)
    live = LiveDatabase(HotwordDatabase.load(path), interval=0.0)
    retriever = HotwordRetriever(live, LEX)
    spoken = LEX.phonemes("导航到张江高科技园区")
    during = retriever.session()  # an utterance under way keeps the database it began with
    assert retriever.retrieve(spoken) == []
    update_database(path, add=_entries("张江高科技园区"))
    assert retriever.retrieve(spoken) == ["张江高科技园区"]
    during.extend(spoken)
    assert during.words() == []
    (tmp_path / "new.db").write_bytes(b"broken")  # a replacement that cannot be loaded keeps the one in use
    os.replace(tmp_path / "new.db", path)  # (replaced by rename, as every writer here does: see README)
    assert retriever.retrieve(spoken) == ["张江高科技园区"]


def test_a_killed_update_leaves_the_old_or_the_new_database(tmp_path):
    """`hotwords add` killed at moments spread over its run (SIGKILL: no clean-up runs): the file
    always loads, with the entries before or after, never a mix or a broken file."""
    from nim4_edge.bench.hotwords import generate_entries

    words = generate_entries(30000, seed=11)
    lst, more = tmp_path / "list.txt", tmp_path / "more.txt"
    lst.write_text("\n".join(words[:25000]) + "\n", encoding="utf-8")
    more.write_text("\n".join(words[25000:]) + "\n", encoding="utf-8")
    db = tmp_path / "hw.db"
    assert _cli("hotwords", "build", str(lst), "-o", str(db), "--tolerant").returncode == 0
    original = db.read_bytes()
    t0 = time.perf_counter()
    assert _cli("hotwords", "add", str(db), str(more)).returncode == 0
    full = time.perf_counter() - t0
    outcomes = []
    for i in range(8):
        db.write_bytes(original)
        proc = subprocess.Popen([sys.executable, "-m", "nim4_edge.cli", "hotwords", "add", str(db), str(more)],
                                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        time.sleep(full * (0.3 + 0.1 * i))  # from the middle of pronouncing to just before the rename
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait()
        outcomes.append(len(HotwordDatabase.load(db)))
    assert set(outcomes) <= {25000, 30000} and 25000 in outcomes, outcomes
    # killed while writing: as soon as its temporary file appears, and a few milliseconds into it
    left = []
    for delay in (0.0, 0.003, 0.01):
        db.write_bytes(original)
        proc = subprocess.Popen([sys.executable, "-m", "nim4_edge.cli", "hotwords", "add", str(db), str(more)],
                                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        deadline = time.perf_counter() + 60
        while not list(tmp_path.glob(".hw.db.tmp-*")) and proc.poll() is None and time.perf_counter() < deadline:
            time.sleep(0.0005)
        time.sleep(delay)
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait()
        left.append(len(list(tmp_path.glob(".hw.db.tmp-*"))))
        assert len(HotwordDatabase.load(db)) in (25000, 30000)
    assert max(left) >= 1, left  # at least one kill landed between the temporary file and the rename
    # the next writer removes what the killed ones left (their processes are gone)
    assert _cli("hotwords", "add", str(db), str(more)).returncode == 0
    assert not list(tmp_path.glob(".hw.db.tmp-*")) and len(HotwordDatabase.load(db)) == 30000


def test_the_mapped_database_is_shared_pages_not_private_memory(tmp_path):
    """Loading maps the file: its arrays are views of the mapping (pages the kernel shares between
    processes), not copies."""
    path = tmp_path / "hw.db"
    _db().save(path)
    db = HotwordDatabase.load(path)
    for array in (db.base.weights, db.base.exact.signatures, db.base.key_ids_flat):
        assert not array.flags.writeable and not array.flags.owndata


def test_load_checks_block_by_block_still_see_a_step_back_at_a_block_edge():
    from nim4_edge.runtime.hotwords.strings import BLOCK, increasing

    a = np.arange(2 * BLOCK + 5, dtype=np.int64)
    assert increasing(a) and increasing(a, strict=True) and increasing(a[:1]) and increasing(a[:0])
    for edge in (BLOCK, 2 * BLOCK):  # the pair (edge - 1, edge) straddles two blocks
        b = a.copy()
        b[edge] = b[edge - 1]
        assert increasing(b) and not increasing(b, strict=True)
        b[edge] -= 1
        assert not increasing(b)


def test_a_save_removes_only_temporary_files_of_writers_that_are_gone(tmp_path):
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    files = {name: tmp_path / f".hw.db.tmp-{name}" for name in (f"{dead.pid}-x1", f"{os.getppid()}-x2", "abc")}
    for f in files.values():
        f.write_bytes(b"half a database")
    _db().save(tmp_path / "hw.db")
    assert [f.exists() for f in files.values()] == [False, True, True]  # dead writer's; a live one's; not ours
    assert len(HotwordDatabase.load(tmp_path / "hw.db")) == len(WORDS)


def test_copy_prefix_copies_what_there_is(tmp_path):
    from nim4_edge.runtime.atomic import copy_prefix

    (tmp_path / "a").write_bytes(b"0123456789")
    for count, want in ((4, b"0123"), (10, b"0123456789"), (15, b"0123456789")):  # 15: the source is shorter
        with open(tmp_path / "a", "rb") as src, open(tmp_path / "b", "w+b") as dst:
            assert copy_prefix(src, dst, count) == len(want)
            dst.write(b"|")
        assert (tmp_path / "b").read_bytes() == want + b"|"


def test_words_are_the_kept_candidates_words_in_order():
    """words() ranks without decoding rejected groups; it must say what candidates() says."""
    names = ("明园站", "桥明园站", "福盛中心", "天福盛中心", "福生中心", "惠新西街", "彗新西街", "NIO House", "NIO")
    db = HotwordDatabase.build([(HotwordEntry(w), LEX.phonemes(w)) for w in names], LEX, tolerant=True)
    for top_k in (1, 2, 10):
        retriever = HotwordRetriever(db, LEX, RetrievalConfig(mode=RetrievalMode.TOLERANT, min_syllables=1, top_k=top_k))
        retriever.remove(["彗新西街"])
        for text in ("我要去明园站", "导航到天福盛中心", "导航到福生中心和惠新西街", "去 NIO House"):
            session = retriever.session()
            session.extend(LEX.phonemes(text))
            expected: list[str] = []
            for c in session.candidates():
                for word in c.words if c.kept else []:
                    if word not in expected and len(expected) < top_k:
                        expected.append(word)
            assert session.words() == expected, (text, top_k)
            assert expected, text


def test_shadowing_in_python_equals_shadowing_in_c():
    """_inside_a_longer, in Python (few exact matches), and _query.judge's INSIDE_LONGER (a
    table; as a stream's additions, which it judges by span alone): the same rule."""
    rng = np.random.default_rng(1)
    sources, fired = list(retrieval.MatchSource), 0
    for _ in range(200):
        count = int(rng.integers(2, 30))
        starts = rng.integers(0, 12, count)
        rows = [(int(a), int(a + rng.integers(1, 8)), 0, sources[int(rng.integers(3))], int(rng.integers(0, 3)), 0, 0)
                for a in starts]
        python = [retrieval._inside_a_longer(row, rows) for row in rows]
        table = retrieval._table(rows)
        table[:, retrieval._SOURCE] = retrieval._SOURCE_NUMBER[retrieval.MatchSource.STREAM]
        verdicts, _ = _query.judge(table, 0, [])
        assert python == [v == retrieval._VERDICTS.index(retrieval.Rejection.INSIDE_LONGER) for v in verdicts]
        fired += any(python)
    assert fired > 100  # the rule fires in most trials (a rule that never shadows fails here)


def test_the_closer_match_rule_in_c_is_the_rule_its_docstring_states():
    """_query.settle's closer-match rule against the rule written out pair by pair (retrieval.py states it
    at _judged_table): a kept tolerant match is beaten by a kept match that overlaps it and was heard
    more closely, unless it contains that match and is two phonemes or more longer."""
    def beaten(table, kept):
        rejected = bytes(retrieval._KEPT if k else retrieval._VERDICTS.index(retrieval.Rejection.TOO_SHORT) for k in kept)
        verdicts, _ = _query.settle(table, rejected, bytes(8 * len(kept)))
        return [v == retrieval._VERDICTS.index(retrieval.Rejection.CLOSER_MATCH) for v in verdicts]

    rng = np.random.default_rng(2)
    fired = 0
    for _ in range(300):
        m = int(rng.integers(1, 40))
        start = rng.integers(0, 20, m)
        tolerant = rng.integers(0, 2, m)
        zeros = np.zeros(m, np.int64)
        table = np.stack([start, start + rng.integers(1, 9, m), zeros, 2 * tolerant, rng.integers(0, 3, m), zeros,
                          rng.integers(0, 4, m)], 1).astype(np.int64)
        kept = [bool(k) for k in rng.integers(0, 4, m) > 0]
        rows = [(a, b, e, d, t) for a, b, _, t, e, _, d in table.tolist()]
        want = [bool(kept[i] and t and any(
                    kept[j] and a2 < b and a < b2 and (e2, d2) < (e, d) and not (a <= a2 and b2 <= b and (b - a) - (b2 - a2) >= 2)
                    for j, (a2, b2, e2, d2, _) in enumerate(rows)))
                for i, (a, b, e, d, t) in enumerate(rows)]
        assert beaten(table, kept) == want
        fired += any(want)
    assert fired > 100
    with pytest.raises(ValueError, match="one per match"):
        beaten(table, kept[:-1])


def test_matches_judged_in_c_as_in_python():
    """A session judges few exact matches in Python (_judged_few) and a table in C (_query.judge and
    settle): on the same matches, random spans of a real database's keys (some too short, some inside
    others, ties of rank), and with a stream's additions and a removed entry, the same verdicts,
    weights and ranking."""
    words = ["惠新西街", "惠新东街", "朝阳公园南门", "王辉", "李娜", "Carole Quintero", "Linda Ashford", "NIO House",
             "NIO", "安宁路"]
    db = HotwordDatabase.build([(HotwordEntry(w, weight=float(i % 3)), LEX.phonemes(w)) for i, w in enumerate(words)], LEX)
    rng = np.random.default_rng(4)
    checked = {r: 0 for r in retrieval.Rejection} | {None: 0}
    for trial in range(300):
        retriever = HotwordRetriever(db, LEX)
        if trial % 3 == 1:
            retriever.add([HotwordEntry("丰台站"), HotwordEntry("王辉")])
        if trial % 3 == 2:
            retriever.remove(["惠新东街"])
        stream = retriever.has_additions
        rows = []
        for _ in range(int(rng.integers(1, 12))):
            a = int(rng.integers(0, 10))
            source = retrieval.MatchSource.STREAM if stream and rng.integers(3) == 0 else retrieval.MatchSource.BASE
            keys = retriever._additions.num_keys if source is retrieval.MatchSource.STREAM else db.base.num_keys
            rows.append((a, a + int(rng.integers(1, 5)), int(rng.integers(keys)), source, 0, 0, 0))
        session = retriever.session()
        few, table = session._judged_few(rows), session._judged_table(retrieval._table(rows))
        assert few.rejected == table.rejected and few.ranked == table.ranked, rows
        assert [w for w, r in zip(few.weights, few.rejected) if r is None] == [
            w for w, r in zip(table.weights, table.rejected) if r is None]
        for r in few.rejected:
            checked[r] += 1
    assert all(checked[r] for r in (None, retrieval.Rejection.INSIDE_LONGER, retrieval.Rejection.TOO_SHORT,
                                    retrieval.Rejection.REMOVED)), checked
