"""The pieces every brushfire component shares: custom_id templates, a button maker and the error guard."""

from __future__ import annotations

from collections.abc import Awaitable
from typing import Any

import discord
from discord import ui

from bot.errors import answer_error

PREFIX = "brushfire"
JOB_RE = r"(?P<job>[0-9a-f]{32})"
INDEX_RE = r"(?P<n>[0-9])"
BUTTONS_PER_ROW = 5


def custom_id(action: str, job_id: str, index: int | None = None) -> str:
    """`brushfire:<action>:<job id>[:<image index>]`, well under Discord's 100 characters."""
    return f"{PREFIX}:{action}:{job_id}" + (f":{index}" if index is not None else "")


def button(
    action: str,
    job_id: str,
    index: int | None = None,
    *,
    label: str,
    style: discord.ButtonStyle,
    emoji: str | None = None,
    row: int | None = None,
) -> ui.Button[Any]:
    return ui.Button(
        label=label, style=style, emoji=emoji, custom_id=custom_id(action, job_id, index), row=row
    )


async def guarded(interaction: discord.Interaction, work: Awaitable[None]) -> None:
    """Run a button's or modal's work; errors there never reach the tree's on_error, so answer here."""
    try:
        await work
    except Exception as exc:
        await answer_error(interaction, exc)
