"""`nim4-edge devices` (platform, chosen profile and why) and `nim4-edge doctor` (install checks)."""

from __future__ import annotations

import json
import sys
from dataclasses import dataclass
from pathlib import Path

from nim4_edge.devices.config import check_memory, current_plan, memory_estimate_mb, recognizer_config
from nim4_edge.devices.detect import detect
from nim4_edge.devices.tensorrt import build_engine, engine_dir, engine_key, tensorrt_version
from nim4_edge.runtime.audio import AudioError
from nim4_edge.runtime.bundle import Bundle, resolve_bundle, sha256_file
from nim4_edge.runtime.errors import Nim4Error
from nim4_edge.runtime.sources import list_input_devices


def cmd_devices(args) -> int:
    platform = detect()
    plan = current_plan(args.profile, platform)
    report = {"platform": platform.to_json(), "plan": plan.to_json()}
    if args.bundle or args.build_engine:
        report["bundle"] = str(resolve_bundle(args.bundle))
    if args.build_engine:
        report["engine"] = str(_build_engine(args, platform, plan))
    if args.json:
        print(json.dumps(report, indent=1))
        return 0
    p = platform
    what = p.model or f"{p.kind} {p.machine}"
    print(f"platform   {what}" + (f", L4T {p.l4t_release}" if p.l4t_release else ""))
    print(f"memory     {p.memory_mb} MB total, {p.available_mb} MB available"
          + (" (unified: CPU and GPU share it)" if p.kind == "jetson" else ""))
    print(f"cpus       {p.cpu_count}")
    print(f"gpus       {', '.join(f'{g.name} ({g.memory_mb} MB)' for g in p.gpus) or ('integrated' if p.kind == 'jetson' else 'none')}")
    print(f"onnxruntime providers  {', '.join(p.ort_providers) or 'onnxruntime not importable'}")
    print(f"llama.cpp GPU offload  {'yes' if p.llama_gpu_offload else 'no'}")
    print()
    j = plan.to_json()
    print(f"profile    {j['profile']}  ({j['reason']})")
    print(f"           {plan.profile.description}")
    print(f"encoder    {', '.join(j['providers'])}; {j['precision']}; threads {j['encoder_threads'] or 'all'}"
          + (f"; DLA core {j['dla_core']}" if j['dla_core'] >= 0 else ""))
    print(f"decoder    {j['decoder_variant']}; GPU layers {j['decoder_gpu_layers']}; threads {j['decoder_threads'] or 'all'}")
    print(f"partials   every {j['partial_every_chunks']} chunk(s) of 640 ms")
    print(f"memory     budget {j['memory_budget_mb']} MB")
    for warning in plan.warnings:
        print(f"warning    {warning}")
    return 0


def _build_engine(args, platform, plan) -> Path:
    bundle = Bundle.load(resolve_bundle(args.bundle))
    version = tensorrt_version()
    if version is None:
        raise Nim4Error("TensorRT is not installed here; engines are built on the device that runs them "
                        "(Jetson: apt install python3-libnvinfer)")
    onnx = bundle.path / bundle.manifest.encoder.file
    device = platform.model or (platform.gpus[0].name if platform.gpus else platform.machine)
    key = engine_key(device, version, sha256_file(onnx), plan.precision, plan.dla_core)
    return build_engine(onnx, engine_dir(bundle.path, key), plan.precision, plan.dla_core)


@dataclass
class Check:
    name: str
    ok: bool | None  # None: a warning (works, with less)
    detail: str
    fix: str = ""

    def line(self) -> str:
        status = {True: "ok  ", False: "FAIL", None: "warn"}[self.ok]
        return f"{status}  {self.name:<22} {self.detail}" + (f"  -> {self.fix}" if self.fix and self.ok is not True else "")


