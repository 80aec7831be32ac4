"""`nim4-edge bench --bundle B --testset MANIFEST --encoder fp32,int8-dynamic --decoder f16,Q4_K_M --out DIR`:
accuracy against latency for every encoder x decoder combination, in one run.

Each combination runs in its own process (so peak RSS is its own, and a crash or a variant that will
not load fails only its row): the test set streams through the recognizer `--repeats` times; accuracy
comes from the first pass (decoding is greedy, so it is deterministic), timings are medians over the
passes. Every combination is configured by the same function `listen` uses
(nim4_edge.devices.recognizer_config: the device profile's threads and providers, the row's variants),
and each row records what it ran.

The measured bundle is never written. Variants it lacks are built (as `nim4-edge quantize` would) into
a working copy, DIR/bundle (its files hard-linked to the original's where the filesystem allows, else
copied); one that fails to build is reported as failed with the reason and the others still run.

Writes DIR/results.json, DIR/report.md (a table; `*` marks the Pareto front of error rate against
real-time factor) and DIR/accuracy_vs_latency.png (matplotlib).
"""

from __future__ import annotations

import argparse
import io
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

from nim4_edge.bench.evaluate import evaluate, read_manifest
from nim4_edge.bench.report import peak_rss_bytes
from nim4_edge.devices.config import Overrides, current_plan, describe, recognizer_config
from nim4_edge.quant.encoder_quant import ENCODER_PRECISIONS, quantize_encoder
from nim4_edge.quant.gguf_quant import LEVELS, quantize_bundle
from nim4_edge.quant.windowed_quant import quantize_windowed_encoder
from nim4_edge.runtime.atomic import write_bytes_atomic, write_text_atomic
from nim4_edge.runtime.audio import load_audio
from nim4_edge.runtime.bundle import Bundle
from nim4_edge.runtime.errors import Nim4Error
from nim4_edge.runtime.features import SAMPLE_RATE_HZ
from nim4_edge.runtime.hotwords import RetrievalConfig
from nim4_edge.runtime.recognizer import Recognizer

TIMING_KEYS = ("rtf", "final_latency_ms_p50", "final_latency_ms_p95", "first_partial_ms_p50", "encoder_ms_per_chunk",
               "decode_tokens_per_s")
ACCURACY_KEYS = ("cer_zh", "wer_en", "entity_accuracy", "hallucination_rate", "false_text_rate", "digit_accuracy")
WORK_BUNDLE = "bundle"  # DIR/bundle: the working copy that holds variants the measured bundle lacks


def error_rate(figures: dict) -> float | None:
    """One accuracy number per combination: the mean of the CER (Mandarin) and WER (English) present."""
    values = [figures[k] for k in ("cer_zh", "wer_en") if figures.get(k) is not None]
    return round(sum(values) / len(values), 2) if values else None


def pareto_front(rows: list[dict], x: str = "rtf", y: str = "error_rate") -> set[int]:
    """Indices of rows no other row beats on both x and y (lower is better for both)."""
    ok = [i for i, r in enumerate(rows) if r.get(x) is not None and r.get(y) is not None]
    front = set()
    for i in ok:
        dominated = any(rows[j][x] <= rows[i][x] and rows[j][y] <= rows[i][y]
                        and (rows[j][x] < rows[i][x] or rows[j][y] < rows[i][y]) for j in ok if j != i)
        if not dominated:
            front.add(i)
    return front


# --- one combination (worker process) ----------------------------------------------------------------

