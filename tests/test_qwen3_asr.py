"""The Qwen3-ASR family against the official transformers implementation, on random-weight checkpoints
built here (a tiny config, seconds; no weights can be downloaded): features, streamed encoder,
decoder logits and greedy tokens, a negative control, and the import's bad-input lines."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
from tokenizers import Tokenizer

torch = pytest.importorskip("torch", reason="needs the export extra (torch)")
transformers = pytest.importorskip("transformers", reason="needs the export extra (transformers)")

from nim4_edge.bench.qwen3_asr import random_checkpoint  # noqa: E402
from nim4_edge.cli.main import main  # noqa: E402
from nim4_edge.export.qwen3_asr import AUDIO_PAD, import_qwen3_asr  # noqa: E402
from nim4_edge.export.qwen3_asr_verify import (  # noqa: E402
    official_features, streamed_features, verify_bundle)
from nim4_edge.runtime.audio import load_audio  # noqa: E402
from nim4_edge.runtime.bundle import Bundle, resolve_bundle  # noqa: E402
from nim4_edge.runtime.decoder import DecoderSession, DecoderSettings  # noqa: E402
from nim4_edge.runtime.endpoint import EndpointConfig  # noqa: E402
from nim4_edge.runtime.errors import BundleError, CheckpointError  # noqa: E402
from nim4_edge.runtime.qwen3_asr.encoder import WindowedEncoderSession, stream_samples, with_row_profile  # noqa: E402
from nim4_edge.runtime.qwen3_asr.features import LogMelOptions, log_mel  # noqa: E402
from nim4_edge.runtime.recognizer import Recognizer, RecognizerConfig  # noqa: E402

EXAMPLES = Path(__file__).resolve().parents[1] / "examples"
# Weight matrices are scaled up from the initializer's 0.02 so that the random model is far from
# uniform attention and constant logits: with the plain init the negative control's error (1e-4)
# is as small as the tolerance, and greedy decoding repeats one token.
WEIGHT_SCALE = 6.0


@pytest.fixture(scope="module")
def imported(tmp_path_factory):
    root = tmp_path_factory.mktemp("qwen3asr")
    model = random_checkpoint("tiny", root / "hf", weight_scale=WEIGHT_SCALE)
    bundle = import_qwen3_asr(root / "hf", root / "bundle")
    return root, model, bundle


@pytest.mark.parametrize("seconds", [0.2, 0.5, 1.0, 2.37, 7.99, 12.345])
def test_features_equal_the_official_extractor_offline_and_streamed(seconds):
    extractor = transformers.Qwen3ASRFeatureExtractor()
    rng = np.random.default_rng(int(seconds * 1000))
    samples = (rng.standard_normal(int(seconds * 16000)) * 0.2 * np.linspace(0.05, 1, int(seconds * 16000))).astype(np.float32)
    official = official_features(extractor, samples)
    valid = int(official["attention_mask"].sum())
    reference = official["input_features"][0, :, :valid].T.numpy()
    options = LogMelOptions()
    offline = log_mel(samples, options)
    assert offline.shape == reference.shape
    assert np.abs(offline - reference).max() < 1e-4
    assert np.array_equal(streamed_features(samples, options), offline)  # streaming adds nothing


def _reference_embeddings(model, samples):
    official = official_features(transformers.Qwen3ASRFeatureExtractor(), samples)
    with torch.no_grad():
        return model.model.get_audio_features(official["input_features"], official["attention_mask"]).pooler_output.numpy()


@pytest.mark.parametrize("seconds", [0.3, 0.73, 3.3, 8.0, 9.71, 17.3])
def test_streamed_encoder_equals_the_official_forward_on_the_whole_utterance(imported, seconds):
    """Chunk by chunk (640 ms pieces, not a multiple of the 1 s chunk), shorter and longer than one
    8 s window: the embeddings the decoder ends up holding equal the official ones; the negative
    control (no rollback of the current window) must not."""
    _, model, bundle = imported
    session = WindowedEncoderSession(bundle)
    samples = (np.random.default_rng(7).standard_normal(int(seconds * 16000)) * 0.1).astype(np.float32)
    reference = _reference_embeddings(model, samples)
    streamed = stream_samples(session, samples)
    assert streamed.shape == reference.shape
    assert np.abs(streamed - reference).max() < 1e-4
    control = stream_samples(session, samples, windows_final=False)
    assert control.shape == reference.shape
    assert np.abs(control - reference).max() > 1e-2


def test_import_verify_report_decoder_logits_and_32_greedy_tokens(imported):
    root, model, bundle = imported
    report = verify_bundle(root / "hf", bundle, seconds=(0.3, 9.71), model=model)
    assert report["passed"], json.dumps(report, indent=1)
    for row in report["utterances"]:
        assert row["decoder"] < 1e-3 and row["greedy_equal"] and row["greedy_tokens"] == 32
    manifest = json.loads((bundle.path / "manifest.json").read_text())
    assert manifest["family"] == "qwen3-asr"
    assert manifest["encoder"]["positions_per_chunk"] == 13 and manifest["encoder"]["window_chunks"] == 8
    assert manifest["decoder"]["prompt"]["kind"] == "context-first"


def test_recognizer_streams_a_qwen3_asr_bundle_and_each_final_equals_offline_decoding(imported):
    """The runtime end to end (VAD, endpoints, 640 ms window updates rolled back in the decoder's KV,
    partials): each final equals the offline decode of the same audio, which in turn is transformers'
    greedy answer (the verify test). Random weights: the text is noise, its equality is the point."""
    _, _, bundle = imported
    # four example commands back to back, a long trailing silence: one utterance of ~12 s, which
    # crosses an 8 s window (the rollback must stop at the completed window), then the first alone
    names = ("en_temperature", "zh_navigate", "en_call", "zh_window")
    samples = np.concatenate([load_audio(EXAMPLES / f"{name}.wav", 16000) for name in names])
    config = RecognizerConfig(bundle=bundle.path, decoder=DecoderSettings(kv_cache_type="f32", n_ctx=4096),
                              endpoint=EndpointConfig(trailing_silence_ms=3000))
    with Recognizer(config) as recognizer:
        transcript = recognizer.transcribe(samples, 16000)
        finals = transcript.finals + recognizer.transcribe(samples[:16000 * 3], 16000).finals
        assert finals and not transcript.errors
        assert max(f.end_s - f.start_s for f in finals) > 9
        assert any(e.kind == "partial" for e in transcript.events)
        for final in finals:
            start, end = round(final.start_s * 16000), round(final.end_s * 16000)
            with recognizer.create_stream() as stream:
                offline = stream.decode_whole(samples[start:end])
            assert offline[0].text == final.text and offline[0].tokens == final.tokens
            assert final.confident is None and final.words == []  # no phoneme head in this family


def test_listen_runs_a_qwen3_asr_bundle_and_nim4_only_commands_refuse_it(imported, capsys, tmp_path):
    _, _, bundle = imported
    assert main(["listen", "--bundle", str(bundle.path), "--wav", str(EXAMPLES / "en_temperature.wav"), "--json"]) == 0
    lines = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert any(line["kind"] == "final" for line in lines)
    assert all(line["phonemes"] == [] and line["acoustic_confidence"] is None for line in lines)  # no phoneme head
    assert main(["hotwords", "build", str(EXAMPLES / "hotwords.txt"), "-o", str(tmp_path / "text.db")]) == 0
    assert main(["listen", "--bundle", str(bundle.path), "--wav", str(EXAMPLES / "zh_navigate.wav"),
                 "--hotwords", str(tmp_path / "text.db"), "--json"]) == 0
    capsys.readouterr()
    assert main(["hotwords", "build", str(EXAMPLES / "hotwords.txt"), "-o", str(tmp_path / "h.db"),
                 "--bundle", str(bundle.path)]) == 2
    err = capsys.readouterr().err.strip()
    assert "qwen3-asr bundle" in err and len(err.splitlines()) == 1
    with pytest.raises(BundleError, match="not a windowed-encoder bundle"):
        WindowedEncoderSession(Bundle.load(resolve_bundle(None)))
    assert Bundle.load(bundle.path, family=None).manifest.family == "qwen3-asr"


def test_import_bad_input_is_one_line(tmp_path, capsys):
    assert main(["import", "qwen3-asr", str(tmp_path / "missing"), "-o", str(tmp_path / "b")]) == 2
    assert "not a folder" in capsys.readouterr().err
    (tmp_path / "notasr").mkdir()
    (tmp_path / "notasr" / "config.json").write_text(json.dumps({"model_type": "qwen3"}))
    with pytest.raises(CheckpointError, match="expected 'qwen3_asr'"):
        import_qwen3_asr(tmp_path / "notasr", tmp_path / "b")
    assert not (tmp_path / "b").exists()
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".b.tmp-")]


def test_the_clamp_exception_is_confined_to_windows_completed_before_the_loudest_frame(imported):
    """docs/QWEN3_ASR.md's one documented streaming/offline difference: 9 s of near-silence, then
    speech-loud noise. The first window (completed before the loud part) was normalized with its own
    maximum, offline with the utterance's: it differs; every later window is exact."""
    _, model, bundle = imported
    rng = np.random.default_rng(3)
    quiet = rng.standard_normal(9 * 16000) * 1e-5
    loud = rng.standard_normal(3 * 16000) * 0.3
    samples = np.concatenate([quiet, loud]).astype(np.float32)
    reference = _reference_embeddings(model, samples)
    streamed = stream_samples(WindowedEncoderSession(bundle), samples)
    window = bundle.manifest.encoder.positions_per_window
    first, later = np.abs(streamed - reference)[:window].max(), np.abs(streamed - reference)[window:].max()
    print(f"clamp exception: first window {first:.3g} (embeddings up to {np.abs(reference).max():.3g}), later {later:.3g}")
    assert later < 1e-4
    assert first > 1e-3


