"""A bundle back into a training checkpoint: `nim4-edge export`'s inverse, so a model that exists only
as a bundle (the shipped demo model: its training checkpoints were never kept) can be trained further.

    acoustic  the ONNX encoder step's weights. The exporter names some initializers after their
              parameters and turns others (transposed matrices) into anonymous constants, so the
              mapping is learned, not guessed: a fresh model of the same preset is exported by the
              same code, and each of its initializers is matched to the parameter whose values it
              holds (as is, or transposed). Both exports have the same graph, so the bundle's
              initializer of each name is that parameter's trained value.
    decoder   the f16/f32 GGUF's tensors under their Hugging Face names (export/gguf_convert.py's
              table, inverted; no transposes), a Qwen3 config from the GGUF's keys, and the
              byte-level BPE tokenizer rebuilt from the GGUF's tokens and merges (checked against
              the manifest's tokenizer probe).
    CMVN and phonemes from the manifest.
The import is checked by exporting it again: every encoder initializer and every decoder tensor must
equal the bundle's (f16 matrices read back as float32 are exact).
"""

from __future__ import annotations

import json
import logging
import tempfile
from pathlib import Path

import gguf
import numpy as np
import onnx
import torch
from onnx import numpy_helper
from tokenizers import Regex, Tokenizer, decoders, models, pre_tokenizers
from transformers import PreTrainedTokenizerFast, Qwen3Config, Qwen3ForCausalLM

from nim4_edge.export.checkpoint import read_checkpoint, write_checkpoint
from nim4_edge.export.config import PRESETS, preset
from nim4_edge.export.gguf_convert import convert_qwen3, gguf_tensor_name
from nim4_edge.export.model import Nim4AcousticModel
from nim4_edge.export.onnx_export import export_encoder_model
from nim4_edge.export.tokenizer import ENDOFTEXT, IM_END, IM_START, QWEN2_SPLIT_PATTERN
from nim4_edge.runtime.atomic import write_text_atomic
from nim4_edge.runtime.bundle import Bundle
from nim4_edge.runtime.errors import Nim4Error

log = logging.getLogger(__name__)


def _initializers(path: Path) -> dict[str, np.ndarray]:
    model = onnx.load(str(path), load_external_data=True)
    return {i.name: numpy_helper.to_array(i) for i in model.graph.initializer}


def _parameter_map(model: Nim4AcousticModel, fresh: dict[str, np.ndarray]) -> dict[str, tuple[str, bool]]:
    """initializer name -> (parameter name, transposed) for every parameter of `model`, from a fresh
    export of it (random values: no two parameters hold the same numbers). An initializer may hold a
    parameter reshaped (a bias unsqueezed for broadcasting) or transposed (a MatMul's right side)."""
    found: dict[str, tuple[str, bool]] = {}
    by_size: dict[int, list[str]] = {}
    for name, value in fresh.items():
        by_size.setdefault(value.size, []).append(name)
    for pname, param in model.state_dict().items():
        value = param.detach().numpy()
        if not param.is_floating_point():
            continue
        for transposed, candidate in ((False, value), (True, value.T if value.ndim == 2 else None)):
            if candidate is None:
                continue
            hit = next((n for n in by_size.get(candidate.size, []) if n not in found
                        and np.array_equal(fresh[n].ravel(), candidate.ravel())), None)
            if hit:
                found[hit] = (pname, transposed)
                break
        else:
            raise Nim4Error(f"parameter {pname} {tuple(value.shape)} is in no initializer of the exported graph")
    return found


def _preset_for(bundle: Bundle, num_phonemes: int):
    """The preset whose acoustic model has exactly the bundle's initializer names and shapes."""
    for name in PRESETS:
        cfg = preset(name, num_phonemes).model
        if cfg.encoder.d_model != bundle.manifest.encoder.d_model or cfg.adaptor.output_dim != bundle.manifest.encoder.embedding_dim:
            continue
        return name, cfg
    raise Nim4Error(f"{bundle.path}: no preset ({', '.join(PRESETS)}) has this encoder "
                    f"(d_model {bundle.manifest.encoder.d_model}, embeddings {bundle.manifest.encoder.embedding_dim})")


