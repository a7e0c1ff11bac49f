"""Rolling-window, cost-weighted quotas with a relax lane and audited admin policy; no Discord here."""

from __future__ import annotations

import dataclasses
import logging
import math
import sqlite3
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Generic, Literal, TypeVar

from apscheduler.job import Job
from apscheduler.schedulers.asyncio import AsyncIOScheduler
from apscheduler.triggers.cron import CronTrigger
from apscheduler.triggers.interval import IntervalTrigger
from pydantic import BaseModel, ConfigDict, Field, model_validator

from storage import audit, ledger, policy
from storage.db import Database, SyncTx
from storage.jobs import JobsRepo
from storage.ledger import BonusSpend, UserDayUsage
from storage.policy import BonusGrant, RoleTier, UserOverride, UserPolicy

log = logging.getLogger(__name__)

Lane = Literal["fast", "relax"]
CostKind = Literal["generate", "img2img", "edit", "upscale"]
LimitSource = Literal["default", "guild", "role", "override", "unlimited"]
DAY_S = 86_400
R = TypeVar("R")


class CostSettings(BaseModel):
    """Credits per job: `credits_per_base_image` for one base-size image at base steps, scaled linearly."""

    model_config = ConfigDict(extra="forbid")

    base_pixels: int = Field(default=512 * 512, ge=64 * 64)
    base_steps: int = Field(default=30, ge=1)
    credits_per_base_image: float = Field(default=1.0, gt=0)
    img2img_multiplier: float = Field(default=1.0, gt=0)
    edit_multiplier: float = Field(default=1.5, gt=0)
    upscale_multiplier: float = Field(default=2.0, gt=0)
    min_cost: int = Field(default=1, ge=1)


class RelaxSettings(BaseModel):
    """The slower lane users fall back to when their fast credits run out."""

    model_config = ConfigDict(extra="forbid")

    enabled_by_default: bool = True  # for guilds that never set relax_enabled in their settings
    limit: int | None = Field(default=None, ge=1)  # relax credits per window; None: no cap


class QuotaSettings(BaseModel):
    """Default shares, the bounds admins may set, pricing, the relax lane and maintenance timing."""

    model_config = ConfigDict(extra="forbid")

    default_limit: int = Field(default=50, ge=1)
    default_window_s: int = Field(default=DAY_S, ge=60)
    min_window_s: int = Field(default=60, ge=1)
    max_window_s: int = Field(default=30 * DAY_S, ge=60)
    max_limit: int = Field(default=1_000_000, ge=1)
    max_bonus: int = Field(default=100_000, ge=1)
    cost: CostSettings = CostSettings()
    relax: RelaxSettings = RelaxSettings()
    stale_reservation_s: float = Field(default=2 * 3600, gt=0)
    sweep_interval_s: float = Field(default=300, gt=0)
    prune_interval_s: float = Field(default=6 * 3600, gt=0)

    @model_validator(mode="after")
    def _windows(self) -> QuotaSettings:
        if not self.min_window_s <= self.default_window_s <= self.max_window_s:
            raise ValueError("default_window_s must lie between min_window_s and max_window_s")
        if self.default_limit > self.max_limit:
            raise ValueError("default_limit must not exceed max_limit")
        return self


@dataclass(frozen=True, slots=True)
class CostSpec:
    """What a job asks for, as far as pricing goes."""

    kind: CostKind
    width: int
    height: int
    steps: int
    count: int = 1


@dataclass(frozen=True, slots=True)
class QuotaStatus:
    """A user's share right now. `limit`/`remaining` are window credits; bonus credits come on top."""

    guild_id: int
    user_id: int
    limit: int
    used: int
    remaining: int
    window_s: int
    next_refill_at: float | None  # unix seconds when the oldest counting charge stops counting
    source: LimitSource
    tier_name: str | None
    bonus_remaining: int
    blocked: bool
    unlimited: bool
    relax_enabled: bool
    relax_used: int
    relax_limit: int | None

    @property
    def spendable(self) -> int:
        return self.remaining + self.bonus_remaining

    @property
    def next_refill_second(self) -> int | None:
        """The first whole second at which the oldest counting charge has stopped counting.

        Rounded up, as refusals are: a charge counts while `created_at > now - window_s`, so at this
        second its credits are back and a spend they cover is accepted.
        """
        return math.ceil(self.next_refill_at) if self.next_refill_at is not None else None

    def relax_room(self, cost: int) -> bool:
        return self.relax_enabled and (self.relax_limit is None or self.relax_used + cost <= self.relax_limit)


