"""A Hugging Face Qwen3-ASR folder -> a nim4-edge bundle of the "qwen3-asr" family.

    HF_DIR/config.json            Qwen3ASRConfig (audio_config + text_config), as transformers saves it
    HF_DIR/*.safetensors          model.audio_tower.*, model.multi_modal_projector.*, model.language_model.*
    HF_DIR/tokenizer.json         byte-level BPE with the audio and <asr_text> special tokens
    HF_DIR/preprocessor_config.json  (optional) the feature extractor's settings; defaults otherwise

becomes

    encoder-front-end.onnx   one 1 s chunk of log-mel (1, 128, 100) -> its 13 hidden rows, positions added
    encoder-window.onnx      the hidden rows of one 8 s window (1, n, d) -> decoder embeddings (1, n, D)
    decoder-f32|f16.gguf     the Qwen3 text model, through export/gguf_convert.py (the NIM4 converter)
    manifest.json            family "qwen3-asr": features, geometry, graphs, prompt, tokenizer probe

Why two graphs and not one step with a cache: the official encoder computes each 1 s chunk's conv
stack alone and attends only within 8 s windows (transformers' Qwen3ASREncoder: per-chunk conv, then
cu_seqlens windows), so a chunk's rows, once complete, never change, and a window's embeddings depend
on that window alone. The runtime keeps the current window's rows and re-runs only the window graph as
audio arrives; a completed window is final (runtime/qwen3_asr/encoder.py).

The graphs are written from our own modules over the official weights (plain matmul attention, no
packed-sequence kernels), so ONNX export sees static control flow; tests prove them equal to
`Qwen3ASRForConditionalGeneration`.
"""

from __future__ import annotations

import json
import logging
import shutil
import tempfile
import time
import warnings
from pathlib import Path

import onnx
import torch
import torch.nn.functional as F
from safetensors.torch import save_file
from tokenizers import Tokenizer
from torch import nn
from transformers import Qwen3ASRConfig, Qwen3ASRForConditionalGeneration

from nim4_edge.export.gguf_convert import PROBE_HOTWORDS, PROBE_SPEECH_TEXT, convert_qwen3, source_dtype
from nim4_edge.runtime import __version__
from nim4_edge.runtime.atomic import write_text_atomic
from nim4_edge.runtime.bundle import (
    MANIFEST_FILE, Bundle, DecoderSpec, WindowedEncoderSpec, WindowedManifest, decoder_file_name, describe_file)
from nim4_edge.runtime.errors import CheckpointError
from nim4_edge.runtime.prompt import CONTEXT_PLACEHOLDER, ContextFirstPrompt
from nim4_edge.runtime.qwen3_asr.encoder import post_cnn_length
from nim4_edge.runtime.qwen3_asr.features import LogMelOptions

log = logging.getLogger(__name__)

FAMILY = "qwen3-asr"
FRONT_END_FILE = "encoder-front-end.onnx"
WINDOW_FILE = "encoder-window.onnx"
OPSET = 18
AUDIO_START, AUDIO_PAD, AUDIO_END, ASR_TEXT = "<|audio_start|>", "<|audio_pad|>", "<|audio_end|>", "<asr_text>"
# The official prompt (transformers' Qwen3ASRProcessor.apply_transcription_request and the model's chat
# template): the context (hotwords) is the system turn, the audio the user turn, the answer
# "language X<asr_text>text" the assistant's; forcing a language prefills "language X<asr_text>".
PROMPT = ContextFirstPrompt(
    prefix_with_context=f"<|im_start|>system\n{CONTEXT_PLACEHOLDER}<|im_end|>\n<|im_start|>user\n{AUDIO_START}",
    suffix_text=f"{AUDIO_END}<|im_end|>\n<|im_start|>assistant\n",
    answer_marker=ASR_TEXT,
    forced_answer="language {language}" + ASR_TEXT,
)
POSITIONS_PER_CHUNK = 13  # three stride-2 convs of a 100-frame chunk: 100 -> 50 -> 25 -> 13


