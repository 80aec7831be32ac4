"""The checkpoint directory: what `nim4-edge export` reads.

    CKPT/
      config.json            Nim4Config: format + version, encoder, adaptor, phoneme_head, fbank, streaming
      acoustic.safetensors   encoder.*, adaptor.*, phoneme_head.* (float32, float16 or bfloat16)
      phonemes.txt           phoneme inventory: '# <version>' then one symbol per line, blank first
      cmvn.json              {"mean": [F], "inv_std": [F]} global CMVN over fbank bins
      decoder/               Hugging Face Qwen3 folder: config.json, *.safetensors, tokenizer.json,
                             tokenizer_config.json (chat special tokens <|im_start|>, <|im_end|>)

`read_checkpoint` checks everything it can without loading tensor data (names and shapes come from
the safetensors header) and raises CheckpointError naming the file and the tensor at the first problem.
"""

from __future__ import annotations

import json
import logging
import time
from dataclasses import dataclass
from pathlib import Path

import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import save_file
from transformers import Qwen3Config, Qwen3ForCausalLM

from nim4_edge.export.config import DecoderConfig, Nim4Config, preset
from nim4_edge.export.model import Nim4AcousticModel, count_parameters
from nim4_edge.export.tokenizer import DEFAULT_CORPUS, save_hf_tokenizer, train_bpe_tokenizer
from nim4_edge.runtime.atomic import atomic_directory
from nim4_edge.runtime.errors import CheckpointError
from nim4_edge.runtime.features import Cmvn
from nim4_edge.runtime.phonemes import PhonemeInventory

log = logging.getLogger(__name__)

CONFIG_FILE = "config.json"
ACOUSTIC_FILE = "acoustic.safetensors"
PHONEMES_FILE = "phonemes.txt"
CMVN_FILE = "cmvn.json"
DECODER_DIR = "decoder"
REQUIRED_FILES = (
    CONFIG_FILE,
    ACOUSTIC_FILE,
    PHONEMES_FILE,
    CMVN_FILE,
    f"{DECODER_DIR}/config.json",
    f"{DECODER_DIR}/tokenizer.json",
)
CHAT_SPECIAL_TOKENS = ("<|im_start|>", "<|im_end|>")


@dataclass(frozen=True)
class Checkpoint:
    path: Path
    config: Nim4Config
    phonemes: PhonemeInventory
    cmvn: Cmvn
    decoder_config: dict  # the HF Qwen3 config.json

    @property
    def decoder_dir(self) -> Path:
        return self.path / DECODER_DIR

    def load_acoustic_model(self):
        """The PyTorch reference (eval mode, float32) with the checkpoint's weights."""
        model = Nim4AcousticModel(self.config)
        state = {}
        with safe_open(str(self.path / ACOUSTIC_FILE), framework="pt") as f:
            for name in f.keys():
                state[name] = f.get_tensor(name).to(torch.float32)
        model.load_state_dict(state, strict=True)  # names and shapes were checked by read_checkpoint
        return model.eval()


def _read_json(path: Path) -> dict:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise CheckpointError(f"{path}: not readable JSON ({e}); re-create the file") from None
    if not isinstance(data, dict):
        raise CheckpointError(f"{path}: expected a JSON object")
    return data


