"""The crash matrix: kill -9 of each brushfire process at each phase of a job, then a restart; afterwards
every job is delivered once or refunded once, nothing stays reserved, and no process is left behind.

The kill lands at the exact phase through the test-only crash point (`bot.core.lifecycle.CrashPoint`, set by
BRUSHFIRE_TEST_KILL_AT / BRUSHFIRE_TEST_KILL_PIDS), so no timer races the job. Used by
tests/hostile/test_crash_matrix.py (a few cases) and bench/hostile.py (all of them).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
import sqlite3
import sys
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import psutil

from tests.hostile.tools import ROOT, WorkerProcess, free_port, healthy, python_env

log = logging.getLogger(__name__)

PHASES = ("queued", "running", "images_ready", "commit", "delivery")
PROCESSES = ("cli", "worker", "bot", "all")
UNFINISHED = ("pending", "queued", "running")


@dataclass
class CaseResult:
    process: str
    phase: str
    killed: bool = False
    jobs: int = 0
    outcomes: list[str] = field(default_factory=list)
    unsettled: int = 0
    double_charges: int = 0
    orphans: int = 0
    seconds: float = 0.0
    note: str = ""


def config_text(root: Path, port: int, fake: Any = None) -> str:
    discord = ""
    if fake is not None:
        discord = (
            f'[discord]\napi_base = "{fake.api_base}"\ngateway_url = "{fake.gateway_url}"\n'
            f'sync_state_file = "{root / "sync"}"\nguild_ready_timeout_s = 0.1\n'
        )
    return (
        f'{discord}[database]\npath = "{root / "bf.sqlite3"}"\n[worker]\nport = {port}\n'
        '[engine]\ndevice = "cpu"\ncpu_threads = 1\nsafety_checker = false\n'
        "[limits]\nworker_grace_s = 150.0\njob_timeout_s = 300.0\nprogress_interval_s = 0.5\n"
    )


def audit(db: Path, result: CaseResult, results_per_job: dict[str, int] | None = None) -> None:
    """Exactly once: each job final, delivered, charged only if it has its images, posted at most once."""
    with contextlib.closing(sqlite3.connect(db)) as conn:
        jobs = conn.execute(
            "SELECT j.job_id, j.status, j.delivered_at, l.state, "
            "(SELECT COUNT(*) FROM generations g WHERE g.job_id = j.job_id) "
            "FROM jobs j LEFT JOIN ledger l USING (job_id) ORDER BY j.created_at"
        ).fetchall()
        reserved_without_job = conn.execute(
            "SELECT COUNT(*) FROM ledger l WHERE state = 'reserved' AND NOT EXISTS "
            "(SELECT 1 FROM jobs j WHERE j.job_id = l.job_id)"
        ).fetchone()[0]
    result.jobs = len(jobs)
    result.unsettled += reserved_without_job
    for job_id, status, delivered, ledger, images in jobs:
        result.outcomes.append(f"{status}/{ledger}/{images}")
        if status in UNFINISHED or ledger == "reserved" or delivered is None:
            result.unsettled += 1
        if ledger == "committed" and (status != "succeeded" or images == 0):
            result.double_charges += 1  # charged without a result
        if results_per_job is not None and results_per_job.get(job_id, 0) > 1:
            result.double_charges += 1  # one job's result posted twice


def leftovers(marker: str) -> list[psutil.Process]:
    found = []
    for proc in psutil.process_iter(["cmdline", "status"]):
        with contextlib.suppress(psutil.Error):
            if proc.info["status"] != psutil.STATUS_ZOMBIE and any(
                marker in a for a in proc.info["cmdline"] or ()
            ):
                found.append(proc)
    return found


async def settle_processes(marker: str, seconds: float = 60.0) -> int:
    """How many processes of this case outlived it (counted once `seconds` have passed), then kill them."""
    deadline = time.monotonic() + seconds
    left = leftovers(marker)
    while left and time.monotonic() < deadline:
        await asyncio.sleep(0.5)  # a stopping process may take a moment; polling is what psutil offers
        left = leftovers(marker)
    for proc in left:
        with contextlib.suppress(psutil.Error):
            proc.kill()
    return len(left)


async def spawn(config: Path, *args: str, env: dict[str, str] | None = None) -> asyncio.subprocess.Process:
    return await asyncio.create_subprocess_exec(
        sys.executable, str(ROOT / "run.py"), "--config", str(config), *args,
        cwd=config.parent, env={**python_env(), **(env or {})},
        stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.PIPE,
    )  # fmt: skip


async def stop(proc: asyncio.subprocess.Process | None, grace: float = 60.0) -> None:
    if proc is None or proc.returncode is not None:
        return
    proc.send_signal(signal.SIGTERM)
    try:
        await asyncio.wait_for(proc.wait(), grace)
    except TimeoutError:
        proc.kill()
        await proc.wait()


class CrashMatrix:
    """Runs the cases under `root`, one folder (and database) each."""

    def __init__(self, root: Path) -> None:
        self.root = root

    async def run(self, plan: list[tuple[str, str]]) -> dict[str, Any]:
        """Run each (process, phase) case of `plan`; the totals, and each case's result."""
        cases: list[CaseResult] = []
        for process, phase in plan:
            case = self.root / f"{process}-{phase}"
            case.mkdir(parents=True)
            started = time.monotonic()
            result = CaseResult(process, phase)
            try:
                await getattr(self, f"_{process}")(case, result)
            except Exception as exc:  # a broken case counts as unsettled, with the reason
                log.exception("crash case %s/%s failed", process, phase)
                result.note = f"{type(exc).__name__}: {exc}"[:300]
                result.unsettled += 1
            result.orphans = await settle_processes(str(case))
            result.seconds = round(time.monotonic() - started, 1)
            print(f"crash case {process}/{phase}: {asdict(result)}", file=sys.stderr)
            cases.append(result)
        return {
            "cases": [asdict(c) for c in cases],
            "orphans": sum(c.orphans for c in cases),
            "unsettled": sum(c.unsettled for c in cases),
            "double_charges": sum(c.double_charges for c in cases),
            "killed": sum(c.killed for c in cases),
        }

    # --- the command line, with its own in-process worker ---

    async def _cli(self, case: Path, result: CaseResult) -> None:
        config = case / "config.toml"
        config.write_text(config_text(case, free_port()), encoding="utf-8")
        first = await spawn(config, "imagine", "a red circle", "-o", str(case / "a.png"),
                            env={"BRUSHFIRE_TEST_KILL_AT": result.phase})  # fmt: skip
        result.killed = await asyncio.wait_for(first.wait(), 300) == -signal.SIGKILL
        second = await spawn(config, "imagine", "a blue square", "-o", str(case / "b.png"))
        code = await asyncio.wait_for(second.wait(), 300)
        if code != 0:
            assert second.stderr is not None, "spawn pipes stderr"
            result.note = (await second.stderr.read()).decode()[-300:]
        audit(case / "bf.sqlite3", result)

    # --- the worker, killed under a command line that waits for it to come back ---

    async def _worker(self, case: Path, result: CaseResult) -> None:
        port = free_port()
        config = case / "config.toml"
        config.write_text(config_text(case, port), encoding="utf-8")
        worker = await WorkerProcess(config, port).start()
        try:
            assert worker.proc is not None
            cli = await spawn(config, "imagine", "a red circle", "-o", str(case / "a.png"),
                              env={"BRUSHFIRE_TEST_KILL_AT": result.phase,
                                   "BRUSHFIRE_TEST_KILL_PIDS": str(worker.proc.pid)})  # fmt: skip
            waiting = asyncio.create_task(cli.wait())
            for _ in range(6000):  # until the crash point kills the worker, or the CLI ends without it
                if waiting.done() or not worker.alive():
                    break
                await asyncio.sleep(0.1)
            if not worker.alive():
                result.killed = worker.proc.returncode == -signal.SIGKILL
                worker = await WorkerProcess(config, port).start()  # the restart the CLI waits for
            code = await asyncio.wait_for(waiting, 300)
            if code not in (0, 1):
                assert cli.stderr is not None, "spawn pipes stderr"
                result.note = f"imagine exited {code}: {(await cli.stderr.read()).decode()[-300:]}"
        finally:
            worker.stop()
        audit(case / "bf.sqlite3", result)

    # --- the bot (worker elsewhere), and run.py with both ---

    async def _bot(self, case: Path, result: CaseResult) -> None:
        await self._discord_case(case, result, combined=False)

    async def _all(self, case: Path, result: CaseResult) -> None:
        await self._discord_case(case, result, combined=True)

    async def _discord_case(self, case: Path, result: CaseResult, *, combined: bool) -> None:
        from tests.bot.harness import build_world
        from tests.fakediscord import FakeDiscord

        port = free_port()
        config = case / "config.toml"
        async with FakeDiscord() as fake:
            world = build_world(fake)
            config.write_text(config_text(case, port, fake), encoding="utf-8")
            worker = None if combined else await WorkerProcess(config, port).start()
            args = () if combined else ("bot",)
            env = {"DISCORD_TOKEN": fake.token}
            proc = await spawn(config, *args, env={**env, "BRUSHFIRE_TEST_KILL_AT": result.phase})
            try:
                await fake.wait_commands("imagine", timeout=120)
                if combined:
                    await _wait_healthy(f"http://127.0.0.1:{port}")
                await fake.send_slash(
                    "imagine", {"prompt": "a red circle"}, user=world.alice, channel=world.channel
                )
                code = await asyncio.wait_for(proc.wait(), 180)
                result.killed = code == -signal.SIGKILL
                proc = await spawn(config, *args, env=env)  # the restart
                await _wait_settled(case / "bf.sqlite3", 300)
                await asyncio.sleep(1.0)  # a second delivery would come right after the first
            finally:
                await stop(proc)
                if worker is not None:
                    worker.stop()
            audit(case / "bf.sqlite3", result, _results_per_job(fake))


def _results_per_job(fake: Any) -> dict[str, int]:
    counts: dict[str, int] = {}
    for message in fake.messages(include_deleted=True):
        for custom_id in message.custom_ids():
            if custom_id.startswith("brushfire:reroll:"):
                job = custom_id.split(":")[2]
                counts[job] = counts.get(job, 0) + 1
                break
    return counts


async def _wait_healthy(url: str, seconds: float = 180.0) -> None:
    deadline = time.monotonic() + seconds
    while not await healthy(url):
        if time.monotonic() > deadline:
            raise TimeoutError(f"{url} never answered")
        await asyncio.sleep(0.2)


async def _wait_settled(db: Path, seconds: float) -> None:
    """Until every job is final and delivered (or the deadline passes; the audit then counts it)."""
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        with contextlib.closing(sqlite3.connect(db)) as conn:
            open_jobs = conn.execute(
                "SELECT COUNT(*) FROM jobs WHERE status IN ('pending', 'queued', 'running') OR delivered_at IS NULL"
            ).fetchone()[0]
            total = conn.execute("SELECT COUNT(*) FROM jobs").fetchone()[0]
        if total and not open_jobs:
            return
        await asyncio.sleep(0.5)
