"""`FakeDiscord`: the local Discord a test starts, fills with guilds and users, and drives the real bot through."""

import logging
import time
from collections.abc import Callable, Mapping, Sequence
from types import TracebackType
from typing import Any, Self, TypeVar

from aiohttp import web

from tests.fakediscord import payloads
from tests.fakediscord.errors import ApiError, FakeDiscordError
from tests.fakediscord.gateway import Gateway
from tests.fakediscord.interactions import (
    Interaction,
    InteractionKind,
    InteractionRecord,
    build_payload,
    new_record,
)
from tests.fakediscord.modals import ModalValues, fill_modal
from tests.fakediscord.models import (
    ADMINISTRATOR,
    ChannelKind,
    Choice,
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
)
from tests.fakediscord.options import OptionBuilder, Upload
from tests.fakediscord.rest import Fault, Interactions, Rest, RestOptions
from tests.fakediscord.world import World

log = logging.getLogger(__name__)
T = TypeVar("T")

DEFAULT_EVERYONE_PERMISSIONS = 1071698660929  # what Discord gives @everyone in a new server
SELECT_TYPES = (3, 5, 6, 7, 8)


class FakeDiscord:
    """A Discord REST API v10 + gateway on 127.0.0.1 for the real discord.py client, with test controls.

    Use as ``async with FakeDiscord() as fake:``; point the bot at it with
    ``bot.endpoints.use_discord_endpoints(fake.api_base, fake.gateway_url)`` and log in with ``fake.token``.
    Build the world (guilds, channels, users) before the bot connects: GUILD_CREATE is sent at IDENTIFY.
    """

    def __init__(
        self,
        *,
        token: str = "fake-bot-token",
        bot_name: str = "brushfire",
        heartbeat_interval: float = 41.25,
        ack_deadline: float | None = None,
        token_lifetime: float = 15 * 60,
        client_max_size: int = 64 * 1024 * 1024,
    ) -> None:
        """`ack_deadline` (seconds, e.g. 3.0) makes late callbacks fail with 10062 as Discord does; off by
        default so slow CI machines do not fail tests that are not about latency."""
        self.world = World(bot_name)
        self.gateway = Gateway(self.world, token, heartbeat_interval)
        self.interactions = Interactions()
        self.rest = Rest(
            self.world, self.gateway, self.interactions, RestOptions(token, ack_deadline, token_lifetime)
        )
        self._client_max_size = client_max_size
        self._runner: web.AppRunner | None = None
        self.url = ""
        self.api_base = ""
        self.gateway_url = ""

    # -- lifecycle -----------------------------------------------------------------------------

    async def start(self) -> Self:
        app = web.Application(client_max_size=self._client_max_size)
        self.rest.add_to(app)
        self._runner = web.AppRunner(app, handle_signals=False, access_log=None)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0)
        await site.start()
        host, port = self._runner.addresses[0][:2]
        self.url = f"http://{host}:{port}"
        self.api_base = f"{self.url}/api/v10"
        self.gateway_url = f"ws://{host}:{port}/gateway"
        self.world.base_url = self.url
        self.gateway.url = self.gateway_url
        log.info("fake discord listening on %s", self.url)
        return self

    async def stop(self) -> None:
        await self.gateway.close_all()
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None

    async def __aenter__(self) -> Self:
        return await self.start()

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.stop()

    # -- identity ------------------------------------------------------------------------------

    @property
    def token(self) -> str:
        """The bot token the fake accepts (REST `Authorization: Bot …` and gateway IDENTIFY)."""
        return self.gateway.token

    @property
    def application_id(self) -> int:
        return self.world.application_id

    @property
    def bot_user(self) -> FakeUser:
        return self.world.bot_user

    @property
    def ack_deadline(self) -> float | None:
        """Seconds within which a callback must arrive or get 10062 (None: not enforced)."""
        return self.rest.options.ack_deadline

    @ack_deadline.setter
    def ack_deadline(self, seconds: float | None) -> None:
        self.rest.options.ack_deadline = seconds

    @property
    def clock(self) -> FakeClock:
        """`FakeClock`: `fake.clock.advance(16 * 60)` expires every interaction token issued so far."""
        return self.world.clock

    # -- building the world --------------------------------------------------------------------

    def add_user(
        self, name: str, *, dms_open: bool = True, bot: bool = False, locale: str = "en-US"
    ) -> FakeUser:
        user = FakeUser(self.world.ids.next(), name, bot=bot, dms_open=dms_open, locale=locale)
        self.world.users[user.id] = user
        return user

    def add_guild(
        self,
        name: str = "Test Guild",
        *,
        owner: FakeUser | None = None,
        premium_tier: int = 0,
        upload_limit: int = 10 * 1024 * 1024,
        everyone_permissions: int = DEFAULT_EVERYONE_PERMISSIONS,
        preferred_locale: str = "en-US",
    ) -> FakeGuild:
        """A guild with an @everyone role, its owner and the bot as members; add channels separately."""
        owner = owner or self.add_user(f"{name.lower().replace(' ', '-')}-owner")
        guild = FakeGuild(
            self.world.ids.next(),
            name,
            owner.id,
            premium_tier,
            upload_limit,
            preferred_locale=preferred_locale,
        )
        self.world.guilds[guild.id] = guild
        self.world.roles[guild.id] = FakeRole(guild.id, guild.id, "@everyone", everyone_permissions)
        self.add_member(guild, owner)
        bot_role = self.add_role(
            guild, self.bot_user.name, permissions=DEFAULT_EVERYONE_PERMISSIONS | 0x1F4A7C40
        )
        self.add_member(guild, self.bot_user, roles=[bot_role])
        return guild

    def add_role(self, guild: FakeGuild, name: str, *, permissions: int = 0) -> FakeRole:
        position = len(self.world.guild_roles(guild.id))
        role = FakeRole(self.world.ids.next(), guild.id, name, permissions, position)
        self.world.roles[role.id] = role
        return role

    def add_channel(
        self,
        guild: FakeGuild,
        name: str,
        *,
        kind: ChannelKind = ChannelKind.TEXT,
        parent: FakeChannel | None = None,
        nsfw: bool = False,
    ) -> FakeChannel:
        channel = FakeChannel(
            self.world.ids.next(), name, kind, guild.id, parent.id if parent else None, nsfw=nsfw
        )
        self.world.channels[channel.id] = channel
        return channel

    def add_member(
        self,
        guild: FakeGuild,
        user: FakeUser | str,
        *,
        roles: Sequence[FakeRole] = (),
        permissions: int | None = None,
        nick: str | None = None,
    ) -> FakeMember:
        """Make `user` (or a new user of that name) a member. `permissions` overrides what roles grant."""
        if isinstance(user, str):
            user = self.add_user(user)
        member = FakeMember(user, guild.id, [r.id for r in roles], permissions, nick)
        self.world.members[(guild.id, user.id)] = member
        return member

    def channel(self, channel_id: int) -> FakeChannel:
        """Any channel or thread the fake knows, deleted ones included."""
        try:
            return self.world.channels[channel_id]
        except KeyError:
            raise FakeDiscordError(f"no channel {channel_id}") from None

    def channels(self, guild: FakeGuild) -> list[FakeChannel]:
        """The guild's live channels and threads."""
        return self.world.guild_channels(guild.id)

    def thread_of(self, message: Message) -> FakeChannel:
        """The thread the bot started from `message`."""
        if message.thread_id is None:
            raise FakeDiscordError(f"no thread was started from message {message.id}")
        return self.world.channels[message.thread_id]

    def role(self, guild: FakeGuild, name: str) -> FakeRole:
        found = next((r for r in self.world.guild_roles(guild.id) if r.name == name), None)
        if found is None:
            raise FakeDiscordError(f"guild {guild.name!r} has no role {name!r}")
        return found

    def dm_channel(self, user: FakeUser) -> FakeChannel:
        """The DM channel between the bot and `user` (created on first use, as Discord does)."""
        return self.world.dm_channel(user)

    async def refresh_guild(self, guild: FakeGuild) -> None:
        """Tell a connected bot about channels, roles and members added after it connected."""
        await self.gateway.dispatch_if_connected("GUILD_CREATE", self.gateway.guild_payload(guild.id))

    def close_dms(self, user: FakeUser) -> None:
        """From now on the bot's DMs to `user` fail with 403 50007."""
        user.dms_open = False

    # -- sessions ------------------------------------------------------------------------------

    @property
    def connected(self) -> bool:
        return self.gateway.connected

    @property
    def identify_count(self) -> int:
        """How many times a bot has IDENTIFYed: 2 after a restart."""
        return len(self.gateway.sessions)

    async def wait_connected(self, timeout: float = 15.0, *, identifies: int = 1) -> None:  # noqa: ASYNC109 - a test-facing deadline
        """Until at least `identifies` sessions have been started and the newest one is connected."""
        await self.world.wait_until(
            lambda: self.identify_count >= identifies and self.gateway.connected,
            timeout,
            f"a bot connected to the gateway (identify #{identifies})",
        )

    async def disconnect_bot(self, *, code: int = 4000, resumable: bool = True) -> None:
        """Drop the bot's websocket; it reconnects and RESUMEs (or re-IDENTIFYs if not resumable)."""
        await self.gateway.disconnect(code, resumable)

    async def invalidate_session(self) -> None:
        await self.gateway.invalidate()

    # -- commands ------------------------------------------------------------------------------

    def commands(self, guild: FakeGuild | None = None) -> list[RegisteredCommand]:
        """Commands the bot synced: global ones, or those of `guild`."""
        return list(self.world.commands.get(guild.id if guild else None, []))

    def command(self, name: str, guild: FakeGuild | None = None) -> RegisteredCommand:
        """A synced command by name: the guild's first, then global."""
        scopes = ([guild.id] if guild else []) + [None]
        for scope in scopes:
            for command in self.world.commands.get(scope, []):
                if command.name == name:
                    return command
        synced = {s: [c.name for c in cs] for s, cs in self.world.commands.items()}
        raise FakeDiscordError(f"no command {name!r} has been synced (synced: {synced}); did the bot sync?")

    async def wait_commands(self, *names: str, guild: FakeGuild | None = None, timeout: float = 15.0) -> None:  # noqa: ASYNC109 - a test-facing deadline
        """Until the bot has synced commands with all these names (globally or for `guild`)."""

        def synced() -> bool:
            scopes = [None] + ([guild.id] if guild else [])
            have = {c.name for s in scopes for c in self.world.commands.get(s, [])}
            return bool(have) and set(names) <= have

        await self.world.wait_until(synced, timeout, f"commands {names} synced")

    # -- sending interactions ------------------------------------------------------------------

    async def send_slash(
        self,
        name: str,
        options: Mapping[str, Any] | None = None,
        *,
        user: FakeUser,
        channel: FakeChannel | None = None,
        guild: FakeGuild | None = None,
        attachments: Mapping[str, Upload] | None = None,
        validate: bool = True,
    ) -> Interaction:
        """Invoke `/name` (subcommands: ``"quota-admin grant"``) as `user` in `channel` (None: a DM).

        Option values are plain Python values; users, roles and channels as the fake's objects; files
        as `Upload` (in `options` or `attachments`). Types come from the synced command's schema, and
        values Discord's client would refuse (choices, ranges) raise unless `validate=False`.
        """
        channel = self._where(user, channel, guild)
        top, *path = name.split()
        command = self.command(top, self._guild_of(channel))
        if validate:
            self._check_visible(command, user, channel)
        record = self._record(InteractionKind.COMMAND, user, channel)
        builder = OptionBuilder(self.world, record.guild, channel, validate)
        values = {**(options or {}), **(attachments or {})}
        data = self._command_data(command, builder.build(command, path, values), builder)
        return await self._send(record, data)

    async def autocomplete(
        self,
        name: str,
        options: Mapping[str, Any],
        focused: str,
        *,
        user: FakeUser,
        channel: FakeChannel | None = None,
        guild: FakeGuild | None = None,
        timeout: float = 10.0,  # noqa: ASYNC109 - a test-facing deadline
    ) -> list[Choice]:
        """Type into option `focused` of `/name` (its text is ``options[focused]``); the bot's choices."""
        channel = self._where(user, channel, guild)
        top, *path = name.split()
        command = self.command(top, self._guild_of(channel))
        record = self._record(InteractionKind.AUTOCOMPLETE, user, channel)
        builder = OptionBuilder(self.world, record.guild, channel, validate=False, focused=focused)
        data = self._command_data(command, builder.build(command, path, options), builder)
        interaction = await self._send(record, data)
        callback = await interaction.wait_response(timeout)
        if callback.type != 8:
            raise FakeDiscordError(f"autocomplete answered with callback type {callback.type}, not 8")
        return callback.choices

    async def click(
        self, message: Message, custom_id: str, *, user: FakeUser, values: Sequence[str] | None = None
    ) -> Interaction:
        """Press the button (or choose `values` in the select) `custom_id` on `message` as `user`."""
        if message.deleted:
            raise FakeDiscordError(f"message {message.id} was deleted; nothing to click")
        try:
            component = message.component(custom_id)
        except KeyError as exc:
            raise FakeDiscordError(str(exc)) from None
        if component.get("disabled"):
            raise FakeDiscordError(f"component {custom_id!r} is disabled; Discord's client cannot press it")
        channel = self.world.channels[message.channel_id]
        record = self._record(InteractionKind.COMPONENT, user, channel, message)
        data: dict[str, Any] = {"custom_id": custom_id, "component_type": component["type"]}
        if component["type"] in SELECT_TYPES:
            data["values"] = list(values or [])
        return await self._send(record, data)

    def note_author(self, guild: FakeGuild | None, user: FakeUser) -> None:
        """Count `user` as someone the bot may mention in `guild`: for jobs a test stored straight in the
        database (a crash before submission), whose author never sent the fake an interaction."""
        self.world.interactors.add((guild.id if guild else None, user.id))

    async def forge_click(
        self, message: Message, custom_id: str, *, user: FakeUser, component_type: int = 2
    ) -> Interaction:
        """Press a button `custom_id` that `message` does not have: what a modified client could send if
        Discord ever failed to check it. The payload is what Discord delivers from where `message` is
        (that server, that member's permissions), its `message` showing the forged button, so the bot's
        own checks are all that stand between the custom_id and the record it names."""
        if message.deleted:
            raise FakeDiscordError(f"message {message.id} was deleted; nothing to click")
        channel = self.world.channels[message.channel_id]
        self._where(user, channel, None)
        record = self._record(InteractionKind.COMPONENT, user, channel, message)
        data = {"custom_id": custom_id, "component_type": component_type}
        forged = {"type": 1, "components": [{"type": 2, "style": 1, "label": "?", "custom_id": custom_id}]}
        return await self._send(record, data, extra_components=[forged])

    async def submit_modal(
        self,
        source: Interaction | Message,
        values: ModalValues,
        *,
        user: FakeUser | None = None,
        custom_id: str | None = None,
    ) -> Interaction:
        """Fill and submit the modal the bot opened for `source` (the interaction it answered with the
        modal, or the message whose button opened it). `values` maps text-input custom_id → text."""
        if isinstance(values, str):
            raise FakeDiscordError(
                "submit_modal(source, values, *, custom_id=...): values maps input ids to text"
            )
        opener = self._modal_opener(source)
        modal = opener.modal or {}
        if custom_id is not None and custom_id != modal.get("custom_id"):
            raise FakeDiscordError(f"the open modal is {modal.get('custom_id')!r}, not {custom_id!r}")
        components = fill_modal(modal.get("components") or [], values)
        record = self._record(
            InteractionKind.MODAL_SUBMIT, user or opener.user, opener.channel, opener.source_message
        )
        return await self._send(record, {"custom_id": modal["custom_id"], "components": components})

    def _modal_opener(self, source: Interaction | Message) -> InteractionRecord:
        if isinstance(source, Interaction):
            if source.record.modal is None:
                raise FakeDiscordError(f"{source!r} was not answered with a modal")
            return source.record
        openers = [
            r
            for r in self.interactions.by_id.values()
            if r.modal is not None and r.source_message is not None and r.source_message.id == source.id
        ]
        if not openers:
            raise FakeDiscordError(f"no modal was opened from message {source.id}")
        return openers[-1]

    def _where(self, user: FakeUser, channel: FakeChannel | None, guild: FakeGuild | None) -> FakeChannel:
        channel = channel or self.world.dm_channel(user)
        if guild is not None and channel.guild_id != guild.id:
            raise FakeDiscordError(f"channel {channel.name!r} is not in guild {guild.name!r}")
        if channel.deleted:
            raise FakeDiscordError(f"channel {channel.name!r} was deleted")
        if channel.guild_id is not None and (channel.guild_id, user.id) not in self.world.members:
            raise FakeDiscordError(
                f"user {user.name!r} is not a member of the channel's guild; add_member first"
            )
        return channel

    def _check_visible(self, command: RegisteredCommand, user: FakeUser, channel: FakeChannel) -> None:
        """Discord's client offers no command the user may not see; a server owner can override that."""
        override = "pass validate=False to act as if a server owner allowed it in Integrations settings"
        if channel.guild_id is None:
            contexts = command.raw.get("contexts")
            if command.raw.get("dm_permission") is False or (contexts is not None and 1 not in contexts):
                raise FakeDiscordError(f"/{command.name} is not available in DMs")
            return
        if command.default_member_permissions is None:
            return
        required = int(command.default_member_permissions)
        have = self.world.permissions(self.world.member(channel.guild_id, user.id))
        allowed = bool(have & ADMINISTRATOR) if required == 0 else have & required == required
        if not allowed:
            raise FakeDiscordError(
                f"/{command.name} is hidden from {user.name} by default_member_permissions; {override}"
            )

    def _guild_of(self, channel: FakeChannel) -> FakeGuild | None:
        return self.world.guilds.get(channel.guild_id) if channel.guild_id is not None else None

    def _record(
        self, kind: InteractionKind, user: FakeUser, channel: FakeChannel, source: Message | None = None
    ) -> InteractionRecord:
        return new_record(self.world, kind, user, channel, source)

    def _command_data(
        self, command: RegisteredCommand, options: list[dict[str, Any]], builder: OptionBuilder
    ) -> dict[str, Any]:
        data: dict[str, Any] = {
            "id": str(command.id),
            "name": command.name,
            "type": command.type,
            "options": options,
        }
        if resolved := builder.resolved.payload():
            data["resolved"] = resolved
        if command.guild_id is not None:
            data["guild_id"] = str(command.guild_id)
        return data

    async def _send(
        self,
        record: InteractionRecord,
        data: dict[str, Any],
        extra_components: list[dict[str, Any]] | None = None,
    ) -> Interaction:
        if not self.gateway.connected:
            # Never drop an interaction into a dead socket: wait for the bot to resume or restart.
            await self.world.wait_until(
                lambda: self.gateway.connected, 15.0, "a bot connected to the gateway"
            )
        record.payload = build_payload(self.world, record, data)
        if extra_components and "message" in record.payload:
            message = record.payload["message"]
            message["components"] = [*message.get("components", []), *extra_components]
        self.world.interactors.add((record.guild.id if record.guild else None, record.user.id))
        self.interactions.add(record)
        record.sent_at = time.monotonic()
        await self.gateway.dispatch("INTERACTION_CREATE", record.payload)
        self.world.record(EventKind.INTERACTION_SENT, interaction_id=record.id, detail=record.kind.name)
        return Interaction(self.world, record)

    # -- records -------------------------------------------------------------------------------

    @property
    def events(self) -> list[Event]:
        return self.world.events

    def messages(self, channel: FakeChannel | None = None, *, include_deleted: bool = False) -> list[Message]:
        """Every message (optionally of one channel), oldest first; deleted ones only on request."""
        found = self.world.messages.values()
        return [
            m
            for m in found
            if (channel is None or m.channel_id == channel.id) and (include_deleted or not m.deleted)
        ]

    def message(self, message_id: int) -> Message:
        return self.world.messages[message_id]

    def dms(self, user: FakeUser) -> list[Message]:
        """The bot's messages in its DM channel with `user`."""
        return self.messages(self.world.dm_channel(user))

    def callback_latencies(self) -> list[float]:
        """Seconds from each INTERACTION_CREATE sent to its callback's arrival, in arrival order."""
        return [e.callback.latency for e in self.events if e.kind is EventKind.CALLBACK and e.callback]

    async def wait_for(self, predicate: Callable[[Event], object], timeout: float = 10.0) -> Event:  # noqa: ASYNC109 - a test-facing deadline
        """The first recorded event, past or future, for which `predicate(event)` holds."""
        return await self.world.wait_for(predicate, timeout)

    async def wait_until(
        self,
        condition: Callable[[], T | None],
        timeout: float = 10.0,  # noqa: ASYNC109 - a test-facing deadline
        what: str = "a condition",
    ) -> T:
        """Until `condition()` is truthy (re-checked on every recorded event); returns its value."""
        return await self.world.wait_until(condition, timeout, what)

    async def wait_message(
        self,
        predicate: Callable[[Message], object],
        timeout: float = 10.0,  # noqa: ASYNC109 - a test-facing deadline
        *,
        channel: FakeChannel | None = None,
    ) -> Message:
        """The first live message (already there or still to come) for which `predicate` holds;
        deferred responses' "thinking…" placeholders are skipped until the bot edits them."""
        existing = next((m for m in self.messages(channel) if not m.loading and predicate(m)), None)
        if existing is not None:
            return existing

        def matches(event: Event) -> bool:
            # Past messages were checked above; only ones created or edited from now on can start to match.
            m = event.message
            if m is None or m.deleted or m.loading or (channel is not None and m.channel_id != channel.id):
                return False
            return bool(predicate(m))

        start = len(self.world.events)
        event = await self.world.wait_for(matches, timeout, "a matching message", start=start)
        assert event.message is not None
        return event.message

    @property
    def unexpected_routes(self) -> list[str]:
        """`METHOD /path` of every request the fake had no route for."""
        return list(self.rest.unexpected)

    def assert_no_unexpected_routes(self) -> None:
        if self.rest.unexpected:
            raise AssertionError(f"the bot called routes the fake does not implement: {self.rest.unexpected}")

    # -- faults --------------------------------------------------------------------------------

    async def delete_message(self, message: Message) -> None:
        """A moderator deletes `message`: edits answer 10008 Unknown Message from now on."""
        self.world.delete_message(message, "by a moderator")
        event = {"id": str(message.id), "channel_id": str(message.channel_id)}
        if message.guild_id is not None:
            event["guild_id"] = str(message.guild_id)
        await self.gateway.dispatch_if_connected("MESSAGE_DELETE", event)

    async def delete_channel(self, channel: FakeChannel) -> None:
        """Delete `channel`: every call on it answers 10003 Unknown Channel."""
        channel.deleted = True
        self.world.record(EventKind.FAULT, detail=f"channel {channel.id} deleted")
        await self.gateway.dispatch_if_connected("CHANNEL_DELETE", payloads.channel(channel))

    def expire_tokens(self) -> None:
        """Every interaction token issued so far stops working (401 50027), as after 15 minutes."""
        for record in self.interactions.by_id.values():
            record.expired = True

    def inject_fault(self, method: str, path_contains: str, error: ApiError, *, times: int = 1) -> None:
        """Answer the next `times` requests matching method and path fragment with `error`."""
        self.rest.faults.append(Fault(method.upper(), path_contains, error, times))
