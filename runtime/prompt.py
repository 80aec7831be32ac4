"""The decoder prompt (NIM4-ASR paper template) split around `<speech>`, and the hotword hints.

    <|im_start|>system
    You are a Multilingual Speech Recognition Model.<|im_end|>
    <|im_start|>user
    Transcribe the speech into text <speech>.
    Contextual hints: {context}.<|im_end|>
    <|im_start|>assistant

Everything before `<speech>` is the static prefix, decoded once and cached. The speech embeddings go
where `<speech>` stands; the suffix follows at the end of the utterance.

Our decisions (the paper does not state them), recorded in the manifest so training and runtime agree:
hotwords are joined with ", "; with no hotword the whole "Contextual hints" line is left out.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

SPEECH_PLACEHOLDER = "<speech>"
CONTEXT_PLACEHOLDER = "{context}"

PAPER_TEMPLATE = (
    "<|im_start|>system\nYou are a Multilingual Speech Recognition Model.<|im_end|>\n"
    "<|im_start|>user\nTranscribe the speech into text <speech>.\n"
    "Contextual hints: {context}.<|im_end|>\n<|im_start|>assistant\n"
)


@dataclass(frozen=True)
class PromptTemplate:
    prefix: str  # text before the speech embeddings (static, cached)
    suffix_with_hotwords: str  # text after them; CONTEXT_PLACEHOLDER marks where hotwords go
    suffix_without_hotwords: str  # text after them when nothing was retrieved
    hotword_separator: str = ", "

    def __post_init__(self) -> None:
        if CONTEXT_PLACEHOLDER not in self.suffix_with_hotwords:
            raise ValueError(f"suffix_with_hotwords must contain {CONTEXT_PLACEHOLDER}")

    @classmethod
    def from_paper(cls) -> "PromptTemplate":
        prefix, suffix = PAPER_TEMPLATE.split(SPEECH_PLACEHOLDER)
        hints_line = "\nContextual hints: {context}."
        return cls(prefix=prefix, suffix_with_hotwords=suffix, suffix_without_hotwords=suffix.replace(hints_line, ""))

    def suffix(self, hotwords: tuple[str, ...] | list[str] = ()) -> str:
        if not hotwords:
            return self.suffix_without_hotwords
        # str.replace, not str.format: a hotword may contain braces.
        return self.suffix_with_hotwords.replace(CONTEXT_PLACEHOLDER, self.hotword_separator.join(hotwords))

    def full_text(self, speech_text: str, hotwords: tuple[str, ...] | list[str] = ()) -> str:
        """The prompt with text in place of the speech (for text-only training and diagnostics)."""
        return self.prefix + speech_text + self.suffix(hotwords)

    def to_json(self) -> dict:
        return asdict(self)

    @classmethod
    def from_json(cls, data: dict) -> "PromptTemplate":
        return cls(**data)


@dataclass(frozen=True)
class ContextFirstPrompt:
    """A chat prompt whose context slot comes before the audio (Qwen3-ASR's: the system turn).

        <|im_start|>system
        {context}<|im_end|>
        <|im_start|>user
        <|audio_start|> speech embeddings <|audio_end|><|im_end|>
        <|im_start|>assistant
        [language English<asr_text>]   (the answer's own head; the model writes it when not forced)

    The hotword context changes the prefix, so unlike PromptTemplate a prefix with hints cannot be
    cached across utterances: the decoder re-reads the audio after a context that changed.
    """

    prefix_with_context: str  # CONTEXT_PLACEHOLDER marks where hotwords go
    suffix_text: str  # after the speech embeddings, up to the assistant's turn
    answer_marker: str  # the model writes "language X" + this, then the transcript
    forced_answer: str  # with "{language}": what forcing a language prefills (the official code's)
    hotword_separator: str = ", "
    kind: str = "context-first"

    def __post_init__(self) -> None:
        if CONTEXT_PLACEHOLDER not in self.prefix_with_context:
            raise ValueError(f"prefix_with_context must contain {CONTEXT_PLACEHOLDER}")

    @property
    def prefix(self) -> str:
        """The prefix with an empty context (cached; what an utterance without hotwords reads)."""
        return self.prefix_for(())

    def prefix_for(self, hotwords: tuple[str, ...] | list[str] = ()) -> str:
        return self.prefix_with_context.replace(CONTEXT_PLACEHOLDER, self.hotword_separator.join(hotwords))

    def suffix(self, hotwords: tuple[str, ...] | list[str] = ()) -> str:
        """The text after the speech: the same with or without hotwords (they went into the prefix)."""
        return self.suffix_text

    def transcript(self, answer: str) -> tuple[str | None, str]:
        """(language or None, transcript) of a decoded answer "language X<asr_text>text"."""
        head, marker, text = answer.partition(self.answer_marker)
        if not marker:
            return None, answer.strip()
        head = head.strip()
        language = head[len("language "):].strip() if head.lower().startswith("language ") else head
        return (None if language.lower() in ("", "none") else language), text.strip()

    def full_text(self, speech_text: str, hotwords: tuple[str, ...] | list[str] = ()) -> str:
        return self.prefix_for(hotwords) + speech_text + self.suffix_text

    def to_json(self) -> dict:
        return asdict(self)

    @classmethod
    def from_json(cls, data: dict) -> "ContextFirstPrompt":
        return cls(**data)


def prompt_from_json(data: dict) -> "PromptTemplate | ContextFirstPrompt":
    """The manifest's prompt: a ContextFirstPrompt when it says so, else the NIM4 template (older
    manifests have no "kind")."""
    if data.get("kind") == ContextFirstPrompt.kind:
        return ContextFirstPrompt.from_json(data)
    return PromptTemplate.from_json(data)