def test_serve_streams_a_qwen3_asr_bundle_to_the_riva_and_openai_clients(imported):
    """The real server on loopback ports with the imported bundle: Riva streaming (partials, then the
    final) and an OpenAI transcription give the text the Recognizer gives for the same audio."""
    pytest.importorskip("riva.client", reason="the serve extra (nvidia-riva-client)")
    openai = pytest.importorskip("openai", reason="OpenAI's client")
    import serveutil  # tests/serveutil.py: starts the real server (guarded: needs the serve extra above)

    root, _, bundle = imported
    (root / "token").write_text(serveutil.TOKEN + "\n")
    config = RecognizerConfig(bundle=bundle.path)
    with Recognizer(config) as recognizer:
        transcript = recognizer.transcribe(EXAMPLES / "en_temperature.wav")
    expected = transcript.finals
    proc, port, http_port = serveutil.start(root, "--bundle", str(bundle.path), "--token-file", str(root / "token"))
    try:
        audio, rate = serveutil.pcm("en_temperature.wav")
        responses = serveutil.asr(port).streaming_response_generator(serveutil.chunks(audio), serveutil.streaming_config(rate))
        results = [r for response in responses for r in response.results]
        assert any(not r.is_final for r in results)
        assert [r.alternatives[0].transcript for r in results if r.is_final] == [e.text for e in expected]
        client = openai.OpenAI(base_url=f"http://127.0.0.1:{http_port}/v1", api_key=serveutil.TOKEN, max_retries=0, timeout=120)
        with open(EXAMPLES / "en_temperature.wav", "rb") as f:
            assert client.audio.transcriptions.create(model="nim4-edge", file=f).text == transcript.text
    finally:
        assert serveutil.stop(proc) < 10


