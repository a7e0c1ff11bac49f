"""The usage ledger: one row per job with its cost, lane and state (reserved, committed or refunded)."""

from __future__ import annotations

import json
import logging
from collections.abc import Sequence
from dataclasses import dataclass
from enum import StrEnum

from inference.vocabulary import Lane
from storage.db import Tx, from_row

log = logging.getLogger(__name__)


class LedgerState(StrEnum):
    RESERVED = "reserved"
    COMMITTED = "committed"
    REFUNDED = "refunded"


@dataclass(frozen=True, slots=True)
class WindowUsage:
    """What counts against a user inside the window ending now.

    A row counts while `created_at > now - window_s`: it stops counting exactly one window after it was made.
    """

    fast_used: int  # window credits (the bonus-paid part excluded) of live fast rows
    relax_used: int
    oldest_fast: float | None  # created_at of the oldest counting fast row; its credits return first
    oldest_relax: float | None


@dataclass(frozen=True, slots=True)
class BonusSpend:
    bonus_id: int
    credits: int


@dataclass(frozen=True, slots=True)
class UserDayUsage:
    user_id: int
    day: str  # YYYY-MM-DD, UTC
    jobs: int
    credits: int
    relax_jobs: int


def window_usage_sql(since: str) -> str:
    """The window's sums for `:guild` and `:user`, counting rows made after the SQL expression `since`
    (it reads the covering index ledger_user_window only)."""
    return f"""
SELECT COALESCE(SUM(CASE WHEN lane = 'fast' THEN cost - bonus_cost END), 0) AS fast_used,
       COALESCE(SUM(CASE WHEN lane = 'relax' THEN cost END), 0) AS relax_used,
       MIN(CASE WHEN lane = 'fast' AND cost > bonus_cost THEN created_at END) AS oldest_fast,
       MIN(CASE WHEN lane = 'relax' THEN created_at END) AS oldest_relax
  FROM ledger
 WHERE guild_id = :guild AND user_id = :user AND created_at > {since} AND state != 'refunded' AND voided = 0
"""


@dataclass(frozen=True, slots=True)
class Charge:
    """A reserved row to insert. A `forgiven` one (made while the member was unlimited) is voided from
    the start: it shows in reports but never counts against a window."""

    job_id: str
    guild_id: int
    user_id: int
    cost: int
    lane: Lane
    spends: Sequence[BonusSpend] = ()
    forgiven: bool = False


async def insert(tx: Tx, charges: Sequence[Charge], now: float) -> None:
    """Insert reserved rows (one trip for all of them); a second row for a job raises
    sqlite3.IntegrityError, so check with `reserved_already` first."""
    if not charges:
        return
    await tx.executemany(
        """INSERT INTO ledger (job_id, guild_id, user_id, cost, bonus_cost, lane, state, voided, created_at,
                               updated_at)
           VALUES (?, ?, ?, ?, ?, ?, 'reserved', ?, ?, ?)""",
        [
            (
                c.job_id,
                c.guild_id,
                c.user_id,
                c.cost,
                sum(s.credits for s in c.spends),
                c.lane,
                int(c.forgiven),
                now,
                now,
            )
            for c in charges
        ],
    )
    spends = [(c.job_id, s.bonus_id, s.credits) for c in charges for s in c.spends]
    if spends:
        await tx.executemany("INSERT INTO bonus_spend (job_id, bonus_id, credits) VALUES (?, ?, ?)", spends)


async def reserved_already(tx: Tx, job_ids: Sequence[str]) -> set[str]:
    """Which of these jobs already have a ledger row."""
    rows = await tx.fetchall(
        "SELECT job_id FROM ledger WHERE job_id IN (SELECT value FROM json_each(?))", (json.dumps(job_ids),)
    )
    return {row[0] for row in rows}


# A single UPDATE is atomic on its own; the state guard makes commit and refund idempotent and final.
COMMIT_SQL = "UPDATE ledger SET state = 'committed', updated_at = ? WHERE job_id = ? AND state = 'reserved'"
REFUND_SQL = "UPDATE ledger SET state = 'refunded', updated_at = ? WHERE job_id = ? AND state = 'reserved'"


async def commit(tx: Tx, job_id: str, now: float) -> int:
    """Make a reservation final; 0 when it is unknown or already committed or refunded."""
    return await tx.execute(COMMIT_SQL, (now, job_id))


async def refund(tx: Tx, job_id: str, now: float) -> int:
    """Give a reservation's credits back; 0 when it is unknown or already final."""
    return await tx.execute(REFUND_SQL, (now, job_id))


