"""The scheduler over the real tiny pipeline: fairness, lanes, batching, cancel, faults and shutdown."""

from __future__ import annotations

import asyncio
import dataclasses
import io
import threading
import time
import tracemalloc
from collections.abc import AsyncGenerator, AsyncIterator, Awaitable, Callable

import numpy as np
import pytest
from PIL import Image

from inference.engine_api import Engine, StepUpdate
from inference.intake import prepare_submission
from inference.output import read_xmp
from inference.protocol import ErrorCode, EventType, JobEvent, JobInfo, JobRequest, ProtocolError
from inference.queue import FinishedJob, Job, Slice, Submission, halves
from inference.scheduler import Scheduler
from inference.settings import WorkerSettings
from inference.vocabulary import JobStatus, Lane, WorkerJobId
from tests.inference import fixtures_worker
from tests.inference.fixtures_worker import InstrumentedEngine, job

tiny_engine = fixtures_worker.tiny_engine  # the real tiny engine, once per module

Make = Callable[..., Awaitable[tuple[Scheduler, InstrumentedEngine]]]


@pytest.fixture
async def make(tiny_engine: Engine) -> AsyncIterator[Make]:
    """Start schedulers over the tiny engine (wrapped to record calls); all shut down afterwards."""
    started: list[Scheduler] = []

    async def go(
        oom_over: int | None = None, fail_prompt: str | None = None, **settings: object
    ) -> tuple[Scheduler, InstrumentedEngine]:
        engine = InstrumentedEngine(tiny_engine, oom_over=oom_over, fail_prompt=fail_prompt)
        scheduler = Scheduler(engine, WorkerSettings.model_validate(settings))
        await scheduler.start()
        started.append(scheduler)
        return scheduler, engine

    yield go
    for scheduler in started:
        await scheduler.shutdown()


async def submit(scheduler: Scheduler, *requests: JobRequest) -> list[Job]:
    """Queue the jobs in one go, so the scheduler sees them all before it picks the first batch."""
    subs = [await prepare_submission(r, None, scheduler.settings, scheduler.engine) for r in requests]
    jobs = [scheduler.submit(s)[0] for s in subs]
    return [j for j in jobs if isinstance(j, Job)]  # all of them: a new job is a live record


async def finish(scheduler: Scheduler, *jobs: Job) -> None:
    async with asyncio.timeout(60):
        for j in jobs:
            async for _ in scheduler.events(j.id):
                pass


async def until(scheduler: Scheduler, j: Job, kind: EventType) -> None:
    async with asyncio.timeout(60):
        async for event in scheduler.events(j.id):
            if event is not None and event.type is kind:
                return
    raise AssertionError(f"job {j.id} ended without a {kind} event")


def order(engine: InstrumentedEngine) -> list[str]:
    """Job ids in the order the engine got them, after the blocker."""
    return [job_id for call in engine.calls[1:] for job_id in call.job_ids]


def sizes(engine: InstrumentedEngine) -> list[int]:
    """Images per call, after the blocker."""
    return [call.images for call in engine.calls[1:]]


async def hold(scheduler: Scheduler) -> Job:
    """Start a long job, so what is submitted next in the same loop turn queues behind it.

    An idle scheduler starts a job the moment it arrives; holding the engine busy is how a test gets a
    queue to order, as a busy worker has.
    """
    (blocker,) = await submit(scheduler, job(user="blocker", steps=40, prompt="hold the engine"))
    assert blocker.status is JobStatus.RUNNING
    return blocker


def pixels(png: bytes) -> np.ndarray:
    return np.asarray(Image.open(io.BytesIO(png)).convert("RGB"), dtype=np.int16)


async def test_an_idle_scheduler_starts_a_job_at_once(make: Make) -> None:
    scheduler, engine = await make(max_batch=8)
    first, second = await submit(scheduler, job(), job(user="bob"))
    assert first.status is JobStatus.RUNNING  # no waiting for batch-mates
    assert second.status is JobStatus.QUEUED
    await finish(scheduler, first, second)
    assert [c.job_ids for c in engine.calls] == [[first.id], [second.id]]


