"""One llama.cpp context for many streams (runtime/shared_decoder.py): same text as a context per
stream, waiting steps of several streams decoded in one batch with the same logits, slots, and one
stream's overflow failing that stream only."""

from __future__ import annotations

import threading
import time
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("llama_cpp")

from nim4_edge import Recognizer, RecognizerConfig  # noqa: E402
from nim4_edge.runtime.bundle import Bundle  # noqa: E402
from nim4_edge.runtime.decoder import DecoderError, DecoderModel, DecoderSession, DecoderSettings  # noqa: E402
from nim4_edge.runtime.shared_decoder import SharedContext, SharedDecoderSession  # noqa: E402

EXAMPLES = ("en_call", "zh_navigate", "en_temperature", "zh_window")
EXAMPLES_DIR = Path(__file__).resolve().parents[1] / "examples"


@pytest.fixture(scope="module")
def model(demo_bundle):
    bundle = Bundle.load(demo_bundle)
    model = DecoderModel(bundle.decoder_file(), bundle.manifest.decoder)
    yield model, bundle.manifest.seconds_per_embedding
    model.close()


def test_streams_on_a_shared_context_read_what_a_context_each_reads(demo_bundle):
    with Recognizer(RecognizerConfig(bundle=demo_bundle)) as recognizer:
        alone = {n: recognizer.transcribe(EXAMPLES_DIR / f"{n}.wav").text for n in EXAMPLES}
    with Recognizer(RecognizerConfig(bundle=demo_bundle, decoder_batch_streams=4)) as recognizer:
        together: dict[str, str] = {}
        threads = [threading.Thread(target=lambda n=n: together.__setitem__(
            n, recognizer.transcribe(EXAMPLES_DIR / f"{n}.wav").text)) for n in EXAMPLES]
        for t in threads:
            t.start()
        for t in threads:
            t.join(120)
        assert together == alone
        shared = recognizer.shared_decoder
        assert shared.steps >= shared.batched_steps > 0


def test_waiting_steps_are_decoded_in_one_batch_with_the_same_logits(model):
    decoder_model, seconds = model
    rng = np.random.default_rng(0)
    embeddings = [(rng.standard_normal((6, decoder_model.n_embd)) * 0.02).astype(np.float32) for _ in range(3)]
    shared = SharedContext(decoder_model, DecoderSettings(n_ctx=256), streams=3)
    sessions = [SharedDecoderSession(shared, seconds) for _ in range(3)]
    try:
        reference = []
        for session, rows in zip(sessions, embeddings):
            alone = DecoderSession(decoder_model, DecoderSettings(n_ctx=256), seconds)
            try:
                alone.start_utterance()
                alone.append(rows)
                reference.append(alone._step(7, alone.utterance_seq, alone.position))
            finally:
                alone.close()
            session.start_utterance()
            session.append(rows)
        got: dict[int, np.ndarray] = {}
        before = shared.batched_steps
        with shared.exclusive():  # hold the context until all three steps wait
            workers = [threading.Thread(target=lambda i=i: got.__setitem__(
                i, sessions[i]._step(7, sessions[i].utterance_seq, sessions[i].position))) for i in range(3)]
            for w in workers:
                w.start()
            deadline = time.monotonic() + 30
            while len(shared._queue) < 3:
                assert time.monotonic() < deadline
                time.sleep(0.01)
        for w in workers:
            w.join(30)
        assert shared.batched_steps == before + 1  # one llama_decode for the three
        for i in range(3):
            assert np.argmax(got[i]) == np.argmax(reference[i])
            assert np.max(np.abs(got[i] - reference[i])) < 0.05 * np.max(np.abs(reference[i]))
    finally:
        for session in sessions:
            session.close()
        shared.close()


def test_slots_run_out_and_come_back(model):
    decoder_model, seconds = model
    shared = SharedContext(decoder_model, DecoderSettings(n_ctx=128), streams=2)
    try:
        first, second = SharedDecoderSession(shared, seconds), SharedDecoderSession(shared, seconds)
        with pytest.raises(DecoderError, match="slots"):
            SharedDecoderSession(shared, seconds)
        first.close()
        third = SharedDecoderSession(shared, seconds)
        assert first.slot is None and third.slot in (0, 1)
        third.close()
        second.close()
    finally:
        shared.close()


def test_one_streams_overflow_fails_only_that_stream(model):
    decoder_model, seconds = model
    shared = SharedContext(decoder_model, DecoderSettings(n_ctx=96), streams=2)
    talker, other = SharedDecoderSession(shared, seconds), SharedDecoderSession(shared, seconds)
    try:
        rows = (np.random.default_rng(1).standard_normal((8, decoder_model.n_embd)) * 0.02).astype(np.float32)
        talker.start_utterance()
        with pytest.raises(DecoderError, match="context full"):
            for _ in range(20):
                talker.append(rows)
        other.start_utterance()
        other.append(rows)
        assert other.final().stopped_by in ("eos", "cap")
    finally:
        talker.close()
        other.close()
        shared.close()
