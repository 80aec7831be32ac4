"""`nim4-edge bench confidence`: how well the finals' confidence (runtime/confidence.py) separates
wrong finals from right ones, and the threshold that does it, chosen on held-out data.

Input: `nim4-edge eval --out R.json` results (streaming), a dev set's and a test set's; each
utterance records its spoken finals' acoustic and decoder confidence and language check. An utterance is
    wrong    its finals' text differs from the reference (normalized as eval scores it: characters
             for Mandarin, words otherwise), or any text for an empty reference
    right    it equals a non-empty reference
    flagged  a spoken final of it is not confident at the threshold (acoustic x decoder confidence not
             above it, or the language check failed); utterances with no spoken final are neither flagged nor judged
             when the reference is empty, and wrong-but-silent (a miss, nothing to act on) otherwise
The threshold: on the dev results only, the highest one (of THRESHOLDS) that flags at most
--right-budget of the right finals; the test results are then read at it. The same is done for each
signal alone (acoustic, decoder), for comparison. Writes OUT/confidence.json,
OUT/confidence.md (the tables) and OUT/confidence.png (wrong flagged against right flagged, the
thresholds swept, per test set).
"""

from __future__ import annotations

import io
import json
import sys
from dataclasses import dataclass
from pathlib import Path

from nim4_edge.bench.evaluate import units
from nim4_edge.bench.report import format_table
from nim4_edge.runtime.atomic import write_bytes_atomic, write_text_atomic
from nim4_edge.runtime.confidence import combined_confidence
from nim4_edge.runtime.errors import Nim4Error

# 0, then 1e-4 .. 1 in steps of 10^(1/20) (x1.12): the acoustic confidence is an exp of a per-phoneme
# log-ratio, so the thresholds that matter are spread over decades (runtime/confidence.py)
THRESHOLDS = [0.0] + [float(f"{10 ** (k / 20 - 4):.4g}") for k in range(81)]
TABLE_THRESHOLDS = (0.0001, 0.0003162, 0.001, 0.003162, 0.01, 0.03162, 0.1, 0.3162, 1.0)


SIGNALS = ("combined", "acoustic", "decoder")  # combined: acoustic x decoder, what the runtime flags by
# the demo recipe's voices that training never heard (recipes/demo/voices.py tags): issue 16's figure
# is read on them together; the corpus test set (held-out espeak voices) is reported beside them
HELD_OUT_VOICES = ("joe", "gcin3", "fsdd-raw")


@dataclass(frozen=True)
class Judged:
    """One utterance: was its text right; its spoken finals' (acoustic, decoder confidence, language
    match)."""

    wrong: bool
    finals: tuple[tuple[float | None, float | None, bool], ...]
    voice: str

    def flagged(self, threshold: float, signal: str = "combined") -> bool:
        return any(not match or _score(acoustic, decoder, signal) <= threshold for acoustic, decoder, match in self.finals)


def _score(acoustic: float | None, decoder: float | None, signal: str) -> float:
    """A final's score by one signal, as runtime/confidence.py judges it: no acoustic score (a text with
    no pronunciation) is below every threshold, a decoder figure not known counts as 1."""
    score = {"combined": combined_confidence(acoustic, decoder), "acoustic": acoustic,
             "decoder": 1.0 if decoder is None else decoder}[signal]
    return -1.0 if score is None else score


