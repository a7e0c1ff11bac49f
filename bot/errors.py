"""How user-facing errors are shown on Discord: the command tree that answers every error ephemerally, with a reference id."""

from __future__ import annotations

import contextlib
import logging
import math
import secrets
import time

import discord
from discord import app_commands

from bot.checks import AdminOnly, gate_of
from bot.core.errors import BrushfireError
from bot.core.i18n import LocalisedError
from bot.i18n import ENGLISH, Translate
from bot.translator import translate_for

log = logging.getLogger(__name__)


def new_reference() -> str:
    """A short id shown to the user and written to the log, to find an unexpected error again."""
    return secrets.token_hex(4)


class Refused(app_commands.CheckFailure):
    """A core refusal from the tree's `interaction_check`, before any command ran. discord.py hands only
    `AppCommandError`s to `on_error` from there, so the `BrushfireError` travels as this error's cause."""


def user_message(error: BaseException, _: Translate = ENGLISH) -> tuple[str, bool]:
    """The text to show for an error, in the reader's language, and whether it was expected.

    Unexpected errors are logged here with a reference id that the message repeats.
    """
    if isinstance(error, app_commands.CommandInvokeError | app_commands.TransformerError | Refused):
        error = error.__cause__ or error
    if isinstance(error, LocalisedError | AdminOnly):  # BrushfireError and the quota errors
        return _.message(error.text), True
    if isinstance(error, app_commands.MissingPermissions | app_commands.CheckFailure):
        return _("You are not allowed to use this command here."), True
    if isinstance(error, app_commands.CommandOnCooldown):
        at = math.ceil(time.time() + error.retry_after)
        return _("Slow down: try again <t:{at}:R>.", at=at), True
    ref = new_reference()
    log.error("unexpected error (ref %s)", ref, exc_info=error)
    text = _("Something went wrong on our side (reference `{ref}`). Nothing was charged for it.", ref=ref)
    return text, False


async def answer_error(interaction: discord.Interaction, error: BaseException) -> None:
    """Tell the user about an error ephemerally, whether or not the interaction was answered already.

    A deferred, public "thinking" placeholder is deleted first: otherwise Discord would turn the first
    follow-up into that public message and the refusal would not be ephemeral.
    """
    text, _expected = user_message(error, translate_for(interaction))
    try:
        if not interaction.response.is_done():
            await interaction.response.send_message(text, ephemeral=True)
            return
        if interaction.response.type is discord.InteractionResponseType.deferred_channel_message:
            with contextlib.suppress(discord.HTTPException):
                await interaction.delete_original_response()
        await interaction.followup.send(text, ephemeral=True)
    except discord.HTTPException as exc:  # the token expired or the channel is gone: the log has it
        log.warning("could not tell user %s about an error: %s", interaction.user.id, exc)


class BrushfireTree(app_commands.CommandTree):
    """The command tree: cheap rules are checked before any command runs (so a refusal is ephemeral and
    nothing public appears first), and every command error is answered ephemerally by `answer_error`."""

    async def interaction_check(self, interaction: discord.Interaction) -> bool:
        gate = gate_of(interaction)
        if gate is not None:
            try:
                await interaction.client.gate.admit(interaction, gate)  # type: ignore[attr-defined]
            except BrushfireError as exc:
                raise Refused(exc.message) from exc
        return True

    async def on_error(self, interaction: discord.Interaction, error: app_commands.AppCommandError) -> None:
        await answer_error(interaction, error)
