"""Checks answered before any defer: the one admin check (and its decorator), and the gates a command or
button declares (`bot.gate.JobGate` applies them)."""

from __future__ import annotations

import logging
from collections.abc import Callable
from enum import StrEnum
from typing import TypeVar

import discord
from discord import app_commands
from discord.ext import commands

from bot.core.errors import BrushfireError
from bot.core.i18n import Message

log = logging.getLogger(__name__)

ADMIN_PERMISSIONS = discord.Permissions(manage_guild=True)
T = TypeVar("T")


class AdminOnly(app_commands.CheckFailure):
    """Refused because the member lacks Manage Server; the message says what they tried to do.

    A `CheckFailure`, so discord.py hands it to the tree unwrapped even from a cog's `interaction_check`.
    """

    def __init__(self, text: Message) -> None:
        self.text = text
        self.message = str(text)
        super().__init__(self.message)


def is_admin(interaction: discord.Interaction) -> bool:
    """Manage Server in a server; nobody is an admin in a direct message."""
    return interaction.guild_id is not None and interaction.permissions.manage_guild


def require_admin(interaction: discord.Interaction, refusal: str) -> None:
    """Raise `AdminOnly` with the marked `refusal` (N_("Only members with Manage Server can ...")) unless
    the member is an admin. `default_permissions` only hides a command: server owners can show it to
    anyone in Server Settings → Integrations, so it is checked again here."""
    if not is_admin(interaction):
        raise AdminOnly(Message(refusal))


def admin_only(refusal: str) -> Callable[[T], T]:
    """Make a command, an `app_commands.Group` or a `GroupCog` class admin-only in one place: hidden from
    members by default (Manage Server), server-only, and checked again by `require_admin` when it runs."""

    def check(interaction: discord.Interaction) -> bool:
        require_admin(interaction, refusal)
        return True

    async def group_check(interaction: discord.Interaction) -> bool:
        return check(interaction)

    async def cog_check(self: commands.Cog, interaction: discord.Interaction) -> bool:
        return check(interaction)

    def decorate(target: T) -> T:
        if isinstance(target, type) and issubclass(target, commands.Cog):
            target.__discord_app_commands_default_permissions__ = ADMIN_PERMISSIONS  # type: ignore[attr-defined]
            target.__discord_app_commands_guild_only__ = True  # type: ignore[attr-defined]
            target.interaction_check = cog_check  # type: ignore[method-assign]
            return target
        if isinstance(target, app_commands.Group):
            target.default_permissions = ADMIN_PERMISSIONS
            target.guild_only = True
            target.interaction_check = group_check  # type: ignore[method-assign]
            return target
        checked = app_commands.check(check)(target)
        return app_commands.guild_only()(app_commands.default_permissions(manage_guild=True)(checked))

    return decorate


class Gate(StrEnum):
    """What a command or button is checked for before it answers; set as `extras={"gate": ...}`."""

    JOB = "job"  # starts a job: channel policy, block, per-user cooldown
    MEMBER = "member"  # takes part (challenge entries, votes): block


class OnCooldown(BrushfireError):
    """The member started jobs too quickly; the message names when to retry as a Discord timestamp."""


def gate_of(interaction: discord.Interaction) -> Gate | None:
    """The gate a slash command declared in its extras (autocomplete is never gated)."""
    if interaction.type is not discord.InteractionType.application_command:
        return None
    command = interaction.command
    value = command.extras.get("gate") if command is not None else None
    return Gate(value) if value is not None else None
