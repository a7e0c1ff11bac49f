"""Storage modules: jobs hold what a restart needs, generations replay from the database, guild settings are audited."""

from __future__ import annotations

import json
import sqlite3
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from storage import generations, guilds, jobs
from storage.db import Database
from storage.generations import GenerationRecord
from storage.jobs import JobRecord, JobState, UnknownJob
from tests.storage.helpers import T0, Clock, audit_entries, in_tx, png_bytes


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
async def db(tmp_path: Path) -> AsyncIterator[Database]:
    async with Database.open(tmp_path / "b.sqlite3") as db:
        yield db


def job(job_id: str = "0a1b", **kw: object) -> JobRecord:
    fields: dict[str, object] = {
        "job_id": job_id,
        "guild_id": 10,
        "channel_id": 20,
        "user_id": 30,
        "kind": "generate",
        "parameters": json.dumps({"prompt": "a red fox", "width": 512}),
        "application_id": 40,
        "interaction_token": "tok",
        "token_expires_at": T0 + 900,
        "idempotency_key": f"key-{job_id}",
        "cost": 2,
    }
    fields.update(kw)
    return JobRecord(**fields)  # type: ignore[arg-type]


def gen(gid: str, job_id: str = "0a1b", index: int = 0, **kw: object) -> GenerationRecord:
    fields: dict[str, object] = {
        "generation_id": gid,
        "job_id": job_id,
        "index": index,
        "prompt": "a red fox",
        "negative_prompt": "blurry",
        "style": "ink",
        "seed": 2**32 - 1,
        "width": 512,
        "height": 512,
        "steps": 20,
        "guidance": 7.5,
        "model": "tiny-sd",
        "kind": "generate",
        "image": png_bytes(),
    }
    fields.update(kw)
    return GenerationRecord(**fields)  # type: ignore[arg-type]


async def test_job_round_trip_and_status_updates(db: Database, clock: Clock) -> None:
    created = await in_tx(db, jobs.create, job(), clock())
    assert created.created_at == created.updated_at == T0
    got = await in_tx(db, jobs.get, "0a1b")
    assert got == created
    assert got.parameters_dict == {"prompt": "a red fox", "width": 512}
    assert got.token_valid(T0) and not got.token_valid(T0 + 901)

    clock.advance(5)
    got = await in_tx(db, jobs.set_worker_job, "0a1b", "w-77", now=clock(), status=JobState.QUEUED)
    assert (got.worker_job_id, got.status, got.updated_at) == ("w-77", JobState.QUEUED, T0 + 5)
    got = await in_tx(db, jobs.set_messages, "0a1b", progress_message_id=111, now=clock())
    got = await in_tx(db, jobs.set_messages, "0a1b", result_message_id=222, now=clock())
    assert (got.progress_message_id, got.result_message_id) == (111, 222)
    got = await in_tx(db, jobs.update_status, "0a1b", "running", lane="relax", now=clock())
    assert got.status is JobState.RUNNING and got.lane == "relax" and got.finished_at is None

    clock.advance(5)
    got = await in_tx(db, jobs.update_status, "0a1b", JobState.FAILED, error="out of memory", now=clock())
    assert (got.status, got.error, got.finished_at) == (JobState.FAILED, "out of memory", T0 + 10)
    assert (await in_tx(db, jobs.get, "0a1b")) == got
    assert (await in_tx(db, jobs.bump_attempts, "0a1b", clock())).attempts == 1


async def test_list_unfinished_is_what_a_restart_must_recover(db: Database, clock: Clock) -> None:
    for i, status in enumerate(JobState):
        clock.advance(1)
        await in_tx(db, jobs.create, job(f"{i:02x}", status=status), clock())
    unfinished = await in_tx(db, jobs.list_unfinished)
    assert [j.status for j in unfinished] == [JobState.PENDING, JobState.QUEUED, JobState.RUNNING]
    assert all(j.interaction_token == "tok" and j.application_id == 40 for j in unfinished)


