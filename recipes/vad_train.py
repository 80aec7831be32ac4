"""Train the learned VAD (runtime/vad.py LearnedVad) and write its weights.

    python -m nim4_edge.recipes.vad_train --out runtime/assets/vad-mlp-v2.npz

Data: recipes/vad_data.py (FSDD train takes + espeak-ng voices, synthetic car and other noise,
SNR -5..20 dB). Model: 880 -> 64 -> 64 -> 1 MLP (61k weights) on 11 frames of the model's 80-bin
log-mel fbank (the stream computes it once for the VAD and the encoder).
Needs torch (the export extra) and espeak-ng; a few minutes on 2 cores.
"""

from __future__ import annotations

import argparse
import json
import logging
import time
from pathlib import Path

import numpy as np
import torch
from torch import nn

from nim4_edge.recipes.vad_data import make_clip, speech_pool
from nim4_edge.runtime.features import FbankOptions, compute_fbank
from nim4_edge.runtime.vad import stack_context

log = logging.getLogger(__name__)


def clip_examples(clip, options) -> tuple[np.ndarray, np.ndarray]:
    """Features (m, 440) and labels (m,) of one clip. Fbank frame j spans 10 ms frames j..j+2; its
    label is that of the middle one."""
    feats = compute_fbank(clip.audio, options)
    x = stack_context(feats)
    y = clip.labels[1 : 1 + len(feats)]
    return x[: len(y)], y


def build(clips: int, seed: int, espeak_count: int, split: str = "train") -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    pool = speech_pool(split, rng, espeak_count)
    options = FbankOptions()
    xs, ys = [], []
    for _ in range(clips):
        x, y = clip_examples(make_clip(pool, rng, seconds=2.5), options)
        xs.append(x[::2])  # neighbouring frames are nearly identical: every other one is enough
        ys.append(y[::2])
    return np.concatenate(xs).astype(np.float32), np.concatenate(ys).astype(np.float32)


def train(x: np.ndarray, y: np.ndarray, epochs: int, seed: int) -> dict:
    torch.manual_seed(seed)
    mean, std = x.mean(axis=0), x.std(axis=0) + 1e-3
    xt = torch.from_numpy((x - mean) / std)
    yt = torch.from_numpy(y)
    model = nn.Sequential(nn.Linear(x.shape[1], 64), nn.ReLU(), nn.Linear(64, 64), nn.ReLU(), nn.Linear(64, 1))
    optimizer = torch.optim.Adam(model.parameters(), lr=2e-3)
    # Speech is the minority of frames; weight it up (at most 3x) so misses cost as much as false alarms.
    pos_weight = torch.tensor(min(3.0, float((1 - y.mean()) / max(y.mean(), 1e-3))))
    loss_fn = nn.BCEWithLogitsLoss(pos_weight=pos_weight)
    for epoch in range(epochs):
        order = torch.randperm(len(xt))
        total = 0.0
        for start in range(0, len(xt), 1024):
            idx = order[start : start + 1024]
            loss = loss_fn(model(xt[idx])[:, 0], yt[idx])
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            total += loss.item() * len(idx)
        log.info("epoch %d: loss %.4f", epoch, total / len(xt))
    w = [m for m in model if isinstance(m, nn.Linear)]
    arrays = {"mean": mean, "std": std}
    for i, layer in enumerate(w, 1):
        arrays[f"w{i}"] = layer.weight.detach().numpy().T.copy()
        arrays[f"b{i}"] = layer.bias.detach().numpy().copy()
    return arrays


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--clips", type=int, default=3000)
    parser.add_argument("--espeak", type=int, default=400, help="synthetic utterances in the speech pool")
    parser.add_argument("--epochs", type=int, default=6)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    t0 = time.perf_counter()
    x, y = build(args.clips, args.seed, args.espeak)
    log.info("%d examples, %.1f%% speech (%.0f s)", len(y), 100 * y.mean(), time.perf_counter() - t0)
    arrays = train(x, y, args.epochs, args.seed)
    meta = {"version": "vad-mlp-v2", "threshold": 0.5, "fbank": FbankOptions().to_json(), "context_frames": 11,
            "clips": args.clips, "espeak_utterances": args.espeak, "examples": int(len(y)), "epochs": args.epochs,
            "seed": args.seed, "data": "FSDD train takes 5-49 (CC BY-SA 4.0) + espeak-ng voices in synthetic noise",
            "train_seconds": round(time.perf_counter() - t0, 1)}
    args.out.parent.mkdir(parents=True, exist_ok=True)
    tmp = args.out.with_suffix(".tmp.npz")
    np.savez(tmp, meta=np.array(json.dumps(meta)), **{k: v.astype(np.float32) for k, v in arrays.items()})
    tmp.replace(args.out)
    log.info("wrote %s (%.0f s)", args.out, time.perf_counter() - t0)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
