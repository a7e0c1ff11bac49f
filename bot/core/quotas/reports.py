"""Usage reports: charged jobs and credits per user and per day, for `/quota-admin report`."""

from __future__ import annotations

import time
from collections.abc import Callable

from bot.core.i18n import N_
from bot.core.quotas.pricing import DAY_S
from bot.core.quotas.records import DayUsage, QuotaInputError, UsageReport, UserUsage, check_id
from storage import ledger
from storage.db import Database
from storage.ledger import UserDayUsage


class QuotaReports:
    """Reads the ledger for reports; never writes."""

    def __init__(self, db: Database, clock: Callable[[], float] = time.time) -> None:
        self._db = db
        self._clock = clock

    async def usage_report(self, guild_id: int, days: int = 7, top: int = 10) -> UsageReport:
        """Charged jobs and credits (refunds excluded) per user and per UTC day over the last `days` days."""
        check_id(N_("guild id"), guild_id)
        if isinstance(days, bool) or not isinstance(days, int) or not 1 <= days <= 366:
            raise QuotaInputError(N_("A report covers 1 to 366 days, not {days}."), days=days)
        since = self._clock() - days * DAY_S
        async with self._db.transaction(write=False) as tx:
            rows = await ledger.usage_by_user_day(tx, guild_id, since)
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
