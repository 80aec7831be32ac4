"""`nim4-edge bench serve` and the batched-decode measurement: they run and report measured figures
(no thresholds on the figures: a benchmark is not a timed test)."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

pytest.importorskip("riva.client", reason="bench serve needs the serve extra")
pytest.importorskip("psutil", reason="bench serve needs psutil")
pytest.importorskip("llama_cpp")


def test_bench_serve_reports_every_utterance_and_the_latencies():
    proc = subprocess.run([sys.executable, "-m", "nim4_edge.cli", "bench", "serve", "--streams", "1,2", "--seconds", "6",
                           "--no-batching"], capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    report = json.loads(proc.stdout)
    assert [p["streams"] for p in report["phases"]] == [1, 2]
    for phase in report["phases"]:
        assert phase["errors"] == [] and phase["finals"] == phase["utterances"] == phase["exactly_one_final"] > 0
        assert phase["final_ms"]["n"] == phase["finals"] and phase["final_ms"]["p50"] > 0
        assert phase["partial_ms"]["n"] > 0 and phase["rtf_cpu_per_stream"] > 0 and phase["rss_mb_max"] > 0
    assert "final p95 ms" in proc.stderr


def test_bad_stream_counts_are_one_line_errors():
    proc = subprocess.run([sys.executable, "-m", "nim4_edge.cli", "bench", "serve", "--streams", "0"],
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2 and "--streams" in proc.stderr and "Traceback" not in proc.stderr


def test_batched_and_per_context_decoding_are_both_measured(demo_bundle):
    from nim4_edge.bench.batching import bench_batching, table

    report = bench_batching(demo_bundle, streams=2, rows=8, steps=4, repeats=1)
    assert set(report["step_ms"]) == {"per_context_all_threads", "per_context_1_thread", "batched"}
    assert all(v > 0 for v in report["step_ms"].values()) and report["ratio_per_context_over_batched"] > 0
    assert "per-context / batched" in table(report)
