"""`nim4-edge quantize BUNDLE --decoder Q4_K_M,...`: GGUF quantization through llama-cpp-python, and
how far each level's greedy output agrees with the unquantized decoder.

k-quants (Q*_K*) need every matrix's input dimension divisible by 256; llama.cpp falls back to
Q5_0/Q8_0 per tensor otherwise (docs/FACTS.md), so the tiny and demo decoders use multiples of 256.
Agreement is measured on text prompts in the speech slot (the same prompt template), teacher-forced
along the reference's greedy path, so one early flip does not hide the rest.
"""

from __future__ import annotations

import json
import logging
import os
import tempfile
import time
from pathlib import Path

import llama_cpp
import numpy as np

from nim4_edge.runtime.atomic import set_default_permissions, write_text_atomic
from nim4_edge.runtime.bundle import MANIFEST_FILE, Bundle, decoder_file_name, describe_file
from nim4_edge.runtime.decoder import DecoderSession, DecoderSettings, _quiet_llama_logs
from nim4_edge.runtime.errors import Nim4Error

log = logging.getLogger(__name__)

# Level name -> llama_ftype constant name in llama_cpp.
LEVELS = {
    "Q8_0": "LLAMA_FTYPE_MOSTLY_Q8_0",
    "Q6_K": "LLAMA_FTYPE_MOSTLY_Q6_K",
    "Q5_K_M": "LLAMA_FTYPE_MOSTLY_Q5_K_M",
    "Q4_K_M": "LLAMA_FTYPE_MOSTLY_Q4_K_M",
    "Q4_0": "LLAMA_FTYPE_MOSTLY_Q4_0",
}
UNQUANTIZED = ("f32", "f16")

# Prompts for the agreement check: in-car requests in both languages, put where speech would go.
AGREEMENT_PROMPTS = (
    "navigate to the nearest charging station",
    "call mom on her mobile phone",
    "play the next song",
    "set the temperature to twenty two degrees",
    "open the driver window halfway",
    "turn the volume up to seven",
    "导航到最近的充电站",
    "打电话给妈妈",
    "把空调温度调到二十二度",
    "打开主驾车窗",
    "yes",
    "取消",
)


def parse_levels(text: str) -> list[str]:
    levels = [part.strip() for part in text.split(",") if part.strip()]
    unknown = [lv for lv in levels if lv not in LEVELS]
    if unknown or not levels:
        raise Nim4Error(f"unknown decoder quant level {unknown or text!r}; choose from {', '.join(LEVELS)}")
    return levels


def quantize_file(src: Path, dst: Path, level: str, threads: int = 0) -> None:
    """Quantize GGUF `src` into `dst` (written to a temporary name first)."""
    _quiet_llama_logs()
    params = llama_cpp.llama_model_quantize_default_params()
    params.nthread = threads or os.cpu_count() or 1
    params.ftype = getattr(llama_cpp, LEVELS[level])
    fd, tmp = tempfile.mkstemp(prefix=f".{dst.name}.tmp-", dir=dst.parent)
    os.close(fd)
    try:
        rc = llama_cpp.llama_model_quantize(str(src).encode(), tmp.encode(), params)
        if rc != 0:
            raise Nim4Error(f"llama.cpp failed to quantize {src} to {level} (code {rc})")
        set_default_permissions(Path(tmp))
        os.replace(tmp, dst)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


