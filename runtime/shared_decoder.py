"""One llama.cpp context for many streams, their greedy decode steps batched into one `llama_decode`.

    seq 0           the prompt prefix, decoded once for everyone
    seq 1 + 2i      stream slot i's utterance
    seq 2 + 2i      stream slot i's scratch branch (partials)

A greedy step of a stream is queued; whichever stream finds the context free takes every queued
step (its own and the others') into one batch, decodes it, hands each its logits row and frees the
context for the next (flat combining: no extra thread, and a lone stream decodes at once). Prefills
(embeddings, a suffix) and sequence edits hold the context alone. Each stream keeps the per-stream
budget of `DecoderSettings.n_ctx` positions; the context has room for all slots at their budget,
so one stream running out of room fails that stream only (DecoderSession._check_room).

When it pays (bench/batching.py): a decode step reads every weight once whatever the batch, so
batching wins where weights are large against the cores (1.32x at 4 streams for a Qwen3-1.7B-size
decoder on 2 cores) and loses where they are tiny (0.53x for the demo decoder: one context per
stream, each on one core, is faster). `serve --batched-decode` turns it on; the default is off.
"""

from __future__ import annotations

import contextlib
import os
import threading

import numpy as np

from nim4_edge.runtime.decoder import KV_TYPES, DecoderError, DecoderModel, DecoderSession, DecoderSettings


class _Step:
    __slots__ = ("seq", "token", "pos", "done", "logits", "error")

    def __init__(self, seq: int, token: int, pos: int):
        self.seq, self.token, self.pos = seq, token, pos
        self.done = False
        self.logits: np.ndarray | None = None
        self.error: Exception | None = None


