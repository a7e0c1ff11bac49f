"""The typed worker client against a real worker on a socket (real tiny pipeline)."""

from __future__ import annotations

import asyncio
import io
from collections.abc import AsyncIterator

import pytest
from PIL import Image

from inference.client import (
    JobNotFound,
    QueueFull,
    ResultGone,
    WorkerClient,
    WorkerRejected,
    WorkerUnavailable,
)
from inference.engine_api import Engine
from inference.protocol import ErrorCode, EventType
from inference.server import RunningWorker, start_worker
from inference.settings import ModelDefaults, WorkerSettings
from inference.vocabulary import JobKind, JobStatus
from tests.inference import fixtures_worker
from tests.inference.fixtures_worker import FlakyProxy, job, png_bytes, worker_without_info

tiny_engine = fixtures_worker.tiny_engine  # the real tiny engine, once per module

TOKEN = "client-test-token"


@pytest.fixture
async def worker(tiny_engine: Engine) -> AsyncIterator[RunningWorker]:
    running = await start_worker(WorkerSettings(port=0, token=TOKEN, max_queue_per_user=3), tiny_engine)
    yield running
    await running.stop()


@pytest.fixture
async def client(worker: RunningWorker) -> AsyncIterator[WorkerClient]:
    async with WorkerClient(worker.url, token=TOKEN, timeout=30, backoff=0.01) as c:
        yield c


def port_of(worker: RunningWorker) -> int:
    return int(worker.url.rsplit(":", 1)[1])


async def test_submit_events_wait_and_images(client: WorkerClient) -> None:
    assert await client.health() and await client.ready()
    info = await client.submit(job(count=2, steps=3))
    assert info.status is JobStatus.RUNNING and info.count == 2  # an idle worker starts it at once
    seen = [e async for e in client.events(info.id)]
    assert seen[0].type is EventType.QUEUED and seen[-1].type is EventType.DONE
    final = await client.wait(info.id)
    assert final.status is JobStatus.SUCCEEDED and final.images == 2
    for n in range(2):
        img = Image.open(io.BytesIO(await client.image(info.id, n)))
        assert img.format == "PNG" and img.size == (64, 64)
    assert (await client.get(info.id)).status is JobStatus.SUCCEEDED
    stats = await client.stats()
    assert stats.jobs_done == 1


async def test_a_refetch_soon_after_gets_the_image_and_a_late_one_is_told_gone(tiny_engine: Engine) -> None:
    """A retried fetch (a reply lost on the way) finds the image within the worker's grace; once the grace
    has passed the image has left the worker's memory and the client says so with its own error."""
    grace = 1.0
    running = await start_worker(WorkerSettings(port=0, fetched_result_grace_s=grace), tiny_engine)
    try:
        async with WorkerClient(running.url, timeout=30, backoff=0.01) as client:
            info = await client.wait((await client.submit(job(output_format="webp"))).id)
            first = await client.image(info.id, 0)
            assert first[8:12] == b"WEBP" and await client.image(info.id, 0) == first
            await asyncio.sleep(grace + 0.1)
            with pytest.raises(ResultGone) as err:
                await client.image(info.id, 0)
            assert (err.value.code, err.value.status) == (ErrorCode.GONE, 410)
            assert (await client.get(info.id)).status is JobStatus.SUCCEEDED  # the small record stays
    finally:
        await running.stop()


async def test_edit_job_sends_the_image_as_multipart(client: WorkerClient) -> None:
    info = await client.submit(
        job(kind=JobKind.IMG2IMG, strength=0.6, width=None, height=None), png_bytes(80, 64)
    )
    final = await client.wait(info.id)
    assert final.status is JobStatus.SUCCEEDED and (final.width, final.height) == (80, 64)


async def test_preview_none_before_any_step(client: WorkerClient) -> None:
    info = await client.submit(job())
    await client.wait(info.id)
    preview = await client.preview(info.id)
    assert preview is None or preview[:2] == b"\xff\xd8"  # JPEG when the engine made previews


async def test_typed_errors(client: WorkerClient, worker: RunningWorker) -> None:
    with pytest.raises(JobNotFound):
        await client.get("no-such-job")
    await client.submit(job(idempotency_key="one"))
    with pytest.raises(WorkerRejected) as err:
        await client.submit(job(idempotency_key="one", prompt="different"))
    assert (err.value.code, err.value.status) == (ErrorCode.CONFLICT, 409)
    with pytest.raises(WorkerRejected) as err:
        await client.submit(job(kind=JobKind.EDIT), b"not an image")
    assert err.value.code is ErrorCode.BAD_IMAGE and err.value.field == "image"
    async with WorkerClient(worker.url, token="wrong") as bad:
        with pytest.raises(WorkerRejected) as err:
            await bad.stats()
        assert err.value.code is ErrorCode.UNAUTHORIZED
        assert await bad.health() and not await bad.ready()


async def test_queue_full_carries_retry_after(client: WorkerClient) -> None:
    with pytest.raises(QueueFull) as err:
        for _ in range(6):
            await client.submit(job(user="greedy", steps=30))
    assert err.value.code is ErrorCode.USER_QUEUE_FULL and err.value.retry_after >= 1


async def test_cancel(client: WorkerClient) -> None:
    info = await client.submit(job(steps=60))
    async for event in client.events(info.id):
        if event.type is EventType.STARTED:
            break
    assert (await client.cancel(info.id)).status is JobStatus.CANCELLED
    assert (await client.wait(info.id)).status is JobStatus.CANCELLED


async def test_info_names_the_model_and_its_defaults(client: WorkerClient, tiny_engine: Engine) -> None:
    info = await client.info()
    assert info is not None and info.model == tiny_engine.model_name and info.has_edit_model
    assert info.defaults == ModelDefaults(steps=2, guidance=0.0, width=64, height=64, img2img_strength=0.75)


async def test_a_worker_without_info_is_told_apart_from_a_failing_one() -> None:
    async with worker_without_info() as url, WorkerClient(url, retries=0) as c:
        assert await c.health() and await c.info() is None


async def test_unreachable_worker_is_unavailable_after_retries() -> None:
    server = await asyncio.start_server(lambda r, w: None, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    server.close()
    await server.wait_closed()
    async with WorkerClient(f"http://127.0.0.1:{port}", retries=2, backoff=0.01) as c:
        with pytest.raises(WorkerUnavailable):
            await c.stats()
        with pytest.raises(WorkerUnavailable):
            await c.submit(job())
        with pytest.raises(WorkerUnavailable):
            await c.info()
        assert not await c.health()


async def test_events_resume_after_a_dropped_stream(worker: RunningWorker) -> None:
    async with (
        FlakyProxy(port_of(worker), cut_events=True) as proxy,
        WorkerClient(proxy.url, token=TOKEN, backoff=0.01) as client,
    ):
        info = await client.submit(job(steps=12))
        seen = [e async for e in client.events(info.id)]
    assert proxy.cuts == 1
    seqs = [e.seq for e in seen]
    assert seqs == sorted(set(seqs))  # nothing seen twice, in order
    assert seen[-1].type is EventType.DONE


async def test_submit_retried_after_a_lost_reply_returns_the_same_job(worker: RunningWorker) -> None:
    async with (
        FlakyProxy(port_of(worker), cut_submit_reply=True) as proxy,
        WorkerClient(proxy.url, token=TOKEN, backoff=0.01) as client,
    ):
        info = await client.submit(job(idempotency_key="retry-me"))
        assert proxy.cuts == 1
        await client.wait(info.id)
        stats = await client.stats()
    assert stats.jobs_done == 1  # the retry found the job the lost reply had created
