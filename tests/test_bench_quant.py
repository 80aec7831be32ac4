"""`nim4-edge bench --testset`: the results schema, failed rows, the Pareto front, the report and plot."""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np

from nim4_edge.bench.quant import error_rate, pareto_front
from tests.wavutil import write_wav


def test_pareto_front_keeps_only_undominated_rows():
    rows = [{"rtf": 0.1, "error_rate": 5.0}, {"rtf": 0.2, "error_rate": 4.0}, {"rtf": 0.3, "error_rate": 6.0},
            {"rtf": 0.1, "error_rate": 5.0}, {"rtf": None, "error_rate": 1.0}]
    assert pareto_front(rows) == {0, 1, 3}  # row 2 is slower and worse than row 0; row 4 has no timing
    assert error_rate({"cer_zh": 4.0, "wer_en": 8.0}) == 6.0 and error_rate({"cer_zh": None, "wer_en": 3.0}) == 3.0


def test_bench_writes_results_report_and_plot(bundle_copy, tmp_path):
    rng = np.random.default_rng(0)
    for name in ("a", "b"):
        write_wav(tmp_path / f"{name}.wav", 0.3 * np.sin(np.arange(24000) / 8) * (rng.random(24000) > 0.5), 16000)
    manifest = tmp_path / "m.jsonl"
    manifest.write_text('{"audio": "a.wav", "text": "call Jon"}\n{"audio": "b.wav", "text": "导航到公司"}\n',
                        encoding="utf-8")
    out = tmp_path / "out"
    proc = subprocess.run([sys.executable, "-m", "nim4_edge.cli", "bench", "--bundle", str(bundle_copy),
                           "--testset", str(manifest), "--encoder", "fp32,int8-dynamic", "--decoder", "Q8_0,Q3_X",
                           "--out", str(out)], capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr
    results = json.loads((out / "results.json").read_text(encoding="utf-8"))
    assert json.loads(proc.stdout)["rows"] == results["rows"]
    rows = {(r["encoder"], r["decoder"]): r for r in results["rows"]}
    assert set(rows) == {("fp32", "Q8_0"), ("fp32", "Q3_X"), ("int8-dynamic", "Q8_0"), ("int8-dynamic", "Q3_X")}
    for key in (("fp32", "Q8_0"), ("int8-dynamic", "Q8_0")):
        row = rows[key]
        assert row["status"] == "ok"
        for field in ("cer_zh", "wer_en", "entity_accuracy", "hallucination_rate", "rtf", "final_latency_ms_p50",
                      "final_latency_ms_p95", "first_partial_ms_p50", "encoder_ms_per_chunk", "decode_tokens_per_s",
                      "peak_rss_mb", "encoder_mb", "decoder_mb", "error_rate"):
            assert field in row, field
        assert row["rtf"] > 0 and row["peak_rss_mb"] > 10
    assert rows[("fp32", "Q3_X")]["status"] == "failed" and "unknown quant level" in rows[("fp32", "Q3_X")]["reason"]
    assert rows[("int8-dynamic", "Q8_0")]["encoder_mb"] < rows[("fp32", "Q8_0")]["encoder_mb"]
    assert any(r.get("pareto") for r in results["rows"])
    report = (out / "report.md").read_text(encoding="utf-8")
    assert "| * |" in report and "FAILED" in report
    png = (out / "accuracy_vs_latency.png").read_bytes()
    assert png.startswith(b"\x89PNG") and len(png) > 5000
