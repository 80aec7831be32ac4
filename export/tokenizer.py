"""Byte-level BPE tokenizers in the Qwen2/Qwen3 format, trained here (no tokenizer can be downloaded).

The pre-tokenizer is Qwen2's split regex followed by byte-level mapping, which is what llama.cpp
reproduces for `tokenizer.ggml.pre = "qwen2"`. Special tokens follow the regular vocabulary, as in
Qwen: `<|endoftext|>`, `<|im_start|>`, `<|im_end|>`.
"""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path

from tokenizers import Regex, Tokenizer, decoders, models, pre_tokenizers, trainers
from transformers import PreTrainedTokenizerFast

ENDOFTEXT = "<|endoftext|>"
IM_START = "<|im_start|>"
IM_END = "<|im_end|>"
SPECIAL_TOKENS = (ENDOFTEXT, IM_START, IM_END)

# Qwen2's pre-tokenizer split pattern (from its published tokenizer.json): contractions, letter runs
# with one leading non-letter, single digits, punctuation runs, newlines, whitespace.
QWEN2_SPLIT_PATTERN = (
    r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*"
    r"|\s*[\r\n]+|\s+(?!\S)|\s+"
)

# A small built-in corpus for `nim4-edge init`: the prompt template and in-car phrases in English and
# Mandarin. The demo recipe trains its tokenizer on its own transcripts instead.
DEFAULT_CORPUS = (
    "<|im_start|>system\nYou are a Multilingual Speech Recognition Model.<|im_end|>\n"
    "<|im_start|>user\nTranscribe the speech into text.\nContextual hints: .<|im_end|>\n"
    "<|im_start|>assistant\n",
    "navigate to the nearest charging station",
    "call mom on her mobile phone",
    "play the next song by the artist",
    "set the temperature to twenty two degrees",
    "open the driver window halfway",
    "turn the volume up to seven",
    "turn on seat heating for the passenger",
    "yes no cancel confirm okay stop",
    "zero one two three four five six seven eight nine ten eleven twelve twenty thirty hundred",
    "0 1 2 3 4 5 6 7 8 9 10 25 100",
    "导航到最近的充电站",
    "打电话给妈妈",
    "播放下一首歌",
    "把空调温度调到二十二度",
    "打开主驾车窗",
    "音量调到七",
    "打开副驾座椅加热",
    "是的 不 取消 确认 好的 停止",
    "零 一 二 三 四 五 六 七 八 九 十 百",
)


def train_bpe_tokenizer(texts: Iterable[str], vocab_size: int):
    """Train a byte-level BPE on `texts`; special tokens are appended after the learned vocabulary.

    Returns a `tokenizers.Tokenizer`.
    """
    tokenizer = Tokenizer(models.BPE())
    tokenizer.pre_tokenizer = pre_tokenizers.Sequence(
        [
            pre_tokenizers.Split(Regex(QWEN2_SPLIT_PATTERN), behavior="isolated"),
            pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False),
        ]
    )
    tokenizer.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size - len(SPECIAL_TOKENS),
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tokenizer.train_from_iterator(texts, trainer)
    tokenizer.add_special_tokens(list(SPECIAL_TOKENS))
    return tokenizer


def save_hf_tokenizer(tokenizer, directory: Path) -> None:
    """Write tokenizer.json + tokenizer_config.json as a Qwen3 HF folder expects them."""
    hf = PreTrainedTokenizerFast(
        tokenizer_object=tokenizer,
        eos_token=IM_END,
        pad_token=ENDOFTEXT,
        additional_special_tokens=[IM_START, IM_END],
        clean_up_tokenization_spaces=False,
    )
    hf.save_pretrained(str(directory))
