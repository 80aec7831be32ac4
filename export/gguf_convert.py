"""Hugging Face Qwen3 folder -> GGUF (f32 or f16) for llama.cpp, with the PyPI `gguf` package.

Tensor names come from one declarative table (HF name -> gguf.MODEL_TENSOR); any tensor the table
cannot map is an error, never skipped silently. Hyperparameters: every key whose absence makes
llama.cpp fail or silently compute something else (docs/FACTS.md: key/value length, rope base, rms eps,
tokenizer pre "qwen2", token types, merges, vocabulary padded to the embedding rows).

Tensors are streamed one at a time from the safetensors files into the GGUF, so converting the 1.7B
decoder needs about one tensor of extra memory, not the whole model.
"""

from __future__ import annotations

import json
import logging
import re
from dataclasses import dataclass
from pathlib import Path

import gguf
import numpy as np
import torch
from gguf import MODEL_TENSOR as T
from gguf import TENSOR_NAMES, TokenType
from safetensors import safe_open
from tokenizers import Tokenizer
from tqdm import tqdm

from nim4_edge.runtime.bundle import DecoderSpec, decoder_file_name, describe_file
from nim4_edge.runtime.errors import CheckpointError
from nim4_edge.runtime.prompt import PromptTemplate

log = logging.getLogger(__name__)

ARCHITECTURE = "qwen3"
GGUF_TYPES = ("f32", "f16")


def _qwen3_table():
    """HF Qwen3 tensor name -> GGUF tensor (source: transformers' modeling_qwen3 parameter names,
    llama.cpp's gguf-py MODEL_TENSORS[QWEN3])."""
    return {
        "model.embed_tokens.weight": T.TOKEN_EMBD,
        "model.norm.weight": T.OUTPUT_NORM,
        "lm_head.weight": T.OUTPUT,
        "model.layers.{bid}.input_layernorm.weight": T.ATTN_NORM,
        "model.layers.{bid}.self_attn.q_proj.weight": T.ATTN_Q,
        "model.layers.{bid}.self_attn.k_proj.weight": T.ATTN_K,
        "model.layers.{bid}.self_attn.v_proj.weight": T.ATTN_V,
        "model.layers.{bid}.self_attn.o_proj.weight": T.ATTN_OUT,
        "model.layers.{bid}.self_attn.q_norm.weight": T.ATTN_Q_NORM,
        "model.layers.{bid}.self_attn.k_norm.weight": T.ATTN_K_NORM,
        "model.layers.{bid}.post_attention_layernorm.weight": T.FFN_NORM,
        "model.layers.{bid}.mlp.gate_proj.weight": T.FFN_GATE,
        "model.layers.{bid}.mlp.up_proj.weight": T.FFN_UP,
        "model.layers.{bid}.mlp.down_proj.weight": T.FFN_DOWN,
    }


def gguf_tensor_name(hf_name: str, num_layers: int) -> str:
    """The GGUF name of an HF Qwen3 tensor; raises CheckpointError for anything not in the table."""
    for pattern, tensor in _qwen3_table().items():
        regex = "^" + re.escape(pattern).replace(r"\{bid\}", r"(\d+)") + "$"
        match = re.match(regex, hf_name)
        if match:
            bid = int(match.group(1)) if match.groups() else None
            if bid is not None and bid >= num_layers:
                raise CheckpointError(f"tensor {hf_name!r}: layer {bid} but the config has {num_layers} layers")
            return TENSOR_NAMES[tensor].format(bid=bid) + ".weight"
    raise CheckpointError(f"tensor {hf_name!r} has no GGUF mapping for Qwen3; is this a Qwen3 checkpoint?")


@dataclass(frozen=True)
class TokenizerFacts:
    tokens: list[str]  # padded to the embedding rows
    token_types: list[int]  # gguf.TokenType values
    merges: list[str]
    special_ids: dict[str, int]


def read_tokenizer(decoder_dir: Path, vocab_size: int) -> TokenizerFacts:
    """Byte-level BPE vocabulary, types and merges from tokenizer.json, padded to `vocab_size` rows."""
    path = decoder_dir / "tokenizer.json"
    data = json.loads(path.read_text(encoding="utf-8"))
    model = data.get("model", {})
    if model.get("type") != "BPE":
        raise CheckpointError(f"{path}: tokenizer model is {model.get('type')!r}; Qwen3 needs byte-level BPE")
    by_id: dict[int, tuple[str, int]] = {i: (tok, TokenType.NORMAL) for tok, i in model["vocab"].items()}
    special_ids = {}
    for added in data.get("added_tokens", []):
        kind = TokenType.CONTROL if added.get("special") else TokenType.USER_DEFINED
        by_id[added["id"]] = (added["content"], kind)
        special_ids[added["content"]] = added["id"]
    if max(by_id) >= vocab_size:
        raise CheckpointError(f"{path}: token id {max(by_id)} >= the model's {vocab_size} embedding rows")
    tokens, types = [], []
    for i in range(vocab_size):
        token, kind = by_id.get(i, (f"[PAD{i}]", TokenType.UNUSED))
        tokens.append(token)
        types.append(int(kind))
    merges = [m if isinstance(m, str) else " ".join(m) for m in model.get("merges", [])]
    return TokenizerFacts(tokens, types, merges, special_ids)


