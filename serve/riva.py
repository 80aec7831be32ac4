"""NVIDIA Riva's `RivaSpeechRecognition` gRPC service on the nim4-edge runtime, so a Riva application
(C++, Python, any language with gRPC) talks to it unchanged. The message definitions are the ones
NVIDIA publishes in the `nvidia-riva-client` package (riva.client.proto); none is copied here.

    StreamingRecognize   config first, then audio: LINEAR_PCM at any rate (resampled), interim results
                         as partials, finals with is_final, speech_contexts as this stream's hotwords
    Recognize            a whole recording (raw LINEAR_PCM, or a WAV file's bytes)
    GetRivaSpeechRecognitionConfig   the served model, its languages and rate

Not yet (issue 15): word time offsets (the field is accepted; no words are returned), confidence
(0), endpointing_config (the runtime's endpointer is used as configured), batched decoding across
streams.
"""

from __future__ import annotations

import io
import logging
import threading

import grpc
import numpy as np
from riva.client.proto import riva_asr_pb2, riva_asr_pb2_grpc, riva_audio_pb2

from nim4_edge.runtime.audio import MAX_CHANNELS, MAX_RATE_HZ, MIN_RATE_HZ, AudioError, WavReader
from nim4_edge.runtime.errors import Nim4Error
from nim4_edge.runtime.hotwords import HotwordEntry, LexiconError
from nim4_edge.runtime.recognizer import Event, Recognizer

log = logging.getLogger(__name__)

MODEL_NAME = "nim4-edge"
# The demo model's languages; a bundle says nothing more specific yet. Riva codes are BCP-47.
LANGUAGES = ("en", "zh", "cmn", "multi")
MAX_AUDIO_BYTES = 64 << 20  # one Recognize call: 64 MiB (~35 min of 16 kHz PCM)


class StreamSlots:
    """At most `limit` streams at once; one over is refused at once (RESOURCE_EXHAUSTED)."""

    def __init__(self, limit: int):
        self.limit = limit
        self._free = threading.BoundedSemaphore(limit)
        self._lock = threading.Lock()
        self.active = 0

    def take(self) -> bool:
        if not self._free.acquire(blocking=False):
            return False
        with self._lock:
            self.active += 1
        return True

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


def _alternative(event: Event) -> riva_asr_pb2.SpeechRecognitionAlternative:
    return riva_asr_pb2.SpeechRecognitionAlternative(transcript=event.text)


class RivaSpeechRecognition(riva_asr_pb2_grpc.RivaSpeechRecognitionServicer):
    def __init__(self, recognizer: Recognizer, slots: StreamSlots):
        self.recognizer = recognizer
        self.slots = slots

    def _open_stream(self, config, context):
        try:
            rate, channels = _check_config(config)
            stream = self.recognizer.create_stream(hotwords=_hotwords(config))
        except ValueError as e:
            context.abort(grpc.StatusCode.INVALID_ARGUMENT, str(e))
        except LexiconError as e:
            context.abort(grpc.StatusCode.INVALID_ARGUMENT, f"speech_contexts: {e}")
        return stream, rate, channels

    def StreamingRecognize(self, request_iterator, context):
        if not self.slots.take():
            context.abort(grpc.StatusCode.RESOURCE_EXHAUSTED,
                          f"all {self.slots.limit} streams are in use; retry later or start the server with a "
                          "larger --max-streams")
        try:
            first = next(request_iterator, None)
            if first is None or not first.HasField("streaming_config"):
                context.abort(grpc.StatusCode.INVALID_ARGUMENT,
                              "the first message must carry streaming_config (then audio_content)")
            interim = first.streaming_config.interim_results
            stream, rate, channels = self._open_stream(first.streaming_config.config, context)
            pcm = _Pcm(channels)
            with stream:
                for request in request_iterator:
                    if request.HasField("streaming_config"):
                        context.abort(grpc.StatusCode.INVALID_ARGUMENT, "streaming_config may come only once, first")
                    for event in stream.accept_waveform(pcm.samples(request.audio_content), rate):
                        if event.kind == "final" or interim:
                            yield self._response(event)
                for event in stream.input_finished():
                    yield self._response(event)
                if stream.errors:
                    context.abort(grpc.StatusCode.INTERNAL, f"{len(stream.errors)} utterance(s) failed: {stream.errors[0]}")
        finally:
            self.slots.give()

    @staticmethod
    def _response(event: Event) -> riva_asr_pb2.StreamingRecognizeResponse:
        final = event.kind == "final"
        result = riva_asr_pb2.StreamingRecognitionResult(
            alternatives=[_alternative(event)], is_final=final,
            # a partial's text may still change as more audio comes: Riva's stability scale, 1.0 = final
            stability=1.0 if final else 0.5, audio_processed=event.end_s)
        return riva_asr_pb2.StreamingRecognizeResponse(results=[result])

    def Recognize(self, request, context):
        if len(request.audio) > MAX_AUDIO_BYTES:
            context.abort(grpc.StatusCode.INVALID_ARGUMENT, f"audio of {len(request.audio)} bytes; at most {MAX_AUDIO_BYTES}")
        if not self.slots.take():
            context.abort(grpc.StatusCode.RESOURCE_EXHAUSTED, f"all {self.slots.limit} streams are in use; retry later")
        try:
            audio, config = request.audio, request.config
            if audio[:4] == b"RIFF":  # a WAV file's bytes: its header says the rate and channels
                try:
                    with WavReader.from_file(io.BytesIO(audio), "audio") as reader:
                        rate = reader.info.sample_rate_hz
                        samples = np.concatenate(list(reader.blocks(1 << 16)) or [np.zeros(0, np.float32)])
                except AudioError as e:
                    context.abort(grpc.StatusCode.INVALID_ARGUMENT, str(e))
                config.sample_rate_hertz = config.sample_rate_hertz or rate
                if config.sample_rate_hertz != rate:
                    context.abort(grpc.StatusCode.INVALID_ARGUMENT,
                                  f"sample_rate_hertz {config.sample_rate_hertz} but the WAV header says {rate}")
                config.audio_channel_count = 1
            stream, rate, channels = self._open_stream(config, context)
            with stream:
                if audio[:4] != b"RIFF":
                    samples = _Pcm(channels).samples(audio)
                events = stream.accept_waveform(samples, rate) + stream.input_finished()
                if stream.errors:
                    context.abort(grpc.StatusCode.INTERNAL, f"{len(stream.errors)} utterance(s) failed: {stream.errors[0]}")
            results = [riva_asr_pb2.SpeechRecognitionResult(alternatives=[_alternative(e)], audio_processed=e.end_s)
                       for e in events if e.kind == "final"]
            return riva_asr_pb2.RecognizeResponse(results=results)
        except Nim4Error as e:
            context.abort(grpc.StatusCode.INVALID_ARGUMENT, str(e))
        finally:
            self.slots.give()

    def GetRivaSpeechRecognitionConfig(self, request, context):
        bundle = self.recognizer.bundle
        config = riva_asr_pb2.RivaSpeechRecognitionConfigResponse.Config(
            model_name=MODEL_NAME,
            parameters={"language_code": ",".join(LANGUAGES), "sample_rate_hz": str(bundle.manifest.fbank.sample_rate_hz),
                        "streaming": "true", "type": "online", "bundle": bundle.path.name})
        return riva_asr_pb2.RivaSpeechRecognitionConfigResponse(model_config=[config])
