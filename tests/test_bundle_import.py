"""`nim4-edge import bundle`: the shipped demo bundle back into a checkpoint, which exported again
gives the bundle's weights and the bundle's transcripts (export/bundle_import.py)."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("torch", reason="the export extra (torch, onnx, transformers) imports bundles")

from nim4_edge.export.bundle_import import _initializers, import_bundle, largest_difference  # noqa: E402

EXAMPLES = Path(__file__).resolve().parents[1] / "examples"


def _cli(*args, timeout=600):
    return subprocess.run([sys.executable, "-m", "nim4_edge.cli", *map(str, args)], capture_output=True, text=True,
                          timeout=timeout)


def test_the_demo_bundle_imports_and_exports_back_to_itself(demo_bundle, tmp_path):
    report = import_bundle(demo_bundle, tmp_path / "ckpt")
    assert report["preset"] == "demo"
    assert report["encoder_max_abs_diff"] < 1e-5 and report["decoder_max_abs_diff"] == 0.0
    exported = _cli("export", tmp_path / "ckpt", "-o", tmp_path / "again", "--decoder-type", "f16")
    assert exported.returncode == 0, exported.stderr
    shipped, again = _initializers(demo_bundle / "encoder.onnx"), _initializers(tmp_path / "again" / "encoder.onnx")
    assert set(shipped) == set(again)
    worst = max(largest_difference(again[k], shipped[k]) for k in shipped if shipped[k].size)
    assert worst < 1e-5
    assert largest_difference(np.array([1.0, -np.inf]), np.array([1.0, -np.inf])) == 0.0
    assert largest_difference(np.array([1.0, -np.inf]), np.array([1.5, 0.0])) == np.inf  # a lost mask shows
    for wav in ("zh_navigate.wav", "en_call.wav"):
        texts = [_cli("listen", "--bundle", b, "--wav", EXAMPLES / wav, "--decoder-variant", "f16", "--no-verify",
                      "--threads", "1").stdout for b in (demo_bundle, tmp_path / "again")]
        assert texts[0].strip() and texts[0] == texts[1]


def test_a_bundle_with_only_a_quantized_decoder_is_refused(demo_bundle, tmp_path):
    copy = tmp_path / "q4only"
    copy.mkdir()
    for name in ("encoder.onnx", "decoder-q4_k_m.gguf"):
        shutil.copyfile(demo_bundle / name, copy / name)
    manifest = json.loads((demo_bundle / "manifest.json").read_text(encoding="utf-8"))
    manifest["decoder"]["variants"] = {"Q4_K_M": "decoder-q4_k_m.gguf"}
    manifest["decoder"]["default_variant"] = "Q4_K_M"
    manifest["encoder"]["variants"] = {"fp32": "encoder.onnx"}
    manifest["files"] = {k: v for k, v in manifest["files"].items() if k in ("encoder.onnx", "decoder-q4_k_m.gguf")}
    (copy / "manifest.json").write_text(json.dumps(manifest), encoding="utf-8")
    out = _cli("import", "bundle", copy, "-o", tmp_path / "ckpt", timeout=300)
    assert out.returncode != 0 and "no f32 or f16 decoder to import" in out.stderr and "Traceback" not in out.stderr
    assert not (tmp_path / "ckpt").exists()
