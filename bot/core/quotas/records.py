"""The quota core's records and errors: a user's share, a reservation, reports, and what can go wrong."""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Generic, Literal, TypeVar

from bot.core.i18n import N_, LocalisedError, Message
from inference.vocabulary import Lane
from storage.ledger import UserDayUsage
from storage.policy import RoleTier, UserOverride

LimitSource = Literal["default", "guild", "role", "override", "unlimited"]
R = TypeVar("R")


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


class QuotaError(LocalisedError):
    """Base of every quota error; the message is written for the user who hit it (a marked template)."""


class QuotaInputError(QuotaError, ValueError):
    """An admin or caller passed a value that makes no sense; nothing was changed."""


class QuotaExceeded(QuotaError):
    def __init__(self, status: QuotaStatus, cost: int, relax_available: bool) -> None:
        second = status.next_refill_second
        refill = (
            Message(N_(" Next credit returns {when}."), {"when": f"<t:{second}:R>"})
            if second is not None
            else ""
        )
        relax = Message(N_(" The relax lane is open: try again in relax mode.")) if relax_available else ""
        super().__init__(
            N_("This job costs {cost}, but you have {left} of your {limit} credits left.{refill}{relax}"),
            cost=cost,
            left=status.spendable,
            limit=status.limit,
            refill=refill,
            relax=relax,
        )
        self.status = status
        self.cost = cost
        self.relax_available = relax_available


class RelaxUnavailable(QuotaError):
    """Relax was asked for explicitly but the guild has it off, or its relax cap is reached."""


class UserBlocked(QuotaError):
    def __init__(self) -> None:
        super().__init__(N_("You are blocked from generating images in this server."))


class DuplicateReservation(QuotaError):
    def __init__(self, job_id: str) -> None:
        super().__init__(N_("Job {job_id} already has a reservation."), job_id=job_id)
        self.job_id = job_id


@dataclass(frozen=True, slots=True)
class Audited(Generic[R]):
    """What an admin change did, for its audit row, and what to hand back to the caller."""

    action: str
    target_id: int | None
    detail: Mapping[str, object]
    result: R


def check_id(name: str, value: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
        raise QuotaInputError(
            N_("A {name} must be a positive Discord id, not {value}."), name=Message(name), value=repr(value)
        )
    return value


def check_roles(role_ids: Sequence[int]) -> tuple[int, ...]:
    return tuple(check_id(N_("role id"), r) for r in role_ids)


def check_job_id(job_id: str) -> str:
    if not isinstance(job_id, str) or not 1 <= len(job_id) <= 128:
        raise QuotaInputError(
            N_("A job id must be 1 to 128 characters, not {job_id}."), job_id=repr(job_id)[:140]
        )
    return job_id
