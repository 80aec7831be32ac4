"""The bundle: the runtime's only input. `manifest.json` is the single source of geometry.

    BUNDLE/
      manifest.json     format + version, fbank options, CMVN, chunk geometry, encoder graph I/O and
                        cache shapes, phoneme inventory, decoder facts, sha256 and size of every file
      encoder.onnx      the streaming step (export/streaming.py), + encoder.onnx.data above 2 GB
      decoder-*.gguf    the Qwen3 decoder for llama.cpp: the exported precision and any quantized variants

The runtime reads chunk sizes, cache shapes and rates from here, never from file names, and refuses a
bundle whose files do not match the manifest.

A manifest's "family" names the model family: absent or "nim4" is the layout above; "qwen3-asr" (an
imported Qwen3-ASR: `nim4-edge import qwen3-asr`) has log-mel options, a windowed encoder of two graphs
and the same decoder section (WindowedManifest). The family is the one seam between the two: the rest
of a bundle (files, sizes, hashes, paths inside the folder) is checked the same way.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from pathlib import Path

from nim4_edge.runtime.errors import BundleError
from nim4_edge.runtime.features import Cmvn, FbankOptions
from nim4_edge.runtime.geometry import ChunkGeometry
from nim4_edge.runtime.integrity import sha256_file, verified_sha256
from nim4_edge.runtime.onnx_external import OnnxFormatError, external_data_locations
from nim4_edge.runtime.phonemes import PhonemeInventory
from nim4_edge.runtime.qwen3_asr.features import LogMelOptions
from nim4_edge.runtime.prompt import ContextFirstPrompt, PromptTemplate, prompt_from_json

BUNDLE_FORMAT = "nim4-bundle"
BUNDLE_FORMAT_VERSION = 1
MANIFEST_FILE = "manifest.json"


@dataclass(frozen=True)
class TensorSpec:
    name: str
    shape: tuple[int, ...]
    dtype: str  # numpy dtype name: "float32", "int64"

    def to_json(self) -> dict:
        return {"name": self.name, "shape": list(self.shape), "dtype": self.dtype}

    @classmethod
    def from_json(cls, data: dict) -> "TensorSpec":
        return cls(str(data["name"]), tuple(int(d) for d in data["shape"]), str(data["dtype"]))


@dataclass(frozen=True)
class EncoderSpec:
    """The exported encoder step: its file, dimensions and exact I/O."""

    file: str
    precision: str  # "fp32" from export; quant/ adds others
    d_model: int
    num_layers: int
    num_heads: int
    head_dim: int
    conv_kernel: int
    embedding_dim: int  # adaptor output = decoder hidden size
    num_phonemes: int
    inputs: tuple[TensorSpec, ...]
    outputs: tuple[TensorSpec, ...]
    # precision -> ONNX file; the same I/O for all (quant/ keeps float32 inputs and outputs).
    # `file` / `precision` name the default. Manifests without it have just the default.
    variants: dict = field(default_factory=dict)

    def __post_init__(self) -> None:
        if not self.variants:
            object.__setattr__(self, "variants", {self.precision: self.file})

    def file_for(self, precision: str | None = None) -> str:
        name = precision or self.precision
        if name not in self.variants:
            raise ValueError(f"no {name} encoder in this bundle (it has {', '.join(sorted(self.variants))}); "
                             "add one with `nim4-edge quantize BUNDLE --encoder " + name + "`")
        return self.variants[name]

    def input(self, name: str) -> TensorSpec:
        return next(t for t in self.inputs if t.name == name)

    def output(self, name: str) -> TensorSpec:
        return next(t for t in self.outputs if t.name == name)

    def to_json(self) -> dict:
        data = {k: v for k, v in self.__dict__.items() if k not in ("inputs", "outputs")}
        data["inputs"] = [t.to_json() for t in self.inputs]
        data["outputs"] = [t.to_json() for t in self.outputs]
        return data

    @classmethod
    def from_json(cls, data: dict) -> "EncoderSpec":
        fields = {k: data[k] for k in cls.__dataclass_fields__ if k not in ("inputs", "outputs", "variants")}
        fields["variants"] = dict(data.get("variants", {}))
        return cls(
            **fields,
            inputs=tuple(TensorSpec.from_json(t) for t in data["inputs"]),
            outputs=tuple(TensorSpec.from_json(t) for t in data["outputs"]),
        )


@dataclass(frozen=True)
class DecoderSpec:
    """The Qwen3 decoder: its GGUF variants, dims, special tokens and prompt."""

    architecture: str  # GGUF general.architecture, "qwen3"
    hidden_size: int  # embedding width = adaptor output
    vocab_size: int  # embedding rows (tokenizer padded with unused entries)
    num_layers: int
    context_length: int  # positions the model was configured for
    token_ids: dict  # {"im_start": id, "im_end": id, "endoftext": id}
    prompt: PromptTemplate | ContextFirstPrompt
    # A text and the ids the source (HF) tokenizer gives it; llama.cpp's tokenizer must agree.
    tokenizer_probe: dict  # {"text": str, "ids": [int]}
    variants: dict  # quant type ("f32", "f16", "Q4_K_M", ...) -> GGUF file name in the bundle
    default_variant: str

    def file_for(self, variant: str | None = None) -> str:
        name = variant or self.default_variant
        if name not in self.variants:
            raise ValueError(f"decoder variant {name!r} is not in the bundle (has {sorted(self.variants)}); "
                             f"add it with `nim4-edge quantize BUNDLE --decoder {name}`")
        return self.variants[name]

    def to_json(self) -> dict:
        data = dict(self.__dict__)
        data["prompt"] = self.prompt.to_json()
        return data

    @classmethod
    def from_json(cls, data: dict) -> "DecoderSpec":
        fields = {k: data[k] for k in cls.__dataclass_fields__}
        fields["prompt"] = prompt_from_json(data["prompt"])
        return cls(**fields)


@dataclass(frozen=True)
class Manifest:
    fbank: FbankOptions
    cmvn: Cmvn
    streaming: ChunkGeometry
    phonemes: PhonemeInventory
    encoder: EncoderSpec
    decoder: DecoderSpec
    files: dict[str, dict] = field(default_factory=dict)  # name -> {"sha256": hex, "bytes": n}
    created_by: str = ""
    source: dict = field(default_factory=dict)  # what it was exported from (for people, not code)
    # the final-confidence threshold chosen for this model on held-out voices (runtime/confidence.py):
    # {"threshold": float, "chosen_on": "what it was chosen on"}; absent: confidence.DEFAULT_THRESHOLD
    confidence: dict = field(default_factory=dict)

    @property
    def seconds_per_embedding(self) -> float:
        """Audio per adaptor embedding row (0.16 s at NIM4's 640 ms chunks of 4 rows)."""
        chunk_ms = self.streaming.chunk_duration_ms(self.fbank.frame_shift_ms)
        return chunk_ms / 1000 / self.streaming.embeddings_per_chunk

    def to_json(self) -> dict:
        return {
            "format": BUNDLE_FORMAT,
            "format_version": BUNDLE_FORMAT_VERSION,
            "created_by": self.created_by,
            "source": self.source,
            "fbank": self.fbank.to_json(),
            "cmvn": self.cmvn.to_json(),
            "streaming": self.streaming.to_json(),
            "phonemes": self.phonemes.to_json(),
            "encoder": self.encoder.to_json(),
            "decoder": self.decoder.to_json(),
            "files": self.files,
            **({"confidence": self.confidence} if self.confidence else {}),
        }

    @classmethod
    def from_json(cls, data: dict) -> "Manifest":
        if data.get("format") != BUNDLE_FORMAT:
            raise ValueError(f"'format' is {data.get('format')!r}, expected {BUNDLE_FORMAT!r}")
        if data.get("format_version") != BUNDLE_FORMAT_VERSION:
            raise ValueError(
                f"format_version {data.get('format_version')} is not supported by this nim4-edge "
                f"(reads {BUNDLE_FORMAT_VERSION}); re-export the bundle"
            )
        return cls(
            fbank=FbankOptions.from_json(data["fbank"]),
            cmvn=Cmvn.from_json(data["cmvn"]),
            streaming=ChunkGeometry.from_json(data["streaming"]),
            phonemes=PhonemeInventory.from_json(data["phonemes"]),
            encoder=EncoderSpec.from_json(data["encoder"]),
            decoder=DecoderSpec.from_json(data["decoder"]),
            files=dict(data.get("files", {})),
            created_by=str(data.get("created_by", "")),
            source=dict(data.get("source", {})),
            confidence=dict(data.get("confidence", {})),
        )

    family = "nim4"

    @property
    def sample_rate_hz(self) -> int:
        return self.fbank.sample_rate_hz

    def model_files(self) -> list[str]:
        """Every model file the manifest names (each must be listed in `files`)."""
        return [*self.encoder.variants.values(), *self.decoder.variants.values()]

    def encoder_graphs(self, precision: str | None = None) -> list[str]:
        """The ONNX graph(s) of an encoder variant (one for NIM4's streaming step)."""
        return [self.encoder.file_for(precision)]

    def check_consistency(self) -> None:
        """Cross-field checks: the parts must describe the same model."""
        enc = self.encoder
        if self.cmvn.dim != self.fbank.num_mel_bins:
            raise ValueError(f"cmvn has {self.cmvn.dim} bins but fbank has {self.fbank.num_mel_bins}")
        if enc.num_phonemes != len(self.phonemes):
            raise ValueError(f"encoder has {enc.num_phonemes} phoneme outputs, inventory has {len(self.phonemes)}")
        if enc.embedding_dim != self.decoder.hidden_size:
            raise ValueError(f"encoder embedding_dim {enc.embedding_dim} != decoder hidden_size {self.decoder.hidden_size}")
        if self.decoder.default_variant not in self.decoder.variants:
            raise ValueError(f"decoder default_variant {self.decoder.default_variant!r} is not among its variants")
        for variant, file in self.decoder.variants.items():
            if file not in self.files:
                raise ValueError(f"decoder variant {variant} file {file} is not listed in 'files'")
        g = self.streaming
        expected = {
            "features": (1, g.fbank_frames_per_chunk, self.fbank.num_mel_bins),
            "key_cache": (enc.num_layers, 1, enc.num_heads, g.left_context_frames, enc.head_dim),
            "conv_cache": (enc.num_layers, 1, enc.d_model, enc.conv_kernel - 1),
        }
        for name, shape in expected.items():
            if enc.input(name).shape != shape:
                raise ValueError(f"encoder input {name} has shape {list(enc.input(name).shape)}, geometry implies {list(shape)}")
        if enc.output("phoneme_log_probs").shape != (1, g.chunk_frames, enc.num_phonemes):
            raise ValueError("encoder output phoneme_log_probs does not match chunk_frames x num_phonemes")
        if enc.output("embeddings").shape != (1, g.embeddings_per_chunk, enc.embedding_dim):
            raise ValueError("encoder output embeddings does not match embeddings_per_chunk x embedding_dim")


@dataclass(frozen=True)
class WindowedEncoderSpec:
    """An encoder of windowed attention (the Qwen3-ASR family): two graphs per precision.

        front_end  one chunk of features (1, num_mel_bins, chunk_frames) -> its hidden rows
                   (1, positions_per_chunk, d_model), positions added; chunks are independent
        window     the hidden rows of one attention window (1, n, d_model), n <= positions_per_window
                   -> decoder embeddings (1, n, embedding_dim); windows are independent
    """

    chunk_frames: int  # feature frames per front-end chunk (100 = 1 s)
    positions_per_chunk: int  # hidden rows of a full chunk (13)
    window_chunks: int  # chunks per attention window (8 = 8 s)
    d_model: int
    embedding_dim: int  # = decoder hidden size
    num_layers: int
    num_heads: int
    graphs: dict  # precision -> {"front_end": file, "window": file}
    precision: str  # the default

    @property
    def positions_per_window(self) -> int:
        return self.positions_per_chunk * self.window_chunks

    @property
    def variants(self) -> dict:
        """precision -> its window graph (the precisions a device profile chooses among)."""
        return {precision: pair["window"] for precision, pair in self.graphs.items()}

    def graphs_for(self, precision: str | None = None) -> dict:
        name = precision or self.precision
        if name not in self.graphs:
            raise ValueError(f"no {name} encoder in this bundle (it has {', '.join(sorted(self.graphs))})")
        return self.graphs[name]

    def to_json(self) -> dict:
        return dict(self.__dict__)

    @classmethod
    def from_json(cls, data: dict) -> "WindowedEncoderSpec":
        return cls(**{k: data[k] for k in cls.__dataclass_fields__})


@dataclass(frozen=True)
class WindowedManifest:
    """The manifest of a windowed-encoder family bundle ("family": "qwen3-asr"): log-mel features, the
    windowed encoder's two graphs, the shared Qwen3 decoder. No phoneme head, so no CMVN or inventory."""

    family: str
    features: LogMelOptions
    encoder: WindowedEncoderSpec
    decoder: DecoderSpec
    files: dict[str, dict] = field(default_factory=dict)
    created_by: str = ""
    source: dict = field(default_factory=dict)

    @property
    def sample_rate_hz(self) -> int:
        return self.features.sample_rate_hz

    @property
    def seconds_per_embedding(self) -> float:
        enc = self.encoder
        return enc.chunk_frames * self.features.hop_length / self.features.sample_rate_hz / enc.positions_per_chunk

    def model_files(self) -> list[str]:
        graphs = [file for pair in self.encoder.graphs.values() for file in pair.values()]
        return [*graphs, *self.decoder.variants.values()]

    def encoder_graphs(self, precision: str | None = None) -> list[str]:
        return list(self.encoder.graphs_for(precision).values())

    def to_json(self) -> dict:
        return {
            "format": BUNDLE_FORMAT,
            "format_version": BUNDLE_FORMAT_VERSION,
            "family": self.family,
            "created_by": self.created_by,
            "source": self.source,
            "features": self.features.to_json(),
            "encoder": self.encoder.to_json(),
            "decoder": self.decoder.to_json(),
            "files": self.files,
        }

    @classmethod
    def from_json(cls, data: dict) -> "WindowedManifest":
        return cls(
            family=str(data["family"]),
            features=LogMelOptions.from_json(data["features"]),
            encoder=WindowedEncoderSpec.from_json(data["encoder"]),
            decoder=DecoderSpec.from_json(data["decoder"]),
            files=dict(data.get("files", {})),
            created_by=str(data.get("created_by", "")),
            source=dict(data.get("source", {})),
        )

    def check_consistency(self) -> None:
        enc = self.encoder
        if enc.embedding_dim != self.decoder.hidden_size:
            raise ValueError(f"encoder embedding_dim {enc.embedding_dim} != decoder hidden_size {self.decoder.hidden_size}")
        if self.decoder.default_variant not in self.decoder.variants:
            raise ValueError(f"decoder default_variant {self.decoder.default_variant!r} is not among its variants")
        if enc.precision not in enc.graphs:
            raise ValueError(f"encoder precision {enc.precision!r} is not among its graphs")
        for precision, pair in enc.graphs.items():
            if set(pair) != {"front_end", "window"}:
                raise ValueError(f"encoder graphs of {precision} must be exactly front_end and window")


# "family" in a manifest -> its manifest class; a manifest without one is NIM4's (format 1 as shipped).
FAMILIES = {"nim4": Manifest, "qwen3-asr": WindowedManifest}


def manifest_from_json(data: dict) -> "Manifest | WindowedManifest":
    if data.get("format") != BUNDLE_FORMAT:
        raise ValueError(f"'format' is {data.get('format')!r}, expected {BUNDLE_FORMAT!r}")
    if data.get("format_version") != BUNDLE_FORMAT_VERSION:
        raise ValueError(f"format_version {data.get('format_version')} is not supported by this nim4-edge "
                         f"(reads {BUNDLE_FORMAT_VERSION}); re-export the bundle")
    family = data.get("family", "nim4")
    if family not in FAMILIES:
        raise ValueError(f"model family {family!r} is not known to this nim4-edge (knows {', '.join(FAMILIES)})")
    return FAMILIES[family].from_json(data)


def decoder_file_name(variant: str) -> str:
    """Bundle file name of a decoder variant: decoder-f32.gguf, decoder-q4_k_m.gguf, ..."""
    return f"decoder-{variant.lower()}.gguf"


def describe_file(path: Path) -> dict:
    return {"sha256": sha256_file(path), "bytes": path.stat().st_size}


@dataclass(frozen=True)
class Bundle:
    path: Path
    manifest: "Manifest | WindowedManifest"

    @classmethod
    def load(cls, path: Path, verify_hashes: bool = False, family: str | None = "nim4") -> "Bundle":
        """Read and check a bundle. Sizes are always checked; sha256 too when `verify_hashes`
        (hashing a multi-GB decoder takes seconds, so it is a choice at start-up). `family`: the model
        family the caller runs (None: any); another is refused in one line, so no NIM4 code path ever
        meets a manifest of another shape."""
        path = Path(path)
        manifest_path = path / MANIFEST_FILE
        if not manifest_path.is_file():
            raise BundleError(f"{path}: not a bundle (no {MANIFEST_FILE}); create one with `nim4-edge export`")
        try:
            data = json.loads(manifest_path.read_text(encoding="utf-8"))
            manifest = manifest_from_json(data)
            manifest.check_consistency()
        except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
            raise BundleError(f"{manifest_path}: not readable JSON ({e}); re-export the bundle") from None
        except (ValueError, TypeError, KeyError, StopIteration, AttributeError) as e:
            raise BundleError(f"{manifest_path}: {type(e).__name__}: {e}; re-export the bundle") from None
        if family is not None and manifest.family != family:
            raise BundleError(f"{path}: a {manifest.family} bundle; this command runs {family} bundles only "
                              f"(what runs a qwen3-asr bundle: docs/QWEN3_ASR.md)")
        bundle = cls(path, manifest)
        bundle.check_files(verify_hashes)
        return bundle

    def check_files(self, verify_hashes: bool) -> None:
        """Every file the manifest names is listed, lies inside the bundle folder (symlinks followed),
        and has its recorded size; with `verify_hashes` its recorded sha256 too (integrity.py caches it)."""
        listed = self.manifest.files
        if not isinstance(listed, dict):
            raise BundleError(f"{self.path / MANIFEST_FILE}: 'files' is not an object; re-export the bundle")
        for name in self.manifest.model_files():
            if name not in listed:
                raise BundleError(f"{self.path / MANIFEST_FILE}: model file {name!r} is not listed in 'files'")
        for name, facts in listed.items():
            file = self.file(name)
            if not isinstance(facts, dict) or not isinstance(facts.get("bytes"), int) or not isinstance(facts.get("sha256"), str):
                raise BundleError(f"{self.path / MANIFEST_FILE}: 'files' entry {name!r} lacks 'bytes' or 'sha256'; re-export")
            if not file.is_file():
                raise BundleError(f"{file}: missing from the bundle; re-export it")
            size = file.stat().st_size
            if size != facts["bytes"]:
                raise BundleError(f"{file}: {size} bytes, manifest says {facts['bytes']} (truncated or replaced); re-export")
        if verify_hashes:
            self.verify_files(list(listed))

    def file(self, name: str) -> Path:
        """The path of a file the manifest names; refused unless it resolves (symlinks followed) inside
        the bundle folder: a bundle never makes the program read elsewhere."""
        if not isinstance(name, str) or not name or "\x00" in name:
            raise BundleError(f"{self.path / MANIFEST_FILE}: bad file name {name!r}; re-export the bundle")
        path = self.path / name
        root = self.path.resolve()
        try:
            inside = path.resolve().is_relative_to(root) and path.resolve() != root
        except (OSError, RuntimeError):  # a symlink loop
            inside = False
        if Path(name).is_absolute() or not inside:
            raise BundleError(f"{self.path / MANIFEST_FILE}: file {name!r} lies outside the bundle folder "
                              "(an absolute path, '..' or a symlink); a bundle holds its own files: re-export it")
        return path

    def verify_files(self, names: list[str]) -> None:
        """sha256 of each named file against the manifest (cached per file in the user's cache:
        runtime/integrity.py). A mismatch is one BundleError line."""
        for name in names:
            path = self.file(name)
            if not verified_sha256(path, self.manifest.files[name]["sha256"]):
                raise BundleError(f"{path}: sha256 differs from the manifest (modified or corrupt); re-export the "
                                  "bundle (or, knowing why, run with --no-verify)")

    def files_in_use(self, encoder_precision: str | None, decoder_variant: str | None) -> list[str]:
        """The files a recognizer with these variants loads."""
        try:
            graphs = self.manifest.encoder_graphs(encoder_precision)
            data = [name for graph in graphs for name in self.external_data_of(graph)]
            encoder = list(dict.fromkeys([*self.files_of_encoder(encoder_precision), *data]))
            return [*encoder, self.manifest.decoder.file_for(decoder_variant)]
        except ValueError as e:
            raise BundleError(f"{self.path}: {e}") from None

    def external_data_of(self, name: str) -> list[str]:
        """The bundle files an ONNX graph's external data locations name; refused unless each lies
        inside the bundle and is listed in the manifest (so its size and hash are checked too)."""
        try:
            locations = external_data_locations(self.file(name))
        except OnnxFormatError as e:
            raise BundleError(f"{self.path / name}: not a readable ONNX graph ({e}); re-export the bundle") from None
        names = []
        for location in locations:
            relative = os.path.normpath(os.path.join(os.path.dirname(name), location))
            self.file(relative if not os.path.isabs(location) else location)
            if relative not in self.manifest.files:
                raise BundleError(f"{self.path / name}: names external data {location!r}, which the manifest does not "
                                  "list; re-export the bundle")
            names.append(relative)
        return names

    def files_of_encoder(self, precision: str | None = None) -> list[str]:
        """The files an encoder variant loads: its graph and the external data beside it."""
        graphs = self.manifest.encoder_graphs(precision)
        return [name for name in self.manifest.files if any(name == g or name.startswith(g + ".") for g in graphs)]

    def encoder_bytes(self, precision: str | None = None) -> int:
        """Size of an encoder variant on disk: its graph and the external data beside it (graph.onnx.data,
        for graphs over protobuf's 2 GB)."""
        return sum(self.file(name).stat().st_size for name in self.files_of_encoder(precision))

    def decoder_file(self, variant: str | None = None) -> Path:
        try:
            return self.file(self.manifest.decoder.file_for(variant))
        except ValueError as e:
            raise BundleError(f"{self.path}: {e}") from None


BUNDLE_ENV = "NIM4_EDGE_BUNDLE"
# The shipped demo model (recipes/demo; MODEL_CARD.md inside): the default when no bundle is given.
DEMO_BUNDLE = Path(__file__).resolve().parent / "demo_bundle"


def resolve_bundle(given: Path | None) -> Path:
    """The bundle folder to use: `given`, else $NIM4_EDGE_BUNDLE, else the shipped demo model."""
    if given is not None:
        return Path(given)
    if os.environ.get(BUNDLE_ENV):
        return Path(os.environ[BUNDLE_ENV])
    if (DEMO_BUNDLE / MANIFEST_FILE).is_file():
        return DEMO_BUNDLE
    raise BundleError(f"no --bundle given, no ${BUNDLE_ENV}, and this install ships no demo bundle; "
                      "pass --bundle DIR (make one: nim4-edge init -o C && nim4-edge export C -o DIR)")