@dataclass(frozen=True, slots=True)
class Reservation:
    job_id: str
    guild_id: int
    user_id: int
    lane: Lane
    cost: int
    bonus_cost: int
    status: QuotaStatus  # the user's share after this reservation


@dataclass(frozen=True, slots=True)
class UserUsage:
    user_id: int
    jobs: int
    credits: int
    relax_jobs: int


@dataclass(frozen=True, slots=True)
class DayUsage:
    day: str
    jobs: int
    credits: int
    users: int


@dataclass(frozen=True, slots=True)
class UsageReport:
    guild_id: int
    days: int
    since: float
    per_user: list[UserUsage]  # most credits first
    per_day: list[DayUsage]  # oldest day first
    rows: list[UserDayUsage]
    top_users: list[UserUsage] = field(default_factory=list)


@dataclass(frozen=True, slots=True)
class PolicyOverview:
    guild_id: int
    limit: int
    window_s: int
    configured: bool
    tiers: list[RoleTier]
    overrides: list[UserOverride]


class QuotaError(Exception):
    """Base of every quota error; the message is written for the user who hit it."""


class QuotaInputError(QuotaError, ValueError):
    """An admin or caller passed a value that makes no sense; nothing was changed."""


class QuotaExceeded(QuotaError):
    def __init__(self, status: QuotaStatus, cost: int, relax_available: bool) -> None:
        second = status.next_refill_second
        refill = f" Next credit returns <t:{second}:R>." if second is not None else ""
        relax = " The relax lane is open: try again in relax mode." if relax_available else ""
        super().__init__(
            f"This costs {cost} credit{'s' * (cost != 1)} but you have {status.spendable} left "
            f"of {status.limit}.{refill}{relax}"
        )
        self.status = status
        self.cost = cost
        self.relax_available = relax_available


class RelaxUnavailable(QuotaError):
    """Relax was asked for explicitly but the guild has it off, or its relax cap is reached."""


class UserBlocked(QuotaError):
    def __init__(self) -> None:
        super().__init__("You are blocked from generating images in this server.")


class DuplicateReservation(QuotaError):
    def __init__(self, job_id: str) -> None:
        super().__init__(f"Job {job_id} already has a reservation.")
        self.job_id = job_id


@dataclass(frozen=True, slots=True)
class Audited(Generic[R]):
    """What an admin change did, for its audit row, and what to hand back to the caller."""

    action: str
    target_id: int | None
    detail: Mapping[str, object]
    result: R


