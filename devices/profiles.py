"""Device profiles (devices/profiles/*.toml) and the plan: which profile, what it can really use here.

    platform = detect()
    plan = make_plan(platform, load_profiles(), override="orin-nx-16gb")
    plan.profile, plan.providers, plan.decoder_gpu_layers, plan.warnings

Choice: an override (`--profile`) wins; otherwise the first profile whose [match] fits (Jetson module
and memory, an x86 box with a GPU), else `cpu`. Then every request is checked against the machine:
a provider onnxruntime lacks is dropped, GPU layers without a GPU build of llama.cpp become 0, a DLA
core on a module without DLA is ignored; each loss is a warning that says what was lost and the fix.
"""

from __future__ import annotations

import sys
from dataclasses import dataclass, field
from pathlib import Path

from nim4_edge.devices.detect import Platform
from nim4_edge.runtime.errors import Nim4Error

if sys.version_info >= (3, 11):
    import tomllib
else:  # Python 3.10 (JetPack 6)
    import tomli as tomllib

PROFILE_DIR = Path(__file__).resolve().parent / "profiles"
PRECISIONS = ("fp32", "fp16", "int8")
# Order of preference when several profiles match (most specific first).
_ORDER = ("agx-orin-64gb", "agx-orin-32gb", "orin-nx-16gb", "orin-nano-8gb", "x86-cuda", "cpu")
_PROVIDER_FIX = {
    "TensorrtExecutionProvider": "install onnxruntime-gpu built with TensorRT (Jetson: the JetPack wheel, README 'Jetson')",
    "CUDAExecutionProvider": "install onnxruntime-gpu (Jetson: the JetPack wheel)",
}


class ProfileError(Nim4Error):
    """A profile file that cannot be used, or an unknown profile name."""


@dataclass(frozen=True)
class Profile:
    name: str
    description: str
    match: dict
    hardware: dict
    providers: tuple[str, ...]
    precision: str
    encoder_threads: int
    dla_core: int
    decoder_variant: str
    decoder_gpu_layers: int
    decoder_threads: int
    partial_every_chunks: int
    memory_budget_mb: int

    @classmethod
    def from_toml(cls, data: dict, source: str) -> "Profile":
        try:
            enc, dec = data["encoder"], data["decoder"]
            profile = cls(
                name=str(data["name"]), description=str(data.get("description", "")),
                match=dict(data.get("match", {})), hardware=dict(data.get("hardware", {})),
                providers=tuple(enc["providers"]), precision=str(enc.get("precision", "fp32")),
                encoder_threads=int(enc.get("threads", 0)), dla_core=int(enc.get("dla_core", -1)),
                decoder_variant=str(dec.get("variant", "")), decoder_gpu_layers=int(dec.get("gpu_layers", 0)),
                decoder_threads=int(dec.get("threads", 0)),
                partial_every_chunks=int(data.get("runtime", {}).get("partial_every_chunks", 1)),
                memory_budget_mb=int(data.get("memory", {}).get("budget_mb", 0)),
            )
        except (KeyError, TypeError, ValueError) as e:
            raise ProfileError(f"{source}: bad or missing field ({e}); see devices/profiles/cpu.toml") from None
        if profile.precision not in PRECISIONS:
            raise ProfileError(f"{source}: precision {profile.precision!r} is not one of {PRECISIONS}")
        if not profile.providers or profile.providers[-1] != "CPUExecutionProvider":
            raise ProfileError(f"{source}: providers must end with CPUExecutionProvider (the fallback)")
        return profile

    def matches(self, platform: Platform) -> bool:
        m = self.match
        if platform.memory_mb and platform.memory_mb < m.get("min_memory_gb", 0) * 1024:
            return False
        kind = m.get("platform", "any")
        if kind == "any":
            return True
        if kind == "jetson":
            return platform.kind == "jetson" and platform.jetson_module == m.get("module")
        if kind == "x86":
            return platform.kind == "x86" and (platform.has_cuda_gpu or not m.get("gpu", False))
        return False


def load_profiles(directory: Path = PROFILE_DIR) -> dict[str, Profile]:
    profiles = {}
    for path in sorted(Path(directory).glob("*.toml")):
        try:
            data = tomllib.loads(path.read_text(encoding="utf-8"))
        except (OSError, UnicodeDecodeError, tomllib.TOMLDecodeError) as e:
            raise ProfileError(f"{path}: not readable TOML ({e})") from None
        profile = Profile.from_toml(data, str(path))
        profiles[profile.name] = profile
    if "cpu" not in profiles:
        raise ProfileError(f"{directory}: the fallback profile cpu.toml is missing")
    return profiles