def run_worker(args) -> int:
    items = read_manifest(args.testset)
    if args.limit:
        items = items[: args.limit]
    bundle = Bundle.load(args.bundle, family=None)
    overrides = Overrides(decoder_variant=args.decoder, encoder_precision=args.encoder, threads=args.threads,
                          hotwords=args.hotwords, retrieval=RetrievalConfig.from_mode(args.hotwords_mode))
    config = recognizer_config(bundle, current_plan(args.profile), overrides)
    with Recognizer(config) as recognizer:
        passes = [evaluate(recognizer, items, ["streaming"])["modes"]["streaming"] for _ in range(max(1, args.repeats))]
    figures = {k: passes[0].get(k) for k in ACCURACY_KEYS}
    figures["counts"] = passes[0]["counts"]
    for key in TIMING_KEYS:
        values = sorted(p[key] for p in passes if p.get(key) is not None)
        figures[key] = values[len(values) // 2] if values else None
    figures["peak_rss_mb"] = round(peak_rss_bytes() / 2**20, 1)  # this worker's own peak (VmHWM)
    figures["config"] = describe(config, bundle)
    print(json.dumps(figures))
    return 0


# --- the whole benchmark ---------------------------------------------------------------------------------

def missing_variants(bundle: Bundle, encoders: list[str], decoders: list[str]) -> tuple[list[str], list[str]]:
    return ([e for e in encoders if e not in bundle.manifest.encoder.variants],
            [d for d in decoders if d not in bundle.manifest.decoder.variants])


def working_copy(bundle: Bundle, target: Path) -> Path:
    """A copy of the bundle at `target` to build variants in: files hard-linked (no bytes copied; a
    quantizer writes new files and replaces the manifest by rename, so the original is never touched)
    or, across filesystems, copied. An existing copy of the same bundle is reused."""
    if (target / "manifest.json").is_file():
        existing = Bundle.load(target, family=None).manifest
        if all(existing.files.get(name) == facts for name, facts in bundle.manifest.files.items()):
            return target
        shutil.rmtree(target)
    partial = target.with_name(target.name + ".partial")
    shutil.rmtree(partial, ignore_errors=True)
    partial.mkdir(parents=True)
    for name in [*bundle.manifest.files, "manifest.json"]:
        source, copy = bundle.file(name), partial / name
        try:
            os.link(source, copy)
        except OSError:  # another filesystem, or links not allowed here
            shutil.copy2(source, copy)
        if name == "manifest.json":  # rewritten by the quantizers: a private, writable copy
            copy.unlink()
            shutil.copyfile(source, copy)
    partial.rename(target)
    return target


def ensure_variants(bundle_path: Path, encoders: list[str], decoders: list[str], calibration: list) -> dict:
    """Build what the bundle at `bundle_path` (a working copy) lacks. Returns {("encoder"|"decoder",
    name): reason} for those that failed."""
    failed = {}
    manifest = Bundle.load(bundle_path, family=None).manifest
    for precision in encoders:
        if precision in manifest.encoder.variants:
            continue
        if precision not in ENCODER_PRECISIONS:
            failed[("encoder", precision)] = f"unknown encoder precision (known: fp32, {', '.join(ENCODER_PRECISIONS)})"
            continue
        try:
            if manifest.family == "qwen3-asr":  # both graphs of a windowed encoder (quant/windowed_quant.py)
                quantize_windowed_encoder(bundle_path, [precision], calibration or None)
            else:
                quantize_encoder(bundle_path, [precision], calibration)
        except Exception as e:  # noqa: BLE001 - any build failure becomes a failed row
            failed[("encoder", precision)] = f"build failed: {str(e).splitlines()[0][:200]}"
    for level in decoders:
        if level in manifest.decoder.variants:
            continue
        if level not in LEVELS:
            failed[("decoder", level)] = f"unknown quant level (known: {', '.join(LEVELS)}, f16, f32)"
            continue
        try:
            quantize_bundle(bundle_path, [level], agreement=False)
        except Exception as e:  # noqa: BLE001
            failed[("decoder", level)] = f"build failed: {str(e).splitlines()[0][:200]}"
    return failed


def bench(bundle_path: Path, testset: Path, encoders: list[str], decoders: list[str], out_dir: Path,
          repeats: int = 1, limit: int = 0, hotwords: Path | None = None, threads: int | None = None,
          hotwords_mode: str = "exact", profile: str | None = None) -> dict:
    items = read_manifest(testset)  # a bad manifest stops here, before any work
    plan = current_plan(profile)  # an unknown profile stops here too
    source = Bundle.load(bundle_path, family=None)
    out_dir.mkdir(parents=True, exist_ok=True)
    measured = source
    if any(missing_variants(source, encoders, decoders)):
        calibration_files = [i.audio for i in items if i.text and i.audio.is_file()][:40]
        work = working_copy(source, out_dir / WORK_BUNDLE)
        failed = ensure_variants(work, encoders, decoders, [load_audio(f, SAMPLE_RATE_HZ) for f in calibration_files])
        measured = Bundle.load(work, family=None)
    else:
        failed = {}
    combos = [(e, d) for e in encoders for d in decoders]
    rows = []
    t0 = time.perf_counter()
    for n, (encoder, decoder) in enumerate(combos, 1):
        _progress(n - 1, len(combos), f"{encoder} + {decoder}", t0)
        row = {"encoder": encoder, "decoder": decoder}
        reason = failed.get(("encoder", encoder)) or failed.get(("decoder", decoder))
        if reason is None:
            cmd = ([sys.executable, "-m", "nim4_edge.bench.quant", "worker", "--bundle", str(measured.path),
                   "--testset", str(testset), "--encoder", encoder, "--decoder", decoder, "--repeats", str(repeats),
                   "--limit", str(limit), "--hotwords-mode", hotwords_mode, "--profile", plan.profile.name]
                   + (["--threads", str(threads)] if threads is not None else [])
                   + (["--hotwords", str(hotwords)] if hotwords else []))
            proc = subprocess.run(cmd, capture_output=True, text=True, env=os.environ | {"OMP_WAIT_POLICY": "PASSIVE"})
            if proc.returncode == 0:
                row |= json.loads(proc.stdout.strip().splitlines()[-1])
                row["status"] = "ok"
            else:
                lines = [line for line in proc.stderr.strip().splitlines() if line.strip()]
                reason = f"run failed: {lines[-1][:200] if lines else f'exit {proc.returncode}'}"
        if reason is not None:
            row |= {"status": "failed", "reason": reason}
        else:
            row["error_rate"] = error_rate(row)
            row["encoder_mb"] = round(measured.encoder_bytes(encoder) / 2**20, 2)
            row["decoder_mb"] = round(measured.decoder_file(decoder).stat().st_size / 2**20, 2)
        rows.append(row)
    _progress(len(combos), len(combos), "done", t0)
    for i in pareto_front(rows):
        rows[i]["pareto"] = True
    ran = next((r["config"] for r in rows if r.get("config")), {})
    results = {"bundle": str(bundle_path), "measured_bundle": str(measured.path), "testset": str(testset),
               "utterances": limit or len(items), "repeats": repeats, "profile": plan.profile.name,
               "threads": {"encoder": ran.get("encoder_threads"), "decoder": ran.get("decoder_threads")},
               "hotwords": str(hotwords) if hotwords else None,
               "hotwords_mode": hotwords_mode, "seconds": round(time.perf_counter() - t0, 1), "rows": rows}
    write_text_atomic(out_dir / "results.json", json.dumps(results, indent=1, ensure_ascii=False) + "\n")
    write_text_atomic(out_dir / "report.md", report_markdown(results))
    results["plot"] = plot(results, out_dir / "accuracy_vs_latency.png")
    return results


def _progress(done: int, total: int, label: str, t0: float) -> None:
    width = 30
    filled = int(width * done / max(1, total))
    print(f"\r[{'#' * filled}{'.' * (width - filled)}] {done}/{total} {label:<28} {time.perf_counter() - t0:6.0f} s",
          end="\n" if done == total else "", file=sys.stderr, flush=True)


COLUMNS = (("encoder", "encoder"), ("decoder", "decoder"), ("error_rate", "error %"), ("cer_zh", "CER zh %"),
           ("wer_en", "WER en %"), ("entity_accuracy", "entity %"), ("hallucination_rate", "halluc %"),
           ("rtf", "RTF"), ("first_partial_ms_p50", "1st partial ms"), ("final_latency_ms_p50", "final p50 ms"),
           ("final_latency_ms_p95", "final p95 ms"), ("encoder_ms_per_chunk", "enc ms/chunk"),
           ("decode_tokens_per_s", "tok/s"), ("peak_rss_mb", "peak RSS MB"), ("encoder_mb", "enc MB"),
           ("decoder_mb", "dec MB"))


def report_rows(results: dict) -> tuple[list[str], list[list]]:
    headers = ["pareto"] + [title for _, title in COLUMNS]
    table = []
    for row in results["rows"]:
        if row["status"] != "ok":
            table.append(["", row["encoder"], row["decoder"], f"FAILED: {row['reason']}"] + [""] * (len(COLUMNS) - 3))
            continue
        table.append(["*" if row.get("pareto") else ""] + [row.get(key) for key, _ in COLUMNS])
    return headers, table


def report_markdown(results: dict) -> str:
    headers, table = report_rows(results)

    def cell(v):
        return "" if v is None else (f"{v:.4g}" if isinstance(v, float) else str(v))

    lines = [f"# Accuracy vs latency: {results['bundle']}", "",
             f"Test set `{results['testset']}` ({results['utterances']} utterances), streaming mode, "
             f"{results['repeats']} pass(es) (timings: medians), profile {results['profile']}, threads "
             f"{results['threads']['encoder']} (encoder) / {results['threads']['decoder']} (decoder), 0 = all cores, "
             f"hotwords {results['hotwords'] or 'none'}. `*` = Pareto front of error rate (mean of CER zh and "
             "WER en) against real-time factor.", "",
             "| " + " | ".join(headers) + " |", "|" + "---|" * len(headers)]
    lines += ["| " + " | ".join(cell(v) for v in row) + " |" for row in table]
    return "\n".join(lines) + "\n"


def plot(results: dict, path: Path) -> str | None:
    try:
        import matplotlib  # optional dependency: imported only when this path runs

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt  # optional dependency: imported only when this path runs
    except ImportError:
        print("nim4-edge: warning: matplotlib is not installed; no plot (pip install matplotlib)", file=sys.stderr)
        return None
    rows = [r for r in results["rows"] if r["status"] == "ok" and r.get("rtf") is not None
            and r.get("error_rate") is not None]
    fig, ax = plt.subplots(figsize=(7, 4.5), dpi=120)
    x_span = (max(r["rtf"] for r in rows) - min(r["rtf"] for r in rows)) if rows else 0
    y_span = (max(r["error_rate"] for r in rows) - min(r["error_rate"] for r in rows)) if rows else 0
    labelled: list[tuple[float, float, int]] = []  # (x, y, label level)
    for r in sorted(rows, key=lambda r: r["rtf"]):
        ax.scatter(r["rtf"], r["error_rate"], s=40 + r.get("decoder_mb", 0) + r.get("encoder_mb", 0),
                   color="tab:red" if r.get("pareto") else "tab:blue", alpha=0.8)
        # near-equal points (the same error rate is common) get their labels stacked, not overprinted
        taken = {level for x, y, level in labelled
                 if abs(x - r["rtf"]) <= 0.3 * x_span and abs(y - r["error_rate"]) <= 0.03 * y_span}
        level = min(set(range(len(taken) + 1)) - taken)
        labelled.append((r["rtf"], r["error_rate"], level))
        ax.annotate(f"{r['encoder']} + {r['decoder']}", (r["rtf"], r["error_rate"]), fontsize=7,
                    xytext=(4, 4 + 9 * level), textcoords="offset points")
    front = sorted((r for r in rows if r.get("pareto")), key=lambda r: r["rtf"])
    if len(front) > 1:
        ax.plot([r["rtf"] for r in front], [r["error_rate"] for r in front], color="tab:red", lw=1, label="Pareto front")
        ax.legend(loc="best", fontsize=8)
    ax.margins(x=0.08, y=0.2)  # room for the stacked labels
    ax.set_xlabel("real-time factor (compute s per audio s, lower is faster)")
    ax.set_ylabel("error rate % (mean of CER zh, WER en)")
    ax.set_title("Accuracy vs latency per encoder + decoder quantization", fontsize=10)
    ax.grid(alpha=0.3)
    fig.tight_layout()

    buffer = io.BytesIO()
    fig.savefig(buffer, format="png")
    plt.close(fig)
    write_bytes_atomic(path, buffer.getvalue())
    return str(path)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m nim4_edge.bench.quant")
    sub = p.add_subparsers(dest="cmd", required=True)
    w = sub.add_parser("worker")
    w.add_argument("--bundle", type=Path, required=True)
    w.add_argument("--testset", type=Path, required=True)
    w.add_argument("--encoder", required=True)
    w.add_argument("--decoder", required=True)
    w.add_argument("--repeats", type=int, default=1)
    w.add_argument("--limit", type=int, default=0)
    w.add_argument("--threads", type=int, default=None)
    w.add_argument("--profile")
    w.add_argument("--hotwords", type=Path)
    w.add_argument("--hotwords-mode", default="exact")
    args = p.parse_args(argv)
    try:
        return run_worker(args)
    except Nim4Error as e:
        print(f"nim4-edge: {e}", file=sys.stderr)
        return e.exit_code


if __name__ == "__main__":
    sys.exit(main())