def read_results(path: Path, mode: str = "streaming") -> list[Judged]:
    """Utterances of one eval result file that can be judged (see the module docstring)."""
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
        rows = data["utterances"]
    except (OSError, ValueError, KeyError, TypeError) as e:
        raise Nim4Error(f"{path}: not a `nim4-edge eval --out` result ({e}); run eval with --out first") from None
    out = []
    for row in rows:
        if mode not in row or f"{mode}_confidence" not in row:
            if mode in row:
                raise Nim4Error(f"{path}: has no per-final confidence; rerun `nim4-edge eval` with this version")
            continue
        language = row.get("language") or "en"
        ref, hyp = units(row["text"], language), units(row[mode] or "", language)
        if any("decoder" not in f for f in row[f"{mode}_confidence"]):
            raise Nim4Error(f"{path}: has no decoder confidence; rerun `nim4-edge eval` with this version")
        finals = tuple((f["acoustic"], f["decoder"], bool(f["language_match"])) for f in row[f"{mode}_confidence"])
        if not ref and not hyp:
            continue  # silence written as silence: nothing to judge
        voice = next((t for t in row.get("tags", []) if t in HELD_OUT_VOICES + ("espeak",)), Path(path).stem)
        out.append(Judged(ref != hyp, finals, voice))
    return out


def shares(items: list[Judged], threshold: float, signal: str = "combined") -> dict:
    """Share (%) of wrong and of right utterances flagged at `threshold`, and the counts."""
    wrong = [j for j in items if j.wrong]
    right = [j for j in items if not j.wrong]

    def pct(group):
        return round(100.0 * sum(j.flagged(threshold, signal) for j in group) / len(group), 2) if group else None

    return {"threshold": threshold, "wrong_flagged_pct": pct(wrong), "right_flagged_pct": pct(right),
            "wrong": len(wrong), "right": len(right)}


def choose_threshold(dev: list[Judged], right_budget_pct: float, signal: str = "combined") -> float:
    """The highest threshold that flags at most right_budget_pct of the dev set's right finals (flagging
    only grows with the threshold, so this flags the most wrong ones within the budget)."""
    ok = [t for t in THRESHOLDS if (shares(dev, t, signal)["right_flagged_pct"] or 0.0) <= right_budget_pct]
    return max(ok) if ok else 0.0


def bench_confidence(dev_paths: list[Path], test_paths: list[Path], right_budget_pct: float = 5.0) -> dict:
    dev = [j for p in dev_paths for j in read_results(p)]
    if not any(not j.wrong for j in dev):
        raise Nim4Error("the dev results have no right final to keep; a threshold cannot be chosen on them")
    threshold = choose_threshold(dev, right_budget_pct)
    tests = {str(p): read_results(p) for p in test_paths}
    by_voice: dict[str, list[Judged]] = {}
    for items in tests.values():
        for j in items:
            by_voice.setdefault(j.voice, []).append(j)
    everything = [j for items in tests.values() for j in items]
    held_out = [j for j in everything if j.voice in HELD_OUT_VOICES]
    return {
        "threshold": threshold, "right_budget_pct": right_budget_pct,
        "dev": {"files": [str(p) for p in dev_paths], **shares(dev, threshold)},
        "test": {"files": list(tests), **shares(everything, threshold)},
        "test_by_voice": {v: shares(items, threshold) for v, items in sorted(by_voice.items())},
        "test_held_out_voices": shares(held_out, threshold) if held_out else None,
        "sweep_test": [shares(everything, t) for t in THRESHOLDS],
        "sweep_test_by_voice": {v: [shares(items, t) for t in THRESHOLDS] for v, items in sorted(by_voice.items())},
        # each signal alone, its threshold chosen on dev the same way: what the product gains
        "signals": {signal: {"threshold": (t := choose_threshold(dev, right_budget_pct, signal)),
                             "dev": shares(dev, t, signal), "test": shares(everything, t, signal),
                             "test_by_voice": {v: shares(items, t, signal) for v, items in sorted(by_voice.items())}}
                    for signal in SIGNALS},
    }


