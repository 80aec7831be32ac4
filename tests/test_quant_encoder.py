"""Encoder quantization: FP16, INT8 dynamic and INT8 QDQ variants, their parity and the runtime's choice."""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pytest

from nim4_edge.runtime.bundle import Bundle


@pytest.fixture(scope="module")
def quantized_bundle(tiny_bundle, tmp_path_factory):
    import shutil

    from nim4_edge.quant.encoder_quant import quantize_encoder

    path = tmp_path_factory.mktemp("q") / "bundle"
    shutil.copytree(tiny_bundle, path)
    rng = np.random.default_rng(0)
    audios = [(0.2 * rng.standard_normal(int(s * 16000))).astype(np.float32) for s in (0.9, 2.7)]
    report = quantize_encoder(path, ["fp16", "int8-dynamic", "int8-qdq"], audios)
    return path, report


def test_variants_are_recorded_and_load(quantized_bundle):
    path, report = quantized_bundle
    bundle = Bundle.load(path, verify_hashes=True)
    assert set(bundle.manifest.encoder.variants) == {"fp32", "fp16", "int8-dynamic", "int8-qdq"}
    assert bundle.manifest.encoder.file_for(None) == bundle.manifest.encoder.file  # the default is unchanged
    fp32 = (path / bundle.manifest.encoder.file).stat().st_size
    assert report["variants"]["fp16"]["bytes"] < 0.7 * fp32
    assert report["variants"]["int8-dynamic"]["bytes"] < 0.5 * fp32
    assert not list(path.glob(".quant-*")), "scratch folder left behind"


def test_parity_against_fp32(quantized_bundle):
    _, report = quantized_bundle
    parity = report["parity"]
    # the tiny random model's log-probs are near-uniform (|log p| ~ 5.6): fp16 rounding stays far below
    # 1e-2, int8 well below 0.2. Embeddings by their relative error ||diff|| / ||fp32|| (their scale
    # follows the weights; measured on onnxruntime 1.32: fp16 ~1e-3, int8 0.2-0.35 on this random
    # model, whose activations have outliers a trained one does not): outputs unrelated to the fp32
    # ones give ~1.4 (sqrt 2), a wrong scale or a broken cast errors of order 1 or more.
    assert parity["fp16"]["max_abs_diff_log_probs"] < 1e-2
    assert parity["fp16"]["rel_error_embeddings"] < 1e-2
    for variant in ("int8-dynamic", "int8-qdq"):
        assert 0 < parity[variant]["max_abs_diff_log_probs"] < 0.2, variant
        assert 0 < parity[variant]["rel_error_embeddings"] < 0.5, (variant, parity[variant])


def test_runtime_picks_a_variant_and_names_a_missing_one(quantized_bundle, tiny_bundle):
    path, _ = quantized_bundle
    wav = str(pytest.importorskip("tests.wavutil").write_wav(path.parent / "a.wav", np.zeros(16000), 16000))
    ok = subprocess.run([sys.executable, "-m", "nim4_edge.cli", "listen", "--bundle", str(path), "--wav", wav,
                         "--encoder-precision", "int8-qdq", "--json"], capture_output=True, text=True, timeout=120)
    assert ok.returncode == 0, ok.stderr
    missing = subprocess.run([sys.executable, "-m", "nim4_edge.cli", "listen", "--bundle", str(tiny_bundle),
                              "--wav", wav, "--encoder-precision", "fp16"], capture_output=True, text=True, timeout=120)
    assert missing.returncode == 2 and "no fp16 encoder in this bundle" in missing.stderr


def test_quantize_command_reports_both_parts(tiny_bundle, tmp_path):
    import shutil

    path = tmp_path / "b"
    shutil.copytree(tiny_bundle, path)
    out = subprocess.run([sys.executable, "-m", "nim4_edge.cli", "quantize", str(path), "--encoder", "fp16",
                          "--decoder", "Q8_0", "--no-agreement"], capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr
    report = json.loads(out.stdout)
    assert set(report) == {"encoder", "decoder"} and "fp16" in report["encoder"]["parity"]
    bad = subprocess.run([sys.executable, "-m", "nim4_edge.cli", "quantize", str(path), "--encoder", "int4"],
                         capture_output=True, text=True, timeout=120)
    assert bad.returncode == 2 and "unknown encoder precision" in bad.stderr


def test_projection_counts_the_full_encoder_step():
    from nim4_edge.bench.projection import decoder_token_bytes, encoder_step_cost, project
    from nim4_edge.export.config import DecoderConfig, EncoderConfig

    step = encoder_step_cost(EncoderConfig())
    assert 18e9 < step["flops"] < 22e9  # docs/FACTS.md: ~19 GFLOP per 640 ms chunk at full size
    assert 6.0e8 < step["params"] < 6.6e8  # the export counted 631.3M encoder parameters
    assert 1.0e9 < decoder_token_bytes(DecoderConfig(), "Q4_K_M") < 1.15e9  # the 1.7B Q4_K_M GGUF is 1.10 GB
    rows = {(r["device"], r["encoder"], r["decoder"]): r for r in project(EncoderConfig(), DecoderConfig())}
    nano16, nano8 = rows[("Orin Nano 8 GB", "fp16", "Q4_K_M")], rows[("Orin Nano 8 GB", "int8", "Q4_K_M")]
    assert nano8["encoder_ms_per_chunk"] < nano16["encoder_ms_per_chunk"]
    assert rows[("AGX Orin 64 GB", "fp16", "Q4_K_M")]["decoder_tokens_per_s"] > nano16["decoder_tokens_per_s"]


def test_encoder_bench_times_every_variant(quantized_bundle, tiny_checkpoint):
    from nim4_edge.bench.encoder import bench_encoder, table

    report = bench_encoder(tiny_checkpoint, quantized_bundle[0], repeats=3, warmup=1, num_threads=1,
                           precisions=["fp32", "int8-dynamic"])
    names = [b["backend"] for b in report["backends"]]
    assert names == ["onnxruntime fp32", "onnxruntime int8-dynamic", "torch eager"]
    fp32, int8, _ = report["backends"]
    assert all(b["ms_median"] > 0 for b in report["backends"]) and fp32["speedup_vs_first"] == 1
    assert int8["file_mb"] < fp32["file_mb"]  # weights in int8
    assert "onnxruntime int8-dynamic" in table(report)