def import_acoustic(bundle: Bundle, work: Path) -> tuple[Nim4AcousticModel, str]:
    manifest = bundle.manifest
    shipped = _initializers(bundle.file(manifest.encoder.file_for("fp32")))
    name, cfg = _preset_for(bundle, len(manifest.phonemes))
    torch.manual_seed(0)
    model = Nim4AcousticModel(cfg).eval()
    with torch.no_grad():  # distinct values everywhere: the exporter shares equal constants (norms at 1, biases at 0)
        for key, value in model.state_dict().items():
            if value.is_floating_point():
                value.copy_(torch.rand_like(value) + 0.5 if "running_var" in key else torch.randn_like(value))
    export_encoder_model(model, manifest.phonemes.version, work)
    fresh = _initializers(work / manifest.encoder.file_for("fp32"))
    if {k: v.shape for k, v in fresh.items()} != {k: v.shape for k, v in shipped.items()}:
        raise Nim4Error(f"{bundle.path}: its encoder graph differs from preset {name!r} exported by this version")
    mapping = _parameter_map(model, fresh)
    state = model.state_dict()
    for init, (pname, transposed) in mapping.items():
        shape = state[pname].shape
        value = shipped[init].reshape(shape[::-1]).T if transposed else shipped[init].reshape(shape)
        state[pname] = torch.from_numpy(np.array(value)).to(state[pname].dtype)
    model.load_state_dict(state, strict=True)
    return model.eval(), name


def _field(reader: gguf.GGUFReader, key: str):
    part = reader.fields[key]
    value = part.parts[part.data[0]]
    return bytes(value).decode("utf-8") if part.types[0] == gguf.GGUFValueType.STRING else value.tolist()[0]


def _strings(reader: gguf.GGUFReader, key: str) -> list[str]:
    part = reader.fields[key]
    return [bytes(part.parts[i]).decode("utf-8") for i in part.data]


def import_decoder(bundle: Bundle):
    """(Qwen3ForCausalLM, tokenizer) from the bundle's most precise GGUF (f32, else f16)."""
    spec = bundle.manifest.decoder
    variant = next((v for v in ("f32", "f16") if v in spec.variants), None)
    if variant is None:
        raise Nim4Error(f"{bundle.path}: no f32 or f16 decoder to import (has {sorted(spec.variants)}); "
                        "a quantized one would lose precision")
    reader = gguf.GGUFReader(str(bundle.file(spec.file_for(variant))))
    arch = spec.architecture
    heads = _field(reader, f"{arch}.attention.head_count")
    config = Qwen3Config(
        vocab_size=spec.vocab_size, hidden_size=_field(reader, f"{arch}.embedding_length"),
        intermediate_size=_field(reader, f"{arch}.feed_forward_length"), num_hidden_layers=spec.num_layers,
        num_attention_heads=heads, num_key_value_heads=_field(reader, f"{arch}.attention.head_count_kv"),
        head_dim=_field(reader, f"{arch}.attention.key_length"), max_position_embeddings=spec.context_length,
        rope_parameters={"rope_type": "default", "rope_theta": float(_field(reader, f"{arch}.rope.freq_base"))},
        rms_norm_eps=float(_field(reader, f"{arch}.attention.layer_norm_rms_epsilon")),
        tie_word_embeddings="output.weight" not in {t.name for t in reader.tensors},
        bos_token_id=spec.token_ids["endoftext"], eos_token_id=spec.token_ids["im_end"],
        pad_token_id=spec.token_ids["endoftext"])
    decoder = Qwen3ForCausalLM._from_config(config, dtype=torch.float32)
    tensors = {t.name: t for t in reader.tensors}
    state = decoder.state_dict()
    for name in state:
        if config.tie_word_embeddings and name == "lm_head.weight":
            continue
        tensor = tensors[gguf_tensor_name(name, spec.num_layers)]
        value = np.asarray(tensor.data, dtype=np.float32).reshape(state[name].shape)
        state[name] = torch.from_numpy(value.copy())
    decoder.load_state_dict(state, strict=True)

    tokens, merges = _strings(reader, "tokenizer.ggml.tokens"), _strings(reader, "tokenizer.ggml.merges")
    types = [int(reader.fields["tokenizer.ggml.token_type"].parts[i][0]) for i in reader.fields["tokenizer.ggml.token_type"].data]
    special = [t for t, kind in zip(tokens, types) if kind == gguf.TokenType.CONTROL]
    vocab = {t: i for i, (t, kind) in enumerate(zip(tokens, types)) if kind == gguf.TokenType.NORMAL}
    bpe = Tokenizer(models.BPE(vocab, [tuple(m.split(" ", 1)) for m in merges]))
    bpe.pre_tokenizer = pre_tokenizers.Sequence([pre_tokenizers.Split(Regex(QWEN2_SPLIT_PATTERN), behavior="isolated"),
                                                 pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False)])
    bpe.decoder = decoders.ByteLevel()
    bpe.add_special_tokens(special)
    tokenizer = PreTrainedTokenizerFast(tokenizer_object=bpe, eos_token=IM_END, pad_token=ENDOFTEXT,
                                        additional_special_tokens=[IM_START, IM_END], clean_up_tokenization_spaces=False)
    probe = spec.tokenizer_probe
    got = tokenizer(probe["text"], add_special_tokens=False)["input_ids"]
    if got != list(probe["ids"]):
        raise Nim4Error(f"{bundle.path}: the rebuilt tokenizer gives {got[:8]}... for the manifest's probe, "
                        f"not {list(probe['ids'])[:8]}...")
    return decoder, tokenizer


