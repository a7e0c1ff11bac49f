"""A running brushfire bot on the fake Discord and a real tiny worker, for the end-to-end tests."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

from bot.client import ImageBot
from bot.core.services import open_services
from bot.core.settings import Settings
from tests.fakediscord import FakeChannel, FakeDiscord, FakeGuild, FakeUser, Interaction, Message
from tests.fakediscord.harness import run_bot

MANAGE_GUILD = 1 << 5


@dataclass
class World:
    """The server the tests play in: a guild, a channel, a member and an admin."""

    guild: FakeGuild
    channel: FakeChannel
    alice: FakeUser
    bob: FakeUser
    admin: FakeUser


def build_world(fake: FakeDiscord) -> World:
    admin = fake.add_user("admin")
    guild = fake.add_guild("Art Club", owner=admin)
    channel = fake.add_channel(guild, "studio")
    alice = fake.add_user("alice")
    bob = fake.add_user("bob")
    fake.add_member(guild, alice)
    fake.add_member(guild, bob)
    return World(guild, channel, alice, bob, admin)


@contextlib.asynccontextmanager
async def running_bot(fake: FakeDiscord, settings: Settings, worker_url: str) -> AsyncIterator[ImageBot]:
    """The real ImageBot with real services, connected to the fake and ready, commands synced."""
    async with open_services(settings, worker_url) as services:
        bot = ImageBot(services)
        async with run_bot(bot, fake):
            await fake.wait_commands("imagine", "edit", "quota", "quota-admin", "settings")
            yield bot


def is_result(message: Message) -> bool:
    return bool(message.attachments) and any("brushfire:edit:" in c for c in message.custom_ids())


def embed_of(message: Message) -> dict[str, Any]:
    """The message's first embed, for a message the test waited for as one that has an embed."""
    embed = message.embed
    assert embed is not None, f"expected an embed on {message.content!r}"
    return embed


def button(message: Message, action: str) -> str:
    """The custom_id of the first button on a message whose id starts with `brushfire:<action>:`."""
    return next(c for c in message.custom_ids() if c.startswith(f"brushfire:{action}:"))


async def ephemeral_reply(interaction: Interaction, timeout: float = 15.0) -> str:  # noqa: ASYNC109 - a test deadline
    """The text of the ephemeral answer an interaction got (a direct reply or a follow-up)."""
    message = await interaction.wait_message(lambda m: m.ephemeral, timeout=timeout)
    return message.content


async def admin_do(fake: FakeDiscord, world: World, name: str, options: dict[str, Any]) -> str:
    """Run an admin command as the server owner and return its ephemeral answer."""
    interaction = await fake.send_slash(name, options, user=world.admin, channel=world.channel)
    return await ephemeral_reply(interaction)