def test_hints_go_into_the_system_turn_exactly_as_transformers_reads_them(imported):
    """DecoderSession.final_with_prefix (the final with hotwords for this family): the prefix with the
    hints, the audio rows again, the suffix, greedy; the same tokens as transformers' generate on the
    official prompt with that system context."""
    root, model, bundle = imported
    samples = (np.random.default_rng(11).standard_normal(int(2.5 * 16000)) * 0.1).astype(np.float32)
    rows = stream_samples(WindowedEncoderSession(bundle), samples)
    spec = bundle.manifest.decoder
    hints = ["惠新西街", "NIO House"]
    steps = 16
    settings = DecoderSettings(kv_cache_type="f32", n_ctx=2048, min_new_tokens=steps, max_tokens_per_second=0.0)
    session = DecoderSession.open(bundle.decoder_file(), spec, settings, bundle.manifest.seconds_per_embedding)
    try:
        session.start_utterance()
        session.append(rows)  # what the utterance holds when the first pass has found the hints
        ours = session.final_with_prefix(spec.prompt.prefix_for(hints), rows, 2.5)
        assert session.seq_positions(session.branch_seq) == (-1, -1)  # nothing left behind
    finally:
        session.close()
    tokenizer = Tokenizer.from_file(str(root / "hf" / "tokenizer.json"))
    prefix = tokenizer.encode(spec.prompt.prefix_for(hints), add_special_tokens=False).ids
    suffix = tokenizer.encode(spec.prompt.suffix(), add_special_tokens=False).ids
    official = official_features(transformers.Qwen3ASRFeatureExtractor(), samples)
    ids = torch.tensor([prefix + [tokenizer.token_to_id(AUDIO_PAD)] * len(rows) + suffix])
    with torch.no_grad():
        generated = model.generate(input_ids=ids, input_features=official["input_features"],
                                   input_features_mask=official["attention_mask"], max_new_tokens=steps,
                                   do_sample=False)[0, ids.shape[1]:].tolist()
    ends = {spec.token_ids["im_end"], spec.token_ids["endoftext"]}
    expected = generated[:next((i for i, t in enumerate(generated) if t in ends), len(generated))]
    assert ours.token_ids == expected and len(expected) > 4


