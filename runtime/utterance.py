"""One utterance's state and what it yields: encoder caches, greedy CTC phonemes, the decoder's
KV sequence, hotword retrieval; partial and final Events, and the speculative final at a pause (on
forks of all of it: runtime/recognizer.py's Stream decides what to do with it).
"""

from __future__ import annotations

import copy
import math
import time
from dataclasses import asdict, dataclass, field, replace

import numpy as np

from nim4_edge.runtime.confidence import decoder_confidence, judge
from nim4_edge.runtime.decoder import DecodeResult, DecoderSession
from nim4_edge.runtime.encoder import ChunkOutput, EncoderStream
from nim4_edge.runtime.features import SAMPLE_RATE_HZ
from nim4_edge.runtime.hotwords import Lexicon, RetrievalSession
from nim4_edge.runtime.hotwords.ctc import GreedyCtc
from nim4_edge.runtime.hotwords.respell import respell, respell_by_sound
from nim4_edge.runtime.vad import FRAME_SAMPLES
from nim4_edge.runtime.words import Word, word_timings

@dataclass
class Timings:
    """Where an utterance's time went, in milliseconds (cumulative over the utterance so far)."""

    encoder_ms: float = 0.0  # encoder steps
    prefill_ms: float = 0.0  # embeddings appended to the decoder, prompt suffix of the final
    decode_ms: float = 0.0  # every decode: partials, a first pass, the final
    result_decode_ms: float = 0.0  # the decode that produced this result (for tokens/s)
    respell_ms: float | None = None  # finals with hints: respelling by sound
    words_ms: float | None = None  # finals: word timestamps and confidences (CTC alignment and forward)
    final_latency_ms: float | None = None  # finals: endpoint decided -> text ready (respelling included)
    speculate_ms: float | None = None  # finals: the speculative final(s) at pauses, this one's included

    @property
    def model_ms(self) -> float:
        return self.encoder_ms + self.prefill_ms + self.decode_ms

    def to_json(self) -> dict:
        return {k: round(v, 3) for k, v in asdict(self).items() if v is not None}


@dataclass
class Event:
    kind: str  # "partial" or "final"
    text: str
    utterance: int  # 0, 1, ... within the stream
    start_s: float  # utterance start in the stream's audio timeline (pre-roll included)
    end_s: float  # audio up to which this result is based
    hotwords: list[str] = field(default_factory=list)
    phonemes: list[str] = field(default_factory=list)  # greedy CTC phonemes so far
    timings: Timings = field(default_factory=Timings)
    stopped_by: str = ""  # final only: "eos" or "cap"
    # finals: why the turn ended (endpoint.END_REASONS: "eos-predicted", "silence", "max-length",
    # "end-of-input"), where the VAD last heard speech (stream time), the decoder's P(<|im_end|>) after
    # the text, and end_score = that x the last word's confidence: what the adaptive end of turn
    # compares with EndpointConfig.eot_threshold (a completion the decoder made up has no sound)
    end_reason: str = ""
    speech_end_s: float | None = None
    end_probability: float | None = None
    end_score: float | None = None
    chunks: int = 0  # encoder chunks (640 ms) of the utterance so far
    tokens: int = 0  # tokens this result decoded (for tokens/s)
    # finals: each word's start/end and confidence; the utterance's confidence (runtime/words.py)
    words: list[Word] = field(default_factory=list)
    confidence: float | None = None
    # finals: did the audio say this text (runtime/confidence.py)? The phoneme head's support of the
    # text relative to its own best reading, in [0, 1] (None: no text); the probability of the
    # decoder's least likely token (None: no token); whether the text's language is the language the
    # head heard; confident = that, and acoustic x decoder above the threshold (the text is kept either way)
    acoustic_confidence: float | None = None
    decoder_confidence: float | None = None
    language_match: bool | None = None
    confident: bool | None = None
    # families whose answer names its language (Qwen3-ASR: "language English<asr_text>..."): that name
    language: str | None = None

    def to_json(self) -> dict:
        out = {k: (round(v, 3) if isinstance(v, float) else v) for k, v in self.__dict__.items()
               if k not in ("timings", "words")}
        return out | {"words": [w.to_json() for w in self.words], "timings": self.timings.to_json()}


