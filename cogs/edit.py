"""/edit: change an uploaded PNG, JPEG or WebP image by instruction (results' Edit buttons live in views)."""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING

import discord
from discord import app_commands
from discord.ext import commands

from bot.checks import Gate
from bot.core.errors import BadAttachment
from bot.core.i18n import N_
from bot.core.plans import JobPlan, Requester
from bot.core.records import GuildSettings
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

    @app_commands.command(
        name="edit", description="Change an image by instruction", extras={"gate": Gate.JOB}
    )
    @app_commands.guild_only()
    @app_commands.describe(
        image="A PNG, JPEG or WebP image",
        instruction="What to change, e.g. 'make it snowy'",
        strength="How much to change (0.05-1.0; higher follows the instruction more)",
    )
    async def edit(
        self,
        interaction: discord.Interaction,
        image: discord.Attachment,
        instruction: app_commands.Range[str, 1, MAX_PROMPT_CHARS],
        strength: app_commands.Range[float, 0.05, 1.0] | None = None,
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
                requester, image=data, instruction=instruction, strength=strength, guild=guild
            )

        await self.bot.runner.run(interaction, plan_for)


async def setup(bot: ImageBot) -> None:
    await bot.add_cog(Edit(bot))
