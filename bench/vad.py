"""`nim4-edge bench vad`: the VADs on held-out speech in synthetic car noise.

Held-out data only: FSDD test takes 0-4 and espeak-ng voices not used in training, new noise seeds.
Per condition (quiet, car noise at 10 dB and 0 dB SNR, car noise alone):
  * miss rate: speech frames called non-speech;
  * false alarm rate: non-speech frames called speech;
  * false triggers: share of noise-only clips in which the default endpointer opens an utterance
    (what a driver notices: the assistant waking up on road noise);
  * cost per 10 ms frame.
Both detectors decide per fbank frame j for its middle 10 ms (label j + 1), streamed in 100 ms blocks.
"""

from __future__ import annotations

import time

import numpy as np

from nim4_edge.bench.report import format_table
from nim4_edge.recipes.vad_data import make_clip, speech_pool
from nim4_edge.runtime.endpoint import EndpointConfig, Endpointer
from nim4_edge.runtime.features import FbankOptions, OnlineFbank
from nim4_edge.runtime.vad import FRAME_SAMPLES, LearnedVad, WebRtcVad

CONDITIONS = (("quiet", "quiet", 20.0), ("car 10 dB", "car", 10.0), ("car 0 dB", "car", 0.0))


def detectors() -> dict:
    found = {f"webrtc mode {m}": (lambda m=m: WebRtcVad(m)) for m in (0, 2, 3)}
    found["learned"] = LearnedVad
    return found


def _decisions(make, audio: np.ndarray, block: int = 10 * FRAME_SAMPLES) -> tuple[np.ndarray, float]:
    """Decisions per fbank frame, streamed in 100 ms blocks; seconds per frame spent in the VAD."""
    vad, fbank = make(), OnlineFbank(FbankOptions())
    out, spent = [], 0.0
    for start in range(0, len(audio), block):
        piece = audio[start : start + block]
        frames = fbank.accept(piece)
        t0 = time.perf_counter()
        out.append(vad.decide(frames, piece))
        spent += time.perf_counter() - t0
    decisions = np.concatenate(out)
    return decisions, spent / max(len(decisions), 1)


def _triggers(decisions: np.ndarray) -> bool:
    endpointer = Endpointer(EndpointConfig())
    return any(endpointer.step(bool(d))[0] == "start" for d in decisions)


def bench_vad(clips: int = 100, seed: int = 12345, espeak_count: int = 60) -> dict:
    rng = np.random.default_rng(seed)
    pool = speech_pool("test", rng, espeak_count)
    data = {name: [make_clip(pool, rng, 3.0, 1.0, snr, bg) for _ in range(clips)] for name, bg, snr in CONDITIONS}
    data["car noise only"] = [make_clip(pool, rng, 3.0, 0.0, 0.0, "car") for _ in range(clips)]
    rows = []
    for name, make in detectors().items():
        for condition, items in data.items():
            miss = fa = speech_frames = other_frames = triggers = 0
            costs = []
            for clip in items:
                d, cost = _decisions(make, clip.audio)
                costs.append(cost)
                labels = clip.labels[1 : 1 + len(d)]
                got = d[: len(labels)]
                miss += int((labels & ~got).sum())
                fa += int((~labels & got).sum())
                speech_frames += int(labels.sum())
                other_frames += int((~labels).sum())
                triggers += clip.kind == "noise-only" and _triggers(d)
            rows.append({
                "vad": name,
                "condition": condition,
                "miss_rate": miss / speech_frames if speech_frames else None,
                "false_alarm_rate": fa / other_frames if other_frames else None,
                "false_trigger_rate": triggers / len(items) if condition == "car noise only" else None,
                "us_per_frame": 1e6 * float(np.median(costs)),
            })
    return {"clips_per_condition": clips, "seed": seed, "held_out": "FSDD takes 0-4 + unseen espeak-ng voices",
            "results": rows}


def table(report: dict) -> str:
    def pct(v):
        return "-" if v is None else f"{100 * v:.1f}%"

    rows = [[r["vad"], r["condition"], pct(r["miss_rate"]), pct(r["false_alarm_rate"]), pct(r["false_trigger_rate"]),
             f"{r['us_per_frame']:.1f}"] for r in report["results"]]
    return format_table(["vad", "condition", "miss", "false alarm", "false trigger", "us/frame"], rows)
