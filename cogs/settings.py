"""/settings (Manage Server): channels, blocked words or patterns, NSFW handling, relax lane, style, image cap,
a power user's steps and pixel caps, and image retention."""

from __future__ import annotations

import logging
import re
from typing import TYPE_CHECKING, Any, Literal

import discord
from discord import app_commands
from discord.ext import commands

from bot.checks import admin_only
from bot.core.errors import InvalidInput
from bot.core.i18n import N_
from bot.core.plans import REGEX_PREFIX, SAMPLERS
from bot.core.records import MAX_IMAGES_PER_JOB, GuildSettings
from bot.core.retention import MAX_AGE_DAYS, MAX_MEGABYTES, MB
from bot.i18n import Translate
from inference.protocol import MAX_STEPS

if TYPE_CHECKING:
    from bot.client import ImageBot

log = logging.getLogger(__name__)

MAX_WORD_CHARS = 100


def settings_embed(s: GuildSettings, _: Translate) -> discord.Embed:
    embed = discord.Embed(title=_("brushfire settings"), colour=discord.Colour.orange())
    channels = " ".join(f"<#{c}>" for c in s.allowed_channel_ids) or _("every channel")
    embed.add_field(name=_("Channels"), value=channels[:1024], inline=False)
    words = ", ".join(f"`{w}`" for w in s.blocked_words) or _("none")
    embed.add_field(name=_("Blocked words"), value=words[:1024], inline=False)
    flagged = _("spoilered") if s.nsfw_mode == "spoiler" else _("withheld")
    embed.add_field(name=_("Flagged images"), value=flagged)
    embed.add_field(name=_("Relax lane"), value=_("on") if s.relax_enabled else _("off"))
    embed.add_field(name=_("Default style"), value=s.default_style or _("none"))
    embed.add_field(name=_("Images per job"), value=str(s.max_images_per_job))
    embed.add_field(name=_("Steps per job"), value=str(s.max_steps) if s.max_steps else _("configured cap"))
    megapixels = f"{s.max_pixels / 1_000_000:g} MP" if s.max_pixels else _("the worker's cap")
    embed.add_field(name=_("Pixels per image"), value=megapixels)
    samplers = ", ".join(s.allowed_samplers) if s.allowed_samplers is not None else _("all")
    embed.add_field(name=_("Samplers"), value=samplers or _("none"))
    models = ", ".join(s.allowed_models) if s.allowed_models is not None else _("all")
    embed.add_field(name=_("Models"), value=(models or _("none"))[:1024])
    embed.add_field(name=_("Results posted as"), value=s.output_format.upper())
    return embed


