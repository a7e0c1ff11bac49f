"""Discord API v10 JSON shapes for the fake's objects, with the keys discord.py 2.7 reads."""

import datetime
import logging
from typing import Any

from tests.fakediscord.models import (
    Attachment,
    ChannelKind,
    FakeChannel,
    FakeGuild,
    FakeMember,
    FakeRole,
    FakeUser,
    Message,
)

log = logging.getLogger(__name__)

JOINED_AT = "2024-01-01T00:00:00+00:00"


def iso(timestamp: float) -> str:
    return datetime.datetime.fromtimestamp(timestamp, datetime.UTC).isoformat()


def user(u: FakeUser) -> dict[str, Any]:
    return {
        "id": str(u.id),
        "username": u.name,
        "global_name": u.global_name,
        "discriminator": "0",
        "avatar": None,
        "bot": u.bot,
        "public_flags": 0,
        "flags": 0,
    }


def member(m: FakeMember, permissions: int | None = None) -> dict[str, Any]:
    """A member with its user; `permissions` is only present in interaction payloads."""
    data: dict[str, Any] = {
        "user": user(m.user),
        "roles": [str(r) for r in m.role_ids],
        "nick": m.nick,
        "avatar": None,
        "joined_at": JOINED_AT,
        "premium_since": None,
        "deaf": False,
        "mute": False,
        "pending": False,
        "flags": 0,
    }
    if permissions is not None:
        data["permissions"] = str(permissions)
    return data


def role(r: FakeRole) -> dict[str, Any]:
    return {
        "id": str(r.id),
        "name": r.name,
        "permissions": str(r.permissions),
        "position": r.position,
        "color": 0,
        "colors": {"primary_color": 0, "secondary_color": None, "tertiary_color": None},
        "hoist": False,
        "managed": False,
        "mentionable": False,
        "icon": None,
        "unicode_emoji": None,
        "flags": 0,
    }


def channel(c: FakeChannel, recipient: FakeUser | None = None) -> dict[str, Any]:
    if c.kind is ChannelKind.DM:
        return {
            "id": str(c.id),
            "type": int(c.kind),
            "last_message_id": None,
            "recipients": [user(recipient)] if recipient else [],
        }
    data: dict[str, Any] = {
        "id": str(c.id),
        "type": int(c.kind),
        "name": c.name,
        "guild_id": str(c.guild_id),
        "position": 0,
        "parent_id": str(c.parent_id) if c.parent_id else None,
        "nsfw": c.nsfw,
        "permission_overwrites": [],
        "topic": None,
        "last_message_id": None,
        "rate_limit_per_user": 0,
        "flags": 0,
    }
    if c.kind is ChannelKind.FORUM:
        data |= {"available_tags": [], "default_reaction_emoji": None, "default_sort_order": None}
        data |= {"default_forum_layout": 0, "default_thread_rate_limit_per_user": 0}
    if c.is_thread:
        data |= thread_fields(c)
    return data


def thread_fields(c: FakeChannel) -> dict[str, Any]:
    return {
        "owner_id": str(c.owner_id),
        "message_count": 0,
        "member_count": 1,
        "total_message_sent": 0,
        "applied_tags": [],
        "thread_metadata": {
            "archived": False,
            "auto_archive_duration": 1440,
            "archive_timestamp": JOINED_AT,
            "locked": False,
            "invitable": True,
            "create_timestamp": JOINED_AT,
        },
    }


def guild(
    g: FakeGuild,
    roles: list[FakeRole],
    channels: list[FakeChannel],
    members: list[FakeMember],
) -> dict[str, Any]:
    """The full GUILD_CREATE shape (also served by `GET /guilds/{id}`)."""
    return {
        "id": str(g.id),
        "name": g.name,
        "owner_id": str(g.owner_id),
        "icon": None,
        "features": [],
        "premium_tier": g.premium_tier,
        "preferred_locale": g.preferred_locale,
        "verification_level": 0,
        "default_message_notifications": 0,
        "explicit_content_filter": 0,
        "mfa_level": 0,
        "nsfw_level": 0,
        "system_channel_id": None,
        "roles": [role(r) for r in roles],
        "emojis": [],
        "stickers": [],
        "unavailable": False,
        "large": False,
        "member_count": len(members),
        "joined_at": JOINED_AT,
        "channels": [channel(c) for c in channels if not c.is_thread],
        "threads": [channel(c) for c in channels if c.is_thread],
        "members": [member(m) for m in members],
        "voice_states": [],
        "presences": [],
        "stage_instances": [],
        "guild_scheduled_events": [],
        "soundboard_sounds": [],
    }


def attachment(a: Attachment) -> dict[str, Any]:
    data: dict[str, Any] = {
        "id": str(a.id),
        "filename": a.filename,
        "size": a.size,
        "url": a.url,
        "proxy_url": a.url,
        "content_type": a.content_type,
        "description": a.description,
    }
    if a.ephemeral:
        data["ephemeral"] = True
    return data


def message(m: Message) -> dict[str, Any]:
    data: dict[str, Any] = {
        "id": str(m.id),
        "channel_id": str(m.channel_id),
        "author": user(m.author),
        "content": m.content,
        "timestamp": iso(m.created_at),
        "edited_timestamp": iso(m.edited_at) if m.edited_at else None,
        "tts": False,
        "mention_everyone": False,
        "mentions": [user(u) for u in m.mentions],
        "mention_roles": [],
        "attachments": [attachment(a) for a in m.attachments],
        "embeds": m.embeds,
        "components": m.components,
        "pinned": False,
        "type": m.type,
        "flags": m.flags,
    }
    if m.guild_id is not None:
        data["guild_id"] = str(m.guild_id)
    if m.webhook_id is not None:
        data["webhook_id"] = str(m.webhook_id)
        data["application_id"] = str(m.webhook_id)
    if m.interaction_id is not None and m.interaction_user is not None:
        data["interaction_metadata"] = {
            "id": str(m.interaction_id),
            "type": m.interaction_type,
            "user": user(m.interaction_user),
            "authorizing_integration_owners": {"0": str(m.guild_id or 0)},
        }
    if m.reference_id is not None:
        data["message_reference"] = {"message_id": str(m.reference_id), "channel_id": str(m.channel_id)}
    return data
