"""`nim4-edge eval`: accuracy of a bundle on a test-set manifest, streaming and offline.

Manifest: JSON Lines, one utterance per line:
    {"audio": "wav/00001.wav", "text": "call Jon Okafor", "hotwords": ["Jon Okafor"],
     "entity": "Jon Okafor", "language": "en", "tags": ["en", "contact", "homophone"]}
`audio` is relative to the manifest's folder (or absolute); `text` may be empty (noise-only clips);
`hotwords`, `entity`, `language` (else: "zh" when the reference has Han characters), `tags` and
`speech_end_s` (where the last word ends in the file: end-of-turn latency is measured from it; without
it, from where the VAD last heard speech) are optional.

Modes:
    streaming  what `nim4-edge listen` does: 100 ms blocks, VAD + endpointer, a partial every chunk,
               finals after each endpoint (their texts joined).
    offline    the whole file as one utterance: no VAD, no partials, one final decode.
Both run the same encoder (the bundle's chunked ONNX step); they differ in segmentation and in
decoding partials on branches of the utterance's KV sequence.

Scoring (stated normalization): Unicode NFKC, lower case, punctuation removed; Mandarin: character
error rate over non-space characters; English: word error rate over whitespace-separated words.
Rates are pooled over the set (total edits / total reference units).
    entity accuracy   share of utterances with an `entity` whose normalized entity appears in the
                      normalized hypothesis
    digit accuracy    utterances tagged "digit": the hypothesis equals the reference
    false text        utterances with an empty reference that produced any text
    phoneme error     the greedy CTC phonemes of the finals against the lexicon's phonemes of the
                      reference (edit distance / reference phonemes): what hotword retrieval reads
    hallucination     (NIM4-ASR paper) output longer than 1.5x the reference with negligible overlap:
                      here, fewer than 10% of the hypothesis units match the reference in the alignment;
                      for an empty reference, any output
    end of speech -> final   streaming: per utterance with speech, from the reference's end of speech
                      to its last final, as a live stream would see it: the end of the 100 ms block
                      that brought the final plus the wall time that block took to process
    cut in two        streaming: utterances with speech that gave more than one non-empty final
"""

from __future__ import annotations

import json
import time
import unicodedata
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from rapidfuzz.distance import Levenshtein

from nim4_edge.runtime.audio import AudioError, load_audio
from nim4_edge.runtime.errors import Nim4Error
from nim4_edge.runtime.features import SAMPLE_RATE_HZ
from nim4_edge.runtime.hotwords.lexicon import LexiconError
from nim4_edge.runtime.text import has_han

BLOCK_MS = 100


class ManifestError(Nim4Error):
    """A test-set manifest that cannot be read."""


@dataclass
class EvalItem:
    audio: Path
    text: str
    language: str
    hotwords: list[str] = field(default_factory=list)
    entity: str = ""
    tags: list[str] = field(default_factory=list)
    line: int = 0
    speech_end_s: float | None = None