async def test_several_batches_in_flight_for_several_engine_replicas(make: Make) -> None:
    scheduler, engine = await make(max_batch=1, batches_in_flight=2)
    first, second, third = await submit(scheduler, job(steps=20), job(user="b"), job(user="c"))
    assert [j.status for j in (first, second, third)] == [
        JobStatus.RUNNING,
        JobStatus.RUNNING,
        JobStatus.QUEUED,
    ]
    stats = scheduler.stats()
    assert (stats.running, stats.batch_size, stats.lanes[Lane.FAST].queued) == (2, 2, 1)
    await finish(scheduler, first, second, third)
    assert all(j.status is JobStatus.SUCCEEDED for j in (first, second, third))
    assert len(engine.calls) == 3


async def test_second_user_is_served_before_first_users_backlog(make: Make) -> None:
    scheduler, engine = await make(max_batch=1)
    blocker = await hold(scheduler)
    backlog = await submit(scheduler, *[job(user="alice", prompt=f"red circle {i}") for i in range(5)])
    (bobs,) = await submit(scheduler, job(user="bob"))
    await finish(scheduler, blocker, *backlog, bobs)
    assert order(engine)[:2] == [backlog[0].id, bobs.id]
    assert all(j.status is JobStatus.SUCCEEDED for j in [*backlog, bobs])


async def test_round_robin_across_three_users(make: Make) -> None:
    scheduler, engine = await make(max_batch=1)
    blocker = await hold(scheduler)
    a = await submit(scheduler, *[job(user="a", prompt=f"circle {i}") for i in range(3)])
    b = await submit(scheduler, *[job(user="b", prompt=f"square {i}") for i in range(2)])
    c = await submit(scheduler, job(user="c"))
    assert [scheduler.info(j).position for j in [*a, *b, *c]] == [0, 3, 5, 1, 4, 2]
    await finish(scheduler, blocker, *a, *b, *c)
    assert order(engine) == [j.id for j in (a[0], b[0], c[0], a[1], b[1], a[2])]


async def test_fast_lane_runs_before_relax(make: Make) -> None:
    scheduler, engine = await make(max_batch=1, relax_share=0.0)
    blocker = await hold(scheduler)
    relaxed = await submit(scheduler, job(lane=Lane.RELAX, user="r"))
    fast = await submit(scheduler, *[job(prompt=f"circle {i}") for i in range(3)])
    await finish(scheduler, blocker, *relaxed, *fast)
    assert order(engine) == [j.id for j in [*fast, *relaxed]]


async def test_relax_gets_its_share_while_fast_is_busy(make: Make) -> None:
    scheduler, engine = await make(max_batch=1, relax_share=0.5)
    blocker = await hold(scheduler)
    fast = await submit(scheduler, *[job(prompt=f"circle {i}") for i in range(4)])
    relaxed = await submit(scheduler, *[job(lane=Lane.RELAX, user="r", prompt=f"star {i}") for i in range(2)])
    await finish(scheduler, blocker, *fast, *relaxed)
    f, r = fast, relaxed
    assert order(engine) == [j.id for j in (f[0], r[0], f[1], r[1], f[2], f[3])]


async def test_compatible_jobs_share_a_call_up_to_max_batch(make: Make) -> None:
    scheduler, engine = await make(max_batch=4)
    blocker = await hold(scheduler)
    same = await submit(scheduler, *[job(user=f"u{i}", seed=i) for i in range(5)])
    (other,) = await submit(scheduler, job(user="v", steps=3))
    (pair,) = await submit(scheduler, job(user="w", count=2))
    await finish(scheduler, blocker, *same, other, pair)
    assert sizes(engine) == [4, 3, 1]
    assert engine.calls[1].job_ids == [j.id for j in same[:4]]
    assert engine.calls[2].job_ids == [same[4].id, pair.id]
    assert all(j.status is JobStatus.SUCCEEDED and scheduler.info(j).images == j.request.count for j in same)


async def test_a_job_batched_or_split_gives_the_same_images(make: Make) -> None:
    alone, engine = await make(max_batch=1)
    (reference,) = await submit(alone, job(seed=42, count=4))
    await finish(alone, reference)
    # The same job once more, in a batch with another, and split in halves by an out-of-memory error.
    split, engine = await make(max_batch=8, oom_over=3)
    blocker = await hold(split)
    jobs = await submit(split, job(seed=42, count=4), job(seed=43, prompt="blue square"))
    await finish(split, blocker, *jobs)
    assert sizes(engine) == [5, 2, 3]
    assert jobs[0].status is JobStatus.SUCCEEDED
    for n in range(4):
        diff = np.abs(pixels(split.image(jobs[0].id, n).data) - pixels(alone.image(reference.id, n).data))
        assert diff.max() <= 3, f"image {n} differs by {diff.max()}"


