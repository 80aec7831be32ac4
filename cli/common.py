"""Helpers every command module shares: JSON and report printing, optional-toolchain imports."""

from __future__ import annotations

import importlib
import json
import sys

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
