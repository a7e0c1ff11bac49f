"""Challenges, their entries, votes, results and recurring schedules: rows and the SQL over them.

The functions take a `SyncTx`, so the challenge service can check a phase and write in one transaction.
The schema itself enforces the fairness rules (see migration 0004); the errors below name which one fired.
"""

from __future__ import annotations

import json
import logging
import sqlite3
from dataclasses import dataclass
from enum import StrEnum

from storage.db import SyncTx

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
class ChallengeRecord:
    challenge_id: int
    guild_id: int
    channel_id: int
    theme: str
    style: str
    phase: Phase
    opens_at: float
    voting_at: float
    closes_at: float
    max_entries: int
    vote_budget: int
    season: str
    created_by: int
    created_at: float
    announced: Phase | None = None
    message_id: int | None = None
    gallery_id: int | None = None
    schedule_id: int | None = None
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
class ScheduleRecord:
    schedule_id: int
    guild_id: int
    channel_id: int
    style: str
    themes: tuple[str, ...]
    period_s: int
    submit_s: int
    vote_s: int
    max_entries: int
    next_theme: int
    next_start_at: float
    active: bool
    created_by: int
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
    data = {k: row[k] for k in row.keys()}  # noqa: SIM118 - sqlite3.Row is not a dict
    data["phase"] = Phase(data["phase"])
    data["announced"] = _phase(data["announced"])
    return ChallengeRecord(**data)


_CHALLENGE_COLUMNS = (
    "challenge_id, guild_id, channel_id, theme, style, phase, opens_at, voting_at, closes_at, max_entries, "
    "vote_budget, season, created_by, created_at, announced, message_id, gallery_id, schedule_id, ended_at"
)


def insert_challenge(tx: SyncTx, new: NewChallenge, now: float) -> int:
    try:
        return tx.insert(
            "INSERT INTO challenges (guild_id, channel_id, theme, style, opens_at, voting_at, closes_at, "
            "max_entries, vote_budget, season, created_by, created_at, schedule_id) "
            "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
            (
                new.guild_id,
                new.channel_id,
                new.theme,
                new.style,
                new.opens_at,
                new.voting_at,
                new.closes_at,
                new.max_entries,
                new.vote_budget,
                new.season,
                new.created_by,
                now,
                new.schedule_id,
            ),
        )
    except sqlite3.IntegrityError as exc:
        if "challenges.channel_id" in str(exc):
            raise ChannelBusy(new.channel_id) from None
        raise


def get_challenge(tx: SyncTx, challenge_id: int) -> ChallengeRecord | None:
    row = tx.fetchone(f"SELECT {_CHALLENGE_COLUMNS} FROM challenges WHERE challenge_id = ?", (challenge_id,))
    return _challenge(row) if row else None


def live_challenges(tx: SyncTx, guild_id: int | None = None) -> list[ChallengeRecord]:
    sql = f"SELECT {_CHALLENGE_COLUMNS} FROM challenges WHERE phase IN ('submissions', 'voting')"
    params: tuple[int, ...] = ()
    if guild_id is not None:
        sql += " AND guild_id = ?"
        params = (guild_id,)
    return [_challenge(r) for r in tx.fetchall(sql + " ORDER BY challenge_id", params)]


def unannounced(tx: SyncTx) -> list[ChallengeRecord]:
    """Challenges whose current phase has not been announced yet (a crash between change and post)."""
    sql = f"SELECT {_CHALLENGE_COLUMNS} FROM challenges WHERE announced IS NULL OR announced != phase"
    return [_challenge(r) for r in tx.fetchall(sql + " ORDER BY challenge_id")]


def set_phase(tx: SyncTx, challenge_id: int, phase: Phase, now: float) -> None:
    ended = now if not phase.live else None
    tx.execute(
        "UPDATE challenges SET phase = ?, ended_at = COALESCE(?, ended_at) WHERE challenge_id = ?",
        (phase.value, ended, challenge_id),
    )


def set_deadlines(tx: SyncTx, challenge_id: int, voting_at: float, closes_at: float) -> None:
    tx.execute(
        "UPDATE challenges SET voting_at = ?, closes_at = ? WHERE challenge_id = ?",
        (voting_at, closes_at, challenge_id),
    )


def set_announced(tx: SyncTx, challenge_id: int, phase: Phase) -> None:
    tx.execute("UPDATE challenges SET announced = ? WHERE challenge_id = ?", (phase.value, challenge_id))


