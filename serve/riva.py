"""NVIDIA Riva's `RivaSpeechRecognition` gRPC service on the nim4-edge runtime, so a Riva application
(C++, Python, any language with gRPC) talks to it unchanged. The message definitions are the ones
NVIDIA publishes in the `nvidia-riva-client` package (riva.client.proto); none is copied here.

    StreamingRecognize   config first, then audio: LINEAR_PCM at any rate (resampled), interim results
                         as partials, finals with is_final, speech_contexts as this stream's hotwords
    Recognize            a whole recording (raw LINEAR_PCM, or a WAV file's bytes)
    GetRivaSpeechRecognitionConfig   the served model, its languages and rate

Finals carry a confidence and, with enable_word_time_offsets, words with start/end times in ms and
a confidence each (runtime/words.py says what the numbers mean); whether each final is confident
(runtime/confidence.py) comes in the call's trailing metadata with the end-of-turn reasons (Riva's
messages have no field for it). endpointing_config sets this
stream's endpointer: start_history -> the speech run that opens an utterance, stop_history -> the
silence that closes it, stop_history_eou -> the pause after which the turn may end early (the
adaptive end of turn); the thresholds are checked but unused (the VAD decides each 10 ms frame, the
endpointer counts consecutive frames: as a threshold of 1.0).

Each call's requests are read on a thread of their own into a bounded queue: a client that sends
faster than the stream computes is slowed by gRPC flow control, and one that goes quiet for the
idle timeout is cut off (DEADLINE_EXCEEDED) and its slot freed.
"""

from __future__ import annotations

import io
import logging
import queue
import threading
import time
from dataclasses import replace

import grpc
import numpy as np
from riva.client.proto import riva_asr_pb2, riva_asr_pb2_grpc, riva_audio_pb2

from nim4_edge.runtime.audio import MAX_CHANNELS, MAX_RATE_HZ, MIN_RATE_HZ, AudioError, WavReader
from nim4_edge.runtime.endpoint import EndpointConfig
from nim4_edge.runtime.errors import Nim4Error, Nim4RuntimeError
from nim4_edge.runtime.hotwords import HotwordEntry, LexiconError
from nim4_edge.runtime.recognizer import Event, Recognizer
from nim4_edge.runtime.vad import FRAME_MS
from nim4_edge.serve.metrics import Metrics

log = logging.getLogger(__name__)

MODEL_NAME = "nim4-edge"
# The demo model's languages; a bundle says nothing more specific yet. Riva codes are BCP-47.
LANGUAGES = ("en", "zh", "cmn", "multi")
MAX_AUDIO_BYTES = 64 << 20  # one Recognize call: 64 MiB (~35 min of 16 kHz PCM)
IDLE_TIMEOUT_S = 30.0  # a stream with no message for this long is closed
QUEUE_MESSAGES = 32  # requests read ahead per stream (~3 s of 100 ms messages)
MAX_HISTORY_MS = 10_000  # endpointing_config start/stop_history at most
PROTOCOL = "grpc"


class StreamSlots:
    """At most `limit` streams at once; one over is refused at once (RESOURCE_EXHAUSTED)."""

    def __init__(self, limit: int):
        self.limit = limit
        self._free = threading.BoundedSemaphore(limit)
        self._lock = threading.Lock()
        self.active = 0

        self.draining = False  # set on SIGTERM: no new streams

    def take(self) -> bool:
        if self.draining or not self._free.acquire(blocking=False):
            return False
        with self._lock:
            self.active += 1
        return True

    def drain(self, timeout_s: float) -> bool:
        """Refuse new streams; wait up to timeout_s for the active ones to end. True if they did."""
        self.draining = True
        deadline = time.monotonic() + timeout_s
        while self.active and time.monotonic() < deadline:
            time.sleep(0.02)
        return not self.active

    def give(self) -> None:
        with self._lock:
            self.active -= 1
        self._free.release()