def quantize_bundle(bundle_path: Path, levels: list[str], make_default: str | None = None,
                    agreement: bool = True, threads: int = 0) -> dict:
    """Add quantized decoder variants to a bundle and update its manifest. Returns a report. Any
    family: the decoder section is the same for all."""
    bundle = Bundle.load(bundle_path, family=None)
    spec = bundle.manifest.decoder
    source = next((v for v in UNQUANTIZED if v in spec.variants), None)
    if source is None:
        raise Nim4Error(f"{bundle_path}: no f32/f16 decoder to quantize from; re-export the bundle")
    if make_default and make_default not in set(levels) | set(spec.variants):
        raise Nim4Error(f"--make-default {make_default}: not among the bundle's variants or the levels asked for")
    variants = dict(spec.variants)
    files = dict(bundle.manifest.files)
    report = {"bundle": str(bundle_path), "reference": source, "variants": {}}
    src = bundle.file(spec.variants[source])
    for level in levels:
        name = decoder_file_name(level)
        t0 = time.perf_counter()
        log.info("quantizing %s -> %s ...", src.name, name)
        quantize_file(src, bundle.file(name), level, threads)
        variants[level] = name
        files[name] = describe_file(bundle.file(name))
        report["variants"][level] = {"file": name, "bytes": files[name]["bytes"], "seconds": time.perf_counter() - t0}
        # The manifest is rewritten after each level, so an interrupted run keeps what it finished.
        _write_manifest(bundle, variants, files, make_default if make_default in variants else spec.default_variant)
    if agreement:
        bundle = Bundle.load(bundle_path, family=None)
        report["agreement"] = greedy_agreement(bundle, source, levels, threads=threads)
    return report


def _write_manifest(bundle: Bundle, variants: dict, files: dict, default: str) -> None:
    rewrite_manifest(bundle, {"decoder": {"variants": variants, "default_variant": default}, "files": files})


def rewrite_manifest(bundle: Bundle, updates: dict) -> None:
    """Replace top-level sections (`files`) or keys inside them ({"encoder": {"variants": ...}}),
    atomically."""
    data = json.loads((bundle.path / MANIFEST_FILE).read_text(encoding="utf-8"))
    for key, value in updates.items():
        if isinstance(value, dict) and key != "files":
            data[key].update(value)
        else:
            data[key] = value
    write_text_atomic(bundle.path / MANIFEST_FILE, json.dumps(data, indent=1, ensure_ascii=False) + "\n")


def greedy_agreement(bundle: Bundle, reference: str, variants: list[str], prompts=AGREEMENT_PROMPTS,
                     max_new_tokens: int = 24, threads: int = 0) -> dict:
    """For each variant: the share of prompts whose greedy output equals the reference's, and the
    share of reference output tokens that the variant also ranks first (teacher-forced)."""
    spec = bundle.manifest.decoder
    settings = DecoderSettings(kv_cache_type="f32", n_ctx=512, n_threads=threads, n_threads_batch=threads,
                               min_new_tokens=max_new_tokens, max_tokens_per_second=0.0)

    def run(variant: str):
        session = DecoderSession.open(bundle.decoder_file(variant), spec, settings, bundle.manifest.seconds_per_embedding)
        try:
            outputs = []
            for text in prompts:
                session.start_utterance()
                session.append_tokens(session.tokenize(text))
                outputs.append(session.final().token_ids)
            return session, outputs
        except BaseException:
            session.close()
            raise

    ref_session, ref_outputs = run(reference)
    pieces = [[*ref_session.prefix_ids, *ref_session.tokenize(text + spec.prompt.suffix()), *out]
              for text, out in zip(prompts, ref_outputs)]
    ref_session.close()
    result = {}
    for variant in variants:
        session, outputs = run(variant)
        try:
            matches = total = 0
            for sequence, ref_out in zip(pieces, ref_outputs):
                if not ref_out:
                    continue
                logits = session.score([sequence])  # (n, V); row i predicts token i + 1
                predicted = np.argmax(logits[len(sequence) - len(ref_out) - 1 : len(sequence) - 1], axis=1)
                matches += int((predicted == np.asarray(ref_out)).sum())
                total += len(ref_out)
        finally:
            session.close()
        result[variant] = {
            "prompts": len(prompts),
            "exact_match": sum(a == b for a, b in zip(outputs, ref_outputs)) / len(prompts),
            "teacher_forced_top1": matches / total if total else float("nan"),
            "reference_tokens": total,
        }
    return result
