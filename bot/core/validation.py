"""Bot-side checks on text members type: visible content and plain ASCII numbers (a later shared prompt
normaliser may absorb this module)."""

from __future__ import annotations

import logging
import re
import unicodedata

from bot.core.errors import InvalidInput

log = logging.getLogger(__name__)

# Categories that draw nothing on their own: separators, controls, format characters (zero-width
# space/joiners, bidi marks, the BOM), unassigned and private-use code points, and combining marks.
INVISIBLE_CATEGORIES = frozenset({"Zs", "Zl", "Zp", "Cc", "Cf", "Cn", "Co", "Cs", "Mn", "Me"})
# Letters and symbols that Discord renders as blank space (Hangul fillers, the blank Braille cell).
BLANK_CHARACTERS = frozenset("\u115f\u1160\u3164\uffa0\u2800")
ASCII_NUMBER = re.compile(r"[0-9]{1,6}")


def is_visible(char: str) -> bool:
    return char not in BLANK_CHARACTERS and unicodedata.category(char) not in INVISIBLE_CATEGORIES


def has_visible_text(text: str) -> bool:
    """Whether the text would show anything: zero-width, blank and combining-only strings do not."""
    return any(is_visible(c) for c in text)


def require_visible(text: str, what: str = "prompt") -> str:
    """The text, or a refusal when nothing in it would be visible (so nothing invisible is run or charged)."""
    if not has_visible_text(text):
        raise InvalidInput(f"The {what} is empty: describe what you want to see.")
    return text


def parse_number(text: str, low: int, high: int, what: str) -> int:
    """A whole number typed in a modal, in ASCII digits between low and high.

    `str.isdigit` accepts `²` and other digits `int()` refuses, so the pattern is explicit.
    """
    stripped = text.strip()
    if ASCII_NUMBER.fullmatch(stripped) is None or not low <= int(stripped) <= high:
        raise InvalidInput(f"The {what} must be a whole number between {low} and {high}.")
    return int(stripped)
