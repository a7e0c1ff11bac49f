"""Checks answered before any defer: one admin decorator, and the gate in front of everything that starts a job."""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Callable
from enum import StrEnum
from typing import TYPE_CHECKING, Any, TypeVar

import discord
from discord import app_commands
from discord.ext import commands

from bot.errors import BrushfireError, NotPermitted
from bot.settings import CooldownSettings

if TYPE_CHECKING:
    from bot.jobs import JobService

log = logging.getLogger(__name__)

ADMIN_PERMISSIONS = discord.Permissions(manage_guild=True)
ADMIN_REFUSAL = "Only members with Manage Server can use this command."
T = TypeVar("T")


class Gate(StrEnum):
    """What a command or button is checked for before it answers; set as `extras={"gate": ...}`."""

    JOB = "job"  # starts a job: channel policy, block, per-user cooldown
    MEMBER = "member"  # takes part (challenge entries, votes): block


class OnCooldown(BrushfireError):
    """The member started jobs too quickly; the message names when to retry as a Discord timestamp."""


def require_admin(interaction: discord.Interaction) -> bool:
    """The runtime half of `admin_only`: default permissions only hide a command, and server owners can show
    it to anyone in Server Settings → Integrations."""
    if interaction.guild_id is None or not interaction.permissions.manage_guild:
        raise NotPermitted(ADMIN_REFUSAL)
    return True


def admin_only(target: T) -> T:
    """Make a command, an `app_commands.Group` or a `GroupCog` class admin-only: hidden from members by
    default (Manage Server) and checked again when it runs."""
    if isinstance(target, type) and issubclass(target, commands.Cog):
        target.__discord_app_commands_default_permissions__ = ADMIN_PERMISSIONS  # type: ignore[attr-defined]
        target.__discord_app_commands_guild_only__ = True  # type: ignore[attr-defined]
        target.interaction_check = _admin_cog_check  # type: ignore[assignment]
        return target
    if isinstance(target, app_commands.Group):
        target.default_permissions = ADMIN_PERMISSIONS
        target.guild_only = True
        target.interaction_check = _admin_group_check  # type: ignore[method-assign]
        return target
    checked = app_commands.check(require_admin)(target)
    return app_commands.guild_only()(app_commands.default_permissions(manage_guild=True)(checked))


async def _admin_cog_check(self: commands.Cog, interaction: discord.Interaction) -> bool:
    return require_admin(interaction)


async def _admin_group_check(interaction: discord.Interaction) -> bool:
    return require_admin(interaction)


def gate_of(interaction: discord.Interaction) -> Gate | None:
    """The gate a slash command declared in its extras (autocomplete is never gated)."""
    if interaction.type is not discord.InteractionType.application_command:
        return None
    command = interaction.command
    value = command.extras.get("gate") if command is not None else None
    return Gate(value) if value is not None else None


class JobGate:
    """The cheap rules, answered ephemerally before a command or button shows a public "thinking…".

    The rules themselves live in the job service (`check_admission`); this adds the per-member cooldown,
    which is discord.py's own bucket keyed by server and member.
    """

    def __init__(
        self, jobs: JobService, settings: CooldownSettings, clock: Callable[[], float] = time.time
    ) -> None:
        self._jobs = jobs
        self._clock = clock
        self._cooldown: commands.CooldownMapping[discord.Interaction] = (
            commands.CooldownMapping.from_cooldown(settings.rate, settings.per_s, _member_key)
        )

    async def admit(self, interaction: discord.Interaction, gate: Gate = Gate.JOB) -> None:
        """Raise a BrushfireError (answered ephemerally by the caller) when the interaction may not go on."""
        from bot.delivery import requester_for

        requester = requester_for(interaction)
        await self._jobs.check_admission(requester, channel=gate is Gate.JOB)
        if gate is Gate.JOB:
            self._take_cooldown(interaction)

    def _take_cooldown(self, interaction: discord.Interaction) -> None:
        now = self._clock()
        retry_after = self._cooldown.update_rate_limit(interaction, current=now)
        if retry_after:
            at = math.ceil(now + retry_after)
            raise OnCooldown(f"Slow down: you can start another image <t:{at}:R> (at <t:{at}:T>).")


def _member_key(interaction: discord.Interaction) -> Any:
    return (interaction.guild_id or 0, interaction.user.id)
