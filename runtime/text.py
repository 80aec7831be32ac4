"""Text facts shared by the lexicon, respelling and scoring: one definition of what a Han character is."""

from __future__ import annotations

import re

# CJK Unified Ideographs Extension A, the basic block and the compatibility ideographs: every
# character pypinyin reads in an in-car command (Unicode 15 blocks U+3400, U+4E00, U+F900).
HAN_CHARACTER_CLASS = "\u3400-\u4dbf\u4e00-\u9fff\uf900-\ufaff"
HAN_CHARACTER = re.compile(f"[{HAN_CHARACTER_CLASS}]")


def has_han(text: str) -> bool:
    """True when `text` contains at least one Han character."""
    return HAN_CHARACTER.search(text) is not None