@dataclass
class Plan:
    """What this machine will run: the chosen profile, and what of it survives the machine's checks."""

    profile: Profile
    reason: str
    providers: list[str]
    precision: str
    dla_core: int
    decoder_gpu_layers: int
    memory_budget_mb: int
    warnings: list[str] = field(default_factory=list)

    def ort_providers(self, engine_cache: Path | None = None) -> list:
        """The providers list for onnxruntime.InferenceSession, with TensorRT / CUDA options."""
        out: list = []
        for name in self.providers:
            if name == "TensorrtExecutionProvider":
                options = {"trt_fp16_enable": self.precision in ("fp16", "int8"),
                           "trt_int8_enable": self.precision == "int8",
                           "trt_max_workspace_size": 1 << 30}
                if engine_cache is not None:
                    options.update(trt_engine_cache_enable=True, trt_engine_cache_path=str(engine_cache),
                                   trt_timing_cache_enable=True, trt_timing_cache_path=str(engine_cache))
                if self.dla_core >= 0:
                    options.update(trt_dla_enable=True, trt_dla_core=self.dla_core)
                out.append((name, options))
            elif name == "CUDAExecutionProvider":
                out.append((name, {"cudnn_conv_algo_search": "HEURISTIC"}))
            else:
                out.append(name)
        return out

    def to_json(self) -> dict:
        return {"profile": self.profile.name, "reason": self.reason, "providers": self.providers,
                "precision": self.precision, "dla_core": self.dla_core, "decoder_variant": self.profile.decoder_variant,
                "decoder_gpu_layers": self.decoder_gpu_layers, "encoder_threads": self.profile.encoder_threads,
                "decoder_threads": self.profile.decoder_threads,
                "partial_every_chunks": self.profile.partial_every_chunks,
                "memory_budget_mb": self.memory_budget_mb, "warnings": self.warnings}


def choose_profile(platform: Platform, profiles: dict[str, Profile], override: str | None = None) -> tuple[Profile, str]:
    if override:
        if override not in profiles:
            raise ProfileError(f"unknown profile {override!r}; choose from {', '.join(sorted(profiles))}")
        return profiles[override], f"--profile {override}"
    order = [n for n in _ORDER if n in profiles] + sorted(set(profiles) - set(_ORDER))
    for name in order:
        profile = profiles[name]
        if name != "cpu" and profile.matches(platform):
            what = platform.model or (platform.gpus[0].name if platform.gpus else platform.machine)
            return profile, f"detected {what} ({platform.memory_mb // 1024} GB)"
    if platform.kind == "jetson":  # e.g. an Orin NX 8 GB: the Jetson profile for the memory it has
        fitting = [p for p in profiles.values() if p.match.get("platform") == "jetson"
                   and p.hardware.get("memory_gb", 0) * 1024 * 0.85 <= platform.memory_mb]
        if fitting:
            best = max(fitting, key=lambda p: p.hardware.get("memory_gb", 0))
            return best, f"{platform.model or 'Jetson'} has no profile of its own: {best.name}, the closest by memory"
    why = "no GPU found" if not platform.has_cuda_gpu else "no profile matches this GPU machine"
    return profiles["cpu"], f"{why}: CPU profile"


def make_plan(platform: Platform, profiles: dict[str, Profile], override: str | None = None) -> Plan:
    profile, reason = choose_profile(platform, profiles, override)
    warnings = []
    providers = []
    for name in profile.providers:
        if name in platform.ort_providers or name == "CPUExecutionProvider":
            providers.append(name)
        else:
            warnings.append(f"{name} is not available in this onnxruntime: the encoder loses it "
                            f"({_PROVIDER_FIX.get(name, 'install an onnxruntime build with it')})")
    precision = profile.precision
    if providers == ["CPUExecutionProvider"] and precision == "fp16":
        precision = "fp32"
        warnings.append("FP16 needs a GPU provider: the encoder runs FP32 on the CPU")
    dla = profile.dla_core
    if dla >= 0 and (platform.kind != "jetson" or profile.hardware.get("dla_cores", 0) <= dla
                     or "TensorrtExecutionProvider" not in providers):
        warnings.append(f"DLA core {dla} is not usable here (no DLA on this module or no TensorRT): GPU instead")
        dla = -1
    gpu_layers = profile.decoder_gpu_layers
    if gpu_layers and not platform.llama_gpu_offload:
        warnings.append("llama.cpp was built without GPU offload: the decoder runs on the CPU "
                        "(reinstall llama-cpp-python with CMAKE_ARGS=\"-DGGML_CUDA=on\")")
        gpu_layers = 0
    budget = profile.memory_budget_mb
    if budget == 0:
        if profile.hardware.get("unified_memory", False) or not platform.gpus or gpu_layers == 0:
            budget = int(platform.memory_mb * 0.75)
        else:
            budget = int(platform.gpus[0].memory_mb * 0.9)
    elif platform.memory_mb and budget > platform.memory_mb:
        warnings.append(f"profile budget {budget} MB exceeds this machine's {platform.memory_mb} MB: "
                        "capped at 75% of it")
        budget = int(platform.memory_mb * 0.75)
    return Plan(profile, reason, providers, precision, dla, gpu_layers, budget, warnings)