async def test_out_of_memory_twice_fails_the_batch_with_its_code(make: Make) -> None:
    scheduler, engine = await make(max_batch=4, oom_over=1)
    blocker = await hold(scheduler)
    jobs = await submit(scheduler, *[job(user=f"u{i}", count=2) for i in range(2)])
    await finish(scheduler, blocker, *jobs)
    assert sizes(engine) == [4, 2, 2]
    assert {j.error.code for j in jobs if j.error} == {ErrorCode.OUT_OF_MEMORY}
    assert all(j.status is JobStatus.FAILED for j in jobs)


async def test_a_batch_that_raises_fails_only_its_own_jobs(make: Make) -> None:
    scheduler, _ = await make(max_batch=4, fail_prompt="boom")
    bad, good = await submit(scheduler, job(prompt="boom", steps=3), job(user="b"))
    await finish(scheduler, bad, good)
    assert bad.status is JobStatus.FAILED and bad.error is not None
    assert bad.error.code is ErrorCode.PIPELINE_ERROR and "injected" in bad.error.message
    assert good.status is JobStatus.SUCCEEDED
    (after,) = await submit(scheduler, job(user="c"))
    await finish(scheduler, after)
    assert after.status is JobStatus.SUCCEEDED


async def test_cancel_queued_job_leaves_at_once(make: Make) -> None:
    scheduler, engine = await make(max_batch=1)
    first, second = await submit(scheduler, job(), job(prompt="blue square"))
    scheduler.cancel(second.id)
    assert second.status is JobStatus.CANCELLED
    assert scheduler.stats().lanes[Lane.FAST].queued == 0
    await finish(scheduler, first)
    assert all(second.id not in call.job_ids for call in engine.calls)
    events = [e async for e in scheduler.events(second.id) if e is not None]
    assert events[-1].type is EventType.CANCELLED


async def test_cancel_running_job_alone_stops_its_pipeline(make: Make) -> None:
    scheduler, engine = await make(max_batch=1)
    (long,) = await submit(scheduler, job(steps=60))
    await until(scheduler, long, EventType.STARTED)
    scheduler.cancel(long.id)
    assert long.status is JobStatus.CANCELLED  # reported at once, before the pipeline returns
    (next_job,) = await submit(scheduler, job(user="bob"))
    await finish(scheduler, next_job)
    assert engine.calls[0].stopped and engine.calls[0].steps_done < 60
    assert next_job.status is JobStatus.SUCCEEDED


async def test_cancel_in_shared_batch_drops_only_its_output(make: Make) -> None:
    scheduler, engine = await make(max_batch=4)
    blocker = await hold(scheduler)
    mine, theirs = await submit(scheduler, job(steps=20), job(steps=20, user="bob", seed=5))
    await until(scheduler, mine, EventType.STARTED)
    scheduler.cancel(mine.id)
    await finish(scheduler, blocker, theirs)
    assert [c.job_ids for c in engine.calls[1:]] == [[mine.id, theirs.id]]
    assert not engine.calls[1].stopped
    assert mine.status is JobStatus.CANCELLED and theirs.status is JobStatus.SUCCEEDED
    with pytest.raises(ProtocolError) as err:
        scheduler.image(mine.id, 0)
    assert err.value.code is ErrorCode.NOT_READY
    assert scheduler.image(theirs.id, 0).data.startswith(b"\x89PNG")


async def test_a_batch_over_its_time_limit_fails_and_its_pipeline_stops(make: Make) -> None:
    scheduler, engine = await make(batch_timeout_s=0.2)
    (slow,) = await submit(scheduler, job(steps=150))
    await finish(scheduler, slow)
    assert slow.status is JobStatus.FAILED and slow.error is not None
    assert slow.error.code is ErrorCode.PIPELINE_ERROR and "timed out" in slow.error.message
    assert engine.calls[0].returned.is_set() and engine.calls[0].stopped
    (quick,) = await submit(scheduler, job(user="bob"))
    await finish(scheduler, quick)
    assert quick.status is JobStatus.SUCCEEDED


