"""The quota service against a real SQLite file: pricing, charging, tiers, overrides, bonus, relax, admin, audit."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import AsyncExitStack
from pathlib import Path

import pytest
from apscheduler.schedulers.asyncio import AsyncIOScheduler

from bot.core.quotas.maintenance import Maintenance
from bot.core.quotas.pricing import CostSettings, CostSpec, QuotaSettings, RelaxSettings
from bot.core.quotas.records import (
    DuplicateReservation,
    QuotaError,
    QuotaExceeded,
    QuotaInputError,
    RelaxUnavailable,
    UserBlocked,
)
from bot.core.quotas.service import QuotaService
from bot.i18n import ENGLISH
from inference.vocabulary import JobId, JobKind
from storage import guilds, jobs
from storage.db import Database, DatabaseSettings
from storage.jobs import JobRecord, JobState
from storage.ledger import Forgiven
from tests.storage.helpers import T0, Clock, audit_entries, in_tx, query

G, U, ADMIN = 100, 200, 900
HOUR = 3600


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
async def db(tmp_path: Path) -> AsyncIterator[Database]:
    async with Database.open(tmp_path / "q.sqlite3") as db:
        yield db


def make(db: Database, clock: Clock, **kw: object) -> QuotaService:
    settings = QuotaSettings(default_limit=10, default_window_s=HOUR, **kw)
    return QuotaService(db, settings, clock)


@pytest.fixture
def q(db: Database, clock: Clock) -> QuotaService:
    return make(db, clock)


# -- pricing ---------------------------------------------------------------------------------------------


def test_quote_scales_with_pixels_steps_count_and_kind(q: QuotaService) -> None:
    base = q.quote(CostSpec(JobKind.GENERATE, 512, 512, 30))
    assert base == 1
    assert q.quote(CostSpec(JobKind.GENERATE, 1024, 1024, 30)) == 4
    assert q.quote(CostSpec(JobKind.GENERATE, 512, 512, 60, count=4)) == 8
    assert q.quote(CostSpec(JobKind.EDIT, 1024, 1024, 30)) == 6
    # An upscale by its output pixels (a quarter of a base image per 512x512 out, steps aside); a creative one
    # adds its img2img pass: 1024x1024 is 4 base images, 1 credit of upscaler + 4 x 30 x 0.3 / 30 = 1.2.
    assert q.quote(CostSpec(JobKind.UPSCALE, 1024, 1024, 30)) == 1
    assert q.quote(CostSpec(JobKind.UPSCALE, 2048, 2048, 30)) == 4
    assert q.quote(CostSpec(JobKind.UPSCALE, 1024, 1024, 30, redraw_strength=0.3)) == 3
    assert q.quote(CostSpec(JobKind.GENERATE, 64, 64, 1)) == 1  # min cost
    assert q.quote(CostSpec(JobKind.GENERATE, 768, 768, 30)) == 3  # 2.25 rounds up, float noise does not


def test_quote_uses_settings_and_refuses_nonsense(db: Database, clock: Clock) -> None:
    q = make(db, clock, cost=CostSettings(credits_per_base_image=2, base_steps=20, min_cost=3))
    assert q.quote(CostSpec(JobKind.GENERATE, 512, 512, 20)) == 3
    assert q.quote(CostSpec(JobKind.GENERATE, 512, 512, 40)) == 4
    with pytest.raises(QuotaInputError, match="positive"):
        q.quote(CostSpec(JobKind.GENERATE, 0, 512, 20))
    with pytest.raises(QuotaInputError, match="unknown job kind"):
        q.quote(CostSpec("video", 512, 512, 20))  # type: ignore[arg-type]


def test_settings_refuse_absurd_values() -> None:
    with pytest.raises(ValueError):
        QuotaSettings(default_limit=0)
    with pytest.raises(ValueError, match="default_window_s"):
        QuotaSettings(default_window_s=365 * 86400)


# -- charging --------------------------------------------------------------------------------------------


async def test_reserve_commit_refund_are_idempotent(q: QuotaService, clock: Clock) -> None:
    r = await q.reserve("j1", G, U, [], 4)
    assert (r.lane, r.cost, r.status.used, r.status.remaining) == ("fast", 4, 4, 6)
    assert r.status.next_refill_at == T0 + HOUR
    assert await q.commit("j1") and not await q.commit("j1") and not await q.refund("j1")
    await q.reserve("j2", G, U, [], 3)
    assert await q.refund("j2") and not await q.refund("j2") and not await q.commit("j2")
    assert not await q.commit("never-reserved") and not await q.refund("never-reserved")
    st = await q.status(G, U)
    assert (st.used, st.remaining, st.limit, st.source) == (4, 6, 10, "default")
    with pytest.raises(DuplicateReservation):
        await q.reserve("j1", G, U, [], 1)
    with pytest.raises(DuplicateReservation):
        await q.reserve("j2", G, U, [], 1)  # refunded ids are never reused either
    assert (await q.status(G, U)).used == 4


async def test_credits_come_back_exactly_one_window_after_each_charge(q: QuotaService, clock: Clock) -> None:
    await q.reserve("a", G, U, [], 6)
    clock.advance(600)
    await q.reserve("b", G, U, [], 4)
    with pytest.raises(QuotaExceeded) as err:
        await q.reserve("c", G, U, [], 1, "fast")
    assert err.value.status.next_refill_at == T0 + HOUR and err.value.relax_available
    assert f"<t:{int(T0 + HOUR)}:R>" in str(err.value)
    clock.now = T0 + HOUR - 0.001
    assert (await q.status(G, U)).remaining == 0
    clock.now = T0 + HOUR
    st = await q.status(G, U)
    assert (st.used, st.remaining, st.next_refill_at) == (4, 6, T0 + 600 + HOUR)
    clock.now = T0 + 600 + HOUR
    assert (await q.status(G, U)).remaining == 10


async def test_bad_reserve_input_changes_nothing(q: QuotaService) -> None:
    cases: list[tuple[dict[str, object], str]] = [
        ({"cost": 0}, "cost"),
        ({"cost": -3}, "cost"),
        ({"cost": 2.5}, "cost"),
        ({"lane": "turbo"}, "lane"),
        ({"user_id": -1}, "user id"),
        ({"guild_id": 0}, "guild id"),
        ({"job_id": ""}, "job id"),
        ({"role_ids": [5, "admin"]}, "role id"),
    ]
    for kwargs, match in cases:
        args = {"job_id": "x", "guild_id": G, "user_id": U, "role_ids": [], "cost": 1} | kwargs
        with pytest.raises(QuotaInputError, match=match):
            await q.reserve(**args)  # type: ignore[arg-type]  # wrong types on purpose: refused at runtime
    assert (await q.status(G, U)).used == 0
    assert isinstance(QuotaInputError("x"), QuotaError)


async def test_the_last_credit_goes_to_exactly_one_of_many_concurrent_reserves(
    tmp_path: Path, clock: Clock
) -> None:
    path = tmp_path / "race.sqlite3"
    async with AsyncExitStack() as stack:
        # Five separate connections (five threads, five SQLite handles) race like five bot processes would.
        services = [make(await stack.enter_async_context(Database.open(path)), clock) for _ in range(5)]
        results = await asyncio.gather(
            *(services[i % 5].reserve(f"r{i}", G, U, [], 1, "fast") for i in range(60)),
            return_exceptions=True,
        )
    wins = [r for r in results if not isinstance(r, BaseException)]
    losses = [r for r in results if isinstance(r, BaseException)]
    assert len(wins) == 10
    assert all(isinstance(e, QuotaExceeded) for e in losses)
    assert sorted(r.status.used for r in wins) == list(range(1, 11))


# -- policy ----------------------------------------------------------------------------------------------


async def test_limit_is_the_highest_tier_else_the_default_unless_overridden(q: QuotaService) -> None:
    await q.admin.set_guild_default(G, ADMIN, limit=20)
    await q.admin.set_role_tier(G, 1, "patron", 50, ADMIN)
    await q.admin.set_role_tier(G, 2, "tiny", 5, ADMIN)
    assert (await q.status(G, U, [])).limit == 20
    st = await q.status(G, U, [2])  # a tier below the default lowers the limit (docs/quotas.md)
    assert (st.limit, st.source, st.tier_name) == (5, "role", "tiny")
    st = await q.status(G, U, [2, 1, 999])
    assert (st.limit, st.source, st.tier_name) == (50, "role", "patron")
    await q.admin.set_user_override(G, U, ADMIN, limit=3)
    st = await q.status(G, U, [1])
    assert (st.limit, st.source) == (3, "override")
    with pytest.raises(QuotaExceeded):
        await q.reserve("o1", G, U, [1], 4, "fast")
    await q.admin.set_user_override(G, U, ADMIN, unlimited=True)
    st = await q.status(G, U, [1])
    assert st.unlimited and st.source == "unlimited"
    r = await q.reserve("o2", G, U, [1], 500)
    assert r.lane == "fast" and r.cost == 500 and r.status.used == 0  # recorded for reports, never counted
    await q.commit("o2")
    await q.admin.clear_user_override(G, U, ADMIN)
    st = await q.status(G, U, [1])
    assert (st.limit, st.used, st.remaining, st.source) == (50, 0, 50, "role")
    assert (await q.reports.usage_report(G)).per_user[0].credits == 500
    await q.admin.clear_role_tier(G, 1, ADMIN)
    assert (await q.status(G, U, [1])).limit == 20


async def test_blocked_users_cannot_reserve_until_unblocked(q: QuotaService) -> None:
    await q.admin.set_user_override(G, U, ADMIN, limit=7)
    await q.admin.block(G, U, ADMIN, reason="spam")
    assert (await q.status(G, U)).blocked
    with pytest.raises(UserBlocked):
        await q.reserve("b1", G, U, [], 1)
    with pytest.raises(UserBlocked):
        await q.reserve("b2", G, U, [], 1, "relax")
    await q.admin.clear_user_override(G, U, ADMIN)  # a block outlives clearing the limit
    with pytest.raises(UserBlocked):
        await q.reserve("b3", G, U, [], 1)
    await q.admin.unblock(G, U, ADMIN)
    assert (await q.reserve("b4", G, U, [], 1)).lane == "fast"


async def test_admin_nonsense_gets_clear_errors_and_changes_nothing(q: QuotaService, db: Database) -> None:
    bad = [
        (q.admin.set_guild_default(G, ADMIN, limit=0), "limit"),
        (q.admin.set_guild_default(G, ADMIN, limit=-5), "limit"),
        (q.admin.set_guild_default(G, ADMIN, limit=5, window_s=10), "window"),
        (q.admin.set_guild_default(G, ADMIN, limit=5, window_s=10**9), "window"),
        (q.admin.set_role_tier(G, 1, "", 5, ADMIN), "name"),
        (q.admin.set_role_tier(G, 1, "x", 0, ADMIN), "limit"),
        (q.admin.set_role_tier(G, -1, "x", 5, ADMIN), "role id"),
        (q.admin.clear_role_tier(G, 42, ADMIN), "no quota tier"),
        (q.admin.set_user_override(G, U, ADMIN), "either a limit or unlimited"),
        (q.admin.set_user_override(G, U, ADMIN, limit=5, unlimited=True), "either a limit or unlimited"),
        (q.admin.clear_user_override(G, U, ADMIN), "has no personal limit"),
        (q.admin.unblock(G, U, ADMIN), "not blocked"),
        (q.admin.grant_bonus(G, U, 0, ADMIN), "bonus"),
        (q.admin.grant_bonus(G, U, 5, ADMIN, expires_at=T0 - 1), "expire"),
        (q.admin.grant_bonus(G, U, 5, 0), "actor id"),
        (q.reports.usage_report(G, days=0), "days"),
    ]
    for call, match in bad:
        with pytest.raises(QuotaInputError, match=match):
            await call
    overview = await q.admin.policy_overview(G)
    assert (overview.configured, overview.tiers, overview.overrides) == (False, [], [])
    assert await audit_entries(db, G) == []


async def test_bonus_spends_after_the_window_and_expires(q: QuotaService, clock: Clock) -> None:
    await q.admin.grant_bonus(G, U, 5, ADMIN, expires_at=T0 + 100, reason="contest")
    await q.admin.grant_bonus(G, U, 3, ADMIN)
    assert (await q.status(G, U)).bonus_remaining == 8
    r = await q.reserve("b1", G, U, [], 12)
    assert (r.bonus_cost, r.status.remaining, r.status.bonus_remaining) == (2, 0, 6)
    r = await q.reserve("b2", G, U, [], 4)  # soonest-expiring grant first: 3 from it, 1 from the other
    assert (r.bonus_cost, r.status.bonus_remaining) == (4, 2)
    assert await q.refund("b2")
    assert (await q.status(G, U)).bonus_remaining == 6
    clock.now = T0 + 100  # the first grant expires with 3 unspent
    assert (await q.status(G, U)).bonus_remaining == 3
    clock.now = T0 + HOUR  # window credits return; the bonus-paid part never counted against them
    st = await q.status(G, U)
    assert (st.used, st.remaining, st.bonus_remaining) == (0, 10, 3)


async def test_relax_lane_takes_over_when_fast_credits_run_out(q: QuotaService, clock: Clock) -> None:
    await q.reserve("f1", G, U, [], 9)
    r = await q.reserve("r1", G, U, [], 4)
    assert (r.lane, r.cost, r.status.used, r.status.relax_used) == ("relax", 4, 9, 4)
    with pytest.raises(QuotaExceeded) as err:
        await q.reserve("f2", G, U, [], 4, "fast")
    assert err.value.relax_available and "relax" in str(err.value)
    assert (await q.reserve("r2", G, U, [], 1, "relax")).lane == "relax"  # asked for, with fast credits left
    assert (await q.status(G, U)).used == 9


async def test_relax_limit_and_guild_switch(db: Database, clock: Clock) -> None:
    q = make(db, clock, relax=RelaxSettings(limit=5))
    await q.reserve("f1", G, U, [], 10)
    assert (await q.reserve("r1", G, U, [], 4)).lane == "relax"
    with pytest.raises(QuotaExceeded) as err:
        await q.reserve("r2", G, U, [], 2)
    assert not err.value.relax_available
    with pytest.raises(RelaxUnavailable, match="used all your relax"):
        await q.reserve("r3", G, U, [], 2, "relax")
    await in_tx(db, guilds.update, G, ADMIN, clock(), relax_enabled=False)
    with pytest.raises(RelaxUnavailable, match="closed"):
        await q.reserve("r4", G, U, [], 1, "relax")
    with pytest.raises(QuotaExceeded) as err:
        await q.reserve("r5", G, U, [], 1)
    assert not err.value.relax_available
    closed = make(db, clock, relax=RelaxSettings(enabled_by_default=False))
    with pytest.raises(QuotaExceeded):
        await closed.reserve("r6", G + 1, U, [], 11)


async def test_reset_user_voids_the_window_and_is_audited(
    q: QuotaService, db: Database, clock: Clock
) -> None:
    await q.reserve("a", G, U, [], 6)
    await q.commit("a")
    await q.reserve("b", G, U, [], 4)
    assert await q.admin.reset_user(G, U, ADMIN) == Forgiven(jobs=2, credits=10, relax_credits=0)
    assert (await q.status(G, U)).remaining == 10
    assert await q.commit("b")  # a forgiven reservation still settles normally
    assert (await q.status(G, U)).used == 0
    [entry] = await audit_entries(db, G)
    assert (entry.action, entry.target_id, entry.detail) == (
        "quota.reset_user",
        U,
        {"voided": 2, "credits": 10, "relax_credits": 0},
    )


async def test_every_admin_change_is_audited_with_actor_and_time(
    q: QuotaService, db: Database, clock: Clock
) -> None:
    steps = [
        q.admin.set_guild_default(G, 1, limit=30, window_s=2 * HOUR),
        q.admin.set_role_tier(G, 5, "patron", 60, 2),
        q.admin.clear_role_tier(G, 5, 3),
        q.admin.set_user_override(G, U, 4, limit=9, reason="trial"),
        q.admin.clear_user_override(G, U, 5),
        q.admin.grant_bonus(G, U, 7, 6, expires_at=T0 + 500),
        q.admin.block(G, U, 7),
        q.admin.unblock(G, U, 8),
        q.admin.reset_user(G, U, 9),
    ]
    for step in steps:
        clock.advance(1)
        await step
    entries = list(reversed(await audit_entries(db, G)))
    assert [(e.actor_id, e.action, e.created_at) for e in entries] == [
        (1, "quota.set_guild_default", T0 + 1),
        (2, "quota.set_role_tier", T0 + 2),
        (3, "quota.clear_role_tier", T0 + 3),
        (4, "quota.set_user_override", T0 + 4),
        (5, "quota.clear_user_override", T0 + 5),
        (6, "quota.grant_bonus", T0 + 6),
        (7, "quota.block", T0 + 7),
        (8, "quota.unblock", T0 + 8),
        (9, "quota.reset_user", T0 + 9),
    ]
    assert entries[0].detail == {"limit": 30, "window_s": 7200, "old_limit": 10, "old_window_s": HOUR}
    assert entries[3].detail["limit"] == 9 and entries[3].target_id == U
    overview = await q.admin.policy_overview(G)
    assert (overview.limit, overview.window_s, overview.configured) == (30, 7200, True)


async def test_usage_report_per_user_and_day(q: QuotaService, clock: Clock) -> None:
    await q.admin.set_guild_default(G, ADMIN, limit=100)
    for i, (user, cost) in enumerate([(1, 5), (2, 3), (1, 2), (3, 9)]):
        await q.reserve(f"u{i}", G, user, [], cost)
    await q.refund("u1")
    clock.advance(86400)
    await q.reserve("u9", G, 2, [], 4)
    report = await q.reports.usage_report(G, days=2, top=2)
    assert [(u.user_id, u.jobs, u.credits) for u in report.per_user] == [(3, 1, 9), (1, 2, 7), (2, 1, 4)]
    assert [u.user_id for u in report.top_users] == [3, 1]
    assert [(d.jobs, d.credits, d.users) for d in report.per_day] == [(3, 16, 2), (1, 4, 1)]


# -- crash recovery and maintenance ----------------------------------------------------------------------


async def test_sweep_settles_stale_reservations_by_their_job(
    q: QuotaService, db: Database, clock: Clock
) -> None:
    base = {"channel_id": 1, "user_id": U, "guild_id": G, "kind": "generate", "parameters": "{}"}
    await in_tx(db, jobs.create, JobRecord(job_id="aa", status=JobState.SUCCEEDED, **base), clock())  # type: ignore[arg-type]
    await in_tx(db, jobs.create, JobRecord(job_id="bb", status=JobState.RUNNING, **base), clock())  # type: ignore[arg-type]
    await in_tx(db, jobs.create, JobRecord(job_id="cc", status=JobState.RUNNING, **base), clock())  # type: ignore[arg-type]
    for job_id in ("aa", "bb", "cc", "dd"):
        await q.reserve(job_id, G, U, [], 2)
    assert await q.sweep_stale() == 0  # nothing is stale yet
    clock.advance(q.settings.stale_reservation_s + 1)
    await in_tx(db, jobs.update_status, "cc", JobState.RUNNING, now=clock())  # still alive: updated recently
    assert await q.sweep_stale() == 3
    assert await q.sweep_stale() == 0
    assert not await q.commit("aa") and not await q.refund("bb") and not await q.refund("dd")
    assert await q.commit("cc")
    assert (await q.status(G, U)).used == 0  # the window passed too; check the ledger directly
    rows = await query(db, "SELECT job_id, state FROM ledger ORDER BY job_id")
    states = {row["job_id"]: row["state"] for row in rows}
    assert states == {"aa": "committed", "bb": "refunded", "cc": "committed", "dd": "refunded"}


async def test_prune_keeps_rows_that_still_count(db: Database, clock: Clock) -> None:
    q = make(db, clock)
    await q.admin.set_guild_default(G + 1, ADMIN, limit=5, window_s=5 * 86400)  # the longest window
    await q.reserve("old", G, U, [], 1)
    await q.commit("old")
    await q.reserve("held", G, U, [], 1)  # reserved rows wait for the sweep, never pruned
    await q.admin.grant_bonus(G, U, 3, ADMIN, expires_at=T0 + 5)
    retention = db.settings.retention_days * 86400
    clock.advance(5 * 86400 + retention - 10)
    assert await q.prune() == 0
    clock.advance(20)
    assert await q.prune() == 2  # the old row and the expired grant
    assert [r[0] for r in await query(db, "SELECT job_id FROM ledger")] == ["held"]


async def test_prune_never_gives_spent_bonus_back(db: Database, clock: Clock) -> None:
    q = make(db, clock)
    await q.admin.grant_bonus(G, U, 5, ADMIN)  # never expires
    await q.admin.grant_bonus(G, U, 4, ADMIN, expires_at=T0 + 3 * 86400)
    assert (await q.reserve("b1", G, U, [], 12)).bonus_cost == 2  # from the expiring grant first
    assert (await q.reserve("b2", G, U, [], 5)).bonus_cost == 5
    await q.commit("b1")
    await q.commit("b2")
    assert (await q.status(G, U)).bonus_remaining == 2
    clock.advance(400 * 86400)
    await q.prune()
    assert (await q.status(G, U)).bonus_remaining == 2  # the never-expiring grant: 3 of 5 stay spent
    kept = [r[0] for r in await query(db, "SELECT job_id FROM ledger ORDER BY job_id")]
    assert kept == ["b2"]  # b1 paid only from the expired grant


async def ledger_state(db: Database, job_id: str) -> str | None:
    row = (await query(db, "SELECT state FROM ledger WHERE job_id = ?", (job_id,)))[0]
    return row[0] if row else None


async def test_maintenance_jobs_run_on_a_real_scheduler(tmp_path: Path, clock: Clock) -> None:
    settings = DatabaseSettings(
        path=tmp_path / "m.sqlite3", backup_dir=tmp_path / "backups", backup_hour=3, backups_kept=2
    )
    async with Database.open(settings) as db:
        q = make(db, clock, sweep_interval_s=0.05, prune_interval_s=3600)
        await q.reserve("s1", G, U, [], 3)
        clock.advance(q.settings.stale_reservation_s + 1)
        maintenance = Maintenance(q, db, clock)
        scheduler = AsyncIOScheduler()
        registered = maintenance.register(scheduler)
        assert sorted(j.id for j in registered) == sorted(
            [Maintenance.SWEEP_ID, Maintenance.PRUNE_ID, Maintenance.BACKUP_ID]
        )
        assert str(registered[2].trigger).startswith("cron[hour='3'")
        scheduler.start()
        try:
            for _ in range(100):
                await asyncio.sleep(0.02)
                if await ledger_state(db, "s1") == "refunded":
                    break
        finally:
            scheduler.shutdown(wait=False)
        assert await ledger_state(db, "s1") == "refunded"
        made: list[Path] = []
        for _ in range(3):
            clock.advance(86400)
            backup = await maintenance.backup()
            assert backup is not None, "a backup is due every day"
            made.append(backup)
        kept = sorted(p.name for p in (tmp_path / "backups").iterdir())
        assert kept == sorted(p.name for p in made[1:])
        await in_tx(
            db,
            jobs.create,
            JobRecord(
                job_id=JobId("ab"),
                channel_id=1,
                user_id=U,
                kind=JobKind.GENERATE,
                parameters="{}",
                interaction_token="t",
            ),
            clock(),
        )
        await in_tx(db, jobs.update_status, "ab", JobState.SUCCEEDED, now=clock())
        clock.advance(86400 + 1)
        await maintenance.prune()
        pruned = await in_tx(db, jobs.get, "ab")
        assert pruned is not None and pruned.interaction_token is None
    unscheduled = Maintenance(q, db, clock).register(AsyncIOScheduler())
    assert len(unscheduled) == 3


async def test_quota_card_and_refusal_name_the_same_refill_second_and_it_works(
    q: QuotaService, clock: Clock
) -> None:
    from cogs.quota import quota_embed

    clock.now = T0 + 0.4  # a charge at a fractional second: its credits return at T0 + 3600.4
    await q.reserve("frac", G, U, [], 10, "fast")
    status = await q.status(G, U)
    card = next(
        f["value"]
        for f in quota_embed(status, "alice", ENGLISH).to_dict()["fields"]
        if "returns" in f["name"]
    )
    second = int(T0) + HOUR + 1
    assert card == f"<t:{second}:R>"
    with pytest.raises(QuotaExceeded, match=f"<t:{second}:R>"):
        await q.reserve("early", G, U, [], 1, "fast")
    clock.now = float(second)  # the second both named: the credit is back
    assert (await q.reserve("on-time", G, U, [], 1, "fast")).lane == "fast"