def test_a_qwen3_asr_stream_retrieves_hotwords_from_its_first_pass(imported, tmp_path):
    """Hotwords for this family: the database (built without --bundle: the default inventory) and a
    stream's own additions load, and each final runs the first pass they need; with random weights the
    first pass's text names nothing, so no hint is expected, only a clean run."""
    _, _, bundle = imported
    assert main(["hotwords", "build", str(EXAMPLES / "hotwords.txt"), "-o", str(tmp_path / "h.db")]) == 0
    config = RecognizerConfig(bundle=bundle.path, hotwords=tmp_path / "h.db")
    with Recognizer(config) as recognizer:
        assert recognizer.retrieval.mode.value == "text"
        plain = recognizer.transcribe(EXAMPLES / "zh_navigate.wav")
        added = recognizer.transcribe(EXAMPLES / "zh_navigate.wav", hotwords=["彗心大道"])
    assert plain.finals and added.finals and not plain.errors and not added.errors
    assert [f.text for f in plain.finals] == [f.text for f in added.finals]  # no hint retrieved: same final


def test_fp16_and_int8_encoder_variants_stream_close_to_fp32(imported, tmp_path, capsys):
    """`nim4-edge quantize B --encoder fp16,int8-dynamic,int8-qdq --calibration WAV...` on this family:
    both graphs converted (QDQ: QuantizeLinear/DequantizeLinear pairs, scales from the recorded
    feeds), the manifest names each pair, the recognizer runs them, and the parity report is measured."""
    import onnx  # optional dependency (the export extra), like torch above

    _, _, bundle = imported
    copy = tmp_path / "bundle"
    shutil.copytree(bundle.path, copy)
    wavs = [str(EXAMPLES / f"{name}.wav") for name in ("en_temperature", "zh_navigate", "en_call", "zh_window")]
    assert main(["quantize", str(copy), "--encoder", "fp16,int8-dynamic,int8-qdq", "--calibration", *wavs]) == 0
    report = json.loads(capsys.readouterr().out)["encoder"]["variants"]
    assert report["fp16"]["max_abs_diff_relative"] < 1e-2
    assert report["int8-dynamic"]["max_abs_diff_relative"] < 0.5 and report["int8-qdq"]["max_abs_diff_relative"] < 0.5
    manifest = Bundle.load(copy, family=None).manifest
    assert set(manifest.encoder.graphs) == {"fp32", "fp16", "int8-dynamic", "int8-qdq"}
    for file in manifest.encoder.graphs["int8-qdq"].values():
        ops = {node.op_type for node in onnx.load(str(copy / file)).graph.node}
        assert {"QuantizeLinear", "DequantizeLinear"} <= ops
    for precision in ("fp16", "int8-qdq"):
        with Recognizer(RecognizerConfig(bundle=copy, encoder_precision=precision)) as recognizer:
            assert recognizer.transcribe(EXAMPLES / "en_temperature.wav").finals


