"""The llama.cpp decoder session: parity with transformers, chunked prefill, partial branches,
UTF-8 detokenization, the token cap, quantization, and bad input."""

from __future__ import annotations

import json

import numpy as np
import pytest

pytest.importorskip("llama_cpp", reason="llama-cpp-python is not installed")

from nim4_edge.runtime.bundle import Bundle  # noqa: E402
from nim4_edge.runtime.decoder import DecoderError, DecoderSession, DecoderSettings, IncrementalDetokenizer  # noqa: E402
from nim4_edge.runtime.errors import BundleError  # noqa: E402

PARITY = DecoderSettings(kv_cache_type="f32", n_ctx=512)


def _session(bundle_path, settings=PARITY, variant=None):
    bundle = Bundle.load(bundle_path)
    return DecoderSession.open(bundle.decoder_file(variant), bundle.manifest.decoder, settings,
                               bundle.manifest.seconds_per_embedding)


def _speech(session, rows, seed=0):
    return (np.random.default_rng(seed).standard_normal((rows, session.n_embd)) * 0.02).astype(np.float32)


def test_parity_with_transformers(tiny_checkpoint, tiny_bundle):
    pytest.importorskip("transformers")
    from nim4_edge.export.checkpoint import read_checkpoint
    from nim4_edge.export.verify import VerifyOptions, verify_decoder

    report = verify_decoder(read_checkpoint(tiny_checkpoint), Bundle.load(tiny_bundle), VerifyOptions())
    assert report["variant"] == "f32"
    assert report["max_abs_logit_diff_text_positions"] <= 1e-3
    assert report["max_abs_logit_diff_speech_positions"] <= 1e-3
    assert report["greedy_tokens"] == 32 and report["greedy_identical"] is True
    assert report["passed"] is True


def test_chunked_prefill_equals_one_shot(tiny_bundle):
    session = _session(tiny_bundle)
    speech = _speech(session, 13)
    suffix = session.tokenize(session.spec.prompt.suffix(["NIO House"]))
    session.start_utterance()
    session.append(speech)
    one_shot = session.append_tokens(suffix, all_logits=True)
    session.start_utterance()
    for piece in np.split(speech, [1, 5, 6, 12]):  # uneven pieces: 1, 4, 1, 6, 1 rows
        session.append(piece)
    chunked = session.append_tokens(suffix, all_logits=True)
    session.close()
    assert np.abs(one_shot - chunked).max() <= 1e-4


def test_partial_leaves_the_utterance_untouched(tiny_bundle):
    session = _session(tiny_bundle)
    speech = _speech(session, 8, seed=1)
    suffix = session.tokenize(session.spec.prompt.suffix())

    session.start_utterance()
    session.append(speech)
    expected = session.append_tokens(suffix, all_logits=True)

    session.start_utterance()
    session.append(speech[:4])
    session.partial()
    session.append(speech[4:])
    partial = session.partial()
    got = session.append_tokens(suffix, all_logits=True)
    assert np.abs(expected - got).max() <= 1e-5

    # a partial on the final state gives the final's text
    session.start_utterance()
    session.append(speech)
    assert session.partial().token_ids == session.final().token_ids == partial.token_ids
    session.close()


def test_utterances_are_independent(tiny_bundle):
    session = _session(tiny_bundle)
    speech = _speech(session, 6, seed=2)
    session.start_utterance()
    session.append(speech)
    first = session.final(["NIO House"])
    session.start_utterance()
    session.append(_speech(session, 20, seed=3))
    session.final()
    session.start_utterance()
    session.append(speech)
    assert session.final(["NIO House"]).token_ids == first.token_ids
    session.close()


def test_token_cap_guards_against_runaway_output(tiny_bundle):
    settings = DecoderSettings(kv_cache_type="f32", n_ctx=512, min_new_tokens=2, max_tokens_per_second=5.0)
    session = _session(tiny_bundle, settings)
    session.start_utterance()
    session.append(_speech(session, 4))  # 4 rows = 0.64 s -> cap 2 + ceil(3.2) = 6
    result = session.final()
    session.close()
    assert settings.token_cap(0.64) == 6
    assert len(result.token_ids) <= 6
    assert result.stopped_by in ("eos", "cap")
    if len(result.token_ids) == 6:
        assert result.stopped_by == "cap"


def test_incremental_detokenizer_never_emits_half_a_character(tiny_bundle):
    session = _session(tiny_bundle)
    text = "导航到惠新西街, then call 妈妈"
    ids = session.tokenize(text)
    detok = IncrementalDetokenizer(session.token_bytes)
    pieces = [detok.push(t) for t in ids] + [detok.flush()]
    session.close()
    assert len(ids) > len(text.encode()) // 3  # CJK characters really are split over byte tokens
    assert "".join(pieces) == text
    assert not any("\ufffd" in p for p in pieces)