class ChunkFrontEnd(nn.Module):
    """The conv stack of one chunk, its projection and its (per-chunk) sinusoidal positions."""

    def __init__(self, tower):
        super().__init__()
        self.conv1, self.conv2, self.conv3 = tower.conv2d1, tower.conv2d2, tower.conv2d3
        self.conv_out = tower.conv_out
        self.register_buffer("positions", tower.positional_embedding.positional_embedding.clone(), persistent=False)

    def forward(self, features: torch.Tensor) -> torch.Tensor:  # (1, mel, chunk_frames)
        x = features.unsqueeze(1)
        x = F.gelu(self.conv1(x))
        x = F.gelu(self.conv2(x))
        x = F.gelu(self.conv3(x))
        batch, channels, freq, steps = x.shape
        x = self.conv_out(x.permute(0, 3, 1, 2).reshape(batch, steps, channels * freq))
        return x + self.positions[:steps]


class WindowEncoder(nn.Module):
    """The Transformer layers over one window's rows (full attention inside it), the final norm, and
    the projector to the decoder's width."""

    def __init__(self, tower, projector):
        super().__init__()
        self.layers = tower.layers
        self.ln_post = tower.ln_post
        self.projector = projector
        self.num_heads = tower.config.encoder_attention_heads

    def _attention(self, layer, x: torch.Tensor) -> torch.Tensor:
        attn = layer.self_attn
        batch, n, width = x.shape
        head = width // self.num_heads

        def split(t):
            return t.reshape(batch, n, self.num_heads, head).transpose(1, 2)

        q, k, v = split(attn.q_proj(x)), split(attn.k_proj(x)), split(attn.v_proj(x))
        weights = torch.softmax(q @ k.transpose(2, 3) * (head ** -0.5), dim=-1)
        return attn.out_proj((weights @ v).transpose(1, 2).reshape(batch, n, width))

    def forward(self, hidden: torch.Tensor) -> torch.Tensor:  # (1, n, d)
        x = hidden
        for layer in self.layers:
            x = x + self._attention(layer, layer.self_attn_layer_norm(x))
            x = x + layer.fc2(layer.activation_fn(layer.fc1(layer.final_layer_norm(x))))
        return self.projector(self.ln_post(x))


def load_official(hf_dir: Path):
    """The transformers model of an HF folder, float32, eval mode; one line if it is not one."""
    config_path = hf_dir / "config.json"
    if not config_path.is_file():
        raise CheckpointError(f"{hf_dir}: no config.json; pass the folder of a downloaded Qwen3-ASR model")
    config = json.loads(config_path.read_text(encoding="utf-8"))
    if config.get("model_type") != "qwen3_asr":
        raise CheckpointError(f"{config_path}: model_type {config.get('model_type')!r}, expected 'qwen3_asr' "
                              "(the transformers-format Qwen3-ASR, e.g. Qwen/Qwen3-ASR-1.7B-hf)")
    Qwen3ASRConfig.from_dict(config)  # raises on a malformed config before loading weights
    model = Qwen3ASRForConditionalGeneration.from_pretrained(str(hf_dir), dtype=torch.float32)
    return model.eval()


def feature_options(hf_dir: Path, audio_config) -> LogMelOptions:
    """The log-mel settings: preprocessor_config.json where the folder has one, else the extractor's defaults."""
    data = {}
    path = hf_dir / "preprocessor_config.json"
    if path.is_file():
        data = json.loads(path.read_text(encoding="utf-8"))
    options = LogMelOptions(
        sample_rate_hz=int(data.get("sampling_rate", 16000)),
        num_mel_bins=int(data.get("feature_size", audio_config.num_mel_bins)),
        n_fft=int(data.get("n_fft", 400)),
        hop_length=int(data.get("hop_length", 160)),
        min_samples=int(data.get("min_length", 8000)),
    )
    if float(data.get("dither", 0.0)) != 0.0:
        raise CheckpointError(f"{path}: dither {data['dither']} makes features random; this import needs dither 0")
    if options.num_mel_bins != audio_config.num_mel_bins:
        raise CheckpointError(f"{path}: {options.num_mel_bins} mel bins, the encoder takes {audio_config.num_mel_bins}")
    return options


