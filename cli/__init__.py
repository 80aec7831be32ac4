"""nim4_edge.cli: every `nim4-edge` command (the top layer: it may import every other room).

    main.py      parser, logging, exit codes
    listen.py    listen, transcribe (and the recognizer flags every command shares)
    serve.py     serve (the Riva gRPC service; the serve extra)
    hotwords.py  hotwords build / query
    evaluate.py  eval
    devices.py   devices, doctor
    build.py     init, export, verify, quantize
    bench.py     bench (the accuracy-vs-latency report and the component benchmarks)
"""

import sys


def main(argv: list[str] | None = None) -> int:
    """The console entry point. An install with a required package missing gets one line, not a
    traceback from deep inside the import of the commands."""
    try:  # guarded: the commands import every runtime dependency
        from nim4_edge.cli.main import main as run
    except ModuleNotFoundError as e:
        print(f"nim4-edge: the install is incomplete: the Python package {e.name!r} is missing; "
              "reinstall with `pip install -e .` (README 'Set-up')", file=sys.stderr)
        return 1
    return run(argv)