def _check_config(config: riva_asr_pb2.RecognitionConfig) -> tuple[int, int]:
    """(rate, channels) of a config the runtime can serve; raises ValueError naming the fix."""
    encoding = config.encoding or riva_audio_pb2.AudioEncoding.LINEAR_PCM
    if encoding != riva_audio_pb2.AudioEncoding.LINEAR_PCM:
        name = riva_audio_pb2.AudioEncoding.Name(encoding)
        raise ValueError(f"encoding {name} is not served; send LINEAR_PCM (16-bit little-endian)")
    if not MIN_RATE_HZ <= config.sample_rate_hertz <= MAX_RATE_HZ:
        raise ValueError(f"sample_rate_hertz {config.sample_rate_hertz} is outside {MIN_RATE_HZ}-{MAX_RATE_HZ}")
    channels = config.audio_channel_count or 1
    if not 1 <= channels <= MAX_CHANNELS:
        raise ValueError(f"audio_channel_count {channels} is outside 1-{MAX_CHANNELS}")
    language = config.language_code.lower()
    if language and language.split("-")[0] not in LANGUAGES:
        raise ValueError(f"language_code {config.language_code!r} is not served; this model knows "
                         f"{', '.join(LANGUAGES)} (e.g. en-US, zh-CN)")
    return config.sample_rate_hertz, channels


def _hotwords(config: riva_asr_pb2.RecognitionConfig) -> list[HotwordEntry]:
    return [HotwordEntry(phrase, weight=context.boost if context.boost > 0 else 1.0)
            for context in config.speech_contexts for phrase in context.phrases if phrase.strip()]


class _Pcm:
    """LINEAR_PCM bytes -> mono float samples; an odd byte or a partial frame waits for the next message."""

    def __init__(self, channels: int):
        self.channels = channels
        self._carry = b""

    def samples(self, data: bytes) -> np.ndarray:
        data = self._carry + data
        frame = 2 * self.channels
        usable = len(data) - len(data) % frame
        self._carry = data[usable:]
        pcm = np.frombuffer(data[:usable], dtype="<i2").astype(np.float32) / 32768.0
        return pcm.reshape(-1, self.channels).mean(axis=1) if self.channels > 1 else pcm


def _endpoint(config: riva_asr_pb2.RecognitionConfig, base: EndpointConfig) -> EndpointConfig | None:
    """This stream's endpointing from Riva's endpointing_config (None: the server's); raises
    ValueError naming the fix."""
    if not config.HasField("endpointing_config"):
        return None
    ec = config.endpointing_config
    for name in ("start_threshold", "stop_threshold", "stop_threshold_eou"):
        if not 0.0 <= getattr(ec, name) <= 1.0:
            raise ValueError(f"endpointing_config.{name} {getattr(ec, name)} is outside 0-1")
    changes = {}
    for name, field in (("start_history", "min_speech_ms"), ("stop_history", "trailing_silence_ms"),
                        ("stop_history_eou", "eot_pause_ms")):
        ms = getattr(ec, name)
        if ms < 0 or ms > MAX_HISTORY_MS:
            raise ValueError(f"endpointing_config.{name} {ms} ms is outside 0-{MAX_HISTORY_MS} (0 = the server's)")
        if ms:
            changes[field] = max(FRAME_MS, ms - ms % FRAME_MS)  # whole 10 ms frames
    # a stop_history at or below the server's early-end pause (and no stop_history_eou): no early end
    if "eot_pause_ms" not in changes and changes.get("trailing_silence_ms", base.trailing_silence_ms) <= base.eot_pause_ms:
        changes["eot_pause_ms"] = 0
    if changes.get("eot_pause_ms", 0) >= changes.get("trailing_silence_ms", base.trailing_silence_ms):
        raise ValueError(f"endpointing_config.stop_history_eou {ec.stop_history_eou} ms must be shorter than the "
                         f"stop_history ({changes.get('trailing_silence_ms', base.trailing_silence_ms)} ms)")
    return replace(base, **changes)


def _alternative(event: Event, words: bool = False) -> riva_asr_pb2.SpeechRecognitionAlternative:
    alternative = riva_asr_pb2.SpeechRecognitionAlternative(transcript=event.text, confidence=event.confidence or 0.0)
    if words:
        alternative.words.extend(riva_asr_pb2.WordInfo(word=w.word, start_time=round(w.start_s * 1000),
                                                       end_time=round(w.end_s * 1000), confidence=w.confidence)
                                 for w in event.words)
    return alternative


_END = object()


class _Requests:
    """A call's requests, read on a thread of its own into a bounded queue (see the module's text)."""

    def __init__(self, iterator):
        self._queue: queue.Queue = queue.Queue(QUEUE_MESSAGES)
        self._closed = threading.Event()
        self._thread = threading.Thread(target=self._read, args=(iterator,), name="nim4-grpc-reader", daemon=True)
        self._thread.start()

    def _read(self, iterator) -> None:
        try:
            for request in iterator:
                if not self._put((time.perf_counter(), request)):
                    return
        except Exception:  # noqa: BLE001 - the client went away or the call was cancelled: the stream ends
            pass
        self._put((0.0, _END))

    def _put(self, item) -> bool:
        """Wait while the queue is full (flow control), unless the call has ended; False then."""
        while not self._closed.is_set():
            try:
                self._queue.put(item, timeout=0.2)
                return True
            except queue.Full:
                continue
        return False

    def next(self, timeout_s: float):
        """(time received, request), or (time, None) at the end; raises TimeoutError when idle."""
        try:
            received, request = self._queue.get(timeout=timeout_s)
        except queue.Empty:
            raise TimeoutError from None
        return received, (None if request is _END else request)

    def close(self) -> None:
        self._closed.set()