def _export(module: nn.Module, example: torch.Tensor, path: Path, dynamic_rows: int | None) -> None:
    dynamic = None
    if dynamic_rows:
        dynamic = {"x": {1: torch.export.Dim("rows", min=1, max=dynamic_rows)}}
    logging.getLogger("torch.onnx._internal.exporter._registration").setLevel(logging.ERROR)
    with torch.no_grad(), warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)
        program = torch.onnx.export(_Named(module).eval(), (example,), input_names=["x"], output_names=["y"],
                                    opset_version=OPSET, dynamo=True, dynamic_shapes=dynamic, verbose=False)
    program.save(str(path), external_data=sum(p.numel() for p in module.parameters()) * 4 > 1_500_000_000)


class _Named(nn.Module):
    """One input named x (the dynamic-shape spec names the forward's argument)."""

    def __init__(self, module):
        super().__init__()
        self.module = module

    def forward(self, x):
        return self.module(x)


def _rename_io(path: Path, inputs: list[str], outputs: list[str]) -> None:
    model = onnx.load(str(path), load_external_data=False)
    renames = dict(zip([i.name for i in model.graph.input], inputs)) | dict(zip([o.name for o in model.graph.output], outputs))
    for node in model.graph.node:
        node.input[:] = [renames.get(n, n) for n in node.input]
        node.output[:] = [renames.get(n, n) for n in node.output]
    for value in [*model.graph.input, *model.graph.output]:
        value.name = renames.get(value.name, value.name)
    onnx.save(model, str(path))
    onnx.checker.check_model(str(path))


def write_encoder(model, out_dir: Path) -> tuple[WindowedEncoderSpec, dict]:
    tower, projector = model.model.audio_tower, model.model.multi_modal_projector
    cfg = tower.config
    chunk_frames = 2 * cfg.n_window
    window_chunks = cfg.n_window_infer // chunk_frames
    if cfg.n_window_infer % chunk_frames or post_cnn_length(chunk_frames) != POSITIONS_PER_CHUNK:
        raise CheckpointError(f"audio_config n_window {cfg.n_window} / n_window_infer {cfg.n_window_infer}: "
                              "windows must be whole 100-frame chunks of 13 rows")
    front, window = ChunkFrontEnd(tower).eval(), WindowEncoder(tower, projector).eval()
    t0 = time.perf_counter()
    log.info("exporting the audio encoder to ONNX (front end + window, opset %d)...", OPSET)
    _export(front, torch.zeros(1, cfg.num_mel_bins, chunk_frames), out_dir / FRONT_END_FILE, None)
    _rename_io(out_dir / FRONT_END_FILE, ["features"], ["hidden"])
    rows = POSITIONS_PER_CHUNK * window_chunks
    _export(window, torch.randn(1, rows, cfg.d_model), out_dir / WINDOW_FILE, rows)
    _rename_io(out_dir / WINDOW_FILE, ["hidden"], ["embeddings"])
    log.info("ONNX written (%.1f s)", time.perf_counter() - t0)
    spec = WindowedEncoderSpec(
        chunk_frames=chunk_frames, positions_per_chunk=POSITIONS_PER_CHUNK, window_chunks=window_chunks,
        d_model=cfg.d_model, embedding_dim=cfg.output_dim, num_layers=cfg.encoder_layers,
        num_heads=cfg.encoder_attention_heads, graphs={"fp32": {"front_end": FRONT_END_FILE, "window": WINDOW_FILE}},
        precision="fp32",
    )
    files = {p.name: describe_file(p) for p in sorted(out_dir.iterdir()) if p.name.startswith("encoder-")}
    return spec, files


def _text_model_folder(hf_dir: Path, model, work: Path) -> Path:
    """A plain Qwen3 folder (config, weights under model.*, tokenizer) for the GGUF converter: the
    text model's own tensors, renamed from model.language_model.* (one copy; the original stays)."""
    text_config = model.config.text_config.to_dict()
    text_config["model_type"] = "qwen3"
    text_config.setdefault("_name_or_path", hf_dir.name)
    (work / "config.json").write_text(json.dumps(text_config), encoding="utf-8")
    tensors = {"model." + k: v.detach().contiguous() for k, v in model.model.language_model.state_dict().items()}
    if not model.config.text_config.tie_word_embeddings:
        tensors["lm_head.weight"] = model.lm_head.weight.detach().contiguous()
    save_file(tensors, str(work / "model.safetensors"))
    shutil.copy(hf_dir / "tokenizer.json", work / "tokenizer.json")
    return work


