"""Prompt text rules shared by the RPC and the bot: one normalisation, one visibility test, one length limit.

Both the worker (`inference.protocol`) and the bot's planner import this module; it needs nothing but the
standard library, so any layer may use it.
"""

from __future__ import annotations

import unicodedata

MAX_PROMPT_CHARS = 1000  # the one prompt limit: the RPC, the bot and the slash commands all use it

# Letters and symbols that render as nothing (Hangul fillers, the braille blank, Khmer inherent vowels);
# Unicode files them as visible characters, so a category test alone lets them through.
_BLANK_GRAPHICS = frozenset("\u115f\u1160\u3164\uffa0\u2800\u17b4\u17b5")
# Format characters that carry meaning between visible ones (emoji sequences, Persian and Indic shaping).
_JOINERS = frozenset("\u200c\u200d")
_VISIBLE_CATEGORIES = frozenset("LNPS")  # letters, numbers, punctuation, symbols: the first letter of each


def normalize_prompt(text: str) -> str:
    """The prompt as it is stored, shown and sent to the model.

    NFC-composed; control and format characters (zero-width spaces, word joiners, byte-order marks, bidi
    overrides, lone surrogates) removed, except joiners inside a word; runs of whitespace collapsed to
    one space; trimmed. The result may be empty: `is_visible` tells whether anything is left to draw.
    """
    if text.isascii() and text.isprintable():  # the common case: nothing to compose or drop
        return " ".join(text.split())
    return _normalize_any(text)


def _normalize_any(text: str) -> str:
    kept: list[str] = []
    for ch in unicodedata.normalize("NFC", _drop_surrogates(text)):
        category = unicodedata.category(ch)
        if category == "Cc":
            kept.append(" ")  # a tab or newline still separates words
        elif category == "Cf" and ch not in _JOINERS:
            continue
        else:
            kept.append(ch)
    words = (w.strip("".join(_JOINERS)) for w in "".join(kept).split())
    return " ".join(w for w in words if w)


def is_visible(text: str) -> bool:
    """Whether the text holds at least one character that renders as something."""
    return any(
        unicodedata.category(ch)[0] in _VISIBLE_CATEGORIES and ch not in _BLANK_GRAPHICS for ch in text
    )


def _drop_surrogates(text: str) -> str:
    # Lone surrogates (from JSON "\ud800" escapes) cannot be encoded as UTF-8 anywhere downstream.
    return text.encode("utf-8", "surrogatepass").decode("utf-8", "ignore") if _has_surrogate(text) else text


def _has_surrogate(text: str) -> bool:
    return any("\ud800" <= ch <= "\udfff" for ch in text)
