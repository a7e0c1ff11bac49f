"""The guild service caches settings (read on every job) and never serves a stale copy after a change."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from bot.core import guilds as guild_service
from bot.core.guilds import GuildService
from bot.core.styles import DEFAULT_ASPECTS, DEFAULT_STYLES, StyleBook
from storage import guilds as guild_repo
from storage.db import Database, Tx
from storage.guilds import GuildSettings
from tests.storage.helpers import query

G, ADMIN = 100, 900


@pytest.fixture
async def db(tmp_path: Path) -> AsyncIterator[Database]:
    async with Database.open(tmp_path / "g.sqlite3") as db:
        yield db


def service(db: Database) -> GuildService:
    return GuildService(db, StyleBook(list(DEFAULT_STYLES), list(DEFAULT_ASPECTS)), frozenset())


async def test_settings_are_read_once_then_served_from_memory(
    db: Database, monkeypatch: pytest.MonkeyPatch
) -> None:
    guilds = service(db)
    reads: list[int] = []
    original = guild_repo.get

    async def counted(tx: Tx, guild_id: int) -> GuildSettings:
        reads.append(guild_id)
        return await original(tx, guild_id)

    monkeypatch.setattr(guild_repo, "get", counted)
    first = await guilds.settings(G)
    assert await guilds.settings(G) is first and await guilds.settings(G + 1) != first
    assert reads == [G, G + 1]


async def test_a_change_is_seen_at_once_and_stored(db: Database) -> None:
    guilds = service(db)
    assert (await guilds.settings(G)).output_format == "jpeg"
    await guilds.update(G, ADMIN, output_format="webp", relax_enabled=False)
    now = await guilds.settings(G)
    assert now.output_format == "webp" and not now.relax_enabled
    fresh = await service(db).settings(G)  # what another start of the bot reads
    assert (fresh.output_format, fresh.relax_enabled) == ("webp", False)
    assert [tuple(r) for r in await query(db, "SELECT COUNT(*) FROM guild_settings")] == [(1,)]


async def test_a_refused_change_leaves_the_cached_settings_true(db: Database) -> None:
    guilds = service(db)
    before = await guilds.settings(G)
    with pytest.raises(Exception, match="not changed"):
        await guilds.update(G, ADMIN, nsfw_mode="anything goes")
    assert await guilds.settings(G) == before


async def test_a_read_that_overlaps_a_change_is_not_cached(
    db: Database, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A read that began before a change and ends after it may hold the old value: it is returned to
    its caller (it was true when read) but never kept, so later reads see the change."""
    guilds = service(db)
    reading, release = asyncio.Event(), asyncio.Event()
    original = guild_repo.get

    async def slow(tx: Tx, guild_id: int) -> GuildSettings:
        found = await original(tx, guild_id)
        if not reading.is_set():  # only the first read is held (the change reads the row too)
            reading.set()
            await release.wait()
        return found

    monkeypatch.setattr(guild_repo, "get", slow)
    stale_read = asyncio.create_task(guilds.settings(G))
    await reading.wait()
    await guilds.update(G, ADMIN, output_format="png")
    release.set()
    assert (await stale_read).output_format == "jpeg"
    assert (await guilds.settings(G)).output_format == "png"


async def test_the_cache_is_bounded(db: Database, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(guild_service, "SETTINGS_CACHE", 3)
    guilds = service(db)
    for g in range(10):
        await guilds.settings(g)
    assert len(guilds._cache) == 3 and list(guilds._cache) == [7, 8, 9]
