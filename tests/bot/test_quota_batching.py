"""Quota calls arriving together share a transaction (bot/core/quotas/batching.py), each judged alone."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from bot.core.quotas.batching import Coalescer
from bot.core.quotas.pricing import QuotaSettings
from bot.core.quotas.records import DuplicateReservation, QuotaExceeded, Reservation, UserBlocked
from bot.core.quotas.service import QuotaService
from storage.db import Database
from tests.storage.helpers import Clock, query

G, ADMIN = 100, 900


@pytest.fixture
async def db(tmp_path: Path) -> AsyncIterator[Database]:
    async with Database.open(tmp_path / "q.sqlite3") as db:
        yield db


@pytest.fixture
def q(db: Database) -> QuotaService:
    return QuotaService(db, QuotaSettings(default_limit=10, default_window_s=3600), Clock())


async def test_reserves_arriving_together_share_transactions_and_are_judged_each_on_its_own(
    db: Database, q: QuotaService
) -> None:
    await q.admin.block(G, 7, ADMIN, reason="spam")
    await q.reserve("taken", G, 8, [], 1)
    before = db.write_stats
    calls = [
        *(q.reserve(f"ok{u}", G, u, [], 3) for u in range(1, 7)),
        q.reserve("blocked", G, 7, [], 1),
        q.reserve("taken", G, 9, [], 1),  # a job id reserved before
        q.reserve("big", G, 10, [], 11, "fast"),  # over the limit of 10, fast lane only
    ]
    results = await asyncio.gather(*calls, return_exceptions=True)
    assert all(isinstance(r, Reservation) and r.status.used == 3 for r in results[:6])
    assert [type(r) for r in results[6:]] == [UserBlocked, DuplicateReservation, QuotaExceeded]
    rows = await query(db, "SELECT job_id, user_id FROM ledger ORDER BY job_id")
    assert [tuple(r) for r in rows] == [*((f"ok{u}", u) for u in range(1, 7)), ("taken", 8)]
    # Nine calls; far fewer write transactions held them.
    assert db.write_stats.transactions - before.transactions < 9


async def test_one_members_concurrent_reserves_never_share_a_batch_so_none_over_spends(
    q: QuotaService,
) -> None:
    results = await asyncio.gather(
        *(q.reserve(f"j{i}", G, 1, [], 1, "fast") for i in range(25)), return_exceptions=True
    )
    wins = [r for r in results if isinstance(r, Reservation)]
    assert sorted(r.status.used for r in wins) == list(range(1, 11))
    assert all(isinstance(r, QuotaExceeded) for r in results if not isinstance(r, Reservation))
    assert (await q.status(G, 1)).used == 10


async def test_a_job_settled_twice_at_once_is_settled_by_the_first_call_only(
    db: Database, q: QuotaService
) -> None:
    for job in ("a", "b"):
        await q.reserve(job, G, 1, [], 2)
    outcomes = await asyncio.gather(q.commit("a"), q.refund("a"), q.refund("b"), q.commit("nope"))
    assert list(outcomes) == [True, False, True, False]
    rows = await query(db, "SELECT job_id, state FROM ledger ORDER BY job_id")
    assert [tuple(r) for r in rows] == [("a", "committed"), ("b", "refunded")]
    assert (await q.status(G, 1)).used == 2  # the committed one still counts, the refunded one not


async def test_a_failed_batch_fails_its_calls_and_the_next_batch_runs() -> None:
    seen: list[list[int]] = []

    async def run(calls: list[int]) -> list[int | Exception]:
        seen.append(calls)
        if 3 in calls:
            raise OSError("disk gone")  # a fault stand-in for a failed transaction
        return [c * 10 for c in calls]

    batches = Coalescer(run, key=lambda c: c)
    first = await asyncio.gather(*(batches.submit(c) for c in (1, 2, 3)), return_exceptions=True)
    assert all(isinstance(r, OSError) for r in first)
    assert list(await asyncio.gather(batches.submit(4), batches.submit(5))) == [40, 50]
    assert seen == [[1, 2, 3], [4, 5]]


async def test_a_caller_cancelled_before_its_batch_starts_runs_nothing() -> None:
    release = asyncio.Event()
    seen: list[list[str]] = []

    async def run(calls: list[str]) -> list[str | Exception]:
        seen.append(calls)
        await release.wait()
        return list[str | Exception](calls)

    batches = Coalescer(run, key=lambda c: c)
    first = asyncio.ensure_future(batches.submit("a"))
    await asyncio.sleep(0.01)  # "a" is running now
    late = [asyncio.ensure_future(batches.submit(c)) for c in ("b", "c", "b")]
    await asyncio.sleep(0)
    late[1].cancel()
    release.set()
    assert await first == "a"
    assert await late[0] == "b" and await late[2] == "b"
    assert late[1].cancelled()
    assert seen == [["a"], ["b"], ["b"]]  # "c" never ran; the second "b" waited for a batch of its own
