"""Bot-side checks on text members type: visible content (by the worker's own rule) and plain ASCII numbers."""

from __future__ import annotations

import logging
import re

from bot.core.errors import InvalidInput
from bot.core.i18n import N_, Message
from inference.text import is_visible

log = logging.getLogger(__name__)

ASCII_NUMBER = re.compile(r"[0-9]{1,6}")


def has_visible_text(text: str) -> bool:
    """Whether the text would show anything: zero-width, blank and combining-only strings do not.

    The one rule of what is visible is `inference.text.is_visible`, which the worker applies too.
    """
    return is_visible(text)


def require_visible(text: str, what: str = N_("The prompt")) -> str:
    """The text, or a refusal when nothing in it would be visible (so nothing invisible is run or charged)."""
    if not has_visible_text(text):
        raise InvalidInput(
            N_("{what} is empty (nothing visible in it): describe what you want to see."), what=Message(what)
        )
    return text


def parse_number(text: str, low: int, high: int, what: str) -> int:
    """A whole number typed in a modal, in ASCII digits between low and high.

    `str.isdigit` accepts `²` and other digits `int()` refuses, so the pattern is explicit.
    """
    stripped = text.strip()
    if ASCII_NUMBER.fullmatch(stripped) is None or not low <= int(stripped) <= high:
        raise InvalidInput(
            N_("{what} must be a whole number between {low} and {high}."),
            what=Message(what),
            low=low,
            high=high,
        )
    return int(stripped)
