"""Brushfire's catalogues on Discord: the command Translator (names, descriptions, choices) and each reader's language."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import discord
from discord import app_commands

from bot.i18n import SOURCE_LANGUAGE, Catalogues, Context, Translate, language_of

_NO_CATALOGUES = Catalogues()

_CONTEXTS = {
    app_commands.TranslationContextLocation.command_name: Context.NAME,
    app_commands.TranslationContextLocation.group_name: Context.NAME,
    app_commands.TranslationContextLocation.parameter_name: Context.NAME,
    app_commands.TranslationContextLocation.command_description: Context.DESCRIPTION,
    app_commands.TranslationContextLocation.group_description: Context.DESCRIPTION,
    app_commands.TranslationContextLocation.parameter_description: Context.DESCRIPTION,
    app_commands.TranslationContextLocation.choice_name: Context.CHOICE,
    app_commands.TranslationContextLocation.other: Context.MESSAGE,
}


class CatalogueTranslator(app_commands.Translator):
    """Answers each Discord locale ("fr", "es-ES", "es-419", ...) from the catalogue of its language."""

    def __init__(self, catalogues: Catalogues) -> None:
        self.catalogues = catalogues

    async def translate(
        self,
        string: app_commands.locale_str,
        locale: discord.Locale,
        context: app_commands.TranslationContextTypes,
    ) -> str | None:
        language = language_of(locale.value)
        if language is None or language == SOURCE_LANGUAGE:
            return None
        return self.catalogues.lookup(language, string.message, _CONTEXTS[context.location])


class RecordingTranslator(app_commands.Translator):
    """Translates nothing and remembers every text Discord would get: the command half of the template."""

    def __init__(self) -> None:
        self.seen: dict[tuple[Context, str], None] = {}  # ordered and de-duplicated

    async def translate(
        self,
        string: app_commands.locale_str,
        locale: discord.Locale,
        context: app_commands.TranslationContextTypes,
    ) -> str | None:
        self.seen[(_CONTEXTS[context.location], string.message)] = None
        return None


async def command_texts(
    tree: app_commands.CommandTree[Any], guild: discord.abc.Snowflake | None = None
) -> list[tuple[Context, str]]:
    """Every name, description and choice label of the tree's commands, in the order Discord sees them."""
    recorder = RecordingTranslator()
    await translated_payload(tree, recorder, tree.get_commands(guild=guild))
    return list(recorder.seen)


async def translated_payload(
    tree: app_commands.CommandTree[Any],
    translator: app_commands.Translator,
    commands: Iterable[app_commands.Command[Any, ..., Any] | app_commands.Group | app_commands.ContextMenu],
) -> list[dict[str, Any]]:
    """The command payloads exactly as a sync sends them, localisations included."""
    return [await command.get_translated_payload(tree, translator) for command in commands]


def catalogues_of(client: discord.Client) -> Catalogues:
    """The catalogues the bot loaded at start (a client without any speaks English)."""
    found = getattr(client, "catalogues", None)
    return found if isinstance(found, Catalogues) else _NO_CATALOGUES


def translate_for(interaction: discord.Interaction) -> Translate:
    """Texts for whoever made this interaction: their own Discord language, else the server's, else English."""
    catalogues = catalogues_of(interaction.client)
    member = interaction.locale.value if interaction.locale else None
    server = interaction.guild_locale.value if interaction.guild_locale else None
    return Translate(catalogues, catalogues.choose(member, server))


def translate_for_server(client: discord.Client, guild_id: int | None) -> Translate:
    """Texts for a post the whole server reads (a challenge announcement): the server's language."""
    catalogues = catalogues_of(client)
    guild = client.get_guild(guild_id) if guild_id else None
    return Translate(catalogues, catalogues.choose(guild.preferred_locale.value if guild else None))


def translate_in(client: discord.Client, language: str | None) -> Translate:
    """Texts in a language chosen earlier (a job keeps its member's language for late posts)."""
    catalogues = catalogues_of(client)
    return Translate(catalogues, catalogues.choose(language))
