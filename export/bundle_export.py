"""`nim4-edge export`: checkpoint -> bundle (manifest.json, encoder.onnx, decoder-<type>.gguf).

Everything is written to a temporary directory and renamed into place only after the (optional)
verification passed, so a failed export never leaves a bundle behind.
"""

from __future__ import annotations

import json
from pathlib import Path

from nim4_edge.export.checkpoint import read_checkpoint
from nim4_edge.export.gguf_convert import write_decoder
from nim4_edge.export.onnx_export import write_encoder
from nim4_edge.export.verify import VerifyOptions, verify_bundle
from nim4_edge.runtime import __version__
from nim4_edge.runtime.atomic import atomic_directory
from nim4_edge.runtime.bundle import MANIFEST_FILE, Manifest
from nim4_edge.runtime.errors import Nim4Error


class VerificationFailed(Nim4Error):
    def __init__(self, report: dict):
        self.report = report
        failed = [part for part in ("encoder", "decoder") if part in report and not report[part]["passed"]]
        super().__init__(f"parity check failed for the {' and '.join(failed)} (see the JSON report); no bundle was written")


def export_bundle(
    checkpoint_path: Path,
    bundle_path: Path,
    overwrite: bool = False,
    verify: bool = False,
    verify_options=None,
    decoder_type: str | None = None,
) -> dict | None:
    """Export a checkpoint to a bundle. Returns the verification report when `verify`."""
    checkpoint = read_checkpoint(checkpoint_path)
    report = None
    with atomic_directory(Path(bundle_path), overwrite=overwrite) as tmp:
        encoder_spec, encoder_files = write_encoder(checkpoint, tmp)
        decoder_spec, decoder_files = write_decoder(checkpoint, tmp, decoder_type)
        manifest = Manifest(
            fbank=checkpoint.config.fbank,
            cmvn=checkpoint.cmvn,
            streaming=checkpoint.config.streaming,
            phonemes=checkpoint.phonemes,
            encoder=encoder_spec,
            decoder=decoder_spec,
            files={**encoder_files, **decoder_files},
            created_by=f"nim4-edge {__version__}",
            source={"checkpoint": str(checkpoint.path.resolve())},
        )
        manifest.check_consistency()
        (tmp / MANIFEST_FILE).write_text(json.dumps(manifest.to_json(), indent=1, ensure_ascii=False) + "\n", encoding="utf-8")
        if verify:
            report = verify_bundle(checkpoint, tmp, verify_options or VerifyOptions())
            report["bundle"] = str(bundle_path)
            if not report["passed"]:
                raise VerificationFailed(report)
    return report