def run_checks(bundle_dir: Path | None, profile: str | None) -> list[Check]:
    checks = []
    v = sys.version_info
    checks.append(Check("python", v >= (3, 10), f"{v.major}.{v.minor}.{v.micro}", "use Python 3.10 or newer"))
    for module, fix in (("numpy", "pip install numpy"), ("kaldi_native_fbank", "pip install kaldi-native-fbank"),
                        ("soxr", "pip install soxr"), ("webrtcvad", "pip install webrtcvad-wheels"),
                        ("ahocorasick", "pip install pyahocorasick"), ("pypinyin", "pip install pypinyin")):
        try:
            __import__(module)
            checks.append(Check(module, True, "importable"))
        except ImportError as e:
            checks.append(Check(module, False, str(e), fix))
    platform = detect()
    plan = current_plan(profile, platform)
    if platform.ort_providers:
        missing = [p for p in plan.profile.providers if p not in platform.ort_providers]
        checks.append(Check("onnxruntime providers", None if missing else True, ", ".join(platform.ort_providers),
                            f"profile {plan.profile.name} also wants {', '.join(missing)}: install onnxruntime-gpu"
                            if missing else ""))
    else:
        checks.append(Check("onnxruntime", False, "not importable", "pip install onnxruntime (Jetson: the JetPack wheel)"))
    try:  # the check is whether it imports: guarded here, not at the top of the module
        import llama_cpp  # optional dependency: imported only when this path runs

        wants_gpu = plan.profile.decoder_gpu_layers > 0
        gpu = platform.llama_gpu_offload
        checks.append(Check("llama.cpp", True if gpu or not wants_gpu else None,
                            f"llama-cpp-python {llama_cpp.__version__}, GPU offload {'yes' if gpu else 'no'}",
                            'reinstall with CMAKE_ARGS="-DGGML_CUDA=on" pip install --force-reinstall llama-cpp-python'))
    except ImportError as e:
        checks.append(Check("llama.cpp", False, str(e), "pip install llama-cpp-python"))
    checks.append(_audio_check())
    if platform.has_cuda_gpu:
        version = tensorrt_version()
        checks.append(Check("tensorrt", None if version is None else True, version or "not importable",
                            "Jetson: apt install python3-libnvinfer; x86: pip install tensorrt"))
    checks.append(_bundle_check(bundle_dir, plan, platform))
    return checks


def _audio_check() -> Check:
    try:
        devices = list_input_devices()
    except AudioError as e:
        return Check("microphone", None, str(e).split(";")[0], "apt-get install libportaudio2 (or use --wav / --stdin)")
    except Exception as e:  # noqa: BLE001 - PortAudio errors are not one type
        return Check("microphone", None, f"PortAudio error: {e}", "check the sound card (or use --wav / --stdin)")
    if not devices:
        return Check("microphone", None, "PortAudio works, no input device found", "plug in a microphone (or use --wav)")
    return Check("microphone", True, f"{len(devices)} input device(s), e.g. {devices[0]['name']}")


def _bundle_check(bundle_dir: Path | None, plan, platform) -> Check:
    try:
        path = resolve_bundle(bundle_dir)
        bundle = Bundle.load(path)
        config = recognizer_config(bundle, plan)
        bundle.verify_files(bundle.files_in_use(config.encoder_precision, config.decoder_variant))
        need = memory_estimate_mb(bundle, config)
    except Nim4Error as e:
        return Check("bundle", False, str(e), "pass --bundle DIR")
    fits, detail = check_memory(need, plan, platform.available_mb)
    return Check("bundle memory", fits, f"{path}: {detail}")


def cmd_doctor(args) -> int:
    checks = run_checks(args.bundle, args.profile)
    for check in checks:
        print(check.line())
    failed = [c for c in checks if c.ok is False]
    print(f"{len(checks)} checks: {len(failed)} failed, {sum(c.ok is None for c in checks)} warnings")
    return 1 if failed else 0


def add_commands(sub) -> None:
    p = sub.add_parser("devices", help="show the detected platform, the chosen device profile and why",
                       description="Detect the platform (Jetson model, NVIDIA GPUs, onnxruntime providers, "
                                   "llama.cpp GPU offload) and print the profile the runtime will use, with "
                                   "every capability it had to drop. Profiles: devices/profiles/*.toml.")
    p.add_argument("--profile", help="force a profile (e.g. orin-nano-8gb); what this machine cannot honour is listed")
    p.add_argument("--json", action="store_true", help="print JSON")
    p.add_argument("--bundle", type=Path, help="bundle for --build-engine (default: the shipped demo model)")
    p.add_argument("--build-engine", action="store_true",
                   help="build the encoder's TensorRT engine for this device into BUNDLE/engines/<key>/")
    p.set_defaults(func=cmd_devices)

    p = sub.add_parser("doctor", help="check the install: libraries, PortAudio, GPU support, memory",
                       description="One line per check; a failed check says how to fix it. Exit code 1 "
                                   "when a check failed.")
    p.add_argument("--bundle", type=Path, help="bundle to check the memory plan for (default: the demo model)")
    p.add_argument("--profile", help="check against this profile instead of the detected one")
    p.set_defaults(func=cmd_doctor)
