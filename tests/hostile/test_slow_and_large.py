"""Slow clients and large inputs against a worker in its own process: time limits close what stalls, and
memory does not grow with what clients queue or send."""

from __future__ import annotations

import asyncio
import os
import time
from collections import Counter
from collections.abc import Iterator

import aiohttp
import pytest

from inference.settings import WorkerSettings
from tests.hostile.tools import (
    WorkerProcess,
    closed_within,
    edit_form,
    free_port,
    half_sent_requests,
    large_png,
    write_config,
)
from tests.inference.fixtures_worker import job_fields

pytestmark = pytest.mark.timeout(300)


@pytest.fixture(scope="module")
def worker(tmp_path_factory: pytest.TempPathFactory) -> Iterator[WorkerProcess]:
    """One worker process for the module (starting one takes seconds): tight slow-client limits, and
    batches of one so queued jobs stay queued."""
    tmp = tmp_path_factory.mktemp("hostile")
    port = free_port()
    limits = {"keepalive_timeout_s": 1.0, "body_timeout_s": 3.0, "max_batch": 1}
    config = write_config(tmp / "config.toml", port=port, database=tmp / "bf.sqlite3", worker=limits)
    running = asyncio.run(WorkerProcess(config, port).start())
    try:
        yield running
    finally:
        running.stop()


async def test_half_sent_requests_are_closed_by_the_time_limits(worker: WorkerProcess) -> None:
    heads = await half_sent_requests("127.0.0.1", worker.port, 300)
    bodies = await half_sent_requests("127.0.0.1", worker.port, 20, body=True)
    started = time.monotonic()
    assert await closed_within(heads, 5.0) == 300
    assert await closed_within(bodies, 7.0) == 20
    assert time.monotonic() - started < 12.0
    async with aiohttp.ClientSession() as session, session.get(f"{worker.url}/v1/stats") as resp:
        assert resp.status == 200  # and the worker still answers everyone else


async def test_queued_edits_hold_compressed_inputs_not_pixels(worker: WorkerProcess) -> None:
    """30 queued edits of a 2048x2048 picture used to hold 12 MB of pixels each (530 MB in all)."""
    image = large_png()
    async with aiohttp.ClientSession() as session:
        ids: list[str] = []

        async def edit(i: int, steps: int = 150) -> int:
            job = job_fields(kind="edit", user=f"u{i}", prompt="make it red", steps=steps)
            async with session.post(f"{worker.url}/v1/jobs", data=edit_form(job, image)) as resp:
                ids.append((await resp.json()).get("id", ""))
                return resp.status

        assert await edit(-1, steps=2) == 201  # warm the decode and edit paths up first
        await asyncio.sleep(2.0)
        before = worker.rss_mb()
        statuses = Counter([await edit(i) for i in range(30)])
        grown = worker.rss_mb() - before
        for job_id in ids:  # leave the worker idle for the next test
            async with session.delete(f"{worker.url}/v1/jobs/{job_id}"):
                pass
    assert statuses[201] == 30, statuses
    assert grown < 96, f"RSS grew {grown:.0f} MB for 30 queued edits"


async def test_parallel_large_bodies_are_held_to_the_input_budget(worker: WorkerProcess) -> None:
    """20 parallel 10 MB bodies: read within the budget or refused (429) by declared size, unread."""
    junk = os.urandom(10 * 1000 * 1000)
    async with aiohttp.ClientSession() as session:
        async with session.get(f"{worker.url}/v1/stats") as resp:
            assert resp.status == 200
        await asyncio.sleep(1.0)
        before = worker.rss_mb()

        async def send(i: int) -> tuple[int, str]:
            job = job_fields(kind="edit", user=f"u{i}", prompt="make it red")
            form = edit_form(job, junk)  # asking first, as the worker client does with images
            try:
                async with session.post(f"{worker.url}/v1/jobs", data=form, expect100=True) as resp:
                    return resp.status, (await resp.json())["code"]
            except (aiohttp.ServerDisconnectedError, aiohttp.ClientOSError):
                # A refused upload's connection may close while the client is still writing (a race on a
                # loaded machine): the body was not held, which is what this test is about.
                return 0, "closed_unread"

        answers = Counter(await asyncio.gather(*(send(i) for i in range(20))))
        grown = worker.rss_mb() - before
    allowed = {(400, "bad_image"), (429, "queue_full"), (408, "request_timeout"), (0, "closed_unread")}
    assert set(answers) <= allowed, answers
    assert answers[(429, "queue_full")] > 0, answers
    assert grown < 128, f"RSS grew {grown:.0f} MB for 20 parallel 10 MB bodies"


async def test_a_declared_oversized_body_is_refused_before_it_is_read(worker: WorkerProcess) -> None:
    reader, writer = await asyncio.open_connection("127.0.0.1", worker.port)
    writer.write(
        b"POST /v1/jobs HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
        b"Content-Length: 999999999\r\n\r\n"
    )
    await writer.drain()
    async with asyncio.timeout(5):
        head = await reader.readuntil(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 413"), head
    writer.close()


async def test_an_upload_that_cannot_be_held_is_refused_before_it_is_sent(worker: WorkerProcess) -> None:
    """With `Expect: 100-continue` (the worker client sends it with images) an oversized body, or one the
    input budget cannot hold while others are being read, is refused before the client sends a byte."""

    async def ask(length: int) -> tuple[bytes, asyncio.StreamWriter]:
        reader, writer = await asyncio.open_connection("127.0.0.1", worker.port)
        writer.write(
            b"POST /v1/jobs HTTP/1.1\r\nHost: x\r\nContent-Type: multipart/form-data; boundary=b\r\n"
            b"Expect: 100-continue\r\nContent-Length: %d\r\n\r\n" % length
        )
        await writer.drain()
        async with asyncio.timeout(5):
            return await reader.readuntil(b"\r\n\r\n"), writer

    head, writer = await ask(999_999_999)
    assert head.startswith(b"HTTP/1.1 413"), head
    writer.close()
    size = 10 * 1024 * 1024  # the largest image: as many as the budget holds are asked for, the next is not
    fits = WorkerSettings().input_budget_bytes // size
    asked = [await ask(size) for _ in range(fits + 1)]
    assert [h[:12] for h, _ in asked] == [b"HTTP/1.1 100"] * fits + [b"HTTP/1.1 429"], asked
    for _, w in asked:
        w.close()
