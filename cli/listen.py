"""The `listen` and `transcribe` commands (part of the CLI: this module prints)."""

from __future__ import annotations

import json
import shutil
import sys
from pathlib import Path

from nim4_edge.cli.common import freeze_loaded_objects
from nim4_edge.devices.config import Overrides, current_plan, recognizer_config
from nim4_edge.runtime import sources
from nim4_edge.runtime.bundle import BUNDLE_ENV, Bundle, resolve_bundle
from nim4_edge.runtime.confidence import combined_confidence
from nim4_edge.runtime.endpoint import EndpointConfig
from nim4_edge.runtime.errors import Nim4Error
from nim4_edge.runtime.features import SAMPLE_RATE_HZ
from nim4_edge.runtime.hotwords import HOTWORD_MODES, RetrievalConfig
from nim4_edge.runtime.recognizer import Event, Recognizer, RecognizerConfig
from nim4_edge.runtime.vad import VAD_KINDS, VadConfig


def add_recognizer_flags(p, threads_help: str = "threads for encoder and decoder (0 = all cores; default: the device "
                                                     "profile's)") -> None:
    p.add_argument("--bundle", type=Path, help=f"bundle directory (default: ${BUNDLE_ENV}, else the shipped demo model)")
    p.add_argument("--decoder-variant", help="decoder GGUF variant, e.g. Q4_K_M (default: the bundle's default)")
    p.add_argument("--json", action="store_true", help="one JSON object per event on stdout")
    p.add_argument("--vad", choices=sorted(VAD_KINDS), default=VadConfig.kind,
                   help=f"voice activity detector (default {VadConfig.kind}; README 'VAD' has the measurements)")
    p.add_argument("--trailing-silence-ms", type=int, default=EndpointConfig.trailing_silence_ms,
                   help=f"silence that ends an utterance the decoder did not call complete earlier (default "
                        f"{EndpointConfig.trailing_silence_ms})")
    p.add_argument("--eot-pause-ms", type=int, default=EndpointConfig.eot_pause_ms,
                   help=f"adaptive end of turn: after this much silence the final is decoded at once, and the turn "
                        f"ends there if the decoder is sure it is complete (--eot-threshold); 0 = wait for "
                        f"--trailing-silence-ms always (default {EndpointConfig.eot_pause_ms})")
    p.add_argument("--eot-threshold", type=float, default=EndpointConfig.eot_threshold,
                   help=f"end score (the decoder's P(end of text) after the final's words x the confidence of the last "
                        f"word) above which the turn ends at the pause (default {EndpointConfig.eot_threshold}; "
                        f"higher cuts fewer hesitating speakers off, and ends later)")
    p.add_argument("--max-utterance-ms", type=int, default=EndpointConfig.max_utterance_ms,
                   help=f"longest utterance before a forced endpoint (default {EndpointConfig.max_utterance_ms})")
    p.add_argument("--partial-every", type=int, default=None, metavar="CHUNKS",
                   help="a partial result every N 640 ms chunks; 0 = finals only (default: the device profile's)")
    p.add_argument("--threads", type=int, default=None, help=threads_help)
    p.add_argument("--profile", help="device profile (default: detected; see `nim4-edge devices`)")
    p.add_argument("--encoder-precision", metavar="VARIANT",
                   help="encoder variant of the bundle: fp32, fp16, int8-dynamic, int8-qdq (default: the profile's "
                        "precision when the bundle has it, else the bundle's default)")
    p.add_argument("--hotwords", type=Path, metavar="DB", help="hotword database (nim4-edge hotwords build)")
    p.add_argument("--hotwords-mode", choices=HOTWORD_MODES, default="exact",
                   help="exact: phonemes as heard; tolerant: forgive one phoneme error, two in long keys (database built with "
                        "--tolerant); text: from a first-pass transcript (a second decode); exact+text / "
                        "tolerant+text: both, the first pass already hinted (default exact)")
    p.add_argument("--no-verify", action="store_true",
                   help="skip the sha256 check of the bundle's files before loading them (default: checked, and "
                        "remembered per file in ~/.cache/nim4-edge, so a warm start costs milliseconds)")
    p.add_argument("--no-respell", action="store_true",
                   help="keep the decoder's spelling even where a span sounds exactly like a retrieved hotword "
                        "(default: spell it as the hotword; runtime/hotwords/respell.py)")
    p.add_argument("--confidence-threshold", type=float, default=None, metavar="X",
                   help="a final whose acoustic x decoder confidence (0-1: how well the phoneme head's reading "
                        "supports its text, times the probability of the decoder's least likely token) is not above X "
                        "is marked not confident, its text kept (default: the bundle's, chosen on held-out voices; "
                        "README 'Is the final what was said?')")


