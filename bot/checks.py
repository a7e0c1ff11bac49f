"""The one admin check: who counts as a server admin for brushfire, and how a refusal reaches the user."""

from __future__ import annotations

import discord
from discord import app_commands

from bot.core.i18n import Message


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
    anyone, so every admin command checks again here."""
    if not is_admin(interaction):
        raise AdminOnly(Message(refusal))
