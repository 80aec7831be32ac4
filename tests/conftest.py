"""Shared fixtures: a tiny random checkpoint and its verified bundle, built once per test session."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest


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
