"""kill -9 of `run.py imagine` mid-job: the next `run.py imagine` settles what it left (follow or refund,
exactly once), and a job a live command line still follows is left alone."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.bot.test_cli import rows, write_config

ROOT = Path(__file__).resolve().parents[2]


def imagine(config: Path, prompt: str, out: Path, **env: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, str(ROOT / "run.py"), "--config", str(config), "imagine", prompt, "-o", str(out)],
        check=False,
        cwd=config.parent,
        env={**os.environ, "PYTHONPATH": str(ROOT), **env},
        capture_output=True,
        text=True,
        timeout=300,
    )


@pytest.mark.timeout(600)
# One phase here (each run loads the model); bench/hostile.py runs every phase for every process, and its
# quick run in tests/hostile/test_bench.py the others once each.
@pytest.mark.parametrize("phase", ["commit"])
def test_the_next_imagine_settles_what_a_killed_one_left(
    tiny_models: tuple[Path, Path], tmp_path: Path, phase: str
) -> None:
    config = write_config(tmp_path, tiny_models)
    db = tmp_path / "cli.sqlite3"
    killed = imagine(config, "a red circle", tmp_path / "a.png", BRUSHFIRE_TEST_KILL_AT=phase)
    assert killed.returncode == -9, killed.stderr
    left = rows(db, "SELECT j.status, l.state FROM jobs j JOIN ledger l USING (job_id)")
    assert (left and left[0][1] == "reserved") or phase == "delivery", left

    again = imagine(config, "a blue square", tmp_path / "b.png")
    assert again.returncode == 0, again.stderr
    assert "from an earlier run that was stopped" in again.stderr or phase == "delivery"
    settled = rows(db, "SELECT j.status, l.state, j.delivered_at IS NOT NULL FROM jobs j JOIN ledger l USING (job_id) ORDER BY j.created_at")  # fmt: skip
    first, second = settled
    assert second == ("succeeded", "committed", 1)
    # The killed job: refunded (its in-process worker died with it) or, killed once its images were stored,
    # committed with them; either way exactly once, and nothing is left reserved or unfinished.
    settled_once: tuple[tuple[str, str, int], ...] = (
        ("refunded", "refunded", 1),
        ("succeeded", "committed", 1),
    )
    assert first in settled_once, first
    if first[0] == "succeeded":
        assert rows(db, "SELECT COUNT(*) FROM generations")[0][0] == 2
    if phase == "commit":
        third = imagine(config, "a green star", tmp_path / "c.png")
        assert third.returncode == 0 and "earlier run" not in third.stderr  # settled once, not again


async def test_a_reservation_whose_job_was_never_stored_is_refunded_on_start(tmp_path: Path) -> None:
    """kill -9 between reserving and storing the job: the next start refunds it (after a minute)."""
    from bot.core.lifecycle import ProcessOwner
    from bot.core.outcomes import JobOutcome
    from bot.core.services import open_services
    from bot.core.settings import Settings
    from storage.db import DatabaseSettings

    async def deliver_nothing(outcome: JobOutcome) -> None:
        """No job is left to deliver here: only the reservation is reconciled."""

    settings = Settings(database=DatabaseSettings(path=tmp_path / "bf.sqlite3"))
    now = [1_000_000.0]
    async with open_services(settings, clock=lambda: now[0], owner=ProcessOwner.current("cli")) as services:
        jobs = services.jobs
        await services.quotas.reserve("a" * 32, 1, 1, (), 1, "fast")
        await jobs.reconcile(deliver_nothing, kinds=frozenset({"cli"}))
        assert rows(settings.database.path, "SELECT state FROM ledger") == [("reserved",)]  # maybe live
        now[0] += 61
        await jobs.reconcile(deliver_nothing, kinds=frozenset({"cli"}))
    assert rows(settings.database.path, "SELECT state FROM ledger") == [("refunded",)]
