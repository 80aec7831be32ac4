"""The PyTorch reference: chunk masks, relative positions, and streaming == offline in PyTorch itself."""

from __future__ import annotations

import pytest

torch = pytest.importorskip("torch")

from nim4_edge.export.config import preset  # noqa: E402
from nim4_edge.export.model import (  # noqa: E402
    Nim4AcousticModel,
    chunk_attention_mask,
    count_parameters,
    relative_position_index,
    relative_position_table,
)
from nim4_edge.export.streaming import StreamingEncoderStep  # noqa: E402
from nim4_edge.runtime.geometry import num_encoder_frames  # noqa: E402
from nim4_edge.runtime.phonemes import PhonemeInventory  # noqa: E402


def test_chunk_mask_sees_own_chunk_and_left_chunks_only():
    mask = chunk_attention_mask(10, chunk_frames=2, left_chunks=1)
    # frame 5 is in chunk 2: sees chunks 1 and 2 (frames 2..5), nothing after
    assert mask[5].nonzero().flatten().tolist() == [2, 3, 4, 5]
    assert mask[0].nonzero().flatten().tolist() == [0, 1]
    assert chunk_attention_mask(4, 0, -1).all()
    assert chunk_attention_mask(6, 2, -1)[5].all()


def test_relative_positions_index_distance_query_minus_key():
    q, k, d = 3, 5, 8
    table = relative_position_table(q, k, d)
    index = relative_position_index(q, k)
    assert table.shape == (q + k - 1, d)
    distance_of_row = torch.arange(k - 1, -q, -1)
    for i in range(q):
        for j in range(k):
            assert distance_of_row[index[i, j]].item() == (k - q + i) - j


def test_streaming_step_in_torch_equals_offline_reference():
    torch.manual_seed(0)
    cfg = preset("tiny", len(PhonemeInventory.default())).model
    model = Nim4AcousticModel(cfg).eval()
    step = StreamingEncoderStep(model).eval()
    g = cfg.streaming
    for num_frames in (9, 67, 250, 700):
        feats = torch.randn(1, num_frames, cfg.fbank.num_mel_bins)
        with torch.no_grad():
            ref = model.forward_streaming_reference(feats)
            n = num_encoder_frames(num_frames)
            assert ref.phoneme_log_probs.shape[1] == n
            caches = list(step.example_inputs()[3:])
            log_probs, embeddings = [], []
            for k in range(-(-n // g.chunk_frames)):
                window = feats[:, k * g.fbank_shift_per_chunk :][:, : g.fbank_frames_per_chunk]
                window = torch.nn.functional.pad(window, (0, 0, 0, g.fbank_frames_per_chunk - window.shape[1]))
                valid = min(g.chunk_frames, n - k * g.chunk_frames)
                cached = min(g.left_context_frames, k * g.chunk_frames)
                out = step(window, torch.tensor([valid]), torch.tensor([cached]), *caches)
                log_probs.append(out[0][:, :valid])
                embeddings.append(out[1][:, : -(-valid // g.adaptor_downsample)])
                caches = list(out[2:])
        assert torch.cat(log_probs, 1).sub(ref.phoneme_log_probs).abs().max() < 1e-5
        assert torch.cat(embeddings, 1).sub(ref.embeddings).abs().max() < 1e-5


def test_left_context_changes_the_output():
    """The mask is real: limiting left context changes frames beyond the first chunks."""
    torch.manual_seed(0)
    cfg = preset("tiny", len(PhonemeInventory.default())).model
    model = Nim4AcousticModel(cfg).eval()
    feats = torch.randn(1, 700, cfg.fbank.num_mel_bins)
    lengths = torch.tensor([700])
    with torch.no_grad():
        a = model(feats, lengths, 16, 4).phoneme_log_probs
        b = model(feats, lengths, 16, 1).phoneme_log_probs
        c = model(feats, lengths, -1, -1).phoneme_log_probs
    assert torch.allclose(a[:, :32], b[:, :32], atol=1e-6)  # chunks 0-1 see the same context
    assert (a - b).abs().max() > 1e-3
    assert (a - c).abs().max() > 1e-3


def test_padding_in_a_batch_does_not_change_valid_frames():
    torch.manual_seed(0)
    cfg = preset("tiny", len(PhonemeInventory.default())).model
    model = Nim4AcousticModel(cfg).eval()
    short = torch.randn(1, 200, 80)
    batch = torch.cat([torch.nn.functional.pad(short, (0, 0, 0, 150)), torch.randn(1, 350, 80)])
    with torch.no_grad():
        alone = model(short, torch.tensor([200]), 16, 4)
        both = model(batch, torch.tensor([200, 350]), 16, 4)
    n = alone.frame_lengths.item()
    assert both.frame_lengths.tolist() == [n, num_encoder_frames(350)]
    assert (both.phoneme_log_probs[0, :n] - alone.phoneme_log_probs[0]).abs().max() < 1e-5
    m = alone.embedding_lengths.item()
    assert (both.embeddings[0, :m] - alone.embeddings[0]).abs().max() < 1e-5


def test_full_preset_has_nim4_sizes():
    inventory = PhonemeInventory.default()
    full = preset("full", len(inventory))
    with torch.device("meta"):
        model = Nim4AcousticModel(full.model)
    encoder_params = count_parameters(model.encoder)
    assert 550e6 < encoder_params < 700e6  # "~600M params at full size"
    assert full.model.encoder.num_layers == 16 and full.model.encoder.d_model == 1280
    assert full.model.adaptor.output_dim == full.decoder.hidden_size == 2048
    assert full.decoder.num_hidden_layers == 28 and full.decoder.vocab_size == 151936
