"""The streaming encoder on onnxruntime: one graph call per 640 ms chunk, caches carried in the state.

`EncoderSession` owns the onnxruntime session (shared by all streams); `EncoderStream` is one
utterance's state: it takes CMVN-normalized fbank frames in pieces of any size, runs a step whenever
a full 67-frame window is there, and `flush()` runs the last, partly filled chunk exactly as the
offline reference would (see runtime/geometry.py for the window arithmetic).
"""

from __future__ import annotations

import copy
import time
from dataclasses import dataclass

import numpy as np
import onnxruntime as ort

from nim4_edge.runtime.bundle import Bundle
from nim4_edge.runtime.errors import BundleError
from nim4_edge.runtime.geometry import num_encoder_frames

_ORT_TYPES = {"tensor(float)": "float32", "tensor(int64)": "int64", "tensor(float16)": "float16"}
CACHE_NAMES = ("key_cache", "value_cache", "conv_cache")


@dataclass
class EncoderState:
    """Caches of one utterance: key/value (L, 1, H, 64, dh), conv (L, 1, d, k - 1)."""

    key_cache: np.ndarray
    value_cache: np.ndarray
    conv_cache: np.ndarray
    num_cached_frames: int  # real frames in the attention cache (0 at the start, then up to 64)


@dataclass
class ChunkOutput:
    phoneme_log_probs: np.ndarray  # (valid_frames, P)
    embeddings: np.ndarray  # (ceil(valid_frames / 4), D)
    compute_ms: float  # wall time of the graph call


class EncoderSession:
    """Loads the bundle's encoder graph and checks its I/O against the manifest."""

    def __init__(self, bundle: Bundle, providers: list | None = None, num_threads: int = 0,
                 precision: str | None = None):
        """`precision`: which of the bundle's encoder variants (fp32, fp16, int8-dynamic, int8-qdq);
        None = the manifest's default."""
        self.bundle = bundle
        self.spec = bundle.manifest.encoder
        self.geometry = bundle.manifest.streaming
        options = ort.SessionOptions()
        options.intra_op_num_threads = num_threads  # 0 = onnxruntime's choice (all cores)
        options.inter_op_num_threads = 1
        # Idle onnxruntime threads spin by default, stealing the cores that VAD, fbank and llama.cpp
        # need between encoder steps (one step per 640 ms): let them sleep.
        options.add_session_config_entry("session.intra_op.allow_spinning", "0")
        try:
            name = self.spec.file_for(precision)
        except ValueError as e:
            raise BundleError(f"{bundle.path}: {e}") from None
        path = bundle.file(name)
        bundle.external_data_of(name)  # every file the graph makes onnxruntime open: inside and listed
        self.precision = precision or self.spec.precision
        try:
            self.session = ort.InferenceSession(
                str(path), sess_options=options, providers=providers or ["CPUExecutionProvider"]
            )
        except Exception as e:  # onnxruntime raises its own types for corrupt graphs
            raise BundleError(f"{path}: onnxruntime cannot load it ({str(e).splitlines()[0]}); re-export") from None
        self._check_io()
        self._dtypes = {t.name: np.dtype(t.dtype) for t in self.spec.inputs}
        self.recorded_feeds: list[dict] | None = None  # set to a list to keep every step's inputs (calibration)

    def _check_io(self) -> None:
        for kind, declared, actual in (
            ("input", self.spec.inputs, self.session.get_inputs()),
            ("output", self.spec.outputs, self.session.get_outputs()),
        ):
            got = [(a.name, tuple(a.shape), _ORT_TYPES.get(a.type, a.type)) for a in actual]
            want = [(t.name, t.shape, t.dtype) for t in declared]
            if got != want:
                raise BundleError(
                    f"{self.bundle.file(self.spec.file)}: graph {kind}s {got} do not match the manifest {want}; "
                    "the bundle was mixed from different exports, re-export it"
                )

    def initial_state(self) -> EncoderState:
        zeros = {n: np.zeros(self.spec.input(n).shape, dtype=self._dtypes[n]) for n in CACHE_NAMES}
        return EncoderState(zeros["key_cache"], zeros["value_cache"], zeros["conv_cache"], 0)

    def step(self, window: np.ndarray, num_valid_frames: int, state: EncoderState) -> tuple[ChunkOutput, EncoderState]:
        """window: (67, F) CMVN'd fbank frames, zero-padded at the end if the utterance ended."""
        feeds = {
            "features": window[None].astype(self._dtypes["features"], copy=False),
            "num_valid_frames": np.array([num_valid_frames], dtype=np.int64),
            "num_cached_frames": np.array([state.num_cached_frames], dtype=np.int64),
            "key_cache": state.key_cache,
            "value_cache": state.value_cache,
            "conv_cache": state.conv_cache,
        }
        if self.recorded_feeds is not None:
            self.recorded_feeds.append(feeds)
        t0 = time.perf_counter()
        log_probs, embeddings, keys, values, convs = self.session.run(None, feeds)
        compute_ms = (time.perf_counter() - t0) * 1000
        num_embeddings = -(-num_valid_frames // self.geometry.adaptor_downsample)
        output = ChunkOutput(log_probs[0, :num_valid_frames], embeddings[0, :num_embeddings], compute_ms)
        cached = min(self.geometry.left_context_frames, state.num_cached_frames + self.geometry.chunk_frames)
        return output, EncoderState(keys, values, convs, cached)


class EncoderStream:
    """One utterance: fbank frames in, chunk outputs out, with an exact flush at the end."""

    def __init__(self, session: EncoderSession):
        self.session = session
        geometry = session.geometry
        self.window_frames = geometry.fbank_frames_per_chunk  # 67
        self.shift_frames = geometry.fbank_shift_per_chunk  # 64
        self.reset()

    def reset(self) -> None:
        self.state = self.session.initial_state()
        num_bins = self.session.bundle.manifest.fbank.num_mel_bins
        # Frames from the start of the next window on; always fewer than window_frames between calls.
        self._pending = np.zeros((0, num_bins), dtype=np.float32)
        self.num_chunks = 0

    def accept_frames(self, frames: np.ndarray) -> list[ChunkOutput]:
        """frames: (n, F) CMVN'd fbank. Returns the chunks that became complete (often none)."""
        pending = np.concatenate([self._pending, frames]) if len(self._pending) else np.asarray(frames, np.float32)
        outputs = []
        start = 0
        while len(pending) - start >= self.window_frames:
            outputs.append(self._run(pending[start : start + self.window_frames], self.session.geometry.chunk_frames))
            start += self.shift_frames
        self._pending = pending[start:].copy()
        return outputs

    def fork(self) -> "EncoderStream":
        """An independent copy: flushing it leaves this stream able to go on (states are never
        changed in place, each step returns new ones)."""
        twin = copy.copy(self)
        twin._pending = self._pending.copy()
        return twin

    def flush(self) -> list[ChunkOutput]:
        """End of utterance: run the partly filled last chunk, if it has any encoder frame."""
        valid = num_encoder_frames(len(self._pending))
        outputs = []
        if valid > 0:
            window = np.zeros((self.window_frames, self._pending.shape[1]), dtype=np.float32)
            window[: len(self._pending)] = self._pending
            outputs.append(self._run(window, valid))
        self._pending = self._pending[:0]
        return outputs

    def _run(self, window: np.ndarray, valid: int) -> ChunkOutput:
        output, self.state = self.session.step(window, valid, self.state)
        self.num_chunks += 1
        return output
