"""`nim4-edge bench runtime`: the whole stream on a bundle, faster than real time.

A talk pattern (speech-like utterances or a given WAV, separated by silence) is streamed for
`minutes` of audio in 100 ms blocks, as a microphone would deliver it, without waiting:
  * real-time factor: wall time / audio time;
  * runtime overhead per 640 ms of audio excluding model compute: wall time minus the encoder,
    prefill and decode time the events report, per 640 ms of audio streamed (fbank, VAD, resampling,
    endpointing, Python glue), with fbank and VAD broken out;
  * final latency: endpoint to final text, p50/p95;
  * RSS after the first 10% of the audio and at the end (growth shows a leak).
"""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np

from nim4_edge.bench.report import format_table, median, percentile, rss_bytes
from nim4_edge.devices.config import Overrides, current_plan, describe, recognizer_config
from nim4_edge.runtime.audio import load_audio, synthetic_utterance
from nim4_edge.runtime.bundle import Bundle
from nim4_edge.runtime.features import SAMPLE_RATE_HZ
from nim4_edge.runtime.qwen3_asr.encoder import UPDATE_SAMPLES
from nim4_edge.runtime.recognizer import Recognizer

RATE = SAMPLE_RATE_HZ


def talk_pattern(wav: Path | None) -> np.ndarray:
    """One period: utterance, 1.2 s silence, utterance, 1.2 s silence."""
    silence = np.zeros(int(1.2 * RATE), np.float32)
    if wav is not None:
        speech = [load_audio(wav, RATE)] * 2
    else:
        speech = [synthetic_utterance(2.3, RATE, 1), synthetic_utterance(1.4, RATE, 2)]
    return np.concatenate([speech[0], silence, speech[1], silence])


def bench_runtime(bundle: Path, minutes: float = 60.0, wav: Path | None = None, partial_every: int | None = None,
                  threads: int | None = None, block_ms: int = 100, profile: str | None = None) -> dict:
    """None for partial_every / threads: the device profile's, as `listen` runs."""
    loaded = Bundle.load(bundle, family=None)
    config = recognizer_config(loaded, current_plan(profile),
                               Overrides(threads=threads, partial_every_chunks=partial_every))
    rss_start = rss_bytes()
    recognizer = Recognizer(config)
    stream = recognizer.create_stream()
    pattern = talk_pattern(wav)
    block = RATE * block_ms // 1000
    total_samples = int(minutes * 60 * RATE)
    warm_at = total_samples // 10
    rss_warm = None
    model_ms = 0.0
    chunks = 0
    latencies, finals, partials = [], 0, 0
    fed = 0
    t0 = time.perf_counter()
    try:
        while fed < total_samples:
            offset = fed % len(pattern)
            piece = pattern[offset : offset + min(block, total_samples - fed)]
            fed += len(piece)
            events = stream.accept_waveform(piece, RATE)
            if fed >= total_samples:
                events += stream.input_finished()
            for e in events:
                if e.kind == "final":
                    finals += 1
                    latencies.append(e.timings.final_latency_ms)
                    model_ms += e.timings.model_ms
                    chunks += e.chunks
                else:
                    partials += 1
            if rss_warm is None and fed >= warm_at:
                rss_warm = rss_bytes()
        wall_s = time.perf_counter() - t0
        rss_end = rss_bytes()
        stream_timings = stream.timings
    finally:
        stream.close()
        recognizer.close()
    audio_s = total_samples / RATE
    # Per 640 ms of audio (speech or silence): the runtime works on all of it, the models on speech.
    if loaded.manifest.family == "qwen3-asr":  # its runtime's cadence: an update per 640 ms
        chunk_s = UPDATE_SAMPLES / RATE
    else:
        chunk_s = loaded.manifest.streaming.chunk_duration_ms(loaded.manifest.fbank.frame_shift_ms) / 1000
    audio_chunks = audio_s / chunk_s
    overhead_ms = (wall_s * 1000 - model_ms) / audio_chunks
    return {
        "bundle": str(bundle),
        "config": describe(config, loaded),
        "audio_minutes": minutes,
        "wall_seconds": wall_s,
        "real_time_factor": wall_s / audio_s,
        "finals": finals,
        "partials": partials,
        "chunks": chunks,
        "runtime_overhead_ms_per_chunk": overhead_ms,
        "fbank_ms_per_chunk": stream_timings.fbank_ms / audio_chunks,
        "vad_ms_per_chunk": stream_timings.vad_ms / audio_chunks,
        "glue_ms_per_chunk": overhead_ms - (stream_timings.fbank_ms + stream_timings.vad_ms) / audio_chunks,
        "model_ms_per_speech_chunk": model_ms / max(chunks, 1),
        "final_latency_ms_p50": percentile(latencies, 50),
        "final_latency_ms_p95": percentile(latencies, 95),
        "final_latency_ms_median": median(latencies),
        "rss_start_mb": rss_start / 2**20,
        "rss_after_10pct_mb": (rss_warm or rss_end) / 2**20,
        "rss_end_mb": rss_end / 2**20,
        "rss_growth_mb": (rss_end - (rss_warm or rss_end)) / 2**20,
        "input": stream.input_stats.to_json(),
        "failed_utterances": len(stream.errors),
    }


def table(report: dict) -> str:
    rows = [
        ["real-time factor", f"{report['real_time_factor']:.4f}"],
        ["runtime overhead per 640 ms of audio (excl. model)", f"{report['runtime_overhead_ms_per_chunk']:.3f} ms"],
        ["  of which fbank / VAD / the rest", f"{report['fbank_ms_per_chunk']:.3f} / {report['vad_ms_per_chunk']:.3f} / "
                                             f"{report['glue_ms_per_chunk']:.3f} ms"],
        ["model compute per speech chunk (encoder+prefill+decode)", f"{report['model_ms_per_speech_chunk']:.2f} ms"],
        ["final latency p50 / p95", f"{report['final_latency_ms_p50']:.1f} / {report['final_latency_ms_p95']:.1f} ms"],
        ["finals / partials", f"{report['finals']} / {report['partials']}"],
        ["RSS start / after 10% / end", f"{report['rss_start_mb']:.0f} / {report['rss_after_10pct_mb']:.0f} / "
                                        f"{report['rss_end_mb']:.0f} MB"],
        ["RSS growth after warm-up", f"{report['rss_growth_mb']:.1f} MB"],
    ]
    c = report["config"]
    ran = (f"ran: encoder {c['encoder_precision']} ({c['encoder_threads'] or 'all'} threads), decoder {c['decoder_variant']} "
           f"({c['decoder_threads'] or 'all'} threads), a partial every {c['partial_every_chunks']} chunk(s)")
    return (f"{report['audio_minutes']:g} min of audio in {report['wall_seconds']:.0f} s\n{ran}\n"
            + format_table(["figure", "value"], rows))
