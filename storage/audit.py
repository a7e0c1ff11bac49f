"""The audit trail: who changed which policy or setting, when, and to what."""

from __future__ import annotations

import json
import logging
import sqlite3
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from storage.db import Tx, from_row

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class AuditEntry:
    audit_id: int
    guild_id: int | None
    actor_id: int
    action: str
    target_id: int | None
    detail: dict[str, Any]
    created_at: float


async def record(
    tx: Tx,
    *,
    guild_id: int | None,
    actor_id: int,
    action: str,
    target_id: int | None,
    detail: Mapping[str, Any],
    now: float,
) -> int:
    """Write one audit row inside the caller's transaction, so the change and its record commit together."""
    return await tx.insert(
        "INSERT INTO audit (guild_id, actor_id, action, target_id, detail, created_at) VALUES (?, ?, ?, ?, ?, ?)",
        (guild_id, actor_id, action, target_id, json.dumps(dict(detail), sort_keys=True, default=str), now),
    )


def _entry(row: sqlite3.Row) -> AuditEntry:
    return from_row(AuditEntry, row, detail=json.loads(row["detail"]))


async def recent(
    tx: Tx, guild_id: int | None, limit: int = 50, action: str | None = None
) -> list[AuditEntry]:
    """The newest entries first, for one guild (or the guild-less ones when `guild_id` is None)."""
    sql = "SELECT * FROM audit WHERE guild_id IS ?"
    params: list[Any] = [guild_id]
    if action is not None:
        sql += " AND action = ?"
        params.append(action)
    sql += " ORDER BY audit_id DESC LIMIT ?"
    params.append(max(1, min(limit, 1000)))
    return [_entry(row) for row in await tx.fetchall(sql, params)]
