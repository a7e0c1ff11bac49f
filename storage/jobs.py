"""Jobs: everything needed to finish or recover a job after a restart (who, where, token, messages, status)."""

from __future__ import annotations

import dataclasses
import json
import logging
import sqlite3
from dataclasses import dataclass
from enum import StrEnum
from typing import Any

from inference.vocabulary import JobId, JobKind, Lane, WorkerJobId
from storage.db import Tx, from_row

log = logging.getLogger(__name__)


class JobState(StrEnum):
    """A job's status in the database; a superset of the worker's statuses."""

    PENDING = "pending"  # stored, quota reserved, not yet accepted by the worker
    QUEUED = "queued"
    RUNNING = "running"
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    CANCELLED = "cancelled"
    REFUNDED = "refunded"

    @property
    def is_final(self) -> bool:
        return self not in UNFINISHED


def job_state(value: JobState | str) -> JobState:
    """Parse a status with an error that lists the valid ones."""
    try:
        return JobState(value)
    except ValueError:
        raise ValueError(f"job status must be one of {[s.value for s in JobState]}, got {value!r}") from None


UNFINISHED = frozenset({JobState.PENDING, JobState.QUEUED, JobState.RUNNING})


@dataclass(frozen=True, slots=True)
class JobRecord:
    """One job row. `parameters` is the bot's request as JSON text."""

    job_id: JobId
    channel_id: int
    user_id: int
    kind: JobKind
    parameters: str
    guild_id: int | None = None
    lane: Lane = Lane.FAST
    cost: int = 0
    status: JobState = JobState.PENDING
    error: str | None = None
    application_id: int | None = None
    interaction_token: str | None = None
    token_expires_at: float | None = None
    progress_message_id: int | None = None
    result_message_id: int | None = None
    worker_job_id: WorkerJobId | None = None
    idempotency_key: str | None = None
    parent_job_id: str | None = None
    parent_generation_id: str | None = None
    attempts: int = 0
    language: str | None = None  # the member's language ("fr"), for results posted after the interaction
    owner: str | None = None  # the process following it (bot.core.lifecycle.ProcessOwner as text)
    delivered_at: float | None = None  # when its outcome reached its user (or delivery was given up)
    created_at: float = 0.0
    updated_at: float = 0.0
    finished_at: float | None = None

    def __post_init__(self) -> None:
        if not self.job_id or not all(c in "0123456789abcdef" for c in self.job_id):
            raise ValueError(f"job_id must be lowercase hex, got {self.job_id!r}")
        if self.kind not in set(JobKind):
            raise ValueError(f"kind must be one of {[k.value for k in JobKind]}, got {self.kind!r}")
        if self.lane not in set(Lane):
            raise ValueError(f"lane must be 'fast' or 'relax', got {self.lane!r}")
        if self.cost < 0:
            raise ValueError("cost must not be negative")
        try:
            json.loads(self.parameters)
        except ValueError as exc:
            raise ValueError(f"parameters must be JSON text: {exc}") from exc
        # Rows read back hold plain strings; the record always holds the vocabulary's types.
        object.__setattr__(self, "kind", JobKind(self.kind))
        object.__setattr__(self, "lane", Lane(self.lane))
        object.__setattr__(self, "status", job_state(self.status))

    @property
    def parameters_dict(self) -> dict[str, Any]:
        return dict(json.loads(self.parameters))

    def token_valid(self, now: float) -> bool:
        """Whether the interaction token can still edit the original response."""
        return self.interaction_token is not None and (self.token_expires_at or 0.0) > now


_COLUMNS = tuple(f.name for f in dataclasses.fields(JobRecord))
# Fields update_status may change besides status and error; identity and history stay fixed.
UPDATABLE = (
    frozenset(_COLUMNS)
    - {"job_id", "guild_id", "channel_id", "user_id", "kind", "created_at"}
    - {
        "status",
        "error",
        "updated_at",
        "finished_at",
    }
)


def _record(row: sqlite3.Row) -> JobRecord:
    return from_row(JobRecord, row)


class UnknownJob(LookupError):
    """No job has this id."""


_INSERT_SQL = f"INSERT INTO jobs ({', '.join(_COLUMNS)}) VALUES ({', '.join('?' for _ in _COLUMNS)})"


async def create(tx: Tx, job: JobRecord, now: float) -> JobRecord:
    """Insert a job; created/updated times are set to `now`. A reused id or idempotency key raises."""
    job = dataclasses.replace(job, created_at=now, updated_at=now)
    await tx.execute(_INSERT_SQL, [getattr(job, name) for name in _COLUMNS])
    return job


