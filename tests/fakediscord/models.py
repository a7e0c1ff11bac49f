"""The fake Discord's world and its records: users, guilds, channels, messages, callbacks and events."""

import enum
import logging
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

log = logging.getLogger(__name__)

DISCORD_EPOCH_MS = 1420070400000
EPHEMERAL = 1 << 6
LOADING = 1 << 7
ALL_PERMISSIONS = (1 << 53) - 1
ADMINISTRATOR = 1 << 3


class ChannelKind(enum.IntEnum):
    """Discord channel types the fake knows how to serve."""

    TEXT = 0
    DM = 1
    CATEGORY = 4
    PUBLIC_THREAD = 11
    PRIVATE_THREAD = 12
    FORUM = 15


class EventKind(enum.StrEnum):
    """What happened, as recorded in `FakeDiscord.events`."""

    IDENTIFY = "identify"
    RESUME = "resume"
    SESSION_CLOSED = "session_closed"
    COMMANDS_SYNCED = "commands_synced"
    INTERACTION_SENT = "interaction_sent"
    CALLBACK = "callback"
    MESSAGE_CREATE = "message_create"
    MESSAGE_EDIT = "message_edit"
    MESSAGE_DELETE = "message_delete"
    THREAD_CREATE = "thread_create"
    DM_CHANNEL = "dm_channel"
    FAULT = "fault"
    UNKNOWN_ROUTE = "unknown_route"


class SnowflakeFactory:
    """Makes unique, time-ordered Discord ids so `discord.utils.snowflake_time` stays sensible."""

    def __init__(self) -> None:
        self._last = 0

    def next(self) -> int:
        candidate = (int(time.time() * 1000) - DISCORD_EPOCH_MS) << 22
        self._last = max(candidate, self._last + 1)
        return self._last


class FakeClock:
    """Wall clock plus an offset a test can advance, e.g. past the 15 minutes an interaction token lives."""

    def __init__(self) -> None:
        self.offset = 0.0

    def now(self) -> float:
        return time.time() + self.offset

    def advance(self, seconds: float) -> None:
        self.offset += seconds


@dataclass
class FakeUser:
    """A Discord account; the bot is one too."""

    id: int
    name: str
    bot: bool = False
    global_name: str | None = None
    dms_open: bool = True
    locale: str = "en-US"  # the Discord client's language, sent as each interaction's `locale`

    @property
    def mention(self) -> str:
        return f"<@{self.id}>"


@dataclass
class FakeRole:
    """A guild role; `permissions` is Discord's permission bit field."""

    id: int
    guild_id: int
    name: str
    permissions: int = 0
    position: int = 0


@dataclass
class FakeChannel:
    """A guild channel, thread or DM channel."""

    id: int
    name: str
    kind: ChannelKind
    guild_id: int | None = None
    parent_id: int | None = None
    recipient_id: int | None = None
    owner_id: int | None = None
    nsfw: bool = False
    deleted: bool = False

    @property
    def is_thread(self) -> bool:
        return self.kind in (ChannelKind.PUBLIC_THREAD, ChannelKind.PRIVATE_THREAD)


@dataclass
class FakeMember:
    """A user's membership in a guild. `permissions` overrides the sum of the roles' permissions."""

    user: FakeUser
    guild_id: int
    role_ids: list[int] = field(default_factory=list)
    permissions: int | None = None
    nick: str | None = None


@dataclass
class FakeGuild:
    """A guild; its channels, roles and members live in the fake's registries under its id."""

    id: int
    name: str
    owner_id: int
    premium_tier: int = 0
    upload_limit: int = 10 * 1024 * 1024
    preferred_locale: str = "en-US"  # the server's language (interactions' `guild_locale`)

    @property
    def everyone_role_id(self) -> int:
        return self.id


@dataclass
class Attachment:
    """A file on a message (or uploaded by a user for a command), with its bytes."""

    id: int
    filename: str
    data: bytes
    url: str
    content_type: str | None = None
    description: str | None = None
    ephemeral: bool = False

    @property
    def size(self) -> int:
        return len(self.data)


