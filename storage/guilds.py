"""Per-guild settings: allowed channels, blocked words, NSFW handling, relax lane, style and image caps."""

from __future__ import annotations

import dataclasses
import json
import logging
import sqlite3
from dataclasses import dataclass
from typing import Any, Literal

from storage import audit
from storage.db import Tx, from_row

log = logging.getLogger(__name__)

NsfwMode = Literal["spoiler", "refuse"]
OutputFormat = Literal["png", "webp", "jpeg"]
OUTPUT_FORMATS: tuple[OutputFormat, ...] = ("png", "webp", "jpeg")
MAX_IMAGES_PER_JOB = 8
MAX_BLOCKED_WORDS = 500


@dataclass(frozen=True, slots=True)
class GuildSettings:
    """A guild's settings; a guild never configured gets these defaults."""

    guild_id: int
    allowed_channel_ids: tuple[int, ...] = ()  # empty: every channel
    blocked_words: tuple[str, ...] = ()
    nsfw_mode: NsfwMode = "spoiler"
    relax_enabled: bool = True
    default_style: str | None = None
    max_images_per_job: int = 4
    max_steps: int | None = None  # a power user's steps cap here; None: the configured one
    max_pixels: int | None = None  # an image's pixel cap here; None: the worker's
    allowed_samplers: tuple[str, ...] | None = None  # sampler names members may pick; None: all offered
    allowed_models: tuple[str, ...] | None = None  # the worker's models members may pick; None: all served
    # How the worker encodes results, which are stored and posted as they come: JPEG (quality 95, full-resolution
    # colour) by default, as sharp as WebP 90 at a sixth of its cost (docs/operations.md, "Output formats").
    output_format: OutputFormat = "jpeg"
    updated_at: float = 0.0

    def __post_init__(self) -> None:
        if self.nsfw_mode not in ("spoiler", "refuse"):
            raise ValueError(f"nsfw_mode must be 'spoiler' or 'refuse', got {self.nsfw_mode!r}")
        if not 1 <= self.max_images_per_job <= MAX_IMAGES_PER_JOB:
            raise ValueError(f"max_images_per_job must be between 1 and {MAX_IMAGES_PER_JOB}")
        if len(self.blocked_words) > MAX_BLOCKED_WORDS:
            raise ValueError(f"at most {MAX_BLOCKED_WORDS} blocked words")
        if any(channel <= 0 for channel in self.allowed_channel_ids):
            raise ValueError("channel ids must be positive")
        if self.output_format not in OUTPUT_FORMATS:
            raise ValueError(f"output_format must be one of {OUTPUT_FORMATS}, got {self.output_format!r}")
        if self.max_steps is not None and self.max_steps < 1:
            raise ValueError("max_steps must be at least 1")
        if self.max_pixels is not None and self.max_pixels < 64 * 64:
            raise ValueError("max_pixels must be at least 4096 (64x64)")

    def channel_allowed(self, channel_id: int) -> bool:
        return not self.allowed_channel_ids or channel_id in self.allowed_channel_ids


def _settings(row: sqlite3.Row) -> GuildSettings:
    return from_row(
        GuildSettings,
        row,
        allowed_channel_ids=tuple(json.loads(row["allowed_channel_ids"])),
        blocked_words=tuple(json.loads(row["blocked_words"])),
        allowed_samplers=_names(row["allowed_samplers"]),
        allowed_models=_names(row["allowed_models"]),
    )


def _names(text: str | None) -> tuple[str, ...] | None:
    return tuple(json.loads(text)) if text is not None else None


_UPSERT_SQL = """
INSERT INTO guild_settings (guild_id, allowed_channel_ids, blocked_words, nsfw_mode, relax_enabled, default_style,
                            max_images_per_job, max_steps, max_pixels, allowed_samplers, output_format,
                            allowed_models, updated_at)
VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)
ON CONFLICT (guild_id) DO UPDATE SET
    allowed_channel_ids = excluded.allowed_channel_ids, blocked_words = excluded.blocked_words,
    nsfw_mode = excluded.nsfw_mode, relax_enabled = excluded.relax_enabled,
    default_style = excluded.default_style, max_images_per_job = excluded.max_images_per_job,
    max_steps = excluded.max_steps, max_pixels = excluded.max_pixels,
    allowed_samplers = excluded.allowed_samplers, output_format = excluded.output_format,
    allowed_models = excluded.allowed_models, updated_at = excluded.updated_at
"""


def _row(s: GuildSettings) -> tuple[object, ...]:
    return (
        s.guild_id,
        json.dumps(list(s.allowed_channel_ids)),
        json.dumps(list(s.blocked_words)),
        s.nsfw_mode,
        int(s.relax_enabled),
        s.default_style,
        s.max_images_per_job,
        s.max_steps,
        s.max_pixels,
        json.dumps(list(s.allowed_samplers)) if s.allowed_samplers is not None else None,
        s.output_format,
        json.dumps(list(s.allowed_models)) if s.allowed_models is not None else None,
        s.updated_at,
    )


async def get(tx: Tx, guild_id: int) -> GuildSettings:
    row = await tx.fetchone("SELECT * FROM guild_settings WHERE guild_id = ?", (guild_id,))
    return _settings(row) if row else GuildSettings(guild_id=guild_id)


async def update(tx: Tx, guild_id: int, actor_id: int, now: float, **changes: Any) -> GuildSettings:
    """Change some fields (names as in GuildSettings) and audit it; unknown names or bad values raise
    ValueError."""
    fixed = {"guild_id", "updated_at"}
    unknown = (set(changes) - {f.name for f in dataclasses.fields(GuildSettings)}) | (set(changes) & fixed)
    if unknown:
        raise ValueError(f"unknown guild setting(s): {', '.join(sorted(unknown))}")
    if "allowed_channel_ids" in changes:
        changes["allowed_channel_ids"] = tuple(sorted({int(c) for c in changes["allowed_channel_ids"]}))
    for names in ("allowed_samplers", "allowed_models"):
        if changes.get(names) is not None:
            changes[names] = tuple(sorted(set(changes[names])))
    if "blocked_words" in changes:
        words = {str(w).strip().lower() for w in changes["blocked_words"]}
        changes["blocked_words"] = tuple(sorted(w for w in words if w))
    new = dataclasses.replace(await get(tx, guild_id), updated_at=now, **changes)
    await tx.execute(_UPSERT_SQL, _row(new))
    detail = {k: list(v) if isinstance(v, tuple) else v for k, v in changes.items()}
    await audit.record(
        tx,
        guild_id=guild_id,
        actor_id=actor_id,
        action="guild.update",
        target_id=None,
        detail=detail,
        now=now,
    )
    return new
