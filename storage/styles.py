"""Guild style presets: the looks a server's admins add with `/style add`, beside the configured ones."""

from __future__ import annotations

import dataclasses
import logging
import sqlite3
from dataclasses import dataclass

from storage.db import Tx, from_row

log = logging.getLogger(__name__)

MAX_GUILD_STYLES = 100


@dataclass(frozen=True, slots=True)
class GuildStyleRecord:
    """One guild preset row; `bot.core.styles.StylePreset.from_record` validates it into a preset."""

    guild_id: int
    name: str
    prompt: str
    description: str = ""
    negative: str = ""
    steps: int | None = None
    guidance: float | None = None
    aspect: str | None = None
    adapter: str | None = None
    adapter_scale: float = 1.0
    created_by: int = 0
    created_at: float = 0.0


class GuildStyleExists(Exception):
    """The guild already has a preset with that name."""


class TooManyGuildStyles(Exception):
    """The guild has as many presets as it may."""


_COLUMNS = (
    "guild_id, name, prompt, description, negative, steps, guidance, aspect, adapter, adapter_scale, "
    "created_by, created_at"
)


def _record(row: sqlite3.Row) -> GuildStyleRecord:
    return from_row(GuildStyleRecord, row)


_INSERT_SQL = f"INSERT INTO guild_styles ({_COLUMNS}) VALUES ({', '.join('?' * 12)})"


async def list_for(tx: Tx, guild_id: int) -> list[GuildStyleRecord]:
    rows = await tx.fetchall(
        f"SELECT {_COLUMNS} FROM guild_styles WHERE guild_id = ? ORDER BY name", (guild_id,)
    )
    return [_record(r) for r in rows]


async def add(tx: Tx, record: GuildStyleRecord, now: float) -> GuildStyleRecord:
    """Store a new preset; refuses a taken name and more than MAX_GUILD_STYLES per guild."""
    stored = dataclasses.replace(record, created_at=now)
    count = await tx.fetchone("SELECT COUNT(*) FROM guild_styles WHERE guild_id = ?", (record.guild_id,))
    if count is not None and count[0] >= MAX_GUILD_STYLES:
        raise TooManyGuildStyles(f"a server can have at most {MAX_GUILD_STYLES} presets")
    try:
        await tx.execute(_INSERT_SQL, tuple(_fields(stored).values()))
    except sqlite3.IntegrityError:
        raise GuildStyleExists(record.name) from None
    return stored


async def remove(tx: Tx, guild_id: int, name: str) -> bool:
    return await tx.execute("DELETE FROM guild_styles WHERE guild_id = ? AND name = ?", (guild_id, name)) > 0


def _fields(record: GuildStyleRecord) -> dict[str, object]:
    return {name: getattr(record, name) for name in _COLUMNS.replace(" ", "").split(",")}
