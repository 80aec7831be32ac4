"""One utterance of a windowed-encoder bundle (Qwen3-ASR): audio in, partial and final Events out.

The Stream (runtime/recognizer.py) runs the VAD and the endpointer as for NIM4 and hands this class
the audio of each VAD frame (10 ms). A completed 8 s window's rows are appended to the decoder once and
never touched again. The current window is recomputed (runtime/qwen3_asr/encoder.py) when a partial is
due (every partial_every_chunks x 640 ms) and at the end: the decoder's KV sequence is rolled back to
the rows that did not change and the new rows appended. The final is
the greedy answer after the end of the audio, so it equals offline decoding of the same audio (the
one exception, the features' clamp, is in docs/QWEN3_ASR.md).

Hotwords come from the text: at the end, a first pass (greedy, on a branch) gives a transcript whose
lexicon phonemes the database is searched with (RetrievalMode.TEXT); when that retrieves names, the
final is decoded again with them in the system turn, as the official inference puts context, which
means re-reading the audio after the changed prefix (DecoderSession.final_with_prefix).

What this family does not have: a phoneme head, so no CTC phonemes, hotwords by sound, respelling,
word timestamps or acoustic confidence (those Event fields stay empty / None). So the end-of-turn
score of a speculative final at a pause is the decoder's P(<|im_end|>) alone (NIM4 multiplies it by
the last word's acoustic confidence).
"""

from __future__ import annotations

import copy
import math
import time
from dataclasses import dataclass, replace

import numpy as np

from nim4_edge.runtime.confidence import decoder_confidence
from nim4_edge.runtime.decoder import DecodeResult, DecoderSession
from nim4_edge.runtime.features import SAMPLE_RATE_HZ
from nim4_edge.runtime.hotwords import RetrievalSession
from nim4_edge.runtime.prompt import ContextFirstPrompt
from nim4_edge.runtime.qwen3_asr.encoder import UPDATE_SAMPLES, EncoderUpdate, WindowedEncoderStream
from nim4_edge.runtime.utterance import Event, Timings, speculative_final
from nim4_edge.runtime.vad import FRAME_SAMPLES


@dataclass(frozen=True)
class WindowedSetup:
    prompt: ContextFirstPrompt
    partial_every_chunks: int  # a partial every N updates (640 ms each); 0 = none


