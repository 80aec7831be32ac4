"""Encoder quantization from the exported fp32 ONNX step, with a parity report against fp32.

    nim4-edge quantize BUNDLE --encoder fp16,int8-dynamic,int8-qdq [--calibration MANIFEST|WAV...]

Variants (each a complete ONNX step with the same float32 inputs and outputs, so the runtime and the
caches are unchanged; listed in the manifest's encoder.variants):
  fp16          weights and activations in float16 (onnxruntime.transformers.float16), inputs and
                outputs kept float32; numerically fragile ops stay float32 (FP16_KEEP_FP32): the
                normalizations (mean/variance reductions), softmax and the log-softmax of the CTC head.
                For GPUs / TensorRT: the CPU provider computes most float16 ops by casting back.
  int8-dynamic  int8 weights (per output channel), activations quantized on the fly per tensor
                (onnxruntime quantize_dynamic, MatMul/Gemm): the CPU choice, no calibration needed.
  int8-qdq      static INT8 in QDQ form (QuantizeLinear/DequantizeLinear pairs, symmetric int8
                weights per channel and activations per tensor), scales calibrated on real encoder
                inputs (fbank windows + caches recorded while streaming calibration audio): what
                TensorRT's INT8 consumes.
Why not optimum: its ORTQuantizer / AutoQuantizationConfig wrap these same onnxruntime calls, but its
calibration path expects a Hugging Face dataset and model folder; our calibration inputs are streaming
steps with caches, which onnxruntime's CalibrationDataReader takes directly.

Parity (`parity_report`): the same utterances stream through fp32 and each variant in the runtime's
EncoderStream; reported: largest |difference| of the phoneme log-probs and of the adaptor embeddings,
and the phoneme error rate of each variant's greedy CTC phonemes against fp32's.
"""

from __future__ import annotations

import logging
import os
import tempfile
import time
from pathlib import Path

import numpy as np
from rapidfuzz.distance import Levenshtein

from nim4_edge.quant.gguf_quant import rewrite_manifest
from nim4_edge.runtime.bundle import Bundle, describe_file
from nim4_edge.runtime.encoder import EncoderSession, EncoderStream
from nim4_edge.runtime.errors import Nim4Error
from nim4_edge.runtime.features import OnlineFbank

log = logging.getLogger(__name__)

ENCODER_PRECISIONS = ("fp16", "int8-dynamic", "int8-qdq")
FP16_KEEP_FP32 = ["LayerNormalization", "ReduceMean", "Pow", "Sqrt", "Div", "Softmax", "LogSoftmax", "Exp", "Log",
                  "Range", "CumSum", "Where"]


def encoder_file_name(precision: str) -> str:
    return f"encoder-{precision}.onnx"


def _external(path: Path) -> bool:
    return path.with_name(path.name + ".data").exists() or path.stat().st_size > 1.9e9


def write_fp16(src: Path, dst: Path) -> None:
    import onnx  # optional dependency: imported only when this path runs
    from onnxruntime.transformers.float16 import DEFAULT_OP_BLOCK_LIST, convert_float_to_float16

    if _external(src):
        # Over 2 GB (the full encoder): the converter's own shape inference serializes the model in
        # memory, which protobuf refuses. Infer shapes file to file beside the source (its external
        # data resolves there), then convert without inferring again.
        inferred = src.with_name(f".{src.stem}-shapes.onnx")
        try:
            onnx.shape_inference.infer_shapes_path(str(src), str(inferred))
            model = onnx.load(str(inferred))
        finally:
            inferred.unlink(missing_ok=True)
        model = convert_float_to_float16(model, keep_io_types=True, disable_shape_infer=True,
                                         op_block_list=DEFAULT_OP_BLOCK_LIST + FP16_KEEP_FP32)
    else:
        model = convert_float_to_float16(onnx.load(str(src)), keep_io_types=True,
                                         op_block_list=DEFAULT_OP_BLOCK_LIST + FP16_KEEP_FP32)
    onnx.save(model, str(dst), save_as_external_data=_external(src), location=dst.name + ".data")