@dataclass(frozen=True)
class MessageVersion:
    """What a message looked like before an edit replaced it."""

    content: str
    embeds: list[dict[str, Any]]
    components: list[dict[str, Any]]
    attachments: list[Attachment]
    flags: int
    at: float


@dataclass
class Message:
    """A message as the fake holds it; edits update it in place and push the old version on `edits`."""

    id: int
    channel_id: int
    guild_id: int | None
    author: FakeUser
    content: str = ""
    embeds: list[dict[str, Any]] = field(default_factory=list)
    components: list[dict[str, Any]] = field(default_factory=list)
    attachments: list[Attachment] = field(default_factory=list)
    flags: int = 0
    type: int = 0
    created_at: float = 0.0
    edited_at: float | None = None
    edits: list[MessageVersion] = field(default_factory=list)
    deleted: bool = False
    interaction_id: int | None = None
    webhook_id: int | None = None
    reference_id: int | None = None
    thread_id: int | None = None
    allowed_mentions: dict[str, Any] | None = None
    interaction_user: FakeUser | None = None
    mentions: list[FakeUser] = field(default_factory=list)
    interaction_type: int | None = None
    # Everyone this message notified, at creation or by an edit (Discord recomputes mentions on edit).
    notified: set[int] = field(default_factory=set)

    @property
    def ephemeral(self) -> bool:
        return bool(self.flags & EPHEMERAL)

    @property
    def loading(self) -> bool:
        """True for a deferred ("thinking…") response that has not been edited yet."""
        return bool(self.flags & LOADING)

    @property
    def embed(self) -> dict[str, Any] | None:
        return self.embeds[0] if self.embeds else None

    def pings(self, user: FakeUser) -> bool:
        """Whether Discord notified `user` with this message (mentioned, allowed by `allowed_mentions`
        and the client default, and able to see it), now or in any earlier version."""
        return user.id in self.notified

    def snapshot(self, at: float) -> MessageVersion:
        return MessageVersion(
            self.content, list(self.embeds), list(self.components), list(self.attachments), self.flags, at
        )

    def walk_components(self) -> Iterator[dict[str, Any]]:
        """Every component on the message, nested ones included."""
        yield from walk_components(self.components)

    def custom_ids(self) -> list[str]:
        return [c["custom_id"] for c in self.walk_components() if "custom_id" in c]

    def component(self, custom_id: str) -> dict[str, Any]:
        for component in self.walk_components():
            if component.get("custom_id") == custom_id:
                return component
        raise KeyError(f"message {self.id} has no component {custom_id!r}; it has {self.custom_ids()}")


def walk_components(components: list[dict[str, Any]]) -> Iterator[dict[str, Any]]:
    for component in components:
        yield component
        yield from walk_components(component.get("components", []))
        if "component" in component:
            yield from walk_components([component["component"]])
        if "accessory" in component:
            yield from walk_components([component["accessory"]])


@dataclass(frozen=True)
class Choice:
    """An autocomplete choice the bot offered."""

    name: str
    value: str | int | float


@dataclass
class Callback:
    """The bot's answer to an interaction (`POST /interactions/{id}/{token}/callback`)."""

    interaction_id: int
    type: int
    data: dict[str, Any] | None
    received_at: float
    latency: float
    message_id: int | None = None

    @property
    def choices(self) -> list[Choice]:
        return [Choice(c["name"], c["value"]) for c in (self.data or {}).get("choices", [])]


@dataclass
class RegisteredCommand:
    """An application command the bot synced; `guild_id` is None for a global command."""

    id: int
    name: str
    type: int
    description: str
    options: list[dict[str, Any]]
    guild_id: int | None
    default_member_permissions: str | None
    raw: dict[str, Any]


@dataclass
class Event:
    """One recorded happening; which fields are set depends on `kind`."""

    kind: EventKind
    at: float
    message: Message | None = None
    callback: Callback | None = None
    interaction_id: int | None = None
    detail: str = ""