def set_messages(tx: SyncTx, challenge_id: int, message_id: int, gallery_id: int) -> None:
    tx.execute(
        "UPDATE challenges SET message_id = ?, gallery_id = ? WHERE challenge_id = ?",
        (message_id, gallery_id, challenge_id),
    )


def delete_challenge(tx: SyncTx, challenge_id: int) -> None:
    tx.execute("DELETE FROM challenges WHERE challenge_id = ?", (challenge_id,))


# --- entries ---

_ENTRY_COLUMNS = "entry_id, challenge_id, number, user_id, generation_id, created_at, message_id"


def _entry(row: sqlite3.Row) -> EntryRecord:
    return EntryRecord(**{k: row[k] for k in row.keys()})  # noqa: SIM118 - sqlite3.Row is not a dict


def insert_entry(tx: SyncTx, challenge_id: int, user_id: int, generation_id: str, now: float) -> EntryRecord:
    """Add an entry with the next number (never one withdrawn); the schema refuses a repeat or one past the cap.

    A refused insert rolls the whole call back, counter included (the service runs it in one transaction).
    """
    tx.execute(
        "UPDATE challenges SET entries_made = entries_made + 1 WHERE challenge_id = ?", (challenge_id,)
    )
    row = tx.fetchone("SELECT entries_made FROM challenges WHERE challenge_id = ?", (challenge_id,))
    number = int(row[0]) if row else 1
    try:
        entry_id = tx.insert(
            "INSERT INTO challenge_entries (challenge_id, number, user_id, generation_id, created_at) "
            "VALUES (?, ?, ?, ?, ?)",
            (challenge_id, number, user_id, generation_id, now),
        )
    except sqlite3.IntegrityError as exc:
        if "entry cap" in str(exc):
            raise EntryCapReached() from None
        if "generation_id" in str(exc):
            raise AlreadyEntered() from None
        raise
    return EntryRecord(entry_id, challenge_id, number, user_id, generation_id, now)


def get_entry(tx: SyncTx, entry_id: int) -> EntryRecord | None:
    row = tx.fetchone(f"SELECT {_ENTRY_COLUMNS} FROM challenge_entries WHERE entry_id = ?", (entry_id,))
    return _entry(row) if row else None


def entry_by_number(tx: SyncTx, challenge_id: int, number: int) -> EntryRecord | None:
    row = tx.fetchone(
        f"SELECT {_ENTRY_COLUMNS} FROM challenge_entries WHERE challenge_id = ? AND number = ?",
        (challenge_id, number),
    )
    return _entry(row) if row else None


def entries(tx: SyncTx, challenge_id: int, user_id: int | None = None) -> list[EntryRecord]:
    sql = f"SELECT {_ENTRY_COLUMNS} FROM challenge_entries WHERE challenge_id = ?"
    params: tuple[int, ...] = (challenge_id,)
    if user_id is not None:
        sql += " AND user_id = ?"
        params = (challenge_id, user_id)
    return [_entry(r) for r in tx.fetchall(sql + " ORDER BY number", params)]


def set_entry_message(tx: SyncTx, entry_id: int, message_id: int) -> None:
    tx.execute("UPDATE challenge_entries SET message_id = ? WHERE entry_id = ?", (message_id, entry_id))


def delete_entry(tx: SyncTx, entry_id: int) -> None:
    tx.execute("DELETE FROM challenge_entries WHERE entry_id = ?", (entry_id,))


# --- votes ---


def insert_vote(tx: SyncTx, entry: EntryRecord, voter_id: int, now: float) -> None:
    try:
        tx.execute(
            "INSERT INTO challenge_votes (entry_id, voter_id, challenge_id, created_at) VALUES (?, ?, ?, ?)",
            (entry.entry_id, voter_id, entry.challenge_id, now),
        )
    except sqlite3.IntegrityError as exc:
        text = str(exc)
        if "vote budget" in text:
            raise VoteBudgetSpent() from None
        if "own entry" in text:
            raise OwnEntryVote() from None
        if "UNIQUE" in text:
            raise AlreadyVoted() from None
        raise


def delete_vote(tx: SyncTx, entry_id: int, voter_id: int) -> bool:
    return (
        tx.execute("DELETE FROM challenge_votes WHERE entry_id = ? AND voter_id = ?", (entry_id, voter_id))
        > 0
    )


def votes_used(tx: SyncTx, challenge_id: int, voter_id: int) -> int:
    row = tx.fetchone(
        "SELECT COUNT(*) FROM challenge_votes WHERE challenge_id = ? AND voter_id = ?",
        (challenge_id, voter_id),
    )
    return int(row[0]) if row else 0


