"""One source for the commands' help: /imagine's and /edit's descriptions, /help, and `run.py --help`."""

from __future__ import annotations

import tempfile
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from discord import app_commands

import run
from bot.client import EXTENSIONS, ImageBot
from bot.core.command_text import EDIT, IMAGINE, CommandText
from bot.core.services import open_services
from bot.core.settings import Settings
from bot.i18n import Catalogues, Context
from storage.db import DatabaseSettings
from tests.bot.harness import build_world, embed_of, running_bot
from tests.fakediscord import FakeDiscord


def words(text: str) -> str:
    return " ".join(text.split())


async def loaded_tree() -> AsyncIterator[app_commands.CommandTree[ImageBot]]:
    with tempfile.TemporaryDirectory() as tmp:
        settings = Settings(database=DatabaseSettings(path=Path(tmp) / "h.sqlite3"))
        async with open_services(settings, "http://127.0.0.1:9") as services:
            bot = ImageBot(services, catalogues=Catalogues())
            for extension in EXTENSIONS:
                await bot.load_extension(extension)
            try:
                yield bot.tree
            finally:
                await bot.close()


@pytest.mark.parametrize("text", [IMAGINE, EDIT], ids=lambda t: t.name)
async def test_slash_commands_and_cli_help_say_the_same(
    text: CommandText, capsys: pytest.CaptureFixture[str]
) -> None:
    async for tree in loaded_tree():
        command = tree.get_command(text.name)
        assert isinstance(command, app_commands.Command) and command.description == text.description
        assert {p.name: p.description for p in command.parameters} == dict(text.options)
    with pytest.raises(SystemExit) as done:
        run.main([text.name, "--help"])
    assert done.value.code == 0
    shown = words(capsys.readouterr().out)
    for said in (text.description, *text.options.values()):
        assert words(said) in shown, said


async def test_help_lists_every_command_in_the_members_language(
    fake_discord: FakeDiscord, settings: Settings, worker: str
) -> None:
    world = build_world(fake_discord)
    marie = fake_discord.add_user("marie", locale="fr")
    fake_discord.add_member(world.guild, marie)
    async with running_bot(fake_discord, settings, worker) as bot:
        synced = fake_discord.commands()
        inter = await fake_discord.send_slash("help", {}, user=world.alice, channel=world.channel)
        reply = await inter.wait_message(lambda m: m.ephemeral, timeout=15)
        listing = embed_of(reply)["description"]
        for command in synced:
            subcommands = [o for o in command.options if o["type"] in (1, 2)]
            described = [o["description"] for o in subcommands] or [command.description]
            for description in described:
                assert description in listing, (command.name, description)
        assert IMAGINE.options["steps"] not in listing  # options only for one command

        inter = await fake_discord.send_slash(
            "help", {"command": "imagine"}, user=marie, channel=world.channel
        )
        reply = await inter.wait_message(lambda m: m.ephemeral, timeout=15)
        french = embed_of(reply)["description"]
        catalogues = bot.catalogues
        for option in ("steps", "width"):
            translated = catalogues.lookup("fr", IMAGINE.options[option], Context.DESCRIPTION)
            assert translated and translated != IMAGINE.options[option]
            assert translated in french
        assert catalogues.lookup("fr", IMAGINE.description, Context.DESCRIPTION) in french

        inter = await fake_discord.send_slash(
            "help", {"command": "nope"}, user=world.alice, channel=world.channel
        )
        reply = await inter.wait_message(lambda m: m.ephemeral, timeout=15)
        assert "no command called `nope`" in reply.content
