"""The quota service: quote, status, reserve, commit and refund credits (the hot path) over the ledger."""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from bot.core.i18n import N_
from bot.core.quotas.admin import QuotaAdmin
from bot.core.quotas.batching import Coalescer
from bot.core.quotas.pricing import DAY_S, CostSpec, QuotaSettings, quote
from bot.core.quotas.records import (
    DuplicateReservation,
    LimitSource,
    QuotaError,
    QuotaExceeded,
    QuotaInputError,
    QuotaStatus,
    RelaxUnavailable,
    Reservation,
    UserBlocked,
    check_id,
    check_job_id,
    check_roles,
)
from bot.core.quotas.reports import QuotaReports
from inference.vocabulary import Lane
from storage import ledger, policy
from storage.db import Database, Tx
from storage.ledger import BonusSpend, LedgerState
from storage.policy import BonusGrant, UserPolicy

log = logging.getLogger(__name__)


def _status(
    guild_id: int, user_id: int, pol: UserPolicy, usage: ledger.WindowUsage, relax_limit: int | None
) -> QuotaStatus:
    """Combine policy and usage (docs/quotas.md): an override wins; else the member's highest role tier,
    even when it is below the server default; else the server default."""
    limit, tier_name = pol.guild_limit, None
    source: LimitSource = "guild" if pol.guild_configured else "default"
    if pol.tier is not None:
        limit, source, tier_name = pol.tier.limit_credits, "role", pol.tier.name
    override = pol.override
    unlimited = bool(override and override.unlimited)
    if override and override.limit_credits is not None and not unlimited:
        limit, source, tier_name = override.limit_credits, "override", None
    used = usage.fast_used
    return QuotaStatus(
        guild_id=guild_id,
        user_id=user_id,
        limit=limit,
        used=used,
        remaining=max(0, limit - used),
        window_s=pol.window_s,
        next_refill_at=usage.oldest_fast + pol.window_s if usage.oldest_fast is not None else None,
        source="unlimited" if unlimited else source,
        tier_name=tier_name,
        bonus_remaining=pol.bonus_remaining,
        blocked=bool(override and override.blocked),
        unlimited=unlimited,
        relax_enabled=pol.relax_enabled,
        relax_used=usage.relax_used,
        relax_limit=relax_limit,
    )


def _after(st: QuotaStatus, lane: Lane, cost: int, bonus_cost: int, now: float) -> QuotaStatus:
    """The status once a reservation is in, without reading the database again."""
    if st.unlimited and lane is Lane.FAST:
        return st  # free while unlimited: the row never counts
    if lane is Lane.RELAX:
        return dataclasses.replace(st, relax_used=st.relax_used + cost)
    used = st.used + cost - bonus_cost
    refill = st.next_refill_at if st.next_refill_at is not None or used == st.used else now + st.window_s
    return dataclasses.replace(
        st,
        used=used,
        remaining=max(0, st.limit - used),
        bonus_remaining=st.bonus_remaining - bonus_cost,
        next_refill_at=refill,
    )


def _spend_plan(grants: Sequence[BonusGrant], needed: int) -> list[BonusSpend]:
    """Take `needed` credits from grants in order (soonest expiry first)."""
    spends: list[BonusSpend] = []
    for grant in grants:
        if needed <= 0:
            break
        take = min(grant.remaining, needed)
        spends.append(BonusSpend(grant.bonus_id, take))
        needed -= take
    return spends


@dataclass(frozen=True, slots=True)
class _ReserveCall:
    job_id: str
    guild_id: int
    user_id: int
    roles: tuple[int, ...]
    cost: int
    lane: Lane | None


