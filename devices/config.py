"""The one path from (bundle, device plan, user overrides) to a RecognizerConfig.

`listen`, `transcribe`, `eval`, every benchmark and the Python API's device-aware path call
`recognizer_config`, so what is measured is what runs:

    bundle = Bundle.load(resolve_bundle(None))            # the shipped demo model by default
    plan = current_plan()                                 # detected profile, what this machine can use
    config = recognizer_config(bundle, plan, Overrides(threads=2))

An override left at None takes the profile's value (decoder variant, encoder precision, threads,
partial cadence); the rest (VAD, endpointer, hotwords) are the runtime's defaults unless given.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from pathlib import Path

from nim4_edge.devices.detect import Platform, detect
from nim4_edge.devices.profiles import Plan, load_profiles, make_plan
from nim4_edge.runtime.bundle import Bundle, Manifest
from nim4_edge.runtime.decoder import DecoderSettings
from nim4_edge.runtime.endpoint import EndpointConfig
from nim4_edge.runtime.errors import Nim4Error
from nim4_edge.runtime.hotwords import RetrievalConfig
from nim4_edge.runtime.recognizer import RecognizerConfig
from nim4_edge.runtime.vad import VadConfig

ENGINE_CACHE_ROOT = Path.home() / ".cache" / "nim4-edge" / "engines"


@dataclass(frozen=True)
class Overrides:
    """What a user sets over the device profile (CLI flags, API arguments). None: the profile's choice."""

    decoder_variant: str | None = None  # GGUF variant, e.g. Q4_K_M
    encoder_precision: str | None = None  # encoder variant: fp32, fp16, int8-dynamic, int8-qdq
    threads: int | None = None  # encoder and decoder threads (0 = all cores)
    partial_every_chunks: int | None = None  # 0 = finals only
    vad: VadConfig = field(default_factory=VadConfig)
    endpoint: EndpointConfig = field(default_factory=EndpointConfig)
    hotwords: Path | None = None  # hotword database shared by all streams
    retrieval: RetrievalConfig = field(default_factory=RetrievalConfig)
    respell_hints: bool = True
    verify_bundle_hashes: bool = True  # sha256 of the files in use before loading them (cached)
    decoder_batch_streams: int = 0  # > 0: one shared llama.cpp context for that many streams (serve --batched-decode)
    confidence_threshold: float | None = None  # None: the bundle's (runtime/confidence.py)


def current_plan(profile: str | None = None, platform: Platform | None = None) -> Plan:
    """The plan for this machine (detected) or for `platform`, with `profile` forced when given."""
    return make_plan(platform or detect(), load_profiles(), profile)


def encoder_variant_for(plan: Plan, variants: dict) -> str | None:
    """The bundle's encoder variant for the plan's precision: int8 means the QDQ model on TensorRT
    (which consumes QDQ), the dynamic one on CPU; None (the bundle's default) when it has none."""
    on_trt = "TensorrtExecutionProvider" in plan.providers
    wanted = {"fp32": ["fp32"], "fp16": ["fp16"],
              "int8": ["int8-qdq", "int8-dynamic"] if on_trt else ["int8-dynamic", "int8-qdq"]}[plan.precision]
    return next((v for v in wanted if v in variants), None)


def decoder_variant_for(plan: Plan, variants: dict) -> str | None:
    """The profile's GGUF variant when the bundle has it, else None (the bundle's default)."""
    return plan.profile.decoder_variant if plan.profile.decoder_variant in variants else None


def engine_cache_dir(manifest: Manifest, bundle_path: Path) -> Path:
    """Where onnxruntime's TensorRT provider keeps engines for this bundle: in the user's cache, never
    in the bundle (a bundle is an input; it may be read-only or installed in site-packages)."""
    tag = hashlib.sha256(repr(sorted(manifest.files.items())).encode()).hexdigest()[:12]
    return ENGINE_CACHE_ROOT / f"{Path(bundle_path).resolve().name}-{tag}"


