"""The encoder step (export/streaming.py) to ONNX.

The graph is exported with torch.onnx's dynamo exporter (the one torch recommends) at fixed shapes.
Chunk geometry and model dims go into the ONNX metadata too, so a graph found on its own still says
what it is.
"""

from __future__ import annotations

import json
import logging
import time
import warnings
from pathlib import Path

import onnx
import torch

from nim4_edge.export.checkpoint import Checkpoint
from nim4_edge.export.model import count_parameters
from nim4_edge.export.streaming import INPUT_NAMES, OUTPUT_NAMES, StreamingEncoderStep
from nim4_edge.runtime.bundle import EncoderSpec, TensorSpec, describe_file

log = logging.getLogger(__name__)

ENCODER_FILE = "encoder.onnx"
OPSET = 18
# Protobuf cannot hold more than 2 GiB; above this many parameter bytes the weights go to a side file.
EXTERNAL_DATA_THRESHOLD_BYTES = 1_500_000_000


def write_encoder(checkpoint: Checkpoint, out_dir: Path) -> tuple[EncoderSpec, dict]:
    """Export the encoder step into `out_dir`. Returns its manifest entry and {file: facts}."""
    t0 = time.perf_counter()
    model = checkpoint.load_acoustic_model()
    log.info("loaded %.1fM-parameter acoustic model (%.1f s)", count_parameters(model) / 1e6, time.perf_counter() - t0)
    return export_encoder_model(model, checkpoint.phonemes.version, out_dir)


def export_encoder_model(model, inventory_version: str, out_dir: Path) -> tuple[EncoderSpec, dict]:
    """write_encoder for a model in memory (a Nim4AcousticModel): what the bundle importer re-exports."""
    cfg = model.cfg
    step = StreamingEncoderStep(model).eval()
    num_params = count_parameters(model)

    example = step.example_inputs()
    with torch.no_grad():
        example_outputs = step(*example)
    inputs = tuple(_spec(n, t) for n, t in zip(INPUT_NAMES, example))
    outputs = tuple(_spec(n, t) for n, t in zip(OUTPUT_NAMES, example_outputs))

    metadata = {
        "nim4.format": "nim4-encoder-step",
        "nim4.streaming": json.dumps(cfg.streaming.to_json()),
        "nim4.encoder": json.dumps(cfg.encoder.__dict__),
        "nim4.embedding_dim": str(cfg.adaptor.output_dim),
        "nim4.num_phonemes": str(cfg.phoneme_head.num_phonemes),
        "nim4.phoneme_inventory": inventory_version,
    }
    external = num_params * 4 > EXTERNAL_DATA_THRESHOLD_BYTES
    t0 = time.perf_counter()
    log.info("exporting the encoder step to ONNX (opset %d%s)...", OPSET, ", external data" if external else "")
    # The exporter warns that torchvision ops are unavailable (none are used) and about a deprecated
    # pytree helper inside torch itself: neither concerns the user.
    logging.getLogger("torch.onnx._internal.exporter._registration").setLevel(logging.ERROR)
    with torch.no_grad(), warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)
        program = torch.onnx.export(
            step,
            example,
            input_names=list(INPUT_NAMES),
            output_names=list(OUTPUT_NAMES),
            opset_version=OPSET,
            dynamo=True,
            verbose=False,
        )
    program.model.metadata_props.update(metadata)
    onnx_path = out_dir / ENCODER_FILE
    program.save(str(onnx_path), external_data=external)
    log.info("ONNX written (%.1f s)", time.perf_counter() - t0)
    onnx.checker.check_model(str(onnx_path))  # path form: works with external data

    files = {p.name: describe_file(p) for p in sorted(out_dir.iterdir()) if p.name.startswith(ENCODER_FILE)}
    enc = cfg.encoder
    spec = EncoderSpec(
        file=ENCODER_FILE,
        precision="fp32",
        d_model=enc.d_model,
        num_layers=enc.num_layers,
        num_heads=enc.num_heads,
        head_dim=enc.head_dim,
        conv_kernel=enc.conv_kernel,
        embedding_dim=cfg.adaptor.output_dim,
        num_phonemes=cfg.phoneme_head.num_phonemes,
        inputs=inputs,
        outputs=outputs,
    )
    return spec, files


def _spec(name: str, tensor) -> TensorSpec:
    return TensorSpec(name, tuple(tensor.shape), str(tensor.dtype).removeprefix("torch."))
