"""User-facing errors and the command tree that answers every error ephemerally, with a reference id."""

from __future__ import annotations

import contextlib
import logging
import math
import secrets
import time

import discord
from discord import app_commands

log = logging.getLogger(__name__)


class BrushfireError(app_commands.AppCommandError):
    """The root of every error whose message is written for the person who ran the command.

    Subclassing `AppCommandError` lets a command raise it directly: discord.py hands it to the tree's
    `on_error` unwrapped. Nothing is charged when one of these is raised before the job is submitted.
    """

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


class InvalidInput(BrushfireError):
    """A prompt, seed, count, strength or option the user typed is out of bounds."""


class BlockedContent(BrushfireError):
    """The prompt matches one of the server's blocked words or patterns."""


class UnknownStyle(BrushfireError):
    """The style named is not one of the presets."""


class BadAttachment(BrushfireError):
    """An attachment that is not a usable PNG, JPEG or WebP image, or is over the limits."""


class ChannelNotAllowed(BrushfireError):
    """The server limits brushfire to some channels and this is not one of them."""


class NotPermitted(BrushfireError):
    """The user may not do this (an admin command, or a button on someone else's job)."""


class QuotaRefused(BrushfireError):
    """Not enough credits (the message says what is left and when the next returns), or blocked."""


class WorkerDown(BrushfireError):
    """The inference worker cannot be reached or refused the job; the reservation is refunded."""


class JobNotFound(BrushfireError):
    """A button or command names a job the database does not know (or no longer has images for)."""


class JobFailed(BrushfireError):
    """The job ran but did not produce a result; the reservation is refunded."""


def new_reference() -> str:
    """A short id shown to the user and written to the log, to find an unexpected error again."""
    return secrets.token_hex(4)


def user_message(error: BaseException) -> tuple[str, bool]:
    """The text to show for an error and whether it was expected (a user-facing error).

    Unexpected errors are logged here with a reference id that the message repeats.
    """
    if isinstance(error, app_commands.CommandInvokeError | app_commands.TransformerError):
        error = error.__cause__ or error
    if isinstance(error, BrushfireError):
        return error.message, True
    if isinstance(error, app_commands.MissingPermissions | app_commands.CheckFailure):
        return "You are not allowed to use this command here.", True
    if isinstance(error, app_commands.CommandOnCooldown):
        at = math.ceil(time.time() + error.retry_after)
        return f"Slow down: try again <t:{at}:R>.", True
    ref = new_reference()
    log.error("unexpected error (ref %s)", ref, exc_info=error)
    return f"Something went wrong on our side (reference `{ref}`). Nothing was charged for it.", False


async def answer_error(interaction: discord.Interaction, error: BaseException) -> None:
    """Tell the user about an error ephemerally, whether or not the interaction was answered already.

    A deferred, public "thinking" placeholder is deleted first: otherwise Discord would turn the first
    follow-up into that public message and the refusal would not be ephemeral.
    """
    text, _ = user_message(error)
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
        from bot.checks import gate_of

        gate = gate_of(interaction)
        if gate is not None:
            await interaction.client.gate.admit(interaction, gate)  # type: ignore[attr-defined]
        return True

    async def on_error(self, interaction: discord.Interaction, error: app_commands.AppCommandError) -> None:
        await answer_error(interaction, error)
