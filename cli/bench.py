"""`nim4-edge bench`: the accuracy-vs-latency report (no WHAT) and the component benchmarks."""

from __future__ import annotations

import sys
from pathlib import Path

from nim4_edge.bench import confidence as bench_confidence
from nim4_edge.bench import decoder as bench_decoder
from nim4_edge.bench import encoder as bench_encoder
from nim4_edge.bench import hotwords as bench_hotwords
from nim4_edge.bench import quant as bench_quant
from nim4_edge.bench import runtime as bench_runtime
from nim4_edge.bench import vad as bench_vad
from nim4_edge.bench.report import format_table
from nim4_edge.cli.common import check_output_dir, export_toolchain, print_report, split_list
from nim4_edge.runtime.bundle import resolve_bundle
from nim4_edge.runtime.errors import EXIT_RUNTIME_FAILURE, Nim4Error
from nim4_edge.runtime.hotwords import HOTWORD_MODES


def cmd_bench_quant(args) -> int:
    if args.testset is None:
        raise Nim4Error("nim4-edge bench needs --testset MANIFEST (or a component: bench encoder|decoder|runtime|vad|hotwords)")
    check_output_dir(args.out, "--out")
    results = bench_quant.bench(resolve_bundle(args.bundle), args.testset, split_list(args.encoder),
                                split_list(args.decoder), args.out, repeats=args.repeats, limit=args.limit,
                                hotwords=args.hotwords, threads=args.threads, hotwords_mode=args.hotwords_mode,
                                profile=args.profile)
    return print_report(results, lambda r: format_table(*bench_quant.report_rows(r)))


def cmd_bench_encoder(args) -> int:
    report = bench_encoder.bench_encoder(args.checkpoint, args.bundle, repeats=args.repeats, warmup=args.warmup,
                                         num_threads=args.threads,
                                         precisions=split_list(args.precisions) if args.precisions else None)
    return print_report(report, bench_encoder.table)


def cmd_bench_decoder(args) -> int:
    variants = split_list(args.variants) if args.variants else None
    report = bench_decoder.bench_decoder(args.bundle, variants, tokens=args.tokens, rows=args.rows,
                                         repeats=args.repeats, threads=args.threads)
    return print_report(report, bench_decoder.table)


def cmd_bench_runtime(args) -> int:
    report = bench_runtime.bench_runtime(resolve_bundle(args.bundle), minutes=args.minutes, wav=args.wav,
                                         partial_every=args.partial_every, threads=args.threads, profile=args.profile)
    return print_report(report, bench_runtime.table)


def cmd_bench_vad(args) -> int:
    report = bench_vad.bench_vad(clips=args.clips, seed=args.seed)
    return print_report(report, bench_vad.table)


def cmd_bench_hotwords(args) -> int:
    if args.edit_rates is not None and args.exact_only:
        raise Nim4Error("--edit-rates measures tolerant retrieval: drop --exact-only")
    report = bench_hotwords.bench_hotwords(args.size, queries=args.queries, tolerant=not args.exact_only,
                                           edit_rates=args.edit_rates)
    return print_report(report, bench_hotwords.table)


def cmd_bench_qwen3_asr(args) -> int:
    check_output_dir(args.out, "--out")
    qwen3_asr = export_toolchain("nim4_edge.bench.qwen3_asr")
    report = qwen3_asr.bench_qwen3_asr(args.shape, args.out, split_list(args.levels), repeats=args.repeats)
    print_report(report, qwen3_asr.table)
    return 0 if report["parity"]["passed"] else EXIT_RUNTIME_FAILURE


def cmd_bench_confidence(args) -> int:
    check_output_dir(args.out, "--out")
    report = bench_confidence.bench_confidence([Path(p) for p in split_list(args.dev)],
                                               [Path(p) for p in split_list(args.test)], args.right_budget)
    bench_confidence.write_report(report, args.out)
    return print_report(report, bench_confidence.tables)


def cmd_bench_serve(args) -> int:
    try:  # optional dependency: the serve and bench extras (grpcio, nvidia-riva-client, psutil)
        from nim4_edge.bench import serve as bench_serve
    except ImportError as e:
        raise Nim4Error(f"`bench serve` needs the serve and bench extras ({e}): pip install -e '.[serve,bench]'") from None
    if args.seconds < 5:
        raise Nim4Error("--seconds must be >= 5 (a few commands per stream)")
    report = bench_serve.bench_serve(args.bundle, [int(n) for n in split_list(args.streams)], seconds=args.seconds,
                                     threads=args.threads, profile=args.profile, batching=not args.no_batching,
                                     decoder_variant=args.decoder_variant, partial_every=args.partial_every,
                                     batched_decode=args.batched_decode, eot_pause_ms=args.eot_pause_ms,
                                     trailing_silence_ms=args.trailing_silence_ms,
                                     progress=lambda line: print(line, file=sys.stderr, flush=True))
    return print_report(report, bench_serve.table)