async def test_idempotent_resubmit_and_conflict(make: Make) -> None:
    scheduler, _ = await make()
    request = job(idempotency_key="same")
    (first,) = await submit(scheduler, request)
    sub = await prepare_submission(request, None, scheduler.settings, scheduler.engine)
    again, created = scheduler.submit(sub)
    assert again is first and not created
    with pytest.raises(ProtocolError) as err:
        await submit(scheduler, job(idempotency_key="same", prompt="something else"))
    assert (err.value.code, err.value.status) == (ErrorCode.CONFLICT, 409)
    await finish(scheduler, first)


async def test_the_next_batch_takes_the_device_while_the_last_ones_pictures_are_converted(make: Make) -> None:
    """The slot frees when the engine says the device is free, not when the host work after the call
    (conversion, safety, packaging) is done: that work no longer holds up the GPU."""
    scheduler, engine = await make(max_batch=1)
    host_work, second_done = threading.Event(), threading.Event()
    device_freed: list[StepUpdate] = []

    def hold_host_work(update: StepUpdate) -> None:  # on the engine thread, between call and conversion
        if update.device_free:
            device_freed.append(update)
            if len(device_freed) == 1:
                assert host_work.wait(30)
            else:
                second_done.set()

    engine.step_hook = hold_host_work
    first, second = await submit(scheduler, job(user="a"), job(user="b"))
    # The second batch's whole pipeline call ran while the first's host work was held.
    assert await asyncio.to_thread(second_done.wait, 30)
    assert first.status is JobStatus.RUNNING and not engine.calls[0].returned.is_set()
    host_work.set()
    await finish(scheduler, first, second)
    assert first.status is second.status is JobStatus.SUCCEEDED and len(device_freed) == 2


async def test_queue_caps_refuse_with_retry_after(make: Make) -> None:
    scheduler, _ = await make(max_queue_per_user=2, max_queue_per_lane=3)
    await hold(scheduler)
    await submit(scheduler, job(), job())
    with pytest.raises(ProtocolError) as err:
        await submit(scheduler, job())
    assert (err.value.code, err.value.status) == (ErrorCode.USER_QUEUE_FULL, 429)
    assert err.value.retry_after is not None and err.value.retry_after >= 1
    await submit(scheduler, job(user="bob"))
    with pytest.raises(ProtocolError) as err:
        await submit(scheduler, job(user="carol"))
    assert err.value.code is ErrorCode.QUEUE_FULL and err.value.retry_after is not None


async def test_eta_comes_from_measured_batches(make: Make) -> None:
    scheduler, _ = await make(max_batch=1)
    (warm,) = await submit(scheduler, job(steps=6))
    await finish(scheduler, warm)
    measured = warm.finished_at - warm.started_at  # type: ignore[operator]
    jobs = await submit(scheduler, *[job(steps=6, prompt=f"circle {i}") for i in range(3)])
    etas = [scheduler.info(j).eta_s for j in jobs]
    assert etas[0] is not None and etas[1] is not None and etas[2] is not None
    assert etas[0] < etas[1] < etas[2]
    assert etas[2] == pytest.approx(3 * measured, rel=0.8)
    await finish(scheduler, *jobs)
    assert scheduler.info(jobs[0]).eta_s is None


async def test_late_subscriber_gets_current_state_and_resume_skips_seen(make: Make) -> None:
    scheduler, _ = await make(progress_interval_s=0)
    (j,) = await submit(scheduler, job(steps=40))
    await until(scheduler, j, EventType.PROGRESS)
    stream = scheduler.events(j.id)
    assert isinstance(stream, AsyncGenerator), "events() is an async generator"
    first = [await anext(stream) for _ in range(3)]
    await stream.aclose()
    assert all(e is not None for e in first)
    types = [e.type for e in first if e is not None]
    assert types[:2] == [EventType.QUEUED, EventType.STARTED]
    assert types[2] in (EventType.PROGRESS, EventType.PREVIEW)  # the latest one only
    assert first[1] is not None
    resumed = scheduler.events(j.id, after=first[1].seq)
    assert isinstance(resumed, AsyncGenerator)
    again = await anext(resumed)
    await resumed.aclose()
    assert again is not None and again.seq > first[1].seq
    await finish(scheduler, j)
    # Once ended, the record keeps only the final event, which carries the job's whole state.
    events = [e async for e in scheduler.events(j.id) if e is not None]
    assert [e.type for e in events] == [EventType.DONE]
    assert events[0].job is not None and events[0].job.images == 1
    assert [e async for e in scheduler.events(j.id, after=events[0].seq)] == []