def matmuls_without_2d_weights(src: Path) -> list[str]:
    """MatMul nodes whose constant operand is not a 2-D weight matrix (or that have none): onnxruntime's
    per-channel integer kernels only take 2-D weights, so these stay float."""
    import onnx  # optional dependency: imported only when this path runs

    model = onnx.load(str(src), load_external_data=False)
    shapes = {init.name: len(init.dims) for init in model.graph.initializer}
    return [n.name for n in model.graph.node
            if n.op_type == "MatMul" and shapes.get(n.input[1]) != 2]


def write_int8_dynamic(src: Path, dst: Path) -> None:
    from onnxruntime.quantization import (  # optional dependency: imported only when this path runs
        QuantType,
        quantize_dynamic,
    )

    quantize_dynamic(str(src), str(dst), weight_type=QuantType.QInt8, per_channel=True,
                     op_types_to_quantize=["MatMul", "Gemm"], nodes_to_exclude=matmuls_without_2d_weights(src),
                     use_external_data_format=_external(src))


class _Feeds:
    """onnxruntime CalibrationDataReader over recorded encoder step inputs."""

    def __init__(self, feeds: list[dict]):
        self._it = iter(feeds)

    def get_next(self):
        return next(self._it, None)

    def rewind(self):  # noqa: D401 - part of the reader protocol in newer onnxruntime
        pass


def write_int8_qdq(src: Path, dst: Path, feeds: list[dict]) -> None:
    from onnxruntime.quantization import (  # optional dependency: imported only when this path runs
        CalibrationMethod,
        QuantFormat,
        QuantType,
        quantize_static,
    )

    if not feeds:
        raise Nim4Error("int8-qdq needs calibration audio (--calibration MANIFEST or WAV files)")
    quantize_static(
        str(src), str(dst), _Feeds(feeds), quant_format=QuantFormat.QDQ, per_channel=True,
        activation_type=QuantType.QInt8, weight_type=QuantType.QInt8, op_types_to_quantize=["MatMul", "Gemm"],
        nodes_to_exclude=matmuls_without_2d_weights(src),
        calibrate_method=CalibrationMethod.MinMax, use_external_data_format=_external(src),
        # ranges merged every 16 runs: onnxruntime otherwise keeps every run's intermediate tensors to
        # the end, memory growing with the feeds (with it, the 0.6B Qwen3-ASR quantize peaks at 4.3 GB)
        extra_options={"ActivationSymmetric": True, "WeightSymmetric": True, "CalibMaxIntermediateOutputs": 16},
    )


# --- audio through the runtime's stream ------------------------------------------------------------

def utterance_frames(bundle, audios: list[np.ndarray]) -> list[np.ndarray]:
    """CMVN'd fbank frames of each 16 kHz utterance, as the runtime computes them."""
    manifest = bundle.manifest
    return [manifest.cmvn.apply(OnlineFbank(manifest.fbank).accept(np.asarray(a, np.float32))) for a in audios]