class QuotaService:
    """Quote, reserve, commit and refund credits and report a user's share; `admin` changes the policy
    and `reports` reads usage.

    Each operation is one transaction (`Database.transaction`), so reserve() checks and inserts atomically;
    reserves (and commits and refunds) that arrive together share one (`batching.Coalescer`).
    """

    def __init__(self, db: Database, settings: QuotaSettings, clock: Callable[[], float] = time.time) -> None:
        self._db = db
        self.settings = settings
        self._clock = clock
        self.admin = QuotaAdmin(db, settings, clock)
        self.reports = QuotaReports(db, clock)
        self._reserves = Coalescer(self._reserve_batch, key=lambda c: (c.guild_id, c.user_id))
        self._settles: Coalescer[tuple[str, LedgerState], bool] = Coalescer(
            self._settle_batch, key=lambda call: call[0]
        )

    def quote(self, spec: CostSpec) -> int:
        """Credits a job costs: pixels x steps x images x the pipeline's multiplier, at least min_cost."""
        return quote(self.settings, spec)

    # -- reading ---------------------------------------------------------------------------------------

    async def _load(
        self, tx: Tx, guild_id: int, user_id: int, role_ids: Sequence[int], now: float
    ) -> QuotaStatus:
        pol, usage = await policy.user_share(
            tx,
            guild_id,
            user_id,
            role_ids,
            default_limit=self.settings.default_limit,
            default_window=self.settings.default_window_s,
            default_relax=self.settings.relax.enabled_by_default,
            now=now,
        )
        return _status(guild_id, user_id, pol, usage, self.settings.relax.limit)

    async def status(self, guild_id: int, user_id: int, role_ids: Sequence[int] = ()) -> QuotaStatus:
        check_id(N_("guild id"), guild_id)
        check_id(N_("user id"), user_id)
        roles = check_roles(role_ids)
        now = self._clock()
        async with self._db.transaction(write=False) as tx:
            return await self._load(tx, guild_id, user_id, roles, now)

    # -- charging --------------------------------------------------------------------------------------

    async def reserve(  # noqa: PLR0917 - the signature the bot codes against
        self,
        job_id: str,
        guild_id: int,
        user_id: int,
        role_ids: Sequence[int],
        cost: int,
        lane: Lane | str | None = None,
    ) -> Reservation:
        """Check the share and insert a reserved row atomically (in one BEGIN IMMEDIATE transaction).

        `lane=None` takes fast credits if they suffice, else the relax lane if the guild has it open.
        Reserves that arrive together are checked and inserted in one transaction, one per member.
        """
        check_job_id(job_id)
        check_id(N_("guild id"), guild_id)
        check_id(N_("user id"), user_id)
        if isinstance(cost, bool) or not isinstance(cost, int) or cost < 1:
            raise QuotaInputError(
                N_("A cost must be a positive whole number of credits, not {cost}."), cost=repr(cost)
            )
        asked = _lane(lane)
        roles = check_roles(role_ids)
        self._db.refuse_inside_transaction()
        return await self._reserves.submit(_ReserveCall(job_id, guild_id, user_id, roles, cost, asked))

    async def _reserve_batch(self, calls: list[_ReserveCall]) -> list[Reservation | Exception]:
        """Read every call's share and the jobs already reserved in one trip, decide in order, insert
        the granted rows in one more. A batch holds one call per member, so the shares are independent."""
        now = self._clock()
        outcomes: list[Reservation | Exception] = []
        charges: list[ledger.Charge] = []
        async with self._db.transaction() as tx:
            taken, states = await asyncio.gather(
                ledger.reserved_already(tx, [c.job_id for c in calls]),
                asyncio.gather(*(self._load(tx, c.guild_id, c.user_id, c.roles, now) for c in calls)),
            )
            for call, st in zip(calls, states, strict=True):
                if call.job_id in taken:
                    outcomes.append(DuplicateReservation(call.job_id))
                    continue
                try:
                    chosen, spends = await self._choose(tx, st, call.cost, call.lane, now)
                except QuotaError as exc:
                    outcomes.append(exc)
                    continue
                taken.add(call.job_id)
                # An unlimited member's fast row is free, then and later: it is forgiven from the start.
                forgiven = st.unlimited and chosen is Lane.FAST
                charges.append(
                    ledger.Charge(
                        call.job_id, call.guild_id, call.user_id, call.cost, chosen, spends, forgiven
                    )
                )
                bonus_cost = sum(s.credits for s in spends)
                after = _after(st, chosen, call.cost, bonus_cost, now)
                outcomes.append(
                    Reservation(
                        call.job_id, call.guild_id, call.user_id, chosen, call.cost, bonus_cost, after
                    )
                )
            await ledger.insert(tx, charges, now)
        return outcomes

    async def _choose(
        self, tx: Tx, st: QuotaStatus, cost: int, lane: Lane | None, now: float
    ) -> tuple[Lane, list[BonusSpend]]:
        if st.blocked:
            raise UserBlocked()
        if lane is Lane.RELAX:
            if not st.relax_room(cost):
                raise RelaxUnavailable(
                    N_("The relax lane is closed in this server.")
                    if not st.relax_enabled
                    else N_("You have used all your relax credits for now.")
                )
            return Lane.RELAX, []
        if st.unlimited or cost <= st.remaining:
            return Lane.FAST, []
        if cost <= st.spendable:
            grants = await policy.active_grants(tx, st.guild_id, st.user_id, now)
            return Lane.FAST, _spend_plan(grants, cost - st.remaining)
        if lane is None and st.relax_room(cost):
            return Lane.RELAX, []
        raise QuotaExceeded(st, cost, relax_available=lane is Lane.FAST and st.relax_room(cost))

    async def commit(self, job_id: str) -> bool:
        """Make a reservation final; False if it is unknown or already committed or refunded."""
        return await self._finish(job_id, LedgerState.COMMITTED)

    async def refund(self, job_id: str) -> bool:
        """Give a reservation's credits (bonus included) back; False if unknown or already final."""
        return await self._finish(job_id, LedgerState.REFUNDED)

    async def _finish(self, job_id: str, state: LedgerState) -> bool:
        check_job_id(job_id)
        self._db.refuse_inside_transaction()
        return await self._settles.submit((job_id, state))

    async def _settle_batch(self, calls: list[tuple[str, LedgerState]]) -> list[bool | Exception]:
        """Commit and refund a batch of reservations in one statement (one call per job in a batch)."""
        now = self._clock()
        async with self._db.transaction() as tx:
            settled = await ledger.settle(tx, calls, now)
        return [job_id in settled for job_id, _ in calls]

    async def sweep_stale(self) -> int:
        """Settle reservations older than the stale age that a crash left behind.

        A reservation whose job succeeded is committed (the crash came after the work); one whose job is
        still being updated is left alone; every other one is refunded. Returns how many were settled.
        """
        now = self._clock()
        before = now - self.settings.stale_reservation_s

        async with self._db.transaction() as tx:
            settled = 0
            for stale in await ledger.stale_reservations(tx, before):
                if stale.job_status == "succeeded":
                    settled += await ledger.commit(tx, stale.job_id, now)
                elif (
                    stale.job_status in ("pending", "queued", "running")
                    and (stale.job_updated_at or 0) >= before
                ):
                    continue
                else:
                    settled += await ledger.refund(tx, stale.job_id, now)
        if settled:
            log.info("settled %d stale reservations", settled)
        return settled

    async def refund_jobless(self, older_than_s: float = 60.0) -> int:
        """Refund reservations with no job row, made over `older_than_s` ago: a process killed between
        reserving and storing its job (the two are back to back, so an older one has no live owner)."""
        now = self._clock()

        refunded = 0
        async with self._db.transaction() as tx:
            for stale in await ledger.stale_reservations(tx, now - older_than_s):
                if stale.job_status is None:
                    refunded += await ledger.refund(tx, stale.job_id, now)
        if refunded:
            log.info("refunded %d reservation(s) whose job was never stored", refunded)
        return refunded

    async def prune(self) -> int:
        """Delete ledger rows older than the longest window plus the retention period."""
        now = self._clock()
        retention_s = self._db.settings.retention_days * DAY_S

        async with self._db.transaction() as tx:
            before = now - await policy.max_window(tx, self.settings.default_window_s) - retention_s
            removed = await ledger.prune(tx, before) + await policy.prune_grants(tx, before)
        if removed:
            log.info("pruned %d ledger rows and expired grants", removed)
        return removed


def _lane(lane: Lane | str | None) -> Lane | None:
    if lane is None:
        return None
    try:
        return Lane(lane)
    except ValueError:
        raise QuotaInputError(N_("`{lane}` is not a lane; use fast or relax."), lane=str(lane)[:20]) from None
