"""Device detection on fixture trees, profile choice and fallback, memory budget, engine cache keys."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from nim4_edge.devices.config import check_memory, memory_estimate_mb, recognizer_config
from nim4_edge.devices.detect import detect, l4t_release, parse_nvidia_smi
from nim4_edge.devices.profiles import Plan, ProfileError, load_profiles, make_plan
from nim4_edge.devices.tensorrt import engine_key

FIXTURES = Path(__file__).parent / "fixtures" / "devices"
GPU_PROVIDERS = ["TensorrtExecutionProvider", "CUDAExecutionProvider", "CPUExecutionProvider"]


def fixture_platform(name: str, providers=None, gpu_offload=True):
    root = FIXTURES / name
    smi = root / "nvidia-smi.txt"

    def run(argv):
        return smi.read_text() if argv[0] == "nvidia-smi" and smi.is_file() else None

    machine = "x86_64" if name.startswith("x86") else "aarch64"
    return detect(root, run, machine=machine, providers=GPU_PROVIDERS if providers is None else providers,
                  gpu_offload=gpu_offload, cpu_count=8)


@pytest.fixture(scope="module")
def profiles():
    return load_profiles()


@pytest.mark.parametrize("name, module, release, memory_gb", [
    ("agx-orin-64gb", "agx-orin", "36.3.0", 61),
    ("agx-orin-32gb", "agx-orin", "36.3.0", 30),
    ("orin-nx-16gb", "orin-nx", "36.3.0", 15),
    ("orin-nx-8gb", "orin-nx", "36.3.0", 7),
    ("orin-nano-8gb", "orin-nano", "36.4.0", 7),
])
def test_jetson_detection(name, module, release, memory_gb):
    p = fixture_platform(name)
    assert (p.kind, p.jetson_module, p.l4t_release) == ("jetson", module, release)
    assert p.memory_mb // 1024 == memory_gb and p.has_cuda_gpu and not p.gpus


def test_x86_detection_with_and_without_a_gpu():
    gpu = fixture_platform("x86-h200")
    assert gpu.kind == "x86" and gpu.gpus[0].name == "NVIDIA H200" and gpu.gpus[0].memory_mb == 143771
    cpu = fixture_platform("x86-cpu", providers=["CPUExecutionProvider"], gpu_offload=False)
    assert cpu.kind == "x86" and not cpu.gpus and not cpu.has_cuda_gpu


def test_parsers_tolerate_garbage():
    assert l4t_release("not a release file") == ""
    assert parse_nvidia_smi("NVIDIA-SMI has failed\n") == [] and parse_nvidia_smi(None) == []


@pytest.mark.parametrize("name, expected", [
    ("agx-orin-64gb", "agx-orin-64gb"), ("agx-orin-32gb", "agx-orin-32gb"), ("orin-nx-16gb", "orin-nx-16gb"),
    ("orin-nano-8gb", "orin-nano-8gb"), ("orin-nx-8gb", "orin-nano-8gb"),  # closest by memory
    ("x86-h200", "x86-cuda"),
])
def test_profile_choice(profiles, name, expected):
    plan = make_plan(fixture_platform(name), profiles)
    assert plan.profile.name == expected
    assert plan.providers == GPU_PROVIDERS and plan.decoder_gpu_layers > 0 and not plan.warnings


def test_cpu_machine_gets_the_cpu_profile(profiles):
    plan = make_plan(fixture_platform("x86-cpu", providers=["CPUExecutionProvider"], gpu_offload=False), profiles)
    assert plan.profile.name == "cpu" and plan.providers == ["CPUExecutionProvider"] and not plan.warnings
    assert plan.memory_budget_mb == int(24683000 // 1024 * 0.75)


def test_override_the_machine_cannot_honour_falls_back_with_warnings(profiles):
    cpu = fixture_platform("x86-cpu", providers=["CPUExecutionProvider"], gpu_offload=False)
    plan = make_plan(cpu, profiles, override="orin-nx-16gb")
    assert plan.profile.name == "orin-nx-16gb" and plan.reason == "--profile orin-nx-16gb"
    assert plan.providers == ["CPUExecutionProvider"] and plan.decoder_gpu_layers == 0
    lost = " ".join(plan.warnings)
    assert "TensorrtExecutionProvider" in lost and "CUDAExecutionProvider" in lost and "GGML_CUDA" in lost
    assert plan.precision == "fp32"  # FP16 without a GPU provider


def test_dla_request_on_a_module_without_dla_is_dropped(profiles):
    from dataclasses import replace

    nano = profiles["orin-nano-8gb"]
    with_dla = dict(profiles, **{"nano-dla": replace(nano, name="nano-dla", dla_core=0)})
    plan = make_plan(fixture_platform("orin-nano-8gb"), with_dla, override="nano-dla")
    assert plan.dla_core == -1 and any("DLA" in w for w in plan.warnings)
    nx = replace(profiles["orin-nx-16gb"], name="nx-dla", dla_core=1)
    plan = make_plan(fixture_platform("orin-nx-16gb"), dict(profiles, **{"nx-dla": nx}), override="nx-dla")
    assert plan.dla_core == 1 and not plan.warnings
    trt = dict(plan.ort_providers(Path("/tmp/e"))[0][1])
    assert trt["trt_dla_enable"] and trt["trt_dla_core"] == 1 and trt["trt_engine_cache_path"] == "/tmp/e"


def test_unknown_profile_and_bad_profile_files(profiles, tmp_path):
    with pytest.raises(ProfileError, match="unknown profile 'orin-mega'"):
        make_plan(fixture_platform("x86-cpu"), profiles, override="orin-mega")
    (tmp_path / "cpu.toml").write_text('name = "cpu"\n[encoder]\nproviders = ["CUDAExecutionProvider"]\n[decoder]\n')
    with pytest.raises(ProfileError, match="must end with CPUExecutionProvider"):
        load_profiles(tmp_path)
    (tmp_path / "cpu.toml").write_text("name = \n")
    with pytest.raises(ProfileError, match="not readable TOML"):
        load_profiles(tmp_path)


def test_memory_budget_check(profiles, demo_bundle):
    from nim4_edge.runtime.bundle import Bundle

    bundle = Bundle.load(demo_bundle)
    plan = make_plan(fixture_platform("orin-nano-8gb"), profiles)
    config = recognizer_config(bundle, plan)
    need = memory_estimate_mb(bundle, config)
    assert need["total_mb"] == sum(v for k, v in need.items() if k != "total_mb")
    # the same sizes and settings as the runtime: the encoder variant it loads, the decoder's KV cache
    assert need["encoder_mb"] == round(2 * bundle.encoder_bytes(config.encoder_precision) / 2**20)
    spec, settings = bundle.manifest.decoder, config.decoder
    kv_bytes = {"f32": 4, "f16": 2}[settings.kv_cache_type]
    assert need["kv_cache_mb"] == round(2 * spec.num_layers * spec.hidden_size * settings.n_ctx * kv_bytes / 2**20)
    assert memory_estimate_mb(bundle, config, streams=3)["kv_cache_mb"] == round(
        3 * 2 * spec.num_layers * spec.hidden_size * settings.n_ctx * kv_bytes / 2**20)
    fits, line = check_memory(need, plan, available_mb=5000)
    assert fits, line
    small = Plan(plan.profile, "", ["CPUExecutionProvider"], "fp32", -1, 0, memory_budget_mb=10)
    fits, line = check_memory(need, small)
    assert not fits and "budget is 10 MB" in line
    fits, line = check_memory(need, plan, available_mb=1)
    assert not fits and "only 1 MB are free" in line


def test_engine_cache_keys_change_with_everything_that_invalidates_an_engine():
    base = dict(device="NVIDIA Jetson Orin NX Engineering Reference Developer Kit", trt_version="10.3.0",
                onnx_sha256="a" * 64, precision="fp16", dla_core=-1)
    key = engine_key(**base)
    assert key == engine_key(**base)  # stable
    assert key.startswith("nvidia-jetson-orin-nx-engineering-refere") and "trt10.3.0-fp16" in key
    for field, other in (("device", "NVIDIA Jetson AGX Orin"), ("trt_version", "10.4.0"),
                         ("onnx_sha256", "b" * 64), ("precision", "int8"), ("dla_core", 0)):
        assert engine_key(**{**base, field: other}) != key, field


def test_devices_and_doctor_commands_on_this_machine(demo_bundle):
    out = subprocess.run([sys.executable, "-m", "nim4_edge.cli", "devices", "--json"],
                         capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    report = json.loads(out.stdout)
    platform = report["platform"]
    if not platform["gpus"] and platform["kind"] != "jetson":
        assert report["plan"]["profile"] == "cpu" and report["plan"]["providers"] == ["CPUExecutionProvider"]
    doctor = subprocess.run([sys.executable, "-m", "nim4_edge.cli", "doctor", "--bundle", str(demo_bundle)],
                            capture_output=True, text=True, timeout=120)
    assert "bundle memory" in doctor.stdout and "Traceback" not in doctor.stderr
    failed = any(line.startswith("FAIL") for line in doctor.stdout.splitlines())
    assert doctor.returncode == (1 if failed else 0)