def add_commands(sub) -> None:
    p = sub.add_parser("bench", help="benchmarks (JSON on stdout, a table on stderr)",
                       description="Without WHAT: accuracy against latency for every encoder x decoder quantization "
                                   "of a bundle on a test set (bench/quant.py): results.json, report.md and "
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
    p.add_argument("--threads", type=int, default=None,
                   help="encoder and decoder threads, 0 = all cores (default: the device profile's, as listen)")
    p.add_argument("--profile", help="device profile (default: detected, as listen; see `nim4-edge devices`)")
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
    b.add_argument("--partial-every", type=int, default=None, metavar="CHUNKS",
                   help="partial cadence (default: the device profile's, as listen)")
    b.add_argument("--threads", type=int, default=None,
                   help="encoder and decoder threads, 0 = all cores (default: the device profile's, as listen)")
    b.add_argument("--profile", help="device profile (default: detected, as listen)")
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
    b.add_argument("--exact-only", action="store_true", help="build without the tolerant indexes (signatures of 2 of 3 and 3 of 5 parts)")
    b.add_argument("--edit-rates", type=Path, metavar="FILE",
                   help="also draw the errors as a phoneme head makes them, from its edits on held-out speech "
                        "(`nim4-edge eval --testset HELD_OUT.jsonl --phoneme-edits FILE`), and report tolerant "
                        "recall and false retrievals on those utterances too")
    b.set_defaults(func=cmd_bench_hotwords)
    b = bench.add_parser("qwen3-asr", help="the Qwen3-ASR path at the real 0.6B / 1.7B shape, random weights: "
                                           "import, parity, encoder ms per update, decoder tok/s, RTF, RSS, Orin projection",
                         description="Builds a random-weight Qwen3-ASR of the shape with transformers (no weights can "
                                     "be downloaded), imports it into OUT/bundle, checks parity with transformers, "
                                     "quantizes the decoder to LEVELS and measures (bench/qwen3_asr.py). Needs the "
                                     "export extra; 1.7B needs ~20 GB of memory and ~30 GB of disk in OUT.",
                         epilog="Example: nim4-edge bench qwen3-asr --shape 0.6b --out work/qwen3-asr-0.6b")
    b.add_argument("--shape", choices=("tiny", "0.6b", "1.7b"), default="0.6b")
    b.add_argument("--out", type=Path, required=True, help="working folder (the checkpoint and the bundle go here)")
    b.add_argument("--levels", default="Q8_0,Q4_K_M", help="decoder GGUF levels to quantize and time (default Q8_0,Q4_K_M)")
    b.add_argument("--repeats", type=int, default=5)
    b.set_defaults(func=cmd_bench_qwen3_asr)
    b = bench.add_parser("confidence", help="finals' confidence: the threshold chosen on dev results, wrong vs right flagged on test",
                         description="Reads `nim4-edge eval --out` results (streaming): chooses the confidence "
                                     "threshold on the dev ones (the highest that flags at most --right-budget %% of "
                                     "the right finals), then reports at it, per voice, the share of wrong and of right "
                                     "finals the test ones flag, a sweep of thresholds, and a plot (bench/confidence.py).",
                         epilog="Example: nim4-edge bench confidence --dev dev-joe.json,dev-gcin3.json "
                                "--test joe.json,gcin3.json,fsdd-raw.json --out confidence-out")
    b.add_argument("--dev", required=True, metavar="RESULTS", help="comma-separated eval results the threshold is chosen on")
    b.add_argument("--test", required=True, metavar="RESULTS", help="comma-separated eval results it is measured on")
    b.add_argument("--right-budget", type=float, default=5.0, metavar="PCT",
                   help="most right finals (%%) the threshold may flag on dev (default 5)")
    b.add_argument("--out", type=Path, default=Path("confidence-out"), help="output folder (default confidence-out)")
    b.set_defaults(func=cmd_bench_confidence)
    b = bench.add_parser("serve", help="streams at once through the real server: final/partial latency, CPU, RSS",
                         description="Starts `nim4-edge serve` on free loopback ports and streams the example commands "
                                     "(each then 1 s of silence) from N real Riva clients at once at real-time pace, "
                                     "for each N of --streams: final latency from the end of speech, the server's "
                                     "part of it, partial latency, finals per utterance, CPU time per audio second "
                                     "per stream, CPU use, RSS; then the decode of 4 streams per context against "
                                     "one batched context. A soak: --streams 8 --seconds 600.",
                         epilog="Example: nim4-edge bench serve --streams 1,2,4,8 --seconds 30")
    b.add_argument("--bundle", type=Path, help="bundle (default: as for listen)")
    b.add_argument("--streams", default="1,2,4,8", help="stream counts, comma-separated (default 1,2,4,8)")
    b.add_argument("--seconds", type=float, default=30.0, help="audio per stream per count (default 30)")
    b.add_argument("--threads", type=int, default=None,
                   help="the server's encoder and decoder threads per stream (default: the device profile's)")
    b.add_argument("--profile", help="device profile (default: detected)")
    b.add_argument("--decoder-variant", help="decoder GGUF variant, e.g. Q4_K_M (default: the bundle's default)")
    b.add_argument("--partial-every", type=int, default=None, metavar="CHUNKS",
                   help="the server's partial cadence, 0 = finals only (default: the device profile's)")
    b.add_argument("--batched-decode", action="store_true", help="run the server with --batched-decode")
    b.add_argument("--eot-pause-ms", type=int, default=None,
                   help="the server's adaptive end of turn (README 'End of turn'; default: the server's, off)")
    b.add_argument("--trailing-silence-ms", type=int, default=None,
                   help="the server's trailing silence (default: the server's, 600)")
    b.add_argument("--no-batching", action="store_true", help="skip the per-context vs batched decode measurement")
    b.set_defaults(func=cmd_bench_serve)