async def test_an_idle_stream_gets_heartbeats(make: Make) -> None:
    scheduler, _ = await make(max_batch=1)
    running, waiting = await submit(scheduler, job(steps=60), job(prompt="a green star"))
    stream = scheduler.events(waiting.id, heartbeat=0.01)
    async with asyncio.timeout(30):
        seen = [await anext(stream) for _ in range(4)]
    assert isinstance(stream, AsyncGenerator), "events() is an async generator"
    await stream.aclose()
    assert seen[0] is not None and seen[0].type is EventType.QUEUED
    assert None in seen  # while nothing happens to it, keep-alive ticks
    scheduler.cancel(running.id)
    await finish(scheduler, waiting)


async def test_progress_and_previews_stream_while_running(make: Make) -> None:
    scheduler, _ = await make(progress_interval_s=0)
    (j,) = await submit(scheduler, job(steps=4))
    seen = [e async for e in scheduler.events(j.id) if e is not None]
    steps = [e.step for e in seen if e.type is EventType.PROGRESS]
    assert steps == [1, 2, 3, 4]
    assert [e.step for e in seen if e.type is EventType.PREVIEW] == [1, 2, 3]
    assert scheduler.info(j).total_steps == 4
    assert scheduler.preview(j.id) is None  # dropped once the job ended: its image is what counts


async def test_the_latest_preview_is_served_while_running(make: Make) -> None:
    scheduler, _ = await make(progress_interval_s=0)
    (j,) = await submit(scheduler, job(steps=60))
    await until(scheduler, j, EventType.PREVIEW)
    preview = scheduler.preview(j.id)
    scheduler.cancel(j.id)
    assert preview is not None and preview[:2] == b"\xff\xd8"  # a JPEG of the latest preview


async def test_progress_is_paced(make: Make) -> None:
    scheduler, _ = await make(progress_interval_s=0.05)
    (j,) = await submit(scheduler, job(steps=40))
    seen = [e async for e in scheduler.events(j.id) if e is not None]
    progress = [e for e in seen if e.type is EventType.PROGRESS]
    steps = [e.step for e in progress if e.step is not None]
    assert len(steps) == len(progress), "every progress event names its step"
    assert steps == sorted(steps) and 0 < len(steps) < 40
    assert j.status is JobStatus.SUCCEEDED


async def test_shutdown_finishes_running_batch_and_fails_queued(make: Make) -> None:
    scheduler, _ = await make(max_batch=1, shutdown_grace_s=30)
    running, queued = await submit(scheduler, job(steps=10), job(prompt="blue square"))
    await until(scheduler, running, EventType.STARTED)
    await scheduler.shutdown()
    assert running.status is JobStatus.SUCCEEDED
    assert queued.status is JobStatus.FAILED and queued.error is not None
    assert queued.error.code is ErrorCode.SHUTTING_DOWN
    with pytest.raises(ProtocolError) as err:
        await submit(scheduler, job())
    assert (err.value.code, err.value.status) == (ErrorCode.SHUTTING_DOWN, 503)


async def test_shutdown_grace_bounds_the_running_batch(make: Make) -> None:
    scheduler, engine = await make(max_batch=1, shutdown_grace_s=0)
    (running,) = await submit(scheduler, job(steps=80))
    await until(scheduler, running, EventType.STARTED)
    await scheduler.shutdown()
    assert running.status is JobStatus.FAILED and running.error is not None
    assert running.error.code is ErrorCode.SHUTTING_DOWN
    assert await asyncio.to_thread(engine.calls[0].returned.wait, 30)
    assert engine.calls[0].stopped and engine.calls[0].steps_done < 80


async def test_expired_jobs_are_forgotten_with_their_keys(make: Make) -> None:
    scheduler, _ = await make()
    (j,) = await submit(scheduler, job(idempotency_key="reuse"))
    await finish(scheduler, j)
    scheduler.evict_expired(before=j.finished_mono + 1)  # type: ignore[operator]
    with pytest.raises(ProtocolError) as err:
        scheduler.get(j.id)
    assert err.value.status == 404
    (again,) = await submit(scheduler, job(idempotency_key="reuse", prompt="new"))
    assert again.id != j.id
    await finish(scheduler, again)


