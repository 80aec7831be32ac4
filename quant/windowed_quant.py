"""Encoder variants of a windowed-encoder bundle (the Qwen3-ASR family): fp16, int8-dynamic and
int8-qdq of both graphs (front end and window), with the same converters as NIM4's encoder
(quant/encoder_quant.py), and a parity report: embeddings streamed through each variant against the
fp32 pair on the same audio (the calibration audio when given, else seeded noise of the lengths
`import --verify` streams).

int8-qdq is calibrated on the graphs' real inputs: the calibration audio is streamed through the fp32
pair in 640 ms updates as the runtime does, and every front-end chunk and every window run (partial
windows included, they are what the runtime computes most) is recorded, at most MAX_FEEDS per graph.
"""

from __future__ import annotations

import logging
import os
import tempfile
from pathlib import Path

import numpy as np

from nim4_edge.quant.encoder_quant import write_fp16, write_int8_dynamic, write_int8_qdq
from nim4_edge.quant.gguf_quant import rewrite_manifest
from nim4_edge.runtime.bundle import Bundle, describe_file
from nim4_edge.runtime.errors import Nim4Error
from nim4_edge.runtime.qwen3_asr.encoder import WindowedEncoderSession, stream_samples

log = logging.getLogger(__name__)

WRITERS = {"fp16": write_fp16, "int8-dynamic": write_int8_dynamic}  # and int8-qdq, which needs feeds
PRECISIONS = (*WRITERS, "int8-qdq")
PARITY_SECONDS = (0.3, 3.3, 9.71)
MAX_FEEDS = 160  # per graph: MinMax ranges settle within tens of runs; memory grows with each


def record_calibration_feeds(bundle: Bundle, audios: list[np.ndarray]) -> dict[str, list[dict]]:
    """Every input the fp32 pair sees while the audio streams (see the module docstring), evenly
    thinned to MAX_FEEDS per graph."""
    session = WindowedEncoderSession(bundle, precision="fp32")
    session.recorded_feeds = {"front_end": [], "window": []}
    for audio in audios:
        stream_samples(session, audio)
    return {role: feeds[::max(1, -(-len(feeds) // MAX_FEEDS))] for role, feeds in session.recorded_feeds.items()}


def quantize_windowed_encoder(bundle_path: Path, precisions: list[str], audios: list[np.ndarray] | None = None) -> dict:
    """Add the variants (manifest rewritten after each, files moved in whole) and report parity on
    `audios` (None: seeded noise; int8-qdq is then calibrated on noise, which the CLI warns about)."""
    unknown = [p for p in precisions if p not in PRECISIONS]
    if unknown:
        raise Nim4Error(f"encoder precision(s) {unknown} not available for this family; choose from {', '.join(PRECISIONS)}")
    bundle = Bundle.load(bundle_path, family="qwen3-asr")
    source = bundle.manifest.encoder.graphs_for("fp32")
    if not audios:
        rng = np.random.default_rng(0)
        audios = [(rng.standard_normal(int(s * 16000)) * 0.1).astype(np.float32) for s in PARITY_SECONDS]
    feeds = record_calibration_feeds(bundle, audios) if "int8-qdq" in precisions else {}
    report = {"bundle": str(bundle_path), "variants": {}}
    for precision in precisions:
        pair = {}
        with tempfile.TemporaryDirectory(prefix=".quant-", dir=bundle.path) as scratch:
            for role, file in source.items():
                name = file.replace(".onnx", f"-{precision}.onnx")
                log.info("encoder %s -> %s ...", file, name)
                if precision == "int8-qdq":
                    write_int8_qdq(bundle.file(file), Path(scratch) / name, feeds[role])
                else:
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
    expected = [stream_samples(reference, a) for a in audios]
    for precision in precisions:
        session = WindowedEncoderSession(bundle, precision=precision)
        diffs = [float(np.abs(stream_samples(session, a) - e).max()) for a, e in zip(audios, expected)]
        scale = max(float(np.abs(e).max()) for e in expected)
        report["variants"][precision] = {"max_abs_diff": max(diffs), "max_abs_diff_relative": max(diffs) / scale,
                                         "files": bundle.manifest.encoder.graphs[precision],
                                         "bytes": sum(bundle.file(f).stat().st_size for f in bundle.manifest.encoder.graphs[precision].values())}
    return report
