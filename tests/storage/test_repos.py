"""Repositories: jobs hold what a restart needs, generations replay from the database, guild settings are audited."""

from __future__ import annotations

import json
import sqlite3
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from storage.audit import AuditRepo
from storage.db import Database
from storage.generations import GenerationRecord, GenerationsRepo
from storage.guilds import GuildsRepo
from storage.jobs import JobRecord, JobsRepo, JobState, UnknownJob
from tests.storage.helpers import T0, Clock, png_bytes


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
async def db(tmp_path: Path) -> AsyncIterator[Database]:
    async with Database.open(tmp_path / "b.sqlite3") as db:
        yield db


@dataclass(frozen=True, slots=True)
class Repos:
    jobs: JobsRepo
    generations: GenerationsRepo
    guilds: GuildsRepo
    audit: AuditRepo


@pytest.fixture
def repos(db: Database, clock: Clock) -> Repos:
    return Repos(JobsRepo(db, clock), GenerationsRepo(db, clock), GuildsRepo(db, clock), AuditRepo(db))


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
        "png": png_bytes(),
    }
    fields.update(kw)
    return GenerationRecord(**fields)  # type: ignore[arg-type]


async def test_job_round_trip_and_status_updates(repos: Repos, clock: Clock) -> None:
    created = await repos.jobs.create(job())
    assert created.created_at == created.updated_at == T0
    got = await repos.jobs.get("0a1b")
    assert got == created
    assert got.parameters_dict == {"prompt": "a red fox", "width": 512}
    assert got.token_valid(T0) and not got.token_valid(T0 + 901)

    clock.advance(5)
    got = await repos.jobs.set_worker_job("0a1b", "w-77", JobState.QUEUED)
    assert (got.worker_job_id, got.status, got.updated_at) == ("w-77", JobState.QUEUED, T0 + 5)
    got = await repos.jobs.set_messages("0a1b", progress_message_id=111)
    got = await repos.jobs.set_messages("0a1b", result_message_id=222)
    assert (got.progress_message_id, got.result_message_id) == (111, 222)
    got = await repos.jobs.update_status("0a1b", "running", lane="relax")
    assert got.status is JobState.RUNNING and got.lane == "relax" and got.finished_at is None

    clock.advance(5)
    got = await repos.jobs.update_status("0a1b", JobState.FAILED, error="out of memory")
    assert (got.status, got.error, got.finished_at) == (JobState.FAILED, "out of memory", T0 + 10)
    assert (await repos.jobs.get("0a1b")) == got
    assert (await repos.jobs.bump_attempts("0a1b")).attempts == 1


async def test_list_unfinished_is_what_a_restart_must_recover(repos: Repos, clock: Clock) -> None:
    for i, status in enumerate(JobState):
        clock.advance(1)
        await repos.jobs.create(job(f"{i:02x}", status=status))
    unfinished = await repos.jobs.list_unfinished()
    assert [j.status for j in unfinished] == [JobState.PENDING, JobState.QUEUED, JobState.RUNNING]
    assert all(j.interaction_token == "tok" and j.application_id == 40 for j in unfinished)


async def test_bad_jobs_are_refused_clearly(repos: Repos) -> None:
    with pytest.raises(ValueError, match="hex"):
        job("not-hex!")
    with pytest.raises(ValueError, match="kind"):
        job(kind="video")
    with pytest.raises(ValueError, match="JSON"):
        job(parameters="{oops")
    with pytest.raises(ValueError, match="status"):
        job(status="exploded")
    await repos.jobs.create(job())
    with pytest.raises(sqlite3.IntegrityError):
        await repos.jobs.create(job())
    with pytest.raises(sqlite3.IntegrityError, match="idempotency_key"):
        await repos.jobs.create(job("ff", idempotency_key="key-0a1b"))
    with pytest.raises(ValueError, match="cannot change: user_id"):
        await repos.jobs.update_status("0a1b", "running", user_id=5)
    with pytest.raises(UnknownJob):
        await repos.jobs.update_status("beef", "running")
    pending = await repos.jobs.get("0a1b")
    assert pending is not None and pending.status is JobState.PENDING


async def test_generations_replay_from_the_database(repos: Repos) -> None:
    await repos.jobs.create(job())
    await repos.jobs.create(job("0c", idempotency_key=None, parent_job_id="0a1b", kind="edit"))
    first = await repos.generations.add(gen("g0"), gen("g1", index=1, nsfw=True))
    await repos.generations.add(gen("g2", job_id="0c", kind="edit", parent_generation_id="g1"))
    got = await repos.generations.get("g1")
    assert (
        got is not None
        and got == first[1]
        and got.nsfw
        and got.png.startswith(b"\x89PNG")
        and got.seed == 2**32 - 1
    )
    assert [g.generation_id for g in await repos.generations.for_job("0a1b")] == ["g0", "g1"]
    listing = await repos.generations.for_job("0a1b", with_png=False)
    assert [g.png for g in listing] == [b"", b""]
    child = await repos.generations.get("g2")
    assert child is not None and child.parent_generation_id == "g1"

    assert await repos.generations.mark_job_deleted("0a1b") == 2
    assert await repos.generations.mark_job_deleted("0a1b") == 0
    deleted = await repos.generations.get("g1")
    assert deleted is not None and deleted.deleted and deleted.png == b""
    with pytest.raises(ValueError, match="PNG"):
        await repos.generations.add(gen("g9", png=b"GIF89a"))
    with pytest.raises(sqlite3.IntegrityError):
        await repos.generations.add(gen("g8", job_id="nojob"))


async def test_guild_settings_default_update_and_audit(repos: Repos, clock: Clock) -> None:
    default = await repos.guilds.get(10)
    assert default.nsfw_mode == "spoiler" and default.relax_enabled and default.channel_allowed(99)
    clock.advance(3)
    new = await repos.guilds.update(
        10,
        actor_id=77,
        allowed_channel_ids=[5, 3, 5],
        blocked_words=[" Gore ", "gore", ""],
        nsfw_mode="refuse",
    )
    assert new.allowed_channel_ids == (3, 5) and new.blocked_words == ("gore",)
    assert await repos.guilds.get(10) == new
    assert not new.channel_allowed(99) and new.channel_allowed(3)
    with pytest.raises(ValueError, match="nsfw_mode"):
        await repos.guilds.update(10, actor_id=77, nsfw_mode="allow")
    with pytest.raises(ValueError, match="unknown guild setting"):
        await repos.guilds.update(10, actor_id=77, colour="red")
    with pytest.raises(ValueError, match="max_images_per_job"):
        await repos.guilds.update(10, actor_id=77, max_images_per_job=0)
    assert await repos.guilds.get(10) == new
    [entry] = await repos.audit.recent(10)
    assert (entry.actor_id, entry.action, entry.created_at) == (77, "guild.update", T0 + 3)
    assert entry.detail["nsfw_mode"] == "refuse" and entry.detail["allowed_channel_ids"] == [3, 5]
