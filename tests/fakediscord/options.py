"""Slash-command option values and `resolved` data built the way Discord builds them from a command's schema."""

import logging
import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from tests.fakediscord import payloads
from tests.fakediscord.errors import FakeDiscordError
from tests.fakediscord.models import (
    Attachment,
    FakeChannel,
    FakeGuild,
    FakeMember,
    FakeRole,
    FakeUser,
    RegisteredCommand,
)
from tests.fakediscord.world import World

log = logging.getLogger(__name__)

SUBCOMMAND, GROUP = 1, 2
STRING, INTEGER, BOOLEAN, USER, CHANNEL, ROLE, MENTIONABLE, NUMBER, ATTACHMENT = 3, 4, 5, 6, 7, 8, 9, 10, 11


@dataclass(frozen=True)
class Upload:
    """A file a user attaches to a slash command option (type 11)."""

    filename: str
    data: bytes
    content_type: str | None = None


@dataclass
class Resolved:
    """The `resolved` block of an interaction: the objects that snowflake option values point at."""

    users: dict[str, Any] = field(default_factory=dict)
    members: dict[str, Any] = field(default_factory=dict)
    roles: dict[str, Any] = field(default_factory=dict)
    channels: dict[str, Any] = field(default_factory=dict)
    attachments: dict[str, Any] = field(default_factory=dict)

    def payload(self) -> dict[str, Any]:
        return {k: v for k, v in vars(self).items() if v}


