"""The streaming recognizer: audio in, partial and final text events out.

    Recognizer (loads the bundle once: encoder session, decoder weights; shared by streams)
      └─ Stream (one audio stream: resampler, VAD, endpointer; one utterance at a time)
           └─ utterance: online fbank + CMVN -> encoder chunks (640 ms) -> greedy CTC phonemes
                         + 4 embeddings appended to the decoder -> partials -> final at the endpoint

    recognizer = Recognizer(RecognizerConfig(bundle=Path("bundle")))
    stream = recognizer.create_stream()
    for block in blocks:                      # any size, any sample rate
        for event in stream.accept_waveform(block, 48000):
            print(event.kind, event.text)
    for event in stream.input_finished():     # end of input closes an open utterance
        print(event.kind, event.text)
"""

from __future__ import annotations

import collections
import logging
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol

import numpy as np

from nim4_edge.runtime.audio import InputStats, StreamResampler, clean_samples
from nim4_edge.runtime.bundle import Bundle
from nim4_edge.runtime.decoder import DecoderError, DecoderModel, DecoderSession, DecoderSettings
from nim4_edge.runtime.encoder import EncoderSession, EncoderStream
from nim4_edge.runtime.endpoint import EndpointConfig, Endpointer
from nim4_edge.runtime.errors import Nim4Error
from nim4_edge.runtime.vad import FRAME_MS, FRAME_SAMPLES, SAMPLE_RATE_HZ, VadConfig, make_vad

log = logging.getLogger(__name__)


class HotwordRetriever(Protocol):
    """The seam for hotword retrieval (issue 5): greedy CTC phonemes in, words for the prompt out."""

    def retrieve(self, phonemes: list[str]) -> list[str]: ...


@dataclass(frozen=True)
class RecognizerConfig:
    bundle: Path
    decoder_variant: str | None = None  # None: the bundle's default
    decoder: DecoderSettings = field(default_factory=DecoderSettings)
    vad: VadConfig = field(default_factory=VadConfig)
    endpoint: EndpointConfig = field(default_factory=EndpointConfig)
    partial_every_chunks: int = 1  # a partial result every N encoder chunks (640 ms each); 0 = none
    encoder_threads: int = 0  # onnxruntime intra-op threads; 0 = all cores
    verify_bundle_hashes: bool = False  # sha256 every file at start-up (seconds for a 1 GB decoder)

    def __post_init__(self) -> None:
        if self.partial_every_chunks < 0:
            raise ValueError("partial_every_chunks must be >= 0")


@dataclass
class Event:
    kind: str  # "partial" or "final"
    text: str
    utterance: int  # 0, 1, ... within the stream
    start_s: float  # utterance start in the stream's audio timeline (pre-roll included)
    end_s: float  # audio up to which this result is based
    hotwords: list[str] = field(default_factory=list)
    phonemes: list[str] = field(default_factory=list)  # greedy CTC phonemes so far
    timings: dict = field(default_factory=dict)  # encoder_ms, prefill_ms, decode_ms (+ final_latency_ms)
    stopped_by: str = ""  # final only: "eos" or "cap"

    def to_json(self) -> dict:
        return {k: (round(v, 3) if isinstance(v, float) else v) for k, v in self.__dict__.items()} | {
            "timings": {k: round(v, 3) for k, v in self.timings.items()}
        }


class Recognizer:
    """Owns what streams share: the bundle, the ONNX encoder session, the decoder weights."""

    def __init__(self, config: RecognizerConfig, hotwords: HotwordRetriever | None = None):
        self.config = config
        self.bundle = Bundle.load(config.bundle, verify_hashes=config.verify_bundle_hashes)
        manifest = self.bundle.manifest
        if manifest.fbank.sample_rate_hz != SAMPLE_RATE_HZ:
            raise Nim4Error(f"{config.bundle}: bundle expects {manifest.fbank.sample_rate_hz} Hz; this runtime's VAD runs at 16 kHz")
        self.encoder = EncoderSession(self.bundle, num_threads=config.encoder_threads)
        self.decoder_model = DecoderModel(self.bundle.decoder_file(config.decoder_variant), manifest.decoder,
                                          config.decoder.n_gpu_layers)
        self.hotwords = hotwords

    def create_stream(self) -> "Stream":
        return Stream(self)

    def close(self) -> None:
        self.decoder_model.close()


