"""`nim4-edge bench qwen3-asr --shape 0.6b|1.7b`: the Qwen3-ASR path at the real shapes, random weights.

No Qwen3-ASR weights can be downloaded here, so this builds a checkpoint of the published shape with
transformers' own Qwen3ASRForConditionalGeneration (random weights; the tokenizer is the small one the
tests train, padded to the real vocabulary rows) and measures, in one process (loaded through
cli/common.py's export_toolchain: it needs torch):

    import      seconds, bundle bytes
    parity      export/qwen3_asr_verify.py: features, streamed encoder, decoder logits, 32 greedy tokens
    encoder     ms per 640 ms update, median of `repeats`: the worst case (the end of an 8 s window:
                one chunk's front end + 104 rows through the window graph) and the best (a window's
                first chunk, 13 rows), per encoder precision in the bundle
    decoder     tokens/s and prefill rows/s per GGUF level (bench/decoder.py, the same loops as NIM4's)
    runtime     `Recognizer.transcribe` of a WAV: real-time factor and end of audio -> final latency
                (random weights never say <|im_end|>: the final runs to the token cap, reported)
    memory      peak RSS of `nim4-edge listen` on the bundle (a child process)
    projection  the Orin projection for this family (bench/projection.py's devices and assumptions)

Shapes: the audio encoders per the published configs (0.6B: 18 layers, d 896, 14 heads, FFN 3584,
output 1024; 1.7B: 24, 1024, 16, 4096, 2048; conv width 480, 128 mel bins), the text models Qwen3-0.6B
and Qwen3-1.7B (transformers' Qwen3ASRConfig defaults are the 1.7B's).
"""

from __future__ import annotations

import gc
import os
import subprocess
import sys
import time
from pathlib import Path

import torch
import transformers

from nim4_edge.bench import decoder as decoder_bench
from nim4_edge.bench.encoder import windowed_update_runs
from nim4_edge.bench.projection import decoder_token_bytes, project_cost
from nim4_edge.bench.report import format_table, median
from nim4_edge.devices.config import current_plan, memory_estimate_mb, recognizer_config
from nim4_edge.devices.profiles import load_profiles
from nim4_edge.export.qwen3_asr import ASR_TEXT, AUDIO_END, AUDIO_PAD, AUDIO_START, import_qwen3_asr
from nim4_edge.export.qwen3_asr_verify import verify_bundle
from nim4_edge.export.config import DecoderConfig
from nim4_edge.export.tokenizer import DEFAULT_CORPUS, train_bpe_tokenizer
from nim4_edge.quant.gguf_quant import quantize_bundle
from nim4_edge.runtime.audio import load_audio
from nim4_edge.runtime.bundle import Bundle
from nim4_edge.runtime.decoder import DecoderSettings
from nim4_edge.runtime.qwen3_asr.encoder import WindowedEncoderSession
from nim4_edge.runtime.recognizer import Recognizer, RecognizerConfig

AUDIO = {
    "tiny": dict(encoder_layers=2, encoder_attention_heads=2, encoder_ffn_dim=64, d_model=32, downsample_hidden_size=8, output_dim=48),
    "0.6b": dict(encoder_layers=18, encoder_attention_heads=14, encoder_ffn_dim=3584, d_model=896, downsample_hidden_size=480, output_dim=1024),
    "1.7b": dict(encoder_layers=24, encoder_attention_heads=16, encoder_ffn_dim=4096, d_model=1024, downsample_hidden_size=480, output_dim=2048),
}
TEXT = {
    "tiny": dict(vocab_size=300, hidden_size=48, intermediate_size=96, num_hidden_layers=2, num_attention_heads=4,
                 num_key_value_heads=2, head_dim=16),
    "0.6b": dict(vocab_size=151936, hidden_size=1024, intermediate_size=3072, num_hidden_layers=28, num_attention_heads=16,
                 num_key_value_heads=8, head_dim=128),
    "1.7b": dict(vocab_size=151936, hidden_size=2048, intermediate_size=6144, num_hidden_layers=28, num_attention_heads=16,
                 num_key_value_heads=8, head_dim=128),
}
EXAMPLE_WAV = Path(__file__).resolve().parents[1] / "examples" / "en_temperature.wav"


def random_checkpoint(shape: str, folder: Path, seed: int = 0, weight_scale: float = 1.0):
    """A random-weight Qwen3-ASR of `shape` saved to `folder` (safetensors, config, tokenizer); returns the model."""
    tokenizer = train_bpe_tokenizer(list(DEFAULT_CORPUS) * 3 + ["language English", "language Chinese"], 280)
    tokenizer.add_special_tokens([AUDIO_START, AUDIO_PAD, AUDIO_END, ASR_TEXT])
    ids = {t: tokenizer.token_to_id(t) for t in ("<|endoftext|>", "<|im_end|>", AUDIO_PAD)}
    config = transformers.Qwen3ASRConfig(
        audio_config=dict(num_mel_bins=128, **AUDIO[shape]),
        text_config=dict(TEXT[shape], max_position_embeddings=65536, tie_word_embeddings=True),
        audio_token_id=ids[AUDIO_PAD], pad_token_id=ids["<|endoftext|>"],
        eos_token_id=[ids["<|endoftext|>"], ids["<|im_end|>"]])
    torch.manual_seed(seed)
    model = transformers.Qwen3ASRForConditionalGeneration(config).eval()
    if weight_scale != 1.0:
        with torch.no_grad():
            for parameter in model.parameters():
                if parameter.dim() > 1:
                    parameter.mul_(weight_scale)
    model.save_pretrained(folder)
    tokenizer.save(str(folder / "tokenizer.json"))
    return model


