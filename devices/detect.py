"""What machine is this: Jetson module, NVIDIA GPUs, memory, onnxruntime providers, llama.cpp GPU offload.

Every probe reads from a root directory and runs commands through a callable, so tests feed fixture
files (a Jetson's /proc/device-tree/model, /etc/nv_tegra_release, /proc/meminfo, `nvidia-smi` output)
and no hardware is needed. A probe that fails leaves its field empty; detection never raises.
"""

from __future__ import annotations

import os
import platform as _platform
import re
import shutil
import subprocess
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path

# /proc/device-tree/model strings NVIDIA ships (JetPack 5/6 developer kits and modules), most specific first.
_JETSON_MODULES = (
    ("agx-orin", re.compile(r"AGX Orin", re.I)),
    ("orin-nx", re.compile(r"Orin NX", re.I)),
    ("orin-nano", re.compile(r"Orin Nano", re.I)),
    ("xavier", re.compile(r"Xavier", re.I)),
)
_NV_TEGRA = re.compile(r"#\s*R(\d+)\s*\(release\),\s*REVISION:\s*([\d.]+)")


@dataclass
class GpuInfo:
    name: str
    memory_mb: int
    driver: str = ""


@dataclass
class Platform:
    kind: str  # "jetson", "x86", "arm", "other"
    machine: str  # uname machine: x86_64, aarch64
    model: str = ""  # Jetson: /proc/device-tree/model
    jetson_module: str = ""  # agx-orin, orin-nx, orin-nano, xavier (or "" when unknown)
    l4t_release: str = ""  # e.g. "36.3.0" (JetPack 6.0)
    memory_mb: int = 0  # total RAM (unified with the GPU on Jetson)
    available_mb: int = 0
    gpus: list[GpuInfo] = field(default_factory=list)
    ort_providers: list[str] = field(default_factory=list)
    llama_gpu_offload: bool = False
    cpu_count: int = 0

    @property
    def has_cuda_gpu(self) -> bool:
        return self.kind == "jetson" or bool(self.gpus)

    def to_json(self) -> dict:
        return asdict(self)


Runner = Callable[[list[str]], str | None]


def run_command(argv: list[str]) -> str | None:
    """stdout of a command, or None when it is missing or fails (5 s limit)."""
    if shutil.which(argv[0]) is None:
        return None
    try:
        proc = subprocess.run(argv, capture_output=True, text=True, timeout=5)
    except (OSError, subprocess.TimeoutExpired):
        return None
    return proc.stdout if proc.returncode == 0 else None


def _read(root: Path, path: str) -> str:
    try:
        return (root / path.lstrip("/")).read_bytes().decode("utf-8", "replace").replace("\x00", "").strip()
    except OSError:
        return ""


def jetson_module(model: str) -> str:
    for name, pattern in _JETSON_MODULES:
        if pattern.search(model):
            return name
    return ""


def l4t_release(text: str) -> str:
    """'# R36 (release), REVISION: 3.0, GCID: ...' -> '36.3.0'."""
    m = _NV_TEGRA.search(text)
    return f"{m.group(1)}.{m.group(2)}" if m else ""


def meminfo_mb(text: str) -> tuple[int, int]:
    values = {}
    for line in text.splitlines():
        parts = line.split()
        if len(parts) >= 2 and parts[1].isdigit():
            values[parts[0].rstrip(":")] = int(parts[1]) // 1024
    return values.get("MemTotal", 0), values.get("MemAvailable", 0)


def parse_nvidia_smi(text: str | None) -> list[GpuInfo]:
    """Output of `nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader,nounits`."""
    gpus = []
    for line in (text or "").splitlines():
        parts = [p.strip() for p in line.split(",")]
        if len(parts) >= 2 and parts[1].isdigit():
            gpus.append(GpuInfo(parts[0], int(parts[1]), parts[2] if len(parts) > 2 else ""))
    return gpus


def ort_providers() -> list[str]:
    try:
        import onnxruntime  # probe: a broken install is reported, never raised

        return list(onnxruntime.get_available_providers())
    except Exception:  # noqa: BLE001 - a broken install is reported by `doctor`, not raised here
        return []


def llama_gpu_offload() -> bool:
    try:
        import llama_cpp  # probe: a broken install is reported, never raised

        return bool(llama_cpp.llama_supports_gpu_offload())
    except Exception:  # noqa: BLE001
        return False


def detect(root: Path = Path("/"), run: Runner = run_command, machine: str | None = None,
           providers: list[str] | None = None, gpu_offload: bool | None = None, cpu_count: int | None = None) -> Platform:
    """Probe the machine (or a fixture tree under `root`). Keyword overrides are for tests."""
    machine = machine or _platform.machine()
    model = _read(root, "/proc/device-tree/model")
    release = l4t_release(_read(root, "/etc/nv_tegra_release"))
    total, available = meminfo_mb(_read(root, "/proc/meminfo"))
    if model.startswith("NVIDIA Jetson") or release:
        kind = "jetson"
    elif machine in ("x86_64", "AMD64"):
        kind = "x86"
    elif machine in ("aarch64", "arm64"):
        kind = "arm"
    else:
        kind = "other"
    gpus = [] if kind == "jetson" else parse_nvidia_smi(
        run(["nvidia-smi", "--query-gpu=name,memory.total,driver_version", "--format=csv,noheader,nounits"]))
    return Platform(
        kind=kind, machine=machine, model=model, jetson_module=jetson_module(model) if kind == "jetson" else "",
        l4t_release=release, memory_mb=total, available_mb=available, gpus=gpus,
        ort_providers=ort_providers() if providers is None else providers,
        llama_gpu_offload=llama_gpu_offload() if gpu_offload is None else gpu_offload,
        cpu_count=cpu_count or os.cpu_count() or 1,
    )
