"""The windowed encoder on onnxruntime: exact streaming for an encoder whose attention is block-diagonal.

The encoder (export/qwen3_asr.py) sees audio as 1 s chunks (100 frames -> 13 rows, each chunk alone)
and attends within 8 s windows (8 chunks, 104 rows, each window alone). So, as audio arrives:

    a complete chunk's rows are computed once (the front-end graph) and kept for its window;
    the current chunk is zero-padded, as the official extractor pads the end, and recomputed;
    the current window's rows go through the window graph each time `update()` is called;
    a window with all 8 chunks is final: its embeddings are never recomputed.

`update()` says which embeddings changed: keep the first `keep` rows given before and replace the rest
with `rows`, which is what the decoder's KV cache rolls back (rows past `keep`) and re-appends.

The one difference from offline decoding is the features' dynamic-range clamp, which needs the
utterance's maximum: here each window is normalized with the maximum heard up to its completion (the
current window is re-normalized when the maximum rises). The two are identical whenever the loudest
frame comes in the first window or nothing lies more than 80 dB under it; tests/test_qwen3_asr.py
measures a case where they are not.
"""

from __future__ import annotations

import copy
import time
from dataclasses import dataclass

import numpy as np
import onnxruntime as ort

from nim4_edge.runtime.bundle import Bundle
from nim4_edge.runtime.errors import BundleError
from nim4_edge.runtime.qwen3_asr.features import LogMelStream, normalize

UPDATE_SAMPLES = 10240  # 640 ms: the runtime's update cadence (NIM4's chunk), and the parity checks' pieces


def post_cnn_length(frames: int) -> int:
    """Rows of a chunk of `frames` feature frames (three k=3, s=2, p=1 convolutions)."""
    for _ in range(3):
        frames = (frames - 1) // 2 + 1 if frames > 0 else 0
    return frames


def with_row_profile(providers: list | None, spec) -> list | None:
    """`providers` with an explicit TensorRT shape profile for the window graph. Its rows grow with
    the current window (8 rows at the first 640 ms update, 104 when it is full); onnxruntime's TensorRT
    provider otherwise builds an engine for the shapes seen so far and builds again whenever a longer
    input comes, nearly every update of the first window. A profile of 1..positions_per_window rows
    means one engine. (The front-end graph has fixed shapes.)"""
    rows, width = spec.positions_per_window, spec.d_model
    profile = {"trt_profile_min_shapes": f"hidden:1x1x{width}", "trt_profile_opt_shapes": f"hidden:1x{rows}x{width}",
               "trt_profile_max_shapes": f"hidden:1x{rows}x{width}"}
    return None if providers is None else [
        (p[0], {**p[1], **profile}) if isinstance(p, tuple) and p[0] == "TensorrtExecutionProvider" else
        ("TensorrtExecutionProvider", profile) if p == "TensorrtExecutionProvider" else p for p in providers]


@dataclass
class EncoderUpdate:
    keep: int  # rows given before that stay as they were
    rows: np.ndarray  # (n, D) embeddings that replace every row after `keep`
    compute_ms: float


class WindowedEncoderSession:
    """The bundle's two encoder graphs (shared by all streams)."""

    def __init__(self, bundle: Bundle, providers: list | None = None, num_threads: int = 0,
                 precision: str | None = None):
        if bundle.manifest.family != "qwen3-asr":
            raise BundleError(f"{bundle.path}: not a windowed-encoder bundle (family "
                              f"{bundle.manifest.family!r}); use runtime/encoder.py for it")
        self.bundle = bundle
        self.spec = bundle.manifest.encoder
        self.features = bundle.manifest.features
        try:
            graphs = self.spec.graphs_for(precision)
        except ValueError as e:
            raise BundleError(f"{bundle.path}: {e}") from None
        options = ort.SessionOptions()
        options.intra_op_num_threads = num_threads
        options.inter_op_num_threads = 1
        options.add_session_config_entry("session.intra_op.allow_spinning", "0")  # see runtime/encoder.py
        self.precision = precision or self.spec.precision
        self.front_end = self._load(graphs["front_end"], options, providers)
        self.window = self._load(graphs["window"], options, with_row_profile(providers, self.spec))
        # set to {"front_end": [], "window": []} to keep every run's inputs (int8 calibration)
        self.recorded_feeds: dict[str, list[dict]] | None = None

    def _load(self, name: str, options, providers) -> ort.InferenceSession:
        path = self.bundle.file(name)
        self.bundle.external_data_of(name)
        try:
            return ort.InferenceSession(str(path), sess_options=options, providers=providers or ["CPUExecutionProvider"])
        except Exception as e:  # onnxruntime raises its own types for corrupt graphs
            raise BundleError(f"{path}: onnxruntime cannot load it ({str(e).splitlines()[0]}); re-import") from None

    def chunk_rows(self, features: np.ndarray) -> np.ndarray:
        """(chunk_frames, bins) normalized features, zero-padded -> (13, d) hidden rows."""
        return self._run("front_end", self.front_end, {"features": features.T[None].astype(np.float32)})

    def window_embeddings(self, rows: np.ndarray) -> np.ndarray:
        """(n, d) hidden rows of one window -> (n, D) decoder embeddings."""
        return self._run("window", self.window, {"hidden": rows[None].astype(np.float32)})

    def _run(self, role: str, graph: ort.InferenceSession, feeds: dict) -> np.ndarray:
        if self.recorded_feeds is not None:
            self.recorded_feeds[role].append(feeds)
        return graph.run(None, feeds)[0][0]