def _check_id(name: str, value: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
        raise QuotaInputError(f"{name} must be a positive Discord id, got {value!r}")
    return value


def _check_roles(role_ids: Sequence[int]) -> tuple[int, ...]:
    return tuple(_check_id("role id", r) for r in role_ids)


def _check_job_id(job_id: str) -> str:
    if not isinstance(job_id, str) or not 1 <= len(job_id) <= 128:
        raise QuotaInputError(f"job id must be 1-128 characters, got {job_id!r}")
    return job_id


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
    if st.unlimited and lane == "fast":
        return st  # free while unlimited: the row never counts
    if lane == "relax":
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


class QuotaService:
    """Reserve, commit and refund credits; report shares; apply audited admin policy changes.

    Each operation is one transaction run on the database thread (`Database.run`), so reserve() checks and
    inserts atomically and costs one hop off the event loop.
    """

    def __init__(self, db: Database, settings: QuotaSettings, clock: Callable[[], float] = time.time) -> None:
        self._db = db
        self.settings = settings
        self._clock = clock

    # -- pricing ---------------------------------------------------------------------------------------

    def quote(self, spec: CostSpec) -> int:
        """Credits a job costs: pixels x steps x images x the pipeline's multiplier, at least min_cost."""
        if min(spec.width, spec.height, spec.steps, spec.count) <= 0:
            raise QuotaInputError("width, height, steps and count must all be positive")
        c = self.settings.cost
        multiplier = {
            "generate": 1.0,
            "img2img": c.img2img_multiplier,
            "edit": c.edit_multiplier,
            "upscale": c.upscale_multiplier,
        }.get(spec.kind)
        if multiplier is None:
            raise QuotaInputError(f"unknown job kind {spec.kind!r}")
        raw = (
            c.credits_per_base_image
            * (spec.width * spec.height / c.base_pixels)
            * (spec.steps / c.base_steps)
            * spec.count
            * multiplier
        )
        # Rounding first keeps float noise (1.0000000001) from costing a whole extra credit.
        return max(c.min_cost, math.ceil(round(raw, 6)))

    # -- reading ---------------------------------------------------------------------------------------

    def _load(
        self, tx: SyncTx, guild_id: int, user_id: int, role_ids: Sequence[int], now: float
    ) -> QuotaStatus:
        pol = policy.user_policy(
            tx,
            guild_id,
            user_id,
            role_ids,
            default_limit=self.settings.default_limit,
            default_window=self.settings.default_window_s,
            default_relax=self.settings.relax.enabled_by_default,
            now=now,
        )
        usage = ledger.window_usage(tx, guild_id, user_id, pol.window_s, now)
        return _status(guild_id, user_id, pol, usage, self.settings.relax.limit)

    async def status(self, guild_id: int, user_id: int, role_ids: Sequence[int] = ()) -> QuotaStatus:
        _check_id("guild id", guild_id)
        _check_id("user id", user_id)
        roles = _check_roles(role_ids)
        now = self._clock()
        return await self._db.run(lambda tx: self._load(tx, guild_id, user_id, roles, now), write=False)

    # -- charging --------------------------------------------------------------------------------------

    async def reserve(  # noqa: PLR0917 - the signature the bot codes against
        self,
        job_id: str,
        guild_id: int,
        user_id: int,
        role_ids: Sequence[int],
        cost: int,
        lane: Lane | None = None,
    ) -> Reservation:
        """Check the share and insert a reserved row in one BEGIN IMMEDIATE transaction.

        `lane=None` takes fast credits if they suffice, else the relax lane if the guild has it open.
        """
        _check_job_id(job_id)
        _check_id("guild id", guild_id)
        _check_id("user id", user_id)
        if isinstance(cost, bool) or not isinstance(cost, int) or cost < 1:
            raise QuotaInputError(f"cost must be a positive whole number of credits, got {cost!r}")
        if lane not in (None, "fast", "relax"):
            raise QuotaInputError(f"lane must be 'fast' or 'relax', got {lane!r}")
        roles = _check_roles(role_ids)
        now = self._clock()

        def body(tx: SyncTx) -> Reservation:
            st = self._load(tx, guild_id, user_id, roles, now)
            chosen, spends = self._choose(tx, st, cost, lane, now)
            ledger.insert(
                tx,
                job_id=job_id,
                guild_id=guild_id,
                user_id=user_id,
                cost=cost,
                lane=chosen,
                spends=spends,
                now=now,
                forgiven=st.unlimited and chosen == "fast",  # free while unlimited, then and later
            )
            bonus_cost = sum(s.credits for s in spends)
            return Reservation(
                job_id, guild_id, user_id, chosen, cost, bonus_cost, _after(st, chosen, cost, bonus_cost, now)
            )

        try:
            return await self._db.run(body)
        except sqlite3.IntegrityError as exc:
            if "ledger.job_id" in str(exc):
                raise DuplicateReservation(job_id) from exc
            raise

    def _choose(
        self, tx: SyncTx, st: QuotaStatus, cost: int, lane: Lane | None, now: float
    ) -> tuple[Lane, list[BonusSpend]]:
        if st.blocked:
            raise UserBlocked()
        if lane == "relax":
            if not st.relax_room(cost):
                raise RelaxUnavailable(
                    "The relax lane is closed in this server."
                    if not st.relax_enabled
                    else "You have used all your relax credits for now."
                )
            return "relax", []
        if st.unlimited or cost <= st.remaining:
            return "fast", []
        if cost <= st.spendable:
            grants = policy.active_grants(tx, st.guild_id, st.user_id, now)
            return "fast", _spend_plan(grants, cost - st.remaining)
        if lane is None and st.relax_room(cost):
            return "relax", []
        raise QuotaExceeded(st, cost, relax_available=lane == "fast" and st.relax_room(cost))

    async def commit(self, job_id: str) -> bool:
        """Make a reservation final; False if it is unknown or already committed or refunded."""
        changed = await self._db.write(ledger.COMMIT_SQL, (self._clock(), _check_job_id(job_id)))
        return changed > 0

    async def refund(self, job_id: str) -> bool:
        """Give a reservation's credits (bonus included) back; False if unknown or already final."""
        changed = await self._db.write(ledger.REFUND_SQL, (self._clock(), _check_job_id(job_id)))
        return changed > 0

    async def sweep_stale(self) -> int:
        """Settle reservations older than the stale age that a crash left behind.

        A reservation whose job succeeded is committed (the crash came after the work); one whose job is
        still being updated is left alone; every other one is refunded. Returns how many were settled.
        """
        now = self._clock()
        before = now - self.settings.stale_reservation_s

        def body(tx: SyncTx) -> int:
            settled = 0
            for stale in ledger.stale_reservations(tx, before):
                if stale.job_status == "succeeded":
                    settled += tx.execute(ledger.COMMIT_SQL, (now, stale.job_id))
                elif (
                    stale.job_status in ("pending", "queued", "running")
                    and (stale.job_updated_at or 0) >= before
                ):
                    continue
                else:
                    settled += tx.execute(ledger.REFUND_SQL, (now, stale.job_id))
            return settled

        settled = await self._db.run(body)
        if settled:
            log.info("settled %d stale reservations", settled)
        return settled

    async def prune(self) -> int:
        """Delete ledger rows older than the longest window plus the retention period."""
        now = self._clock()
        retention_s = self._db.settings.retention_days * DAY_S

        def body(tx: SyncTx) -> int:
            before = now - policy.max_window(tx, self.settings.default_window_s) - retention_s
            return ledger.prune(tx, before) + policy.prune_grants(tx, before)

        removed = await self._db.run(body)
        if removed:
            log.info("pruned %d ledger rows and expired grants", removed)
        return removed

    # -- admin -----------------------------------------------------------------------------------------

    def _check_limit(self, limit: int) -> int:
        if isinstance(limit, bool) or not isinstance(limit, int) or not 1 <= limit <= self.settings.max_limit:
            raise QuotaInputError(
                f"a limit must be a whole number from 1 to {self.settings.max_limit}, got {limit!r}"
            )
        return limit

    def _check_window(self, window_s: int) -> int:
        lo, hi = self.settings.min_window_s, self.settings.max_window_s
        if isinstance(window_s, bool) or not isinstance(window_s, int) or not lo <= window_s <= hi:
            raise QuotaInputError(f"a window must be from {lo} to {hi} seconds, got {window_s!r}")
        return window_s

    def _guild_policy(self, tx: SyncTx, guild_id: int) -> policy.GuildPolicy:
        s = self.settings
        return policy.guild_policy(
            tx, guild_id, default_limit=s.default_limit, default_window=s.default_window_s
        )

    async def _admin(self, guild_id: int, actor_id: int, change: Callable[[SyncTx, float], Audited[R]]) -> R:
        """Run one admin change and its audit row in one transaction."""
        _check_id("guild id", guild_id)
        _check_id("actor id", actor_id)
        now = self._clock()

        def body(tx: SyncTx) -> R:
            done = change(tx, now)
            audit.record(
                tx,
                guild_id=guild_id,
                actor_id=actor_id,
                action=done.action,
                target_id=done.target_id,
                detail=done.detail,
                now=now,
            )
            return done.result

        return await self._db.run(body)

    async def policy_overview(self, guild_id: int) -> PolicyOverview:
        _check_id("guild id", guild_id)

        def body(tx: SyncTx) -> PolicyOverview:
            gp = self._guild_policy(tx, guild_id)
            tiers = policy.role_tiers(tx, guild_id)
            overrides = policy.user_overrides(tx, guild_id)
            return PolicyOverview(guild_id, gp.limit_credits, gp.window_s, gp.configured, tiers, overrides)

        return await self._db.run(body, write=False)

    async def set_guild_default(
        self, guild_id: int, actor_id: int, *, limit: int, window_s: int | None = None
    ) -> PolicyOverview:
        """Set the guild's default limit, and its window when given (else keep the current one)."""
        self._check_limit(limit)
        if window_s is not None:
            self._check_window(window_s)

        def change(tx: SyncTx, now: float) -> Audited[None]:
            old = self._guild_policy(tx, guild_id)
            window = old.window_s if window_s is None else window_s
            policy.set_guild_policy(tx, guild_id, limit=limit, window_s=window, actor_id=actor_id, now=now)
            detail = {
                "limit": limit,
                "window_s": window,
                "old_limit": old.limit_credits,
                "old_window_s": old.window_s,
            }
            return Audited("quota.set_guild_default", None, detail, None)

        await self._admin(guild_id, actor_id, change)
        return await self.policy_overview(guild_id)

    async def set_role_tier(
        self, guild_id: int, role_id: int, name: str, limit: int, actor_id: int
    ) -> RoleTier:
        _check_id("role id", role_id)
        self._check_limit(limit)
        name = (name or "").strip()
        if not 1 <= len(name) <= 100:
            raise QuotaInputError("a tier needs a name of 1 to 100 characters")

        def change(tx: SyncTx, now: float) -> Audited[RoleTier]:
            policy.set_role_tier(tx, guild_id, role_id, name=name, limit=limit, actor_id=actor_id, now=now)
            tier = RoleTier(guild_id, role_id, name, limit)
            return Audited("quota.set_role_tier", role_id, {"name": name, "limit": limit}, tier)

        return await self._admin(guild_id, actor_id, change)

    async def clear_role_tier(self, guild_id: int, role_id: int, actor_id: int) -> None:
        _check_id("role id", role_id)

        def change(tx: SyncTx, now: float) -> Audited[None]:
            if not policy.delete_role_tier(tx, guild_id, role_id):
                raise QuotaInputError(f"role {role_id} has no quota tier in this server")
            return Audited("quota.clear_role_tier", role_id, {}, None)

        await self._admin(guild_id, actor_id, change)

    async def _change_override(
        self,
        guild_id: int,
        user_id: int,
        actor_id: int,
        action: str,
        edit: Callable[[UserOverride], UserOverride],
    ) -> UserOverride:
        """Read, edit and store one user's override row, with its audit row, in one write transaction."""
        _check_id("user id", user_id)

        def change(tx: SyncTx, now: float) -> Audited[UserOverride]:
            old = policy.user_override(tx, guild_id, user_id) or UserOverride(
                guild_id, user_id, None, False, False, None
            )
            new = edit(old)
            policy.save_user_override(tx, new, actor_id, now)
            detail = {
                "limit": new.limit_credits,
                "unlimited": new.unlimited,
                "blocked": new.blocked,
                "reason": new.reason,
            }
            return Audited(action, user_id, detail, new)

        return await self._admin(guild_id, actor_id, change)

    async def set_user_override(
        self,
        guild_id: int,
        user_id: int,
        actor_id: int,
        *,
        limit: int | None = None,
        unlimited: bool = False,
        reason: str | None = None,
    ) -> UserOverride:
        """Give a user a fixed limit or make them unlimited (exactly one); a block stays as it is."""
        if (limit is None) == (not unlimited):
            raise QuotaInputError("an override sets either a limit or unlimited, not both or neither")
        if limit is not None:
            self._check_limit(limit)
        return await self._change_override(
            guild_id,
            user_id,
            actor_id,
            "quota.set_user_override",
            lambda o: dataclasses.replace(
                o, limit_credits=limit, unlimited=unlimited, reason=reason or o.reason
            ),
        )

    async def clear_user_override(self, guild_id: int, user_id: int, actor_id: int) -> UserOverride:
        """Drop a user's limit or unlimited override; a block stays (use unblock)."""

        def clear(o: UserOverride) -> UserOverride:
            if o.limit_credits is None and not o.unlimited:
                raise QuotaInputError(f"user {user_id} has no quota override in this server")
            return dataclasses.replace(o, limit_credits=None, unlimited=False)

        return await self._change_override(guild_id, user_id, actor_id, "quota.clear_user_override", clear)

    async def block(
        self, guild_id: int, user_id: int, actor_id: int, reason: str | None = None
    ) -> UserOverride:
        def block(o: UserOverride) -> UserOverride:
            if o.blocked:
                raise QuotaInputError(f"user {user_id} is already blocked")
            return dataclasses.replace(o, blocked=True, reason=reason or o.reason)

        return await self._change_override(guild_id, user_id, actor_id, "quota.block", block)

    async def unblock(self, guild_id: int, user_id: int, actor_id: int) -> UserOverride:
        def unblock(o: UserOverride) -> UserOverride:
            if not o.blocked:
                raise QuotaInputError(f"user {user_id} is not blocked")
            return dataclasses.replace(o, blocked=False)

        return await self._change_override(guild_id, user_id, actor_id, "quota.unblock", unblock)

    async def grant_bonus(  # noqa: PLR0917 - the signature the admin cog codes against
        self,
        guild_id: int,
        user_id: int,
        credits: int,
        actor_id: int,
        expires_at: float | None = None,
        reason: str | None = None,
    ) -> int:
        """Add bonus credits on top of the user's limit until spent or `expires_at`; returns the grant id."""
        _check_id("user id", user_id)
        if (
            isinstance(credits, bool)
            or not isinstance(credits, int)
            or not 1 <= credits <= self.settings.max_bonus
        ):
            raise QuotaInputError(
                f"a bonus must be from 1 to {self.settings.max_bonus} credits, got {credits!r}"
            )
        if expires_at is not None and not self._clock() < expires_at <= self._clock() + 366 * DAY_S:
            raise QuotaInputError("a bonus must expire in the future and within a year")

        def change(tx: SyncTx, now: float) -> Audited[int]:
            bonus_id = policy.add_grant(
                tx,
                guild_id,
                user_id,
                credits=credits,
                expires_at=expires_at,
                reason=reason,
                actor_id=actor_id,
                now=now,
            )
            detail = {"bonus_id": bonus_id, "credits": credits, "expires_at": expires_at, "reason": reason}
            return Audited("quota.grant_bonus", user_id, detail, bonus_id)

        return await self._admin(guild_id, actor_id, change)

    async def reset_user(self, guild_id: int, user_id: int, actor_id: int) -> ledger.Forgiven:
        """Forgive every charge counting against the user in the current window (fast and relax); bonus
        credits spent stay spent. Returns what was forgiven."""
        _check_id("user id", user_id)

        def change(tx: SyncTx, now: float) -> Audited[ledger.Forgiven]:
            window = self._guild_policy(tx, guild_id).window_s
            done = ledger.void_window(tx, guild_id, user_id, now - window, now)
            detail = {"voided": done.jobs, "credits": done.credits, "relax_credits": done.relax_credits}
            return Audited("quota.reset_user", user_id, detail, done)

        return await self._admin(guild_id, actor_id, change)

    async def usage_report(self, guild_id: int, days: int = 7, top: int = 10) -> UsageReport:
        """Charged jobs and credits (refunds excluded) per user and per UTC day over the last `days` days."""
        _check_id("guild id", guild_id)
        if isinstance(days, bool) or not isinstance(days, int) or not 1 <= days <= 366:
            raise QuotaInputError(f"a report covers 1 to 366 days, got {days!r}")
        since = self._clock() - days * DAY_S
        rows = await self._db.run(lambda tx: ledger.usage_by_user_day(tx, guild_id, since), write=False)
        return _report(guild_id, days, since, rows, top)


def _report(guild_id: int, days: int, since: float, rows: list[UserDayUsage], top: int) -> UsageReport:
    users: dict[int, UserUsage] = {}
    day_rows: dict[str, list[UserDayUsage]] = {}
    for r in rows:
        u = users.get(r.user_id, UserUsage(r.user_id, 0, 0, 0))
        users[r.user_id] = UserUsage(
            r.user_id, u.jobs + r.jobs, u.credits + r.credits, u.relax_jobs + r.relax_jobs
        )
        day_rows.setdefault(r.day, []).append(r)
    per_user = sorted(users.values(), key=lambda u: (-u.credits, -u.jobs, u.user_id))
    per_day = [
        DayUsage(day, sum(r.jobs for r in rs), sum(r.credits for r in rs), len(rs))
        for day, rs in sorted(day_rows.items())
    ]
    return UsageReport(guild_id, days, since, per_user, per_day, rows, per_user[:top])


class MaintenanceScheduler:
    """Registers the stale-reservation sweep, ledger pruning and the optional nightly backup."""

    SWEEP_ID = "brushfire.quota.sweep"
    PRUNE_ID = "brushfire.quota.prune"
    BACKUP_ID = "brushfire.db.backup"

    def __init__(self, quotas: QuotaService, db: Database, clock: Callable[[], float] = time.time) -> None:
        self._quotas = quotas
        self._db = db
        self._clock = clock

    def register(self, scheduler: AsyncIOScheduler) -> list[Job]:
        """Add the jobs (replacing earlier ones with the same ids); the scheduler may already be running."""
        qs = self._quotas.settings
        common = {"replace_existing": True, "coalesce": True, "max_instances": 1, "misfire_grace_time": 300}
        jobs = [
            scheduler.add_job(
                self.sweep, IntervalTrigger(seconds=qs.sweep_interval_s), id=self.SWEEP_ID, **common
            ),
            scheduler.add_job(
                self.prune, IntervalTrigger(seconds=qs.prune_interval_s), id=self.PRUNE_ID, **common
            ),
        ]
        ds = self._db.settings
        if ds.backup_dir is not None and ds.backup_hour is not None:
            jobs.append(
                scheduler.add_job(
                    self.backup, CronTrigger(hour=ds.backup_hour, minute=0), id=self.BACKUP_ID, **common
                )
            )
        return jobs

    # The jobs log their own failures: an exception escaping into APScheduler would only be logged there,
    # far from the context, and a failed sweep must never stop the next one.
    async def sweep(self) -> int:
        try:
            return await self._quotas.sweep_stale()
        except Exception:
            log.exception("stale-reservation sweep failed")
            return 0

    async def prune(self) -> int:
        """Prune the ledger, and forget interaction tokens of jobs finished over a day ago (they expire anyway)."""
        try:
            removed = await self._quotas.prune()
            await JobsRepo(self._db, self._clock).prune_finished(self._clock() - DAY_S)
        except Exception:
            log.exception("ledger pruning failed")
            return 0
        return removed

    async def backup(self) -> Path | None:
        """Write `brushfire-YYYYMMDD-HHMMSS.sqlite3` into the backup folder and keep the newest few."""
        ds = self._db.settings
        if ds.backup_dir is None:
            return None
        stamp = datetime.fromtimestamp(self._clock(), UTC).strftime("%Y%m%d-%H%M%S")
        target = ds.backup_dir / f"brushfire-{stamp}.sqlite3"
        try:
            await self._db.backup_to(target)
        except Exception:
            log.exception("nightly backup to %s failed", target)
            return None
        for old in sorted(ds.backup_dir.glob("brushfire-*.sqlite3"))[: -ds.backups_kept]:
            old.unlink(missing_ok=True)
        log.info("database backed up to %s", target)
        return target
