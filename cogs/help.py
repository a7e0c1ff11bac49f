"""/help: every slash command and its options, described in the member's language.

The descriptions are the commands' own (what the sync sends Discord, from `bot.core.command_text` for the
job commands), read from the command tree, so /help cannot drift from the commands or from the CLI's help.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Any

import discord
from discord import app_commands
from discord.ext import commands

from bot.core.command_text import HELP
from bot.core.errors import InvalidInput
from bot.core.i18n import N_
from bot.i18n import Context, Translate

if TYPE_CHECKING:
    from bot.client import ImageBot

log = logging.getLogger(__name__)

EMBED_LIMIT = 4096


def command_lines(
    tree: app_commands.CommandTree[discord.Client], _: Translate, only: str | None = None
) -> list[str]:
    """`/name — description` for each command and subcommand, translated; with `only` (a top-level
    command's name), that command's alone with each of its options."""

    def text(english: str, context: Context) -> str:
        return _.catalogues.lookup(_.language, english, context) or english

    lines: list[str] = []

    def walk(command: app_commands.Command[Any, ..., Any] | app_commands.Group, prefix: str) -> None:
        name = f"{prefix}{text(command.name, Context.NAME)}"
        if isinstance(command, app_commands.Group):
            for sub in command.commands:
                walk(sub, f"{name} ")
            return
        lines.append(f"**/{name}** — {text(command.description, Context.DESCRIPTION)}")
        if only is not None:
            lines.extend(
                f"  · `{text(p.name, Context.NAME)}`: {text(p.description, Context.DESCRIPTION)}"
                for p in command.parameters
            )

    for command in sorted(tree.get_commands(), key=lambda c: c.name):
        if isinstance(command, app_commands.Command | app_commands.Group) and only in (None, command.name):
            walk(command, "")
    return lines


class Help(commands.Cog):
    def __init__(self, bot: ImageBot) -> None:
        self.bot = bot

    @app_commands.command(name=HELP.name, description=HELP.description)
    @app_commands.describe(**HELP.options)
    async def help(self, interaction: discord.Interaction, command: str | None = None) -> None:
        _ = self.bot.i18n_for(interaction)
        lines = command_lines(self.bot.tree, _, command)
        if not lines:
            raise InvalidInput(N_("There is no command called `{name}`."), name=(command or "")[:32])
        body = "\n".join(lines)
        if len(body) > EMBED_LIMIT:
            body = body[: EMBED_LIMIT - 1] + "…"
        embed = discord.Embed(title=_("brushfire commands"), description=body)
        if command is None:
            embed.set_footer(text=_("/help with a command's name shows its options."))
        await interaction.response.send_message(embed=embed, ephemeral=True)

    @help.autocomplete("command")
    async def _commands(
        self, interaction: discord.Interaction, current: str
    ) -> list[app_commands.Choice[str]]:
        names = sorted(c.name for c in self.bot.tree.get_commands())
        return [app_commands.Choice(name=n, value=n) for n in names if current.lower() in n][:25]


async def setup(bot: ImageBot) -> None:
    await bot.add_cog(Help(bot))
