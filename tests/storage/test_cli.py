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
