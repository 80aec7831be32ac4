"""Brief text-only training of a checkpoint's Qwen3 decoder, with the recognition prompt.

Each sample is the prompt with a transcript in the speech slot and the same transcript as the answer:
a copy task that stands in for recognition until there is speech to train on. Quantization quality
can only be judged on a model whose output distributions are peaked like a trained one's (random
weights exaggerate flips, docs/FACTS.md); this gives a tiny decoder that property in about a minute.
"""

from __future__ import annotations

import logging
import random
import time
from pathlib import Path

import torch
from transformers import AutoModelForCausalLM, AutoTokenizer

from nim4_edge.runtime.prompt import PromptTemplate

log = logging.getLogger(__name__)

_PLACES_EN = ("the airport", "central station", "the nearest charging station", "home", "the office", "city hall")
_NAMES_EN = ("mom", "dad", "Alice", "Bob", "doctor Chen", "the garage")
_PLACES_ZH = ("机场", "火车站", "最近的充电站", "公司", "惠新西街", "朝阳公园")
_NAMES_ZH = ("妈妈", "爸爸", "张伟", "李娜", "王医生")
_NUMBERS_EN = ("one", "two", "three", "five", "seven", "ten", "twenty", "twenty two")
_NUMBERS_ZH = ("一", "二", "三", "五", "七", "十", "二十", "二十二")


def example_commands(count: int, seed: int = 0) -> list[str]:
    """In-car requests in English and Mandarin from a few templates (for decoder smoke training)."""
    rng = random.Random(seed)
    makers = (
        lambda: f"navigate to {rng.choice(_PLACES_EN)}",
        lambda: f"call {rng.choice(_NAMES_EN)}",
        lambda: f"set the temperature to {rng.choice(_NUMBERS_EN)} degrees",
        lambda: f"turn the volume up to {rng.choice(_NUMBERS_EN)}",
        lambda: f"导航到{rng.choice(_PLACES_ZH)}",
        lambda: f"打电话给{rng.choice(_NAMES_ZH)}",
        lambda: f"把温度调到{rng.choice(_NUMBERS_ZH)}度",
        lambda: rng.choice(("yes", "no", "cancel", "好的", "取消", "打开车窗")),
    )
    return [rng.choice(makers)() for _ in range(count)]


def pretrain_decoder_on_text(decoder_dir: Path, texts: list, steps: int = 300, batch_size: int = 16,
                             lr: float = 3e-3, seed: int = 0, threads: int = 2) -> dict:
    """Train the HF Qwen3 in `decoder_dir` in place (float32) on the copy task. Returns the losses.

    Each item of `texts` is a transcript (copied: it fills the speech slot and is the answer) or a
    (slot text, hotword hints, answer) triple, which lets a recipe teach the decoder to take a name
    from the hints when the slot only sounds like it (recipes/demo/train.py)."""
    torch.manual_seed(seed)
    torch.set_num_threads(threads)
    prompt = PromptTemplate.from_paper()
    tokenizer = AutoTokenizer.from_pretrained(str(decoder_dir))
    model = AutoModelForCausalLM.from_pretrained(str(decoder_dir), dtype=torch.float32)
    model.train()
    im_end = tokenizer.convert_tokens_to_ids("<|im_end|>")
    pad = tokenizer.convert_tokens_to_ids("<|endoftext|>")
    samples = []
    for item in texts:
        slot, hints, text = (item, (), item) if isinstance(item, str) else item
        # prompt and answer tokenized apart, as the runtime feeds them
        answer_ids = tokenizer(text, add_special_tokens=False)["input_ids"] + [im_end] if text else [im_end]
        ids = tokenizer(prompt.full_text(slot, list(hints)), add_special_tokens=False)["input_ids"] + answer_ids
        samples.append((ids, len(answer_ids)))
    optimizer = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=0.0)
    rng = random.Random(seed)
    losses = []
    t0 = time.perf_counter()
    for step in range(steps):
        batch = [samples[rng.randrange(len(samples))] for _ in range(batch_size)]
        width = max(len(ids) for ids, _ in batch)
        input_ids = torch.full((batch_size, width), pad)
        labels = torch.full((batch_size, width), -100)
        for row, (ids, answer) in enumerate(batch):
            input_ids[row, : len(ids)] = torch.tensor(ids)
            labels[row, len(ids) - answer : len(ids)] = torch.tensor(ids[-answer:])  # loss on the answer only
        loss = model(input_ids=input_ids, labels=labels).loss
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
        if step % 50 == 0:
            log.info("step %d loss %.3f", step, losses[-1])
    model.save_pretrained(str(decoder_dir))
    return {"steps": steps, "first_loss": losses[0], "last_loss": sum(losses[-10:]) / min(10, len(losses)),
            "seconds": time.perf_counter() - t0}