@dataclass(frozen=True, slots=True)
class Tally:
    entry: EntryRecord
    votes: int


def tally(tx: SyncTx, challenge_id: int) -> list[Tally]:
    """Every entry with its votes: most votes first, ties to the earlier entry."""
    rows = tx.fetchall(
        "SELECT e.entry_id, COUNT(v.voter_id) AS votes FROM challenge_entries e "
        "LEFT JOIN challenge_votes v USING (entry_id) WHERE e.challenge_id = ? "
        "GROUP BY e.entry_id ORDER BY votes DESC, e.number ASC",
        (challenge_id,),
    )
    by_id = {e.entry_id: e for e in entries(tx, challenge_id)}
    return [Tally(by_id[r["entry_id"]], int(r["votes"])) for r in rows]


# --- results and seasons ---


def insert_results(tx: SyncTx, results: list[ResultRecord]) -> None:
    tx.executemany(
        "INSERT INTO challenge_results (challenge_id, entry_id, user_id, rank, votes, points, bonus) "
        "VALUES (?, ?, ?, ?, ?, ?, ?)",
        [(r.challenge_id, r.entry_id, r.user_id, r.rank, r.votes, r.points, r.bonus) for r in results],
    )


def results(tx: SyncTx, challenge_id: int) -> list[ResultRecord]:
    rows = tx.fetchall(
        "SELECT r.challenge_id, r.entry_id, e.number, r.user_id, r.rank, r.votes, r.points, r.bonus, "
        "r.bonus_id, e.message_id FROM challenge_results r JOIN challenge_entries e USING (entry_id) "
        "WHERE r.challenge_id = ? ORDER BY r.rank",
        (challenge_id,),
    )
    return [ResultRecord(**{k: row[k] for k in row.keys()}) for row in rows]  # noqa: SIM118


def set_bonus_id(tx: SyncTx, challenge_id: int, entry_id: int, bonus_id: int) -> None:
    tx.execute(
        "UPDATE challenge_results SET bonus_id = ? WHERE challenge_id = ? AND entry_id = ?",
        (bonus_id, challenge_id, entry_id),
    )


def standings(tx: SyncTx, guild_id: int, season: str, limit: int = 10) -> list[Standing]:
    rows = tx.fetchall(
        "SELECT r.user_id, SUM(r.points) AS points, SUM(r.rank = 1) AS wins, COUNT(*) AS entries "
        "FROM challenge_results r JOIN challenges c USING (challenge_id) "
        "WHERE c.guild_id = ? AND c.season = ? GROUP BY r.user_id "
        "ORDER BY points DESC, wins DESC, r.user_id LIMIT ?",
        (guild_id, season, limit),
    )
    return [Standing(r["user_id"], int(r["points"]), int(r["wins"]), int(r["entries"])) for r in rows]


# --- recurring schedules ---

_SCHEDULE_COLUMNS = (
    "schedule_id, guild_id, channel_id, style, themes, period_s, submit_s, vote_s, max_entries, next_theme, "
    "next_start_at, active, created_by, created_at"
)


def _schedule(row: sqlite3.Row) -> ScheduleRecord:
    data = {k: row[k] for k in row.keys()}  # noqa: SIM118
    data["themes"] = tuple(json.loads(data["themes"]))
    data["active"] = bool(data["active"])
    return ScheduleRecord(**data)


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


def insert_schedule(tx: SyncTx, new: NewSchedule, now: float) -> int:
    try:
        return tx.insert(
            "INSERT INTO challenge_schedules (guild_id, channel_id, style, themes, period_s, submit_s, vote_s, "
            "max_entries, next_start_at, created_by, created_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
            (
                new.guild_id,
                new.channel_id,
                new.style,
                json.dumps(list(new.themes)),
                new.period_s,
                new.submit_s,
                new.vote_s,
                new.max_entries,
                new.next_start_at,
                new.created_by,
                now,
            ),
        )
    except sqlite3.IntegrityError as exc:
        if "challenge_schedules.channel_id" in str(exc):
            raise ChannelBusy(new.channel_id) from None
        raise


def get_schedule(tx: SyncTx, schedule_id: int) -> ScheduleRecord | None:
    row = tx.fetchone(
        f"SELECT {_SCHEDULE_COLUMNS} FROM challenge_schedules WHERE schedule_id = ?", (schedule_id,)
    )
    return _schedule(row) if row else None


