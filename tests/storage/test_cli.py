"""`run.py db migrate|backup` entry points: migrate a file; back it up while another process writes to it."""

from __future__ import annotations

import os
import sqlite3
from pathlib import Path

import pytest

from storage import cli
from storage.db import Database, DatabaseError, load_migrations
from tests.storage.test_crash import read_line, writer


async def test_migrate_creates_and_upgrades(tmp_path: Path) -> None:
    path = tmp_path / "sub" / "m.sqlite3"
    async with Database.open(path, migrate_to=1):
        pass
    assert await cli.migrate(path) == len(load_migrations())
    assert await cli.migrate(path) == len(load_migrations())


async def test_backup_while_another_process_writes(tmp_path: Path) -> None:
    src = tmp_path / "live.sqlite3"
    async with Database.open(src):
        pass
    with writer("burst", str(src)) as proc:
        done = [read_line(proc) for _ in range(50)]
        await cli.backup(src, tmp_path / "b1.sqlite3")
        done += [read_line(proc) for _ in range(50)]  # the writer was never blocked for long
        await cli.backup(src, tmp_path / "b2.sqlite3")
    for name, at_least in (("b1.sqlite3", 50), ("b2.sqlite3", 100)):
        with sqlite3.connect(tmp_path / name) as conn:
            assert conn.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
            assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "delete"  # one self-contained file
            ids = {r[0] for r in conn.execute("SELECT job_id FROM ledger WHERE state = 'committed'")}
            assert set(done[:at_least]) <= ids
    async with Database.open(tmp_path / "b2.sqlite3") as restored:
        assert restored.schema_version == len(load_migrations())
    assert not [n for n in os.listdir(tmp_path) if n.endswith(".partial")]


async def test_backup_into_a_directory_and_bad_paths(tmp_path: Path) -> None:
    src = tmp_path / "db.sqlite3"
    async with Database.open(src):
        pass
    (tmp_path / "out").mkdir()
    await cli.backup(src, tmp_path / "out")
    assert (tmp_path / "out" / "db.sqlite3").is_file()
    with pytest.raises(DatabaseError, match="no database"):
        await cli.backup(tmp_path / "missing.sqlite3", tmp_path / "x.sqlite3")
    with pytest.raises(DatabaseError, match="different file"):
        await cli.backup(src, src)


async def test_restore_checks_the_backup_and_keeps_the_previous_file(tmp_path: Path) -> None:
    live, backup = tmp_path / "live.sqlite3", tmp_path / "b.sqlite3"
    async with Database.open(live) as db:
        await db.write(
            "INSERT INTO audit (actor_id, action, detail, created_at) VALUES (1, 'before', '{}', 0)"
        )
        await cli.backup(live, backup)
        await db.write(
            "INSERT INTO audit (actor_id, action, detail, created_at) VALUES (1, 'after', '{}', 0)"
        )
        with pytest.raises(DatabaseError, match="in use; stop the bot"):
            await cli.restore(backup, live)  # refused while the database is open
    done = await cli.restore(backup, live)
    assert done.schema_version == len(load_migrations())
    assert done.previous == tmp_path / "live.sqlite3.bak"

    def actions(path: Path) -> list[str]:
        with sqlite3.connect(path) as conn:
            return [r[0] for r in conn.execute("SELECT action FROM audit ORDER BY audit_id")]

    assert actions(live) == ["before"]
    assert actions(done.previous) == ["before", "after"]
    async with Database.open(live) as reopened:
        assert reopened.schema_version == len(load_migrations())


async def test_restore_refuses_a_bad_backup(tmp_path: Path) -> None:
    live = tmp_path / "live.sqlite3"
    async with Database.open(live):
        pass
    before = live.read_bytes()
    with pytest.raises(DatabaseError, match="no backup"):
        await cli.restore(tmp_path / "missing.sqlite3", live)
    junk = tmp_path / "junk.sqlite3"
    junk.write_bytes(b"not a database at all" * 100)
    with pytest.raises(DatabaseError, match="not a SQLite database"):
        await cli.restore(junk, live)
    empty = tmp_path / "empty.sqlite3"
    sqlite3.connect(empty).close()
    with pytest.raises(DatabaseError, match="not a brushfire database"):
        await cli.restore(empty, live)
    newer = tmp_path / "newer.sqlite3"
    with sqlite3.connect(newer) as conn:
        conn.execute("CREATE TABLE t (x)")
        conn.execute(f"PRAGMA user_version = {len(load_migrations()) + 1}")
    with pytest.raises(DatabaseError, match="upgrade first"):
        await cli.restore(newer, live)
    corrupt = tmp_path / "corrupt.sqlite3"
    async with Database.open(corrupt) as db:
        await db.run(
            lambda tx: tx.executemany(
                "INSERT INTO audit (actor_id, action, detail, created_at) VALUES (1, ?, '{}', 0)",
                [(f"a{n}" * 50,) for n in range(2000)],
            )
        )
    data = bytearray(corrupt.read_bytes())
    data[len(data) // 2 : len(data) // 2 + 4096] = b"\x00" * 4096  # a page of the table zeroed
    corrupt.write_bytes(bytes(data))
    with pytest.raises(DatabaseError, match=r"integrity check|not a SQLite"):
        await cli.restore(corrupt, live)
    assert live.read_bytes() == before  # nothing replaced
    assert not (tmp_path / "live.sqlite3.bak").exists()
