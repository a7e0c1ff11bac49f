"""The database: pragmas, transactions, and migrations from an empty file and from every earlier version."""

from __future__ import annotations

import asyncio
import sqlite3
from pathlib import Path

import pytest

from storage.db import Database, DatabaseError, DatabaseSettings, load_migrations, split_statements
from storage.policy import USER_SHARE_SQL
from tests.storage.helpers import fetch_one, query, write

LATEST = len(load_migrations())


def schema(path: Path) -> list[tuple[str, str, str]]:
    with sqlite3.connect(path) as conn:
        rows = conn.execute(
            "SELECT type, name, sql FROM sqlite_master WHERE name NOT LIKE 'sqlite_%' ORDER BY type, name"
        ).fetchall()
    # ALTER TABLE ADD COLUMN writes the column into the stored CREATE text with different spacing.
    return [
        (t, n, " ".join((s or "").replace("(", " ( ").replace(")", " ) ").replace(",", " , ").split()))
        for t, n, s in rows
    ]


def columns(path: Path, table: str) -> list[str]:
    with sqlite3.connect(path) as conn:
        return sorted(r[1] for r in conn.execute(f"PRAGMA table_info({table})"))


async def test_open_creates_parent_dir_and_sets_pragmas(tmp_path: Path) -> None:
    path = tmp_path / "nested" / "dir" / "b.sqlite3"
    async with Database.open(DatabaseSettings(path=path, busy_timeout_ms=1234)) as db:
        assert db.schema_version == LATEST
        pragmas = ("journal_mode", "foreign_keys", "busy_timeout", "user_version")
        values = [(await query(db, f"PRAGMA {p}"))[0][0] for p in pragmas]
        assert values == ["wal", 1, 1234, LATEST]
    assert path.is_file()


async def test_migrations_apply_to_an_empty_existing_file(tmp_path: Path) -> None:
    path = tmp_path / "empty.sqlite3"
    path.write_bytes(b"")
    async with Database.open(path) as db:
        assert db.schema_version == LATEST
    assert "attempts" in columns(path, "jobs")


async def test_reopening_is_a_no_op(tmp_path: Path) -> None:
    path = tmp_path / "b.sqlite3"
    async with Database.open(path):
        pass
    before = schema(path)
    async with Database.open(path) as db:
        assert db.schema_version == LATEST
    assert schema(path) == before


async def _fill_v1(db: Database) -> None:
    """Rows in every v1 table, as a v1 bot would have written them."""

    async with db.transaction() as tx:
        await tx.execute("INSERT INTO guild_settings (guild_id, updated_at) VALUES (1, 0)")
        await tx.execute("INSERT INTO quota_guild VALUES (1, 20, 3600, 0, 9)")
        await tx.execute("INSERT INTO quota_role_tier VALUES (1, 5, 'patron', 80, 0, 9)")
        await tx.execute(
            "INSERT INTO quota_user_override (guild_id, user_id, blocked, updated_at, updated_by) VALUES (1, 7, 1, 0, 9)"
        )
        await tx.execute(
            "INSERT INTO quota_bonus (guild_id, user_id, credits, granted_at, granted_by) VALUES (1, 2, 5, 0, 9)"
        )
        await tx.execute(
            "INSERT INTO ledger (job_id, guild_id, user_id, cost, lane, state, created_at, updated_at) VALUES ('ab', 1, 2, 3, 'fast', 'reserved', 10, 10)"
        )
        await tx.execute("INSERT INTO bonus_spend VALUES ('ab', 1, 1)")
        await tx.execute(
            "INSERT INTO jobs (job_id, channel_id, user_id, kind, parameters, status, created_at, updated_at) VALUES ('ab', 3, 2, 'generate', '{\"prompt\": \"a fox\"}', 'running', 10, 10)"
        )
        picture = "png" if db.schema_version < 9 else "image"  # renamed in version 9
        await tx.execute(
            f"INSERT INTO generations (generation_id, job_id, idx, prompt, seed, width, height, steps, guidance, model, kind, {picture}, created_at) VALUES ('cd', 'ab', 0, 'a fox', 1, 64, 64, 4, 7.5, 'tiny', 'generate', x'89', 11)"
        )
        await tx.execute("INSERT INTO audit (guild_id, actor_id, action, created_at) VALUES (1, 9, 'quota.set_guild_default', 0)")  # fmt: skip