@admin_only(N_("Only members with Manage Server can change brushfire's settings."))
class Settings(
    commands.GroupCog, group_name="settings", group_description="brushfire's settings for this server"
):
    def __init__(self, bot: ImageBot) -> None:
        self.bot = bot
        super().__init__()

    async def _update(self, interaction: discord.Interaction, **changes: Any) -> None:
        guild_id = interaction.guild_id or 0
        new = await self.bot.services.guilds.update(guild_id, interaction.user.id, **changes)
        _ = self.bot.i18n_for(interaction)
        await interaction.response.send_message(_("Saved."), embed=settings_embed(new, _), ephemeral=True)

    async def _current(self, interaction: discord.Interaction) -> GuildSettings:
        return await self.bot.services.guilds.settings(interaction.guild_id or 0)

    @app_commands.command(name="show", description="Show this server's settings")
    async def show(self, interaction: discord.Interaction) -> None:
        current = await self._current(interaction)
        _ = self.bot.i18n_for(interaction)
        await interaction.response.send_message(embed=settings_embed(current, _), ephemeral=True)

    @app_commands.command(name="channel", description="Allow or stop brushfire in a channel")
    async def channel(
        self,
        interaction: discord.Interaction,
        channel: discord.TextChannel,
        action: Literal["allow", "remove"],
    ) -> None:
        ids = set((await self._current(interaction)).allowed_channel_ids)
        if action == "allow":
            ids.add(channel.id)
        else:
            ids.discard(channel.id)
        await self._update(interaction, allowed_channel_ids=sorted(ids))

    @app_commands.command(name="all-channels", description="Let brushfire be used in every channel")
    async def all_channels(self, interaction: discord.Interaction) -> None:
        await self._update(interaction, allowed_channel_ids=[])

    @app_commands.command(name="block-word", description="Refuse prompts with a word (or re:<regex>)")
    async def block_word(
        self, interaction: discord.Interaction, word: app_commands.Range[str, 1, MAX_WORD_CHARS]
    ) -> None:
        word = word.strip().lower()
        if word.startswith(REGEX_PREFIX):
            try:
                re.compile(word[len(REGEX_PREFIX) :])
            except re.error as exc:
                raise InvalidInput(
                    N_("`{word}` is not a valid pattern: {reason}."), word=word, reason=str(exc)
                ) from None
        words = set((await self._current(interaction)).blocked_words) | {word}
        await self._update(interaction, blocked_words=sorted(words))

    @app_commands.command(name="unblock-word", description="Allow a blocked word again")
    async def unblock_word(self, interaction: discord.Interaction, word: str) -> None:
        words = set((await self._current(interaction)).blocked_words)
        if word.strip().lower() not in words:
            raise InvalidInput(N_("`{word}` is not blocked."), word=word[:50])
        await self._update(interaction, blocked_words=sorted(words - {word.strip().lower()}))

    @app_commands.command(name="nsfw", description="What to do with images the safety check flags")
    async def nsfw(self, interaction: discord.Interaction, mode: Literal["spoiler", "refuse"]) -> None:
        await self._update(interaction, nsfw_mode=mode)

    @app_commands.command(name="relax", description="Turn the slower, free relax lane on or off")
    async def relax(self, interaction: discord.Interaction, enabled: bool) -> None:
        await self._update(interaction, relax_enabled=enabled)

    @app_commands.command(name="default-style", description="The style used when /imagine names none")
    async def default_style(self, interaction: discord.Interaction, style: str | None = None) -> None:
        book = await self.bot.services.guilds.style_book(
            interaction.guild_id or 0
        )  # the server's own presets count too
        preset = book.style(style)
        await self._update(interaction, default_style=preset.name if preset else None)

    @default_style.autocomplete("style")
    async def _style_choices(
        self, interaction: discord.Interaction, current: str
    ) -> list[app_commands.Choice[str]]:
        book = await self.bot.services.guilds.style_book(interaction.guild_id or 0)
        return [app_commands.Choice(name=s.name, value=s.name) for s in book.search(current)]

    @app_commands.command(name="job-limits", description="Caps on a power user's steps and image size")
    @app_commands.describe(
        max_steps="Most denoising steps a job may ask for (empty: the configured cap)",
        max_megapixels="Most megapixels an image may have (empty: the worker's cap)",
    )
    async def job_limits(
        self,
        interaction: discord.Interaction,
        max_steps: app_commands.Range[int, 1, MAX_STEPS] | None = None,
        max_megapixels: app_commands.Range[float, 0.004096, 16.0] | None = None,
    ) -> None:
        pixels = None if max_megapixels is None else int(max_megapixels * 1_000_000)
        await self._update(interaction, max_steps=max_steps, max_pixels=pixels)

    @app_commands.command(name="output-format", description="The format results are made, kept and posted in")
    @app_commands.describe(
        format="jpeg: sharp and light (the default); webp: smallest; png: lossless, largest"
    )
    async def output_format(
        self, interaction: discord.Interaction, format: Literal["jpeg", "webp", "png"]
    ) -> None:
        await self._update(interaction, output_format=format)

    @app_commands.command(name="samplers", description="Which samplers members may pick in /imagine")
    @app_commands.describe(names="Sampler names separated by commas or spaces (empty: all of them)")
    async def samplers(self, interaction: discord.Interaction, names: str | None = None) -> None:
        picked = None if names is None else [n for n in re.split(r"[,\s]+", names.strip().lower()) if n]
        unknown = [n for n in picked or () if n not in SAMPLERS]
        if unknown:
            raise InvalidInput(
                N_("`{name}` is not a sampler; brushfire offers {offered}."),
                name=unknown[0][:40],
                offered=", ".join(SAMPLERS),
            )
        await self._update(interaction, allowed_samplers=picked)

    @app_commands.command(
        name="models", description="Which of the worker's models members may pick in /imagine"
    )
    @app_commands.describe(names="Model names separated by commas or spaces (empty: every model served)")
    async def models(self, interaction: discord.Interaction, names: str | None = None) -> None:
        picked = None if names is None else [n for n in re.split(r"[,\s]+", names.strip()) if n]
        served = self.bot.services.jobs.planner.served_models
        unknown = [n for n in picked or () if served is not None and n not in served]
        if unknown:
            raise InvalidInput(
                N_("`{name}` is not a model the worker serves; it serves {served}."),
                name=unknown[0][:80],
                served=", ".join(served or ()),
            )
        await self._update(interaction, allowed_models=picked)

    @app_commands.command(
        name="retention", description="How long and how much of this server's images are kept"
    )
    @app_commands.describe(
        days="Drop images older than this many days (empty: no age limit)",
        megabytes="Keep at most this many MB of images, dropping the oldest (empty: no size limit)",
    )
    async def retention(
        self,
        interaction: discord.Interaction,
        days: app_commands.Range[int, 1, MAX_AGE_DAYS] | None = None,
        megabytes: app_commands.Range[float, 0, MAX_MEGABYTES] | None = None,
    ) -> None:
        retention = self.bot.services.retention
        guild_id = interaction.guild_id or 0
        policy = await retention.set_policy(
            guild_id, interaction.user.id, max_age_days=days, max_megabytes=megabytes
        )
        stored = await retention.stored_bytes(guild_id)
        _ = self.bot.i18n_for(interaction)
        age = _("{days} days", days=policy.max_age_days) if policy.max_age_days else _("no limit")
        size = f"{policy.max_bytes / MB:g} MB" if policy.max_bytes is not None else _("no limit")
        now = f"{stored / MB:.1f}"
        await interaction.response.send_message(
            _(
                "Saved. Images are kept for: {age}; at most: {size} (now {stored} MB). Images of challenge"
                " entries keep a small copy; buttons on a dropped image say it expired.",
                age=age,
                size=size,
                stored=now,
            ),
            ephemeral=True,
        )

    @app_commands.command(name="max-images", description="Most images one job may ask for")
    async def max_images(
        self, interaction: discord.Interaction, count: app_commands.Range[int, 1, MAX_IMAGES_PER_JOB]
    ) -> None:
        await self._update(interaction, max_images_per_job=count)


async def setup(bot: ImageBot) -> None:
    await bot.add_cog(Settings(bot))
