"""Checkpoint -> bundle export and the streaming parity check (Done-when of the export issue)."""

from __future__ import annotations

import json

import pytest

pytest.importorskip("torch")

from nim4_edge.cli.main import main  # noqa: E402
from nim4_edge.runtime.bundle import Bundle  # noqa: E402


def _run_json(capsys, argv):
    code = main(argv)
    captured = capsys.readouterr()
    return code, json.loads(captured.out) if captured.out.strip() else None, captured.err


def test_init_export_verify_cli_within_tolerance(tmp_path, capsys):
    ckpt, bundle = tmp_path / "C", tmp_path / "B"
    assert main(["init", "--preset", "tiny", "-o", str(ckpt)]) == 0
    capsys.readouterr()
    code, report, err = _run_json(capsys, ["export", str(ckpt), "-o", str(bundle), "--verify"])
    assert code == 0
    assert report["passed"] is True
    enc = report["encoder"]
    assert enc["max_abs_diff_phoneme_log_probs"] <= 1e-4
    assert enc["max_abs_diff_embeddings"] <= 1e-4
    utts = enc["utterances"]
    # lengths not a multiple of the chunk, a single partial chunk, and more chunks than the left context
    assert all(u["encoder_frames"] % 16 for u in utts)
    assert min(u["chunks"] for u in utts) == 1
    assert max(u["chunks"] for u in utts) > 5
    assert Bundle.load(bundle, verify_hashes=True).manifest.streaming.chunk_frames == 16


def test_negative_control_other_left_context_fails(tiny_checkpoint, tiny_bundle, capsys):
    code, report, err = _run_json(capsys, ["verify", str(tiny_checkpoint), str(tiny_bundle), "--encoder-only",
                                           "--reference-left-chunks", "1"])
    assert code == 1
    assert report["passed"] is False and report["encoder"]["passed"] is False
    assert max(report["encoder"]["max_abs_diff_phoneme_log_probs"], report["encoder"]["max_abs_diff_embeddings"]) > 1e-4
    assert "FAILED" in err


def test_verify_with_a_real_recording(tiny_checkpoint, tiny_bundle, capsys):
    from pathlib import Path

    fsdd = Path(__file__).resolve().parents[2] / "shared" / "data" / "fsdd"
    wavs = sorted(fsdd.glob("*.wav"))[:1] if fsdd.is_dir() else []
    if not wavs:
        pytest.skip("shared/data/fsdd is not next to this checkout")
    code, report, err = _run_json(capsys, ["verify", str(tiny_checkpoint), str(tiny_bundle), "--encoder-only", "--wav", str(wavs[0])])
    assert code == 0, report
    assert report["encoder"]["utterances"][-1]["utterance"] == str(wavs[0])


def test_manifest_and_onnx_metadata_describe_fixed_geometry(tiny_bundle):
    import onnx

    manifest = Bundle.load(tiny_bundle).manifest
    g = manifest.streaming
    assert (g.chunk_frames, g.left_chunks, g.fbank_frames_per_chunk, g.embeddings_per_chunk) == (16, 4, 67, 4)
    enc = manifest.encoder
    assert enc.input("key_cache").shape == (enc.num_layers, 1, enc.num_heads, 64, enc.head_dim)
    assert enc.input("conv_cache").shape == (enc.num_layers, 1, enc.d_model, 32)
    assert enc.output("embeddings").shape == (1, 4, manifest.decoder.hidden_size)
    assert manifest.phonemes.symbols[0] == "<blk>"

    model = onnx.load(str(tiny_bundle / enc.file))
    meta = {p.key: p.value for p in model.metadata_props}
    assert json.loads(meta["nim4.streaming"])["chunk_frames"] == 16
    assert meta["nim4.phoneme_inventory"] == manifest.phonemes.version
    for value in list(model.graph.input) + list(model.graph.output):
        dims = value.type.tensor_type.shape.dim
        assert all(d.HasField("dim_value") for d in dims), f"{value.name} has a symbolic dimension"


def test_encoder_stream_flush_and_reset(tiny_bundle):
    import numpy as np

    from nim4_edge.runtime.encoder import EncoderSession, EncoderStream

    stream = EncoderStream(EncoderSession(Bundle.load(tiny_bundle)))
    frames = np.random.default_rng(0).standard_normal((180, 80)).astype(np.float32)
    first = stream.accept_frames(frames)
    assert [c.phoneme_log_probs.shape[0] for c in first] == [16, 16]  # windows at 0 and 64; the one at 128 needs 195
    last = stream.flush()
    assert [c.phoneme_log_probs.shape[0] for c in last] == [(180 - 128 - 3) // 4]  # 12 = 44 - 32
    assert [c.embeddings.shape[0] for c in last] == [3]
    stream.reset()
    again = stream.accept_frames(frames) + stream.flush()
    np.testing.assert_array_equal(np.concatenate([c.embeddings for c in first + last]),
                                  np.concatenate([c.embeddings for c in again]))
    assert stream.flush() == []