async def get(tx: Tx, job_id: str) -> JobRecord | None:
    row = await tx.fetchone("SELECT * FROM jobs WHERE job_id = ?", (job_id,))
    return _record(row) if row else None


async def get_in_guild(tx: Tx, job_id: str, guild_id: int) -> JobRecord | None:
    """The job only if it was made in this server (0: outside any server), so that an interaction from
    one server can never reach another server's job."""
    row = await tx.fetchone(
        "SELECT * FROM jobs WHERE job_id = ? AND COALESCE(guild_id, 0) = ?", (job_id, guild_id)
    )
    return _record(row) if row else None


async def update_status(
    tx: Tx, job_id: str, status: JobState | str, *, now: float, error: str | None = None, **fields: Any
) -> JobRecord:
    """Set the status (and error, and any of UPDATABLE); a final status stamps finished_at."""
    status = job_state(status)
    unknown = set(fields) - UPDATABLE
    if unknown:
        raise ValueError(f"update_status cannot change: {', '.join(sorted(unknown))}")
    changes: dict[str, Any] = {"status": status.value, "error": error, "updated_at": now, **fields}
    if status.is_final:
        changes["finished_at"] = now
    return await _update(tx, job_id, changes)


async def set_messages(
    tx: Tx,
    job_id: str,
    *,
    now: float,
    progress_message_id: int | None = None,
    result_message_id: int | None = None,
) -> JobRecord:
    """Record the progress and/or result message; an argument left None keeps what is stored."""
    changes: dict[str, Any] = {"updated_at": now}
    if progress_message_id is not None:
        changes["progress_message_id"] = progress_message_id
    if result_message_id is not None:
        changes["result_message_id"] = result_message_id
    return await _update(tx, job_id, changes)


async def set_worker_job(
    tx: Tx, job_id: str, worker_job_id: str, *, now: float, status: JobState | str | None = None
) -> JobRecord:
    changes: dict[str, Any] = {"worker_job_id": worker_job_id, "updated_at": now}
    if status is not None:
        changes["status"] = job_state(status).value
    return await _update(tx, job_id, changes)


async def bump_attempts(tx: Tx, job_id: str, now: float) -> JobRecord:
    """Count one more recovery attempt (see migration 0002)."""
    await tx.execute(
        "UPDATE jobs SET attempts = attempts + 1, updated_at = ? WHERE job_id = ?", (now, job_id)
    )
    return _found(job_id, await get(tx, job_id))


async def _update(tx: Tx, job_id: str, changes: dict[str, Any]) -> JobRecord:
    assignments = ", ".join(f"{name} = ?" for name in changes)
    if not await tx.execute(f"UPDATE jobs SET {assignments} WHERE job_id = ?", [*changes.values(), job_id]):
        raise UnknownJob(job_id)
    return _found(job_id, await get(tx, job_id))


async def claim(tx: Tx, job_id: str, old_owner: str | None, new_owner: str | None, now: float) -> bool:
    """Take a job over from `old_owner`; False if someone else took it first (one winner)."""
    return bool(
        await tx.execute(
            "UPDATE jobs SET owner = ?, updated_at = ? WHERE job_id = ? AND owner IS ?",
            (new_owner, now, job_id, old_owner),
        )
    )


async def mark_delivered(tx: Tx, job_id: str, now: float) -> None:
    await tx.execute(
        "UPDATE jobs SET delivered_at = ? WHERE job_id = ? AND delivered_at IS NULL", (now, job_id)
    )


async def list_undelivered(tx: Tx, since: float) -> list[JobRecord]:
    """Finished jobs (since `since`) whose outcome never reached their user: a crash in between."""
    rows = await tx.fetchall(
        """SELECT * FROM jobs WHERE delivered_at IS NULL AND finished_at IS NOT NULL AND finished_at >= ?
            ORDER BY finished_at""",
        (since,),
    )
    return [_record(r) for r in rows]


async def list_unfinished(tx: Tx) -> list[JobRecord]:
    """Jobs a restart must pick up again, oldest first."""
    rows = await tx.fetchall(
        "SELECT * FROM jobs WHERE status IN ('pending', 'queued', 'running') ORDER BY created_at"
    )
    return [_record(r) for r in rows]


async def prune_finished(tx: Tx, before: float) -> int:
    """Forget the interaction tokens of old finished jobs; the rows stay for their generations."""
    return await tx.execute(
        """UPDATE jobs SET interaction_token = NULL
            WHERE finished_at IS NOT NULL AND finished_at < ? AND interaction_token IS NOT NULL""",
        (before,),
    )


def _found(job_id: str, job: JobRecord | None) -> JobRecord:
    if job is None:
        raise UnknownJob(job_id)
    return job
