"""The Qwen3 decoder on llama.cpp (llama-cpp-python's low-level API), fed with speech embeddings.

Sequences in the one llama.cpp context (a unified KV cache, so copies share cells instead of data):

    seq 0  the static prompt prefix, decoded once when the session opens
    seq 1  the current utterance: a copy of seq 0, then speech embeddings appended chunk by chunk
    seq 2  a scratch branch: partial results, speculative finals (Branch) and scoring; emptied after
           each use

`final()` appends the suffix (with the retrieved hotwords) to seq 1 and decodes greedily to
`<|im_end|>`, at most `min_new_tokens + max_tokens_per_second * audio seconds` tokens (hallucination
guard), then clears seq 1 for the next utterance.
"""

from __future__ import annotations

import codecs
import contextlib
import ctypes
import logging
import math
import os
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import llama_cpp
import numpy as np

from nim4_edge.runtime.branch import Branch
from nim4_edge.runtime.bundle import DecoderSpec
from nim4_edge.runtime.errors import BundleError, Nim4RuntimeError

log = logging.getLogger(__name__)

PREFIX_SEQ, UTTERANCE_SEQ, BRANCH_SEQ = 0, 1, 2
KV_TYPES = {"f32": 0, "f16": 1, "q8_0": 8}  # ggml_type ids


class DecoderError(Nim4RuntimeError):
    """The decoder session failed: context overflow, llama_decode failed, out of memory, or input
    that cannot come from a valid bundle (wrong embedding width, NaN)."""


@dataclass(frozen=True)
class DecoderSettings:
    """How llama.cpp runs the decoder. The devices/ profiles fill these in per platform."""

    n_threads: int = 0  # threads for single-token decoding; 0 = all cores
    n_threads_batch: int = 0  # threads for prefill (prefix, embeddings, suffix); 0 = all cores
    n_gpu_layers: int = 0  # layers offloaded to the GPU (needs a CUDA build of llama.cpp)
    n_ctx: int = 2048  # KV cells shared by prefix, utterance and branch (~40 + 6.25/s audio + text)
    n_batch: int = 512  # largest decode call; longer inputs are split
    kv_cache_type: str = "f16"  # "f32" gives bit-level parity with transformers (docs/FACTS.md); f16 halves memory
    flash_attn: bool = False  # llama.cpp flash attention (faster on GPU; parity only without it)
    max_tokens_per_second: float = 8.0  # new-token cap per second of audio (speech is < 5 tokens/s)
    min_new_tokens: int = 8  # cap floor for very short utterances

    def __post_init__(self) -> None:
        if self.kv_cache_type not in KV_TYPES:
            raise ValueError(f"kv_cache_type {self.kv_cache_type!r}: choose one of {sorted(KV_TYPES)}")
        if self.n_ctx < 64 or self.n_batch < 1:
            raise ValueError("n_ctx must be >= 64 and n_batch >= 1")

    def token_cap(self, audio_seconds: float) -> int:
        return self.min_new_tokens + math.ceil(self.max_tokens_per_second * max(0.0, audio_seconds))


@dataclass
class DecodeResult:
    text: str
    token_ids: list[int] = field(default_factory=list)
    stopped_by: str = "eos"  # "eos" (<|im_end|>) or "cap" (the hallucination guard)
    prefill_ms: float = 0.0  # suffix prefill
    decode_ms: float = 0.0  # greedy token loop
    # finals: per token, log softmax probability of the chosen token and the text it added
    token_logprobs: list[float] = field(default_factory=list)
    token_texts: list[str] = field(default_factory=list)
    # finals: log P(<|im_end|>) where the decode stopped, after the whole text (the end-of-turn
    # predictor: how sure the model is that what it heard is a complete utterance)
    end_logprob: float = float("-inf")


class IncrementalDetokenizer:
    """Token ids -> text pieces that never end in half a UTF-8 character.

    Byte-level BPE splits a CJK character (3 bytes) over several tokens; the incremental UTF-8 decoder
    holds back an incomplete tail until the rest arrives. Invalid bytes become U+FFFD instead of raising.
    """

    def __init__(self, token_bytes):
        self._token_bytes = token_bytes
        self._utf8 = codecs.getincrementaldecoder("utf-8")(errors="replace")

    def push(self, token: int) -> str:
        return self._utf8.decode(self._token_bytes(token))

    def flush(self) -> str:
        return self._utf8.decode(b"", final=True)