class _Utterance:
    """State of one utterance: fbank, encoder caches, phonemes, the decoder's sequence."""

    def __init__(self, stream: "Stream", index: int, start_frame: int):
        import kaldi_native_fbank as knf

        self.stream = stream
        self.index = index
        self.start_frame = start_frame
        self.num_frames = 0  # 10 ms frames of audio fed
        manifest = stream.recognizer.bundle.manifest
        self.fbank_options = manifest.fbank
        self.cmvn = manifest.cmvn
        self.fbank = knf.OnlineFbank(manifest.fbank.to_knf())
        self.fbank_read = 0  # next fbank frame index to take (indices stay absolute after pop)
        self.encoder = EncoderStream(stream.recognizer.encoder)
        self.blank = manifest.phonemes.blank_id
        self.symbols = manifest.phonemes.symbols
        self.phoneme_ids: list[int] = []
        self._prev_label = self.blank
        self.chunks = 0
        self.timings = {"encoder_ms": 0.0, "prefill_ms": 0.0, "decode_ms": 0.0}
        stream.decoder.start_utterance()

    def _time_s(self, frames: int) -> float:
        return (self.start_frame + frames) * FRAME_MS / 1000

    def feed(self, samples: np.ndarray) -> list[Event]:
        self.num_frames += len(samples) // FRAME_SAMPLES
        self.fbank.accept_waveform(float(self.fbank_options.sample_rate_hz), samples * np.float32(self.fbank_options.waveform_scale))
        events = []
        for chunk in self.encoder.accept_frames(self._new_fbank_frames()):
            self._consume(chunk)
            events += self._maybe_partial()
        return events

    def _new_fbank_frames(self) -> np.ndarray:
        """CMVN'd fbank frames that became ready since the last call, (n, F)."""
        ready = self.fbank.num_frames_ready
        if ready <= self.fbank_read:
            return np.zeros((0, self.cmvn.dim), np.float32)
        frames = np.stack([self.fbank.get_frame(i) for i in range(self.fbank_read, ready)])
        self.fbank.pop(ready - self.fbank_read)
        self.fbank_read = ready
        return self.cmvn.apply(frames)

    def _consume(self, chunk) -> None:
        """One encoder chunk: greedy CTC phonemes (repeats merged across chunk edges), embeddings
        appended to the decoder."""
        self.chunks += 1
        self.timings["encoder_ms"] += chunk.compute_ms
        for label in np.argmax(chunk.phoneme_log_probs, axis=1).tolist():
            if label != self._prev_label and label != self.blank:
                self.phoneme_ids.append(label)
            self._prev_label = label
        t0 = time.perf_counter()
        self.stream.decoder.append(chunk.embeddings)
        self.timings["prefill_ms"] += (time.perf_counter() - t0) * 1000

    def _maybe_partial(self) -> list[Event]:
        every = self.stream.recognizer.config.partial_every_chunks
        if not every or self.chunks % every:
            return []
        result = self.stream.decoder.partial(self._hotwords())
        self.timings["decode_ms"] += result.prefill_ms + result.decode_ms
        return [self._event("partial", result)]

    @property
    def phonemes(self) -> list[str]:
        return [self.symbols[i] for i in self.phoneme_ids]

    def _hotwords(self) -> list[str]:
        retriever = self.stream.recognizer.hotwords
        return list(retriever.retrieve(self.phonemes)) if retriever else []

    def _event(self, kind: str, result, **extra) -> Event:
        return Event(kind, result.text, self.index, self._time_s(0), self._time_s(self.num_frames),
                     self._hotwords(), self.phonemes, dict(self.timings), **extra)

    def finish(self, endpoint_time: float) -> list[Event]:
        """The endpoint: flush fbank and encoder exactly, decode the final text."""
        self.fbank.input_finished()
        for chunk in self.encoder.accept_frames(self._new_fbank_frames()) + self.encoder.flush():
            self._consume(chunk)  # no partials: the final comes next
        if self.stream.decoder.position == len(self.stream.decoder.prefix_ids):
            self.stream.decoder.final()  # nothing to decode (shorter than one encoder frame): close it
            return []
        hotwords = self._hotwords()
        result = self.stream.decoder.final(hotwords, audio_seconds=self.num_frames * FRAME_MS / 1000)
        self.timings["prefill_ms"] += result.prefill_ms
        self.timings["decode_ms"] += result.decode_ms
        self.timings["final_latency_ms"] = (time.perf_counter() - endpoint_time) * 1000
        return [self._event("final", result, stopped_by=result.stopped_by)]


