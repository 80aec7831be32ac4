"""`nim4-edge`: the command line. Library code raises; only this module prints and exits.

Exit codes: 0 success, 1 a check ran and failed (e.g. verification out of tolerance), 2 bad input
(one line on stderr naming the problem and the fix), 130 interrupted.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
from pathlib import Path

import numpy as np

from nim4_edge.runtime import __version__
from nim4_edge.runtime.errors import Nim4Error
from nim4_edge.runtime.hotwords import HOTWORD_MODES

EXIT_CHECK_FAILED = 1
EXIT_BAD_INPUT = 2

EXPORT_EXTRA_HINT = "pip install 'nim4-edge[export]'"


def _export_module(name: str):
    """Import an export-time module; they need torch, which the on-device install does not have."""
    import importlib

    try:
        return importlib.import_module(f"nim4_edge.export.{name}")
    except ModuleNotFoundError as e:
        if e.name and e.name.split(".")[0] in {"torch", "transformers", "safetensors", "onnx", "onnxscript", "tokenizers"}:
            raise Nim4Error(f"this command needs the export toolchain ({e.name} is not installed): {EXPORT_EXTRA_HINT}") from None
        raise


def _print_json(data: dict) -> None:
    print(json.dumps(data, indent=2, ensure_ascii=False))


def _print_report(report: dict, table) -> int:
    """A benchmark's figures: JSON on stdout (for machines), a readable table on stderr (for people)."""
    _print_json(report)
    print(table(report), file=sys.stderr)
    return 0


def cmd_init(args) -> int:
    checkpoint = _export_module("checkpoint")
    path = checkpoint.init_checkpoint(args.output, args.preset, args.seed, overwrite=args.overwrite,
                                      decoder_shape=args.decoder_shape)
    shape = f" with a {args.decoder_shape} decoder" if args.decoder_shape else ""
    print(f"wrote {args.preset} checkpoint{shape} (seed {args.seed}) to {path}")
    return 0


def _verify_options(args):
    verify = _export_module("verify")
    return verify.VerifyOptions(
        tolerance=args.tolerance,
        wavs=tuple(Path(p) for p in args.wav),
        reference_left_chunks=args.reference_left_chunks,
        num_threads=args.threads,
        decoder=not args.encoder_only,
    )


def cmd_export(args) -> int:
    bundle_export = _export_module("bundle_export")
    options = _verify_options(args) if args.verify else None
    try:
        report = bundle_export.export_bundle(args.checkpoint, args.output, overwrite=args.overwrite, verify=args.verify,
                                             verify_options=options, decoder_type=args.decoder_type)
    except bundle_export.VerificationFailed as e:
        _print_json(e.report)
        print(f"nim4-edge: {e}", file=sys.stderr)
        return EXIT_CHECK_FAILED
    if report is not None:
        _print_json(report)
    print(f"wrote bundle {args.output}", file=sys.stderr)
    return 0


def cmd_verify(args) -> int:
    checkpoint = _export_module("checkpoint")
    verify = _export_module("verify")
    report = verify.verify_bundle(checkpoint.read_checkpoint(args.checkpoint), args.bundle, _verify_options(args))
    _print_json(report)
    if not report["passed"]:
        failed = [part for part in ("encoder", "decoder") if part in report and not report[part]["passed"]]
        print(f"nim4-edge: parity FAILED for the {' and '.join(failed)}: differences exceed the tolerance", file=sys.stderr)
        return EXIT_CHECK_FAILED
    return 0


def cmd_quantize(args) -> int:
    from nim4_edge.quant import gguf_quant

    if not args.decoder and not args.encoder:
        raise Nim4Error("nothing to do: pass --encoder PRECISIONS and/or --decoder LEVELS")
    report = {}
    if args.encoder:
        from nim4_edge.quant import encoder_quant

        audios = _calibration_audio(args.calibration, args.calibration_limit)
        report["encoder"] = encoder_quant.quantize_encoder(args.bundle, [p.strip() for p in args.encoder.split(",")], audios)
    if args.decoder:
        report["decoder"] = gguf_quant.quantize_bundle(args.bundle, gguf_quant.parse_levels(args.decoder),
                                                       make_default=args.make_default,
                                                       agreement=not args.no_agreement, threads=args.threads)
    _print_json(report)
    failed = {p: v["failed"] for p, v in report.get("encoder", {}).get("variants", {}).items() if "failed" in v}
    for precision, reason in failed.items():
        print(f"nim4-edge: encoder {precision} could not be built ({reason}); the other variants were written",
              file=sys.stderr)
    return 1 if failed else 0


