"""`nim4-edge export`: checkpoint -> bundle (manifest.json + the streaming encoder step as ONNX).

The graph is exported with torch.onnx's dynamo exporter at fixed shapes. Chunk geometry and model
dims go into the ONNX metadata too, so a graph found on its own still says what it is. Everything is
written to a temporary directory and renamed into place only after (optional) verification passed.
"""

from __future__ import annotations

import json
import logging
import time
import warnings
from pathlib import Path

from nim4_edge.export.checkpoint import Checkpoint, read_checkpoint
from nim4_edge.runtime import __version__
from nim4_edge.runtime.atomic import atomic_directory
from nim4_edge.runtime.bundle import MANIFEST_FILE, EncoderSpec, Manifest, TensorSpec, describe_file
from nim4_edge.runtime.errors import Nim4Error

log = logging.getLogger(__name__)

ENCODER_FILE = "encoder.onnx"
OPSET = 18
# Protobuf cannot hold more than 2 GiB; above this many parameter bytes the weights go to a side file.
EXTERNAL_DATA_THRESHOLD_BYTES = 1_500_000_000


class VerificationFailed(Nim4Error):
    def __init__(self, report: dict):
        self.report = report
        super().__init__(
            f"streaming ONNX differs from the PyTorch reference by more than {report['tolerance']:g} "
            f"(phoneme log-probs {report['max_abs_diff_phoneme_log_probs']:.3g}, "
            f"embeddings {report['max_abs_diff_embeddings']:.3g}); no bundle was written"
        )


def export_bundle(
    checkpoint_path: Path,
    bundle_path: Path,
    overwrite: bool = False,
    verify: bool = False,
    verify_options=None,
) -> dict | None:
    """Export a checkpoint to a bundle. Returns the verification report when `verify`."""
    checkpoint = read_checkpoint(checkpoint_path)
    report = None
    with atomic_directory(Path(bundle_path), overwrite=overwrite) as tmp:
        manifest = write_encoder(checkpoint, tmp)
        (tmp / MANIFEST_FILE).write_text(json.dumps(manifest.to_json(), indent=1) + "\n", encoding="utf-8")
        if verify:
            from nim4_edge.export.verify import VerifyOptions, verify_bundle

            report = verify_bundle(checkpoint, tmp, verify_options or VerifyOptions())
            report["bundle"] = str(bundle_path)
            if not report["passed"]:
                raise VerificationFailed(report)
    return report


def write_encoder(checkpoint: Checkpoint, out_dir: Path) -> Manifest:
    """Export the encoder step into `out_dir` and return the bundle manifest describing it."""
    import onnx
    import torch

    from nim4_edge.export.model import count_parameters
    from nim4_edge.export.streaming import INPUT_NAMES, OUTPUT_NAMES, StreamingEncoderStep

    cfg = checkpoint.config
    t0 = time.perf_counter()
    model = checkpoint.load_acoustic_model()
    step = StreamingEncoderStep(model).eval()
    num_params = count_parameters(model)
    log.info("loaded %.1fM-parameter acoustic model (%.1f s)", num_params / 1e6, time.perf_counter() - t0)

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
        "nim4.phoneme_inventory": checkpoint.phonemes.version,
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
    return Manifest(
        fbank=cfg.fbank,
        cmvn=checkpoint.cmvn,
        streaming=cfg.streaming,
        phonemes=checkpoint.phonemes,
        encoder=EncoderSpec(
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
        ),
        decoder={"hidden_size": checkpoint.decoder_config["hidden_size"]},
        files=files,
        created_by=f"nim4-edge {__version__}",
        source={"checkpoint": str(checkpoint.path.resolve()), "acoustic_parameters": num_params},
    )


def _spec(name: str, tensor) -> TensorSpec:
    return TensorSpec(name, tuple(tensor.shape), str(tensor.dtype).removeprefix("torch."))