def _quiet_llama_logs() -> None:
    """llama-cpp-python prints llama.cpp's load logs to stderr unless told otherwise."""
    try:
        llama_cpp._logger.set_verbose(False)
    except AttributeError:  # a llama-cpp-python without the module-level logger switch
        pass


class DecoderModel:
    """A loaded GGUF, checked against the manifest. Shared by every stream's DecoderSession (llama.cpp
    contexts of one model share its weights)."""

    def __init__(self, gguf_path: Path, spec: DecoderSpec, n_gpu_layers: int = 0):
        _quiet_llama_logs()
        self.lib = llama_cpp
        self.spec = spec
        self.path = Path(gguf_path)
        if not self.path.is_file():
            raise BundleError(f"{self.path}: decoder GGUF missing")
        llama_cpp.llama_backend_init()
        params = llama_cpp.llama_model_default_params()
        params.n_gpu_layers = n_gpu_layers
        self.model = llama_cpp.llama_model_load_from_file(str(self.path).encode(), params)
        if not self.model:
            raise BundleError(f"{self.path}: llama.cpp cannot load it (not a GGUF, truncated, or an unknown architecture)")
        try:
            self.vocab = llama_cpp.llama_model_get_vocab(self.model)
            self.n_vocab = llama_cpp.llama_vocab_n_tokens(self.vocab)
            self.n_embd = llama_cpp.llama_model_n_embd(self.model)
            self._check_model()
            self._check_tokenizer()
        except BaseException:
            self.close()
            raise

    def _meta(self, key: str) -> str | None:
        buf = ctypes.create_string_buffer(256)
        n = self.lib.llama_model_meta_val_str(self.model, key.encode(), buf, len(buf))
        return buf.value.decode() if n >= 0 else None

    def _check_model(self) -> None:
        spec, path = self.spec, self.path
        arch = self._meta("general.architecture")
        if arch != spec.architecture:
            raise BundleError(f"{path}: GGUF architecture is {arch!r}, the manifest expects {spec.architecture!r}")
        if self.n_embd != spec.hidden_size:
            raise BundleError(f"{path}: GGUF embedding width {self.n_embd}, manifest hidden_size {spec.hidden_size}")
        if self.n_vocab != spec.vocab_size:
            raise BundleError(f"{path}: GGUF vocabulary has {self.n_vocab} tokens, manifest vocab_size {spec.vocab_size}")

    def _check_tokenizer(self) -> None:
        probe = self.spec.tokenizer_probe
        got = self.tokenize(probe["text"])
        if got != list(probe["ids"]):
            raise BundleError(
                f"{self.path}: llama.cpp tokenizes the probe text into {got[:12]}..., the source tokenizer into "
                f"{probe['ids'][:12]}...: the GGUF's tokenizer disagrees with the manifest; re-export the bundle"
            )

    def tokenize(self, text: str) -> list[int]:
        """Text -> token ids; special tokens like <|im_start|> are parsed, no BOS is added."""
        data = text.encode("utf-8")
        capacity = len(data) + 16
        buf = (self.lib.llama_token * capacity)()
        n = self.lib.llama_tokenize(self.vocab, data, len(data), buf, capacity, False, True)
        if n < 0:
            raise DecoderError(f"text of {len(data)} bytes needs {-n} tokens; tokenizer buffer too small")
        return list(buf[:n])

    def token_bytes(self, token: int) -> bytes:
        buf = ctypes.create_string_buffer(64)
        n = self.lib.llama_token_to_piece(self.vocab, token, buf, len(buf), 0, False)
        if n < 0:
            buf = ctypes.create_string_buffer(-n)
            n = self.lib.llama_token_to_piece(self.vocab, token, buf, len(buf), 0, False)
        return buf.raw[:n]

    def weight_bytes(self) -> int:
        return int(self.lib.llama_model_size(self.model))

    def close(self) -> None:
        if getattr(self, "model", None):
            self.lib.llama_model_free(self.model)
            self.model = None

    def __del__(self):
        try:
            self.close()
        except Exception:
            pass