@dataclass(frozen=True)
class UtteranceSetup:
    """What every utterance of a stream needs, fixed for the stream."""

    lexicon: Lexicon
    symbols: tuple[str, ...]  # phoneme id -> symbol
    blank: int
    frame_window_samples: int  # an fbank frame's window (25 ms)
    frame_shift_s: float  # an fbank frame's shift (10 ms)
    partial_every_chunks: int
    respell_hints: bool
    confidence_threshold: float  # runtime/confidence.py


class Utterance:
    """State of one utterance: encoder caches, greedy phonemes, the decoder's sequence, retrieval."""

    def __init__(self, index: int, start_frame: int, setup: UtteranceSetup, encoder: EncoderStream,
                 decoder: DecoderSession, retrieval: RetrievalSession):
        self.index = index
        self.start_frame = start_frame  # index of its first fbank frame in the stream
        self.onset_frame = start_frame  # where the VAD first heard its speech (after the pre-roll)
        self.speech_end_frame = start_frame  # frames up to the last one the VAD called speech
        self.num_frames = 0  # fbank frames fed
        self.setup = setup
        self.encoder = encoder
        self.decoder = decoder
        self.retrieval = retrieval  # scans only the phonemes each chunk adds
        self.ctc = GreedyCtc(setup.blank)
        self.log_probs: list[np.ndarray] = []  # per chunk (frames, P): respelling by sound, word timestamps
        self.chunks = 0
        self.timings = Timings()
        decoder.start_utterance()

    @property
    def start_s(self) -> float:
        return self.start_frame * FRAME_SAMPLES / SAMPLE_RATE_HZ

    @property
    def end_s(self) -> float:
        """End of the audio the fed frames cover (the last 25 ms window ends 15 ms past its shift)."""
        if not self.num_frames:
            return self.start_s
        return ((self.start_frame + self.num_frames - 1) * FRAME_SAMPLES + self.setup.frame_window_samples) / SAMPLE_RATE_HZ

    @property
    def phonemes(self) -> list[str]:
        return [self.setup.symbols[i] for i in self.ctc.labels]

    def feed(self, frames: np.ndarray, partials: bool = True) -> list[Event]:
        """frames: (n, F) CMVN'd fbank frames of this utterance, in order."""
        self.num_frames += len(frames)
        events = []
        for chunk in self.encoder.accept_frames(frames):
            self._consume(chunk)
            if partials:
                events += self._maybe_partial()
        return events

    def _consume(self, chunk: ChunkOutput) -> None:
        """One encoder chunk: greedy CTC phonemes (retrieval scans them), embeddings appended to the decoder."""
        self.chunks += 1
        self.timings.encoder_ms += chunk.compute_ms
        new = self.ctc.accept(chunk.phoneme_log_probs)
        self.log_probs.append(chunk.phoneme_log_probs)
        self.retrieval.extend_code(self.setup.lexicon.encode_ids(new))
        t0 = time.perf_counter()
        self.decoder.append(chunk.embeddings)
        self.timings.prefill_ms += (time.perf_counter() - t0) * 1000

    def _maybe_partial(self) -> list[Event]:
        every = self.setup.partial_every_chunks
        if not every or self.chunks % every:
            return []
        hints = self.retrieval.hints()
        result = self.decoder.partial(hints)
        self.timings.decode_ms += result.prefill_ms + result.decode_ms
        return [self._event("partial", result, hints)]

    def _all_log_probs(self) -> np.ndarray:
        """The utterance's (T, P) phoneme log-probs, joined once (a final's respelling and word
        alignment both read them)."""
        if len(self.log_probs) > 1:
            self.log_probs = [np.concatenate(self.log_probs)]
        return self.log_probs[0] if self.log_probs else np.zeros((0, len(self.setup.symbols)), np.float32)

    def _event(self, kind: str, result: DecodeResult, hints: list[str], stopped_by: str = "") -> Event:
        text = result.text
        timings = replace(self.timings, result_decode_ms=result.decode_ms)
        if self.setup.respell_hints and hints:
            if kind == "final":  # a CTC forward per candidate span: finals only, partials stay cheap
                t0 = time.perf_counter()
                text = respell_by_sound(text, hints, self.setup.lexicon, self._all_log_probs(), self.setup.blank)
                timings.respell_ms = (time.perf_counter() - t0) * 1000
            text = respell(text, hints, self.setup.lexicon)
        return Event(kind, text, self.index, self.start_s, self.end_s, hints, self.phonemes, timings,
                     stopped_by=stopped_by, chunks=self.chunks, tokens=len(result.token_ids))

    def speculate(self) -> Event | None:
        """The final as if the utterance ended here, computed on copies (the encoder's flush on a fork
        of its stream, the decoder on a Branch of the KV sequence, CTC and retrieval forked): this
        utterance is left exactly as it was, to go on if speech resumes or to be ended with the result
        (adopt). None: nothing to decode yet."""
        fork = copy.copy(self)
        fork.encoder, fork.ctc, fork.retrieval = self.encoder.fork(), self.ctc.fork(), self.retrieval.fork()
        fork.log_probs, fork.timings = list(self.log_probs), replace(self.timings)
        return speculative_final(self, fork)

    def adopt(self, event: Event, endpoint_time: float) -> list[Event]:
        """End the utterance with a speculative final of its (the audio since was silence, not fed)."""
        self.decoder.end_utterance()
        event.timings.final_latency_ms = (time.perf_counter() - endpoint_time) * 1000
        return [event]

    def finish(self, endpoint_time: float) -> list[Event]:
        """The endpoint: flush the encoder exactly (last, partly filled chunk), decode the final text."""
        for chunk in self.encoder.flush():
            self._consume(chunk)  # no partial: the final comes next
        if self.decoder.position == len(self.decoder.prefix_ids):
            self.decoder.end_utterance()  # nothing to decode (shorter than one encoder frame): close it
            return []
        seconds = self.end_s - self.start_s
        if self.retrieval.mode.first_pass:  # a first pass (CTC hints only, or none) on a branch
            first = self.decoder.partial(self.retrieval.hints(), audio_seconds=seconds)
            self.timings.decode_ms += first.prefill_ms + first.decode_ms
            self.retrieval.take_first_pass(first.text)
        hints = self.retrieval.hints()
        result = self.decoder.final(hints, audio_seconds=seconds)
        self.timings.prefill_ms += result.prefill_ms
        self.timings.decode_ms += result.decode_ms
        event = self._event("final", result, hints, stopped_by=result.stopped_by)
        event.end_probability = math.exp(result.end_logprob)
        event.speech_end_s = self.speech_end_frame * FRAME_SAMPLES / SAMPLE_RATE_HZ
        t0 = time.perf_counter()
        event.words, event.confidence = word_timings(
            event.text, self.setup.lexicon, self._all_log_probs(), self.setup.blank, self.setup.frame_shift_s,
            self.start_s, result.text, result.token_texts, result.token_logprobs,
            speech_onset_s=self.onset_frame * FRAME_SAMPLES / SAMPLE_RATE_HZ)
        event.decoder_confidence = decoder_confidence(result.token_logprobs)
        judgement = judge(event.text, self.setup.lexicon, self.ctc.labels, self._all_log_probs(), self.setup.blank,
                          self.setup.confidence_threshold, event.decoder_confidence)
        event.acoustic_confidence, event.language_match = judgement.acoustic_confidence, judgement.language_match
        event.confident = judgement.confident
        event.timings.words_ms = (time.perf_counter() - t0) * 1000
        event.end_score = event.end_probability * (event.words[-1].confidence if event.words else 0.0)
        event.timings.final_latency_ms = (time.perf_counter() - endpoint_time) * 1000
        return [event]


def speculative_final(utterance, fork) -> Event | None:
    """`fork` (a copy of `utterance` with its own encoder stream, retrieval and timings) finished on a
    Branch of the decoder, the branch emptied after: the final as if the utterance ended now, its cost
    added to the utterance's speculate_ms. Both families' speculate() end here."""
    t0 = time.perf_counter()
    fork.decoder = utterance.decoder.branch()
    try:
        events = fork.finish(t0)
    finally:
        fork.decoder.discard()
    if not events:
        return None
    utterance.timings.speculate_ms = (utterance.timings.speculate_ms or 0.0) + (time.perf_counter() - t0) * 1000
    events[0].timings.speculate_ms = utterance.timings.speculate_ms
    return events[0]
