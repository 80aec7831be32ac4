"""Train the demo model in the NIM4-ASR paper's stages, at small scale. Each stage is a resumable command.

    python -m nim4_edge.recipes.demo.train ctc     --work work/demo
    python -m nim4_edge.recipes.demo.train text    --work work/demo
    python -m nim4_edge.recipes.demo.train align   --work work/demo
    python -m nim4_edge.recipes.demo.train joint   --work work/demo
    python -m nim4_edge.recipes.demo.train context --work work/demo
    python -m nim4_edge.recipes.demo.train head    --work work/demo
    nim4-edge export work/demo/head/checkpoint -o runtime/demo_bundle --decoder-type f16 --verify

Stages (paper -> here):
  ctc      CTC phoneme pretraining of encoder + phoneme head, dynamic chunk masks (half of the batches
           use the deployed 16-frame chunks with 4 left chunks, the rest random chunk sizes, left
           contexts or full context). Labels: the lexicon's phonemes of the transcript.
  text     tokenizer (byte-level BPE with the chat special tokens, trained on the transcripts and the
           entity character pools) + a random `demo`-shape Qwen3 pretrained on the transcripts (the
           prompt with the transcript in the speech slot; loss on the answer); for half the entity
           samples the slot holds a look-alike name and the true one is among the hints
           (hint_copy_sample), so copying from hints is learned where it is cheap.
  align    adaptor alignment: encoder and decoder frozen, the adaptor learns to map speech into the
           decoder's embedding space (cross-entropy on the transcript).
  joint    joint fine-tuning of adaptor + decoder (cross-entropy). The paper also updates the encoder
           here; we keep it frozen after `ctc`: the encoder pass then comes from a cache built once
           (encoded.py) and a step costs ~1/10, so the decoder sees the corpus for many epochs in the
           time budget instead of ~1 (measured: 1,500 joint steps with the encoder in the loop took
           15 min and left entity names unread, recipes/demo/README.md).
  context  context fine-tuning with the prompt's hotword hints: the true entity among phonetically
           similar distractors (70%), distractors only (10%), no hints (20%); commands without an entity
           get random hints half the time. Hints steer but never force.
  head     (not in the paper) the phoneme head alone, CTC on the cached encoder outputs: `ctc` trained
           it under dynamic chunk masks with the encoder moving; on the frozen encoder's deployed-
           geometry outputs it gets sharper. Measured on the test set's greedy phoneme error rate: every
           English voice improves (7.6-13.5% -> 5.3-12.6%), and with it hotword retrieval. Decoder and
           adaptor are untouched (the checkpoint is `context`'s with a new head).

Work directory layout: WORK/corpus (recipes/demo/corpus.py), WORK/encoded (the frozen encoder's outputs,
made by the first stage that needs them), WORK/<stage>/state.pt (resume point, saved
every --save-every steps and at the end), WORK/<stage>/checkpoint (project checkpoint format, written
at the end). A stage starts from the previous stage's checkpoint. Ctrl-C saves and exits; rerunning the
same command resumes.
"""

from __future__ import annotations

import argparse
import json
import logging
import math
import os
import random
import re
import shutil
import signal
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from tqdm import tqdm
from transformers import AutoModelForCausalLM, AutoTokenizer

from nim4_edge.export.text_pretrain import pretrain_decoder_on_text

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")  # spinning threads slow a shared 2-core machine 3-15x

import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402

from nim4_edge.export.checkpoint import read_checkpoint, write_checkpoint, write_random_decoder  # noqa: E402
from nim4_edge.export.config import preset  # noqa: E402
from nim4_edge.export.model import Nim4AcousticModel  # noqa: E402
from nim4_edge.recipes.demo.encoded import EncodedCache, build_cache  # noqa: E402
from nim4_edge.recipes.demo.text import (  # noqa: E402
    EN_FIRST_GROUPS,
    EN_LAST,
    EN_POI_NAMES,
    EN_POI_TYPES,
    ZH_GROUPS,
    ZH_POI_SUFFIXES,
    ZH_SURNAMES,
    homophone_variant,
    similar_entities,
)
from nim4_edge.runtime.features import Cmvn  # noqa: E402
from nim4_edge.runtime.phonemes import PhonemeInventory  # noqa: E402
from nim4_edge.runtime.prompt import PromptTemplate  # noqa: E402
from nim4_edge.runtime.text import HAN_CHARACTER_CLASS  # noqa: E402

