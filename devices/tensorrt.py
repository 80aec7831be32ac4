"""TensorRT engines for the encoder step, cached next to the bundle.

    key = engine_key(device="NVIDIA Jetson Orin NX ...", trt_version="10.3.0", onnx_sha256=..., precision="fp16")
    path = build_engine(bundle, plan, device_name)     # BUNDLE/engines/<key>/encoder.engine (+ timing cache)

The key covers everything that makes an engine invalid: the device model (engines are specific to a
GPU), the TensorRT version (engines do not load across versions), the ONNX file's sha256, the
precision and the DLA core. A bundle copied to another device therefore never loads a stale engine.

Two ways to run the encoder on TensorRT:
  1. onnxruntime's TensorRT execution provider with its engine cache in the same keyed folder
     (Plan.ort_providers(engine_cache=...)): the runtime's path; falls back per node to CUDA/CPU.
  2. the engine built here with the `tensorrt` Python API: what `nim4-edge devices --build-engine`
     writes, for INT8 (the QDQ model from quant/ carries its own scales; no calibrator) and DLA.
Which is lighter must be measured on a device; see the README ('Devices') for what was measured.
"""

from __future__ import annotations

import hashlib
import json
import logging
import re
import time
from pathlib import Path

from nim4_edge.runtime.atomic import write_bytes_atomic, write_text_atomic
from nim4_edge.runtime.errors import Nim4Error

log = logging.getLogger(__name__)

ENGINE_DIR = "engines"


class TensorRTError(Nim4Error):
    """TensorRT missing or an engine that cannot be built."""


def _slug(text: str) -> str:
    return re.sub(r"[^a-z0-9]+", "-", text.lower()).strip("-")[:40]


def engine_key(device: str, trt_version: str, onnx_sha256: str, precision: str, dla_core: int = -1) -> str:
    """Folder name for one engine: readable prefix + a hash of every input that invalidates it."""
    payload = json.dumps([device, trt_version, onnx_sha256, precision, dla_core])
    digest = hashlib.sha256(payload.encode()).hexdigest()[:16]
    dla = f"-dla{dla_core}" if dla_core >= 0 else ""
    return f"{_slug(device)}-trt{trt_version}-{precision}{dla}-{digest}"


def engine_dir(bundle_dir: Path, key: str) -> Path:
    return Path(bundle_dir) / ENGINE_DIR / key


def tensorrt_version() -> str | None:
    try:
        import tensorrt  # optional dependency: imported only when this path runs

        return tensorrt.__version__
    except ImportError:
        return None


def build_engine(onnx_path: Path, out_dir: Path, precision: str, dla_core: int = -1, workspace_mb: int = 1024) -> Path:
    """Build and serialize an engine with the tensorrt Python API (TensorRT 8.6+ / 10). Returns its path.
    Written through a temporary file; the timing cache is kept beside it to speed up rebuilds."""
    try:
        import tensorrt as trt  # optional dependency: imported only when this path runs
    except ImportError:
        raise TensorRTError("the tensorrt Python package is missing (on Jetson it comes with JetPack: "
                            "apt install python3-libnvinfer)") from None
    logger = trt.Logger(trt.Logger.WARNING)
    builder = trt.Builder(logger)
    network = builder.create_network(0)  # explicit batch (the only mode in TensorRT 10)
    parser = trt.OnnxParser(network, logger)
    if not parser.parse_from_file(str(onnx_path)):
        errors = "; ".join(str(parser.get_error(i)) for i in range(parser.num_errors))
        raise TensorRTError(f"{onnx_path}: TensorRT cannot parse it: {errors}")
    config = builder.create_builder_config()
    config.set_memory_pool_limit(trt.MemoryPoolType.WORKSPACE, workspace_mb << 20)
    if precision in ("fp16", "int8"):
        config.set_flag(trt.BuilderFlag.FP16)
    if precision == "int8":
        config.set_flag(trt.BuilderFlag.INT8)  # scales come from the QDQ nodes of the INT8 ONNX
    if dla_core >= 0:
        config.default_device_type = trt.DeviceType.DLA
        config.DLA_core = dla_core
        config.set_flag(trt.BuilderFlag.GPU_FALLBACK)
    out_dir.mkdir(parents=True, exist_ok=True)
    cache_file = out_dir / "timing.cache"
    cache = config.create_timing_cache(cache_file.read_bytes() if cache_file.is_file() else b"")
    config.set_timing_cache(cache, ignore_mismatch=False)
    t0 = time.perf_counter()
    serialized = builder.build_serialized_network(network, config)
    if serialized is None:
        raise TensorRTError(f"{onnx_path}: TensorRT could not build a {precision} engine (see its log above)")
    engine = out_dir / "encoder.engine"
    write_bytes_atomic(engine, bytes(serialized))
    write_bytes_atomic(cache_file, bytes(config.get_timing_cache().serialize()))
    write_text_atomic(out_dir / "engine.json", json.dumps({
        "onnx": str(onnx_path), "precision": precision, "dla_core": dla_core, "tensorrt": trt.__version__,
        "build_s": round(time.perf_counter() - t0, 1)}) + "\n")
    log.info("built %s in %.1f s", engine, time.perf_counter() - t0)
    return engine