class SharedContext:
    """The context, its slots, and the step combiner. Thread-safe."""

    def __init__(self, model: DecoderModel, settings: DecoderSettings, streams: int):
        if streams < 1:
            raise ValueError("a shared decoder context needs room for >= 1 stream")
        self.model, self.lib, self.settings, self.streams = model, model.lib, settings, streams
        params = self.lib.llama_context_default_params()
        params.n_ctx = settings.n_ctx * streams
        params.n_batch = params.n_ubatch = max(settings.n_batch, streams)
        params.n_seq_max = 1 + 2 * streams
        params.kv_unified = True
        # one decode serves every stream: it gets every core
        params.n_threads = params.n_threads_batch = os.cpu_count() or 1
        params.type_k = params.type_v = KV_TYPES[settings.kv_cache_type]
        params.flash_attn_type = (self.lib.LLAMA_FLASH_ATTN_TYPE_ENABLED if settings.flash_attn
                                  else self.lib.LLAMA_FLASH_ATTN_TYPE_DISABLED)
        params.no_perf = True
        self.ctx = self.lib.llama_init_from_model(model.model, params)
        if not self.ctx:
            raise DecoderError(f"llama.cpp could not create a shared context of {params.n_ctx} cells (out of memory?)")
        self.memory = self.lib.llama_get_memory(self.ctx)
        self._steps = self.lib.llama_batch_init(params.n_batch, 0, 1)
        self._cv = threading.Condition()
        self._owner: int | None = None  # thread holding the context
        self._depth = 0
        self._queue: list[_Step] = []
        self._free_slots = list(range(streams))
        self.prefix_ready = False
        self.batched_steps = 0  # llama_decode calls for steps, and the steps they carried (bench, tests)
        self.steps = 0

    # --- holding the context ---------------------------------------------------------------------

    @contextlib.contextmanager
    def exclusive(self):
        me = threading.get_ident()
        with self._cv:
            if self._owner != me:
                while self._owner is not None:
                    self._cv.wait()
                self._owner = me
            self._depth += 1
        try:
            yield
        finally:
            with self._cv:
                self._depth -= 1
                if not self._depth:
                    self._owner = None
                    self._cv.notify_all()

    def step(self, seq: int, token: int, pos: int) -> np.ndarray:
        """One greedy step of one sequence, batched with whatever other steps are waiting."""
        mine = _Step(seq, token, pos)
        me = threading.get_ident()
        with self._cv:
            if self._owner == me:  # called while holding the context: decode it alone, now
                self._decode_steps([mine])
                return self._result(mine)
            self._queue.append(mine)
            while not mine.done and self._owner is not None:
                self._cv.wait()
            if mine.done:
                return self._result(mine)
            self._owner, self._depth = me, 1  # lead: take every waiting step
            batch, self._queue = self._queue, []
        try:
            self._decode_steps(batch)
        finally:
            with self._cv:
                for step in batch:
                    step.done = True
                self._owner, self._depth = None, 0
                self._cv.notify_all()
        return self._result(mine)

    def decode_steps(self, steps: list[tuple[int, int, int]]) -> list[np.ndarray]:
        """(seq, token, pos) of several sequences decoded in one call, from one thread (benchmarks)."""
        batch = [_Step(seq, token, pos) for seq, token, pos in steps]
        with self.exclusive():
            self._decode_steps(batch)
        return [self._result(step) for step in batch]

    @staticmethod
    def _result(step: _Step) -> np.ndarray:
        if step.error is not None:
            raise step.error
        return step.logits

    def _decode_steps(self, batch: list[_Step]) -> None:
        lib, steps = self.lib, self._steps
        for start in range(0, len(batch), self.settings.n_batch):
            part = batch[start : start + self.settings.n_batch]
            for i, step in enumerate(part):
                steps.token[i], steps.pos[i], steps.n_seq_id[i], steps.logits[i] = step.token, step.pos, 1, True
                steps.seq_id[i][0] = step.seq
            steps.n_tokens = len(part)
            rc = lib.llama_decode(self.ctx, steps)
            self.batched_steps += 1
            self.steps += len(part)
            for i, step in enumerate(part):
                if rc != 0:
                    step.error = DecoderError(f"llama_decode failed with code {rc} on a batch of {len(part)} "
                                              "streams' steps (1 = no KV slot)")
                else:
                    row = lib.llama_get_logits_ith(self.ctx, i)
                    step.logits = np.ctypeslib.as_array(row, shape=(self.model.n_vocab,)).copy()

    # --- slots -----------------------------------------------------------------------------------

    def take_slot(self) -> int:
        with self._cv:
            if not self._free_slots:
                raise DecoderError(f"all {self.streams} decoder slots of the shared context are in use; "
                                   "raise the stream count it was made for")
            return self._free_slots.pop(0)

    def give_slot(self, slot: int) -> None:
        with self.exclusive():
            for seq in (1 + 2 * slot, 2 + 2 * slot):
                self.lib.llama_memory_seq_rm(self.memory, seq, -1, -1)
        with self._cv:
            self._free_slots.append(slot)

    def close(self) -> None:
        if self.ctx:
            self.lib.llama_batch_free(self._steps)
            self.lib.llama_free(self.ctx)
            self.ctx = None


class SharedDecoderSession(DecoderSession):
    """A DecoderSession on a slot of a SharedContext: the same API, its steps batched with others'."""

    def __init__(self, shared: SharedContext, seconds_per_embedding: float):
        self.shared = shared
        self.slot: int | None = None
        super().__init__(shared.model, shared.settings, seconds_per_embedding)

    def _attach(self) -> None:
        shared = self.shared
        self.slot = shared.take_slot()
        self.utterance_seq, self.branch_seq = 1 + 2 * self.slot, 2 + 2 * self.slot
        self._ctx, self.memory = shared.ctx, shared.memory
        with shared.exclusive():
            if not shared.prefix_ready:  # the first session decodes the prefix for everyone
                self._decode_tokens(self.prefix_ids, self.prefix_seq, 0, logits="none")
                shared.prefix_ready = True

    def _exclusive(self):
        return self.shared.exclusive()

    def _step(self, token: int, seq: int, pos: int) -> np.ndarray:
        self._check_room(pos, 1)
        if not 0 <= token < self.n_vocab:
            raise DecoderError(f"token id {token} outside the vocabulary of {self.n_vocab}")
        return self.shared.step(seq, token, pos)

    def _detach(self) -> None:
        if self.slot is not None:
            self.shared.give_slot(self.slot)
            self.slot = None