def _safetensors_index(decoder_dir: Path) -> dict[str, Path]:
    files = sorted(decoder_dir.glob("*.safetensors"))
    if not files:
        raise CheckpointError(f"{decoder_dir}: no *.safetensors weights")

    index = {}
    for file in files:
        with safe_open(str(file), framework="pt") as f:
            for name in f.keys():
                index[name] = file
    return index


def convert_qwen3(decoder_dir: Path, out_path: Path, out_type: str = "f32", progress: bool = True) -> dict:
    """Write `out_path` (a GGUF) from an HF Qwen3 folder. Returns the facts the manifest records."""
    if out_type not in GGUF_TYPES:
        raise ValueError(f"GGUF type {out_type!r}: choose one of {GGUF_TYPES}")
    config = json.loads((decoder_dir / "config.json").read_text(encoding="utf-8"))
    if config.get("model_type") != ARCHITECTURE:
        raise CheckpointError(f"{decoder_dir / 'config.json'}: model_type {config.get('model_type')!r}, expected 'qwen3'")
    n_layers = int(config["num_hidden_layers"])
    n_heads = int(config["num_attention_heads"])
    head_dim = int(config.get("head_dim") or config["hidden_size"] // n_heads)
    # transformers >= 5 keeps rope theta in rope_parameters; older configs have rope_theta at the top.
    rope_theta = float((config.get("rope_parameters") or {}).get("rope_theta") or config.get("rope_theta") or 0)
    if not rope_theta:
        raise CheckpointError(f"{decoder_dir / 'config.json'}: no rope_theta; llama.cpp would silently use 10000")
    tied = bool(config.get("tie_word_embeddings", False))
    tok = read_tokenizer(decoder_dir, int(config["vocab_size"]))

    index = _safetensors_index(decoder_dir)
    names = [n for n in index if not (tied and n == "lm_head.weight")]  # tied: llama.cpp reuses token_embd
    mapped = {n: gguf_tensor_name(n, n_layers) for n in names}
    required = {"token_embd.weight", "output_norm.weight"} | {
        f"blk.{i}.{part}.weight" for i in range(n_layers)
        for part in ("attn_norm", "attn_q", "attn_k", "attn_v", "attn_output", "attn_q_norm", "attn_k_norm",
                     "ffn_norm", "ffn_gate", "ffn_up", "ffn_down")
    }
    missing = sorted(required - set(mapped.values()))
    if missing:
        raise CheckpointError(f"{decoder_dir}: tensor {missing[0]!r} (GGUF name) has no source tensor")

    writer = gguf.GGUFWriter(str(out_path), ARCHITECTURE)
    writer.add_name(config.get("_name_or_path") or "nim4-decoder")
    writer.add_context_length(int(config["max_position_embeddings"]))
    writer.add_embedding_length(int(config["hidden_size"]))
    writer.add_block_count(n_layers)
    writer.add_feed_forward_length(int(config["intermediate_size"]))
    writer.add_head_count(n_heads)
    writer.add_head_count_kv(int(config["num_key_value_heads"]))
    writer.add_key_length(head_dim)  # Qwen3 head_dim (128) != hidden / heads (2048 / 16)
    writer.add_value_length(head_dim)
    writer.add_layer_norm_rms_eps(float(config["rms_norm_eps"]))
    writer.add_rope_freq_base(rope_theta)
    writer.add_file_type(gguf.LlamaFileType.ALL_F32 if out_type == "f32" else gguf.LlamaFileType.MOSTLY_F16)
    writer.add_tokenizer_model("gpt2")  # byte-level BPE
    writer.add_tokenizer_pre("qwen2")  # Qwen2/3 split regex; a missing one silently tokenizes differently
    writer.add_token_list(tok.tokens)
    writer.add_token_types(tok.token_types)
    writer.add_token_merges(tok.merges)
    writer.add_eos_token_id(tok.special_ids["<|im_end|>"])
    writer.add_pad_token_id(tok.special_ids["<|endoftext|>"])
    writer.add_bos_token_id(tok.special_ids["<|endoftext|>"])
    writer.add_add_bos_token(False)

    def target_dtype(gguf_name: str, ndim: int):
        # Norm weights and other vectors stay f32 (llama.cpp's convention); matrices take out_type.
        return np.float32 if out_type == "f32" or ndim == 1 else np.float16

    order = sorted(names, key=lambda n: _tensor_order(mapped[n]))
    shapes = {}
    for name in order:
        with safe_open(str(index[name]), framework="pt") as f:
            shapes[name] = tuple(f.get_slice(name).get_shape())
        dtype = target_dtype(mapped[name], len(shapes[name]))
        writer.add_tensor_info(mapped[name], shapes[name], np.dtype(dtype), int(np.prod(shapes[name])) * np.dtype(dtype).itemsize)
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_ti_data_to_file()
    iterator = order
    if progress:
        iterator = tqdm(order, desc=f"GGUF {out_type}", unit="tensor", leave=False)
    for name in iterator:
        with safe_open(str(index[name]), framework="pt") as f:
            tensor = f.get_tensor(name).to(torch.float32).numpy()  # bf16 cannot go to numpy directly
        dtype = target_dtype(mapped[name], tensor.ndim)
        if dtype == np.float16 and np.abs(tensor).max() > 65504:
            raise CheckpointError(f"tensor {name!r} exceeds the float16 range; export with --decoder-type f32")
        writer.write_tensor_data(tensor.astype(dtype))
    writer.close()
    return {
        "architecture": ARCHITECTURE,
        "hidden_size": int(config["hidden_size"]),
        "vocab_size": int(config["vocab_size"]),
        "num_layers": n_layers,
        "context_length": int(config["max_position_embeddings"]),
        "special_ids": tok.special_ids,
    }


def _tensor_order(gguf_name: str) -> tuple:
    """token_embd, blk.0.*, blk.1.*, ..., output_norm, output (the order llama.cpp's converter writes)."""
    match = re.match(r"blk\.(\d+)\.", gguf_name)
    if match:
        return (1, int(match.group(1)), gguf_name)
    return (0 if gguf_name.startswith("token_embd") else 2, 0, gguf_name)


def source_dtype(decoder_dir: Path) -> str:
    """'float32', 'bfloat16', ... of the first weight tensor (chooses the default GGUF type)."""
    index = _safetensors_index(decoder_dir)
    name = next(iter(index))
    with safe_open(str(index[name]), framework="pt") as f:
        return str(f.get_slice(name).get_dtype()).lower().replace("f32", "float32").replace("bf16", "bfloat16")


# A text that exercises the tokenizer where llama.cpp and HF could disagree (special tokens, spaces,
# digits, CJK, apostrophes); the manifest stores the HF ids and the runtime checks llama.cpp's.
PROBE_SPEECH_TEXT = "导航到 NIO House, 蔚来ES8 at 12:30 — call Mom's phone"
PROBE_HOTWORDS = ("NIO House", "惠新西街")


def write_decoder(checkpoint, out_dir: Path, gguf_type: str | None = None):
    """Convert the checkpoint's decoder into `out_dir`. Returns (DecoderSpec, {file: facts}).

    gguf_type None: f32 for float32 sources (exact parity), f16 for bf16/f16 sources.
    """
    decoder_dir = checkpoint.decoder_dir
    if gguf_type is None:
        gguf_type = "f32" if source_dtype(decoder_dir) == "float32" else "f16"
    name = decoder_file_name(gguf_type)
    log.info("converting the Qwen3 decoder to %s GGUF...", gguf_type)
    facts = convert_qwen3(decoder_dir, out_dir / name, gguf_type)

    prompt = PromptTemplate.from_paper()
    probe_text = prompt.full_text(PROBE_SPEECH_TEXT, PROBE_HOTWORDS)
    hf_tokenizer = Tokenizer.from_file(str(decoder_dir / "tokenizer.json"))
    probe_ids = hf_tokenizer.encode(probe_text, add_special_tokens=False).ids
    special = facts["special_ids"]
    spec = DecoderSpec(
        architecture=facts["architecture"],
        hidden_size=facts["hidden_size"],
        vocab_size=facts["vocab_size"],
        num_layers=facts["num_layers"],
        context_length=facts["context_length"],
        token_ids={"im_start": special["<|im_start|>"], "im_end": special["<|im_end|>"], "endoftext": special["<|endoftext|>"]},
        prompt=prompt,
        tokenizer_probe={"text": probe_text, "ids": list(probe_ids)},
        variants={gguf_type: name},
        default_variant=gguf_type,
    )
    return spec, {name: describe_file(out_dir / name)}