async def test_a_fetched_image_leaves_memory_after_its_grace_and_is_then_gone(make: Make) -> None:
    scheduler, _ = await make(fetched_result_grace_s=0)
    (j,) = await submit(scheduler, job(count=2))
    await finish(scheduler, j)
    assert len(scheduler.results) == 2 and scheduler.results.bytes > 0
    first = scheduler.image(j.id, 0)
    assert first.media_type == "image/png" and first.data.startswith(b"\x89PNG")
    scheduler.results.expire()  # as every fetch and the sweeper do
    assert len(scheduler.results) == 1  # its grace (0 s) is over
    with pytest.raises(ProtocolError) as err:
        scheduler.image(j.id, 0)
    assert (err.value.code, err.value.status) == (ErrorCode.GONE, 410)
    scheduler.image(j.id, 1)
    scheduler.results.expire()
    assert len(scheduler.results) == 0 and scheduler.results.bytes == 0
    assert scheduler.info(j).status is JobStatus.SUCCEEDED and scheduler.info(j).images == 2


async def test_a_refetch_within_the_grace_gets_the_same_image(make: Make) -> None:
    scheduler, _ = await make(fetched_result_grace_s=60)
    (j,) = await submit(scheduler, job())
    await finish(scheduler, j)
    assert scheduler.image(j.id, 0).data == scheduler.image(j.id, 0).data


