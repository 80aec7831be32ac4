"""Shared fixtures: the shipped demo bundle (runtime tests: no torch needed), and a tiny random
checkpoint with its bundle, built once per test session (export, parity and quantization tests: the
export extra)."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest

from nim4_edge.runtime.bundle import DEMO_BUNDLE, MANIFEST_FILE
from nim4_edge.runtime.integrity import CACHE_ENV


@pytest.fixture(scope="session", autouse=True)
def private_cache(tmp_path_factory):
    """The integrity cache (and anything else under the user cache) in a temporary folder: tests never
    write into ~/.cache, and the CLI processes they start inherit it."""
    folder = tmp_path_factory.mktemp("cache")
    old = os.environ.get(CACHE_ENV)
    os.environ[CACHE_ENV] = str(folder)
    yield folder
    if old is None:
        os.environ.pop(CACHE_ENV, None)
    else:
        os.environ[CACHE_ENV] = old


@pytest.fixture(scope="session")
def demo_bundle() -> Path:
    """The shipped demo model: what the on-device install runs, so the runtime is tested on it."""
    if not (DEMO_BUNDLE / MANIFEST_FILE).is_file():
        pytest.skip(f"no demo bundle at {DEMO_BUNDLE} (it ships in git: a sparse checkout?)")
    return DEMO_BUNDLE


@pytest.fixture(scope="session")
def tiny_checkpoint(tmp_path_factory) -> Path:
    pytest.importorskip("torch", reason="the export extra (torch) is needed to build test checkpoints")
    from nim4_edge.export.checkpoint import init_checkpoint

    return init_checkpoint(tmp_path_factory.mktemp("ckpt") / "tiny", "tiny", seed=0)


@pytest.fixture(scope="session")
def tiny_bundle(tiny_checkpoint, tmp_path_factory) -> Path:
    from nim4_edge.export.bundle_export import export_bundle

    path = tmp_path_factory.mktemp("bundle") / "tiny"
    export_bundle(tiny_checkpoint, path)
    return path


@pytest.fixture
def checkpoint_copy(tiny_checkpoint, tmp_path) -> Path:
    """A private copy of the tiny checkpoint that a test may damage."""
    dst = tmp_path / "ckpt"
    shutil.copytree(tiny_checkpoint, dst)
    return dst


@pytest.fixture
def bundle_copy(tiny_bundle, tmp_path) -> Path:
    dst = tmp_path / "bundle"
    shutil.copytree(tiny_bundle, dst)
    return dst


@pytest.fixture(scope="session")
def trained_bundle(tiny_checkpoint, tmp_path_factory) -> Path:
    """The tiny checkpoint with its decoder briefly trained on text (~20 s), exported to a bundle."""
    from nim4_edge.export.bundle_export import export_bundle
    from nim4_edge.export.text_pretrain import example_commands, pretrain_decoder_on_text

    ckpt = tmp_path_factory.mktemp("trained") / "ckpt"
    shutil.copytree(tiny_checkpoint, ckpt)
    pretrain_decoder_on_text(ckpt / "decoder", example_commands(400), steps=200)
    path = ckpt.parent / "bundle"
    export_bundle(ckpt, path)
    return path
