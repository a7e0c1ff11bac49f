"""Image retention: a server's policy prunes oldest first and VACUUMs, keeping the file under a bound,
and never drops what a challenge entry or an unfinished job still needs."""

from __future__ import annotations

import io
import json
import os
import sqlite3
from pathlib import Path

import pytest
from PIL import Image

from bot.core.errors import InvalidInput
from bot.core.retention import RetentionService
from storage.db import Database, Tx
from tests.storage.helpers import in_tx

GUILD = 7
OTHER_GUILD = 8
PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
IMAGE_BYTES = 1_000  # small images keep 10,000 of them fast
BUDGET_MB = 0.2
# The file's bound: the images' budget plus every job's and image's row, which stay (about 250 bytes each),
# where the same 10,000 images kept for good would take over 10 MB.
FILE_LIMIT = 4_000_000


class Clock:
    def __init__(self) -> None:
        self.now = 1_000_000.0

    def __call__(self) -> float:
        return self.now


async def add_images(
    tx: Tx, start: int, count: int, now: float, guild: int = GUILD, status: str = "succeeded"
) -> list[str]:
    """`count` delivered one-image jobs in `guild`, each image `IMAGE_BYTES` long, made at `now`."""
    ids = [f"g{guild}-{n}" for n in range(start, start + count)]
    params = json.dumps({})
    await tx.executemany(
        "INSERT INTO jobs (job_id, guild_id, channel_id, user_id, kind, parameters, status, created_at,"
        " updated_at, delivered_at) VALUES (?, ?, 1, 1, 'generate', ?, ?, ?, ?, ?)",
        [(f"j{gid}", guild, params, status, now, now, now) for gid in ids],
    )
    png = PNG_SIGNATURE + os.urandom(IMAGE_BYTES - len(PNG_SIGNATURE))
    await tx.executemany(
        "INSERT INTO generations (generation_id, job_id, idx, prompt, seed, width, height, steps, guidance,"
        " model, kind, image, created_at) VALUES (?, ?, 0, 'p', 1, 64, 64, 4, 5.0, 'tiny', 'generate', ?, ?)",
        [(gid, f"j{gid}", png, now) for gid in ids],
    )
    return ids


def file_bytes(path: Path) -> int:
    return sum(p.stat().st_size for p in (path, Path(f"{path}-wal")) if p.exists())


def live(path: Path, guild: int = GUILD) -> list[str]:
    with sqlite3.connect(path) as conn:
        rows = conn.execute(
            "SELECT g.generation_id FROM generations g JOIN jobs j USING (job_id) "
            "WHERE j.guild_id = ? AND g.deleted = 0 ORDER BY g.created_at, g.generation_id",
            (guild,),
        ).fetchall()
    return [r[0] for r in rows]


async def test_ten_thousand_images_keep_the_file_under_the_budget(tmp_path: Path) -> None:
    path = tmp_path / "b.sqlite3"
    clock = Clock()
    async with Database.open(path) as db:
        service = RetentionService(db, clock)
        await service.set_policy(GUILD, 1, max_age_days=None, max_megabytes=BUDGET_MB)
        untouched = await in_tx(db, add_images, 0, 50, clock.now, guild=OTHER_GUILD)
        written = 0
        for batch in range(10):
            clock.now += 60
            await in_tx(db, add_images, batch * 1000, 1000, clock.now)
            written += 1000
            grown = file_bytes(path)
            report = await service.run()
            assert report.dropped > 0 and report.vacuumed
            assert file_bytes(path) < grown  # VACUUM gave the pages back and the WAL was truncated
            assert file_bytes(path) < FILE_LIMIT
            assert await service.stored_bytes(GUILD) <= BUDGET_MB * 1_000_000
        assert written == 10_000
    assert file_bytes(path) < FILE_LIMIT
    kept = live(path)
    assert 0 < len(kept) <= 200
    assert set(kept) <= {f"g{GUILD}-{n}" for n in range(9_000, 10_000)}  # only the newest batch's
    assert sorted(live(path, OTHER_GUILD)) == sorted(untouched)  # no policy there: nothing dropped
    with sqlite3.connect(path) as conn:
        rows = conn.execute("SELECT COUNT(*), SUM(deleted) FROM generations").fetchone()
    assert rows == (10_050, 10_000 - len(kept))  # rows stay, so buttons on them can answer "expired"


def a_png(side: int) -> bytes:
    out = io.BytesIO()
    Image.frombytes("RGB", (side, side), os.urandom(side * side * 3)).save(out, format="PNG")
    return out.getvalue()


async def test_age_limit_spares_challenge_entries_and_inputs_of_unfinished_jobs(tmp_path: Path) -> None:
    path = tmp_path / "b.sqlite3"
    clock = Clock()
    async with Database.open(path) as db:
        service = RetentionService(db, clock)
        old = await in_tx(db, add_images, 0, 4, clock.now)
        entry, parent, plain, undelivered = old
        big = a_png(512)
        async with db.transaction() as tx:
            await tx.execute("UPDATE generations SET image = ? WHERE generation_id = ?", (big, entry))
            await tx.execute("UPDATE jobs SET delivered_at = NULL WHERE job_id = ?", (f"j{undelivered}",))
            await tx.execute(
                "INSERT INTO challenges (guild_id, channel_id, theme, style, opens_at, voting_at, closes_at,"
                " max_entries, vote_budget, season, created_by, created_at)"
                " VALUES (?, 1, 't', 's', 0, 1, 2, 5, 3, '2026', 1, 0)",
                (GUILD,),
            )
            await tx.execute(
                "INSERT INTO challenge_entries (challenge_id, number, user_id, generation_id, created_at)"
                " VALUES (1, 1, 1, ?, 0)",
                (entry,),
            )
            await tx.execute(
                "INSERT INTO jobs (job_id, guild_id, channel_id, user_id, kind, parameters, status,"
                " parent_generation_id, created_at, updated_at) VALUES"
                " ('child', ?, 1, 1, 'img2img', '{}', 'running', ?, 0, 0)",
                (GUILD, parent),
            )

        clock.now += 40 * 86_400
        young = await in_tx(db, add_images, 10, 2, clock.now)
        with pytest.raises(InvalidInput):
            await service.set_policy(GUILD, 1, max_age_days=0, max_megabytes=None)
        await service.set_policy(GUILD, 1, max_age_days=30, max_megabytes=None)
        report = await service.run()
        assert (report.dropped, report.shrunk, report.vacuumed) == (1, 1, True)
        assert live(path) == [entry, parent, undelivered, *young]
        assert plain not in live(path)
        with sqlite3.connect(path) as conn:
            png = conn.execute("SELECT image FROM generations WHERE generation_id = ?", (entry,)).fetchone()[
                0
            ]
            audit = conn.execute("SELECT action FROM audit").fetchall()
        with Image.open(io.BytesIO(png)) as img:
            assert img.size == (256, 256)  # a reduced copy, still a picture for the entry
        assert len(png) < len(big)
        assert audit == [("retention.update",)]
        again = await service.run()  # a second pass finds nothing more to do and does not VACUUM
        assert (again.dropped, again.shrunk, again.vacuumed) == (0, 0, False)