async def test_what_the_worker_keeps_stays_bounded_after_many_jobs(make: Make) -> None:
    """After N jobs (more than the record cap), fetched or not: retained records, events, previews,
    inputs and result bytes are bounded by the settings, not by N."""
    cap, n = 100, 130
    scheduler, _ = await make(
        max_finished_jobs=cap, fetched_result_grace_s=0, max_batch=16, max_queue_per_user=n,
        max_queue_per_lane=n, progress_interval_s=0,
    )  # fmt: skip
    jobs = await submit(scheduler, *[job(steps=1, seed=i) for i in range(n)])
    await finish(scheduler, *jobs)
    kept = [j for j in jobs if j.id in scheduler.jobs]
    assert len(kept) == cap and kept == jobs[-cap:]  # the oldest records went first
    with pytest.raises(ProtocolError) as err:
        scheduler.get(jobs[0].id)
    assert err.value.code is ErrorCode.NOT_FOUND
    for j in kept[: cap // 2]:  # half of them fetched: those leave memory
        scheduler.image(j.id, 0)
    scheduler.results.expire()
    unfetched = kept[cap // 2 :]
    assert len(scheduler.results) == len(unfetched)
    assert scheduler.results.bytes == sum(len(scheduler.image(j.id, 0).data) for j in unfetched)
    for j in kept:  # the live record let go of its pixels, previews, input and events...
        assert j.images == [] and j.preview is None and j.preview_jpeg is None
        assert j.sub.init_image is None and j.latest is None and len(j.durable) == 1
        tomb = scheduler.get(j.id)  # ...and the index holds a tombstone in its place
        assert isinstance(tomb, FinishedJob) and len(tomb.final_event) < 1024


async def test_an_ended_job_answers_late_clients_from_its_tombstone(make: Make) -> None:
    scheduler, _ = await make(fetched_result_grace_s=60)
    request = job(idempotency_key="late", count=2)
    (j,) = await submit(scheduler, request)
    live_events = [e async for e in scheduler.events(j.id) if e is not None]
    tomb = scheduler.get(j.id)
    assert isinstance(tomb, FinishedJob) and tomb.status is JobStatus.SUCCEEDED
    # Status, replay, resubmit, conflict and fetch: as the live record answered them.
    assert scheduler.info(tomb) == live_events[-1].job and scheduler.info(tomb).images == 2
    assert [e async for e in scheduler.events(j.id) if e is not None] == live_events[-1:]
    assert [e async for e in scheduler.events(j.id, after=live_events[-1].seq)] == []
    again, created = scheduler.submit(
        await prepare_submission(request, None, scheduler.settings, scheduler.engine)
    )
    assert again is tomb and not created
    with pytest.raises(ProtocolError) as err:
        await submit(scheduler, job(idempotency_key="late", prompt="something else"))
    assert err.value.code is ErrorCode.CONFLICT
    assert scheduler.image(j.id, 1).data and scheduler.preview(j.id) is None
    with pytest.raises(ProtocolError) as err:
        scheduler.image(j.id, 2)
    assert err.value.code is ErrorCode.NOT_FOUND
    assert scheduler.cancel(j.id) is tomb and scheduler.info(tomb).status is JobStatus.SUCCEEDED


async def test_a_cancelled_job_becomes_a_tombstone_at_once(make: Make) -> None:
    scheduler, _ = await make()
    await hold(scheduler)
    (j,) = await submit(scheduler, job())
    tomb = scheduler.cancel(j.id)
    assert isinstance(tomb, FinishedJob) and scheduler.get(j.id) is tomb
    assert scheduler.info(tomb).status is JobStatus.CANCELLED and scheduler.info(tomb).error is not None


def test_a_tombstone_is_a_fraction_of_the_live_record() -> None:
    """What bounds the worker's memory at the finished-job cap: measured, not assumed."""

    def ended(i: int) -> Job:
        r = job(idempotency_key=f"job-{i:08d}", prompt=f"a large red circle in the centre, number {i}")
        sub = Submission(
            request=r, seed=i, width=512, height=512, steps=1, guidance=0.0, fingerprint="f" * 64
        )
        j = Job(
            id=WorkerJobId(f"{i:016x}"),
            sub=sub,
            model="sd-turbo",
            created_at=time.time(),
            status=JobStatus.SUCCEEDED,
        )
        info = JobInfo(
            id=j.id, idempotency_key=r.idempotency_key, user=r.user, lane=r.lane, kind=r.kind,
            status=j.status, seed=i, width=512, height=512, steps=1, guidance=0.0, count=1, model=j.model,
            images=1, nsfw=[False], created_at=1.0, started_at=2.0, finished_at=3.0,
        )  # fmt: skip
        final = JobEvent.model_construct(type=EventType.DONE, job_id=j.id, seq=4, job=info, error=None)
        return dataclasses.replace(j, durable=[final], finished_mono=1.0, nsfw=[False])

    def per_record(keep: Callable[[Job], object]) -> float:
        tracemalloc.start()
        try:
            before = tracemalloc.get_traced_memory()[0]
            kept = [keep(ended(i)) for i in range(500)]
            return (tracemalloc.get_traced_memory()[0] - before) / len(kept)
        finally:
            tracemalloc.stop()

    live, tomb = per_record(lambda j: j), per_record(FinishedJob.of)
    print(f"bytes per record: live {live:.0f}, tombstone {tomb:.0f}")
    assert tomb < 1200 and tomb < live / 3, (live, tomb)


async def test_a_job_can_ask_for_webp_and_keeps_its_metadata(make: Make) -> None:
    scheduler, _ = await make()
    webp, jpeg = await submit(
        scheduler, job(output_format="webp", prompt="a red circle"), job(output_format="jpeg", prompt="a dot")
    )
    await finish(scheduler, webp, jpeg)
    image = scheduler.image(webp.id, 0)
    assert image.media_type == "image/webp" and image.data[8:12] == b"WEBP"
    meta = read_xmp(image.data)
    assert meta["prompt"] == "a red circle" and meta["seed"] == str(webp.sub.seed)
    assert meta["model"] == scheduler.engine.model_name
    image = scheduler.image(jpeg.id, 0)
    assert image.media_type == "image/jpeg" and read_xmp(image.data)["prompt"] == "a dot"


async def test_the_workers_default_format_applies_to_jobs_that_ask_none(make: Make) -> None:
    scheduler, _ = await make(output_format="webp-lossless")
    (j,) = await submit(scheduler, job())
    await finish(scheduler, j)
    image = scheduler.image(j.id, 0)
    assert image.media_type == "image/webp"
    assert read_xmp(image.data)["prompt"] == j.request.prompt


def test_halves_cut_jobs_by_images() -> None:
    a = Job(id="a", sub=None, model="m", created_at=0)  # type: ignore[arg-type]
    b = Job(id="b", sub=None, model="m", created_at=0)  # type: ignore[arg-type]
    first, second = halves([Slice(a, 0, 3), Slice(b, 0, 2)])
    assert [(s.job.id, s.offset, s.count) for s in first] == [("a", 0, 2)]
    assert [(s.job.id, s.offset, s.count) for s in second] == [("a", 2, 1), ("b", 0, 2)]