async def test_bad_jobs_are_refused_clearly(db: Database, clock: Clock) -> None:
    with pytest.raises(ValueError, match="hex"):
        job("not-hex!")
    with pytest.raises(ValueError, match="kind"):
        job(kind="video")
    with pytest.raises(ValueError, match="JSON"):
        job(parameters="{oops")
    with pytest.raises(ValueError, match="status"):
        job(status="exploded")
    await in_tx(db, jobs.create, job(), clock())
    with pytest.raises(sqlite3.IntegrityError):
        await in_tx(db, jobs.create, job(), clock())
    with pytest.raises(sqlite3.IntegrityError, match="idempotency_key"):
        await in_tx(db, jobs.create, job("ff", idempotency_key="key-0a1b"), clock())
    with pytest.raises(ValueError, match="cannot change: user_id"):
        await in_tx(db, jobs.update_status, "0a1b", "running", user_id=5, now=clock())
    with pytest.raises(UnknownJob):
        await in_tx(db, jobs.update_status, "beef", "running", now=clock())
    pending = await in_tx(db, jobs.get, "0a1b")
    assert pending is not None and pending.status is JobState.PENDING


async def test_generations_replay_from_the_database(db: Database, clock: Clock) -> None:
    await in_tx(db, jobs.create, job(), clock())
    await in_tx(db, jobs.create, job("0c", idempotency_key=None, parent_job_id="0a1b", kind="edit"), clock())
    first = await in_tx(db, generations.add, [gen("g0"), gen("g1", index=1, nsfw=True)], clock())
    await in_tx(
        db, generations.add, [gen("g2", job_id="0c", kind="edit", parent_generation_id="g1")], clock()
    )
    got = await in_tx(db, generations.get, "g1")
    assert (
        got is not None
        and got == first[1]
        and got.nsfw
        and got.image.startswith(b"\x89PNG")
        and got.seed == 2**32 - 1
    )
    assert [g.generation_id for g in await in_tx(db, generations.for_job, "0a1b")] == ["g0", "g1"]
    listing = await in_tx(db, generations.for_job_in_guild, "0a1b", 10, with_image=False)
    assert [g.image for g in listing] == [b"", b""]
    child = await in_tx(db, generations.get, "g2")
    assert child is not None and child.parent_generation_id == "g1"

    assert await in_tx(db, generations.mark_job_deleted, "0a1b") == 2
    assert await in_tx(db, generations.mark_job_deleted, "0a1b") == 0
    deleted = await in_tx(db, generations.get, "g1")
    assert deleted is not None and deleted.deleted and deleted.image == b""
    with pytest.raises(ValueError, match="PNG"):
        await in_tx(db, generations.add, [gen("g9", image=b"GIF89a")], clock())
    with pytest.raises(sqlite3.IntegrityError):
        await in_tx(db, generations.add, [gen("g8", job_id="nojob")], clock())


async def test_guild_settings_default_update_and_audit(db: Database, clock: Clock) -> None:
    default = await in_tx(db, guilds.get, 10)
    assert default.nsfw_mode == "spoiler" and default.relax_enabled and default.channel_allowed(99)
    clock.advance(3)
    new = await in_tx(
        db,
        guilds.update,
        10,
        77,
        clock(),
        allowed_channel_ids=[5, 3, 5],
        blocked_words=[" Gore ", "gore", ""],
        nsfw_mode="refuse",
    )
    assert new.allowed_channel_ids == (3, 5) and new.blocked_words == ("gore",)
    assert await in_tx(db, guilds.get, 10) == new
    assert not new.channel_allowed(99) and new.channel_allowed(3)
    with pytest.raises(ValueError, match="nsfw_mode"):
        await in_tx(db, guilds.update, 10, 77, clock(), nsfw_mode="allow")
    with pytest.raises(ValueError, match="unknown guild setting"):
        await in_tx(db, guilds.update, 10, 77, clock(), colour="red")
    with pytest.raises(ValueError, match="max_images_per_job"):
        await in_tx(db, guilds.update, 10, 77, clock(), max_images_per_job=0)
    assert await in_tx(db, guilds.get, 10) == new
    [entry] = await audit_entries(db, 10)
    assert (entry.actor_id, entry.action, entry.created_at) == (77, "guild.update", T0 + 3)
    assert entry.detail["nsfw_mode"] == "refuse" and entry.detail["allowed_channel_ids"] == [3, 5]