async def settle(tx: Tx, outcomes: Sequence[tuple[str, LedgerState]], now: float) -> set[str]:
    """Commit or refund several reservations in one statement (each job at most once); the jobs whose
    reservation this made final (not those unknown or already final). Needs SQLite 3.35 (RETURNING)."""
    rows = await tx.execute_returning(
        """UPDATE ledger SET state = asked.state, updated_at = :now
             FROM (SELECT json_extract(value, '$[0]') AS job_id, json_extract(value, '$[1]') AS state
                     FROM json_each(:asked)) AS asked
            WHERE ledger.job_id = asked.job_id AND ledger.state = 'reserved'
                  AND asked.state IN ('committed', 'refunded')
           RETURNING ledger.job_id""",
        {"now": now, "asked": json.dumps([[job_id, str(state)] for job_id, state in outcomes])},
    )
    return {row[0] for row in rows}


@dataclass(frozen=True, slots=True)
class StaleReservation:
    job_id: str
    job_status: str | None  # None: no job row (the bot crashed before writing it, or a bare reservation)
    job_updated_at: float | None


async def stale_reservations(tx: Tx, before: float, limit: int = 500) -> list[StaleReservation]:
    """Reserved rows made before `before`, with their job's status and last update."""
    rows = await tx.fetchall(
        """SELECT l.job_id, j.status AS job_status, j.updated_at AS job_updated_at FROM ledger l LEFT JOIN jobs j ON j.job_id = l.job_id
            WHERE l.state = 'reserved' AND l.created_at < ? ORDER BY l.created_at LIMIT ?""",
        (before, limit),
    )
    return [from_row(StaleReservation, r) for r in rows]


@dataclass(frozen=True, slots=True)
class Forgiven:
    """What an admin reset forgave: charges, window credits (bonus-paid parts excluded) and relax credits."""

    jobs: int
    credits: int
    relax_credits: int


# The rows that count against a window: live, not forgiven, and paid at least partly from the window.
_COUNTING = """guild_id = :guild AND user_id = :user AND created_at > :since AND state != 'refunded'
               AND voided = 0 AND (lane = 'relax' OR cost > bonus_cost)"""


async def void_window(tx: Tx, guild_id: int, user_id: int, since: float, now: float) -> Forgiven:
    """Forgive a user's counting rows inside the window (an admin reset); they stay for reports.

    Bonus credits a forgiven charge spent stay spent: a reset restores the window share, not gifts.
    """
    params = {"guild": guild_id, "user": user_id, "since": since, "now": now}
    row = await tx.fetchone(
        f"""SELECT COUNT(*) AS jobs,
                   COALESCE(SUM(CASE WHEN lane = 'fast' THEN cost - bonus_cost END), 0) AS credits,
                   COALESCE(SUM(CASE WHEN lane = 'relax' THEN cost END), 0) AS relax_credits
              FROM ledger WHERE {_COUNTING}""",
        params,
    )
    assert row is not None  # an aggregate always yields one row
    await tx.execute(f"UPDATE ledger SET voided = 1, updated_at = :now WHERE {_COUNTING}", params)
    return from_row(Forgiven, row)


async def prune(tx: Tx, before: float) -> int:
    """Delete finished rows older than `before`; reserved rows wait for the sweep.

    A row that paid from a bonus grant still in force stays: its spend record is what keeps the grant's
    spent credits spent.
    """
    return await tx.execute(
        """DELETE FROM ledger
            WHERE created_at < :before AND state != 'reserved'
              AND (state = 'refunded' OR NOT EXISTS (
                    SELECT 1 FROM bonus_spend sp JOIN quota_bonus b ON b.bonus_id = sp.bonus_id
                     WHERE sp.job_id = ledger.job_id AND (b.expires_at IS NULL OR b.expires_at >= :before)))""",
        {"before": before},
    )


async def usage_by_user_day(tx: Tx, guild_id: int, since: float) -> list[UserDayUsage]:
    rows = await tx.fetchall(
        """SELECT user_id, date(created_at, 'unixepoch') AS day, COUNT(*) AS jobs,
                  SUM(cost) AS credits, SUM(lane = 'relax') AS relax_jobs
             FROM ledger
            WHERE guild_id = ? AND created_at >= ? AND state != 'refunded'
            GROUP BY user_id, day ORDER BY day, user_id""",
        (guild_id, since),
    )
    return [from_row(UserDayUsage, r) for r in rows]