def tables(report: dict) -> str:
    t = report["threshold"]
    head = ["set", "wrong", "right", f"wrong flagged % (at {t})", f"right flagged % (at {t})"]
    rows = [["dev (threshold chosen here)", report["dev"]["wrong"], report["dev"]["right"],
             report["dev"]["wrong_flagged_pct"], report["dev"]["right_flagged_pct"]]]
    rows += [[f"test: {v}", s["wrong"], s["right"], s["wrong_flagged_pct"], s["right_flagged_pct"]]
             for v, s in report["test_by_voice"].items()]
    if report.get("test_held_out_voices"):
        s = report["test_held_out_voices"]
        rows.append([f"test: {' + '.join(HELD_OUT_VOICES)}", s["wrong"], s["right"], s["wrong_flagged_pct"],
                     s["right_flagged_pct"]])
    rows.append(["test: all", report["test"]["wrong"], report["test"]["right"], report["test"]["wrong_flagged_pct"],
                 report["test"]["right_flagged_pct"]])
    sweep = [s for s in report["sweep_test"] if s["threshold"] in TABLE_THRESHOLDS]
    voices = sorted(report["test_by_voice"])
    signals = [[name, r["threshold"], f"{r['dev']['wrong_flagged_pct']} / {r['dev']['right_flagged_pct']}"]
               + [f"{r['test_by_voice'][v]['wrong_flagged_pct']} / {r['test_by_voice'][v]['right_flagged_pct']}" for v in voices]
               + [f"{r['test']['wrong_flagged_pct']} / {r['test']['right_flagged_pct']}"]
               for name, r in report["signals"].items()]
    return (format_table(head, rows) + "\n\nthreshold sweep, all test sets:\n"
            + format_table(["threshold", "wrong flagged %", "right flagged %"],
                           [[s["threshold"], s["wrong_flagged_pct"], s["right_flagged_pct"]] for s in sweep])
            + "\n\neach signal with its own threshold chosen on dev (wrong / right flagged %; combined = acoustic x decoder):\n"
            + format_table(["signal", "threshold", "dev"] + [f"test: {v}" for v in voices] + ["test: all"], signals))


def plot(report: dict, path: Path) -> bool:
    try:
        import matplotlib  # optional dependency (the bench extra): imported only when this path runs

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt  # optional dependency: imported only when this path runs
    except ImportError:
        print("nim4-edge: warning: matplotlib is not installed; no plot (pip install matplotlib)", file=sys.stderr)
        return False
    fig, ax = plt.subplots(figsize=(6.5, 4.5), dpi=120)
    curves = {"all test sets": report["sweep_test"], **report["sweep_test_by_voice"]}
    for name, sweep in curves.items():
        points = [(s["right_flagged_pct"], s["wrong_flagged_pct"]) for s in sweep
                  if s["right_flagged_pct"] is not None and s["wrong_flagged_pct"] is not None]
        if points:
            ax.plot(*zip(*points), marker=".", markersize=3, label=name, linewidth=2 if name == "all test sets" else 1)
    at = report["test"]
    if at["right_flagged_pct"] is not None and at["wrong_flagged_pct"] is not None:
        ax.scatter([at["right_flagged_pct"]], [at["wrong_flagged_pct"]], color="black", zorder=5,
                   label=f"threshold {report['threshold']} (chosen on dev)")
    ax.axvline(report["right_budget_pct"], color="grey", linestyle=":", linewidth=1)
    ax.set_xlabel("right finals flagged (%)")
    ax.set_ylabel("wrong finals flagged (%)")
    ax.set_title("final confidence: thresholds 0-1 swept on the test sets")
    ax.set_xlim(-2, 102)
    ax.set_ylim(-2, 102)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7, loc="lower right")
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", bbox_inches="tight")
    plt.close(fig)
    write_bytes_atomic(path, buffer.getvalue())
    return True


def write_report(report: dict, out: Path) -> None:
    out.mkdir(parents=True, exist_ok=True)
    write_text_atomic(out / "confidence.json", json.dumps(report, indent=1) + "\n")
    write_text_atomic(out / "confidence.md", "```\n" + tables(report) + "\n```\n")
    report["plot"] = str(out / "confidence.png") if plot(report, out / "confidence.png") else None