def test_a_pause_speculates_the_exact_final_and_a_discarded_speculation_leaves_no_trace(imported):
    """The speculative final at a pause (EndpointConfig.eot_pause_ms) for this family: on a fork of the
    encoder stream and a Branch of the decoder (rolled back and re-appended like the utterance). It
    equals ending the utterance there, also after a completed window; discarded (speech resumed), the
    utterance goes on exactly as without it; adopted, the turn ends at the pause with the final of
    exactly its audio. Branch.final_with_prefix (the hints' path) equals the session's."""
    _, _, bundle = imported
    names = ("en_temperature", "zh_navigate", "en_call", "zh_window")  # 12 s
    samples = np.concatenate([load_audio(EXAMPLES / f"{name}.wav", 16000) for name in names])
    split = 16000 * 9 + 4000  # inside the second 8 s window; the last frame waits for more audio (or the end)
    config = RecognizerConfig(bundle=bundle.path, decoder=DecoderSettings(kv_cache_type="f32", n_ctx=4096))
    with Recognizer(config) as recognizer:
        results = []
        for speculate in (False, True):
            with recognizer.create_stream() as stream:
                utterance = stream._new_utterance(0)
                utterance.feed(samples[:split])
                if speculate:
                    early = utterance.speculate()
                    assert early is not None and early.tokens > 0
                    assert stream.decoder.seq_positions(stream.decoder.branch_seq) == (-1, -1)  # branch emptied
                utterance.feed(samples[split:])
                decoder = stream.decoder
                state = (decoder.position, decoder.seq_positions(decoder.utterance_seq), decoder.partial().token_ids)
                (final,) = utterance.finish(0.0)
                results.append((state, final.text, final.tokens, utterance.rows))
        assert results[0][:3] == results[1][:3]
        np.testing.assert_array_equal(results[0][3], results[1][3])  # every embedding the decoder held
        with recognizer.create_stream() as stream:
            utterance = stream._new_utterance(0)
            utterance.feed(samples[:split])
            early = utterance.speculate()
            prefix = stream._setup.prompt.prefix_for(["惠新西街"])
            utterance._apply(utterance.encoder.fork().finish())
            branch = stream.decoder.branch()
            hinted = branch.final_with_prefix(prefix, utterance.rows)
            branch.discard()
            held = stream.decoder.seq_positions(stream.decoder.utterance_seq)
            assert held[1] == stream.decoder.position - 1  # the utterance untouched by the branch
            assert hinted.token_ids == stream.decoder.final_with_prefix(prefix, utterance.rows).token_ids
        with recognizer.create_stream() as stream:
            utterance = stream._new_utterance(0)
            utterance.feed(samples[:split])
            (ended,) = utterance.finish(0.0)
        assert (early.text, early.tokens) == (ended.text, ended.tokens)
        # the branch's re-appended rows sit in other KV cells than the utterance's, so llama.cpp sums
        # attention in another order: the same tokens, probabilities equal to float rounding
        assert early.end_probability == pytest.approx(ended.end_probability, rel=1e-6)
        assert early.end_score == early.end_probability  # no acoustic confidence in this family

        # the Stream: a pause, the turn held there (threshold 1: never early), ended by the silence
        events = []
        endpoint = EndpointConfig(eot_pause_ms=200, eot_threshold=1.0, trailing_silence_ms=800)
        paused = np.concatenate([samples[:16000 * 3], np.zeros(16000 * 2, np.float32)])
        with recognizer.create_stream(endpoint=endpoint) as stream:
            for start in range(0, len(paused), 1600):
                events += stream.accept_waveform(paused[start:start + 1600], 16000)
            events += stream.input_finished()
            assert not stream.errors
        finals = [e for e in events if e.kind == "final"]
        assert finals and all(f.timings.speculate_ms for f in finals)
        for final in finals:
            assert final.end_s - final.speech_end_s == pytest.approx(0.2, abs=1e-6)  # ended at the pause
            with recognizer.create_stream() as whole:
                (offline,) = whole.decode_whole(paused[round(final.start_s * 16000):round(final.end_s * 16000)])
            assert (offline.text, offline.tokens) == (final.text, final.tokens)