def read_checkpoint(path: Path) -> Checkpoint:
    """Open and validate a checkpoint directory (see the module docstring)."""
    path = Path(path)
    if not path.is_dir():
        raise CheckpointError(f"{path}: no such checkpoint directory (create one with `nim4-edge init`)")
    for name in REQUIRED_FILES:
        if not (path / name).is_file():
            raise CheckpointError(f"{path / name}: missing; a checkpoint needs {', '.join(REQUIRED_FILES)}")

    try:
        config = Nim4Config.from_json(_read_json(path / CONFIG_FILE))
    except (ValueError, TypeError, KeyError) as e:
        raise CheckpointError(f"{path / CONFIG_FILE}: {e}") from None
    try:
        phonemes = PhonemeInventory.from_text((path / PHONEMES_FILE).read_text(encoding="utf-8"), str(path / PHONEMES_FILE))
        cmvn = Cmvn.from_json(_read_json(path / CMVN_FILE))
    except (ValueError, TypeError, KeyError, UnicodeDecodeError) as e:
        raise CheckpointError(f"{e}") from None

    if len(phonemes) != config.phoneme_head.num_phonemes:
        raise CheckpointError(
            f"{path / PHONEMES_FILE}: {len(phonemes)} phonemes, but {CONFIG_FILE} says "
            f"phoneme_head.num_phonemes = {config.phoneme_head.num_phonemes}"
        )
    if cmvn.dim != config.fbank.num_mel_bins:
        raise CheckpointError(
            f"{path / CMVN_FILE}: {cmvn.dim} bins, but {CONFIG_FILE} says num_mel_bins = {config.fbank.num_mel_bins}"
        )

    decoder_config = _read_json(path / DECODER_DIR / "config.json")
    if decoder_config.get("model_type") != "qwen3":
        raise CheckpointError(
            f"{path / DECODER_DIR / 'config.json'}: model_type is {decoder_config.get('model_type')!r}, expected 'qwen3'"
        )
    hidden = decoder_config.get("hidden_size")
    if hidden != config.adaptor.output_dim:
        raise CheckpointError(
            f"{path / DECODER_DIR / 'config.json'}: hidden_size {hidden} != adaptor.output_dim "
            f"{config.adaptor.output_dim} in {CONFIG_FILE}; the adaptor must project into the decoder's width"
        )
    _check_tokenizer(path / DECODER_DIR / "tokenizer.json")
    checkpoint = Checkpoint(path, config, phonemes, cmvn, decoder_config)
    _check_acoustic_tensors(checkpoint)
    return checkpoint


def _check_tokenizer(tokenizer_file: Path) -> None:
    data = _read_json(tokenizer_file)
    added = {t.get("content") for t in data.get("added_tokens", []) if t.get("special")}
    missing = [t for t in CHAT_SPECIAL_TOKENS if t not in added]
    if missing:
        raise CheckpointError(f"{tokenizer_file}: special token(s) {missing} missing; the prompt template needs them")


def _check_acoustic_tensors(checkpoint: Checkpoint) -> None:
    """Compare tensor names and shapes in the safetensors header with the model the config describes."""
    file = checkpoint.path / ACOUSTIC_FILE
    with torch.device("meta"):
        expected = {k: tuple(v.shape) for k, v in Nim4AcousticModel(checkpoint.config).state_dict().items()}
    try:
        with safe_open(str(file), framework="pt") as f:
            found = {name: tuple(f.get_slice(name).get_shape()) for name in f.keys()}
    except (SafetensorError, OSError) as e:
        raise CheckpointError(f"{file}: not a readable safetensors file ({e})") from None
    for name, shape in expected.items():
        if name not in found:
            raise CheckpointError(f"{file}: tensor {name!r} is missing (expected shape {list(shape)})")
        if found[name] != shape:
            raise CheckpointError(
                f"{file}: tensor {name!r} has shape {list(found[name])}, but {CONFIG_FILE} implies {list(shape)}"
            )
    unexpected = sorted(set(found) - set(expected))
    if unexpected:
        raise CheckpointError(f"{file}: unexpected tensor {unexpected[0]!r} (not part of the configured model)")


def init_checkpoint(path: Path, preset_name: str, seed: int, overwrite: bool = False, decoder_shape: str | None = None) -> Path:
    """Write a random-weight checkpoint of the given preset's shape (optionally another decoder
    shape, see config.DECODER_SHAPES). Returns the directory."""
    inventory = PhonemeInventory.default()
    chosen = preset(preset_name, len(inventory), decoder_shape)
    with atomic_directory(Path(path), overwrite=overwrite) as tmp:
        t0 = time.perf_counter()
        torch.manual_seed(seed)
        model = Nim4AcousticModel(chosen.model)
        log.info("acoustic model: %.1fM parameters (%.1f s)", count_parameters(model) / 1e6, time.perf_counter() - t0)
        save_file(
            {k: v.contiguous() for k, v in model.state_dict().items()},
            str(tmp / ACOUSTIC_FILE),
            metadata={"format": "nim4-acoustic", "preset": preset_name, "seed": str(seed)},
        )
        del model
        (tmp / CONFIG_FILE).write_text(json.dumps(chosen.model.to_json(), indent=2) + "\n", encoding="utf-8")
        (tmp / PHONEMES_FILE).write_text(inventory.to_text(), encoding="utf-8")
        # Random weights have no training data to take statistics from: identity CMVN.
        cmvn = Cmvn.identity(chosen.model.fbank.num_mel_bins)
        (tmp / CMVN_FILE).write_text(json.dumps(cmvn.to_json()) + "\n", encoding="utf-8")

        t0 = time.perf_counter()
        write_random_decoder(tmp / DECODER_DIR, chosen.decoder, seed)
        log.info("decoder folder written (%.1f s)", time.perf_counter() - t0)
    return Path(path)