def read_manifest(path: Path) -> list[EvalItem]:
    """Parse the JSONL manifest; a malformed line is an error naming the line and the fix."""
    path = Path(path)
    try:
        raw = path.read_bytes()
    except OSError as e:
        raise ManifestError(f"{path}: cannot read the test-set manifest ({e.strerror})") from None
    try:
        lines = raw.decode("utf-8").splitlines()
    except UnicodeDecodeError as e:
        raise ManifestError(f"{path}: not UTF-8 (byte {e.start}); re-save the manifest as UTF-8") from None
    items = []
    for number, line in enumerate(lines, 1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except json.JSONDecodeError as e:
            raise ManifestError(f"{path}:{number}: not valid JSON ({e.msg}); one JSON object per line") from None
        if not isinstance(row, dict) or not isinstance(row.get("audio"), str) or not isinstance(row.get("text", None), str):
            raise ManifestError(f"{path}:{number}: needs string fields \"audio\" and \"text\"")
        audio = Path(row["audio"])
        text = row["text"]
        items.append(EvalItem(
            audio=audio if audio.is_absolute() else path.parent / audio,
            text=text,
            language=row.get("language") or ("zh" if has_han(text) else "en"),
            hotwords=[str(h) for h in row.get("hotwords", []) or []],
            entity=str(row.get("entity", "") or ""),
            tags=[str(t) for t in row.get("tags", []) or []],
            line=number,
            speech_end_s=_optional_seconds(row.get("speech_end_s"), path, number),
        ))
    if not items:
        raise ManifestError(f"{path}: no utterances (one JSON object per line with \"audio\" and \"text\")")
    return items


def _optional_seconds(value, path: Path, number: int) -> float | None:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0 <= value < 1e6:
        raise ManifestError(f"{path}:{number}: \"speech_end_s\" must be seconds into the file (a number >= 0)")
    return float(value)


# --- scoring ----------------------------------------------------------------------------------------

def normalize(text: str) -> str:
    text = unicodedata.normalize("NFKC", text).lower()
    text = "".join(" " if unicodedata.category(ch).startswith("P") else ch for ch in text)
    return " ".join(text.split())


def units(text: str, language: str) -> list[str]:
    """Scoring units of normalized text: characters for Mandarin, words otherwise."""
    text = normalize(text)
    return [c for c in text if not c.isspace()] if language == "zh" else text.split()


def align_counts(ref: list[str], hyp: list[str]) -> tuple[int, int]:
    """(edit distance, matched units) of a Levenshtein alignment."""
    matched = sum(op.src_end - op.src_start for op in Levenshtein.opcodes(ref, hyp) if op.tag == "equal")
    return Levenshtein.distance(ref, hyp), matched


def contains_entity(hypothesis: str, entity: str, language: str) -> bool:
    hyp, ent = normalize(hypothesis), normalize(entity)
    if language == "zh":
        return ent.replace(" ", "") in hyp.replace(" ", "")
    return f" {ent} " in f" {hyp} "


def is_hallucination(ref: list[str], hyp: list[str], matched: int) -> bool:
    if not ref:
        return bool(hyp)
    return len(hyp) > 1.5 * len(ref) and matched < 0.1 * len(hyp)


def score(items: list[EvalItem], hypotheses: list[str | None]) -> dict:
    """Pooled figures for one mode. A None hypothesis is a failed utterance (counted, not scored)."""
    edits = {"zh": 0, "en": 0}
    total = {"zh": 0, "en": 0}
    entity_hits = {}
    counts = {"entity": 0, "entity_ok": 0, "digit": 0, "digit_ok": 0, "empty": 0, "false_text": 0,
              "hallucinations": 0, "scored": 0, "failed": 0}
    per_tag: dict[str, list[int]] = {}
    for item, hyp in zip(items, hypotheses):
        if hyp is None:
            counts["failed"] += 1
            continue
        counts["scored"] += 1
        lang = "zh" if item.language == "zh" else "en"
        ref_units, hyp_units = units(item.text, lang), units(hyp, lang)
        distance, matched = align_counts(ref_units, hyp_units)
        if ref_units:
            edits[lang] += distance
            total[lang] += len(ref_units)
        else:
            counts["empty"] += 1
            counts["false_text"] += bool(hyp_units)
        counts["hallucinations"] += is_hallucination(ref_units, hyp_units, matched)
        if item.entity:
            ok = contains_entity(hyp, item.entity, lang)
            counts["entity"] += 1
            counts["entity_ok"] += ok
            for tag in item.tags:
                entity_hits.setdefault(tag, [0, 0])
                entity_hits[tag][0] += ok
                entity_hits[tag][1] += 1
        if "digit" in item.tags:
            counts["digit"] += 1
            counts["digit_ok"] += ref_units == hyp_units
        for tag in item.tags:
            per_tag.setdefault(tag, [0, 0])
            per_tag[tag][0] += distance
            per_tag[tag][1] += len(ref_units)

    def pct(a, b):
        return round(100.0 * a / b, 2) if b else None

    return {
        "cer_zh": pct(edits["zh"], total["zh"]),
        "wer_en": pct(edits["en"], total["en"]),
        "entity_accuracy": pct(counts["entity_ok"], counts["entity"]),
        "entity_accuracy_by_tag": {t: pct(ok, n) for t, (ok, n) in sorted(entity_hits.items())},
        "digit_accuracy": pct(counts["digit_ok"], counts["digit"]),
        "false_text_rate": pct(counts["false_text"], counts["empty"]),
        "hallucination_rate": pct(counts["hallucinations"], counts["scored"]),
        "error_rate_by_tag": {t: pct(e, n) for t, (e, n) in sorted(per_tag.items()) if n},
        "counts": {"zh_chars": total["zh"], "en_words": total["en"], **counts},
    }


# --- running ------------------------------------------------------------------------------------------

def transcribe_streaming(recognizer, audio: np.ndarray) -> tuple[str, list, list[float]]:
    """What `listen` does: 100 ms blocks through a new stream (as Recognizer.transcribe), each final
    stamped with when a live stream would have it: the end of its block in the audio plus the wall
    time the block took (the third element, one per final)."""
    step = BLOCK_MS * SAMPLE_RATE_HZ // 1000
    events, emitted = [], []
    with recognizer.create_stream() as stream:
        for start in [*range(0, len(audio), step), None]:  # None: the end of the input
            t0 = time.perf_counter()
            if start is not None:
                got = stream.accept_waveform(audio[start : start + step], SAMPLE_RATE_HZ)
            else:
                got = stream.input_finished()
            block_end = len(audio) if start is None else min(len(audio), start + step)
            at = block_end / SAMPLE_RATE_HZ + (time.perf_counter() - t0)
            emitted += [at for e in got if e.kind == "final"]
            events += got
        if stream.errors:
            raise Nim4Error("; ".join(stream.errors))
    finals = [e for e in events if e.kind == "final"]
    return " ".join(e.text.strip() for e in finals if e.text.strip()), events, emitted


def transcribe_offline(recognizer, audio: np.ndarray) -> tuple[str, list, list[float]]:
    """The whole file as one utterance (no VAD, no partials)."""
    stream = recognizer.create_stream()
    try:
        finals = [e for e in stream.decode_whole(audio) if e.kind == "final"]
    finally:
        stream.close()
    return " ".join(e.text.strip() for e in finals), finals, []


MODES = {"streaming": transcribe_streaming, "offline": transcribe_offline}


def _count_phoneme_errors(lexicon, item: EvalItem, heard: list[str], into: dict[str, list[int]],
                          edits_by_kind: "PhonemeEdits") -> None:
    if not item.text.strip():
        return
    try:
        reference_phonemes = lexicon.phonemes(item.text)
    except LexiconError:
        return  # nothing pronounceable in the reference: no phoneme figure for it
    reference, code = lexicon.encode(reference_phonemes), lexicon.encode(heard)
    edits = Levenshtein.editops(reference, code)
    edits_by_kind.add(reference_phonemes, heard, edits)
    for tag in ["", *item.tags]:
        counts = into.setdefault(tag, [0, 0])
        counts[0] += len(edits)
        counts[1] += len(reference)


@dataclass
class PhonemeEdits:
    """The phoneme head's edits against the lexicon's reference phonemes, by kind and phoneme (one
    minimal alignment each utterance: rapidfuzz's editops): `eval --phoneme-edits FILE` writes them,
    and `bench hotwords --edit-rates FILE` draws its errors from them as the head makes them."""

    reference: dict[str, int] = field(default_factory=dict)  # phoneme -> times in the references
    deleted: dict[str, int] = field(default_factory=dict)  # reference phoneme -> times the head dropped it
    inserted: dict[str, int] = field(default_factory=dict)  # heard phoneme -> times the head added it
    substituted: dict[str, int] = field(default_factory=dict)  # "reference heard" -> times
    utterances: int = 0

    def add(self, reference: list[str], heard: list[str], edits) -> None:
        self.utterances += 1
        for p in reference:
            self.reference[p] = self.reference.get(p, 0) + 1
        for op in edits:
            if op.tag == "delete":
                key, into = reference[op.src_pos], self.deleted
            elif op.tag == "insert":
                key, into = heard[op.dest_pos], self.inserted
            else:
                key, into = f"{reference[op.src_pos]} {heard[op.dest_pos]}", self.substituted
            into[key] = into.get(key, 0) + 1

    def to_json(self) -> dict:
        def by_count(counts: dict[str, int]) -> dict[str, int]:  # the most frequent first
            return dict(sorted(counts.items(), key=lambda kv: (-kv[1], kv[0])))

        return {"format": "nim4-edge phoneme edits 1", "utterances": self.utterances,
                "reference_phonemes": sum(self.reference.values()), "reference": by_count(self.reference),
                "deleted": by_count(self.deleted), "inserted": by_count(self.inserted),
                "substituted": by_count(self.substituted)}


def evaluate(recognizer, items: list[EvalItem], modes: list[str], progress=None) -> dict:
    """Run every item in every mode. Returns {"modes": {mode: score + timing}, "utterances": [...]}."""
    audio_cache: dict[Path, np.ndarray | str] = {}
    details = [{"audio": str(i.audio), "text": i.text, "language": i.language, "tags": i.tags} for i in items]
    results = {}
    for mode in modes:
        run = MODES[mode]
        hyps: list[str | None] = []
        latencies, first_partials, compute_s, audio_s = [], [], 0.0, 0.0
        turn_ms, cut, with_speech, reasons = [], 0, 0, {}  # end of turn (streaming)
        encoder_ms = chunks = decode_ms = tokens = 0.0
        hint_hits = [0, 0]  # entity utterances whose entity was among the final's hints, of all
        phoneme_edits: dict[str, list[int]] = {}  # tag ("" = all) -> [edits, reference phonemes]
        edits_by_kind = PhonemeEdits()
        for n, (item, row) in enumerate(zip(items, details)):
            if item.audio not in audio_cache:
                try:
                    audio_cache[item.audio] = load_audio(item.audio, SAMPLE_RATE_HZ)
                except (AudioError, OSError) as e:
                    audio_cache[item.audio] = f"{item.audio}: {e}"
            audio = audio_cache[item.audio]
            if isinstance(audio, str):
                hyps.append(None)
                row["error"] = audio
            else:
                t0 = time.perf_counter()
                try:
                    text, events, emitted = run(recognizer, audio)
                except Nim4Error as e:
                    text, events, emitted = None, [], []
                    row["error"] = str(e)
                compute_s += time.perf_counter() - t0
                audio_s += len(audio) / SAMPLE_RATE_HZ
                finals = [e for e in events if e.kind == "final"]
                latencies += [f.timings.final_latency_ms for f in finals if f.timings.final_latency_ms is not None]
                for f in finals:
                    reasons[f.end_reason] = reasons.get(f.end_reason, 0) + 1
                spoken = [(f, at) for f, at in zip(finals, emitted) if f.text.strip()]
                if emitted and item.text.strip() and spoken:
                    with_speech += 1
                    cut += len(spoken) > 1
                    last, at = spoken[-1]
                    end = item.speech_end_s if item.speech_end_s is not None else last.speech_end_s
                    turn_ms.append((at - end) * 1000)
                    row[f"{mode}_turn"] = {"finals": len(spoken), "eos_to_final_ms": round(turn_ms[-1], 1),
                                           "end_reasons": [f.end_reason for f, _ in spoken],
                                           "end_probability": [f.end_probability for f, _ in spoken]}
                for f in finals:
                    encoder_ms += f.timings.encoder_ms
                    chunks += f.chunks
                    decode_ms += f.timings.result_decode_ms
                    tokens += f.tokens
                seen = set()
                for e in events:  # the first partial of each utterance: audio until it + compute so far
                    if e.kind == "partial" and e.utterance not in seen:
                        seen.add(e.utterance)
                        compute = e.timings.model_ms
                        first_partials.append((e.end_s - e.start_s) * 1000 + compute)
                hyps.append(text)
                row[mode] = text
                # each spoken final's confidence (runtime/confidence.py): bench/confidence.py weighs them
                row[f"{mode}_confidence"] = [{"acoustic": f.acoustic_confidence, "language_match": f.language_match,
                                              "confident": f.confident, "decoder": f.decoder_confidence}
                                             for f in finals if f.text.strip()]
                if not recognizer.windowed:  # a windowed-encoder family (Qwen3-ASR) has no phoneme head
                    _count_phoneme_errors(recognizer.lexicon, item, [p for f in finals for p in f.phonemes], phoneme_edits,
                                          edits_by_kind)
                hints = list(dict.fromkeys(h for f in finals for h in f.hotwords))
                if item.entity:
                    row[f"{mode}_hints"] = hints
                    hint_hits[0] += item.entity in hints
                    hint_hits[1] += 1
            if progress:
                progress(mode, n + 1, len(items))
        figures = score(items, hyps)
        # retrieval's share of entity errors: a decoder can only copy a name it was given
        figures["hint_recall"] = round(100.0 * hint_hits[0] / hint_hits[1], 2) if hint_hits[1] else None
        figures["rtf"] = round(compute_s / audio_s, 4) if audio_s else None
        # the phoneme head's greedy output against the lexicon's phonemes of the reference (retrieval's input)
        per = {tag: round(100.0 * e / n, 2) for tag, (e, n) in sorted(phoneme_edits.items()) if n}
        figures["phoneme_error_rate"] = per.pop("", None)
        figures["phoneme_error_rate_by_tag"] = per
        figures["phoneme_edits"] = edits_by_kind.to_json() if edits_by_kind.utterances else None
        if latencies:
            figures["final_latency_ms_p50"] = round(float(np.percentile(latencies, 50)), 1)
            figures["final_latency_ms_p95"] = round(float(np.percentile(latencies, 95)), 1)
        if first_partials:
            figures["first_partial_ms_p50"] = round(float(np.percentile(first_partials, 50)), 1)
        if turn_ms:
            figures["eos_to_final_ms_p50"] = round(float(np.percentile(turn_ms, 50)), 1)
            figures["eos_to_final_ms_p95"] = round(float(np.percentile(turn_ms, 95)), 1)
            figures["cut_in_two_pct"] = round(100.0 * cut / with_speech, 2)
            figures["end_reasons"] = dict(sorted(reasons.items()))
        figures["encoder_ms_per_chunk"] = round(encoder_ms / chunks, 3) if chunks else None
        figures["decode_tokens_per_s"] = round(1000 * tokens / decode_ms, 1) if decode_ms else None
        results[mode] = figures
    summary = {"modes": results, "utterances": details}
    if "streaming" in results and "offline" in results:
        diff = {}
        for key in ("cer_zh", "wer_en"):
            a, b = results["streaming"][key], results["offline"][key]
            diff[key] = None if a is None or b is None else round(a - b, 2)
        summary["streaming_minus_offline"] = diff
    return summary


def report_rows(summary: dict) -> list[dict]:
    rows = []
    for mode, f in summary["modes"].items():
        rows.append({"mode": mode, "CER zh %": f["cer_zh"], "WER en %": f["wer_en"],
                     "entity acc %": f["entity_accuracy"],
                     "homophone ent %": f["entity_accuracy_by_tag"].get("homophone"),
                     "hint recall %": f.get("hint_recall"), "PER %": f.get("phoneme_error_rate"),
                     "digit acc %": f["digit_accuracy"], "false text %": f["false_text_rate"],
                     "halluc %": f["hallucination_rate"], "RTF": f["rtf"],
                     "final p50 ms": f.get("final_latency_ms_p50"),
                     "EOS->final p50/p95 ms": (f"{f['eos_to_final_ms_p50']:.0f}/{f['eos_to_final_ms_p95']:.0f}"
                                              if "eos_to_final_ms_p50" in f else None),
                     "cut %": f.get("cut_in_two_pct"), "failed": f["counts"]["failed"]})
    return rows
