"""A local fake Discord (REST v10 + gateway) that the real discord.py client connects to in end-to-end tests."""

from tests.fakediscord.errors import ApiError, FakeDiscordError, RateLimited
from tests.fakediscord.interactions import Interaction, InteractionKind
from tests.fakediscord.models import (
    Attachment,
    Callback,
    ChannelKind,
    Choice,
    Event,
    EventKind,
    FakeChannel,
    FakeGuild,
    FakeMember,
    FakeRole,
    FakeUser,
    Message,
    MessageVersion,
    RegisteredCommand,
)
from tests.fakediscord.options import Upload
from tests.fakediscord.server import FakeDiscord

__all__ = [
    "ApiError",
    "Attachment",
    "Callback",
    "ChannelKind",
    "Choice",
    "Event",
    "EventKind",
    "FakeChannel",
    "FakeDiscord",
    "FakeDiscordError",
    "FakeGuild",
    "FakeMember",
    "FakeRole",
    "FakeUser",
    "Interaction",
    "InteractionKind",
    "Message",
    "MessageVersion",
    "RateLimited",
    "RegisteredCommand",
    "Upload",
]
