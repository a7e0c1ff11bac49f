"""Image retention: each server's policy (max age, max total bytes) and the SQL that prunes its images.

All of retention's SQL is here, as functions over the caller's transaction (`tx: Tx`, the storage style
of storage/db.py). Pruning never removes what something still needs:

- an image entered in a challenge is *pinned*: it is never dropped; the caller may shrink it to a thumbnail
  (`pinned` lists those the policy would otherwise drop, `shrink` stores the reduced copy);
- an image an unfinished job was made from (its input, needed again if the job is resubmitted), and the
  images of a job whose result was not yet handed over, are skipped until they are not.

A dropped image keeps its row (the parameters a button replays from) and loses its bytes (`deleted = 1`,
`image = x''`), exactly as a member's own delete does, so every button reading it answers "expired".
`vacuum` gives the freed pages back to the file system.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import sqlite3
from dataclasses import dataclass
from pathlib import Path

from storage import audit
from storage.db import Tx, from_row

log = logging.getLogger(__name__)

DAY_S = 86_400


@dataclass(frozen=True, slots=True)
class RetentionPolicy:
    """A server's image retention; None in a field: no limit of that kind."""

    guild_id: int
    max_age_days: int | None = None
    max_bytes: int | None = None
    updated_at: float = 0.0

    def __post_init__(self) -> None:
        if self.max_age_days is not None and self.max_age_days < 1:
            raise ValueError("max_age_days must be at least 1")
        if self.max_bytes is not None and self.max_bytes < 0:
            raise ValueError("max_bytes must not be negative")

    @property
    def limited(self) -> bool:
        return self.max_age_days is not None or self.max_bytes is not None


@dataclass(frozen=True, slots=True)
class PruneResult:
    """What one pass over a server removed, and the pinned images it would have removed."""

    dropped: int
    freed_bytes: int
    pinned: tuple[str, ...]  # generation ids of challenge images past the policy (shrink them)


# Images that must keep their bytes whatever the policy says (see the module's docstring).
_HELD = """
    g.deleted = 0
    AND g.generation_id NOT IN (
        SELECT parent_generation_id FROM jobs
        WHERE status IN ('pending', 'queued', 'running') AND parent_generation_id IS NOT NULL)
    AND j.delivered_at IS NOT NULL
"""
_PINNED = "g.generation_id IN (SELECT generation_id FROM challenge_entries)"


async def _select(tx: Tx, policy: RetentionPolicy, now: float) -> tuple[list[str], list[str], int]:
    """Oldest first: the ids to drop, the pinned ids past the policy, and the bytes dropping frees."""
    rows = await tx.fetchall(
        f"""SELECT g.generation_id, length(g.image) AS size, g.created_at, {_PINNED} AS pinned
            FROM generations g JOIN jobs j USING (job_id)
            WHERE COALESCE(j.guild_id, 0) = ? AND {_HELD}
            ORDER BY g.created_at, g.generation_id""",
        (policy.guild_id,),
    )
    total = sum(row["size"] for row in rows)
    cutoff = now - policy.max_age_days * DAY_S if policy.max_age_days is not None else None
    drop: list[str] = []
    pinned: list[str] = []
    freed = 0
    for row in rows:
        too_old = cutoff is not None and row["created_at"] < cutoff
        too_big = policy.max_bytes is not None and total > policy.max_bytes
        if not (too_old or too_big):
            break  # oldest first, and the total only falls: nothing younger is past the policy either
        if row["pinned"]:
            pinned.append(row["generation_id"])
            continue
        drop.append(row["generation_id"])
        total -= row["size"]
        freed += row["size"]
    return drop, pinned, freed


