"""Property tests: over random histories the service's window arithmetic matches a plain Python model."""

from __future__ import annotations

import asyncio
import itertools
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from bot.core.quotas.pricing import QuotaSettings
from bot.core.quotas.records import QuotaExceeded
from bot.core.quotas.service import QuotaService
from storage.db import Database
from tests.storage.helpers import Clock

G = 1
WINDOW = 3600

Outcome = Literal["commit", "refund", "hold"]


@dataclass(frozen=True)
class Step:
    wait: float
    cost: int
    outcome: Outcome


@dataclass
class Row:
    at: float
    cost: int
    refunded: bool = False


@dataclass
class Model:
    """The specification: a row counts while created_at > now - window, unless refunded."""

    limit: int
    rows: list[Row]

    def counting(self, now: float) -> list[Row]:
        return [r for r in self.rows if not r.refunded and r.at > now - WINDOW]

    def used(self, now: float) -> int:
        return sum(r.cost for r in self.counting(now))

    def next_refill(self, now: float) -> float | None:
        rows = self.counting(now)
        return min(r.at for r in rows) + WINDOW if rows else None


steps = st.lists(
    st.builds(
        Step,
        wait=st.one_of(
            st.floats(0, 4000, allow_nan=False), st.sampled_from([0.0, WINDOW, WINDOW - 1e-3, 1e-6])
        ),
        cost=st.integers(1, 8),
        outcome=st.sampled_from(["commit", "refund", "hold"]),
    ),
    min_size=1,
    max_size=25,
)


async def check_history(q: QuotaService, clock: Clock, user: int, limit: int, history: list[Step]) -> None:
    await q.admin.set_user_override(G, user, 999, limit=limit)
    model = Model(limit, [])
    for i, step in enumerate(history):
        now = clock.advance(step.wait)
        expect_ok = model.used(now) + step.cost <= limit
        job_id = f"{user}-{i}"
        try:
            r = await q.reserve(job_id, G, user, [], step.cost, "fast")
        except QuotaExceeded as exc:
            assert not expect_ok, (model.used(now), step.cost)
            assert exc.status.used == model.used(now)
            continue
        assert expect_ok, (model.used(now), step.cost)
        model.rows.append(Row(now, step.cost))
        assert r.status.used == model.used(now)
        if step.outcome == "commit":
            assert await q.commit(job_id)
        elif step.outcome == "refund":
            assert await q.refund(job_id)
            model.rows[-1].refunded = True
        status = await q.status(G, user)
        assert status.used == model.used(now) <= limit
        assert status.remaining == limit - model.used(now)
        assert status.next_refill_at == model.next_refill(now)
        if status.next_refill_at is not None:
            # The promise "next refill at t" holds: at t the used count has dropped.
            clock.now = status.next_refill_at
            assert model.used(clock.now) < model.used(now)
            assert (await q.status(G, user)).used == model.used(clock.now)
            clock.now = now


def test_window_arithmetic_matches_the_model(tmp_path: Path) -> None:
    users = itertools.count(1)
    with asyncio.Runner() as runner:
        db_cm = Database.open(tmp_path / "prop.sqlite3")
        db = runner.run(db_cm.__aenter__())
        try:
            clock = Clock()
            q = QuotaService(db, QuotaSettings(default_window_s=WINDOW), clock)

            @settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
            @given(limit=st.integers(1, 20), history=steps)
            def run(limit: int, history: list[Step]) -> None:
                runner.run(check_history(q, clock, next(users), limit, history))

            run()
        finally:
            runner.run(db_cm.__aexit__(None, None, None))