@dataclass
class OptionBuilder:
    """Turns `{"name": python value}` into Discord's typed option list for one invocation."""

    world: World
    guild: FakeGuild | None
    channel: FakeChannel
    validate: bool = True
    focused: str | None = None
    resolved: Resolved = field(default_factory=Resolved)
    uploads: list[Attachment] = field(default_factory=list)

    def build(
        self, command: RegisteredCommand, path: list[str], values: Mapping[str, Any]
    ) -> list[dict[str, Any]]:
        """The `data.options` list, nested under subcommand groups/subcommands named by `path`."""
        schema = command.options
        for name in path:
            parent = next((o for o in schema if o["name"] == name and o["type"] in (SUBCOMMAND, GROUP)), None)
            if parent is None:
                raise FakeDiscordError(f"/{command.name} has no subcommand {name!r}")
            schema = parent.get("options") or []
        subcommands = [o["name"] for o in schema if o["type"] in (SUBCOMMAND, GROUP)]
        if subcommands:
            raise FakeDiscordError(f"/{' '.join([command.name, *path])} needs one of {subcommands}")
        leaf = [self._option(self._schema(command, schema, name), value) for name, value in values.items()]
        self._check_required(command, schema, values)
        return self._nest(command, path, leaf)

    def _nest(
        self, command: RegisteredCommand, path: list[str], leaf: list[dict[str, Any]]
    ) -> list[dict[str, Any]]:
        options = leaf
        schema = command.options
        kinds = []
        for name in path:
            parent = next(o for o in schema if o["name"] == name)
            kinds.append(parent["type"])
            schema = parent.get("options") or []
        for name, kind in reversed(list(zip(path, kinds, strict=True))):
            options = [{"type": kind, "name": name, "options": options}]
        return options

    def _schema(self, command: RegisteredCommand, schema: list[dict[str, Any]], name: str) -> dict[str, Any]:
        found = next((o for o in schema if o["name"] == name and o["type"] not in (SUBCOMMAND, GROUP)), None)
        if found is None:
            known = [o["name"] for o in schema]
            raise FakeDiscordError(f"/{command.name} has no option {name!r}; it has {known}")
        return found

    def _check_required(
        self, command: RegisteredCommand, schema: list[dict[str, Any]], values: Mapping[str, Any]
    ) -> None:
        if not self.validate or self.focused is not None:
            return
        missing = [o["name"] for o in schema if o.get("required") and o["name"] not in values]
        if missing:
            raise FakeDiscordError(f"/{command.name} is missing required options {missing}")

    def _option(self, schema: dict[str, Any], value: Any) -> dict[str, Any]:
        kind, name = schema["type"], schema["name"]
        option: dict[str, Any] = {"type": kind, "name": name}
        if name == self.focused:
            option["focused"] = True
            option["value"] = str(value)
            return option
        option["value"] = self._value(schema, value)
        if self.validate:
            _check_value(schema, option["value"])
        return option

    def _value(self, schema: dict[str, Any], value: Any) -> Any:
        kind = schema["type"]
        if kind == STRING:
            return str(value)
        if kind == INTEGER:
            if isinstance(value, bool) or not isinstance(value, int):
                raise FakeDiscordError(f"option {schema['name']!r} takes an int, got {value!r}")
            return value
        if kind == NUMBER:
            return float(value)
        if kind == BOOLEAN:
            return bool(value)
        return self._snowflake(schema, value)

    def _snowflake(self, schema: dict[str, Any], value: Any) -> str:
        kind = schema["type"]
        if kind == ATTACHMENT:
            return self._attachment(value)
        if isinstance(value, FakeMember):
            value = value.user
        if isinstance(value, FakeUser) and kind in (USER, MENTIONABLE):
            return self._user(value)
        if isinstance(value, FakeRole) and kind in (ROLE, MENTIONABLE):
            self.resolved.roles[str(value.id)] = payloads.role(value)
            return str(value.id)
        if isinstance(value, FakeChannel) and kind == CHANNEL:
            allowed = schema.get("channel_types")
            if self.validate and allowed and int(value.kind) not in allowed:
                raise FakeDiscordError(f"option {schema['name']!r} only takes channel types {allowed}")
            return self._channel(value)
        raise FakeDiscordError(f"option {schema['name']!r} (type {kind}) cannot take {value!r}")

    def _user(self, user: FakeUser) -> str:
        self.resolved.users[str(user.id)] = payloads.user(user)
        member = self.world.members.get((self.guild.id, user.id)) if self.guild else None
        if member is not None:
            data = payloads.member(member, self.world.permissions(member))
            del data["user"]
            self.resolved.members[str(user.id)] = data
        return str(user.id)

    def _channel(self, channel: FakeChannel) -> str:
        data = payloads.channel(channel)
        if channel.guild_id is not None:
            bot = self.world.member(channel.guild_id, self.world.bot_user.id)
            data["permissions"] = str(self.world.permissions(bot))
        self.resolved.channels[str(channel.id)] = data
        return str(channel.id)

    def _attachment(self, value: Any) -> str:
        if not isinstance(value, Upload):
            raise FakeDiscordError(
                f"an attachment option takes tests.fakediscord.Upload, got {type(value).__name__}"
            )
        attachment = self.world.new_attachment(
            self.channel.id, value.filename, value.data, value.content_type, ephemeral=True
        )
        self.uploads.append(attachment)
        self.resolved.attachments[str(attachment.id)] = payloads.attachment(attachment)
        return str(attachment.id)


def _check_value(schema: dict[str, Any], value: Any) -> None:
    """What Discord's client refuses to send: a value outside the choices, range or length."""
    name = schema["name"]
    choices = schema.get("choices")
    if choices and value not in [c["value"] for c in choices]:
        raise FakeDiscordError(
            f"option {name!r}: {value!r} is not one of its choices (validate=False to force)"
        )
    if isinstance(value, int | float) and not isinstance(value, bool):
        low, high = schema.get("min_value", -math.inf), schema.get("max_value", math.inf)
        if not low <= value <= high:
            raise FakeDiscordError(
                f"option {name!r}: {value!r} is outside [{low}, {high}] (validate=False to force)"
            )
    if isinstance(value, str):
        low, high = schema.get("min_length", 0), schema.get("max_length", 6000)
        if not low <= len(value) <= high:
            raise FakeDiscordError(
                f"option {name!r}: length {len(value)} outside [{low}, {high}] (validate=False to force)"
            )
