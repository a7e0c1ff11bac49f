"""Small shared helpers for storage and quota tests: a movable clock and a tiny valid PNG."""

from __future__ import annotations

import io
import json
import sqlite3
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any, TypeVar

from PIL import Image

from storage.db import Database, Params, Tx, from_row

T0 = 1_800_000_000.0
T = TypeVar("T")


@dataclass
class Clock:
    """A clock the test moves by hand, so windows and expiries pass without waiting."""

    now: float = T0

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> float:
        self.now += seconds
        return self.now


def png_bytes(color: tuple[int, int, int] = (200, 40, 40), size: int = 8) -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", (size, size), color).save(buf, format="PNG")
    return buf.getvalue()


async def query(db: Database, sql: str, params: Params = ()) -> list[sqlite3.Row]:
    """Rows of one statement in a read transaction of its own, for a test's own checks."""
    async with db.transaction(write=False) as tx:
        return await tx.fetchall(sql, params)


async def write(db: Database, sql: str, params: Params = ()) -> int:
    """One statement in a write transaction of its own; how many rows it changed."""
    async with db.transaction() as tx:
        return await tx.execute(sql, params)


async def in_tx(db: Database, fn: Callable[..., Awaitable[T]], *args: Any, **kwargs: Any) -> T:
    """Call one storage function in a transaction of its own: `await in_tx(db, jobs.get, job_id)`."""
    async with db.transaction() as tx:
        return await fn(tx, *args, **kwargs)


@dataclass(frozen=True, slots=True)
class AuditEntry:
    audit_id: int
    guild_id: int | None
    actor_id: int
    action: str
    target_id: int | None
    detail: dict[str, Any]
    created_at: float


async def audit_entries(db: Database, guild_id: int | None) -> list[AuditEntry]:
    """The audit rows of one guild (the guild-less ones for None), newest first."""
    rows = await query(db, "SELECT * FROM audit WHERE guild_id IS ? ORDER BY audit_id DESC", (guild_id,))
    return [from_row(AuditEntry, row, detail=json.loads(row["detail"])) for row in rows]


async def fetch_one(tx: Tx, sql: str, params: Params = ()) -> sqlite3.Row:
    """The row of a query that always has one (a count, a pragma, a row the test wrote)."""
    row = await tx.fetchone(sql, params)
    assert row is not None, f"no row for {sql}"
    return row
