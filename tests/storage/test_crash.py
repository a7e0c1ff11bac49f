"""Crash safety with real processes: kill -9 during a write burst, kill between reserve and commit, and a
last-credit race between separate processes."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from bot.core.quotas.pricing import QuotaSettings
from bot.core.quotas.service import QuotaService
from storage import jobs
from storage.db import Database
from storage.jobs import JobState
from tests.storage.helpers import Clock, in_tx, query

ROOT = Path(__file__).resolve().parents[2]
G, U, ADMIN = 100, 200, 900


def start(*args: str) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-m", "tests.storage.writer", *args],
        cwd=ROOT,
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )


def stop(proc: subprocess.Popen[str]) -> None:
    if proc.poll() is None:
        proc.kill()
    proc.wait(timeout=10)
    for stream in (proc.stdin, proc.stdout):
        if stream is not None:
            stream.close()


@contextmanager
def writer(*args: str) -> Iterator[subprocess.Popen[str]]:
    proc = start(*args)
    try:
        yield proc
    finally:
        stop(proc)


def read_line(proc: subprocess.Popen[str]) -> str:
    assert proc.stdout is not None
    line = proc.stdout.readline().strip()
    assert line, f"writer exited early with {proc.poll()}"
    return line


async def killed_after(path: Path, mode: str, lines: int) -> list[str]:
    """Create the database, start a writer in `mode`, read `lines` of its reports, then kill -9 it."""
    async with Database.open(path):
        pass
    with writer(mode, str(path)) as proc:
        reported = [read_line(proc) for _ in range(lines)]
        os.kill(proc.pid, signal.SIGKILL)
    assert proc.returncode == -signal.SIGKILL
    return reported


async def test_database_survives_kill_9_during_a_write_burst(tmp_path: Path) -> None:
    path = tmp_path / "burst.sqlite3"
    reported = await killed_after(path, "burst", 150)
    # The WAL still holds the writer's last commits; reopening recovers them.
    async with Database.open(path) as db:
        assert (await query(db, "PRAGMA integrity_check"))[0][0] == "ok"
        assert await query(db, "PRAGMA foreign_key_check") == []
        rows = await query(db, "SELECT job_id FROM ledger WHERE state = 'committed'")
        committed = {r[0] for r in rows}
        statuses = {r[0]: r[1] for r in await query(db, "SELECT job_id, status FROM jobs")}
        orphans = await query(db, "SELECT job_id FROM ledger WHERE job_id NOT IN (SELECT job_id FROM jobs)")
        assert set(reported) <= committed  # nothing reported as done was lost
        assert all(statuses[j] == "succeeded" for j in reported)
        assert orphans == []  # every ledger row has its job: the job row is written first
        # At most the one in-flight cycle is unfinished; the sweep settles its reservation.
        clock = Clock(time.time() + QuotaSettings().stale_reservation_s + 10)
        q = QuotaService(db, QuotaSettings(default_limit=1_000_000), clock)
        assert await q.sweep_stale() <= 1
        reserved = (await query(db, "SELECT COUNT(*) FROM ledger WHERE state = 'reserved'"))[0]
        assert reserved[0] == 0


async def test_kill_9_mid_group_commit_loses_nothing_acknowledged(tmp_path: Path) -> None:
    path = tmp_path / "group.sqlite3"
    reported = await killed_after(path, "group", 300)
    async with Database.open(path) as db:
        assert (await query(db, "PRAGMA integrity_check"))[0][0] == "ok"
        committed = {r[0] for r in await query(db, "SELECT job_id FROM ledger WHERE state = 'committed'")}
        assert set(reported) <= committed  # every cycle a writer was told had committed is there
        # Twenty writers at once: at most their twenty cycles in flight are left reserved.
        reserved = await query(db, "SELECT COUNT(*) FROM ledger WHERE state = 'reserved'")
        assert reserved[0][0] <= 20


async def test_kill_between_reserve_and_commit_loses_nothing(tmp_path: Path) -> None:
    path = tmp_path / "hold.sqlite3"
    with writer("hold", str(path)) as proc:
        assert read_line(proc) == "ready"
        os.kill(proc.pid, signal.SIGKILL)
    async with Database.open(path) as db:
        clock = Clock(time.time())
        q = QuotaService(db, QuotaSettings(), clock)
        assert (await q.status(G, U)).used == 8  # both reservations hold their credits after the crash
        # Recovery on restart: the bot commits what the worker finished ...
        for job in await in_tx(db, jobs.list_unfinished):
            assert job.job_id == "aa" and job.status is JobState.RUNNING
        # ... and the sweep settles the rest once they are stale: the finished job is charged, the lost one refunded.
        clock.advance(q.settings.stale_reservation_s + 1)
        assert await q.sweep_stale() == 2
        rows = await query(db, "SELECT job_id, state FROM ledger")
        states = {row["job_id"]: row["state"] for row in rows}
        assert states == {"aa": "refunded", "bb": "committed"}
        clock.now = time.time()
        assert (await q.status(G, U)).used == 4


async def test_last_credit_race_between_processes(tmp_path: Path) -> None:
    path = tmp_path / "race.sqlite3"
    async with Database.open(path) as db:
        await QuotaService(db, QuotaSettings()).admin.set_user_override(G, U, ADMIN, limit=25)
    procs = [start("race", str(path), "20") for _ in range(4)]
    try:
        assert [read_line(p) for p in procs] == ["ready"] * 4
        for p in procs:  # all four are connected and waiting: release them together
            assert p.stdin is not None
            p.stdin.write("go\n")
            p.stdin.flush()
        results = [json.loads(read_line(p)) for p in procs]
    finally:
        for p in procs:
            stop(p)
    assert [r["errors"] for r in results] == [[]] * 4  # no "database is locked" or other failures
    assert sum(r["wins"] for r in results) == 25
    async with Database.open(path) as db:
        assert (await QuotaService(db, QuotaSettings()).status(G, U)).used == 25