def active_schedules(tx: SyncTx, guild_id: int | None = None) -> list[ScheduleRecord]:
    sql = f"SELECT {_SCHEDULE_COLUMNS} FROM challenge_schedules WHERE active = 1"
    params: tuple[int, ...] = ()
    if guild_id is not None:
        sql += " AND guild_id = ?"
        params = (guild_id,)
    return [_schedule(r) for r in tx.fetchall(sql + " ORDER BY schedule_id", params)]


def advance_schedule(tx: SyncTx, schedule_id: int, next_theme: int, next_start_at: float) -> None:
    tx.execute(
        "UPDATE challenge_schedules SET next_theme = ?, next_start_at = ? WHERE schedule_id = ?",
        (next_theme, next_start_at, schedule_id),
    )


def stop_schedule(tx: SyncTx, schedule_id: int) -> bool:
    return (
        tx.execute(
            "UPDATE challenge_schedules SET active = 0 WHERE schedule_id = ? AND active = 1", (schedule_id,)
        )
        > 0
    )


@dataclass(frozen=True, slots=True)
class EntrySource:
    """What the entry rules need to know about an image: who made it, where, when, with which style."""

    generation_id: str
    job_id: str
    index: int
    user_id: int
    guild_id: int | None
    kind: str
    style: str | None
    created_at: float
    deleted: bool
    from_upload: bool
    # Who made each job on the image's `parent` chain, itself included; None for a link that is gone.
    lineage_owners: frozenset[int | None] = frozenset()


LINEAGE_SQL = """
WITH RECURSIVE chain(job_id, parent_job_id, user_id, depth) AS (
    SELECT job_id, parent_job_id, user_id, 0 FROM jobs WHERE job_id = ?
    UNION
    SELECT p.job_id, p.parent_job_id, p.user_id, c.depth + 1
      FROM chain c LEFT JOIN jobs p ON p.job_id = c.parent_job_id
     WHERE c.parent_job_id IS NOT NULL AND c.depth < 10000
)
SELECT DISTINCT user_id FROM chain
"""


def lineage_owners(tx: SyncTx, job_id: str) -> frozenset[int | None]:
    """Everyone whose job lies on this job's parent chain (a missing parent shows as None)."""
    return frozenset(row[0] for row in tx.fetchall(LINEAGE_SQL, (job_id,)))


def entry_source(tx: SyncTx, generation_id: str) -> EntrySource | None:
    row = tx.fetchone(
        "SELECT g.generation_id, g.job_id, g.idx, j.user_id, j.guild_id, g.kind, g.style, g.created_at, "
        "g.deleted, (j.kind != 'generate' AND j.parent_generation_id IS NULL) AS from_upload "
        "FROM generations g JOIN jobs j USING (job_id) WHERE g.generation_id = ?",
        (generation_id,),
    )
    if row is None:
        return None
    return EntrySource(
        generation_id=row["generation_id"],
        job_id=row["job_id"],
        index=row["idx"],
        user_id=row["user_id"],
        guild_id=row["guild_id"],
        kind=row["kind"],
        style=row["style"],
        created_at=row["created_at"],
        deleted=bool(row["deleted"]),
        from_upload=bool(row["from_upload"]),
        lineage_owners=lineage_owners(tx, row["job_id"]),
    )


def generation_of(tx: SyncTx, job_id: str, index: int) -> str | None:
    row = tx.fetchone("SELECT generation_id FROM generations WHERE job_id = ? AND idx = ?", (job_id, index))
    return str(row[0]) if row else None


def latest_generation(tx: SyncTx, guild_id: int, user_id: int, style: str) -> str | None:
    """The member's newest image in this server with this style, for `/challenge submit` without a job."""
    row = tx.fetchone(
        "SELECT g.generation_id FROM generations g JOIN jobs j USING (job_id) "
        "WHERE j.guild_id = ? AND j.user_id = ? AND g.style = ? AND g.deleted = 0 "
        "ORDER BY g.created_at DESC, g.idx LIMIT 1",
        (guild_id, user_id, style),
    )
    return str(row[0]) if row else None


def bonus_granted(tx: SyncTx, guild_id: int, user_id: int, reason: str) -> int | None:
    """A bonus grant already made for this reason (so a retried close never pays twice)."""
    row = tx.fetchone(
        "SELECT bonus_id FROM quota_bonus WHERE guild_id = ? AND user_id = ? AND reason = ?",
        (guild_id, user_id, reason),
    )
    return int(row[0]) if row else None