def _calibration_audio(paths: list[Path], limit: int) -> list:
    """16 kHz audio for calibration and parity: WAV files, or the audio of a test-set manifest (.jsonl);
    without any, synthetic utterances (enough for parity, poor for INT8 scales)."""
    from nim4_edge.runtime.audio import load_audio

    files: list[Path] = []
    for path in paths:
        if path.suffix == ".jsonl":
            from nim4_edge.runtime.evaluate import read_manifest

            files += [item.audio for item in read_manifest(path) if item.text]
        else:
            files.append(path)
    if not files:
        print("nim4-edge: warning: no --calibration audio; using synthetic utterances", file=sys.stderr)
        from nim4_edge.runtime.features import SAMPLE_RATE_HZ

        rng = np.random.default_rng(0)
        return [(0.1 * rng.standard_normal(int(s * SAMPLE_RATE_HZ))).astype(np.float32) for s in (1.3, 2.9, 4.1)]
    step = max(1, len(files) // limit) if limit else 1
    return [load_audio(f, 16000) for f in files[::step][: limit or None]]


def cmd_bench_quant(args) -> int:
    from nim4_edge.quant import bench_quant
    from nim4_edge.runtime.cli_listen import resolve_bundle
    from nim4_edge.runtime.report import format_table

    if args.testset is None:
        raise Nim4Error("nim4-edge bench needs --testset MANIFEST (or a component: bench encoder|decoder|runtime|vad|hotwords)")
    results = bench_quant.bench(resolve_bundle(args.bundle), args.testset, _split(args.encoder), _split(args.decoder),
                                args.out, repeats=args.repeats, limit=args.limit, hotwords=args.hotwords,
                                threads=args.threads, hotwords_mode=args.hotwords_mode)
    return _print_report(results, lambda r: format_table(*bench_quant.report_rows(r)))


def _split(text: str) -> list[str]:
    return [part.strip() for part in text.split(",") if part.strip()]


def cmd_bench_encoder(args) -> int:
    bench = _export_module("bench_encoder")
    report = bench.bench_encoder(args.checkpoint, args.bundle, repeats=args.repeats, warmup=args.warmup,
                                 num_threads=args.threads, precisions=_split(args.precisions) if args.precisions else None)
    return _print_report(report, bench.table)


def cmd_bench_decoder(args) -> int:
    from nim4_edge.quant import bench_decoder

    variants = [v.strip() for v in args.variants.split(",")] if args.variants else None
    report = bench_decoder.bench_decoder(args.bundle, variants, tokens=args.tokens, rows=args.rows,
                                         repeats=args.repeats, threads=args.threads)
    return _print_report(report, bench_decoder.table)


def cmd_bench_runtime(args) -> int:
    from nim4_edge.runtime import bench_runtime
    from nim4_edge.runtime.cli_listen import resolve_bundle

    report = bench_runtime.bench_runtime(resolve_bundle(args.bundle), minutes=args.minutes, wav=args.wav,
                                         partial_every=args.partial_every, threads=args.threads)
    return _print_report(report, bench_runtime.table)


def cmd_bench_vad(args) -> int:
    from nim4_edge.recipes import vad_bench

    report = vad_bench.bench_vad(clips=args.clips, seed=args.seed)
    return _print_report(report, vad_bench.table)


def cmd_bench_hotwords(args) -> int:
    from nim4_edge.recipes import hotword_bench

    report = hotword_bench.bench_hotwords(args.size, queries=args.queries, tolerant=not args.exact_only)
    return _print_report(report, hotword_bench.table)


def _add_verify_flags(p: argparse.ArgumentParser) -> None:
    p.add_argument("--tolerance", type=float, default=1e-4, help="largest allowed |difference| (default 1e-4)")
    p.add_argument("--wav", action="append", default=[], metavar="FILE",
                   help="also stream this PCM WAV file, resampled to the model rate (repeatable); synthetic utterances are always used")
    p.add_argument("--reference-left-chunks", type=int, default=None, metavar="N",
                   help="compare against a reference with N left chunks instead of the bundle's own "
                        "(a negative control: any other N must fail)")
    p.add_argument("--threads", type=int, default=0, help="onnxruntime threads (0 = all cores)")
    p.add_argument("--encoder-only", action="store_true", help="skip the decoder check (transformers vs llama.cpp)")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="nim4-edge",
        description="Streaming LLM speech recognition on Jetson Orin and CPUs (NIM4-ASR architecture).",
        epilog="Typical flow: nim4-edge init --preset tiny -o ckpt && nim4-edge export ckpt -o bundle --verify "
               "&& nim4-edge listen --bundle bundle --wav speech.wav",
    )
    parser.add_argument("--version", action="version", version=f"nim4-edge {__version__}")
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    from nim4_edge.runtime import cli_eval, cli_hotwords, cli_listen

    cli_listen.add_commands(sub)
    cli_hotwords.add_commands(sub)
    cli_eval.add_commands(sub)
    from nim4_edge.devices import cli as devices_cli

    devices_cli.add_commands(sub)

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

    p = sub.add_parser("quantize", help="add quantized encoders (fp16, int8) and decoder GGUFs (Q8_0, Q4_K_M, ...) to a bundle",
                       description="Encoder: FP16, INT8 dynamic and INT8 static QDQ ONNX from the fp32 step, with a "
                                   "parity report (largest differences, phoneme error rate vs fp32). Decoder: llama.cpp "
                                   "quantization of the f32/f16 GGUF with a greedy agreement report. Each variant is "
                                   "recorded in the manifest.")
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

    p = sub.add_parser("bench", help="benchmarks (JSON on stdout, a table on stderr)",
                       description="Without WHAT: accuracy against latency for every encoder x decoder quantization "
                                   "of a bundle on a test set (quant/bench_quant.py): results.json, report.md and "
                                   "accuracy_vs_latency.png in --out. With WHAT: one component benchmark.",
                       epilog="Example: nim4-edge bench --bundle B --testset test.jsonl --encoder fp32,int8-dynamic "
                              "--decoder f16,Q8_0,Q4_K_M --out bench-out")
    p.add_argument("--bundle", type=Path, help="bundle (default: the shipped demo model)")
    p.add_argument("--testset", type=Path, metavar="MANIFEST", help="JSONL test-set manifest (see `nim4-edge eval`)")
    p.add_argument("--encoder", default="fp32,int8-dynamic,int8-qdq", metavar="PRECISIONS",
                   help="encoder variants (default fp32,int8-dynamic,int8-qdq; missing ones are built)")
    p.add_argument("--decoder", default="f16,Q8_0,Q4_K_M", metavar="LEVELS",
                   help="decoder variants (default f16,Q8_0,Q4_K_M; missing ones are built)")
    p.add_argument("--out", type=Path, default=Path("bench-out"), help="output folder (default bench-out)")
    p.add_argument("--repeats", type=int, default=1, help="passes over the test set; timings are medians (default 1)")
    p.add_argument("--limit", type=int, default=0, help="only the first N utterances")
    p.add_argument("--hotwords", type=Path, metavar="DB", help="hotword database used by every combination")
    p.add_argument("--hotwords-mode", choices=HOTWORD_MODES, default="exact",
                   help="hotword retrieval, as for listen (tolerant needs a database built with --tolerant)")
    p.add_argument("--threads", type=int, default=0, help="threads (0 = all cores)")
    p.set_defaults(func=cmd_bench_quant)
    bench = p.add_subparsers(dest="bench", required=False, metavar="WHAT")
    b = bench.add_parser("encoder", help="per-chunk encoder latency: the bundle's ONNX variants and PyTorch eager",
                         description="Median per-chunk latency over interleaved repeats of each encoder variant of "
                                     "BUNDLE (fp32, fp16, int8-*; build them with `nim4-edge quantize`) and, with "
                                     "--checkpoint, PyTorch eager on the same weights; speed-ups, RSS, file sizes.",
                         epilog="Example: nim4-edge bench encoder --bundle FB --precisions fp32,fp16,int8-dynamic")
    b.add_argument("--checkpoint", type=Path, help="also time PyTorch eager on this checkpoint (needs torch)")
    b.add_argument("--bundle", type=Path, required=True)
    b.add_argument("--precisions", metavar="VARIANTS",
                   help="comma-separated encoder variants of the bundle (default: its default variant)")
    b.add_argument("--repeats", type=int, default=20, help="timed repeats per backend (default 20)")
    b.add_argument("--warmup", type=int, default=3, help="untimed repeats first (default 3)")
    b.add_argument("--threads", type=int, default=2, help="threads for both backends (default 2)")
    b.set_defaults(func=cmd_bench_encoder)
    b = bench.add_parser("decoder", help="decode tokens/s and prefill rows/s: session vs bare llama_decode loop",
                         description="Per decoder variant of BUNDLE: greedy decode tokens/s and 4-row embedding "
                                     "prefill rows/s through the session and through a bare llama_decode loop on "
                                     "the same file (the ratio is the session's overhead), and the memory-"
                                     "bandwidth bound (copy bandwidth / weight bytes).")
    b.add_argument("--bundle", type=Path, required=True)
    b.add_argument("--variants", help="comma-separated decoder variants (default: all in the bundle)")
    b.add_argument("--tokens", type=int, default=32, help="greedy tokens per repeat (default 32)")
    b.add_argument("--rows", type=int, default=32, help="embedding rows prefilled per repeat (default 32)")
    b.add_argument("--repeats", type=int, default=3, help="repeats; medians are reported (default 3)")
    b.add_argument("--threads", type=int, default=2, help="llama.cpp threads (default 2)")
    b.set_defaults(func=cmd_bench_decoder)
    b = bench.add_parser("runtime", help="real-time factor, runtime overhead per chunk, final latency, RSS over time",
                         description="Streams MINUTES of a talk pattern (speech-like utterances and silence, or "
                                     "--wav) through the whole runtime faster than real time.")
    b.add_argument("--bundle", type=Path, help="bundle (default: as for listen)")
    b.add_argument("--minutes", type=float, default=60.0, help="audio to stream (default 60)")
    b.add_argument("--wav", type=Path, help="utterance to repeat instead of the synthetic ones")
    b.add_argument("--partial-every", type=int, default=1, metavar="CHUNKS", help="partial cadence (default 1)")
    b.add_argument("--threads", type=int, default=2, help="threads (default 2)")
    b.set_defaults(func=cmd_bench_runtime)
    b = bench.add_parser("vad", help="VADs on held-out speech in synthetic car noise: miss, false alarm, false trigger",
                         description="webrtcvad (modes 0, 2, 3) and the learned VAD on held-out FSDD and espeak-ng "
                                     "speech in quiet, car noise at 10 and 0 dB SNR, and car noise alone. Needs "
                                     "espeak-ng and shared/data/fsdd.")
    b.add_argument("--clips", type=int, default=100, help="clips per condition (default 100)")
    b.add_argument("--seed", type=int, default=12345)
    b.set_defaults(func=cmd_bench_vad)
    b = bench.add_parser("hotwords", help="hotword database at scale: build, load, RSS, query latency, recall",
                         description="Generates SIZE realistic entries (Mandarin place names, English names), "
                                     "builds and loads the database, and queries utterances with planted entries; "
                                     "a naive substring scan runs on a few of the same queries for the ratio.")
    b.add_argument("--size", type=int, default=1_000_000)
    b.add_argument("--queries", type=int, default=500)
    b.add_argument("--exact-only", action="store_true", help="build without the tolerant (halves and thirds) index")
    b.set_defaults(func=cmd_bench_hotwords)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    # Our progress lines at INFO; other libraries (onnxscript's optimizer, torch) only from WARNING up.
    logging.basicConfig(level=logging.DEBUG if args.verbose else logging.WARNING, format="%(message)s", stream=sys.stderr)
    logging.getLogger("nim4_edge").setLevel(logging.DEBUG if args.verbose else logging.INFO)
    try:
        return args.func(args)
    except Nim4Error as e:
        print(f"nim4-edge: {e}", file=sys.stderr)
        return EXIT_BAD_INPUT
    except KeyboardInterrupt:
        print("nim4-edge: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
