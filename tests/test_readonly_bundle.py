"""Bundles are inputs: every command that reads a bundle leaves it byte-identical, and what the
benchmarks measure is what `listen` runs (one configuration path: devices.recognizer_config)."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import stat
import subprocess
import sys
from pathlib import Path

import pytest

from nim4_edge.devices.config import Overrides, current_plan, describe, recognizer_config
from nim4_edge.runtime.bundle import Bundle

pytest.importorskip("llama_cpp")

EXAMPLES = Path(__file__).resolve().parents[1] / "examples"


def _fingerprint(folder: Path) -> dict[str, str]:
    return {str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(folder.rglob("*")) if p.is_file()}


def _read_only_copy(source: Path, target: Path) -> Path:
    shutil.copytree(source, target)
    for path in [*target.rglob("*"), target]:
        mode = path.stat().st_mode
        path.chmod(mode & ~(stat.S_IWUSR | stat.S_IWGRP | stat.S_IWOTH))
    return target


def _cli(*args, timeout=600) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "nim4_edge.cli", *args], capture_output=True, text=True,
                          timeout=timeout, env=os.environ | {"OMP_WAIT_POLICY": "PASSIVE"})


@pytest.fixture
def read_only_demo(demo_bundle, tmp_path):
    bundle = _read_only_copy(demo_bundle, tmp_path / "demo-ro")
    yield bundle
    for path in [bundle, *bundle.rglob("*")]:  # let pytest clean it up
        path.chmod(path.stat().st_mode | stat.S_IWUSR)


def test_every_reading_command_leaves_the_bundle_byte_identical(read_only_demo, tmp_path):
    bundle = str(read_only_demo)
    before = _fingerprint(read_only_demo)
    wav = str(EXAMPLES / "en_temperature.wav")
    runs = {
        "listen": _cli("listen", "--bundle", bundle, "--wav", wav),
        "transcribe": _cli("transcribe", "--bundle", bundle, wav),
        "eval": _cli("eval", "--bundle", bundle, "--testset", str(EXAMPLES / "transcripts.jsonl"), "--limit", "1",
                     "--modes", "streaming", "--manifest-hotwords"),
        # Q8_0 is not in the demo bundle: bench must build it elsewhere (the issue that started this)
        "bench": _cli("bench", "--bundle", bundle, "--testset", str(EXAMPLES / "transcripts.jsonl"), "--limit", "1",
                      "--encoder", "fp32", "--decoder", "Q8_0", "--out", str(tmp_path / "bench")),
        "bench runtime": _cli("bench", "runtime", "--bundle", bundle, "--minutes", "0.05"),
        "devices": _cli("devices", "--bundle", bundle, "--json"),
        "doctor": _cli("doctor", "--bundle", bundle),
        "hotwords build": _cli("hotwords", "build", str(EXAMPLES / "hotwords.txt"), "-o", str(tmp_path / "h.db"),
                               "--bundle", bundle),
    }
    for name, proc in runs.items():
        assert "Traceback" not in proc.stderr, (name, proc.stderr)
        assert proc.returncode in ((0, 1) if name == "doctor" else (0,)), (name, proc.stderr)  # doctor: 1 = a check failed
    assert "set the temperature to 21 degrees" in runs["listen"].stdout
    assert _fingerprint(read_only_demo) == before  # same files, same bytes
    results = json.loads((tmp_path / "bench" / "results.json").read_text(encoding="utf-8"))
    (row,) = results["rows"]
    assert row["status"] == "ok", row
    assert results["measured_bundle"] != bundle and Path(results["measured_bundle"]).is_relative_to(tmp_path / "bench")


def test_benchmarks_run_what_listen_runs(demo_bundle, tmp_path):
    bundle = Bundle.load(demo_bundle)
    plan = current_plan()
    listen = describe(recognizer_config(bundle, plan), bundle)  # what `listen` would run here
    proc = _cli("bench", "--bundle", str(demo_bundle), "--testset", str(EXAMPLES / "transcripts.jsonl"), "--limit", "1",
                "--encoder", "fp32", "--decoder", "Q4_K_M", "--out", str(tmp_path / "bench"))
    assert proc.returncode == 0, proc.stderr
    results = json.loads(proc.stdout)
    (row,) = results["rows"]
    pinned = describe(recognizer_config(bundle, plan, Overrides(encoder_precision="fp32", decoder_variant="Q4_K_M")),
                      bundle)
    assert row["config"] == pinned
    for key in ("encoder_threads", "decoder_threads", "encoder_providers", "decoder_gpu_layers", "partial_every_chunks"):
        assert row["config"][key] == listen[key], key
    assert results["profile"] == plan.profile.name
    assert results["threads"] == {"encoder": listen["encoder_threads"], "decoder": listen["decoder_threads"]}
    assert not (tmp_path / "bench" / "bundle").exists()  # nothing was missing: no working copy
    runtime = _cli("bench", "runtime", "--bundle", str(demo_bundle), "--minutes", "0.05")
    assert runtime.returncode == 0, runtime.stderr
    assert json.loads(runtime.stdout)["config"] == listen
