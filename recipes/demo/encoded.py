"""Encoder outputs of the frozen CTC-stage encoder, computed once for every training clip.

Why: after the `ctc` stage the encoder stays frozen (see train.py), so what the later stages need from
it never changes. Computing it once and reading it back makes a step of `align`/`joint`/`context` the
adaptor + decoder only: measured on this 2-core machine, ~10x more steps per hour than running the
encoder in every step, which is what lets the decoder see the corpus for many epochs.

Layout of WORK/encoded/ (one version = one pass over the corpus):
    encoded-<v>.npy   float16 (encoder frames, d_model), every clip's frames concatenated in corpus order
    meta.json         rows' (offset, frames), the CTC checkpoint it came from, chunking, versions
Version 0 is the clean features; versions >= 1 apply SpecAugment masks to the features first (training
sees a random version per clip: augmentation that survives the cache). All versions run the deployed
streaming geometry (16-frame chunks, 4 left chunks), so training sees exactly what the runtime's
streaming encoder produces.
"""

from __future__ import annotations

import json
import logging
import random
import shutil
from pathlib import Path

import numpy as np
import torch
from tqdm import tqdm

log = logging.getLogger(__name__)


class EncodedCache:
    """Read side: padded encoder-output batches for lists of corpus rows."""

    def __init__(self, directory: Path):
        self.meta = json.loads((directory / "meta.json").read_text())
        self.spans = self.meta["spans"]
        self.versions = [np.load(directory / f"encoded-{v}.npy", mmap_mode="r") for v in range(self.meta["versions"])]

    def batch(self, rows: list[int], rng: random.Random, augment: bool) -> tuple[torch.Tensor, torch.Tensor]:
        """(B, T', d) float32 and lengths (B,); with `augment` each row reads a random version."""
        lengths = [self.spans[i][1] for i in rows]
        d = self.versions[0].shape[1]
        x = np.zeros((len(rows), max(max(lengths), 1), d), np.float32)
        for k, i in enumerate(rows):
            start, n = self.spans[i]
            version = self.versions[rng.randrange(len(self.versions)) if augment else 0]
            x[k, :n] = version[start : start + n]
        return torch.from_numpy(x), torch.tensor(lengths, dtype=torch.int64)


def build_cache(directory: Path, corpus, model, source: dict, chunk: int, left: int, versions: int,
                max_frames: int = 8000, seed: int = 0) -> EncodedCache:
    """Run `model.encoder` over every row of `corpus` (`versions` passes) into `directory`.

    `source` identifies the encoder (the CTC stage's done.json): a cache of another encoder is rebuilt.
    Written to a temporary folder and renamed, so an interrupted build leaves no half cache."""
    meta_path = directory / "meta.json"
    if meta_path.is_file():
        meta = json.loads(meta_path.read_text())
        if meta.get("source") == source and meta.get("versions") == versions and meta.get("chunk") == [chunk, left]:
            return EncodedCache(directory)
        log.info("encoder cache at %s is from another encoder or settings: rebuilding", directory)

    frames = [r["frames"][1] for r in corpus.rows]
    encoded_lengths = [max(0, (n - 3) // 4) for n in frames]  # Conv2dSubsampling's output length
    offsets = np.concatenate([[0], np.cumsum(encoded_lengths)]).astype(np.int64)
    tmp = directory.with_name(directory.name + ".tmp")
    if tmp.exists():
        shutil.rmtree(tmp)
    tmp.mkdir(parents=True)
    d = model.cfg.encoder.d_model
    rng = random.Random(seed)
    order = sorted(range(len(frames)), key=frames.__getitem__)  # similar lengths together: little padding
    batches, current = [], []
    for i in order:
        if current and frames[i] * (len(current) + 1) > max_frames:
            batches.append(current)
            current = []
        current.append(i)
    batches.append(current)
    model.eval()
    with torch.no_grad(), tqdm(total=versions * len(batches), desc="encoder cache", mininterval=10) as bar:
        for v in range(versions):
            out = np.lib.format.open_memmap(tmp / f"encoded-{v}.npy", mode="w+", dtype=np.float16,
                                            shape=(int(offsets[-1]), d))
            for batch in batches:
                feats, lengths = corpus.features_batch(batch, spec_augment=v > 0, rng=rng)
                encoded, enc_lengths = model.encoder(feats, lengths, chunk, left)
                for k, i in enumerate(batch):
                    n = int(enc_lengths[k])
                    assert n == encoded_lengths[i], (n, encoded_lengths[i])
                    out[offsets[i] : offsets[i] + n] = encoded[k, :n].numpy().astype(np.float16)
                bar.update(1)
            out.flush()
            del out
    meta = {"source": source, "versions": versions, "chunk": [chunk, left],
            "spans": [[int(offsets[i]), encoded_lengths[i]] for i in range(len(frames))]}
    (tmp / "meta.json").write_text(json.dumps(meta) + "\n")
    if directory.exists():
        shutil.rmtree(directory)
    tmp.rename(directory)
    return EncodedCache(directory)
