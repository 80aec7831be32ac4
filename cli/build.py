"""The model-building commands: `init`, `export`, `verify`, `quantize` (need the export toolchain,
except decoder quantization)."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np

from nim4_edge.bench.evaluate import read_manifest
from nim4_edge.cli.common import check_output_dir, export_toolchain, print_json
from nim4_edge.quant import encoder_quant, gguf_quant, windowed_quant
from nim4_edge.runtime.audio import load_audio
from nim4_edge.runtime.bundle import Bundle, resolve_bundle
from nim4_edge.runtime.errors import EXIT_RUNTIME_FAILURE, Nim4Error
from nim4_edge.runtime.features import SAMPLE_RATE_HZ

# a re-export of an imported bundle must give back its weights: float32 rounding only (measured on the
# demo bundle: encoder 9.2e-7, from constants the exporter derives from parameters; decoder 0)
IMPORT_TOLERANCE = 1e-5


def cmd_init(args) -> int:
    check_output_dir(args.output, "-o")
    checkpoint = export_toolchain("nim4_edge.export.checkpoint")
    path = checkpoint.init_checkpoint(args.output, args.preset, args.seed, overwrite=args.overwrite,
                                      decoder_shape=args.decoder_shape)
    shape = f" with a {args.decoder_shape} decoder" if args.decoder_shape else ""
    print(f"wrote {args.preset} checkpoint{shape} (seed {args.seed}) to {path}")
    return 0


def _verify_options(args):
    verify = export_toolchain("nim4_edge.export.verify")
    return verify.VerifyOptions(
        tolerance=args.tolerance,
        wavs=tuple(Path(p) for p in args.wav),
        reference_left_chunks=args.reference_left_chunks,
        num_threads=args.threads,
        decoder=not args.encoder_only,
    )


def cmd_export(args) -> int:
    check_output_dir(args.output, "-o")
    bundle_export = export_toolchain("nim4_edge.export.bundle_export")
    options = _verify_options(args) if args.verify else None
    try:
        report = bundle_export.export_bundle(args.checkpoint, args.output, overwrite=args.overwrite, verify=args.verify,
                                             verify_options=options, decoder_type=args.decoder_type)
    except bundle_export.VerificationFailed as e:
        print_json(e.report)
        print(f"nim4-edge: {e}", file=sys.stderr)
        return EXIT_RUNTIME_FAILURE
    if report is not None:
        print_json(report)
    print(f"wrote bundle {args.output}", file=sys.stderr)
    return 0


def cmd_import(args) -> int:
    return cmd_import_qwen3_asr(args) if args.what == "qwen3-asr" else cmd_import_bundle(args)


def cmd_import_qwen3_asr(args) -> int:
    check_output_dir(args.output, "-o")
    if args.output.exists() and not args.overwrite:
        raise Nim4Error(f"{args.output} exists; pass --overwrite to replace it")
    if not args.source.is_dir():
        raise Nim4Error(f"{args.source}: not a folder; pass the downloaded Qwen3-ASR model folder (config.json, *.safetensors)")
    qwen3_asr = export_toolchain("nim4_edge.export.qwen3_asr")
    bundle = qwen3_asr.import_qwen3_asr(args.source, args.output, gguf_type=args.decoder_type, overwrite=args.overwrite)
    print(f"wrote bundle {args.output} (family qwen3-asr)", file=sys.stderr)
    if not args.verify:
        return 0
    verify = export_toolchain("nim4_edge.export.qwen3_asr_verify")
    report = verify.verify_bundle(args.source, bundle)
    print_json(report)
    if not report["passed"]:
        print("nim4-edge: the bundle differs from the transformers model beyond the tolerances (see the report)", file=sys.stderr)
        return EXIT_RUNTIME_FAILURE
    return 0


def cmd_import_bundle(args) -> int:
    check_output_dir(args.output, "-o")
    if args.output.exists() and not args.overwrite:
        raise Nim4Error(f"{args.output} exists; pass --overwrite to replace it")
    bundle_import = export_toolchain("nim4_edge.export.bundle_import")
    report = bundle_import.import_bundle(resolve_bundle(args.source), args.output, overwrite=args.overwrite)
    print_json(report)
    if report["encoder_max_abs_diff"] > IMPORT_TOLERANCE or report["decoder_max_abs_diff"] > IMPORT_TOLERANCE:
        print(f"nim4-edge: the re-exported weights differ from the bundle's by more than {IMPORT_TOLERANCE}", file=sys.stderr)
        return EXIT_RUNTIME_FAILURE
    print(f"wrote checkpoint {args.output} (exported again, it equals the bundle's weights)", file=sys.stderr)
    return 0


def cmd_verify(args) -> int:
    checkpoint = export_toolchain("nim4_edge.export.checkpoint")
    verify = export_toolchain("nim4_edge.export.verify")
    report = verify.verify_bundle(checkpoint.read_checkpoint(args.checkpoint), args.bundle, _verify_options(args))
    print_json(report)
    if not report["passed"]:
        failed = [part for part in ("encoder", "decoder") if part in report and not report[part]["passed"]]
        print(f"nim4-edge: parity FAILED for the {' and '.join(failed)}: differences exceed the tolerance", file=sys.stderr)
        return EXIT_RUNTIME_FAILURE
    return 0


def cmd_quantize(args) -> int:
    if not args.decoder and not args.encoder:
        raise Nim4Error("nothing to do: pass --encoder PRECISIONS and/or --decoder LEVELS")
    report = {}
    if args.encoder and Bundle.load(args.bundle, family=None).manifest.family == "qwen3-asr":
        precisions = [p.strip() for p in args.encoder.split(",")]
        if "int8-qdq" in precisions and not args.calibration:
            print("nim4-edge: warning: no --calibration audio; int8-qdq scales come from seeded noise", file=sys.stderr)
        audios = _calibration_audio(args.calibration, args.calibration_limit) if args.calibration else None
        report["encoder"] = windowed_quant.quantize_windowed_encoder(args.bundle, precisions, audios)
    elif args.encoder:
        audios = _calibration_audio(args.calibration, args.calibration_limit)
        report["encoder"] = encoder_quant.quantize_encoder(args.bundle, [p.strip() for p in args.encoder.split(",")], audios)
    if args.decoder:
        report["decoder"] = gguf_quant.quantize_bundle(args.bundle, gguf_quant.parse_levels(args.decoder),
                                                       make_default=args.make_default,
                                                       agreement=not args.no_agreement, threads=args.threads)
    print_json(report)
    failed = {p: v["failed"] for p, v in report.get("encoder", {}).get("variants", {}).items() if "failed" in v}
    for precision, reason in failed.items():
        print(f"nim4-edge: encoder {precision} could not be built ({reason}); the other variants were written",
              file=sys.stderr)
    return 1 if failed else 0


def _calibration_audio(paths: list[Path], limit: int) -> list:
    """16 kHz audio for calibration and parity: WAV files, or the audio of a test-set manifest (.jsonl);
    without any, synthetic utterances (enough for parity, poor for INT8 scales)."""
    files: list[Path] = []
    for path in paths:
        if path.suffix == ".jsonl":
            files += [item.audio for item in read_manifest(path) if item.text]
        else:
            files.append(path)
    if not files:
        print("nim4-edge: warning: no --calibration audio; using synthetic utterances", file=sys.stderr)
        rng = np.random.default_rng(0)
        return [(0.1 * rng.standard_normal(int(s * SAMPLE_RATE_HZ))).astype(np.float32) for s in (1.3, 2.9, 4.1)]
    step = max(1, len(files) // limit) if limit else 1
    return [load_audio(f, SAMPLE_RATE_HZ) for f in files[::step][: limit or None]]


def _add_verify_flags(p: argparse.ArgumentParser) -> None:
    p.add_argument("--tolerance", type=float, default=1e-4, help="largest allowed |difference| (default 1e-4)")
    p.add_argument("--wav", action="append", default=[], metavar="FILE",
                   help="also stream this PCM WAV file, resampled to the model rate (repeatable); synthetic utterances are always used")
    p.add_argument("--reference-left-chunks", type=int, default=None, metavar="N",
                   help="compare against a reference with N left chunks instead of the bundle's own "
                        "(a negative control: any other N must fail)")
    p.add_argument("--threads", type=int, default=0, help="onnxruntime threads (0 = all cores)")
    p.add_argument("--encoder-only", action="store_true", help="skip the decoder check (transformers vs llama.cpp)")




def add_commands(sub) -> None:
    p = sub.add_parser("init", help="write a random-weight checkpoint of the tiny, demo or full NIM4 shape",
                       description="Write a random-weight checkpoint (config, acoustic safetensors, HF Qwen3 "
                                   "folder with tokenizer, phoneme inventory, CMVN). 'full' is ~600M encoder + "
                                   "Qwen3-1.7B: ~6 GB on disk, a few minutes on 2 cores.")
    p.add_argument("--preset", choices=("tiny", "demo", "full"), default="tiny",
                   help="model size (default tiny; demo = the shipped demo model's shape, see recipes/demo)")
    p.add_argument("--seed", type=int, default=0, help="random seed (default 0)")
    p.add_argument("--decoder-shape", choices=("qwen3-0.6b", "qwen3-1.7b"), default=None,
                   help="replace the preset's decoder with a published Qwen3 shape (e.g. tiny encoder + "
                        "real-size decoder, for decoder speed tests)")
    p.add_argument("-o", "--output", type=Path, required=True, help="checkpoint directory to create")
    p.add_argument("--overwrite", action="store_true", help="replace an existing directory")
    p.set_defaults(func=cmd_init)

    p = sub.add_parser("export", help="export a checkpoint to a bundle (manifest, ONNX encoder step, GGUF decoder)",
                       description="Export CHECKPOINT to a bundle directory: manifest.json, encoder.onnx and "
                                   "decoder-<type>.gguf. With --verify the streaming ONNX graph and the GGUF are "
                                   "checked against the PyTorch/transformers reference before the bundle is kept.")
    p.add_argument("checkpoint", type=Path)
    p.add_argument("-o", "--output", type=Path, required=True, help="bundle directory to create")
    p.add_argument("--overwrite", action="store_true", help="replace an existing bundle")
    p.add_argument("--verify", action="store_true", help="run the parity checks; keep the bundle only if they pass")
    p.add_argument("--decoder-type", choices=("f32", "f16"), default=None,
                   help="GGUF precision of the decoder (default: f32 for float32 weights, f16 for bf16/f16)")
    _add_verify_flags(p)
    p.set_defaults(func=cmd_export)

    p = sub.add_parser("import", help="a bundle back into a checkpoint, or a Qwen3-ASR model into a bundle",
                       description="WHAT is `bundle`: SOURCE (a bundle)'s fp32 ONNX encoder and f32/f16 GGUF decoder "
                                   "become a checkpoint (acoustic safetensors, HF Qwen3 folder with its tokenizer "
                                   "rebuilt, CMVN, phonemes) that `nim4-edge export` turns back into the same weights: "
                                   "checked before the command ends (export/bundle_import.py). "
                                   "WHAT is `qwen3-asr`: SOURCE (a downloaded transformers-format Qwen3-ASR folder: "
                                   "config.json, *.safetensors, tokenizer.json) becomes a bundle of the qwen3-asr "
                                   "family: the audio encoder as two ONNX graphs (chunk front end, 8 s window), the "
                                   "text model as GGUF (export/qwen3_asr.py); --verify compares it with transformers.",
                       epilog="Examples: nim4-edge import bundle runtime/demo_bundle -o work/demo/v1/checkpoint; "
                              "nim4-edge import qwen3-asr ~/models/Qwen3-ASR-0.6B-hf -o bundles/qwen3-asr-0.6b --verify")
    p.add_argument("what", choices=("bundle", "qwen3-asr"), help="what to import")
    p.add_argument("source", type=Path, help="bundle directory (bundle) or Hugging Face model folder (qwen3-asr)")
    p.add_argument("-o", "--output", type=Path, required=True, help="directory to create (checkpoint or bundle)")
    p.add_argument("--overwrite", action="store_true", help="replace an existing directory")
    p.add_argument("--decoder-type", choices=("f32", "f16"), default=None,
                   help="qwen3-asr: GGUF precision (default: f32 for float32 weights, f16 for bf16/f16)")
    p.add_argument("--verify", action="store_true",
                   help="qwen3-asr: compare features, encoder, decoder logits and 32 greedy tokens with transformers")
    p.set_defaults(func=cmd_import)

    p = sub.add_parser("quantize", help="add quantized encoders (fp16, int8) and decoder GGUFs (Q8_0, Q4_K_M, ...) to a bundle",
                       description="Encoder: FP16, INT8 dynamic and INT8 static QDQ ONNX from the fp32 step, with a "
                                   "parity report (largest differences, phoneme error rate vs fp32). Decoder: llama.cpp "
                                   "quantization of the f32/f16 GGUF with a greedy agreement report. Each variant is "
                                   "recorded in the manifest. A qwen3-asr bundle: both encoder graphs, reported as the "
                                   "largest difference of the streamed embeddings.")
    p.add_argument("bundle", type=Path)
    p.add_argument("--encoder", metavar="PRECISIONS", help="comma-separated: fp16,int8-dynamic,int8-qdq")
    p.add_argument("--calibration", type=Path, nargs="*", default=[], metavar="WAV_OR_MANIFEST",
                   help="audio for INT8 scales and the parity report: WAV files or a test-set manifest (.jsonl)")
    p.add_argument("--calibration-limit", type=int, default=40, help="at most this many utterances (default 40)")
    p.add_argument("--decoder", metavar="LEVELS", help="comma-separated: Q8_0,Q6_K,Q5_K_M,Q4_K_M,Q4_0")
    p.add_argument("--make-default", metavar="LEVEL", help="make this variant the bundle's default decoder")
    p.add_argument("--no-agreement", action="store_true", help="skip the greedy agreement check")
    p.add_argument("--threads", type=int, default=0, help="threads (0 = all cores)")
    p.set_defaults(func=cmd_quantize)

    p = sub.add_parser("verify", help="stream utterances through a bundle and compare with the PyTorch reference",
                       description="Encoder: streaming ONNX vs the PyTorch reference with the chunk mask. Decoder: "
                                   "llama.cpp vs transformers logits and 32 greedy tokens. JSON report; exit 1 if off.")
    p.add_argument("checkpoint", type=Path)
    p.add_argument("bundle", type=Path)
    _add_verify_flags(p)
    p.set_defaults(func=cmd_verify)

