"""Encoder variants of a windowed-encoder bundle (the Qwen3-ASR family): fp16 and int8-dynamic of
both graphs (front end and window), with the same converters as NIM4's encoder (quant/encoder_quant.py),
and a parity report: embeddings streamed through each variant against the fp32 pair, on seeded noise
(the same lengths as `import --verify`). Calibrated int8 (QDQ) is NIM4's only: it needs recorded feeds.
"""

from __future__ import annotations

import logging
import os
import tempfile
from pathlib import Path

import numpy as np

from nim4_edge.quant.encoder_quant import write_fp16, write_int8_dynamic
from nim4_edge.quant.gguf_quant import rewrite_manifest
from nim4_edge.runtime.bundle import Bundle, describe_file
from nim4_edge.runtime.errors import Nim4Error
from nim4_edge.runtime.qwen3_asr.encoder import WindowedEncoderSession, stream_samples

log = logging.getLogger(__name__)

WRITERS = {"fp16": write_fp16, "int8-dynamic": write_int8_dynamic}
PARITY_SECONDS = (0.3, 3.3, 9.71)


def quantize_windowed_encoder(bundle_path: Path, precisions: list[str]) -> dict:
    """Add the variants (manifest rewritten after each, files moved in whole) and report parity."""
    unknown = [p for p in precisions if p not in WRITERS]
    if unknown:
        raise Nim4Error(f"encoder precision(s) {unknown} not available for this family; choose from {', '.join(WRITERS)}")
    bundle = Bundle.load(bundle_path, family="qwen3-asr")
    source = bundle.manifest.encoder.graphs_for("fp32")
    report = {"bundle": str(bundle_path), "variants": {}}
    for precision in precisions:
        pair = {}
        with tempfile.TemporaryDirectory(prefix=".quant-", dir=bundle.path) as scratch:
            for role, file in source.items():
                name = file.replace(".onnx", f"-{precision}.onnx")
                log.info("encoder %s -> %s ...", file, name)
                WRITERS[precision](bundle.file(file), Path(scratch) / name)
                pair[role] = name
            written = sorted(Path(scratch).iterdir())
            for part in written:
                os.replace(part, bundle.file(part.name))
        graphs = dict(bundle.manifest.encoder.graphs) | {precision: pair}
        files = dict(bundle.manifest.files) | {p.name: describe_file(bundle.file(p.name)) for p in written}
        rewrite_manifest(bundle, {"encoder": {"graphs": graphs}, "files": files})
        bundle = Bundle.load(bundle_path, family="qwen3-asr")
    reference = WindowedEncoderSession(bundle, precision="fp32")
    rng = np.random.default_rng(0)
    audios = [(rng.standard_normal(int(s * 16000)) * 0.1).astype(np.float32) for s in PARITY_SECONDS]
    expected = [stream_samples(reference, a) for a in audios]
    for precision in precisions:
        session = WindowedEncoderSession(bundle, precision=precision)
        diffs = [float(np.abs(stream_samples(session, a) - e).max()) for a, e in zip(audios, expected)]
        scale = max(float(np.abs(e).max()) for e in expected)
        report["variants"][precision] = {"max_abs_diff": max(diffs), "max_abs_diff_relative": max(diffs) / scale,
                                         "files": bundle.manifest.encoder.graphs[precision],
                                         "bytes": sum(bundle.file(f).stat().st_size for f in bundle.manifest.encoder.graphs[precision].values())}
    return report
