"""Interactions the fake sends the bot: what the fake remembers of each, its payload, and the test's handle."""

import enum
import logging
import secrets
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from tests.fakediscord import payloads
from tests.fakediscord.errors import FakeDiscordError
from tests.fakediscord.models import (
    Callback,
    ChannelKind,
    Event,
    EventKind,
    FakeChannel,
    FakeGuild,
    FakeUser,
    Message,
)
from tests.fakediscord.world import World

log = logging.getLogger(__name__)

BOT_PERMISSIONS = (1 << 47) - 1 & ~(1 << 3)  # everything below "use external apps", minus Administrator


class InteractionKind(enum.IntEnum):
    """Discord's interaction types."""

    COMMAND = 2
    COMPONENT = 3
    AUTOCOMPLETE = 4
    MODAL_SUBMIT = 5


@dataclass
class InteractionRecord:
    """What the fake remembers about one interaction it sent, to answer its callback and webhook calls."""

    id: int
    token: str
    kind: InteractionKind
    user: FakeUser
    channel: FakeChannel
    guild: FakeGuild | None
    issued_at: float
    payload: dict[str, Any] = field(default_factory=dict)
    sent_at: float = 0.0
    source_message: Message | None = None
    callback: Callback | None = None
    original_id: int | None = None
    followup_ids: list[int] = field(default_factory=list)
    modal: dict[str, Any] | None = None
    expired: bool = False

    def token_alive(self, now: float, lifetime: float) -> bool:
        return not self.expired and now - self.issued_at < lifetime


def new_record(
    world: World,
    kind: InteractionKind,
    user: FakeUser,
    channel: FakeChannel,
    source_message: Message | None = None,
) -> InteractionRecord:
    guild = world.guilds.get(channel.guild_id) if channel.guild_id is not None else None
    token = f"aW50ZXJhY3Rpb24{secrets.token_urlsafe(48)}"
    return InteractionRecord(
        world.ids.next(), token, kind, user, channel, guild, world.clock.now(), source_message=source_message
    )


def build_payload(world: World, record: InteractionRecord, data: dict[str, Any]) -> dict[str, Any]:
    """The INTERACTION_CREATE body with every key discord.py 2.7 reads."""
    payload: dict[str, Any] = {
        "id": str(record.id),
        "application_id": str(world.application_id),
        "type": int(record.kind),
        "token": record.token,
        "version": 1,
        "data": data,
        "channel_id": str(record.channel.id),
        "channel": _channel(world, record.channel),
        "locale": record.user.locale,
        "app_permissions": str(BOT_PERMISSIONS),
        "entitlements": [],
        "entitlement_sku_ids": [],
        "attachment_size_limit": world.upload_limit(record.channel),
    }
    payload |= _who(world, record)
    if record.source_message is not None:
        payload["message"] = payloads.message(record.source_message)
    return payload


def _who(world: World, record: InteractionRecord) -> dict[str, Any]:
    """Guild interactions carry `member` (with permissions); DMs carry `user`."""
    if record.guild is None:
        return {
            "user": payloads.user(record.user),
            "context": 1,
            "authorizing_integration_owners": {"0": "0"},
        }
    member = world.member(record.guild.id, record.user.id)
    return {
        "guild_id": str(record.guild.id),
        "guild": {"id": str(record.guild.id), "locale": record.guild.preferred_locale, "features": []},
        "guild_locale": record.guild.preferred_locale,
        "member": payloads.member(member, world.permissions(member)),
        "context": 0,
        "authorizing_integration_owners": {"0": str(record.guild.id)},
    }


def _channel(world: World, channel: FakeChannel) -> dict[str, Any]:
    if channel.kind is ChannelKind.DM:
        return payloads.channel(channel, world.users.get(channel.recipient_id or 0))
    return payloads.channel(channel) | {"permissions": str(BOT_PERMISSIONS)}