class DecoderSession:
    """A llama.cpp context over a DecoderModel; one utterance at a time (one session per stream)."""

    def __init__(self, model: DecoderModel, settings: DecoderSettings, seconds_per_embedding: float):
        """seconds_per_embedding: audio per embedding row (Manifest.seconds_per_embedding), for the
        new-token cap of a partial or final given no audio_seconds."""
        if not seconds_per_embedding > 0:
            raise ValueError(f"seconds_per_embedding must be > 0, got {seconds_per_embedding}")
        self.seconds_per_embedding = seconds_per_embedding
        self.decoder_model = model
        self.lib = model.lib
        self.spec = model.spec
        self.settings = settings
        self.vocab, self.n_vocab, self.n_embd = model.vocab, model.n_vocab, model.n_embd
        self._owns_model = False
        self._ctx = None
        # this session's sequences in the context (a shared context gives each stream its own pair)
        self.prefix_seq, self.utterance_seq, self.branch_seq = PREFIX_SEQ, UTTERANCE_SEQ, BRANCH_SEQ
        try:
            self._token_batch = self.lib.llama_batch_init(settings.n_batch, 0, 1)
            self._embd_batch = self.lib.llama_batch_init(settings.n_batch, self.n_embd, 1)
            self.prefix_ids = self.tokenize(self.spec.prompt.prefix)
            if len(self.prefix_ids) + 64 > settings.n_ctx:
                raise DecoderError(f"the prompt prefix ({len(self.prefix_ids)} tokens) leaves no room in n_ctx={settings.n_ctx}")
            self._attach()
        except BaseException:
            self.close()
            raise
        self.position = len(self.prefix_ids)  # next position in the utterance sequence
        self._utterance_open = False
        self.last_suffix = ""  # the suffix text of the last partial/final (hotword hints included)

    def _attach(self) -> None:
        """A context of this session's own, with the prompt prefix decoded into it."""
        self._ctx = self._new_context()
        self.memory = self.lib.llama_get_memory(self._ctx)
        self._decode_tokens(self.prefix_ids, self.prefix_seq, 0, logits="none")

    def _detach(self) -> None:
        self.lib.llama_free(self._ctx)

    def _exclusive(self):
        """Held around every use of the context: nothing to share for a context of one's own."""
        return contextlib.nullcontext()

    def _seq_rm(self, seq: int) -> None:
        with self._exclusive():
            self.lib.llama_memory_seq_rm(self.memory, seq, -1, -1)

    def _seq_truncate(self, seq: int, pos: int) -> None:
        """Drop positions >= pos of seq (roll a decode back)."""
        with self._exclusive():
            self.lib.llama_memory_seq_rm(self.memory, seq, pos, -1)

    def seq_positions(self, seq: int) -> tuple[int, int]:
        """(lowest, highest) position held by seq; (-1, -1) when it is empty (tests, diagnostics)."""
        with self._exclusive():
            return (int(self.lib.llama_memory_seq_pos_min(self.memory, seq)),
                    int(self.lib.llama_memory_seq_pos_max(self.memory, seq)))

    def _seq_cp(self, source: int, target: int) -> None:
        with self._exclusive():
            self.lib.llama_memory_seq_rm(self.memory, target, -1, -1)
            self.lib.llama_memory_seq_cp(self.memory, source, target, -1, -1)

    def _prefill_last(self, tokens: list[int], seq: int, pos: int) -> np.ndarray:
        """Decode tokens; the logits after the last one."""
        with self._exclusive():
            self._decode_tokens(tokens, seq, pos, logits="last")
            return self._read_last_logits()

    def _step(self, token: int, seq: int, pos: int) -> np.ndarray:
        """One greedy step: decode one token; its logits. (A shared context batches these.)"""
        return self._prefill_last([token], seq, pos)

    @classmethod
    def open(cls, gguf_path: Path, spec: DecoderSpec, settings: DecoderSettings,
             seconds_per_embedding: float) -> "DecoderSession":
        """A session with a model of its own (tools and tests; a Recognizer shares one model)."""
        model = DecoderModel(gguf_path, spec, settings.n_gpu_layers)
        try:
            session = cls(model, settings, seconds_per_embedding)
        except BaseException:
            model.close()
            raise
        session._owns_model = True
        return session

    def _new_context(self):
        lib, s = self.lib, self.settings
        params = lib.llama_context_default_params()
        params.n_ctx = s.n_ctx
        params.n_batch = s.n_batch
        params.n_ubatch = s.n_batch
        params.n_seq_max = 3
        params.kv_unified = True  # sequence copies share cells (the prefix is stored once)
        params.n_threads = s.n_threads or os.cpu_count() or 1
        params.n_threads_batch = s.n_threads_batch or os.cpu_count() or 1
        params.type_k = KV_TYPES[s.kv_cache_type]
        params.type_v = KV_TYPES[s.kv_cache_type]
        params.flash_attn_type = lib.LLAMA_FLASH_ATTN_TYPE_ENABLED if s.flash_attn else lib.LLAMA_FLASH_ATTN_TYPE_DISABLED
        params.no_perf = True
        ctx = lib.llama_init_from_model(self.decoder_model.model, params)
        if not ctx:
            raise DecoderError(f"llama.cpp could not create a context of {s.n_ctx} cells (out of memory?)")
        return ctx

    def tokenize(self, text: str) -> list[int]:
        return self.decoder_model.tokenize(text)

    def token_bytes(self, token: int) -> bytes:
        return self.decoder_model.token_bytes(token)

    # --- low-level decode -----------------------------------------------------------------------

    def _check_room(self, position: int, count: int) -> None:
        if position + count > self.settings.n_ctx:
            raise DecoderError(
                f"context full: position {position} + {count} new rows > n_ctx {self.settings.n_ctx}; "
                "raise DecoderSettings.n_ctx or shorten the maximum utterance length"
            )

    def _run(self, batch, count: int) -> None:
        batch.n_tokens = count
        rc = self.lib.llama_decode(self._ctx, batch)
        if rc != 0:
            raise DecoderError(f"llama_decode failed with code {rc} (1 = no KV slot: context full)")

    def _fill_common(self, batch, i: int, pos: int, seq: int, want_logits: bool) -> None:
        batch.pos[i] = pos
        batch.n_seq_id[i] = 1
        batch.seq_id[i][0] = seq
        batch.logits[i] = want_logits

    def _decode(self, count: int, batch, fill, seq: int, pos: int, logits: str) -> np.ndarray | None:
        """Decode `count` rows at positions pos.. in `seq`, at most n_batch per llama_decode call.
        `fill(batch, start, n)` puts rows start..start+n into the batch. `logits`: "none", "last"
        (then read with _read_last_logits) or "all" (returned, (count, V))."""
        self._check_room(pos, count)
        with self._exclusive():
            return self._decode_locked(count, batch, fill, seq, pos, logits)

    def _decode_locked(self, count: int, batch, fill, seq: int, pos: int, logits: str) -> np.ndarray | None:
        rows = []
        for start in range(0, count, self.settings.n_batch):
            n = min(self.settings.n_batch, count - start)
            fill(batch, start, n)
            for i in range(n):
                last = start + i == count - 1
                self._fill_common(batch, i, pos + start + i, seq, logits == "all" or (last and logits == "last"))
            self._run(batch, n)
            if logits == "all":
                rows += [self._logits_row(i) for i in range(n)]
        return np.stack(rows) if logits == "all" else None

    def _decode_tokens(self, tokens: Sequence[int], seq: int, pos: int, logits: str) -> np.ndarray | None:
        bad = [t for t in tokens if not 0 <= t < self.n_vocab]
        if bad:
            raise DecoderError(f"token id {bad[0]} outside the vocabulary of {self.n_vocab}")

        def fill(batch, start: int, n: int) -> None:
            for i in range(n):
                batch.token[i] = tokens[start + i]

        return self._decode(len(tokens), self._token_batch, fill, seq, pos, logits)

    def _decode_embeddings(self, embeddings: np.ndarray, seq: int, pos: int, logits: str) -> np.ndarray | None:
        embeddings = np.ascontiguousarray(embeddings, dtype=np.float32)
        if embeddings.ndim != 2 or embeddings.shape[1] != self.n_embd:
            raise DecoderError(
                f"speech embeddings have shape {tuple(embeddings.shape)}, the decoder takes (n, {self.n_embd})"
            )
        if not np.isfinite(embeddings).all():
            raise DecoderError("speech embeddings contain NaN or Inf")

        def fill(batch, start: int, n: int) -> None:
            piece = embeddings[start : start + n]
            ctypes.memmove(batch.embd, piece.ctypes.data, piece.nbytes)

        return self._decode(len(embeddings), self._embd_batch, fill, seq, pos, logits)

    def _logits_row(self, i: int) -> np.ndarray:
        ptr = self.lib.llama_get_logits_ith(self._ctx, i)
        return np.ctypeslib.as_array(ptr, shape=(self.n_vocab,)).copy()

    def _read_last_logits(self) -> np.ndarray:
        return self._logits_row(-1)

    # --- utterance API --------------------------------------------------------------------------

    def start_utterance(self) -> None:
        """Begin an utterance as a copy of the cached prefix (no re-decode)."""
        self._seq_rm(self.branch_seq)
        self._seq_cp(self.prefix_seq, self.utterance_seq)
        self.position = len(self.prefix_ids)
        self._utterance_open = True

    def _require_utterance(self) -> None:
        if not self._utterance_open:
            self.start_utterance()

    def append(self, embeddings: np.ndarray, all_logits: bool = False) -> np.ndarray | None:
        """Append speech embedding rows (n, D) to the utterance (chunked prefill). No logits are
        computed unless `all_logits` (then (n, V) is returned: parity checks)."""
        self._require_utterance()
        if len(embeddings) == 0:
            return np.zeros((0, self.n_vocab), np.float32) if all_logits else None
        logits = self._decode_embeddings(embeddings, self.utterance_seq, self.position, "all" if all_logits else "none")
        self.position += len(embeddings)
        return logits

    def truncate(self, position: int) -> None:
        """Drop the utterance's positions from `position` on: embeddings that changed (a windowed
        encoder's current window) are rolled back before their new values are appended."""
        self._require_utterance()
        if not len(self.prefix_ids) <= position <= self.position:
            raise ValueError(f"truncate to {position}: outside the utterance ({len(self.prefix_ids)}..{self.position})")
        self._seq_truncate(self.utterance_seq, position)
        self.position = position

    def append_tokens(self, tokens: Sequence[int], all_logits: bool = False) -> np.ndarray | None:
        self._require_utterance()
        if len(tokens) == 0:
            return np.zeros((0, self.n_vocab), np.float32) if all_logits else None
        logits = self._decode_tokens(tokens, self.utterance_seq, self.position, "all" if all_logits else "none")
        self.position += len(tokens)
        return logits

    def _suffix_ids(self, hotwords: Sequence[str]) -> list[int]:
        self.last_suffix = self.spec.prompt.suffix(list(hotwords))
        return self.tokenize(self.last_suffix)

    def _greedy(self, seq: int, pos: int, suffix: list[int], cap: int, probabilities: bool = False) -> DecodeResult:
        """Greedy decode to <|im_end|> or `cap` tokens. `probabilities`: also each chosen token's log
        softmax probability (a log-sum-exp over the vocabulary per token: finals only)."""
        t0 = time.perf_counter()
        logits = self._prefill_last(suffix, seq, pos)
        pos += len(suffix)
        prefill_ms = (time.perf_counter() - t0) * 1000
        t0 = time.perf_counter()
        detokenizer = IncrementalDetokenizer(self.token_bytes)
        pieces, ids, logprobs, stopped_by = [], [], [], "cap"
        im_end = self.spec.token_ids["im_end"]
        for _ in range(cap):
            token = int(np.argmax(logits))
            if token == im_end or self.lib.llama_vocab_is_eog(self.vocab, token):
                stopped_by = "eos"
                break
            if probabilities:
                best = float(logits[token])
                logprobs.append(-math.log(float(np.exp(logits - best).sum())))
            ids.append(token)
            pieces.append(detokenizer.push(token))
            logits = self._step(token, seq, pos)
            pos += 1
        end_logprob = float("-inf")
        if probabilities:  # finals only: a log-sum-exp over the vocabulary, not on the partial path
            shifted = logits.astype(np.float64) - float(logits.max())  # float64: a near-certain end stays < 1
            end_logprob = float(shifted[im_end] - math.log(float(np.exp(shifted).sum())))
        text = "".join(pieces) + detokenizer.flush()  # token_texts: the pieces before the flushed tail
        return DecodeResult(text, ids, stopped_by, prefill_ms, (time.perf_counter() - t0) * 1000,
                            token_logprobs=logprobs, token_texts=pieces if probabilities else [],
                            end_logprob=end_logprob)

    def partial(self, hotwords: Sequence[str] = (), audio_seconds: float | None = None) -> DecodeResult:
        """Greedy text so far, decoded on a branch; the utterance sequence is left untouched."""
        branch = self.branch()
        try:
            return branch.partial(hotwords, audio_seconds)
        finally:
            branch.discard()

    def final(self, hotwords: Sequence[str] = (), audio_seconds: float | None = None) -> DecodeResult:
        """Append the suffix with `hotwords`, decode greedily to <|im_end|>, end the utterance."""
        self._require_utterance()
        try:
            return self._ending(self.utterance_seq, self.position, hotwords, audio_seconds, probabilities=True)
        finally:
            self.end_utterance()

    def final_with_prefix(self, prefix: str, rows: np.ndarray, audio_seconds: float | None = None) -> DecodeResult:
        """The final of a prompt whose context comes before the audio (a ContextFirstPrompt with hints):
        `prefix`, then the utterance's embedding `rows` again, then the suffix, decoded greedily on the
        branch sequence; ends the utterance. The cached prefix cannot serve: the hints change it."""
        self._require_utterance()
        try:
            return self._decode_after_prefix(prefix, rows, audio_seconds)
        finally:
            self.end_utterance()

    def _decode_after_prefix(self, prefix: str, rows: np.ndarray, audio_seconds: float | None) -> DecodeResult:
        """`prefix`, `rows`, the suffix and the greedy answer on the branch sequence, emptied after."""
        try:
            ids = self.tokenize(prefix)
            self._seq_rm(self.branch_seq)
            self._decode_tokens(ids, self.branch_seq, 0, logits="none")
            self._decode_embeddings(np.ascontiguousarray(rows, np.float32), self.branch_seq, len(ids), "none")
            return self._ending(self.branch_seq, len(ids) + len(rows), (), audio_seconds, probabilities=True)
        finally:
            self._seq_rm(self.branch_seq)

    def end_utterance(self) -> None:
        """Close the utterance without decoding (its final came from a Branch, or there is none)."""
        self._seq_rm(self.utterance_seq)
        self._utterance_open = False
        self.position = len(self.prefix_ids)

    def branch(self) -> "Branch":
        """A copy of the utterance sequence to try an ending on (a speculative final). The utterance
        sequence and position stay as they are; discard the branch before the next partial."""
        self._require_utterance()
        return Branch(self)

    def _ending(self, seq: int, pos: int, hotwords: Sequence[str], audio_seconds: float | None,
                probabilities: bool) -> DecodeResult:
        """The suffix with `hotwords` after position `pos` of `seq`, then greedy to <|im_end|> or the
        cap for `audio_seconds` (None: the speech embeddings before `pos`)."""
        if audio_seconds is None:
            audio_seconds = (pos - len(self.prefix_ids)) * self.seconds_per_embedding
        return self._greedy(seq, pos, self._suffix_ids(hotwords), self.settings.token_cap(audio_seconds), probabilities)

    # --- diagnostics ----------------------------------------------------------------------------

    def score(self, pieces: Sequence[np.ndarray | Sequence[int]]) -> np.ndarray:
        """Logits at every position of a sequence built from token-id lists and embedding arrays,
        decoded from position 0 on the scratch branch (parity checks). Returns (n, V)."""
        self._seq_rm(self.branch_seq)
        rows, pos = [], 0
        try:
            for piece in pieces:
                if isinstance(piece, np.ndarray) and piece.dtype.kind == "f":
                    rows.append(self._decode_embeddings(piece, self.branch_seq, pos, logits="all"))
                else:
                    rows.append(self._decode_tokens(list(piece), self.branch_seq, pos, logits="all"))
                pos += len(piece)
        finally:
            self._seq_rm(self.branch_seq)
        return np.concatenate(rows)

    def close(self) -> None:
        lib = self.lib
        for name in ("_token_batch", "_embd_batch"):
            batch = self.__dict__.pop(name, None)
            if batch is not None:
                lib.llama_batch_free(batch)
        if getattr(self, "_ctx", None):
            self._detach()
            self._ctx = None
        if getattr(self, "_owns_model", False):
            self.decoder_model.close()
            self._owns_model = False

    def __del__(self):
        try:
            self.close()
        except Exception:
            pass
