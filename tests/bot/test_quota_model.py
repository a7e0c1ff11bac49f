"""Model-based test of the quota rules: a hypothesis state machine drives the real QuotaService (real SQLite
file, simulated clock) through thousands of steps across many members, and after every step compares it with
a model written from docs/quotas.md (the numbers in comments are that page's questions)."""

from __future__ import annotations

import asyncio
import itertools
import math
import tempfile
from collections.abc import Coroutine
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, TypeVar

import pytest
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, initialize, invariant, rule

from bot.core.quotas.pricing import QuotaSettings, RelaxSettings
from bot.core.quotas.records import QuotaExceeded, RelaxUnavailable, UserBlocked
from bot.core.quotas.service import QuotaService
from storage.db import Database, DatabaseSettings
from tests.storage.helpers import T0, Clock

T = TypeVar("T")

G, ADMIN = 1, 999
USERS = (11, 12, 13, 14, 15, 16)
ROLES = (101, 102, 103)
# Fixed role sets: nobody, one role, two tiered roles, all three.
MEMBER_ROLES = {11: (), 12: (101,), 13: (101, 102), 14: (103,), 15: (101, 102, 103), 16: (102,)}
DEFAULT_LIMIT, DEFAULT_WINDOW, RELAX_CAP = 12, 3600, 9
Lane = Literal["fast", "relax"]


@dataclass
class Grant:
    bonus_id: int
    credits: int
    expires_at: float | None


@dataclass
class Charge:
    user: int
    cost: int
    lane: Lane
    created_at: float
    spends: dict[int, int]  # bonus_id -> credits
    state: str = "reserved"
    forgiven: bool = False  # made while unlimited (9), or reset (12)

    @property
    def window_part(self) -> int:
        return self.cost - sum(self.spends.values())


@dataclass
class Model:
    """docs/quotas.md, as plain Python."""

    now: float = T0
    guild_limit: int | None = None  # None: the configured default
    window: int = DEFAULT_WINDOW
    tiers: dict[int, int] = field(default_factory=dict)  # role -> limit
    override_limit: dict[int, int] = field(default_factory=dict)
    unlimited: set[int] = field(default_factory=set)
    blocked: set[int] = field(default_factory=set)
    grants: dict[int, list[Grant]] = field(default_factory=dict)
    charges: dict[str, Charge] = field(default_factory=dict)

    def limit(self, user: int) -> int:  # 7, 8
        if user in self.override_limit and user not in self.unlimited:
            return self.override_limit[user]
        tiered = [self.tiers[r] for r in MEMBER_ROLES[user] if r in self.tiers]
        if tiered:
            return max(tiered)
        return DEFAULT_LIMIT if self.guild_limit is None else self.guild_limit

    def counting(self, user: int) -> list[Charge]:  # 2, 3, 4, 6
        return [
            c
            for c in self.charges.values()
            if c.user == user
            and c.state != "refunded"
            and not c.forgiven
            and c.created_at > self.now - self.window
        ]

    def used(self, user: int) -> int:
        return sum(c.window_part for c in self.counting(user) if c.lane == "fast")

    def relax_used(self, user: int) -> int:
        return sum(c.cost for c in self.counting(user) if c.lane == "relax")

    def next_refill_second(self, user: int) -> int | None:  # 5
        times = [c.created_at for c in self.counting(user) if c.lane == "fast" and c.window_part > 0]
        return math.ceil(min(times) + self.window) if times else None

    def grant_left(self, grant: Grant) -> int:
        spent = sum(c.spends.get(grant.bonus_id, 0) for c in self.charges.values() if c.state != "refunded")
        return grant.credits - spent

    def active_grants(self, user: int) -> list[Grant]:  # 10: soonest expiry first, never-expiring last
        live = [
            g
            for g in self.grants.get(user, [])
            if (g.expires_at is None or g.expires_at > self.now) and self.grant_left(g) > 0
        ]
        return sorted(live, key=lambda g: (g.expires_at is None, g.expires_at or 0, g.bonus_id))

    def bonus_left(self, user: int) -> int:
        return sum(self.grant_left(g) for g in self.active_grants(user))

    def remaining(self, user: int) -> int:
        return max(0, self.limit(user) - self.used(user))

    def relax_room(self, user: int, cost: int) -> bool:  # 11
        return self.relax_used(user) + cost <= RELAX_CAP

    def reserve(self, user: int, cost: int, lane: Lane | None) -> tuple[Lane, dict[int, int], bool] | type:
        """What a reservation does: (lane, bonus spends, forgiven), or the error class it raises."""
        if user in self.blocked:  # 13
            return UserBlocked
        if lane == "relax":
            return ("relax", {}, False) if self.relax_room(user, cost) else RelaxUnavailable
        if user in self.unlimited:  # 9
            return "fast", {}, True
        left = self.remaining(user)
        if cost <= left:  # 10
            return "fast", {}, False
        if cost <= left + self.bonus_left(user):
            need, spends = cost - left, {}
            for grant in self.active_grants(user):
                take = min(self.grant_left(grant), need)
                if take:
                    spends[grant.bonus_id] = take
                    need -= take
            return "fast", spends, False
        if lane is None and self.relax_room(user, cost):  # 11
            return "relax", {}, False
        return QuotaExceeded

    def reset(self, user: int) -> tuple[int, int, int]:  # 12
        counted = [c for c in self.counting(user) if c.lane == "relax" or c.window_part > 0]
        for c in counted:
            c.forgiven = True
        fast = sum(c.window_part for c in counted if c.lane == "fast")
        relax = sum(c.cost for c in counted if c.lane == "relax")
        return len(counted), fast, relax


