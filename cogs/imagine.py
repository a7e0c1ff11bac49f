"""/imagine: text to image with style presets, aspects, several images, seeds, lanes, and a power user's
steps, guidance, sampler, exact size and model (each within the server's policy, priced by steps x pixels)."""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Literal

import discord
from discord import app_commands
from discord.ext import commands

from bot.checks import Gate
from bot.core.command_text import IMAGINE
from bot.core.plans import SAMPLERS, Controls, ImagineOptions, JobPlan, Requester, parse_lane
from bot.core.records import GuildSettings
from inference.protocol import MAX_COUNT, MAX_SEED, MAX_SIDE, MAX_STEPS, MIN_SIDE
from inference.text import MAX_PROMPT_CHARS

if TYPE_CHECKING:
    from bot.client import ImageBot

log = logging.getLogger(__name__)


class Imagine(commands.Cog):
    def __init__(self, bot: ImageBot) -> None:
        self.bot = bot

    async def cog_load(self) -> None:
        # Aspect choices come from settings; Discord needs them as fixed choices on the command itself.
        # (Ranges in the signature guide Discord's client; the planner still checks every value.)
        aspect = self.imagine._params["aspect"]
        aspect.choices = [
            # locale_str: translated where the catalogue knows the label (the default aspects' are there).
            app_commands.Choice(name=app_commands.locale_str((a.label or a.name)[:100]), value=a.name)
            for a in self.bot.services.guilds.styles.aspects
        ]
        self.imagine._params["sampler"].choices = [
            app_commands.Choice(name=app_commands.locale_str(name), value=name) for name in SAMPLERS
        ]
        # Discord's client is told the very limit the planner enforces.
        for name in ("prompt", "negative"):
            self.imagine._params[name].max_value = self.bot.settings.limits.prompt_chars

    @app_commands.command(name=IMAGINE.name, description=IMAGINE.description, extras={"gate": Gate.JOB})
    @app_commands.guild_only()
    @app_commands.describe(**IMAGINE.options)
    async def imagine(
        self,
        interaction: discord.Interaction,
        *,
        prompt: app_commands.Range[str, 1, MAX_PROMPT_CHARS],
        style: str | None = None,
        negative: app_commands.Range[str, 0, MAX_PROMPT_CHARS] | None = None,
        aspect: str | None = None,
        count: app_commands.Range[int, 1, MAX_COUNT] = 1,
        seed: app_commands.Range[int, 0, MAX_SEED - MAX_COUNT] | None = None,
        lane: Literal["fast", "relax"] | None = None,
        steps: app_commands.Range[int, 1, MAX_STEPS] | None = None,
        guidance: app_commands.Range[float, 0.0, 30.0] | None = None,
        width: app_commands.Range[int, MIN_SIDE, MAX_SIDE] | None = None,
        height: app_commands.Range[int, MIN_SIDE, MAX_SIDE] | None = None,
        sampler: str | None = None,
        model: app_commands.Range[str, 1, 300] | None = None,
    ) -> None:
        options = ImagineOptions(
            prompt=prompt,
            style=style,
            negative=negative or "",
            aspect=aspect,
            count=count,
            seed=seed,
            lane=parse_lane(lane),
            controls=Controls(
                steps=steps, guidance=guidance, width=width, height=height, sampler=sampler, model=model
            ),
        )

        async def plan_for(requester: Requester, guild: GuildSettings) -> JobPlan:
            book = await self.bot.services.guilds.style_book(requester.guild_id)
            return self.bot.services.jobs.planner.plan_imagine(requester, options, guild, book)

        await self.bot.runner.run(interaction, plan_for)

    @imagine.autocomplete("style")
    async def style_autocomplete(
        self, interaction: discord.Interaction, current: str
    ) -> list[app_commands.Choice[str]]:
        book = await self.bot.services.guilds.style_book(interaction.guild_id or 0)
        return [
            app_commands.Choice(name=_choice_name(s.name, s.description), value=s.name)
            for s in book.search(current)
        ]

    @imagine.autocomplete("model")
    async def model_autocomplete(
        self, interaction: discord.Interaction, current: str
    ) -> list[app_commands.Choice[str]]:
        """The worker's models this server allows, as the worker last said."""
        guild = await self.bot.services.guilds.settings(interaction.guild_id or 0)
        planner = self.bot.services.jobs.planner
        names = planner.policy.models(guild, planner.served_models or [])
        wanted = current.strip().lower()
        return [app_commands.Choice(name=n[:100], value=n) for n in names if wanted in n.lower()][:25]


def _choice_name(name: str, description: str) -> str:
    text = f"{name} — {description}" if description else name
    return text[:100]


async def setup(bot: ImageBot) -> None:
    await bot.add_cog(Imagine(bot))