@pytest.mark.parametrize("start", range(LATEST + 1))
async def test_upgrade_from_every_earlier_version_keeps_data(tmp_path: Path, start: int) -> None:
    path = tmp_path / f"v{start}.sqlite3"
    async with Database.open(path, migrate_to=start) as db:
        assert db.schema_version == start
        if start >= 1:
            await _fill_v1(db)
    async with Database.open(path) as db:
        assert db.schema_version == LATEST
        if start >= 1:
            async with db.transaction(write=False) as tx:
                job = await fetch_one(tx, "SELECT status, attempts, parameters FROM jobs WHERE job_id = 'ab'")
                assert tuple(job) == ("running", 0, '{"prompt": "a fox"}')
                counts = [
                    (await fetch_one(tx, f"SELECT COUNT(*) FROM {t}"))[0]
                    for t in ("guild_settings", "quota_guild", "quota_role_tier", "quota_user_override", "quota_bonus", "ledger", "bonus_spend", "generations", "audit")
                ]  # fmt: skip
                assert counts == [1] * 9
                plan = await tx.fetchall(
                    "EXPLAIN QUERY PLAN SELECT job_id FROM ledger WHERE state = 'reserved' AND created_at < 5"
                )
                assert any("ledger_reserved" in row[3] for row in plan)
    fresh = tmp_path / "fresh.sqlite3"
    async with Database.open(fresh):
        pass
    assert schema(path) == schema(fresh)


async def test_a_newer_schema_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "future.sqlite3"
    with sqlite3.connect(path) as conn:
        conn.execute(f"PRAGMA user_version = {LATEST + 5}")
    with pytest.raises(DatabaseError, match=f"schema version {LATEST + 5}"):
        async with Database.open(path):
            pass


async def test_a_file_that_is_not_sqlite_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "junk.sqlite3"
    path.write_bytes(b"this is not a database at all, just text" * 100)
    with pytest.raises(DatabaseError, match="not a usable SQLite database"):
        async with Database.open(path):
            pass


async def test_a_failed_transaction_changes_nothing(tmp_path: Path) -> None:
    async with Database.open(tmp_path / "b.sqlite3") as db:
        with pytest.raises(sqlite3.IntegrityError):
            async with db.transaction() as tx:
                await tx.execute("INSERT INTO audit (actor_id, action, created_at) VALUES (1, 'x', 0)")
                await tx.execute(
                    "INSERT INTO audit (actor_id, action, created_at, detail) VALUES (1, 'y', 0, 'not json')"
                )
        assert (await query(db, "SELECT COUNT(*) FROM audit"))[0][0] == 0
        # The connection is usable again afterwards.
        await write(db, "INSERT INTO audit (actor_id, action, created_at) VALUES (1, 'z', 0)")
        assert await write(db, "DELETE FROM audit WHERE action = 'z'") == 1


async def test_foreign_keys_are_enforced(tmp_path: Path) -> None:
    async with Database.open(tmp_path / "b.sqlite3") as db:
        with pytest.raises(sqlite3.IntegrityError, match="FOREIGN KEY"):
            await write(
                db,
                "INSERT INTO generations (generation_id, job_id, idx, prompt, seed, width, height, steps, guidance,"
                " model, kind, image, created_at) VALUES ('g', 'nojob', 0, 'p', 1, 8, 8, 1, 1, 'm', 'generate', x'', 0)",
            )