class WindowedEncoderStream:
    """One utterance: samples in, embedding updates out. `windows_final=False` is the negative control
    of the tests: every chunk's embeddings are taken as final when first computed (what streaming
    without the window rollback would give)."""

    def __init__(self, session: WindowedEncoderSession, windows_final: bool = True):
        self.session = session
        self.windows_final = windows_final
        spec = session.spec
        self.chunk_frames, self.window_frames = spec.chunk_frames, spec.chunk_frames * spec.window_chunks
        self.features = LogMelStream(session.features)
        self.maximum = -np.inf  # the loudest raw log10 mel value heard so far
        self._raw = np.zeros((0, session.features.num_mel_bins), np.float32)  # the current window's frames
        self._chunks: list[np.ndarray] = []  # hidden rows of its complete chunks
        self._chunks_maximum = -np.inf  # the maximum they were normalized with
        self._final = np.zeros((0, session.spec.embedding_dim), np.float32)  # completed windows' embeddings
        self._given_final = 0  # final rows already given as final
        self._given = 0  # rows given so far
        self._ms = 0.0

    def fork(self) -> "WindowedEncoderStream":
        """An independent copy (a speculative final ends the copy; this stream goes on). Arrays are
        replaced, never written in place, so only the lists and the feature stream are copied."""
        twin = copy.copy(self)
        twin.features, twin._chunks = copy.copy(self.features), list(self._chunks)
        return twin

    def accept(self, samples: np.ndarray) -> None:
        """Samples (float32 in [-1, 1], the bundle's rate) of any count; cheap until `update()`."""
        self._add(self.features.accept(samples))

    def finish(self) -> EncoderUpdate:
        """End of utterance: the last frames (the end reflected), every row final."""
        self._add(self.features.finish())
        if len(self._raw):
            self._complete_window()
        return self.final_update()

    def final_update(self) -> EncoderUpdate:
        """Only the rows of windows completed since the last call (no window graph run): what the
        decoder can take at once, because they never change."""
        return self._update_from(self._final[:0])

    @property
    def new_final_rows(self) -> int:
        return len(self._final) - self._given_final

    def update(self) -> EncoderUpdate:
        """The embeddings that changed since the last call: the current window, recomputed."""
        return self._update_from(self._window())

    def _update_from(self, current: np.ndarray) -> EncoderUpdate:
        # rows before `keep` were given as final; with windows_final off (the control), nothing given
        # is ever replaced, however the window that holds it has changed since
        keep = self._given_final if self.windows_final else self._given
        final = self._final[keep:]  # the control's `keep` may lie past the final rows, inside `current`
        rows = np.concatenate([final, current[max(0, keep - len(self._final)):]]) if len(current) else final
        self._given, self._given_final = keep + len(rows), len(self._final)
        update = EncoderUpdate(keep, rows, self._ms)
        self._ms = 0.0
        return update

    def _add(self, raw: np.ndarray) -> None:
        if not len(raw):
            return
        self.maximum = max(self.maximum, float(raw.max()))
        while len(raw):
            room = self.window_frames - len(self._raw)
            self._raw = np.concatenate([self._raw, raw[:room]])
            raw = raw[room:]
            if len(self._raw) == self.window_frames:
                self._complete_window()

    def _complete_window(self) -> None:
        self._final = np.concatenate([self._final, self._window()])
        self._raw = self._raw[:0]
        self._chunks = []

    def _window(self) -> np.ndarray:
        """The current window's embeddings (its complete chunks' rows kept unless the maximum rose)."""
        t0 = time.perf_counter()
        if self._chunks_maximum != self.maximum:
            self._chunks, self._chunks_maximum = [], self.maximum
        complete = len(self._raw) // self.chunk_frames
        for index in range(len(self._chunks), complete):
            self._chunks.append(self._rows(self._raw[index * self.chunk_frames:(index + 1) * self.chunk_frames]))
        rows = list(self._chunks)
        tail = self._raw[complete * self.chunk_frames:]
        if len(tail):
            rows.append(self._rows(tail)[:post_cnn_length(len(tail))])
        if not rows:
            return np.zeros((0, self.session.spec.embedding_dim), np.float32)
        embeddings = self.session.window_embeddings(np.concatenate(rows))
        self._ms += (time.perf_counter() - t0) * 1000
        return embeddings

    def _rows(self, raw: np.ndarray) -> np.ndarray:
        chunk = np.zeros((self.chunk_frames, raw.shape[1]), np.float32)
        chunk[:len(raw)] = normalize(raw, self.maximum, self.session.features)
        return self.session.chunk_rows(chunk)


def stream_samples(session: WindowedEncoderSession, samples: np.ndarray, piece_samples: int = UPDATE_SAMPLES,
                   windows_final: bool = True) -> np.ndarray:
    """A whole utterance through a stream in `piece_samples` pieces (640 ms), an update after each:
    the embeddings a consumer holds at the end (each update rolls back past `keep`, appends its rows).
    What parity checks and quantization reports compare with the offline forward."""
    stream = WindowedEncoderStream(session, windows_final=windows_final)
    held = np.zeros((0, session.spec.embedding_dim), np.float32)
    for i in range(0, len(samples), piece_samples):
        stream.accept(samples[i:i + piece_samples])
        update = stream.update()
        held = np.concatenate([held[:update.keep], update.rows])
    update = stream.finish()
    return np.concatenate([held[:update.keep], update.rows])
