"""Challenge entries, votes, results and season standings, and the image facts the entry rules check."""

from __future__ import annotations

import sqlite3
from dataclasses import dataclass

from storage.challenges import (
    AlreadyEntered,
    AlreadyVoted,
    EntryCapReached,
    EntryRecord,
    OwnEntryVote,
    ResultRecord,
    Standing,
    VoteBudgetSpent,
)
from storage.db import Tx, from_row


@dataclass(frozen=True, slots=True)
class Tally:
    entry: EntryRecord
    votes: int


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


# --- entries ---

_ENTRY_COLUMNS = "entry_id, challenge_id, number, user_id, generation_id, created_at, message_id"


def _entry(row: sqlite3.Row) -> EntryRecord:
    return from_row(EntryRecord, row)


async def insert_entry(
    tx: Tx, challenge_id: int, user_id: int, generation_id: str, now: float
) -> EntryRecord:
    """Add an entry with the next number (never one withdrawn); the schema refuses a repeat or one past the cap.

    A refused insert rolls the whole call back, counter included (the service runs it in one transaction).
    """
    await tx.execute(
        "UPDATE challenges SET entries_made = entries_made + 1 WHERE challenge_id = ?", (challenge_id,)
    )
    row = await tx.fetchone("SELECT entries_made FROM challenges WHERE challenge_id = ?", (challenge_id,))
    number = int(row[0]) if row else 1
    try:
        entry_id = await tx.insert(
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


async def get_entry(tx: Tx, entry_id: int) -> EntryRecord | None:
    row = await tx.fetchone(f"SELECT {_ENTRY_COLUMNS} FROM challenge_entries WHERE entry_id = ?", (entry_id,))
    return _entry(row) if row else None


async def entry_by_number(tx: Tx, challenge_id: int, number: int) -> EntryRecord | None:
    row = await tx.fetchone(
        f"SELECT {_ENTRY_COLUMNS} FROM challenge_entries WHERE challenge_id = ? AND number = ?",
        (challenge_id, number),
    )
    return _entry(row) if row else None


async def entries(tx: Tx, challenge_id: int, user_id: int | None = None) -> list[EntryRecord]:
    sql = f"SELECT {_ENTRY_COLUMNS} FROM challenge_entries WHERE challenge_id = ?"
    params: tuple[int, ...] = (challenge_id,)
    if user_id is not None:
        sql += " AND user_id = ?"
        params = (challenge_id, user_id)
    return [_entry(r) for r in await tx.fetchall(sql + " ORDER BY number", params)]


async def set_entry_message(tx: Tx, entry_id: int, message_id: int) -> None:
    await tx.execute("UPDATE challenge_entries SET message_id = ? WHERE entry_id = ?", (message_id, entry_id))


async def delete_entry(tx: Tx, entry_id: int) -> None:
    await tx.execute("DELETE FROM challenge_entries WHERE entry_id = ?", (entry_id,))


# --- votes ---


async def insert_vote(tx: Tx, entry: EntryRecord, voter_id: int, now: float) -> None:
    try:
        await tx.execute(
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


async def delete_vote(tx: Tx, entry_id: int, voter_id: int) -> bool:
    return (
        await tx.execute(
            "DELETE FROM challenge_votes WHERE entry_id = ? AND voter_id = ?", (entry_id, voter_id)
        )
        > 0
    )


async def votes_used(tx: Tx, challenge_id: int, voter_id: int) -> int:
    row = await tx.fetchone(
        "SELECT COUNT(*) FROM challenge_votes WHERE challenge_id = ? AND voter_id = ?",
        (challenge_id, voter_id),
    )
    return int(row[0]) if row else 0


async def tally(tx: Tx, challenge_id: int) -> list[Tally]:
    """Every entry with its votes: most votes first, ties to the earlier entry."""
    columns = ", ".join(f"e.{c}" for c in _ENTRY_COLUMNS.split(", "))
    rows = await tx.fetchall(
        f"SELECT {columns}, COUNT(v.voter_id) AS votes FROM challenge_entries e LEFT JOIN challenge_votes v "
        "USING (entry_id) WHERE e.challenge_id = ? GROUP BY e.entry_id ORDER BY votes DESC, e.number ASC",
        (challenge_id,),
    )
    return [Tally(from_row(EntryRecord, r), int(r["votes"])) for r in rows]


# --- results and seasons ---


async def insert_results(tx: Tx, results: list[ResultRecord]) -> None:
    await tx.executemany(
        "INSERT INTO challenge_results (challenge_id, entry_id, user_id, rank, votes, points, bonus) "
        "VALUES (?, ?, ?, ?, ?, ?, ?)",
        [(r.challenge_id, r.entry_id, r.user_id, r.rank, r.votes, r.points, r.bonus) for r in results],
    )


async def results(tx: Tx, challenge_id: int) -> list[ResultRecord]:
    rows = await tx.fetchall(
        "SELECT r.challenge_id, r.entry_id, e.number, r.user_id, r.rank, r.votes, r.points, r.bonus, "
        "r.bonus_id, e.message_id FROM challenge_results r JOIN challenge_entries e USING (entry_id) "
        "WHERE r.challenge_id = ? ORDER BY r.rank",
        (challenge_id,),
    )
    return [from_row(ResultRecord, row) for row in rows]


async def set_bonus_id(tx: Tx, challenge_id: int, entry_id: int, bonus_id: int) -> None:
    await tx.execute(
        "UPDATE challenge_results SET bonus_id = ? WHERE challenge_id = ? AND entry_id = ?",
        (bonus_id, challenge_id, entry_id),
    )


async def standings(tx: Tx, guild_id: int, season: str, limit: int = 10) -> list[Standing]:
    rows = await tx.fetchall(
        "SELECT r.user_id, SUM(r.points) AS points, SUM(r.rank = 1) AS wins, COUNT(*) AS entries "
        "FROM challenge_results r JOIN challenges c USING (challenge_id) "
        "WHERE c.guild_id = ? AND c.season = ? GROUP BY r.user_id "
        "ORDER BY points DESC, wins DESC, r.user_id LIMIT ?",
        (guild_id, season, limit),
    )
    return [from_row(Standing, r) for r in rows]


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


async def lineage_owners(tx: Tx, job_id: str) -> frozenset[int | None]:
    """Everyone whose job lies on this job's parent chain (a missing parent shows as None)."""
    rows = await tx.fetchall(LINEAGE_SQL, (job_id,))
    return frozenset(row[0] for row in rows)


async def entry_image(tx: Tx, generation_id: str) -> bytes:
    """The picture an entry shows in the gallery; empty when the image row is gone."""
    row = await tx.fetchone("SELECT image FROM generations WHERE generation_id = ?", (generation_id,))
    return bytes(row[0]) if row else b""


async def entry_source(tx: Tx, generation_id: str) -> EntrySource | None:
    row = await tx.fetchone(
        "SELECT g.generation_id, g.job_id, g.idx, j.user_id, j.guild_id, g.kind, g.style, g.created_at, "
        "g.deleted, (j.kind != 'generate' AND j.parent_generation_id IS NULL) AS from_upload "
        "FROM generations g JOIN jobs j USING (job_id) WHERE g.generation_id = ?",
        (generation_id,),
    )
    if row is None:
        return None
    return from_row(
        EntrySource,
        row,
        index=row["idx"],
        lineage_owners=await lineage_owners(tx, row["job_id"]),
    )


async def latest_generation(tx: Tx, guild_id: int, user_id: int, style: str) -> str | None:
    """The member's newest image in this server with this style, for `/challenge submit` without a job."""
    row = await tx.fetchone(
        "SELECT g.generation_id FROM generations g JOIN jobs j USING (job_id) "
        "WHERE j.guild_id = ? AND j.user_id = ? AND g.style = ? AND g.deleted = 0 "
        "ORDER BY g.created_at DESC, g.idx LIMIT 1",
        (guild_id, user_id, style),
    )
    return str(row[0]) if row else None


async def bonus_granted(tx: Tx, guild_id: int, user_id: int, reason: str) -> int | None:
    """A bonus grant already made for this reason (so a retried close never pays twice)."""
    row = await tx.fetchone(
        "SELECT bonus_id FROM quota_bonus WHERE guild_id = ? AND user_id = ? AND reason = ?",
        (guild_id, user_id, reason),
    )
    return int(row[0]) if row else None
