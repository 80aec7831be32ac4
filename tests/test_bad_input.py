"""Bad checkpoints and bundles: one line naming the file (and tensor), exit 2, nothing left behind."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

pytest.importorskip("torch")

from nim4_edge.cli.main import main  # noqa: E402
from nim4_edge.runtime.bundle import Bundle  # noqa: E402
from nim4_edge.runtime.errors import BundleError  # noqa: E402


def _rewrite_tensors(path, edit):
    from safetensors.torch import load_file, save_file

    tensors = load_file(str(path))
    edit(tensors)
    save_file(tensors, str(path))


def _export_fails(ckpt, tmp_path, capsys, *expected_in_message):
    bundle = tmp_path / "out" / "B"
    code = main(["export", str(ckpt), "-o", str(bundle)])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2
    message = err[-1]
    assert message.startswith("nim4-edge: ")
    for text in expected_in_message:
        assert text in message, message
    assert not bundle.exists()
    assert not any(p.name.startswith(".B.") for p in bundle.parent.glob(".*")), "temporary directory left behind"
    return message


def test_missing_file(checkpoint_copy, tmp_path, capsys):
    (checkpoint_copy / "phonemes.txt").unlink()
    _export_fails(checkpoint_copy, tmp_path, capsys, "phonemes.txt", "missing")


def test_missing_tensor(checkpoint_copy, tmp_path, capsys):
    _rewrite_tensors(checkpoint_copy / "acoustic.safetensors", lambda t: t.pop("adaptor.linear_out.bias"))
    _export_fails(checkpoint_copy, tmp_path, capsys, "acoustic.safetensors", "'adaptor.linear_out.bias'", "missing")


def test_unexpected_tensor(checkpoint_copy, tmp_path, capsys):
    import torch

    _rewrite_tensors(checkpoint_copy / "acoustic.safetensors", lambda t: t.update({"encoder.extra.weight": torch.zeros(2)}))
    _export_fails(checkpoint_copy, tmp_path, capsys, "'encoder.extra.weight'", "unexpected")


def test_wrong_shape(checkpoint_copy, tmp_path, capsys):
    import torch

    def shrink(t):
        t["phoneme_head.mlp.4.weight"] = torch.zeros(10, 64)

    _rewrite_tensors(checkpoint_copy / "acoustic.safetensors", shrink)
    _export_fails(checkpoint_copy, tmp_path, capsys, "'phoneme_head.mlp.4.weight'", "[10, 64]", "[269, 64]")


def test_config_contradicts_weights(checkpoint_copy, tmp_path, capsys):
    config = json.loads((checkpoint_copy / "config.json").read_text())
    config["encoder"]["ffn_dim"] = 512
    (checkpoint_copy / "config.json").write_text(json.dumps(config))
    _export_fails(checkpoint_copy, tmp_path, capsys, "acoustic.safetensors", "ffn", "config.json implies")


def test_config_contradicts_decoder_width(checkpoint_copy, tmp_path, capsys):
    config = json.loads((checkpoint_copy / "decoder" / "config.json").read_text())
    config["hidden_size"] = 512
    (checkpoint_copy / "decoder" / "config.json").write_text(json.dumps(config))
    _export_fails(checkpoint_copy, tmp_path, capsys, "hidden_size 512", "adaptor.output_dim 256")


def test_phoneme_count_contradicts_config(checkpoint_copy, tmp_path, capsys):
    with open(checkpoint_copy / "phonemes.txt", "a") as f:
        f.write("XX\n")
    _export_fails(checkpoint_copy, tmp_path, capsys, "phonemes.txt", "270 phonemes", "269")


def test_corrupt_config_json(checkpoint_copy, tmp_path, capsys):
    (checkpoint_copy / "config.json").write_text("{not json")
    _export_fails(checkpoint_copy, tmp_path, capsys, "config.json", "not readable JSON")


def test_existing_output_is_not_replaced(tiny_checkpoint, tmp_path, capsys):
    out = tmp_path / "B"
    out.mkdir()
    (out / "keep.txt").write_text("mine")
    assert main(["export", str(tiny_checkpoint), "-o", str(out)]) == 2
    assert "--overwrite" in capsys.readouterr().err
    assert (out / "keep.txt").read_text() == "mine"


def test_cli_error_is_one_line_without_traceback(tmp_path):
    proc = subprocess.run(
        [sys.executable, "-m", "nim4_edge.cli", "export", str(tmp_path / "nope"), "-o", str(tmp_path / "B")],
        capture_output=True, text=True,
    )
    assert proc.returncode == 2
    assert proc.stderr.strip().count("\n") == 0, proc.stderr
    assert "Traceback" not in proc.stderr
    assert "nim4-edge init" in proc.stderr  # names the fix


# --- bundles, as the runtime sees them -------------------------------------------------------------


def _manifest(bundle):
    return json.loads((bundle / "manifest.json").read_text())


def test_bundle_without_manifest(tmp_path):
    with pytest.raises(BundleError, match="not a bundle"):
        Bundle.load(tmp_path)


def test_truncated_encoder_is_refused(bundle_copy):
    onnx_file = bundle_copy / "encoder.onnx"
    onnx_file.write_bytes(onnx_file.read_bytes()[:1000])
    with pytest.raises(BundleError, match="truncated or replaced"):
        Bundle.load(bundle_copy)


def test_tampered_encoder_is_refused_when_hashes_are_checked(bundle_copy):
    onnx_file = bundle_copy / "encoder.onnx"
    data = bytearray(onnx_file.read_bytes())
    data[-10] ^= 0xFF
    onnx_file.write_bytes(bytes(data))
    Bundle.load(bundle_copy)  # same size: only the hash can tell
    with pytest.raises(BundleError, match="sha256"):
        Bundle.load(bundle_copy, verify_hashes=True)


def test_manifest_geometry_that_contradicts_itself(bundle_copy):
    data = _manifest(bundle_copy)
    data["streaming"]["chunk_frames"] = 8
    (bundle_copy / "manifest.json").write_text(json.dumps(data))
    with pytest.raises(BundleError, match="contradicts"):
        Bundle.load(bundle_copy)


def test_manifest_that_does_not_match_the_graph(bundle_copy):
    from nim4_edge.runtime.encoder import EncoderSession

    data = _manifest(bundle_copy)
    enc = data["encoder"]
    enc["num_layers"] = 3
    for spec in enc["inputs"] + enc["outputs"]:
        if "cache" in spec["name"]:
            spec["shape"][0] = 3
    (bundle_copy / "manifest.json").write_text(json.dumps(data))
    bundle = Bundle.load(bundle_copy)  # self-consistent ...
    with pytest.raises(BundleError, match="do not match the manifest"):
        EncoderSession(bundle)  # ... but not what the graph is


def test_newer_bundle_format_is_refused(bundle_copy):
    data = _manifest(bundle_copy)
    data["format_version"] = 99
    (bundle_copy / "manifest.json").write_text(json.dumps(data))
    with pytest.raises(BundleError, match="format_version 99"):
        Bundle.load(bundle_copy)
