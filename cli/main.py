"""`nim4-edge`: the command line. Library code raises; only the CLI prints and exits.

Exit codes: 0 success; 1 a runtime failure or a check that ran and failed (verification out of
tolerance, a decoder failure); 2 bad input (one line on stderr naming the problem and the fix);
130 interrupted.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys

from nim4_edge.cli import bench, build, devices, evaluate, hotwords, listen, serve
from nim4_edge.runtime import __version__
from nim4_edge.runtime.errors import Nim4Error


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

    for commands in (listen, serve, hotwords, evaluate, devices, build, bench):
        commands.add_commands(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    # Our progress lines at INFO; other libraries (onnxscript's optimizer, torch) only from WARNING up.
    logging.basicConfig(level=logging.DEBUG if args.verbose else logging.WARNING, format="%(message)s", stream=sys.stderr)
    logging.getLogger("nim4_edge").setLevel(logging.DEBUG if args.verbose else logging.INFO)
    try:
        return args.func(args)
    except Nim4Error as e:  # the error carries its exit code: 2 bad input, 1 runtime failure
        print(f"nim4-edge: {e}", file=sys.stderr)
        return e.exit_code
    except KeyboardInterrupt:
        print("nim4-edge: interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:  # the reader went away (`listen --json | head`): not an error of ours
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())  # so the exit flush cannot raise again
        return 141  # 128 + SIGPIPE, what a shell reports for a writer whose pipe closed


if __name__ == "__main__":
    sys.exit(main())
