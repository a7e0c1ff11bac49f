"""/edit: change an uploaded PNG, JPEG or WebP image by instruction (results' Edit buttons live in views)."""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Literal

import discord
from discord import app_commands
from discord.ext import commands

from bot.checks import Gate
from bot.core.command_text import EDIT
from bot.core.errors import BadAttachment
from bot.core.i18n import N_
from bot.core.plans import JobPlan, Requester, parse_lane
from bot.core.records import GuildSettings
from inference.protocol import MAX_COUNT, MAX_SEED
from inference.text import MAX_PROMPT_CHARS

if TYPE_CHECKING:
    from bot.client import ImageBot

log = logging.getLogger(__name__)


class Edit(commands.Cog):
    def __init__(self, bot: ImageBot) -> None:
        self.bot = bot

    async def cog_load(self) -> None:
        # Discord's client is told the very limit the planner enforces.
        self.edit._params["instruction"].max_value = self.bot.settings.limits.prompt_chars

    @app_commands.command(name=EDIT.name, description=EDIT.description, extras={"gate": Gate.JOB})
    @app_commands.guild_only()
    @app_commands.describe(**EDIT.options)
    async def edit(
        self,
        interaction: discord.Interaction,
        *,
        image: discord.Attachment,
        instruction: app_commands.Range[str, 1, MAX_PROMPT_CHARS],
        strength: app_commands.Range[float, 0.05, 1.0] | None = None,
        seed: app_commands.Range[int, 0, MAX_SEED - MAX_COUNT] | None = None,
        lane: Literal["fast", "relax"] | None = None,
    ) -> None:
        limits = self.bot.settings.limits

        async def plan_for(requester: Requester, guild: GuildSettings) -> JobPlan:
            # Checked before downloading: an oversized file is refused without fetching it.
            if image.size > limits.attachment_bytes:
                raise BadAttachment(
                    N_("That image is {size} MB; the limit is {limit} MB."),
                    size=f"{image.size / 1e6:.1f}",
                    limit=f"{limits.attachment_bytes / 1e6:.1f}",
                )
            try:
                data = await image.read()
            except discord.HTTPException:
                raise BadAttachment(
                    N_("The attachment could not be downloaded from Discord; try again.")
                ) from None
            return self.bot.services.jobs.planner.plan_edit(
                requester,
                image=data,
                instruction=instruction,
                strength=strength,
                guild=guild,
                lane=parse_lane(lane),
                seed=seed,
            )

        await self.bot.runner.run(interaction, plan_for)


async def setup(bot: ImageBot) -> None:
    await bot.add_cog(Edit(bot))