def test_split_statements_keeps_triggers_and_semicolons_in_strings_whole() -> None:
    script = """-- a comment; with a semicolon
CREATE TABLE t (a TEXT DEFAULT 'x;y');
CREATE TRIGGER tr AFTER INSERT ON t BEGIN
    UPDATE t SET a = 'z;'; SELECT 1;
END;
"""
    parts = split_statements(script)
    assert len(parts) == 2
    assert parts[1].startswith("CREATE TRIGGER") and parts[1].endswith("END;")
    with pytest.raises(DatabaseError, match="incomplete"):
        split_statements("CREATE TABLE t (a")


def test_settings_refuse_bad_values() -> None:
    with pytest.raises(ValueError, match="backup_hour"):
        DatabaseSettings(backup_hour=25)
    with pytest.raises(ValueError, match="busy_timeout_ms"):
        DatabaseSettings(busy_timeout_ms=-1)


async def test_concurrent_transactions_commit_or_roll_back_each_on_their_own(tmp_path: Path) -> None:
    async with Database.open(tmp_path / "b.sqlite3") as db:

        async def insert(i: int) -> int:
            async with db.transaction() as tx:
                rowid = await tx.insert(
                    "INSERT INTO audit (actor_id, action, created_at) VALUES (?, 'concurrent', 0)", (i,)
                )
                await asyncio.sleep(0)  # let the others try to get in while this one is open
                if i % 3 == 0:
                    raise ValueError(f"transaction {i} fails after writing")
                return rowid

        results = await asyncio.gather(*(insert(i) for i in range(1, 51)), return_exceptions=True)
        failed = [i for i, r in enumerate(results, start=1) if isinstance(r, ValueError)]
        assert failed == list(range(3, 51, 3))
        stored = [r[0] for r in await query(db, "SELECT actor_id FROM audit ORDER BY actor_id")]
        assert stored == [i for i in range(1, 51) if i % 3]


async def test_writers_queued_together_share_a_commit_and_a_failure_sinks_only_itself(tmp_path: Path) -> None:
    async with Database.open(tmp_path / "b.sqlite3") as db:
        before = db.write_stats

        async def insert(i: int) -> None:
            async with db.transaction() as tx:
                await tx.execute("INSERT INTO audit (actor_id, action, created_at) VALUES (?, 'g', 0)", (i,))
                await tx.execute("INSERT INTO audit (actor_id, action, created_at) VALUES (?, 'g2', 0)", (i,))
                if i == 5:
                    raise ValueError("this one fails after two writes")

        results = await asyncio.gather(*(insert(i) for i in range(10)), return_exceptions=True)
        assert [i for i, r in enumerate(results) if r is not None] == [5]
        rows = await query(db, "SELECT DISTINCT actor_id FROM audit ORDER BY actor_id")
        assert [r[0] for r in rows] == [0, 1, 2, 3, 4, 6, 7, 8, 9]
        stats = db.write_stats
        assert stats.transactions - before.transactions == 9
        assert stats.batches - before.batches < 9  # fewer COMMITs than transactions: they were grouped


async def test_a_failed_group_commit_fails_every_member_and_keeps_nothing(tmp_path: Path) -> None:
    async with Database.open(tmp_path / "b.sqlite3") as db:

        async def member(i: int) -> None:
            async with db.transaction() as tx:
                await tx.execute("INSERT INTO audit (actor_id, action, created_at) VALUES (?, 'm', 0)", (i,))
                if i == 3:  # a foreign key checked only at COMMIT: the batch's COMMIT itself fails
                    await tx.execute("PRAGMA defer_foreign_keys = ON")
                    await tx.execute(
                        "INSERT INTO generations (generation_id, job_id, idx, prompt, seed, width, height,"
                        " steps, guidance, model, kind, image, created_at)"
                        " VALUES ('g', 'nojob', 0, 'p', 1, 8, 8, 1, 1, 'm', 'generate', x'', 0)"
                    )

        results = await asyncio.gather(*(member(i) for i in range(6)), return_exceptions=True)
        assert all(isinstance(r, DatabaseError) for r in results), results  # none was acknowledged
        assert (await query(db, "SELECT COUNT(*) FROM audit"))[0][0] == 0
        await write(db, "INSERT INTO audit (actor_id, action, created_at) VALUES (9, 'after', 0)")
        assert (await query(db, "SELECT COUNT(*) FROM audit"))[0][0] == 1


