"""A separate writer process for the crash and cross-process race tests: `python -m tests.storage.writer MODE PATH`."""

from __future__ import annotations

import asyncio
import json
import logging
import sys
import time
from pathlib import Path

from bot.core.quotas.pricing import QuotaSettings
from bot.core.quotas.records import QuotaError
from bot.core.quotas.service import QuotaService
from inference.vocabulary import JobId, JobKind
from storage import jobs
from storage.db import Database
from storage.jobs import JobRecord, JobState
from tests.storage.helpers import in_tx

log = logging.getLogger(__name__)

G, U = 100, 200


def say(line: str) -> None:
    sys.stdout.write(line + "\n")
    sys.stdout.flush()


async def race(path: Path, count: int) -> None:
    """Wait for "go" on stdin, then fire `count` concurrent one-credit reserves for the same user."""
    async with Database.open(path) as db:
        q = QuotaService(db, QuotaSettings())
        say("ready")
        await asyncio.to_thread(sys.stdin.readline)
        tag = f"p{time.monotonic_ns()}"
        results = await asyncio.gather(
            *(q.reserve(f"{tag}-{i}", G, U, [], 1, "fast") for i in range(count)), return_exceptions=True
        )
        wins = sum(not isinstance(r, BaseException) for r in results)
        errors = [
            type(r).__name__
            for r in results
            if isinstance(r, BaseException) and not isinstance(r, QuotaError)
        ]
        say(json.dumps({"wins": wins, "errors": errors}))


def generate_job(job_id: str) -> JobRecord:
    return JobRecord(
        job_id=JobId(job_id), channel_id=1, user_id=U, guild_id=G, kind=JobKind.GENERATE, parameters="{}"
    )


async def burst(path: Path) -> None:
    """Write jobs and reserve+commit cycles as fast as possible, reporting each one after it committed."""
    async with Database.open(path) as db:
        q = QuotaService(db, QuotaSettings(default_limit=1_000_000))
        for i in range(10**9):
            job_id = f"{i:08x}"
            await in_tx(db, jobs.create, generate_job(job_id), time.time())
            await q.reserve(job_id, G, U, [], 1 + i % 3)
            await q.commit(job_id)
            await in_tx(db, jobs.update_status, job_id, JobState.SUCCEEDED, now=time.time())
            say(job_id)


async def group(path: Path) -> None:
    """Twenty concurrent writers (their transactions committed in groups), each reporting a job id only
    once its reserve+commit returned."""
    async with Database.open(path) as db:
        q = QuotaService(db, QuotaSettings(default_limit=1_000_000))

        async def cycles(worker: int) -> None:
            for i in range(10**9):
                job_id = f"{worker:02x}{i:06x}"
                await in_tx(db, jobs.create, generate_job(job_id), time.time())
                await q.reserve(job_id, G, U, [], 1)
                await q.commit(job_id)
                say(job_id)

        await asyncio.gather(*(cycles(w) for w in range(20)))


async def hold(path: Path) -> None:
    """Reserve two jobs, finish the work of one, then wait to be killed before committing either."""
    async with Database.open(path) as db:
        q = QuotaService(db, QuotaSettings())
        for job_id, status in (("aa", JobState.RUNNING), ("bb", JobState.SUCCEEDED)):
            await in_tx(db, jobs.create, generate_job(job_id), time.time())
            await q.reserve(job_id, G, U, [], 4)
            await in_tx(db, jobs.update_status, job_id, status, now=time.time())
        say("ready")
        await asyncio.sleep(3600)


def main() -> None:
    mode, path = sys.argv[1], Path(sys.argv[2])
    if mode == "race":
        asyncio.run(race(path, int(sys.argv[3])))
    elif mode == "burst":
        asyncio.run(burst(path))
    elif mode == "group":
        asyncio.run(group(path))
    elif mode == "hold":
        asyncio.run(hold(path))
    else:
        raise SystemExit(f"unknown mode {mode!r}")


if __name__ == "__main__":
    main()