def overrides_from_args(args) -> Overrides:
    """The recognizer flags of listen/transcribe/eval/bench as overrides of the device profile."""
    try:
        return Overrides(
            decoder_variant=args.decoder_variant,
            encoder_precision=getattr(args, "encoder_precision", None),
            threads=args.threads,
            partial_every_chunks=args.partial_every,
            vad=VadConfig(kind=args.vad),
            endpoint=EndpointConfig(trailing_silence_ms=args.trailing_silence_ms, max_utterance_ms=args.max_utterance_ms,
                                    eot_pause_ms=args.eot_pause_ms, eot_threshold=args.eot_threshold),
            hotwords=args.hotwords,
            retrieval=RetrievalConfig.from_mode(args.hotwords_mode),
            respell_hints=not args.no_respell,
            verify_bundle_hashes=not args.no_verify,
            decoder_batch_streams=getattr(args, "decoder_batch_streams", 0),
            confidence_threshold=getattr(args, "confidence_threshold", None),
        )
    except ValueError as e:
        message = str(e)  # the endpointer's field names, as the flags that set them
        for name in ("eot_pause_ms", "eot_threshold", "trailing_silence_ms", "max_utterance_ms"):
            message = message.replace(name, "--" + name.replace("_", "-"))
        raise Nim4Error(message) from None


def config_from_args(args) -> tuple[Bundle, RecognizerConfig]:
    """The bundle and the configuration the flags and the device profile (devices/) say; flags win."""
    bundle = Bundle.load(resolve_bundle(args.bundle), family=None)  # the recognizer checks the family
    plan = current_plan(getattr(args, "profile", None))
    for warning in plan.warnings:
        print(f"nim4-edge: warning: profile {plan.profile.name}: {warning}", file=sys.stderr)
    return bundle, recognizer_config(bundle, plan, overrides_from_args(args))


def build_recognizer(args) -> Recognizer:
    return Recognizer(config_from_args(args)[1])


class EventPrinter:
    """--json: one object per line. A terminal: the partial line is rewritten in place and finals
    stay, a final that is not confident followed by its acoustic x decoder confidence in brackets. Otherwise
    (a pipe): finals only, one per line, the text alone (--json carries the confidence)."""

    def __init__(self, as_json: bool, prefix: dict | None = None):
        self.as_json = as_json
        self.prefix = prefix or {}
        self.tty = sys.stdout.isatty()
        self._partial_shown = False

    @staticmethod
    def _display(text: str) -> str:
        return "".join(ch if ch.isprintable() else " " for ch in text).strip()

    def __call__(self, event: Event) -> None:
        if self.as_json:
            print(json.dumps(self.prefix | event.to_json(), ensure_ascii=False), flush=True)
            return
        text = self._display(event.text)
        if self.tty:
            width = shutil.get_terminal_size((100, 20)).columns - 1
            if event.kind == "partial":
                sys.stdout.write("\r\033[K" + text[-width:])
                self._partial_shown = True
            else:
                score = combined_confidence(event.acoustic_confidence, event.decoder_confidence) or 0.0
                doubt = "" if event.confident is not False else f"  [not confident: {score:.2f}]"
                sys.stdout.write("\r\033[K" + text + doubt + "\n")
                self._partial_shown = False
            sys.stdout.flush()
        elif event.kind == "final":
            label = f"{self.prefix['file']}: " if "file" in self.prefix else ""
            print(f"{label}{text}", flush=True)


def run_stream(recognizer: Recognizer, blocks, printer: EventPrinter) -> dict:
    """Feed blocks into one stream until they end (or Ctrl-C); returns the stream's statistics."""
    stream = recognizer.create_stream()
    finals = 0
    try:
        try:
            for samples, rate in blocks:
                for event in stream.accept_waveform(samples, rate):
                    finals += event.kind == "final"
                    printer(event)
        except KeyboardInterrupt:
            pass  # end of listening: still finish the open utterance
        for event in stream.input_finished():
            finals += event.kind == "final"
            printer(event)
    finally:
        stream.close()
    return {"finals": finals, "input": stream.input_stats.to_json(), "failed_utterances": len(stream.errors)}