users = st.sampled_from(USERS)
costs = st.one_of(st.integers(1, 4), st.integers(5, 15))
waits = st.one_of(
    st.floats(0.001, 900, allow_nan=False),
    st.sampled_from([0.5, 1.0, 1799.5, 3599.999, 3600.0, 7200.0]),
)


class QuotaMachine(RuleBasedStateMachine):
    """The service and the model take the same steps; every observable number must agree."""

    def __init__(self) -> None:
        super().__init__()
        self.loop = asyncio.new_event_loop()
        self.tmp = tempfile.TemporaryDirectory()
        self.clock = Clock()
        self.model = Model(now=self.clock.now)
        self.ids = itertools.count()
        path = Path(self.tmp.name) / "quota.sqlite3"
        self._db_cm = Database.open(DatabaseSettings(path=path))
        self.db = self.run(self._db_cm.__aenter__())
        quota = QuotaSettings(
            default_limit=DEFAULT_LIMIT,
            default_window_s=DEFAULT_WINDOW,
            min_window_s=60,
            relax=RelaxSettings(limit=RELAX_CAP),
        )
        self.q = QuotaService(self.db, quota, self.clock)

    def run(self, coro: Coroutine[Any, Any, T]) -> T:
        return self.loop.run_until_complete(coro)

    def teardown(self) -> None:
        self.run(self._db_cm.__aexit__(None, None, None))
        self.loop.close()
        self.tmp.cleanup()

    def tick(self, seconds: float) -> None:
        self.clock.advance(seconds)
        self.model.now = self.clock.now

    @initialize()
    def start(self) -> None:
        self.tick(0.25)  # a fractional start, so refill seconds need rounding

    # -- time -----------------------------------------------------------------------------------------

    @rule(seconds=waits)
    def wait(self, seconds: float) -> None:
        self.tick(seconds)

    @rule(seconds=st.floats(0.5, 5000, allow_nan=False))
    def clock_steps_back(self, seconds: float) -> None:  # 6
        self.tick(-seconds)

    @rule(user=users)
    def spend_at_the_named_refill_second(self, user: int) -> None:  # 5: the second /quota names works
        second = self.run(self.q.status(G, user, MEMBER_ROLES[user])).next_refill_second
        if second is None or second < self.clock.now:
            return
        self.tick(second - self.clock.now)
        if user in self.model.blocked or self.model.remaining(user) < 1:
            return  # a lower limit since the charge was made can still leave nothing free
        self.reserve(user, 1, "fast")

    # -- charging -------------------------------------------------------------------------------------

    @rule(user=users, cost=costs, lane=st.sampled_from([None, None, "fast", "relax"]))
    def reserve(self, user: int, cost: int, lane: Lane | None) -> None:
        expected = self.model.reserve(user, cost, lane)
        job = f"job{next(self.ids)}"
        try:
            got = self.run(self.q.reserve(job, G, user, MEMBER_ROLES[user], cost, lane))
        except (QuotaExceeded, RelaxUnavailable, UserBlocked) as exc:
            assert type(exc) is expected, (type(exc), expected)
            return
        assert isinstance(expected, tuple), (got, expected)
        want_lane, spends, forgiven = expected
        assert (got.lane, got.bonus_cost) == (want_lane, sum(spends.values()))
        self.model.charges[job] = Charge(user, cost, want_lane, self.clock.now, spends, forgiven=forgiven)

    def _settle(self, data: st.DataObject, state: str) -> None:
        open_jobs = sorted(j for j, c in self.model.charges.items() if c.state == "reserved")
        if not open_jobs:
            return
        job = data.draw(st.sampled_from(open_jobs))
        settle = self.q.commit if state == "committed" else self.q.refund
        assert self.run(settle(job))
        self.model.charges[job].state = state

    @rule(data=st.data())
    def commit(self, data: st.DataObject) -> None:
        self._settle(data, "committed")

    @rule(data=st.data())
    def refund(self, data: st.DataObject) -> None:
        self._settle(data, "refunded")

    # -- admin ----------------------------------------------------------------------------------------

    @rule(limit=st.integers(1, 30), window=st.one_of(st.none(), st.sampled_from([600, 1800, 3600, 7200])))
    def set_default(self, limit: int, window: int | None) -> None:  # 4
        self.run(self.q.admin.set_guild_default(G, ADMIN, limit=limit, window_s=window))
        self.model.guild_limit = limit
        self.model.window = window or self.model.window

    @rule(role=st.sampled_from(ROLES), limit=st.integers(1, 40))
    def set_tier(self, role: int, limit: int) -> None:  # 7, 8
        self.run(self.q.admin.set_role_tier(G, role, f"tier {role}", limit, ADMIN))
        self.model.tiers[role] = limit

    @rule(role=st.sampled_from(ROLES))
    def clear_tier(self, role: int) -> None:
        if role in self.model.tiers:
            self.run(self.q.admin.clear_role_tier(G, role, ADMIN))
            del self.model.tiers[role]

    @rule(user=users, limit=st.one_of(st.none(), st.integers(1, 25)))
    def set_override(self, user: int, limit: int | None) -> None:  # 7, 9
        self.run(self.q.admin.set_user_override(G, user, ADMIN, limit=limit, unlimited=limit is None))
        self.model.override_limit.pop(user, None)
        self.model.unlimited.discard(user)
        if limit is None:
            self.model.unlimited.add(user)
        else:
            self.model.override_limit[user] = limit

    @rule(user=users)
    def clear_override(self, user: int) -> None:
        if user in self.model.unlimited or user in self.model.override_limit:
            self.run(self.q.admin.clear_user_override(G, user, ADMIN))
            self.model.unlimited.discard(user)
            self.model.override_limit.pop(user, None)

    @rule(user=users)
    def block_or_unblock(self, user: int) -> None:  # 13
        if user in self.model.blocked:
            self.run(self.q.admin.unblock(G, user, ADMIN))
            self.model.blocked.discard(user)
        else:
            self.run(self.q.admin.block(G, user, ADMIN))
            self.model.blocked.add(user)

    @rule(user=users, credits=st.integers(1, 10), expires_in=st.one_of(st.none(), st.floats(10, 9000)))
    def grant(self, user: int, credits: int, expires_in: float | None) -> None:  # 10
        expires_at = None if expires_in is None else self.clock.now + expires_in
        bonus_id = self.run(self.q.admin.grant_bonus(G, user, credits, ADMIN, expires_at))
        self.model.grants.setdefault(user, []).append(Grant(bonus_id, credits, expires_at))

    @rule(user=users)
    def reset(self, user: int) -> None:  # 12
        done = self.run(self.q.admin.reset_user(G, user, ADMIN))
        assert (done.jobs, done.credits, done.relax_credits) == self.model.reset(user)

    # -- what members see -----------------------------------------------------------------------------

    @invariant()
    def every_member_sees_what_the_rules_say(self) -> None:
        m = self.model
        for user in USERS:
            got = self.run(self.q.status(G, user, MEMBER_ROLES[user]))
            want = (
                m.limit(user),
                m.used(user),
                m.remaining(user),
                m.bonus_left(user),
                m.relax_used(user),
                user in m.blocked,
                user in m.unlimited,
                m.next_refill_second(user),
                m.window,
            )
            seen = (
                got.limit,
                got.used,
                got.remaining,
                got.bonus_remaining,
                got.relax_used,
                got.blocked,
                got.unlimited,
                got.next_refill_second,
                got.window_s,
            )
            assert seen == want, (user, seen, want)


QuotaMachine.TestCase.settings = settings(
    max_examples=60,
    stateful_step_count=100,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much],
)
TestQuotaRulesMatchTheDocumentedModel = pytest.mark.timeout(300)(QuotaMachine.TestCase)
