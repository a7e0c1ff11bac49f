"""Generations: one row per result image with its parameters and encoded picture, so any button can replay from the database."""

from __future__ import annotations

import dataclasses
import logging
import sqlite3
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

from storage.db import Tx, from_row

log = logging.getLogger(__name__)

ImageFormat = Literal["png", "webp", "jpeg"]


def image_format(data: bytes) -> ImageFormat | None:
    """The format of an encoded picture, read from its first bytes; None for anything else."""
    if data.startswith(b"\x89PNG\r\n\x1a\n"):
        return "png"
    if data.startswith(b"\xff\xd8\xff"):
        return "jpeg"
    if data[:4] == b"RIFF" and data[8:12] == b"WEBP":
        return "webp"
    return None


EXTENSIONS: dict[ImageFormat, str] = {"png": "png", "webp": "webp", "jpeg": "jpg"}


def extension(image: bytes) -> str:
    """The file extension for an encoded picture (`png` when its format is not known)."""
    return EXTENSIONS[image_format(image) or "png"]


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
    image: bytes  # PNG, WebP or JPEG (`image_format`), with the job's parameters in its metadata
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
    "model, kind, parent_generation_id, nsfw, image, deleted, created_at"
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
        r.image,
        int(r.deleted),
        r.created_at,
    )


def _record(row: sqlite3.Row) -> GenerationRecord:
    return from_row(
        GenerationRecord,
        row,
        index=row["idx"],
        image=bytes(row["image"]),
    )


_INSERT_SQL = f"INSERT INTO generations ({_COLUMNS}) VALUES ({', '.join('?' * 18)})"
_LISTING_COLUMNS = _COLUMNS.replace("image,", "x'' AS image,")  # the bytes left out


async def add(tx: Tx, records: Sequence[GenerationRecord], now: float) -> list[GenerationRecord]:
    """Store a job's images; created_at is set to `now`."""
    for r in records:
        if image_format(r.image) is None:
            raise ValueError(f"generation {r.generation_id}: image must hold PNG, WebP or JPEG bytes")
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
    tx: Tx, job_id: str, guild_id: int, *, with_image: bool = True
) -> list[GenerationRecord]:
    """A job's images, only if the job was made in this server (none otherwise); `with_image=False` skips
    the bytes, for listings."""
    columns = _COLUMNS if with_image else _LISTING_COLUMNS
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
        "UPDATE generations SET deleted = 1, image = x'' WHERE job_id = ? AND deleted = 0", (job_id,)
    )