async def test_a_batch_that_cannot_begin_writes_nothing_and_the_next_one_works(tmp_path: Path) -> None:
    path = tmp_path / "b.sqlite3"
    async with Database.open(DatabaseSettings(path=path, busy_timeout_ms=100)) as db:
        other = sqlite3.connect(path, isolation_level=None)  # another process's writer, holding the lock
        other.execute("BEGIN IMMEDIATE")
        try:
            with pytest.raises((sqlite3.OperationalError, DatabaseError), match="locked"):
                async with db.transaction() as tx:
                    await tx.fetchone("SELECT COUNT(*) FROM audit")
                    await tx.execute("INSERT INTO audit (actor_id, action, created_at) VALUES (1, 'x', 0)")
        finally:
            other.rollback()
            other.close()
        await write(db, "INSERT INTO audit (actor_id, action, created_at) VALUES (2, 'y', 0)")
        assert [r[0] for r in await query(db, "SELECT actor_id FROM audit")] == [2]


async def test_transaction_bodies_never_interleave(tmp_path: Path) -> None:
    """Writers run one at a time, and so do readers (on their own connection)."""
    async with Database.open(tmp_path / "b.sqlite3") as db:
        inside: dict[bool, list[int]] = {True: [], False: []}
        overlaps: list[tuple[int, ...]] = []

        async def body(i: int) -> None:
            write = i % 2 == 0
            async with db.transaction(write=write) as tx:
                inside[write].append(i)
                if len(inside[write]) > 1:
                    overlaps.append(tuple(inside[write]))
                await tx.fetchone("SELECT COUNT(*) FROM audit")
                await asyncio.sleep(0)
                inside[write].remove(i)

        await asyncio.gather(*(body(i) for i in range(20)))
        assert overlaps == []


async def test_a_read_does_not_wait_for_an_open_write_and_sees_only_commits(tmp_path: Path) -> None:
    async with Database.open(tmp_path / "b.sqlite3") as db:
        written, release = asyncio.Event(), asyncio.Event()

        async def slow_writer() -> None:
            async with db.transaction() as tx:
                await tx.execute("INSERT INTO audit (actor_id, action, created_at) VALUES (1, 'w', 0)")
                written.set()
                await release.wait()  # a test's stand-in for a long body: the write lock stays held

        task = asyncio.create_task(slow_writer())
        await written.wait()
        # The read runs now, while the write transaction is open, and sees nothing uncommitted.
        assert (await query(db, "SELECT COUNT(*) FROM audit"))[0][0] == 0
        release.set()
        await task
        assert (await query(db, "SELECT COUNT(*) FROM audit"))[0][0] == 1


async def test_a_read_only_transaction_cannot_write(tmp_path: Path) -> None:
    async with Database.open(tmp_path / "b.sqlite3") as db:
        with pytest.raises(sqlite3.OperationalError, match="readonly"):
            async with db.transaction(write=False) as tx:
                await tx.execute("INSERT INTO audit (actor_id, action, created_at) VALUES (1, 'r', 0)")
        assert (await query(db, "SELECT COUNT(*) FROM audit"))[0][0] == 0


async def test_a_transaction_cannot_open_another(tmp_path: Path) -> None:
    async with Database.open(tmp_path / "b.sqlite3") as db:
        with pytest.raises(RuntimeError, match="cannot open another"):
            async with db.transaction(), db.transaction():
                pass
        assert (await query(db, "SELECT 42"))[0][0] == 42