def encoder_update_ms(bundle: Bundle, precision: str, repeats: int) -> dict:
    """The two 640 ms update costs (bench/encoder.py: windowed_update_runs), interleaved, medians."""
    update = windowed_update_runs(WindowedEncoderSession(bundle, num_threads=0, precision=precision))
    for run in update.values():  # warm-up: allocations, page-ins
        run()
    worst, first = [], []
    for _ in range(repeats):  # interleaved, so drift hits both alike
        worst.append(update["worst"]())
        first.append(update["first_chunk"]())
    return {"precision": precision, "worst_ms": median(worst), "first_chunk_ms": median(first), "repeats": repeats}


def runtime_figures(bundle: Bundle, variant: str, wav: Path, partial_every_chunks: int = 1) -> dict:
    samples = load_audio(wav, 16000)
    config = RecognizerConfig(bundle=bundle.path, decoder_variant=variant, decoder=DecoderSettings(n_ctx=4096),
                              partial_every_chunks=partial_every_chunks)
    with Recognizer(config) as recognizer:
        recognizer.transcribe(samples[:16000], 16000)  # warm-up
        t0 = time.perf_counter()
        transcript = recognizer.transcribe(samples, 16000)
        seconds = time.perf_counter() - t0
    finals = transcript.finals
    return {"variant": variant, "partial_every_chunks": partial_every_chunks, "audio_s": len(samples) / 16000,
            "rtf": seconds / (len(samples) / 16000), "partials": sum(e.kind == "partial" for e in transcript.events),
            "final_latency_ms": [round(f.timings.final_latency_ms, 1) for f in finals],
            "final_tokens": [f.tokens for f in finals], "stopped_by": [f.stopped_by for f in finals],
            "encoder_ms": sum(f.timings.encoder_ms for f in finals)}


def listen_peak_rss_mb(bundle: Bundle, variant: str, wav: Path) -> float:
    """Peak RSS of `nim4-edge listen` on the bundle, in a process of its own: its VmHWM at exit (ru_maxrss
    would not do: Linux carries it over from the forking parent, this process with torch loaded)."""
    code = ("import re, sys\nfrom pathlib import Path\nfrom nim4_edge.cli.main import main\n"
            f"rc = main(['listen', '--bundle', {str(bundle.path)!r}, '--wav', {str(wav)!r}, '--decoder-variant', "
            f"{variant!r}, '--no-verify'])\n"
            "hwm = re.search(r'VmHWM:\\s+(\\d+)', Path('/proc/self/status').read_text()).group(1)\n"
            "print('peak_rss_kb', hwm, file=sys.stderr)\nsys.exit(rc)")
    done = subprocess.run([sys.executable, "-c", code], check=True, capture_output=True, text=True, timeout=1800)
    line = next(x for x in reversed(done.stderr.splitlines()) if x.startswith("peak_rss_kb"))
    return int(line.split()[1]) / 1024


def profile_memory(bundle: Bundle) -> list[dict]:
    """devices/config.py's memory estimate of a recognizer per device profile (its decoder level where
    the bundle has it; the encoder is the bundle's fp32 pair until quantized encoders exist for this
    family), against the profile's budget."""
    rows = []
    for name, profile in sorted(load_profiles().items()):
        plan = current_plan(name)
        config = recognizer_config(bundle, plan)
        need = memory_estimate_mb(bundle, config)
        rows.append({"profile": name, "decoder": config.decoder_variant or bundle.manifest.decoder.default_variant,
                     "encoder": config.encoder_precision or bundle.manifest.encoder.precision, **need,
                     "budget_mb": profile.memory_budget_mb,  # 0: the profile sets no budget (cpu, x86-cuda)
                     "fits": not profile.memory_budget_mb or need["total_mb"] <= profile.memory_budget_mb})
    return rows


def window_update_cost(shape: str) -> dict:
    """FLOPs and weights of the worst-case update: one chunk's conv front end (100 frames x 128 bins)
    and the window graph over 104 rows (attention over 104 keys)."""
    a = AUDIO[shape]
    d, f, layers, c, out = a["d_model"], a["encoder_ffn_dim"], a["encoder_layers"], a["downsample_hidden_size"], a["output_dim"]
    rows = 104
    conv = 9 * c * (64 * 50) + 9 * c * c * (32 * 25) + 9 * c * c * (16 * 13) + 13 * (c * 16) * d
    per_row = layers * (4 * d * d + 2 * d * f + 2 * rows * d) + d * d + d * out
    params = layers * (4 * d * d + 2 * d * f) + d * d + d * out + 9 * c + 18 * c * c + c * 16 * d
    return {"flops": 2 * (conv + rows * per_row), "params": params}


