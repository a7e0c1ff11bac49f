"""/styles lists the style presets; /style add|remove (Manage Server) keeps a server's own presets."""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING

import discord
from discord import app_commands
from discord.ext import commands
from pydantic import ValidationError

from bot.checks import admin_only
from bot.core.errors import InvalidInput
from bot.core.i18n import N_
from bot.core.styles import StyleBook, StylePreset
from bot.i18n import Translate

if TYPE_CHECKING:
    from bot.client import ImageBot

log = logging.getLogger(__name__)

FIELDS_PER_EMBED = 25


def styles_embed(book: StyleBook, _: Translate) -> discord.Embed:
    """The presets; their names, descriptions and prompts are the server's own words, never translated."""
    embed = discord.Embed(title=_("Style presets"), colour=discord.Colour.orange())
    embed.description = _("Use one with `/imagine style:`. ★ marks this server's own presets.")
    for style in book.styles[:FIELDS_PER_EMBED]:
        mark = " ★" if style.name in book.guild_names else ""
        details = [style.description or style.prompt]
        if style.aspect:
            details.append(_("shape {aspect}", aspect=style.aspect))
        if style.steps:
            details.append(_.ngettext("{count} step", "{count} steps", style.steps, count=style.steps))
        if style.adapter:
            scale = f"{style.adapter_scale:g}"
            details.append(_("LoRA {adapter} scale {scale}", adapter=style.adapter, scale=scale))
        embed.add_field(name=f"{style.name}{mark}", value=" · ".join(details)[:1024], inline=False)
    if len(book.styles) > FIELDS_PER_EMBED:
        more = len(book.styles) - FIELDS_PER_EMBED
        embed.set_footer(text=_("and {count} more; type in /imagine style: to search", count=more))
    return embed


def _validation_text(exc: ValidationError) -> str:
    err = exc.errors(include_url=False)[0]
    where = ".".join(str(p) for p in err["loc"]) or "style"
    return f"{where}: {err['msg']}"


class Styles(commands.Cog):
    def __init__(self, bot: ImageBot) -> None:
        self.bot = bot

    @app_commands.command(name="styles", description="Show the style presets you can use here")
    @app_commands.guild_only()
    async def styles(self, interaction: discord.Interaction) -> None:
        book = await self.bot.services.guilds.style_book(interaction.guild_id or 0)
        _ = self.bot.i18n_for(interaction)
        await interaction.response.send_message(embed=styles_embed(book, _), ephemeral=True)


@admin_only(N_("Only members with Manage Server can change this server's styles."))
class StyleAdmin(commands.GroupCog, group_name="style", group_description="This server's own style presets"):
    def __init__(self, bot: ImageBot) -> None:
        self.bot = bot
        super().__init__()

    @app_commands.command(name="add", description="Add a style preset for this server")
    @app_commands.describe(
        name="Lowercase name, e.g. harbour-ghibli",
        prompt="Template with {prompt} where the member's words go",
        negative="What this style keeps out",
        aspect="Default shape, e.g. 16:9",
        adapter="A LoRA adapter the worker lists (by name)",
        adapter_scale="How strongly the LoRA applies (0-2)",
    )
    async def add(
        self,
        interaction: discord.Interaction,
        *,
        name: app_commands.Range[str, 1, 50],
        prompt: app_commands.Range[str, 1, 500],
        description: app_commands.Range[str, 0, 100] = "",
        negative: app_commands.Range[str, 0, 500] = "",
        steps: app_commands.Range[int, 1, 150] | None = None,
        guidance: app_commands.Range[float, 0.0, 30.0] | None = None,
        aspect: str | None = None,
        adapter: str | None = None,
        adapter_scale: app_commands.Range[float, 0.0, 2.0] = 1.0,
    ) -> None:
        guild_id = interaction.guild_id or 0
        try:
            preset = StylePreset(
                name=name.strip().lower(),
                description=description,
                prompt=prompt,
                negative=negative,
                steps=steps,
                guidance=guidance,
                aspect=aspect,
                adapter=adapter or None,
                adapter_scale=adapter_scale,
            )
        except ValidationError as exc:
            raise InvalidInput(
                N_("That style was not added: {reason}."), reason=_validation_text(exc)
            ) from None
        await self.bot.services.guilds.add_style(guild_id, interaction.user.id, preset)
        _ = self.bot.i18n_for(interaction)
        await interaction.response.send_message(_("Added style `{name}`.", name=preset.name), ephemeral=True)

    @app_commands.command(name="remove", description="Remove one of this server's style presets")
    async def remove(self, interaction: discord.Interaction, name: str) -> None:
        removed = await self.bot.services.guilds.remove_style(interaction.guild_id or 0, name)
        _ = self.bot.i18n_for(interaction)
        await interaction.response.send_message(_("Removed style `{name}`.", name=removed), ephemeral=True)

    @remove.autocomplete("name")
    async def _own_styles(
        self, interaction: discord.Interaction, current: str
    ) -> list[app_commands.Choice[str]]:
        book = await self.bot.services.guilds.style_book(interaction.guild_id or 0)
        return [
            app_commands.Choice(name=s.name, value=s.name)
            for s in book.search(current)
            if s.name in book.guild_names
        ]


async def setup(bot: ImageBot) -> None:
    await bot.add_cog(Styles(bot))
    await bot.add_cog(StyleAdmin(bot))