def recognizer_config(bundle: Bundle, plan: Plan, overrides: Overrides = Overrides()) -> RecognizerConfig:
    """The configuration `listen` runs: the profile's variants, threads and providers as far as the
    bundle has them, with the user's overrides on top."""
    manifest = bundle.manifest
    threads = overrides.threads
    encoder_threads = plan.profile.encoder_threads if threads is None else threads
    decoder_threads = plan.profile.decoder_threads if threads is None else threads
    engines = None
    if "TensorrtExecutionProvider" in plan.providers:
        engines = engine_cache_dir(manifest, bundle.path)
        engines.mkdir(parents=True, exist_ok=True)
    try:
        return RecognizerConfig(
            bundle=bundle.path,
            decoder_variant=overrides.decoder_variant or decoder_variant_for(plan, manifest.decoder.variants),
            decoder=DecoderSettings(n_threads=decoder_threads, n_threads_batch=decoder_threads,
                                    n_gpu_layers=plan.decoder_gpu_layers),
            vad=overrides.vad,
            endpoint=overrides.endpoint,
            partial_every_chunks=(plan.profile.partial_every_chunks if overrides.partial_every_chunks is None
                                  else overrides.partial_every_chunks),
            encoder_threads=encoder_threads,
            encoder_providers=tuple(plan.ort_providers(engines)),
            encoder_precision=overrides.encoder_precision or encoder_variant_for(plan, manifest.encoder.variants),
            verify_bundle_hashes=overrides.verify_bundle_hashes,
            hotwords=overrides.hotwords,
            retrieval=overrides.retrieval,
            respell_hints=overrides.respell_hints,
            decoder_batch_streams=overrides.decoder_batch_streams,
            confidence_threshold=overrides.confidence_threshold,
        )
    except (TypeError, ValueError) as e:
        raise Nim4Error(str(e)) from None


def describe(config: RecognizerConfig, bundle: Bundle) -> dict:
    """What a configuration runs, for reports: variants as resolved, threads, providers."""
    providers = [p if isinstance(p, str) else p[0] for p in config.encoder_providers] or ["CPUExecutionProvider"]
    return {"encoder_precision": config.encoder_precision or bundle.manifest.encoder.precision,
            "decoder_variant": config.decoder_variant or bundle.manifest.decoder.default_variant,
            "encoder_threads": config.encoder_threads, "decoder_threads": config.decoder.n_threads,
            "encoder_providers": providers, "decoder_gpu_layers": config.decoder.n_gpu_layers,
            "partial_every_chunks": config.partial_every_chunks,
            # what runs: the Recognizer forces text mode on a family without a phoneme head
            "hotwords_mode": "text" if bundle.manifest.family == "qwen3-asr" else config.retrieval.mode.value}


# Bytes per KV element of llama.cpp's cache types (q8_0: 34 bytes per block of 32).
KV_BYTES = {"f32": 4.0, "f16": 2.0, "q8_0": 34 / 32}
RUNTIME_MB = 150  # Python, onnxruntime, llama.cpp libraries (measured RSS before any model; a hotword db comes on top)


def memory_estimate_mb(bundle: Bundle, config: RecognizerConfig, streams: int = 1) -> dict:
    """Estimated resident memory of a recognizer running `config` with `streams` streams: the encoder
    variant it loads (graph + external data; x2 for onnxruntime's arena and graph copies, measured
    1.9x on the full model), the decoder variant's weights, and per stream a KV cache of
    config.decoder.n_ctx cells of its kv_cache_type (width taken as the hidden size: an upper bound,
    Qwen3's grouped KV heads are narrower at 1.7B)."""
    spec = bundle.manifest.decoder
    encoder_mb = bundle.encoder_bytes(config.encoder_precision) / 2**20
    decoder_mb = bundle.decoder_file(config.decoder_variant).stat().st_size / 2**20
    kv_mb = 2 * spec.num_layers * spec.hidden_size * config.decoder.n_ctx * KV_BYTES[config.decoder.kv_cache_type] / 2**20
    parts = {"encoder_mb": round(2 * encoder_mb), "decoder_mb": round(decoder_mb),
             "kv_cache_mb": round(kv_mb * streams), "runtime_mb": RUNTIME_MB}
    parts["total_mb"] = sum(parts.values())
    return parts


def check_memory(need: dict, plan: Plan, available_mb: int = 0) -> tuple[bool, str]:
    """(fits, one line): the estimate against the plan's budget and, when known, free memory."""
    total = need["total_mb"]
    if total > plan.memory_budget_mb:
        return False, (f"needs ~{total} MB but the {plan.profile.name} budget is {plan.memory_budget_mb} MB: "
                       "use a smaller decoder variant (e.g. --decoder-variant Q4_K_M) or an INT8 encoder")
    if available_mb and total > available_mb:
        return False, f"needs ~{total} MB but only {available_mb} MB are free now: close other programs"
    return True, f"needs ~{total} MB of a {plan.memory_budget_mb} MB budget" + (
        f" ({available_mb} MB free)" if available_mb else "")