def largest_difference(a, b) -> float:
    """max |a - b|, where equal values (infinities of the graph's masks included) differ by 0."""
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    if a.shape != b.shape:
        return float("inf")
    with np.errstate(invalid="ignore"):  # inf - inf where both hold a mask's infinity: masked out
        return float(np.max(np.where(a == b, 0.0, np.abs(a - b)), initial=0.0))


def check_import(bundle: Bundle, checkpoint: Path) -> dict:
    """Export the checkpoint again and compare with the bundle: largest |difference| per part."""
    manifest = bundle.manifest
    with tempfile.TemporaryDirectory(prefix="nim4-import-check-") as tmp:
        ckpt = read_checkpoint(checkpoint)
        export_encoder_model(ckpt.load_acoustic_model(), manifest.phonemes.version, Path(tmp))
        again = _initializers(Path(tmp) / manifest.encoder.file_for("fp32"))
        shipped = _initializers(bundle.file(manifest.encoder.file_for("fp32")))
        encoder = max(largest_difference(again[k], shipped[k]) for k in shipped if shipped[k].size)
        variant = next(v for v in ("f32", "f16") if v in manifest.decoder.variants)
        convert_qwen3(ckpt.decoder_dir, Path(tmp) / "d.gguf", variant, progress=False)
        a = {t.name: t for t in gguf.GGUFReader(str(Path(tmp) / "d.gguf")).tensors}
        b = {t.name: t for t in gguf.GGUFReader(str(bundle.file(manifest.decoder.file_for(variant)))).tensors}
        if set(a) != set(b):
            raise Nim4Error(f"re-exported decoder tensors differ: {sorted(set(a) ^ set(b))[:3]}")
        decoder = max(largest_difference(a[k].data, b[k].data) for k in b)
    return {"encoder_max_abs_diff": encoder, "decoder_max_abs_diff": decoder}


def import_bundle(bundle_dir: Path, out: Path, overwrite: bool = False) -> dict:
    """Write a checkpoint at `out` that `nim4-edge export` turns back into the bundle's weights."""
    bundle = Bundle.load(bundle_dir)
    with tempfile.TemporaryDirectory(prefix="nim4-import-") as tmp:
        model, preset_name = import_acoustic(bundle, Path(tmp))
    decoder, tokenizer = import_decoder(bundle)
    write_checkpoint(out, model, bundle.manifest.cmvn, decoder, tokenizer, overwrite=overwrite,
                     metadata={"imported_from": str(bundle.path), "preset": preset_name})
    report = {"checkpoint": str(out), "preset": preset_name, **check_import(bundle, out)}
    write_text_atomic(Path(out) / "imported.json", json.dumps(report, indent=1) + "\n")
    return report
