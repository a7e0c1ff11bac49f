"""Showing what members typed inside the bot's own messages: shown as text, never obeyed as markup or mentions."""

from __future__ import annotations

import logging

import discord

log = logging.getLogger(__name__)

ELLIPSIS = "…"


def shown(text: str, limit: int | None = None) -> str:
    """`text` with its markdown and mentions escaped, clipped to `limit` characters after escaping.

    A clip never ends in a lone backslash, which would escape the ellipsis instead.
    """
    escaped = discord.utils.escape_mentions(discord.utils.escape_markdown(text, as_needed=False))
    if limit is None or len(escaped) <= limit:
        return escaped
    return escaped[: limit - 1].rstrip("\\") + ELLIPSIS