def test_tensorrt_gets_one_shape_profile_for_every_window_length(imported):
    """On TensorRT the window graph gets an explicit profile of 1..104 rows (one engine, not a rebuild
    each time the current window grows); the profile names the graph's real input and width. Only
    the options are checked here: there is no TensorRT on this machine."""
    _, _, bundle = imported
    spec = bundle.manifest.encoder
    session = WindowedEncoderSession(bundle)
    (hidden,) = session.window.get_inputs()
    assert hidden.name == "hidden" and hidden.shape[2] == spec.d_model and not isinstance(hidden.shape[1], int)
    trt = ("TensorrtExecutionProvider", {"trt_fp16_enable": True})
    providers = with_row_profile([trt, "CUDAExecutionProvider", "CPUExecutionProvider"], spec)
    assert providers[0][1] == {"trt_fp16_enable": True, "trt_profile_min_shapes": f"hidden:1x1x{spec.d_model}",
                               "trt_profile_opt_shapes": f"hidden:1x{spec.positions_per_window}x{spec.d_model}",
                               "trt_profile_max_shapes": f"hidden:1x{spec.positions_per_window}x{spec.d_model}"}
    assert providers[1:] == ["CUDAExecutionProvider", "CPUExecutionProvider"]
    assert with_row_profile(["CPUExecutionProvider"], spec) == ["CPUExecutionProvider"]
    assert with_row_profile(None, spec) is None


def test_the_component_benchmarks_run_a_qwen3_asr_bundle(imported, tmp_path, capsys):
    """`bench encoder` (two update costs per variant), `bench runtime` and the accuracy-vs-latency
    `bench` (variants built with this family's quantizer, each combination evaluated in a worker)
    measure this family too: their figures come back, positive, for the variants asked for."""
    _, _, bundle = imported
    copy = tmp_path / "bundle"
    shutil.copytree(bundle.path, copy)
    assert main(["bench", "encoder", "--bundle", str(copy), "--repeats", "3"]) == 0
    backends = json.loads(capsys.readouterr().out)["backends"]
    assert [b["backend"] for b in backends] == ["onnxruntime fp32 (end of a window, 104 rows)",
                                                "onnxruntime fp32 (first chunk, 13 rows)"]
    assert all(b["ms_median"] > 0 for b in backends)
    assert main(["bench", "runtime", "--bundle", str(copy), "--minutes", "0.1"]) == 0
    runtime = json.loads(capsys.readouterr().out)
    assert runtime["finals"] >= 1 and runtime["real_time_factor"] > 0 and runtime["failed_utterances"] == 0
    assert main(["bench", "--bundle", str(copy), "--testset", str(EXAMPLES / "transcripts.jsonl"), "--encoder",
                 "fp32,int8-dynamic", "--decoder", "f32", "--out", str(tmp_path / "out")]) == 0
    rows = json.loads(capsys.readouterr().out)["rows"]
    assert [(r["encoder"], r["decoder"]) for r in rows] == [("fp32", "f32"), ("int8-dynamic", "f32")]
    assert all(r["status"] == "ok" and r["rtf"] > 0 and r["peak_rss_mb"] > 0 for r in rows)
    assert all(r["config"]["hotwords_mode"] == "text" for r in rows)  # what runs: no phoneme head
    assert main(["eval", "--bundle", str(copy), "--testset", str(EXAMPLES / "transcripts.jsonl"), "--modes", "streaming"]) == 0
    streaming = json.loads(capsys.readouterr().out)["modes"]["streaming"]
    assert streaming["phoneme_error_rate"] is None and streaming["rtf"] > 0  # no phoneme head: no phoneme error rate