def stream_outputs(session, frames: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(log-probs (T', P), embeddings (E, D)) of one utterance through EncoderStream (exact flush)."""
    stream = EncoderStream(session)
    chunks = stream.accept_frames(frames) + stream.flush()
    return (np.concatenate([c.phoneme_log_probs for c in chunks]), np.concatenate([c.embeddings for c in chunks]))


def greedy_phonemes(log_probs: np.ndarray, blank: int = 0) -> list[int]:
    out, prev = [], blank
    for label in log_probs.argmax(axis=1).tolist():
        if label != prev and label != blank:
            out.append(label)
        prev = label
    return out


def record_calibration_feeds(bundle, frames: list[np.ndarray], max_steps: int = 200) -> list[dict]:
    session = EncoderSession(bundle, precision="fp32")
    session.recorded_feeds = []
    for f in frames:
        stream_outputs(session, f)
        if len(session.recorded_feeds) >= max_steps:
            break
    return [{k: np.array(v, copy=True) for k, v in feeds.items()} for feeds in session.recorded_feeds[:max_steps]]


def parity_report(bundle, precisions: list[str], frames: list[np.ndarray]) -> dict:
    """Each variant against fp32 on the same utterances (see the module docstring)."""
    reference = EncoderSession(bundle, precision="fp32", num_threads=1)
    ref = [stream_outputs(reference, f) for f in frames]
    report = {}
    for precision in precisions:
        session = EncoderSession(bundle, precision=precision, num_threads=1)
        lp_diff = emb_diff = 0.0
        # relative error of the embeddings, ||diff|| / ||fp32|| over all frames: their magnitude follows
        # the weights (random, trained, full size), so an absolute difference alone says little
        emb_err_sq = emb_ref_sq = 0.0
        edits = total = 0
        t0 = time.perf_counter()
        for f, (ref_lp, ref_emb) in zip(frames, ref):
            lp, emb = stream_outputs(session, f)
            lp_diff = max(lp_diff, float(np.abs(lp - ref_lp).max()))
            emb_diff = max(emb_diff, float(np.abs(emb - ref_emb).max()))
            emb_err_sq += float(np.square(emb.astype(np.float64) - ref_emb).sum())
            emb_ref_sq += float(np.square(ref_emb.astype(np.float64)).sum())
            want = greedy_phonemes(ref_lp, bundle.manifest.phonemes.blank_id)
            edits += Levenshtein.distance(want, greedy_phonemes(lp, bundle.manifest.phonemes.blank_id))
            total += len(want)
        report[precision] = {
            "max_abs_diff_log_probs": lp_diff, "max_abs_diff_embeddings": emb_diff,
            "rel_error_embeddings": float(np.sqrt(emb_err_sq / emb_ref_sq)) if emb_ref_sq else None,
            "phoneme_error_rate_vs_fp32": round(100.0 * edits / total, 2) if total else None,
            "reference_phonemes": total, "seconds": round(time.perf_counter() - t0, 2),
        }
    return report


def quantize_encoder(bundle_path: Path, precisions: list[str], audios: list[np.ndarray],
                     max_calibration_steps: int = 200) -> dict:
    """Add encoder variants to a bundle (manifest rewritten after each) and report parity on `audios`."""
    unknown = [p for p in precisions if p not in ENCODER_PRECISIONS]
    if unknown:
        raise Nim4Error(f"unknown encoder precision(s) {unknown}; choose from {', '.join(ENCODER_PRECISIONS)}")
    bundle = Bundle.load(bundle_path)
    spec = bundle.manifest.encoder
    if spec.precision != "fp32" and "fp32" not in spec.variants:
        raise Nim4Error(f"{bundle_path}: no fp32 encoder to quantize from; re-export the bundle")
    src = bundle.file(spec.file_for("fp32"))
    frames = utterance_frames(bundle, audios)
    report = {"bundle": str(bundle_path), "variants": {}}
    for precision in precisions:
        name = encoder_file_name(precision)
        t0 = time.perf_counter()
        log.info("encoder %s -> %s ...", src.name, name)
        # Written under its final name in a scratch folder (external data refers to it by name), then
        # moved in: an interrupted run leaves nothing half-written in the bundle.
        with tempfile.TemporaryDirectory(prefix=".quant-", dir=bundle.path) as scratch:
            tmp = Path(scratch) / name
            try:
                if precision == "fp16":
                    write_fp16(src, tmp)
                elif precision == "int8-dynamic":
                    write_int8_dynamic(src, tmp)
                else:
                    write_int8_qdq(src, tmp, record_calibration_feeds(bundle, frames, max_calibration_steps))
            except Nim4Error:
                raise
            except Exception as e:  # onnx/onnxruntime raise many types: this variant failed, the others go on
                reason = f"{type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}"
                log.error("encoder %s failed: %s", precision, reason)
                report["variants"][precision] = {"failed": reason}
                continue
            written = sorted(Path(scratch).glob(name + "*"))
            for part in written:
                os.replace(part, bundle.file(part.name))
        variants = dict(bundle.manifest.encoder.variants) | {precision: name}
        files = dict(bundle.manifest.files) | {p.name: describe_file(bundle.file(p.name)) for p in written}
        rewrite_manifest(bundle, {"encoder": {"variants": variants}, "files": files})
        bundle = Bundle.load(bundle_path)
        report["variants"][precision] = {"file": name, "bytes": sum(files[p.name]["bytes"] for p in written),
                                         "seconds": round(time.perf_counter() - t0, 1)}
    bundle = Bundle.load(bundle_path)
    report["parity"] = parity_report(bundle, [p for p in precisions if "failed" not in report["variants"][p]], frames)
    return report
