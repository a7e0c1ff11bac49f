"""Challenges, their entries, votes, results and recurring schedules: rows and the SQL over them.

The functions take a `Tx`, so the challenge service can check a phase and write in one transaction.
The schema itself enforces the fairness rules (see migration 0004); the errors below name which one fired.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import sqlite3
from dataclasses import dataclass
from enum import StrEnum
from typing import Any

from storage.db import Tx, from_row

log = logging.getLogger(__name__)


class Phase(StrEnum):
    SUBMISSIONS = "submissions"
    VOTING = "voting"
    CLOSED = "closed"
    CANCELLED = "cancelled"

    @property
    def live(self) -> bool:
        return self in (Phase.SUBMISSIONS, Phase.VOTING)


@dataclass(frozen=True, slots=True)
class NewChallenge:
    guild_id: int
    channel_id: int
    theme: str
    style: str
    opens_at: float
    voting_at: float
    closes_at: float
    max_entries: int
    vote_budget: int
    season: str
    created_by: int
    schedule_id: int | None = None


@dataclass(frozen=True, slots=True, kw_only=True)
class ChallengeRecord(NewChallenge):
    """A stored challenge: what was asked for, and what running it adds."""

    challenge_id: int
    phase: Phase
    created_at: float
    announced: Phase | None = None
    message_id: int | None = None
    gallery_id: int | None = None
    ended_at: float | None = None

    @property
    def next_change_at(self) -> float | None:
        """When the current phase ends by itself; None once the challenge is over."""
        if self.phase is Phase.SUBMISSIONS:
            return self.voting_at
        if self.phase is Phase.VOTING:
            return self.closes_at
        return None


@dataclass(frozen=True, slots=True)
class EntryRecord:
    entry_id: int
    challenge_id: int
    number: int
    user_id: int
    generation_id: str
    created_at: float
    message_id: int | None = None


@dataclass(frozen=True, slots=True)
class ResultRecord:
    """One entry's place in a closed challenge."""

    challenge_id: int
    entry_id: int
    number: int
    user_id: int
    rank: int
    votes: int
    points: int
    bonus: int = 0
    bonus_id: int | None = None
    message_id: int | None = None


@dataclass(frozen=True, slots=True)
class Standing:
    """A member's season so far."""

    user_id: int
    points: int
    wins: int
    entries: int


@dataclass(frozen=True, slots=True)
class NewSchedule:
    guild_id: int
    channel_id: int
    style: str
    themes: tuple[str, ...]
    period_s: int
    submit_s: int
    vote_s: int
    max_entries: int
    next_start_at: float
    created_by: int


@dataclass(frozen=True, slots=True, kw_only=True)
class ScheduleRecord(NewSchedule):
    """A stored recurring schedule: what was asked for, and where it has got to."""

    schedule_id: int
    next_theme: int
    active: bool
    created_at: float


class ChannelBusy(Exception):
    """The channel already has a live challenge (or an active recurring schedule)."""


class EntryCapReached(Exception):
    """The member has entered as many images as the challenge takes."""


class AlreadyEntered(Exception):
    """That image is already an entry in this challenge."""


class AlreadyVoted(Exception):
    """The member already voted for that entry."""


class VoteBudgetSpent(Exception):
    """The member has used every vote this challenge gives."""


class OwnEntryVote(Exception):
    """A member tried to vote for their own entry."""


def _phase(value: str | None) -> Phase | None:
    return Phase(value) if value else None


def _challenge(row: sqlite3.Row) -> ChallengeRecord:
    return from_row(ChallengeRecord, row, phase=Phase(row["phase"]), announced=_phase(row["announced"]))


_CHALLENGE_COLUMNS = (
    "challenge_id, guild_id, channel_id, theme, style, phase, opens_at, voting_at, closes_at, max_entries, "
    "vote_budget, season, created_by, created_at, announced, message_id, gallery_id, schedule_id, ended_at"
)


async def _insert_new(
    tx: Tx, table: str, new: NewChallenge | NewSchedule, now: float, **converted: Any
) -> int:
    """Insert a new row (columns named as the fields of `new`); a channel that already has a live one
    (the schema allows one per channel) raises ChannelBusy."""
    values = {f.name: getattr(new, f.name) for f in dataclasses.fields(new)} | converted | {"created_at": now}
    sql = f"INSERT INTO {table} ({', '.join(values)}) VALUES ({', '.join('?' * len(values))})"
    try:
        return await tx.insert(sql, list(values.values()))
    except sqlite3.IntegrityError as exc:
        if f"{table}.channel_id" in str(exc):
            raise ChannelBusy(new.channel_id) from None
        raise