async def test_a_cancelled_caller_that_was_not_started_runs_nothing(tmp_path: Path) -> None:
    async with Database.open(tmp_path / "b.sqlite3") as db:
        sql = "INSERT INTO audit (actor_id, action, created_at) VALUES (?, 'c', 0)"
        calls = [asyncio.ensure_future(write(db, sql, (i,))) for i in range(1, 41)]
        await asyncio.sleep(0)  # every call waits for the lock now; the first one holds it
        calls[-1].cancel()
        done = await asyncio.gather(*calls, return_exceptions=True)
        assert isinstance(done[-1], asyncio.CancelledError)
        assert (await query(db, "SELECT COUNT(*) FROM audit"))[0][0] == 39


async def test_a_body_cancelled_half_way_rolls_back_and_frees_the_connection(tmp_path: Path) -> None:
    async with Database.open(tmp_path / "b.sqlite3") as db:
        started = asyncio.Event()

        async def slow() -> None:
            async with db.transaction() as tx:
                await tx.execute("INSERT INTO audit (actor_id, action, created_at) VALUES (1, 'half', 0)")
                started.set()
                await asyncio.Event().wait()  # cancelled here, with the insert made

        task = asyncio.create_task(slow())
        await started.wait()
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        assert (await query(db, "SELECT COUNT(*) FROM audit"))[0][0] == 0
        sql = "INSERT INTO audit (actor_id, action, created_at) VALUES (2, 'after', 0)"
        assert await write(db, sql) == 1


async def test_the_window_sum_reads_the_covering_index(tmp_path: Path) -> None:
    params = {"guild": 1, "user": 2, "roles": "[3]", "default_limit": 1, "default_window": 60}
    async with Database.open(tmp_path / "b.sqlite3") as db:
        plan = await query(
            db, "EXPLAIN QUERY PLAN " + USER_SHARE_SQL, params | {"default_relax": 0, "now": 0.0}
        )
    ledger_steps = [row[3] for row in plan if row[3].startswith(("SEARCH ledger", "SCAN ledger"))]
    assert ledger_steps, plan
    assert all("COVERING INDEX ledger_user_window" in step for step in ledger_steps), ledger_steps


async def test_a_transaction_handle_is_dead_after_its_block(tmp_path: Path) -> None:
    async with Database.open(tmp_path / "b.sqlite3") as db:
        async with db.transaction(write=False) as tx:
            assert (await fetch_one(tx, "SELECT 1"))[0] == 1
        with pytest.raises(RuntimeError, match="has ended"):
            await tx.execute("INSERT INTO audit (actor_id, action, created_at) VALUES (1, 'late', 0)")
        assert (await query(db, "SELECT COUNT(*) FROM audit"))[0][0] == 0


async def test_version_9_keeps_each_servers_format_and_the_stored_pictures(tmp_path: Path) -> None:
    path = tmp_path / "v8.sqlite3"
    async with Database.open(path, migrate_to=8) as db:
        await _fill_v1(db)
        await write(
            db, "INSERT INTO guild_settings (guild_id, output_format, updated_at) VALUES (2, 'webp', 0)"
        )
    async with Database.open(path) as db:
        async with db.transaction(write=False) as tx:
            formats = await tx.fetchall(
                "SELECT guild_id, output_format FROM guild_settings ORDER BY guild_id"
            )
            picture = await fetch_one(tx, "SELECT image FROM generations WHERE generation_id = 'cd'")
        assert [tuple(r) for r in formats] == [(1, "png"), (2, "webp")]  # chosen or defaulted before: kept
        assert bytes(picture[0]) == b"\x89"
        with pytest.raises(sqlite3.IntegrityError, match="CHECK"):
            await write(db, "UPDATE guild_settings SET output_format = 'gif' WHERE guild_id = 2")
        await write(db, "UPDATE guild_settings SET output_format = 'jpeg' WHERE guild_id = 2")