class WindowedUtterance:
    def __init__(self, index: int, start_frame: int, setup: WindowedSetup, encoder: WindowedEncoderStream,
                 decoder: DecoderSession, retrieval: RetrievalSession):
        self.index = index
        self.start_frame = start_frame  # its first VAD frame in the stream
        self.onset_frame = start_frame
        self.speech_end_frame = start_frame
        self.setup = setup
        self.encoder = encoder
        self.decoder = decoder
        self.retrieval = retrieval
        self.rows = np.zeros((0, encoder.session.spec.embedding_dim), np.float32)  # what the decoder holds
        self.num_samples = 0
        self.chunks = 0  # 640 ms updates so far
        self._since_update = 0
        self.timings = Timings()
        decoder.start_utterance()
        self._audio_position = decoder.position  # the decoder position of the first audio row

    @property
    def start_s(self) -> float:
        return self.start_frame * FRAME_SAMPLES / SAMPLE_RATE_HZ

    @property
    def end_s(self) -> float:
        return (self.start_frame * FRAME_SAMPLES + self.num_samples) / SAMPLE_RATE_HZ

    def feed(self, audio: np.ndarray, partials: bool = True) -> list[Event]:
        """16 kHz samples of this utterance, in order (any shape: the VAD frames' hops are raveled).
        Without `partials` the encoder is only run at the end (offline)."""
        samples = np.asarray(audio, np.float32).ravel()
        self.num_samples += len(samples)
        self.encoder.accept(samples)
        self._since_update += len(samples)
        if self.encoder.new_final_rows:  # a window completed: its rows go to the decoder once
            self._apply(self.encoder.final_update())
        events = []
        while partials and self._since_update >= UPDATE_SAMPLES:
            self._since_update -= UPDATE_SAMPLES
            self.chunks += 1
            every = self.setup.partial_every_chunks
            if every and self.chunks % every == 0:
                # the current window is recomputed and re-appended only when a partial needs it: its
                # rows cost a decoder prefill each time (1.7B Q4_K_M here: 29 rows/s, bench qwen3-asr)
                self._apply(self.encoder.update())
                result = self.decoder.partial(audio_seconds=self.end_s - self.start_s)
                self.timings.decode_ms += result.prefill_ms + result.decode_ms
                events.append(self._event("partial", result))
        return events

    def _apply(self, update: EncoderUpdate) -> None:
        """Roll the decoder back to the rows that stayed, append the ones that replace the rest."""
        self.timings.encoder_ms += update.compute_ms
        t0 = time.perf_counter()
        self.decoder.truncate(self._audio_position + update.keep)
        self.decoder.append(update.rows)
        self.rows = np.concatenate([self.rows[:update.keep], update.rows])
        self.timings.prefill_ms += (time.perf_counter() - t0) * 1000

    def _event(self, kind: str, result: DecodeResult, stopped_by: str = "", hints: list[str] = ()) -> Event:
        language, text = self.setup.prompt.transcript(result.text)
        timings = replace(self.timings, result_decode_ms=result.decode_ms)
        return Event(kind, text, self.index, self.start_s, self.end_s, list(hints), timings=timings,
                     stopped_by=stopped_by, chunks=self.chunks, tokens=len(result.token_ids), language=language)

    def speculate(self) -> Event | None:
        """The final as if the utterance ended here (EndpointConfig.eot_pause_ms), computed on copies:
        the encoder stream forked and finished, the decoder on a Branch (rolled back and re-appended as
        `_apply` does), retrieval forked. This utterance is left as it was. None: nothing to decode."""
        fork = copy.copy(self)
        fork.encoder, fork.retrieval, fork.timings = self.encoder.fork(), self.retrieval.fork(), replace(self.timings)
        return speculative_final(self, fork)

    def adopt(self, event: Event, endpoint_time: float) -> list[Event]:
        """End the utterance with a speculative final of its (the audio since was silence, not fed)."""
        self.decoder.end_utterance()
        event.timings.final_latency_ms = (time.perf_counter() - endpoint_time) * 1000
        return [event]

    def finish(self, endpoint_time: float) -> list[Event]:
        """The endpoint: the encoder's last frames (all rows final), then the greedy answer."""
        self._apply(self.encoder.finish())
        if self.decoder.position == self._audio_position:
            self.decoder.end_utterance()
            return []
        seconds = self.end_s - self.start_s
        hints = []
        if self.retrieval.database is not None or self.retrieval.retriever.has_additions:
            first = self.decoder.partial(audio_seconds=seconds)
            self.timings.decode_ms += first.prefill_ms + first.decode_ms
            self.retrieval.take_first_pass(self.setup.prompt.transcript(first.text)[1])
            hints = self.retrieval.hints()
        if hints:
            result = self.decoder.final_with_prefix(self.setup.prompt.prefix_for(hints), self.rows, seconds)
        else:
            result = self.decoder.final(audio_seconds=seconds)
        self.timings.prefill_ms += result.prefill_ms
        self.timings.decode_ms += result.decode_ms
        event = self._event("final", result, stopped_by=result.stopped_by, hints=hints)
        event.end_probability = math.exp(result.end_logprob)
        event.end_score = event.end_probability  # no acoustic confidence to weigh it with
        event.decoder_confidence = decoder_confidence(result.token_logprobs)  # no phoneme head: not judged
        event.speech_end_s = self.speech_end_frame * FRAME_SAMPLES / SAMPLE_RATE_HZ
        event.timings.final_latency_ms = (time.perf_counter() - endpoint_time) * 1000
        return [event]