def test_wrong_embedding_width_names_both_sides(tiny_bundle):
    session = _session(tiny_bundle)
    session.start_utterance()
    with pytest.raises(DecoderError, match=r"\(3, 100\).*\(n, 256\)"):
        session.append(np.zeros((3, 100), np.float32))
    with pytest.raises(DecoderError, match="NaN"):
        session.append(np.full((1, 256), np.nan, np.float32))
    session.close()


def test_context_overflow_is_an_error_not_a_crash(tiny_bundle):
    session = _session(tiny_bundle, DecoderSettings(kv_cache_type="f32", n_ctx=128))
    session.start_utterance()
    with pytest.raises(DecoderError, match="context full"):
        session.append(_speech(session, 200))
    session.close()
    with pytest.raises(DecoderError, match="prefix"):
        _session(tiny_bundle, DecoderSettings(n_ctx=64))


def _edit_decoder_spec(bundle_dir, **changes):
    path = bundle_dir / "manifest.json"
    data = json.loads(path.read_text())
    data["decoder"].update(changes)
    path.write_text(json.dumps(data))


def test_gguf_of_another_architecture_is_refused(bundle_copy):
    _edit_decoder_spec(bundle_copy, architecture="llama")
    with pytest.raises(BundleError, match="'qwen3'.*'llama'"):
        _session(bundle_copy)


def test_vocabulary_mismatch_is_refused(bundle_copy):
    _edit_decoder_spec(bundle_copy, vocab_size=1024)
    with pytest.raises(BundleError, match="512 tokens.*1024"):
        _session(bundle_copy)


def test_tokenizer_disagreement_is_refused(bundle_copy):
    data = json.loads((bundle_copy / "manifest.json").read_text())
    probe = data["decoder"]["tokenizer_probe"]
    probe["ids"] = probe["ids"][::-1]
    _edit_decoder_spec(bundle_copy, tokenizer_probe=probe)
    with pytest.raises(BundleError, match="tokenizer disagrees"):
        _session(bundle_copy)


def test_truncated_gguf_is_refused(tiny_bundle, tmp_path):
    bundle = Bundle.load(tiny_bundle)
    broken = tmp_path / "broken.gguf"
    broken.write_bytes(bundle.decoder_file().read_bytes()[:5000])
    with pytest.raises(BundleError, match="cannot load"):
        DecoderSession.open(broken, bundle.manifest.decoder, PARITY, bundle.manifest.seconds_per_embedding)


def test_quantized_levels_agree_with_f32_on_a_trained_decoder(trained_bundle, tmp_path):
    import shutil

    from nim4_edge.quant.gguf_quant import quantize_bundle

    bundle_dir = tmp_path / "b"
    shutil.copytree(trained_bundle, bundle_dir)
    report = quantize_bundle(bundle_dir, ["Q8_0", "Q4_K_M"])
    bundle = Bundle.load(bundle_dir, verify_hashes=True)
    assert set(bundle.manifest.decoder.variants) == {"f32", "Q8_0", "Q4_K_M"}
    sizes = {v: bundle.decoder_file(v).stat().st_size for v in ("f32", "Q8_0", "Q4_K_M")}
    assert sizes["Q4_K_M"] < sizes["Q8_0"] < sizes["f32"]
    agreement = report["agreement"]
    assert agreement["Q8_0"]["reference_tokens"] > 20
    # Q8_0 is near-lossless on a trained model; Q4_K_M is reported (the issue asks for the figure).
    assert agreement["Q8_0"]["teacher_forced_top1"] >= 0.9
    assert 0.0 <= agreement["Q4_K_M"]["teacher_forced_top1"] <= 1.0


def test_unknown_quant_level_is_one_clear_error(tiny_bundle, capsys):
    from nim4_edge.cli.main import main

    assert main(["quantize", str(tiny_bundle), "--decoder", "Q3_XL"]) == 2
    assert "Q4_K_M" in capsys.readouterr().err


def test_bench_decoder_reports_both_loops(tiny_bundle):
    from nim4_edge.bench.decoder import bench_decoder, table

    report = bench_decoder(tiny_bundle, tokens=4, rows=8, repeats=1)
    (row,) = report["results"]
    assert row["variant"] == "f32"
    for key in ("session_decode_tok_s", "bare_decode_tok_s", "session_prefill_rows_s", "bare_prefill_rows_s",
                "bandwidth_bound_tok_s"):
        assert row[key] > 0, key
    assert row["weight_bytes"] <= row["file_bytes"]
    assert "bound tok/s" in table(report)