class Interaction:
    """A test's handle on an interaction it sent: await the bot's response, follow-ups and edits."""

    def __init__(self, world: World, record: InteractionRecord) -> None:
        self._world = world
        self.record = record

    def __repr__(self) -> str:
        return f"<Interaction {self.record.kind.name} id={self.id} response={self.response}>"

    @property
    def id(self) -> int:
        return self.record.id

    @property
    def token(self) -> str:
        return self.record.token

    @property
    def response(self) -> Callback | None:
        """The bot's callback (defer, message, modal, …), or None while it has not answered."""
        return self.record.callback

    @property
    def latency(self) -> float | None:
        """Seconds from sending INTERACTION_CREATE to the callback's arrival."""
        return self.record.callback.latency if self.record.callback else None

    @property
    def modal(self) -> dict[str, Any]:
        """The modal the bot answered with (callback type 9)."""
        if self.record.modal is None:
            raise FakeDiscordError(f"interaction {self.id} was not answered with a modal: {self.response}")
        return self.record.modal

    def original(self) -> Message:
        """The response message (created by callback type 4 or 5; for 6/7 the clicked message), as it is
        now. Raises FakeDiscordError while there is none: await `wait_response()` first."""
        message = self._original()
        if message is None:
            raise FakeDiscordError(f"{self!r} has no response message (yet)")
        return message

    def _original(self) -> Message | None:
        if self.record.original_id is None:
            return None
        return self._world.messages.get(self.record.original_id)

    def followups(self) -> list[Message]:
        """Messages sent through the follow-up webhook, oldest first. The first one after a deferred
        response is that response itself (Discord replaces the "thinking…" message with it)."""
        return [self._world.messages[i] for i in self.record.followup_ids]

    def messages(self) -> list[Message]:
        """The original response (if any) then every follow-up."""
        original = self._original()
        rest = [m for m in self.followups() if original is None or m.id != original.id]
        return ([original] if original else []) + rest

    def expire(self) -> None:
        """Make this interaction's token invalid, as 15 minutes would."""
        self.record.expired = True

    async def wait_response(self, timeout: float = 10.0) -> Callback:  # noqa: ASYNC109 - a test-facing deadline
        await self._world.wait_until(lambda: self.record.callback, timeout, f"a response to {self!r}")
        assert self.record.callback is not None
        return self.record.callback

    async def wait_followups(self, count: int = 1, timeout: float = 10.0) -> list[Message]:  # noqa: ASYNC109 - a test-facing deadline
        """The first `count` follow-up messages, once they exist."""
        await self._world.wait_until(
            lambda: len(self.record.followup_ids) >= count, timeout, f"{count} follow-ups to {self!r}"
        )
        return self.followups()[:count]

    async def wait_original(
        self,
        predicate: Callable[[Message], object] | None = None,
        timeout: float = 10.0,  # noqa: ASYNC109 - a test-facing deadline
    ) -> Message:
        """The original response once it exists and `predicate(message)` holds (e.g. it was edited)."""

        def ready() -> Message | None:
            message = self._original()
            if message is None or (predicate is not None and not predicate(message)):
                return None
            return message

        return await self._world.wait_until(ready, timeout, f"the original response of {self!r}")

    async def wait_message(self, predicate: Callable[[Message], object], timeout: float = 10.0) -> Message:  # noqa: ASYNC109 - a test-facing deadline
        """Any message this interaction produced (original or follow-up) for which `predicate` holds;
        a deferred response's "thinking…" placeholder is skipped until the bot edits it."""

        def found() -> Message | None:
            return next((m for m in self.messages() if not m.loading and predicate(m)), None)

        return await self._world.wait_until(found, timeout, f"a matching message from {self!r}")

    async def wait_event(self, kind: EventKind, timeout: float = 10.0) -> Event:  # noqa: ASYNC109 - a test-facing deadline
        return await self._world.wait_for(
            lambda e: e.kind is kind and e.interaction_id == self.id, timeout, f"{kind} for {self!r}"
        )
