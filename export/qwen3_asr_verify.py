"""`import qwen3-asr --verify`: an imported bundle against the official transformers model.

For utterances of several lengths (shorter than a chunk, not a multiple of it, longer than one window)
of seeded noise, each as the largest absolute difference, with its tolerance:

    features     runtime/qwen3_asr/features.py (streamed in 640 ms pieces) vs Qwen3ASRFeatureExtractor
    encoder      embeddings streamed chunk by chunk through the two ONNX graphs (windows rolled back as
                 they grow) vs Qwen3ASRModel.get_audio_features on the whole utterance
    decoder      llama.cpp logits over [prefix, audio embeddings, suffix] vs Qwen3ASRForConditionalGeneration
    greedy       the first `greedy_steps` greedy tokens after the prompt, llama.cpp vs transformers' generate

Noise is the input because no speech is needed to compare two implementations of the same function;
random-weight checkpoints are how the tests and this machine prove the import (no real weights here).
"""

from __future__ import annotations

import numpy as np
import torch
from tokenizers import Tokenizer
from transformers import Qwen3ASRFeatureExtractor

from nim4_edge.export.bundle_import import largest_difference
from nim4_edge.export.qwen3_asr import AUDIO_PAD, load_official
from nim4_edge.runtime.bundle import Bundle
from nim4_edge.runtime.decoder import DecoderSession, DecoderSettings
from nim4_edge.runtime.qwen3_asr.encoder import UPDATE_SAMPLES, WindowedEncoderSession, stream_samples
from nim4_edge.runtime.qwen3_asr.features import LogMelStream, normalize

TOLERANCES = {"features": 1e-4, "encoder": 1e-4, "decoder": 1e-3}
SECONDS = (0.3, 3.3, 9.71)  # under 0.5 s (padded), mid-chunk, past the first 8 s window


def official_features(extractor, samples: np.ndarray):
    return extractor(samples, sampling_rate=16000, padding=True, return_tensors="pt", return_attention_mask=True)


def streamed_features(samples: np.ndarray, options) -> np.ndarray:
    stream = LogMelStream(options)
    raw = [stream.accept(samples[i:i + UPDATE_SAMPLES]) for i in range(0, len(samples), UPDATE_SAMPLES)]
    raw = np.concatenate([*raw, stream.finish()])
    return normalize(raw, float(raw.max()), options)


def verify_bundle(hf_dir, bundle: Bundle, seconds=SECONDS, greedy_steps: int = 32, seed: int = 0, model=None) -> dict:
    """The report: per utterance length the largest differences; `passed` when all are in tolerance
    and the greedy tokens are identical."""
    model = model if model is not None else load_official(hf_dir)
    extractor = Qwen3ASRFeatureExtractor()
    encoder = WindowedEncoderSession(bundle)
    spec = bundle.manifest.decoder
    settings = DecoderSettings(kv_cache_type="f32", n_ctx=4096)  # f32 KV: parity (docs/FACTS.md)
    decoder = DecoderSession.open(bundle.decoder_file(), spec, settings, bundle.manifest.seconds_per_embedding)
    tokenizer = Tokenizer.from_file(str(hf_dir / "tokenizer.json"))
    audio_pad = tokenizer.token_to_id(AUDIO_PAD)
    prefix = tokenizer.encode(spec.prompt.prefix, add_special_tokens=False).ids
    suffix = tokenizer.encode(spec.prompt.suffix(), add_special_tokens=False).ids
    rng = np.random.default_rng(seed)
    rows, passed = [], True
    try:
        for length in seconds:
            samples = (rng.standard_normal(int(length * 16000)) * 0.1).astype(np.float32)
            official = official_features(extractor, samples)
            with torch.no_grad():
                reference = model.model.get_audio_features(official["input_features"], official["attention_mask"]).pooler_output
            valid = int(official["attention_mask"].sum())
            features = largest_difference(streamed_features(samples, bundle.manifest.features),
                                official["input_features"][0, :, :valid].T.numpy())
            embeddings = stream_samples(encoder, samples)
            encoder_diff = largest_difference(embeddings, reference.numpy())
            ids = torch.tensor([prefix + [audio_pad] * len(reference) + suffix])
            with torch.no_grad():
                logits = model(input_ids=ids, input_features=official["input_features"],
                               input_features_mask=official["attention_mask"]).logits[0, len(prefix):].numpy()
                generated = model.generate(input_ids=ids, input_features=official["input_features"],
                                           input_features_mask=official["attention_mask"], max_new_tokens=greedy_steps,
                                           min_new_tokens=greedy_steps, do_sample=False)[0, ids.shape[1]:].tolist()
            decoder.start_utterance()
            ours = np.concatenate([decoder.append(embeddings, all_logits=True), decoder.append_tokens(suffix, all_logits=True)])
            decoder_diff = largest_difference(ours, logits)
            greedy = _greedy_tokens(decoder, ours[-1], greedy_steps)
            row = {"seconds": length, "embeddings": len(reference), "features": features, "encoder": encoder_diff,
                   "decoder": decoder_diff, "greedy_equal": greedy == generated, "greedy_tokens": len(generated)}
            row["passed"] = bool(row["greedy_equal"] and all(row[k] <= t for k, t in TOLERANCES.items()))
            passed &= row["passed"]
            rows.append(row)
    finally:
        decoder.close()
    return {"tolerances": TOLERANCES, "utterances": rows, "passed": bool(passed)}


def _greedy_tokens(decoder: DecoderSession, logits: np.ndarray, steps: int) -> list[int]:
    """`steps` argmax tokens from `logits` on, end tokens masked (transformers' min_new_tokens masks
    them the same way, so both sides are compared over the full count); ends the utterance."""
    ends = [decoder.spec.token_ids["im_end"], decoder.spec.token_ids["endoftext"]]
    tokens = []
    for _ in range(steps):
        masked = logits.copy()
        masked[ends] = -np.inf
        tokens.append(int(np.argmax(masked)))
        logits = decoder.append_tokens(tokens[-1:], all_logits=True)[-1]
    decoder.end_utterance()
    return tokens