class Stream:
    """One audio stream (a microphone, a file). Utterances are found by the VAD and endpointer."""

    def __init__(self, recognizer: Recognizer):
        self.recognizer = recognizer
        config = recognizer.config
        self.vad = make_vad(config.vad)
        self.endpointer = Endpointer(config.endpoint)
        self.decoder = DecoderSession(recognizer.decoder_model, config.decoder)
        self.input_stats = InputStats()
        self.errors: list[str] = []  # utterances that failed (the stream went on)
        self._resampler: StreamResampler | None = None
        self._pending = np.zeros(0, np.float32)  # < 1 frame of 16 kHz samples
        history = config.endpoint.frames(config.endpoint.pre_roll_ms + config.endpoint.min_speech_ms) + 1
        self._history: collections.deque[np.ndarray] = collections.deque(maxlen=history)
        self._frame_index = 0  # 10 ms frames seen by the VAD
        self._utterance: _Utterance | None = None
        self._utterances = 0

    def accept_waveform(self, samples: np.ndarray, sample_rate: int) -> list[Event]:
        """Feed mono float samples in [-1, 1] at `sample_rate`. Returns the events they completed."""
        if sample_rate <= 0:
            raise Nim4Error(f"sample rate must be positive, got {sample_rate}")
        if self._resampler is None or self._resampler.in_rate_hz != sample_rate:
            if self._resampler is not None:
                log.warning("sample rate changed from %d to %d Hz mid-stream; resampler restarted",
                            self._resampler.in_rate_hz, sample_rate)
                tail = self._resampler.process(np.zeros(0, np.float32), last=True)
                self._pending = np.concatenate([self._pending, tail])
            self._resampler = StreamResampler(sample_rate, SAMPLE_RATE_HZ)
        audio = self._resampler.process(clean_samples(samples, self.input_stats))
        return self._frames(audio)

    def input_finished(self) -> list[Event]:
        """End of input: run the resampler's tail and close an open utterance."""
        events = []
        if self._resampler is not None:
            events += self._frames(self._resampler.process(np.zeros(0, np.float32), last=True))
            self._resampler = None
        if self._utterance is not None:
            events += self._end_utterance()
        return events

    def _frames(self, audio: np.ndarray) -> list[Event]:
        if len(self._pending):
            audio = np.concatenate([self._pending, audio])
        n = len(audio) // FRAME_SAMPLES
        self._pending = audio[n * FRAME_SAMPLES :].copy()
        events: list[Event] = []
        for i in range(n):
            frame = audio[i * FRAME_SAMPLES : (i + 1) * FRAME_SAMPLES]
            events += self._frame(frame)
        return events

    def _frame(self, frame: np.ndarray) -> list[Event]:
        self._history.append(frame)
        self._frame_index += 1
        action, back = self.endpointer.step(self.vad.is_speech(frame))
        events: list[Event] = []
        if action == "start":
            back = min(back, len(self._history))
            self._utterance = _Utterance(self, self._utterances, self._frame_index - back)
            self._utterances += 1
            events += self._guarded(lambda: self._utterance.feed(np.concatenate(list(self._history)[-back:])))
        elif self._utterance is not None:
            events += self._guarded(lambda: self._utterance.feed(frame))
            if action == "end":
                events += self._end_utterance()
        return events

    def _end_utterance(self) -> list[Event]:
        utterance, self._utterance = self._utterance, None
        self.endpointer.reset()
        self._history.clear()  # the next utterance's pre-roll must not reach back into this one
        if utterance is None:
            return []
        return self._guarded(lambda: utterance.finish(time.perf_counter()))

    def _guarded(self, work) -> list[Event]:
        """A failing utterance (e.g. decoder context overflow) is dropped; the stream goes on."""
        try:
            return work()
        except DecoderError as e:
            log.error("utterance dropped: %s", e)
            self.errors.append(str(e))
            self._utterance = None
            self.endpointer.reset()
            return []

    def close(self) -> None:
        self.decoder.close()
