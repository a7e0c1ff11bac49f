"""Generations: one row per result image with its parameters and PNG, so any button can replay from the database."""

from __future__ import annotations

import dataclasses
import logging
import sqlite3
from collections.abc import Sequence
from dataclasses import dataclass

from storage.db import Tx, from_row

log = logging.getLogger(__name__)

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


@dataclass(frozen=True, slots=True)
class GenerationRecord:
    generation_id: str
    job_id: str
    index: int
    prompt: str
    seed: int
    width: int
    height: int
    steps: int
    guidance: float
    model: str
    kind: str
    png: bytes
    negative_prompt: str = ""
    style: str | None = None
    parent_generation_id: str | None = None
    nsfw: bool = False
    deleted: bool = False
    created_at: float = 0.0

    def __post_init__(self) -> None:
        if self.index < 0 or self.width <= 0 or self.height <= 0 or self.steps <= 0:
            raise ValueError("index must be >= 0 and width, height and steps positive")


_COLUMNS = (
    "generation_id, job_id, idx, prompt, negative_prompt, style, seed, width, height, steps, guidance, "
    "model, kind, parent_generation_id, nsfw, png, deleted, created_at"
)


def _params(r: GenerationRecord) -> tuple[object, ...]:
    return (
        r.generation_id,
        r.job_id,
        r.index,
        r.prompt,
        r.negative_prompt,
        r.style,
        r.seed,
        r.width,
        r.height,
        r.steps,
        r.guidance,
        r.model,
        r.kind,
        r.parent_generation_id,
        int(r.nsfw),
        r.png,
        int(r.deleted),
        r.created_at,
    )


def _record(row: sqlite3.Row) -> GenerationRecord:
    return from_row(
        GenerationRecord,
        row,
        index=row["idx"],
        png=bytes(row["png"]),
    )


_INSERT_SQL = f"INSERT INTO generations ({_COLUMNS}) VALUES ({', '.join('?' * 18)})"
_LISTING_COLUMNS = _COLUMNS.replace("png,", "x'' AS png,")  # the bytes left out


async def add(tx: Tx, records: Sequence[GenerationRecord], now: float) -> list[GenerationRecord]:
    """Store a job's images; created_at is set to `now`."""
    for r in records:
        if not r.png.startswith(PNG_SIGNATURE):
            raise ValueError(f"generation {r.generation_id}: png must hold PNG bytes")
    stored = [dataclasses.replace(r, created_at=now) for r in records]
    await tx.executemany(_INSERT_SQL, [_params(r) for r in stored])
    return stored


async def get(tx: Tx, generation_id: str) -> GenerationRecord | None:
    row = await tx.fetchone(f"SELECT {_COLUMNS} FROM generations WHERE generation_id = ?", (generation_id,))
    return _record(row) if row else None


async def for_job(tx: Tx, job_id: str) -> list[GenerationRecord]:
    """A job's images in index order."""
    rows = await tx.fetchall(f"SELECT {_COLUMNS} FROM generations WHERE job_id = ? ORDER BY idx", (job_id,))
    return [_record(row) for row in rows]


async def for_job_in_guild(
    tx: Tx, job_id: str, guild_id: int, *, with_png: bool = True
) -> list[GenerationRecord]:
    """A job's images, only if the job was made in this server (none otherwise); `with_png=False` skips
    the bytes, for listings."""
    columns = _COLUMNS if with_png else _LISTING_COLUMNS
    qualified = ", ".join(f"g.{c.strip()}" if " AS " not in c else c for c in columns.split(","))
    rows = await tx.fetchall(
        f"SELECT {qualified} FROM generations g JOIN jobs j USING (job_id) "
        "WHERE g.job_id = ? AND COALESCE(j.guild_id, 0) = ? ORDER BY g.idx",
        (job_id, guild_id),
    )
    return [_record(row) for row in rows]


async def mark_job_deleted(tx: Tx, job_id: str) -> int:
    """Flag a result's images deleted and drop their bytes (a user asked for them gone)."""
    return await tx.execute(
        "UPDATE generations SET deleted = 1, png = x'' WHERE job_id = ? AND deleted = 0", (job_id,)
    )