def project(shape: str, levels=("Q8_0", "Q4_K_M")) -> list[dict]:
    """bench/projection.py's Orin projection for this family: the worst-case update, the text model."""
    t = TEXT[shape]
    text = DecoderConfig(**{k: t[k] for k in ("vocab_size", "hidden_size", "intermediate_size", "num_hidden_layers",
                                              "num_attention_heads", "num_key_value_heads", "head_dim")})
    token_bytes = {level: decoder_token_bytes(text, level) for level in levels}
    return project_cost(window_update_cost(shape), token_bytes, step_key="encoder_ms_per_update")


def bench_qwen3_asr(shape: str, out: Path, levels: list[str], repeats: int = 5, wav: Path = EXAMPLE_WAV,
                    weight_scale: float = 1.0) -> dict:
    out.mkdir(parents=True, exist_ok=True)
    report: dict = {"shape": shape, "cpu_count": os.cpu_count()}
    t0 = time.perf_counter()
    model = random_checkpoint(shape, out / "hf", weight_scale=weight_scale)
    report["checkpoint_s"] = time.perf_counter() - t0
    t0 = time.perf_counter()
    bundle = import_qwen3_asr(out / "hf", out / "bundle", overwrite=True, model=model)
    report["import_s"] = time.perf_counter() - t0
    t0 = time.perf_counter()
    report["parity"] = verify_bundle(out / "hf", bundle, model=model)
    report["parity_s"] = time.perf_counter() - t0
    del model
    gc.collect()
    if levels:
        quantize_bundle(bundle.path, levels, agreement=False)
        bundle = Bundle.load(bundle.path, family=None)
    report["bundle_files_mb"] = {name: round(facts["bytes"] / 2**20, 1) for name, facts in bundle.manifest.files.items()}
    report["encoder"] = [encoder_update_ms(bundle, p, repeats) for p in sorted(bundle.manifest.encoder.graphs)]
    variants = sorted(bundle.manifest.decoder.variants)
    report["decoder"] = decoder_bench.bench_decoder(bundle.path, variants, repeats=max(1, repeats // 2))["results"]
    fastest = levels[-1] if levels else bundle.manifest.decoder.default_variant
    # partials every 640 ms, and finals only: random weights decode every partial to the token cap
    report["runtime"] = [runtime_figures(bundle, fastest, wav, every) for every in (1, 0)]
    report["listen_peak_rss_mb"] = listen_peak_rss_mb(bundle, fastest, wav)
    report["memory_by_profile"] = profile_memory(bundle)
    report["projection"] = project(shape)
    return report


def table(report: dict) -> str:
    parity = [[r["seconds"], r["embeddings"], r["features"], r["encoder"], r["decoder"], r["greedy_equal"]]
              for r in report["parity"]["utterances"]]
    lines = [f"Qwen3-ASR {report['shape']} (random weights): import {report['import_s']:.1f} s, parity "
             f"{'passed' if report['parity']['passed'] else 'FAILED'}",
             format_table(["audio s", "rows", "features", "encoder", "decoder logits", "32 greedy equal"], parity), "",
             format_table(["encoder", "worst update ms (104 rows)", "first chunk ms (13 rows)"],
                          [[e["precision"], e["worst_ms"], e["first_chunk_ms"]] for e in report["encoder"]]), "",
             format_table(["decoder", "MB", "tok/s", "prefill rows/s"],
                          [[d["variant"], d["file_bytes"] / 1e6, d["session_decode_tok_s"], d["session_prefill_rows_s"]]
                           for d in report["decoder"]]), ""]
    for rt in report["runtime"]:
        lines.append(f"runtime ({rt['variant']}, partials every {rt['partial_every_chunks']} update(s), {rt['partials']} "
                     f"partials): RTF {rt['rtf']:.2f} on {rt['audio_s']:.1f} s, end of audio -> final "
                     f"{rt['final_latency_ms']} ms ({rt['final_tokens']} tokens, stopped by {rt['stopped_by']})")
    lines.append(f"listen peak RSS {report['listen_peak_rss_mb']:.0f} MB")
    lines += ["", "memory estimate per device profile (devices/config.py; fp32 encoder graphs until quantized ones exist):",
              format_table(["profile", "decoder", "encoder MB", "decoder MB", "KV MB", "total MB", "budget MB", "fits"],
                           [[m["profile"], m["decoder"], m["encoder_mb"], m["decoder_mb"], m["kv_cache_mb"], m["total_mb"],
                             m["budget_mb"], m["fits"]] for m in report["memory_by_profile"]])]
    lines += ["", "Orin PROJECTION (not measured; bench/projection.py's assumptions):",
              format_table(["device", "encoder", "decoder", "encoder ms/update", "bound", "decoder tok/s", "weights GB"],
                           [[p["device"], p["encoder"], p["decoder"], p["encoder_ms_per_update"], p["encoder_bound"],
                             p["decoder_tokens_per_s"], p["weights_gb"]] for p in report["projection"]])]
    return "\n".join(lines)