def _of_guild(sql: str, guild_id: int | None, order: str) -> tuple[str, tuple[int, ...]]:
    """The query narrowed to one guild when `guild_id` is given, then ordered."""
    if guild_id is None:
        return f"{sql} ORDER BY {order}", ()
    return f"{sql} AND guild_id = ? ORDER BY {order}", (guild_id,)


async def insert_challenge(tx: Tx, new: NewChallenge, now: float) -> int:
    return await _insert_new(tx, "challenges", new, now)


async def get_challenge(tx: Tx, challenge_id: int) -> ChallengeRecord | None:
    row = await tx.fetchone(
        f"SELECT {_CHALLENGE_COLUMNS} FROM challenges WHERE challenge_id = ?", (challenge_id,)
    )
    return _challenge(row) if row else None


async def live_challenges(tx: Tx, guild_id: int | None = None) -> list[ChallengeRecord]:
    sql = f"SELECT {_CHALLENGE_COLUMNS} FROM challenges WHERE phase IN ('submissions', 'voting')"
    return [_challenge(r) for r in await tx.fetchall(*_of_guild(sql, guild_id, "challenge_id"))]


async def unannounced(tx: Tx) -> list[ChallengeRecord]:
    """Challenges whose current phase has not been announced yet (a crash between change and post)."""
    sql = f"SELECT {_CHALLENGE_COLUMNS} FROM challenges WHERE announced IS NULL OR announced != phase"
    return [_challenge(r) for r in await tx.fetchall(sql + " ORDER BY challenge_id")]


async def set_phase(tx: Tx, challenge_id: int, phase: Phase, now: float) -> None:
    ended = now if not phase.live else None
    await tx.execute(
        "UPDATE challenges SET phase = ?, ended_at = COALESCE(?, ended_at) WHERE challenge_id = ?",
        (phase.value, ended, challenge_id),
    )


async def set_deadlines(tx: Tx, challenge_id: int, voting_at: float, closes_at: float) -> None:
    await tx.execute(
        "UPDATE challenges SET voting_at = ?, closes_at = ? WHERE challenge_id = ?",
        (voting_at, closes_at, challenge_id),
    )


async def set_announced(tx: Tx, challenge_id: int, phase: Phase) -> None:
    await tx.execute(
        "UPDATE challenges SET announced = ? WHERE challenge_id = ?", (phase.value, challenge_id)
    )


async def set_messages(tx: Tx, challenge_id: int, message_id: int, gallery_id: int) -> None:
    await tx.execute(
        "UPDATE challenges SET message_id = ?, gallery_id = ? WHERE challenge_id = ?",
        (message_id, gallery_id, challenge_id),
    )


async def delete_challenge(tx: Tx, challenge_id: int) -> None:
    await tx.execute("DELETE FROM challenges WHERE challenge_id = ?", (challenge_id,))


# --- recurring schedules ---

_SCHEDULE_COLUMNS = (
    "schedule_id, guild_id, channel_id, style, themes, period_s, submit_s, vote_s, max_entries, next_theme, "
    "next_start_at, active, created_by, created_at"
)


def _schedule(row: sqlite3.Row) -> ScheduleRecord:
    return from_row(ScheduleRecord, row, themes=tuple(json.loads(row["themes"])))


async def insert_schedule(tx: Tx, new: NewSchedule, now: float) -> int:
    return await _insert_new(tx, "challenge_schedules", new, now, themes=json.dumps(list(new.themes)))


async def get_schedule(tx: Tx, schedule_id: int) -> ScheduleRecord | None:
    row = await tx.fetchone(
        f"SELECT {_SCHEDULE_COLUMNS} FROM challenge_schedules WHERE schedule_id = ?", (schedule_id,)
    )
    return _schedule(row) if row else None


async def active_schedules(tx: Tx, guild_id: int | None = None) -> list[ScheduleRecord]:
    sql = f"SELECT {_SCHEDULE_COLUMNS} FROM challenge_schedules WHERE active = 1"
    return [_schedule(r) for r in await tx.fetchall(*_of_guild(sql, guild_id, "schedule_id"))]


async def advance_schedule(tx: Tx, schedule_id: int, next_theme: int, next_start_at: float) -> None:
    await tx.execute(
        "UPDATE challenge_schedules SET next_theme = ?, next_start_at = ? WHERE schedule_id = ?",
        (next_theme, next_start_at, schedule_id),
    )


async def stop_schedule(tx: Tx, schedule_id: int) -> bool:
    return (
        await tx.execute(
            "UPDATE challenge_schedules SET active = 0 WHERE schedule_id = ? AND active = 1", (schedule_id,)
        )
        > 0
    )