log = logging.getLogger(__name__)

STAGES = ("ctc", "text", "align", "joint", "context", "head")
PREVIOUS = {"align": "text", "joint": "align", "context": "joint", "head": "context"}
ENCODED_VERSIONS = 3  # cached encoder passes: clean + 2 with SpecAugment
ENCODED_DROPOUT = 0.1  # on the cached encoder frames while training: they are the same every epoch
TOKENIZER_VOCAB = 2048
DEPLOYED_CHUNK, DEPLOYED_LEFT = 16, 4


# --- data --------------------------------------------------------------------------------------------

@dataclass
class Corpus:
    features: np.ndarray  # float16 (frames, 80), memory-mapped
    rows: list[dict]
    cmvn: Cmvn

    @classmethod
    def load(cls, directory: Path) -> "Corpus":
        if not (directory / "train" / "index.jsonl").is_file():
            raise SystemExit(f"error: no corpus at {directory}; build it with "
                             f"`python -m nim4_edge.recipes.demo.corpus --out {directory}`")
        rows = [json.loads(line) for line in open(directory / "train" / "index.jsonl", encoding="utf-8")]
        features = np.load(directory / "train" / "features.npy", mmap_mode="r")
        cmvn = Cmvn.from_json(json.loads((directory / "cmvn.json").read_text()))
        return cls(features, rows, cmvn)

    def batches(self, rng: random.Random, max_frames: int):
        """Endless batches of row indices with similar lengths, at most `max_frames` padded frames each."""
        order = list(range(len(self.rows)))
        while True:
            shuffled = order[:]
            rng.shuffle(shuffled)
            # sort within windows of 50 batches' worth: little padding, still random
            window = 2000
            for w in range(0, len(shuffled), window):
                part = sorted(shuffled[w : w + window], key=lambda i: self.rows[i]["frames"][1])
                batches, current, longest = [], [], 0
                for i in part:
                    n = self.rows[i]["frames"][1]
                    if current and max(longest, n) * (len(current) + 1) > max_frames:
                        batches.append(current)
                        current, longest = [], 0
                    current.append(i)
                    longest = max(longest, n)
                if current:
                    batches.append(current)
                rng.shuffle(batches)
                yield from batches

    def features_batch(self, batch: list[int], spec_augment: bool, rng: random.Random):
        lengths = [self.rows[i]["frames"][1] for i in batch]
        x = np.zeros((len(batch), max(lengths), self.features.shape[1]), np.float32)
        for row, i in enumerate(batch):
            start, n = self.rows[i]["frames"]
            x[row, :n] = self.cmvn.apply(np.asarray(self.features[start : start + n], np.float32))
            if spec_augment:  # SpecAugment-style masks (2 in frequency, 2 in time)
                for _ in range(2):
                    w = rng.randint(0, 10)
                    f0 = rng.randint(0, x.shape[2] - w)
                    x[row, :n, f0 : f0 + w] = 0.0
                    w = rng.randint(0, min(20, n // 8))
                    t0 = rng.randint(0, max(0, n - w))
                    x[row, t0 : t0 + w] = 0.0
        return torch.from_numpy(x), torch.tensor(lengths, dtype=torch.int64)


def random_chunking(rng: random.Random) -> tuple[int, int]:
    """Dynamic chunk training: (chunk_frames, left_chunks) for one batch."""
    r = rng.random()
    if r < 0.5:
        return DEPLOYED_CHUNK, DEPLOYED_LEFT
    if r < 0.8:
        return rng.randint(4, 24), rng.choice((-1, 1, 2, 4, 8))
    return -1, -1


def ctc_loss(log_probs: torch.Tensor, frame_lengths: torch.Tensor, rows: list[dict]) -> torch.Tensor:
    """log_probs (B, T', P); mean over the batch of each utterance's CTC loss."""
    targets = [torch.tensor(r["phonemes"], dtype=torch.int64) for r in rows]
    target_lengths = torch.tensor([len(t) for t in targets])
    flat = torch.cat(targets) if targets else torch.zeros(0, dtype=torch.int64)
    return F.ctc_loss(log_probs.transpose(0, 1), flat, frame_lengths, target_lengths,
                      blank=0, reduction="sum", zero_infinity=True) / max(1, len(rows))


# --- decoder side --------------------------------------------------------------------------------------

class PromptBuilder:
    """Token ids of the prompt pieces, and decoder inputs (embeddings + labels) for a batch."""

    def __init__(self, tokenizer):
        self.tokenizer = tokenizer
        self.template = PromptTemplate.from_paper()
        self.prefix = self.ids(self.template.prefix)
        self.im_end = tokenizer.convert_tokens_to_ids("<|im_end|>")
        self.pad = tokenizer.convert_tokens_to_ids("<|endoftext|>")

    def ids(self, text: str) -> list[int]:
        return self.tokenizer(text, add_special_tokens=False)["input_ids"]

    def inputs(self, embed, speech: list[torch.Tensor], texts: list[str], hints: list[list[str]]):
        """Per sample: prefix | speech rows | suffix (with hints) | answer + <|im_end|>. Right-padded.
        Returns inputs_embeds (B, L, D), attention_mask (B, L), labels (B, L) (-100 off the answer)."""
        pieces, labels = [], []
        for rows, text, hint in zip(speech, texts, hints):
            suffix = self.ids(self.template.suffix(hint))
            answer = (self.ids(text) if text else []) + [self.im_end]
            before = torch.tensor(self.prefix)
            after = torch.tensor(suffix + answer)
            x = torch.cat([embed(before), rows, embed(after)])
            y = torch.full((len(x),), -100, dtype=torch.int64)
            y[len(x) - len(answer):] = torch.tensor(answer)
            pieces.append(x)
            labels.append(y)
        width = max(len(p) for p in pieces)
        b, d = len(pieces), pieces[0].shape[1]
        inputs = pieces[0].new_zeros(b, width, d)
        mask = torch.zeros(b, width, dtype=torch.int64)
        label = torch.full((b, width), -100, dtype=torch.int64)
        for i, (p, y) in enumerate(zip(pieces, labels)):
            inputs[i, : len(p)] = p
            mask[i, : len(p)] = 1
            label[i, : len(y)] = y
        return inputs, mask, label


def entity_pools() -> dict[str, list[str]]:
    return {"zh": ["".join(random.Random(i).sample("".join(ZH_GROUPS.values()), 2)) for i in range(50)],
            "en": [f"{g[0]} {last}" for g in EN_FIRST_GROUPS for last in EN_LAST[:3]]}


def draw_hints(row: dict, rng: random.Random, pools: dict) -> list[str]:
    """Hints for context fine-tuning (see the module docstring)."""
    language, entity = row.get("language") or "en", row.get("entity", "")
    if entity:
        r = rng.random()
        distractors = similar_entities(entity, language, rng, rng.randint(0, 3))
        if r < 0.7:
            hints = distractors + [entity]
        elif r < 0.8:
            hints = distractors or similar_entities(entity, language, rng, 1)
        else:
            hints = []
    else:
        hints = [] if rng.random() < 0.5 else rng.sample(pools[language], rng.randint(1, 3))
    rng.shuffle(hints)
    return hints


def hint_copy_sample(row: dict, rng: random.Random, pools: dict):
    """A text-stage sample. Copy task for commands without an entity (random hints half the time). With
    an entity: half the time the slot holds a homophone spelling of it (same sound, other characters)
    while the true entity is among the hints, and the answer is the true transcript: the decoder learns
    to take the spelling from a hint that sounds like the slot; otherwise the hints are distractors
    (different sounds) and the answer copies the slot: hints steer, never force."""
    text, entity, language = row["text"], row.get("entity", ""), row.get("language") or "en"
    if not entity:
        hints = [] if rng.random() < 0.5 else rng.sample(pools[language], rng.randint(1, 3))
        return (text, hints, text)
    distractors = similar_entities(entity, language, rng, rng.randint(0, 2))
    look_alike = homophone_variant(entity, language, rng)
    if look_alike is not None and rng.random() < 0.5:
        hints = distractors + [entity]
        rng.shuffle(hints)
        return (text.replace(entity, look_alike), hints, text)
    return (text, distractors, text)


# --- the stages ------------------------------------------------------------------------------------------

CJK = re.compile(f"([{HAN_CHARACTER_CLASS}])")


def tokenizer_corpus(corpus: Corpus) -> list[str]:
    """Texts for the BPE. Every CJK character is followed by a newline (a pre-token boundary): the BPE
    learns each character as one token and never a merge across characters. Without this it learned
    "呼叫朱" (carrier phrase + surname) as one token, so a name's first character had no token of its
    own in the answer and a different one in the hints; one token per character makes names composable
    and copyable. English keeps ordinary word pieces."""
    texts = [r["text"] for r in corpus.rows if r["text"]]
    # every entity character and word, so that names never seen in training still tokenize to known pieces
    texts += ["".join(ZH_GROUPS.values()) + ZH_SURNAMES + "".join(ZH_POI_SUFFIXES)] * 20
    texts += [" ".join(w for g in EN_FIRST_GROUPS for w in g) + " " + " ".join(EN_LAST + EN_POI_NAMES + EN_POI_TYPES)] * 20
    texts += [PromptTemplate.from_paper().full_text("", ["a"]), "0 1 2 3 4 5 6 7 8 9 10 16 22 30"] * 20
    return [CJK.sub("\\1\n", t) for t in texts]


class Trainer:
    def __init__(self, args):
        self.args = args
        self.work: Path = args.work
        self.stage_dir = self.work / args.stage
        self.stage_dir.mkdir(parents=True, exist_ok=True)
        torch.set_num_threads(args.threads)
        self.rng = random.Random(args.seed)
        torch.manual_seed(args.seed)
        self.corpus = Corpus.load(self.work / "corpus")
        self.stop = False
        signal.signal(signal.SIGINT, self._interrupt)

    def _interrupt(self, *_):
        log.warning("interrupted: saving at the end of this step")
        self.stop = True

    # model set-up ---------------------------------------------------------------------------------

    def load_models(self):
        """(acoustic model, decoder, tokenizer, checkpoint cmvn) of the previous stage's checkpoint."""
        args = self.args
        if args.init is not None:  # fine-tuning: this checkpoint instead of the previous stage's
            ckpt = read_checkpoint(args.init)
            self.corpus.cmvn = ckpt.cmvn  # a model keeps the normalization it was trained with
            model, decoder_dir = ckpt.load_acoustic_model(), ckpt.decoder_dir
            if args.decoder_from is not None:  # adaptor + decoder already fitted to a similar encoder
                other = read_checkpoint(args.decoder_from)
                if (other.decoder_dir / "tokenizer.json").read_bytes() != (decoder_dir / "tokenizer.json").read_bytes():
                    raise SystemExit(f"error: {args.decoder_from} has another tokenizer than {args.init}; "
                                     "--decoder-from needs the same one")
                model.adaptor.load_state_dict(other.load_acoustic_model().adaptor.state_dict())
                decoder_dir = other.decoder_dir
            return (model, AutoModelForCausalLM.from_pretrained(str(decoder_dir), dtype=torch.float32),
                    AutoTokenizer.from_pretrained(str(decoder_dir)))
        if args.decoder_from is not None:
            raise SystemExit("error: --decoder-from goes with --init (the encoder's checkpoint)")
        if args.stage == "ctc":
            inventory = PhonemeInventory.default()
            model = Nim4AcousticModel(preset("demo", len(inventory)).model)
            return model, None, None
        if args.stage == "text":
            return None, None, None
        if args.stage == "align":
            ckpt = read_checkpoint(self.work / "ctc" / "checkpoint")
            text = self.work / "text" / "decoder"
            if not text.is_dir():
                raise SystemExit(f"error: {text} missing; run the `text` stage first")
            decoder_dir = text
        else:
            ckpt = read_checkpoint(self.work / PREVIOUS[args.stage] / "checkpoint")
            decoder_dir = ckpt.decoder_dir
        self.corpus.cmvn = ckpt.cmvn  # the previous stage's (the same as the corpus's, unless it was fine-tuned)
        model = ckpt.load_acoustic_model()
        decoder = AutoModelForCausalLM.from_pretrained(str(decoder_dir), dtype=torch.float32)
        tokenizer = AutoTokenizer.from_pretrained(str(decoder_dir))
        return model, decoder, tokenizer

    def run(self):
        args = self.args
        if args.stage == "text":
            return self.run_text()
        model, decoder, tokenizer = self.load_models()
        builder = PromptBuilder(tokenizer) if tokenizer is not None else None
        trainable = self.trainable(model, decoder)
        log.info("%s: %.2fM trainable parameters", args.stage, sum(p.numel() for p in trainable) / 1e6)
        optimizer = torch.optim.AdamW(trainable, lr=args.lr, weight_decay=0.01)
        step = self.resume(model, decoder, optimizer)
        if args.snapshot:  # a checkpoint of the last saved state, to evaluate while training goes on
            if step == 0:
                raise SystemExit(f"error: no saved state in {self.stage_dir}; start the {args.stage} stage first")
            write_checkpoint(args.snapshot, model.eval(), self.corpus.cmvn, decoder, tokenizer, overwrite=True,
                             metadata={"stage": args.stage, "steps": str(step)})
            log.info("wrote %s (step %d)", args.snapshot, step)
            return 0
        self.cache = self.encoder_cache(model) if args.stage != "ctc" else None
        pools = entity_pools()
        batches = self.corpus.batches(self.rng, args.max_frames)
        for _ in range(step):  # same batch order after a resume (cheap: indices only)
            next(batches)

        bar = tqdm(total=args.steps, initial=step, desc=args.stage, file=sys.stderr, mininterval=10)
        smooth = None
        t0 = time.perf_counter()
        while step < args.steps and not self.stop:
            batch = next(batches)
            for group in optimizer.param_groups:
                group["lr"] = args.lr * schedule(step, args.steps, args.warmup)
            loss, parts = self.loss(model, decoder, builder, batch, pools)
            optimizer.zero_grad()
            loss.backward()
            torch.nn.utils.clip_grad_norm_(trainable, 5.0)
            optimizer.step()
            step += 1
            smooth = loss.item() if smooth is None else 0.98 * smooth + 0.02 * loss.item()
            bar.update(1)
            bar.set_postfix(loss=f"{smooth:.3f}", **{k: f"{v:.3f}" for k, v in parts.items()}, refresh=False)
            if step % args.save_every == 0:
                self.save_state(model, decoder, optimizer, step)
        bar.close()
        self.save_state(model, decoder, optimizer, step)
        log.info("%s: step %d, smoothed loss %.4f, %.0f s this run", args.stage, step, smooth or float("nan"),
                 time.perf_counter() - t0)
        if step >= args.steps:
            cmvn = self.corpus.cmvn
            if decoder is None:  # ctc: a checkpoint needs a decoder folder; the text stage makes the real one
                decoder_dir = self.work / "text" / "decoder"
                if not decoder_dir.is_dir():
                    self.make_text_decoder(decoder_dir)

                decoder = AutoModelForCausalLM.from_pretrained(str(decoder_dir), dtype=torch.float32)
                tokenizer = AutoTokenizer.from_pretrained(str(decoder_dir))
            write_checkpoint(self.stage_dir / "checkpoint", model.eval(), cmvn, decoder, tokenizer, overwrite=True,
                             metadata={"stage": args.stage, "steps": str(step)})
            (self.stage_dir / "done.json").write_text(json.dumps({"stage": args.stage, "steps": step,
                                                                  "loss": smooth}) + "\n")
            log.info("wrote %s", self.stage_dir / "checkpoint")
        return 0

    def encoder_cache(self, model) -> EncodedCache:
        done = self.work / "ctc" / "done.json"
        source = json.loads(done.read_text()) if done.is_file() else {}
        return build_cache(self.work / "encoded", self.corpus, model, source, DEPLOYED_CHUNK, DEPLOYED_LEFT,
                           ENCODED_VERSIONS, seed=self.args.seed)

    def trainable(self, model, decoder) -> list:
        stage = self.args.stage
        for p in model.parameters():
            p.requires_grad_(stage == "ctc")
        if decoder is not None:
            for p in decoder.parameters():
                p.requires_grad_(stage in ("joint", "context"))
        for p in model.adaptor.parameters():
            p.requires_grad_(stage in ("align", "joint", "context"))
        for p in model.phoneme_head.parameters():
            p.requires_grad_(stage in ("ctc", "head"))
        params = [p for p in model.parameters() if p.requires_grad]
        if decoder is not None:
            params += [p for p in decoder.parameters() if p.requires_grad]
        model.train(stage == "ctc")
        model.adaptor.train(stage not in ("ctc", "head"))
        model.phoneme_head.train(stage in ("ctc", "head"))
        if decoder is not None:
            decoder.train(stage in ("joint", "context"))
        return params

    def loss(self, model, decoder, builder, batch, pools):
        args, rows = self.args, [self.corpus.rows[i] for i in batch]
        if args.stage == "ctc":
            feats, lengths = self.corpus.features_batch(batch, spec_augment=True, rng=self.rng)
            chunk, left = random_chunking(self.rng)
            out = model(feats, lengths, chunk, left)
            return ctc_loss(out.phoneme_log_probs, out.frame_lengths, rows), {}
        encoded, enc_lengths = self.cache.batch(batch, self.rng, augment=True)
        if args.stage == "head":
            return ctc_loss(model.phoneme_head(encoded), enc_lengths, rows), {}
        encoded = F.dropout(encoded, ENCODED_DROPOUT)
        embeddings, emb_lengths = model.adaptor(encoded, enc_lengths)
        speech = [embeddings[i, : emb_lengths[i]] for i in range(len(rows))]
        hints = [draw_hints(r, self.rng, pools) if args.stage == "context" else [] for r in rows]
        inputs, mask, labels = builder.inputs(decoder.get_input_embeddings(), speech, [r["text"] for r in rows], hints)
        ce = decoder(inputs_embeds=inputs, attention_mask=mask, labels=labels).loss
        return ce, {}

    # text stage -------------------------------------------------------------------------------------------

    def make_text_decoder(self, directory: Path) -> None:
        inventory = PhonemeInventory.default()
        shape = preset("demo", len(inventory)).decoder
        tmp = directory.with_name(directory.name + ".tmp")
        tmp.parent.mkdir(parents=True, exist_ok=True)
        if tmp.exists():
            shutil.rmtree(tmp)
        write_random_decoder(tmp, shape, self.args.seed, corpus=tokenizer_corpus(self.corpus),
                             tokenizer_vocab=TOKENIZER_VOCAB)
        tmp.rename(directory)

    def run_text(self):
        args = self.args
        directory = self.stage_dir / "decoder"
        if (self.stage_dir / "done.json").is_file():
            log.info("text stage already done (%s)", directory)
            return 0
        if not directory.is_dir():
            self.make_text_decoder(directory)
        rng, pools = random.Random(args.seed), entity_pools()
        texts = [hint_copy_sample(r, rng, pools) for r in self.corpus.rows if r["text"] and r["source"] == "espeak"]
        result = pretrain_decoder_on_text(directory, texts, steps=args.steps, batch_size=32, lr=args.lr,
                                          seed=args.seed, threads=args.threads)
        (self.stage_dir / "done.json").write_text(json.dumps({"stage": "text", **result}) + "\n")
        log.info("text stage: %s", result)
        return 0

    # resume ------------------------------------------------------------------------------------------------

    def save_state(self, model, decoder, optimizer, step: int) -> None:
        state = {"step": step, "model": model.state_dict(), "optimizer": optimizer.state_dict(),
                 "rng": self.rng.getstate(), "torch_rng": torch.get_rng_state()}
        if decoder is not None:
            state["decoder"] = decoder.state_dict()
        tmp = self.stage_dir / "state.pt.tmp"
        torch.save(state, tmp)
        tmp.replace(self.stage_dir / "state.pt")

    def resume(self, model, decoder, optimizer) -> int:
        path = self.stage_dir / "state.pt"
        if not path.is_file():
            return 0
        state = torch.load(path, weights_only=False)
        model.load_state_dict(state["model"])
        if decoder is not None:
            decoder.load_state_dict(state["decoder"])
        optimizer.load_state_dict(state["optimizer"])
        self.rng.setstate(state["rng"])
        torch.set_rng_state(state["torch_rng"])
        log.info("resumed %s at step %d", self.args.stage, state["step"])
        return int(state["step"])


def schedule(step: int, total: int, warmup: int) -> float:
    """Linear warm-up, then cosine decay to 5%."""
    if step < warmup:
        return (step + 1) / warmup
    progress = min(1.0, (step - warmup) / max(1, total - warmup))
    return 0.05 + 0.95 * 0.5 * (1 + math.cos(math.pi * progress))


DEFAULTS = {  # steps, peak lr, warmup, max padded fbank frames per batch: the settings of run.sh
    "ctc": (15000, 1e-3, 600, 3000),
    "text": (1500, 3e-3, 0, 0),
    "align": (800, 2e-3, 100, 16000),
    "joint": (2400, 1e-3, 100, 16000),
    "context": (2000, 1e-3, 100, 16000),
    "head": (6000, 3e-4, 0, 16000),
}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m nim4_edge.recipes.demo.train", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("stage", choices=STAGES)
    p.add_argument("--work", type=Path, default=Path("work/demo"), help="work directory (corpus/ inside)")
    p.add_argument("--steps", type=int, help="total steps of this stage (default per stage)")
    p.add_argument("--lr", type=float, help="peak learning rate (default per stage)")
    p.add_argument("--warmup", type=int)
    p.add_argument("--max-frames", type=int, help="padded fbank frames per batch (default per stage)")
    p.add_argument("--save-every", type=int, default=200)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--init", type=Path, metavar="CHECKPOINT",
                   help="start from this checkpoint instead of the previous stage's (e.g. the shipped model, "
                        "`nim4-edge import bundle runtime/demo_bundle -o CKPT`): the stage fine-tunes it")
    p.add_argument("--decoder-from", type=Path, metavar="CHECKPOINT",
                   help="with --init: the adaptor and decoder from this checkpoint instead (e.g. a fine-tuned "
                        "model's, when the encoder of --init was trained further); tokenizers must agree")
    p.add_argument("--snapshot", type=Path, metavar="DIR",
                   help="write a checkpoint of the stage's last saved state (state.pt) to DIR and exit; "
                        "safe while the stage trains in another process")
    args = p.parse_args(argv)
    steps, lr, warmup, frames = DEFAULTS[args.stage]
    args.steps = args.steps or steps
    args.lr = args.lr or lr
    args.warmup = warmup if args.warmup is None else args.warmup
    args.max_frames = args.max_frames or frames
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s", datefmt="%H:%M:%S")
    log.info("stage %s: %s", args.stage, {k: v for k, v in vars(args).items() if k != "stage"})
    return Trainer(args).run()


if __name__ == "__main__":
    sys.exit(main())