def write_checkpoint(path: Path, model, cmvn: Cmvn, decoder, decoder_tokenizer, overwrite: bool = False,
                     metadata: dict | None = None) -> Path:
    """Write a trained checkpoint: `model` a Nim4AcousticModel, `decoder` an HF Qwen3ForCausalLM and
    its tokenizer (anything with save_pretrained). All in float32; atomic."""
    inventory = PhonemeInventory.default()
    if model.cfg.phoneme_head.num_phonemes != len(inventory):
        raise ValueError("the model's phoneme head does not match the default phoneme inventory")
    with atomic_directory(Path(path), overwrite=overwrite) as tmp:
        save_file({k: v.detach().float().contiguous() for k, v in model.state_dict().items()},
                  str(tmp / ACOUSTIC_FILE), metadata={"format": "nim4-acoustic", **(metadata or {})})
        (tmp / CONFIG_FILE).write_text(json.dumps(model.cfg.to_json(), indent=2) + "\n", encoding="utf-8")
        (tmp / PHONEMES_FILE).write_text(inventory.to_text(), encoding="utf-8")
        (tmp / CMVN_FILE).write_text(json.dumps(cmvn.to_json()) + "\n", encoding="utf-8")
        decoder.save_pretrained(str(tmp / DECODER_DIR))
        decoder_tokenizer.save_pretrained(str(tmp / DECODER_DIR))
    read_checkpoint(Path(path))  # what was written must read back
    return Path(path)


def write_random_decoder(directory: Path, shape: DecoderConfig, seed: int, corpus=None,
                         tokenizer_vocab: int = 512) -> None:
    """A random-weight HF Qwen3 folder of `shape`, with a BPE tokenizer of `tokenizer_vocab` entries
    trained on `corpus` (default: tokenizer.DEFAULT_CORPUS)."""
    directory.mkdir()
    tokenizer = train_bpe_tokenizer(corpus or DEFAULT_CORPUS, vocab_size=tokenizer_vocab)
    num_tokens = tokenizer.get_vocab_size(with_added_tokens=True)
    # Embedding rows: the preset's (151,936 for the full Qwen3 shape) or the tokenizer size rounded up
    # to a multiple of 64, as Qwen pads its vocabulary.
    vocab_size = shape.vocab_size or (num_tokens + 63) // 64 * 64
    if vocab_size < num_tokens:
        raise ValueError(f"decoder vocab_size {vocab_size} < tokenizer size {num_tokens}")
    save_hf_tokenizer(tokenizer, directory)
    special = {t: tokenizer.token_to_id(t) for t in ("<|endoftext|>", "<|im_start|>", "<|im_end|>")}
    config = Qwen3Config(
        vocab_size=vocab_size,
        hidden_size=shape.hidden_size,
        intermediate_size=shape.intermediate_size,
        num_hidden_layers=shape.num_hidden_layers,
        num_attention_heads=shape.num_attention_heads,
        num_key_value_heads=shape.num_key_value_heads,
        head_dim=shape.head_dim,
        max_position_embeddings=shape.max_position_embeddings,
        rope_parameters={"rope_type": "default", "rope_theta": shape.rope_theta},
        rms_norm_eps=shape.rms_norm_eps,
        tie_word_embeddings=shape.tie_word_embeddings,
        bos_token_id=special["<|endoftext|>"],
        eos_token_id=special["<|im_end|>"],
        pad_token_id=special["<|endoftext|>"],
    )
    # Qwen3 is published in bfloat16; the full-size random model is kept in bf16 (3.4 GB instead of
    # 6.8 GB). The tiny one stays float32 so conversions can be checked to the last digit.
    dtype = torch.bfloat16 if shape.hidden_size >= 1024 else torch.float32
    torch.manual_seed(seed + 1)
    model = Qwen3ForCausalLM._from_config(config, dtype=dtype)
    model.save_pretrained(str(directory))