def _report_input(stats: dict, name: str) -> None:
    inp = stats["input"]
    if inp["non_finite"]:
        print(f"nim4-edge: warning: {name}: {inp['non_finite']} NaN/Inf samples were replaced by silence", file=sys.stderr)
    if inp["samples"] and inp["clipped"] > 0.001 * inp["samples"]:
        print(f"nim4-edge: warning: {name}: {100 * inp['clipped'] / inp['samples']:.1f}% of samples clipped; "
              "lower the input gain", file=sys.stderr)
    if stats["failed_utterances"]:
        print(f"nim4-edge: warning: {name}: {stats['failed_utterances']} utterance(s) could not be decoded "
              "(see the log above)", file=sys.stderr)


def cmd_listen(args) -> int:
    if args.list_devices:
        devices = sources.list_input_devices()
        if args.json:
            print(json.dumps(devices, indent=2, ensure_ascii=False))
        elif not devices:
            print(f"no input devices found; {sources.NO_MIC_HINT}")
        for dev in devices if not args.json else []:
            print(f"{dev['index']:3d}  {dev['name']}  ({dev['channels']} ch, {dev['default_sample_rate_hz']} Hz)")
        return 0
    recognizer = build_recognizer(args)
    freeze_loaded_objects()
    mic = None
    try:
        if args.wav:
            blocks, name = sources.wav_blocks(args.wav, realtime=args.realtime), str(args.wav)
        elif args.stdin:
            blocks, name = sources.stdin_blocks(args.stdin_rate), "stdin"
        else:
            mic = sources.Microphone(args.input_device)
            print(f"listening on {mic.device_name!r} ({mic.sample_rate_hz} Hz); Ctrl-C to stop", file=sys.stderr)
            blocks, name = mic, mic.device_name
        stats = run_stream(recognizer, blocks, EventPrinter(args.json))
        _report_input(stats, name)
        if mic is not None and (mic.dropped_samples or mic.status_flags):
            print(f"nim4-edge: warning: {mic.dropped_samples} samples lost to buffer overflow, "
                  f"{mic.status_flags} device overflow reports; the machine could not keep up", file=sys.stderr)
    finally:
        if mic is not None:
            mic.close()
        recognizer.close()
    return 0


def cmd_transcribe(args) -> int:
    args.partial_every = 0  # whole files: only finals are printed, so partial decodes would be wasted
    recognizer = build_recognizer(args)
    freeze_loaded_objects()
    failed = 0
    try:
        for path in args.files:
            try:
                stats = run_stream(recognizer, sources.wav_blocks(path, block_ms=1000), EventPrinter(args.json, {"file": str(path)}))
                _report_input(stats, str(path))
            except Nim4Error as e:  # one bad file does not stop the others
                print(f"nim4-edge: {e}", file=sys.stderr)
                failed += 1
    finally:
        recognizer.close()
    return 2 if failed else 0


def add_commands(sub) -> None:
    p = sub.add_parser("listen", help="stream from a microphone, a WAV file or stdin; print partial and final text",
                       description="Real-time recognition with VAD endpointing. On a terminal the partial line "
                                   "updates in place and finals print on their own line; --json prints one event "
                                   "per line. Without a microphone use --wav FILE [--realtime] or --stdin.")
    source = p.add_mutually_exclusive_group()
    source.add_argument("--input-device", metavar="N", help="microphone index or name (see --list-devices)")
    source.add_argument("--wav", type=Path, metavar="FILE", help="read a WAV file instead of a microphone")
    source.add_argument("--stdin", action="store_true", help="read raw 16-bit little-endian mono PCM from stdin")
    p.add_argument("--realtime", action="store_true", help="with --wav: play the file at real-time pace")
    p.add_argument("--stdin-rate", type=int, default=SAMPLE_RATE_HZ,
                   help=f"sample rate of --stdin audio (default {SAMPLE_RATE_HZ})")
    p.add_argument("--list-devices", action="store_true", help="list input devices and exit")
    add_recognizer_flags(p)
    p.set_defaults(func=cmd_listen)

    p = sub.add_parser("transcribe", help="transcribe whole WAV files (as fast as the machine allows)",
                       description="Each file is streamed through the same pipeline as `listen` (VAD, endpoints, "
                                   "streaming encoder); prints 'FILE: text' per utterance, or JSON with --json.")
    p.add_argument("files", type=Path, nargs="+", metavar="FILE")
    add_recognizer_flags(p)
    p.set_defaults(func=cmd_transcribe)