def write_decoder(hf_dir: Path, model, out_dir: Path, gguf_type: str | None) -> tuple[DecoderSpec, dict]:
    tokenizer_path = hf_dir / "tokenizer.json"
    if not tokenizer_path.is_file():
        raise CheckpointError(f"{hf_dir}: no tokenizer.json; the decoder's vocabulary is needed for the GGUF")
    with tempfile.TemporaryDirectory(dir=out_dir) as tmp:
        folder = _text_model_folder(hf_dir, model, Path(tmp))
        if gguf_type is None:
            gguf_type = "f32" if source_dtype(hf_dir) == "float32" else "f16"
        name = decoder_file_name(gguf_type)
        log.info("converting the Qwen3 text model to %s GGUF...", gguf_type)
        facts = convert_qwen3(folder, out_dir / name, gguf_type)
    special = facts["special_ids"]
    for token in ("<|im_start|>", "<|im_end|>", "<|endoftext|>", AUDIO_START, AUDIO_END, ASR_TEXT):
        if token not in special:
            raise CheckpointError(f"{tokenizer_path}: special token {token!r} is missing; not a Qwen3-ASR tokenizer")
    probe_text = PROMPT.full_text(PROBE_SPEECH_TEXT, PROBE_HOTWORDS) + PROMPT.forced_answer.format(language="Chinese")
    probe_ids = Tokenizer.from_file(str(tokenizer_path)).encode(probe_text, add_special_tokens=False).ids
    spec = DecoderSpec(
        architecture=facts["architecture"], hidden_size=facts["hidden_size"], vocab_size=facts["vocab_size"],
        num_layers=facts["num_layers"], context_length=facts["context_length"],
        token_ids={"im_start": special["<|im_start|>"], "im_end": special["<|im_end|>"],
                   "endoftext": special["<|endoftext|>"], "audio_start": special[AUDIO_START],
                   "audio_end": special[AUDIO_END], "asr_text": special[ASR_TEXT]},
        prompt=PROMPT, tokenizer_probe={"text": probe_text, "ids": list(probe_ids)},
        variants={gguf_type: name}, default_variant=gguf_type,
    )
    return spec, {name: describe_file(out_dir / name)}


def import_qwen3_asr(hf_dir: Path, out: Path, gguf_type: str | None = None, overwrite: bool = False,
                     model=None) -> Bundle:
    """Write the bundle `out` from `hf_dir`; built in a temporary folder beside it and renamed at the
    end, so an interrupted import leaves no half bundle. `model`: hf_dir's model already in memory (a
    1.7B model twice does not fit in 24 GB)."""
    hf_dir, out = Path(hf_dir), Path(out)
    if out.exists() and not overwrite:
        raise CheckpointError(f"{out}: already exists; choose another -o or pass --overwrite")
    model = model if model is not None else load_official(hf_dir)
    features = feature_options(hf_dir, model.config.audio_config)
    out.parent.mkdir(parents=True, exist_ok=True)
    building = Path(tempfile.mkdtemp(prefix=f".{out.name}.tmp-", dir=out.parent))
    try:
        encoder, encoder_files = write_encoder(model, building)
        decoder, decoder_files = write_decoder(hf_dir, model, building, gguf_type)
        manifest = WindowedManifest(
            family=FAMILY, features=features, encoder=encoder, decoder=decoder,
            files={**encoder_files, **decoder_files}, created_by=f"nim4-edge {__version__}",
            source={"hf_dir": hf_dir.name, "audio_token_id": int(model.config.audio_token_id)},
        )
        manifest.check_consistency()
        write_text_atomic(building / MANIFEST_FILE, json.dumps(manifest.to_json(), indent=1, ensure_ascii=False))
        if out.exists():
            shutil.rmtree(out)
        building.rename(out)
    except BaseException:
        shutil.rmtree(building, ignore_errors=True)
        raise
    return Bundle.load(out, family=FAMILY)

