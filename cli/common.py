"""Helpers every command module shares: JSON and report printing, optional-toolchain imports."""

from __future__ import annotations

import gc
import importlib
import json
import sys
import tempfile
from pathlib import Path

from nim4_edge.runtime.errors import Nim4Error

EXPORT_EXTRA_HINT = "pip install 'nim4-edge[export]'"
# the packages of the export extra: a command that needs one of them says how to install it
EXPORT_PACKAGES = {"torch", "transformers", "safetensors", "onnx", "onnxscript", "tokenizers", "gguf", "tqdm"}


def export_toolchain(module: str):
    """Import a module that needs the export toolchain (torch, onnx, ...), which the on-device install
    does not have: a missing package becomes one line naming the extra to install."""
    try:  # optional dependency: the export extra
        return importlib.import_module(module)
    except ModuleNotFoundError as e:
        if e.name and e.name.split(".")[0] in EXPORT_PACKAGES:
            raise Nim4Error(f"this command needs the export toolchain ({e.name} is not installed): {EXPORT_EXTRA_HINT}") from None
        raise


def print_json(data: dict) -> None:
    print(json.dumps(data, indent=2, ensure_ascii=False))


def print_report(report: dict, table) -> int:
    """A benchmark's figures: JSON on stdout (for machines), a readable table on stderr (for people)."""
    print_json(report)
    print(table(report), file=sys.stderr)
    return 0


def split_list(text: str) -> list[str]:
    """'a, b,,c' -> ['a', 'b', 'c'] (comma-separated flag values)."""
    return [part.strip() for part in text.split(",") if part.strip()]


# --- output paths: checked before any work, so a bad one costs nothing ---------------------------------

def _writable(folder: Path, flag: str, path: Path) -> None:
    try:  # the real test (permissions, read-only mounts, /proc): create and remove a file there
        with tempfile.TemporaryFile(dir=folder):
            pass
    except OSError as e:
        raise Nim4Error(f"{flag} {path}: nothing can be written in {folder} ({e.strerror}); choose another place") from None


def check_output_file(path: Path, flag: str) -> None:
    """A file the command will write (through a temporary file and a rename): not a directory, in an
    existing folder where files can be created."""
    path = Path(path)
    if path.is_dir():
        raise Nim4Error(f"{flag} {path}: is a directory; give a file name, e.g. {path / 'out'}")
    folder = path.parent
    if not folder.is_dir():
        raise Nim4Error(f"{flag} {path}: the folder {folder} does not exist; create it first")
    _writable(folder, flag, path)


def check_output_dir(path: Path, flag: str) -> None:
    """A folder the command will create (with any missing parents) or write into: not an existing
    file, and somewhere a file can be created (the folder itself, or its nearest existing parent)."""
    path = Path(path)
    if path.exists() and not path.is_dir():
        raise Nim4Error(f"{flag} {path}: exists and is not a folder; choose another name")
    existing = path
    while not existing.exists():
        existing = existing.parent
    if not existing.is_dir():
        raise Nim4Error(f"{flag} {path}: {existing} is not a folder")
    _writable(existing, flag, path)


def freeze_loaded_objects() -> None:
    """Exempt what start-up loaded (the lexicon's pypinyin and CMUdict tables, the models' wrappers)
    from Python's cyclic garbage collector. They live as long as the process; scanning them is what
    makes a full collection slow: with the demo recognizer loaded one took 46 ms in a plain install
    (235,000 tracked objects) and 218 ms with the dev extras installed (561,000), a stall in the middle
    of an utterance whenever it came; after this, ~0 ms (measured on this 2-core machine). A library
    does not do this to its host: `listen`, `transcribe` and `serve` do."""
    gc.collect()
    gc.freeze()
