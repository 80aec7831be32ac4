"""Model configuration: one frozen dataclass per part, and the `tiny` / `full` presets.

`full` carries the NIM4-ASR sizes from the paper (docs/FACTS.md, the architecture's numbers): a ~600M-parameter Conformer
encoder and a Qwen3-1.7B decoder. `tiny` has the same structure at a size that builds in seconds.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field, fields, replace

from nim4_edge.runtime.features import FbankOptions
from nim4_edge.runtime.geometry import ChunkGeometry

CHECKPOINT_FORMAT = "nim4-checkpoint"
CHECKPOINT_FORMAT_VERSION = 1


@dataclass(frozen=True)
class EncoderConfig:
    """Conformer encoder (FireRedASR-AED style), streaming by chunk masks and causal convolution."""

    num_mel_bins: int = 80
    subsampling_channels: int = 32  # channels of the two 3x3 stride-2 Conv2d layers
    d_model: int = 1280
    num_layers: int = 16
    num_heads: int = 20
    ffn_dim: int = 5120
    conv_kernel: int = 33  # depthwise kernel; causal, so it caches conv_kernel - 1 frames
    dropout: float = 0.1

    def __post_init__(self) -> None:
        if self.d_model % self.num_heads:
            raise ValueError(f"encoder d_model {self.d_model} not divisible by num_heads {self.num_heads}")
        if self.conv_kernel < 1:
            raise ValueError("encoder conv_kernel must be >= 1")

    @property
    def head_dim(self) -> int:
        return self.d_model // self.num_heads


@dataclass(frozen=True)
class AdaptorConfig:
    """Concatenate `downsample` encoder frames, then Linear-ReLU-Linear into the LLM width."""

    downsample: int = 4
    hidden_dim: int = 2048
    output_dim: int = 2048  # must equal the decoder's hidden_size


@dataclass(frozen=True)
class PhonemeHeadConfig:
    """3-layer MLP over encoder frames, CTC over the phoneme inventory (blank = 0)."""

    hidden_dim: int = 1024
    num_layers: int = 3
    num_phonemes: int = 269  # must equal len(phoneme inventory)


@dataclass(frozen=True)
class DecoderConfig:
    """The Qwen3 decoder's shape. The checkpoint's HF folder is the source of truth; these are the
    values `nim4-edge init` writes into it."""

    vocab_size: int = 151936
    hidden_size: int = 2048
    intermediate_size: int = 6144
    num_hidden_layers: int = 28
    num_attention_heads: int = 16
    num_key_value_heads: int = 8
    head_dim: int = 128
    max_position_embeddings: int = 40960
    rope_theta: float = 1_000_000.0
    rms_norm_eps: float = 1e-6
    tie_word_embeddings: bool = True


@dataclass(frozen=True)
class Nim4Config:
    encoder: EncoderConfig = field(default_factory=EncoderConfig)
    adaptor: AdaptorConfig = field(default_factory=AdaptorConfig)
    phoneme_head: PhonemeHeadConfig = field(default_factory=PhonemeHeadConfig)
    fbank: FbankOptions = field(default_factory=FbankOptions)
    streaming: ChunkGeometry = field(default_factory=ChunkGeometry)

    def __post_init__(self) -> None:
        if self.fbank.num_mel_bins != self.encoder.num_mel_bins:
            raise ValueError(
                f"fbank num_mel_bins {self.fbank.num_mel_bins} != encoder num_mel_bins "
                f"{self.encoder.num_mel_bins}"
            )
        if self.streaming.adaptor_downsample != self.adaptor.downsample:
            raise ValueError("streaming.adaptor_downsample must equal adaptor.downsample")

    def to_json(self) -> dict:
        return {
            "format": CHECKPOINT_FORMAT,
            "format_version": CHECKPOINT_FORMAT_VERSION,
            "encoder": asdict(self.encoder),
            "adaptor": asdict(self.adaptor),
            "phoneme_head": asdict(self.phoneme_head),
            "fbank": self.fbank.to_json(),
            "streaming": {
                "chunk_frames": self.streaming.chunk_frames,
                "left_chunks": self.streaming.left_chunks,
                "adaptor_downsample": self.streaming.adaptor_downsample,
            },
        }

    @classmethod
    def from_json(cls, data: dict) -> "Nim4Config":
        if data.get("format") != CHECKPOINT_FORMAT:
            raise ValueError(f"'format' is {data.get('format')!r}, expected {CHECKPOINT_FORMAT!r}")
        if data.get("format_version") != CHECKPOINT_FORMAT_VERSION:
            raise ValueError(
                f"format_version {data.get('format_version')} is not supported "
                f"(this nim4-edge reads {CHECKPOINT_FORMAT_VERSION})"
            )
        return cls(
            encoder=_build(EncoderConfig, data, "encoder"),
            adaptor=_build(AdaptorConfig, data, "adaptor"),
            phoneme_head=_build(PhonemeHeadConfig, data, "phoneme_head"),
            fbank=_build(FbankOptions, data, "fbank"),
            streaming=ChunkGeometry.from_json(data["streaming"]),
        )


def _build(cls, data: dict, key: str):
    section = data.get(key)
    if not isinstance(section, dict):
        raise ValueError(f"section {key!r} is missing")
    known = {f.name for f in fields(cls)}
    unknown = sorted(set(section) - known)
    if unknown:
        raise ValueError(f"section {key!r} has unknown field(s) {unknown}")
    return cls(**section)


@dataclass(frozen=True)
class Preset:
    model: Nim4Config
    decoder: DecoderConfig


# Published Qwen3 shapes (their HF config.json files), for decoder speed and memory at real size.
DECODER_SHAPES = {
    "qwen3-1.7b": DecoderConfig(),
    "qwen3-0.6b": DecoderConfig(hidden_size=1024, intermediate_size=3072, num_hidden_layers=28,
                                num_attention_heads=16, num_key_value_heads=8, head_dim=128),
}


def preset(name: str, num_phonemes: int, decoder_shape: str | None = None) -> Preset:
    """`tiny`: for tests and quick trials. `full`: NIM4-ASR sizes (~600M encoder, Qwen3-1.7B).

    `decoder_shape` (a DECODER_SHAPES key) swaps in another decoder; the adaptor follows its width.
    """
    chosen = _preset(name, num_phonemes)
    if decoder_shape is None:
        return chosen
    if decoder_shape not in DECODER_SHAPES:
        raise ValueError(f"unknown decoder shape {decoder_shape!r}; choose from {sorted(DECODER_SHAPES)}")
    decoder = DECODER_SHAPES[decoder_shape]
    adaptor = AdaptorConfig(downsample=chosen.model.adaptor.downsample, hidden_dim=decoder.hidden_size,
                            output_dim=decoder.hidden_size)
    return Preset(replace(chosen.model, adaptor=adaptor), decoder)


def _preset(name: str, num_phonemes: int) -> Preset:
    if name == "full":
        decoder = DecoderConfig()
        model = Nim4Config(
            adaptor=AdaptorConfig(hidden_dim=decoder.hidden_size, output_dim=decoder.hidden_size),
            phoneme_head=PhonemeHeadConfig(num_phonemes=num_phonemes),
        )
        return Preset(model, decoder)
    if name == "tiny":
        # Decoder widths are multiples of 256 so llama.cpp's k-quants apply to every matrix.
        decoder = DecoderConfig(
            vocab_size=0,  # set from the tokenizer by `init`
            hidden_size=256,
            intermediate_size=768,
            num_hidden_layers=2,
            num_attention_heads=4,
            num_key_value_heads=2,
            head_dim=64,
            max_position_embeddings=4096,
        )
        model = Nim4Config(
            encoder=EncoderConfig(d_model=64, num_layers=2, num_heads=4, ffn_dim=256, subsampling_channels=8),
            adaptor=AdaptorConfig(hidden_dim=256, output_dim=decoder.hidden_size),
            phoneme_head=PhonemeHeadConfig(hidden_dim=64, num_phonemes=num_phonemes),
        )
        return Preset(model, decoder)
    if name == "demo":
        # The shipped demo model (recipes/demo): small enough to train on 2 CPU cores in about two
        # hours and to ship in a few MB, with the full model's structure. Decoder widths are multiples
        # of 256 (k-quants); 4 layers give the decoder room to copy hotword hints.
        decoder = DecoderConfig(
            vocab_size=0,  # set from the tokenizer
            hidden_size=256,
            intermediate_size=768,
            num_hidden_layers=4,
            num_attention_heads=4,
            num_key_value_heads=2,
            head_dim=64,
            max_position_embeddings=4096,
        )
        model = Nim4Config(
            encoder=EncoderConfig(d_model=144, num_layers=6, num_heads=4, ffn_dim=576, subsampling_channels=32),
            adaptor=AdaptorConfig(hidden_dim=512, output_dim=decoder.hidden_size),
            phoneme_head=PhonemeHeadConfig(hidden_dim=256, num_phonemes=num_phonemes),
        )
        return Preset(model, decoder)
    raise ValueError(f"unknown preset {name!r}; choose one of {', '.join(PRESETS)}")


PRESETS = ("tiny", "demo", "full")
