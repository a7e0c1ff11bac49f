"""The gate in front of everything that starts a job or takes part: channel policy, block and the per-member
cooldown, answered ephemerally before any public "thinking…"."""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Callable
from typing import Any

import discord
from discord.ext import commands

from bot.checks import Gate, OnCooldown
from bot.core.i18n import N_
from bot.core.jobs import JobService
from bot.core.settings import CooldownSettings
from bot.interactions import requester_for

log = logging.getLogger(__name__)


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
        await self._jobs.check_admission(requester_for(interaction), channel=gate is Gate.JOB)
        if gate is Gate.JOB:
            self._take_cooldown(interaction)

    def _take_cooldown(self, interaction: discord.Interaction) -> None:
        now = self._clock()
        retry_after = self._cooldown.update_rate_limit(interaction, current=now)
        if retry_after:
            at = math.ceil(now + retry_after)
            raise OnCooldown(N_("Slow down: you can start another image <t:{at}:R> (at <t:{at}:T>)."), at=at)


def _member_key(interaction: discord.Interaction) -> Any:
    return (interaction.guild_id or 0, interaction.user.id)
