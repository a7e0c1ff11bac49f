"""Everything the fake Discord knows: registries of users, guilds and channels, the messages, the event log."""

import asyncio
import logging
import mimetypes
import re
import time
from collections.abc import Callable
from typing import Any, TypeVar

from tests.fakediscord.bodies import MessageBody, UploadedFile
from tests.fakediscord.errors import ApiError, FakeDiscordError, unknown_channel, unknown_message
from tests.fakediscord.models import (
    ADMINISTRATOR,
    ALL_PERMISSIONS,
    LOADING,
    Attachment,
    ChannelKind,
    Event,
    EventKind,
    FakeChannel,
    FakeClock,
    FakeGuild,
    FakeMember,
    FakeRole,
    FakeUser,
    Message,
    RegisteredCommand,
    SnowflakeFactory,
)
from tests.fakediscord.strict import StrictStats, resolve_mentions

log = logging.getLogger(__name__)
T = TypeVar("T")

USER_MENTION = re.compile(r"<@!?(\d+)>")
EDITABLE_FLAGS = 1 << 2  # SUPPRESS_EMBEDS; Discord ignores other flags on edit


class World:
    """The fake's state. Routes and the test-facing API both read and change it, on one event loop."""

    def __init__(self, bot_name: str) -> None:
        self.ids = SnowflakeFactory()
        self.clock = FakeClock()
        self.base_url = ""
        self.application_id = self.ids.next()
        self.bot_user = FakeUser(self.application_id, bot_name, bot=True)
        self.users: dict[int, FakeUser] = {self.bot_user.id: self.bot_user}
        self.guilds: dict[int, FakeGuild] = {}
        self.channels: dict[int, FakeChannel] = {}
        self.roles: dict[int, FakeRole] = {}
        self.members: dict[tuple[int, int], FakeMember] = {}
        self.messages: dict[int, Message] = {}
        self.attachments: dict[int, Attachment] = {}
        self.commands: dict[int | None, list[RegisteredCommand]] = {}
        self.events: list[Event] = []
        self._changed = asyncio.Event()
        self.strict = StrictStats()
        # (guild id or None for DMs, user id) of everyone who has used the bot: whom a bot may mean to ping.
        self.interactors: set[tuple[int | None, int]] = set()

    # -- the event log -------------------------------------------------------------------------

    def record(self, kind: EventKind, **fields: Any) -> Event:
        event = Event(kind, time.monotonic(), **fields)
        self.events.append(event)
        self._changed.set()
        return event

    async def wait_for(
        self,
        predicate: Callable[[Event], object],
        timeout: float,  # noqa: ASYNC109 - a test-facing deadline
        what: str = "",
        start: int = 0,
    ) -> Event:
        """The first recorded event from index `start` on (past or future) matching `predicate`."""
        deadline = time.monotonic() + timeout
        seen = start
        while True:
            for event in self.events[seen:]:
                if predicate(event):
                    return event
            seen = len(self.events)
            left = deadline - time.monotonic()
            if left <= 0:
                raise FakeDiscordError(
                    f"timed out after {timeout}s waiting for {what or predicate!r}; last events: {self.recent()}"
                )
            self._changed.clear()
            try:
                await asyncio.wait_for(self._changed.wait(), left)
            except TimeoutError:
                continue

    def recent(self, count: int = 8) -> str:
        """The last few events, for error messages."""
        return "; ".join(_describe(e) for e in self.events[-count:]) or "none"

    async def wait_until(self, condition: Callable[[], T | None], timeout: float, what: str) -> T:  # noqa: ASYNC109 - a test-facing deadline
        """Wait until `condition()` is truthy, re-checking after every recorded event; return its value."""
        found: list[T | None] = []

        def check(_: Event) -> bool:
            value = condition()
            found.append(value)
            return bool(value)

        if value := condition():
            return value
        await self.wait_for(check, timeout, what)
        value = found[-1]
        assert value is not None, "wait_for returns once check saw a truthy value"
        return value

    # -- registries ----------------------------------------------------------------------------

    def guild(self, guild_id: int) -> FakeGuild:
        try:
            return self.guilds[guild_id]
        except KeyError:
            raise ApiError(404, 10004, "Unknown Guild") from None

    def channel(self, channel_id: int) -> FakeChannel:
        found = self.channels.get(channel_id)
        if found is None or found.deleted:
            raise unknown_channel()
        return found

    def message(self, channel_id: int, message_id: int) -> Message:
        found = self.messages.get(message_id)
        if found is None or found.deleted or found.channel_id != channel_id:
            raise unknown_message()
        return found

    def member(self, guild_id: int, user_id: int) -> FakeMember:
        try:
            return self.members[(guild_id, user_id)]
        except KeyError:
            raise ApiError(404, 10007, "Unknown Member") from None

    def guild_roles(self, guild_id: int) -> list[FakeRole]:
        return [r for r in self.roles.values() if r.guild_id == guild_id]

    def guild_channels(self, guild_id: int) -> list[FakeChannel]:
        return [c for c in self.channels.values() if c.guild_id == guild_id and not c.deleted]

    def guild_members(self, guild_id: int) -> list[FakeMember]:
        return [m for (g, _), m in self.members.items() if g == guild_id]

    def permissions(self, member: FakeMember) -> int:
        """Guild-wide permissions: the override, or @everyone plus the member's roles (owner: all)."""
        if member.permissions is not None:
            return member.permissions
        guild = self.guild(member.guild_id)
        if guild.owner_id == member.user.id:
            return ALL_PERMISSIONS
        value = self.roles[guild.everyone_role_id].permissions
        for role_id in member.role_ids:
            value |= self.roles[role_id].permissions
        return ALL_PERMISSIONS if value & ADMINISTRATOR else value

    def dm_channel(self, user: FakeUser) -> FakeChannel:
        for found in self.channels.values():
            if found.kind is ChannelKind.DM and found.recipient_id == user.id:
                return found
        created = FakeChannel(self.ids.next(), "", ChannelKind.DM, recipient_id=user.id)
        self.channels[created.id] = created
        return created

    def upload_limit(self, channel: FakeChannel) -> int:
        if channel.guild_id is None:
            return 10 * 1024 * 1024
        return self.guild(channel.guild_id).upload_limit

    # -- messages ------------------------------------------------------------------------------

    def new_attachment(
        self, channel_id: int, filename: str, data: bytes, content_type: str | None, **extra: Any
    ) -> Attachment:
        attachment_id = self.ids.next()
        filename = filename.replace(" ", "_")  # Discord's own renaming; keeps the URL plain
        url = f"{self.base_url}/attachments/{channel_id}/{attachment_id}/{filename}"
        if content_type in (None, "application/octet-stream"):
            # discord.py uploads everything as octet-stream; Discord names the type from the filename.
            content_type = mimetypes.guess_type(filename)[0] or content_type
        attachment = Attachment(attachment_id, filename, data, url, content_type, **extra)
        self.attachments[attachment_id] = attachment
        return attachment

    def create_message(
        self,
        channel: FakeChannel,
        author: FakeUser,
        body: MessageBody,
        message_id: int | None = None,
        **fields: Any,
    ) -> Message:
        message_id = message_id or self.ids.next()
        message = Message(
            message_id, channel.id, channel.guild_id, author, created_at=self.clock.now(), **fields
        )
        payload = body.payload
        message.content = payload.get("content") or ""
        message.embeds = payload.get("embeds") or []
        message.components = payload.get("components") or []
        message.flags |= int(payload.get("flags") or 0)
        message.allowed_mentions = payload.get("allowed_mentions")
        message.mentions = self._mentioned(message.content)
        self._notify(message)
        message.attachments = self._attachments(message, body, existing=[])
        reference = payload.get("message_reference") or {}
        if reference.get("message_id"):
            message.reference_id = int(reference["message_id"])
            message.type = 19
        self.messages[message.id] = message
        self.record(EventKind.MESSAGE_CREATE, message=message, interaction_id=message.interaction_id)
        return message

    def edit_message(self, message: Message, body: MessageBody) -> Message:
        payload = body.payload
        attachments = self._attachments(message, body, existing=message.attachments)  # may refuse: first
        message.edits.append(message.snapshot(self.clock.now()))
        if "content" in payload:
            message.content = payload["content"] or ""
            message.mentions = self._mentioned(message.content)
            message.allowed_mentions = payload.get("allowed_mentions")
            self._notify(message)
        if "embeds" in payload:
            message.embeds = payload["embeds"] or []
        if "components" in payload:
            message.components = payload["components"] or []
        if payload.get("flags") is not None:
            message.flags = (message.flags & ~EDITABLE_FLAGS) | (int(payload["flags"]) & EDITABLE_FLAGS)
        message.attachments = attachments
        message.flags &= ~LOADING
        message.edited_at = self.clock.now()
        self.record(EventKind.MESSAGE_EDIT, message=message, interaction_id=message.interaction_id)
        return message

    def delete_message(self, message: Message, detail: str = "") -> None:
        message.deleted = True
        self.record(
            EventKind.MESSAGE_DELETE, message=message, interaction_id=message.interaction_id, detail=detail
        )

    def _audience(self, message: Message) -> dict[int, list[int]]:
        """Who can see a message, with their role ids: the guild's members, a DM's recipient, or for an
        ephemeral message only the member whose interaction it answers."""
        if message.ephemeral and message.interaction_user is not None:
            member = self.members.get((message.guild_id or 0, message.interaction_user.id))
            return {message.interaction_user.id: list(member.role_ids) if member else []}
        if message.guild_id is None:
            channel = self.channels.get(message.channel_id)
            return {channel.recipient_id: []} if channel and channel.recipient_id else {}
        return {m.user.id: list(m.role_ids) for m in self.guild_members(message.guild_id)}

    def _notify(self, message: Message) -> None:
        """Work out whom this version of the message notifies, and count any ping the bot did not mean."""
        found = resolve_mentions(message.content, message.allowed_mentions, self._audience(message))
        message.notified |= found.users
        self.strict.pings += len(found.users)
        for user_id in sorted(found.users):
            if user_id not in found.explicit or (message.guild_id, user_id) not in self.interactors:
                self.strict.stray_pings.append(
                    f"message {message.id} in channel {message.channel_id} notified {user_id}"
                    f" (allowed_mentions={message.allowed_mentions}): {message.content[:80]!r}"
                )
        if found.everyone:
            self.strict.stray_pings.append(f"message {message.id} pinged @everyone/@here")

    def _mentioned(self, content: str) -> list[FakeUser]:
        ids = dict.fromkeys(int(found) for found in USER_MENTION.findall(content))
        return [self.users[i] for i in ids if i in self.users]

    def _attachments(
        self, message: Message, body: MessageBody, existing: list[Attachment]
    ) -> list[Attachment]:
        """Discord's rule: `attachments` lists what the message keeps (old ids) and gains (file indexes)."""
        listed = body.payload.get("attachments")
        if listed is None:
            return [*existing, *(self._upload(message, f, None) for f in body.files.values())]
        kept = {a.id: a for a in existing}
        result = []
        for entry in listed:
            ref = int(entry["id"])
            if ref in kept:
                result.append(kept[ref])
            elif ref in body.files:
                result.append(self._upload(message, body.files[ref], entry))
            else:
                raise ApiError(400, 50035, f"Invalid Form Body: attachments: unknown attachment {ref}")
        return result

    def _upload(self, message: Message, file: UploadedFile, entry: dict[str, Any] | None) -> Attachment:
        entry = entry or {}
        filename = entry.get("filename") or file.filename
        description = entry.get("description")
        return self.new_attachment(
            message.channel_id, filename, file.data, file.content_type, description=description
        )


def _describe(event: Event) -> str:
    if event.message is not None and not event.detail:
        return f"{event.kind.value} message {event.message.id} {event.message.content[:40]!r}"
    return f"{event.kind.value} {event.detail}".strip()
