"""Parity of an exported bundle against the PyTorch reference: encoder and decoder.

Encoder:
For each test utterance: fbank + CMVN (runtime/features.py), then
  * streaming: the runtime's EncoderStream on onnxruntime, frames fed in uneven pieces, flushed at the end;
  * reference: the PyTorch model on the whole utterance with the equivalent chunk mask
    (chunk = 16 frames, left context = 4 chunks unless `reference_left_chunks` overrides it).
The report gives the largest absolute differences of phoneme log-probs and adaptor embeddings.
Utterance lengths are chosen so that none is a multiple of the chunk and the first chunks run with
partly filled caches; setting `reference_left_chunks` to another value is the negative control.

Decoder: transformers' Qwen3 and the llama.cpp session on the same sequence (prompt prefix tokens,
speech-like embedding rows, suffix tokens with hotwords): the largest logit difference at every
position, and whether 32 greedy tokens agree. llama.cpp runs with an F32 KV cache and no flash
attention, the settings under which it matches transformers (docs/FACTS.md).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from transformers import AutoModelForCausalLM

from nim4_edge.export.checkpoint import Checkpoint
from nim4_edge.export.gguf_convert import PROBE_HOTWORDS
from nim4_edge.runtime.audio import load_audio, synthetic_utterance
from nim4_edge.runtime.bundle import Bundle
from nim4_edge.runtime.decoder import DecoderSession, DecoderSettings
from nim4_edge.runtime.encoder import EncoderSession, EncoderStream
from nim4_edge.runtime.features import compute_fbank

DEFAULT_DURATIONS_S = (0.37, 1.13, 2.9, 7.3)
# Largest allowed logit difference per GGUF type: f32 must match; f16 weights and f16 activations in
# llama.cpp's CPU matmuls give ~1e-2 (bf16 gives 5e-2, docs/FACTS.md).
DECODER_TOLERANCE = {"f32": 1e-3, "f16": 5e-2}
# Log-probs of unlikely phonemes reach -40 and below, where fp32 rounding differences between two
# correct implementations grow with the magnitude: allowed |diff| = tolerance + LOG_PROB_RTOL * |log-prob|
# (numpy.isclose's form). At -40 (a probability of 4e-18) that is 5e-4; near 0 it is the tolerance.
LOG_PROB_RTOL = 1e-5
GREEDY_TOKENS = 32


@dataclass(frozen=True)
class VerifyOptions:
    tolerance: float = 1e-4  # largest allowed absolute difference, log-probs and embeddings alike (see LOG_PROB_RTOL)
    durations_s: tuple[float, ...] = DEFAULT_DURATIONS_S  # synthetic utterances to stream
    wavs: tuple[Path, ...] = ()  # real recordings to stream as well (PCM WAV, any rate)
    reference_left_chunks: int | None = None  # None: the bundle's own left context
    seed: int = 0
    num_threads: int = 0
    max_piece_frames: int = 40  # frames are fed in random pieces of 1..this many
    decoder: bool = True  # also check the decoder GGUF against transformers
    speech_rows: int = 10  # embedding rows in the decoder check


def verify_bundle(checkpoint: Checkpoint, bundle_path: Path, options: VerifyOptions) -> dict:
    """Both checks; `passed` only if each passed."""
    bundle = Bundle.load(bundle_path, verify_hashes=True)
    report = {"bundle": str(bundle_path), "encoder": verify_encoder(checkpoint, bundle, options)}
    if options.decoder:
        report["decoder"] = verify_decoder(checkpoint, bundle, options)
    report["passed"] = all(part["passed"] for key, part in report.items() if key in ("encoder", "decoder"))
    return report


def verify_encoder(checkpoint: Checkpoint, bundle, options: VerifyOptions) -> dict:
    manifest = bundle.manifest
    model = checkpoint.load_acoustic_model()
    geometry = manifest.streaming
    left_chunks = geometry.left_chunks if options.reference_left_chunks is None else options.reference_left_chunks
    stream = EncoderStream(EncoderSession(bundle, num_threads=options.num_threads))
    rng = np.random.default_rng(options.seed)

    utterances = [(f"synthetic {s:g} s", synthetic_utterance(s, manifest.fbank.sample_rate_hz, options.seed + i))
                  for i, s in enumerate(options.durations_s)]
    utterances += [(str(p), load_audio(p, manifest.fbank.sample_rate_hz)) for p in options.wavs]

    results = []
    for name, samples in utterances:
        frames = manifest.cmvn.apply(compute_fbank(samples, manifest.fbank))
        stream.reset()
        chunks = []
        start = 0
        while start < len(frames):
            piece = int(rng.integers(1, options.max_piece_frames + 1))
            chunks += stream.accept_frames(frames[start : start + piece])
            start += piece
        chunks += stream.flush()
        with torch.no_grad():
            ref = model(
                torch.from_numpy(frames)[None],
                torch.tensor([len(frames)]),
                geometry.chunk_frames,
                left_chunks,
            )
        ref_lp = ref.phoneme_log_probs[0].numpy()
        ref_emb = ref.embeddings[0].numpy()
        if chunks:
            got_lp = np.concatenate([c.phoneme_log_probs for c in chunks])
            got_emb = np.concatenate([c.embeddings for c in chunks])
        else:
            got_lp, got_emb = ref_lp[:0], ref_emb[:0]
        if got_lp.shape != ref_lp.shape or got_emb.shape != ref_emb.shape:
            raise AssertionError(
                f"{name}: streaming produced {got_lp.shape}/{got_emb.shape}, reference {ref_lp.shape}/{ref_emb.shape}"
            )
        results.append(
            {
                "utterance": name,
                "seconds": round(len(samples) / manifest.fbank.sample_rate_hz, 3),
                "fbank_frames": len(frames),
                "encoder_frames": int(ref_lp.shape[0]),
                "chunks": len(chunks),
                "max_abs_diff_phoneme_log_probs": float(np.abs(got_lp - ref_lp).max()) if got_lp.size else 0.0,
                "log_prob_at_max_diff": float(ref_lp.flat[np.abs(got_lp - ref_lp).argmax()]) if got_lp.size else 0.0,
                "phoneme_log_probs_close": bool(np.all(np.abs(got_lp - ref_lp)
                                                       <= options.tolerance + LOG_PROB_RTOL * np.abs(ref_lp))),
                "max_abs_diff_embeddings": float(np.abs(got_emb - ref_emb).max()) if got_emb.size else 0.0,
            }
        )
    worst_lp = max(r["max_abs_diff_phoneme_log_probs"] for r in results)
    worst_emb = max(r["max_abs_diff_embeddings"] for r in results)
    return {
        "chunk_frames": geometry.chunk_frames,
        "stream_left_chunks": geometry.left_chunks,
        "reference_left_chunks": left_chunks,
        "tolerance": options.tolerance,
        "max_abs_diff_phoneme_log_probs": worst_lp,
        "max_abs_diff_embeddings": worst_emb,
        "log_prob_rtol": LOG_PROB_RTOL,
        "passed": bool(all(r["phoneme_log_probs_close"] for r in results) and worst_emb <= options.tolerance),
        "utterances": results,
    }


def verify_decoder(checkpoint: Checkpoint, bundle, options: VerifyOptions, variant: str | None = None) -> dict:
    spec = bundle.manifest.decoder
    variant = variant or spec.default_variant
    tolerance = DECODER_TOLERANCE.get(variant)
    if tolerance is None:
        raise ValueError(f"decoder variant {variant} is quantized; compare it with `nim4-edge quantize` agreement instead")
    # F32 KV and no flash attention: the settings under which llama.cpp matches transformers;
    # the token cap is exactly GREEDY_TOKENS so both sides stop at the same length.
    settings = DecoderSettings(kv_cache_type="f32", flash_attn=False, n_ctx=512,
                               min_new_tokens=GREEDY_TOKENS, max_tokens_per_second=0.0)
    session = DecoderSession.open(bundle.decoder_file(variant), spec, settings, bundle.manifest.seconds_per_embedding)
    try:
        model = AutoModelForCausalLM.from_pretrained(str(checkpoint.decoder_dir), dtype=torch.float32).eval()
        embed = model.get_input_embeddings()
        rng = np.random.default_rng(options.seed)
        scale = float(embed.weight.detach().std())
        speech = (rng.standard_normal((options.speech_rows, spec.hidden_size)) * scale).astype(np.float32)
        prefix_ids = session.prefix_ids
        suffix_ids = session.tokenize(spec.prompt.suffix(list(PROBE_HOTWORDS)))

        got = session.score([prefix_ids, speech, suffix_ids])
        with torch.no_grad():
            inputs = torch.cat([embed(torch.tensor([prefix_ids])), torch.from_numpy(speech)[None], embed(torch.tensor([suffix_ids]))], dim=1)
            out = model(inputs_embeds=inputs, use_cache=True)
        want = out.logits[0].numpy()
        diff = np.abs(got - want).max(axis=1)  # per position
        n_prefix, n_speech = len(prefix_ids), len(speech)
        text_positions = np.r_[0:n_prefix, n_prefix + n_speech : len(diff)]

        # Greedy continuation: transformers with its KV cache vs the session's final().
        hf_tokens, past, logits = [], out.past_key_values, out.logits[0, -1]
        with torch.no_grad():
            for _ in range(GREEDY_TOKENS):
                token = int(torch.argmax(logits))
                if token == spec.token_ids["im_end"]:
                    break
                hf_tokens.append(token)
                step = model(input_ids=torch.tensor([[token]]), past_key_values=past, use_cache=True)
                past, logits = step.past_key_values, step.logits[0, -1]
        session.start_utterance()
        session.append(speech)
        result = session.final(list(PROBE_HOTWORDS))
    finally:
        session.close()
    max_text = float(diff[text_positions].max())
    identical = result.token_ids == hf_tokens
    return {
        "variant": variant,
        "tolerance": tolerance,
        "positions": int(len(diff)),
        "max_abs_logit_diff_text_positions": max_text,
        "max_abs_logit_diff_speech_positions": float(diff[n_prefix : n_prefix + n_speech].max()),
        "greedy_tokens": len(hf_tokens),
        "greedy_identical": identical,
        "passed": bool(max_text <= tolerance and (identical or variant != "f32")),
    }