async def _drop(tx: Tx, ids: list[str]) -> int:
    """Drop the bytes of these images, re-checking inside the write that none became pinned or held."""
    dropped = 0
    for start in range(0, len(ids), 500):
        chunk = ids[start : start + 500]
        marks = ", ".join("?" * len(chunk))
        dropped += await tx.execute(
            f"""UPDATE generations SET deleted = 1, image = x''
                WHERE generation_id IN ({marks}) AND generation_id IN (
                    SELECT g.generation_id FROM generations g JOIN jobs j USING (job_id)
                    WHERE g.generation_id IN ({marks}) AND {_HELD} AND NOT {_PINNED})""",
            (*chunk, *chunk),
        )
    return dropped


async def get(tx: Tx, guild_id: int) -> RetentionPolicy:
    row = await tx.fetchone("SELECT * FROM retention_policy WHERE guild_id = ?", (guild_id,))
    return from_row(RetentionPolicy, row) if row else RetentionPolicy(guild_id=guild_id)


async def policies(tx: Tx) -> list[RetentionPolicy]:
    """Every server's policy that limits anything."""
    rows = await tx.fetchall(
        "SELECT * FROM retention_policy WHERE max_age_days IS NOT NULL OR max_bytes IS NOT NULL"
    )
    return [from_row(RetentionPolicy, row) for row in rows]


async def save(
    tx: Tx, guild_id: int, actor_id: int, *, max_age_days: int | None, max_bytes: int | None, now: float
) -> RetentionPolicy:
    """Replace a server's policy (both limits), audited as `actor_id`'s change."""
    policy = RetentionPolicy(guild_id, max_age_days, max_bytes, now)
    await tx.execute(
        """INSERT INTO retention_policy (guild_id, max_age_days, max_bytes, updated_at)
           VALUES (?, ?, ?, ?)
           ON CONFLICT (guild_id) DO UPDATE SET max_age_days = excluded.max_age_days,
               max_bytes = excluded.max_bytes, updated_at = excluded.updated_at""",
        (guild_id, max_age_days, max_bytes, now),
    )
    await audit.record(
        tx,
        guild_id=guild_id,
        actor_id=actor_id,
        action="retention.update",
        target_id=None,
        detail={"max_age_days": max_age_days, "max_bytes": max_bytes},
        now=now,
    )
    return policy


async def prune(tx: Tx, policy: RetentionPolicy, now: float) -> PruneResult:
    """Drop the server's images past its policy, oldest first (one transaction: the caller's)."""
    drop, pinned, freed = await _select(tx, policy, now)
    return PruneResult(dropped=await _drop(tx, drop), freed_bytes=freed, pinned=tuple(pinned))


async def image(tx: Tx, generation_id: str) -> bytes:
    row = await tx.fetchone("SELECT image FROM generations WHERE generation_id = ?", (generation_id,))
    return bytes(row["image"]) if row else b""


async def shrink(tx: Tx, generation_id: str, image: bytes) -> bool:
    """Store a reduced copy of an image, if it is smaller than the one stored."""
    sql = "UPDATE generations SET image = ? WHERE generation_id = ? AND deleted = 0 AND length(image) > ?"
    return bool(await tx.execute(sql, (image, generation_id, len(image))))


async def stored_bytes(tx: Tx, guild_id: int) -> int:
    """The bytes of a server's stored images."""
    row = await tx.fetchone(
        "SELECT COALESCE(SUM(length(g.image)), 0) FROM generations g JOIN jobs j USING (job_id) "
        "WHERE COALESCE(j.guild_id, 0) = ? AND g.deleted = 0",
        (guild_id,),
    )
    return int(row[0]) if row else 0


async def vacuum(path: Path, busy_timeout_ms: int) -> None:
    """Rebuild the file without its free pages and truncate the WAL, on a connection of its own (VACUUM
    cannot run inside a transaction, and the shared connection's are all explicit): no transaction of the
    caller's may be open."""
    await asyncio.to_thread(_vacuum, path, busy_timeout_ms)


def _vacuum(path: Path, busy_timeout_ms: int) -> None:
    with contextlib.closing(sqlite3.connect(path, isolation_level=None)) as conn:
        conn.execute(f"PRAGMA busy_timeout = {int(busy_timeout_ms)}")
        conn.execute("VACUUM")
        conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