class RivaSpeechRecognition(riva_asr_pb2_grpc.RivaSpeechRecognitionServicer):
    def __init__(self, recognizer: Recognizer, slots: StreamSlots, metrics: Metrics,
                 idle_timeout_s: float = IDLE_TIMEOUT_S):
        self.recognizer = recognizer
        self.slots = slots
        self.metrics = metrics
        self.idle_timeout_s = idle_timeout_s

    def _abort(self, context, code: grpc.StatusCode, message: str):
        self.metrics.errors.labels(PROTOCOL, code.name).inc()
        context.abort(code, message)

    def _take_slot(self, context) -> None:
        if self.slots.draining:
            self._abort(context, grpc.StatusCode.UNAVAILABLE, "the server is shutting down; retry on another instance")
        if not self.slots.take():
            self.metrics.refused.labels(PROTOCOL).inc()
            self._abort(context, grpc.StatusCode.RESOURCE_EXHAUSTED,
                        f"all {self.slots.limit} streams are in use; retry later or start the server with a "
                        "larger --max-streams")
        self.metrics.streams.labels(PROTOCOL).inc()

    def _open_stream(self, config, context):
        try:
            rate, channels = _check_config(config)
            endpoint = _endpoint(config, self.recognizer.config.endpoint)
            stream = self.recognizer.create_stream(hotwords=_hotwords(config), endpoint=endpoint)
        except ValueError as e:
            self._abort(context, grpc.StatusCode.INVALID_ARGUMENT, str(e))
        except LexiconError as e:
            self._abort(context, grpc.StatusCode.INVALID_ARGUMENT, f"speech_contexts: {e}")
        except Nim4RuntimeError as e:  # e.g. no memory for another decoder context
            self._abort(context, grpc.StatusCode.INTERNAL, f"could not open a stream: {e}")
        return stream, rate, channels

    def _check_errors(self, stream, context) -> None:
        """A failed utterance (e.g. its decoder context full) ends this call with INTERNAL at once;
        the other streams are not touched."""
        if stream.errors:
            self._abort(context, grpc.StatusCode.INTERNAL, f"an utterance failed: {stream.errors[0]}")

    def StreamingRecognize(self, request_iterator, context):
        self._take_slot(context)
        requests = _Requests(request_iterator)
        try:
            yield from self._streaming(requests, context)
        finally:
            requests.close()
            self.slots.give()

    def _next(self, requests: _Requests, context):
        try:
            return requests.next(self.idle_timeout_s)
        except TimeoutError:
            self._abort(context, grpc.StatusCode.DEADLINE_EXCEEDED,
                        f"no message for {self.idle_timeout_s:g} s: the stream was closed; send audio (silence "
                        "too) at least that often, or end the stream")

    def _streaming(self, requests: _Requests, context):
        _, first = self._next(requests, context)
        if first is None or not first.HasField("streaming_config"):  # out of order: a precondition, not a bad value
            self._abort(context, grpc.StatusCode.FAILED_PRECONDITION,
                        "the first message must carry streaming_config (then audio_content)")
        config = first.streaming_config
        interim, words = config.interim_results, config.config.enable_word_time_offsets
        stream, rate, channels = self._open_stream(config.config, context)
        pcm = _Pcm(channels)
        audio = self.metrics.audio_seconds.labels(PROTOCOL)
        turns: list[tuple[str, int, str, str, str]] = []  # (end reason, speech end ms, confident, acoustic, decoder) per final
        with stream:
            while True:
                received, request = self._next(requests, context)
                if request is None:
                    break
                if request.HasField("streaming_config"):
                    self._abort(context, grpc.StatusCode.FAILED_PRECONDITION, "streaming_config may come only once, first")
                samples = pcm.samples(request.audio_content)
                audio.inc(len(samples) / rate)
                for event in stream.accept_waveform(samples, rate):
                    if event.kind == "final" or interim:
                        yield self._response(event, words, received, turns)
                self._check_errors(stream, context)
            if not context.is_active():  # the client went away mid-stream: nobody to compute a final for
                return
            for event in stream.input_finished():
                yield self._response(event, words, None, turns)
            self._check_errors(stream, context)
            # Riva's messages have no field for why a turn ended: the call's trailing metadata lists,
            # per final in order, the reason and where its speech ended (ms into the stream)
            # and whether it is confident (runtime/confidence.py: 1 or 0) with its acoustic and decoder confidence
            context.set_trailing_metadata((("nim4-end-reasons", ",".join(t[0] for t in turns)),
                                           ("nim4-speech-end-ms", ",".join(str(t[1]) for t in turns)),
                                           ("nim4-confident", ",".join(t[2] for t in turns)),
                                           ("nim4-acoustic-confidence", ",".join(t[3] for t in turns)),
                                           ("nim4-decoder-confidence", ",".join(t[4] for t in turns))))

    def _response(self, event: Event, words: bool, received: float | None,
                  turns: list[tuple[str, int, str, str, str]]) -> riva_asr_pb2.StreamingRecognizeResponse:
        final = event.kind == "final"
        if final:
            self.metrics.final(PROTOCOL, event.timings.final_latency_ms, event.end_reason)
            turns.append((event.end_reason, round((event.speech_end_s or 0.0) * 1000), "0" if event.confident is False else "1",
                          f"{event.acoustic_confidence:.4f}" if event.acoustic_confidence is not None else "",
                          f"{event.decoder_confidence:.4f}" if event.decoder_confidence is not None else ""))
        elif received is not None:
            self.metrics.partial_latency.observe(time.perf_counter() - received)
        result = riva_asr_pb2.StreamingRecognitionResult(
            alternatives=[_alternative(event, words and final)], is_final=final,
            # a partial's text may still change as more audio comes: Riva's stability scale, 1.0 = final
            stability=1.0 if final else 0.5, audio_processed=event.end_s)
        return riva_asr_pb2.StreamingRecognizeResponse(results=[result])

    def Recognize(self, request, context):
        if len(request.audio) > MAX_AUDIO_BYTES:
            self._abort(context, grpc.StatusCode.INVALID_ARGUMENT,
                        f"audio of {len(request.audio)} bytes; at most {MAX_AUDIO_BYTES}: split it, or stream it")
        self._take_slot(context)
        try:
            return self._recognize(request, context)
        except Nim4Error as e:
            self._abort(context, grpc.StatusCode.INVALID_ARGUMENT, str(e))
        finally:
            self.slots.give()

    def _recognize(self, request, context):
        audio, config = request.audio, request.config
        if audio[:4] == b"RIFF":  # a WAV file's bytes: its header says the rate and channels
            try:
                with WavReader.from_file(io.BytesIO(audio), "audio") as reader:
                    samples, rate = reader.read_all()
            except AudioError as e:
                self._abort(context, grpc.StatusCode.INVALID_ARGUMENT, str(e))
            config.sample_rate_hertz = config.sample_rate_hertz or rate
            if config.sample_rate_hertz != rate:
                self._abort(context, grpc.StatusCode.INVALID_ARGUMENT,
                            f"sample_rate_hertz {config.sample_rate_hertz} but the WAV header says {rate}")
            config.audio_channel_count = 1
        stream, rate, channels = self._open_stream(config, context)
        with stream:
            if audio[:4] != b"RIFF":
                samples = _Pcm(channels).samples(audio)
            self.metrics.audio_seconds.labels(PROTOCOL).inc(len(samples) / rate)
            events = stream.accept_waveform(samples, rate) + stream.input_finished()
            self._check_errors(stream, context)
        finals = [e for e in events if e.kind == "final"]
        for event in finals:
            self.metrics.final(PROTOCOL, event.timings.final_latency_ms, event.end_reason)
        words = config.enable_word_time_offsets
        return riva_asr_pb2.RecognizeResponse(results=[
            riva_asr_pb2.SpeechRecognitionResult(alternatives=[_alternative(e, words)], audio_processed=e.end_s)
            for e in finals])

    def GetRivaSpeechRecognitionConfig(self, request, context):
        bundle = self.recognizer.bundle
        config = riva_asr_pb2.RivaSpeechRecognitionConfigResponse.Config(
            model_name=MODEL_NAME,
            parameters={"language_code": ",".join(LANGUAGES), "sample_rate_hz": str(bundle.manifest.sample_rate_hz),
                        "streaming": "true", "type": "online", "bundle": bundle.path.name})
        return riva_asr_pb2.RivaSpeechRecognitionConfigResponse(model_config=[config])
