"""`python -m inference` as a real process: it serves the tiny model and shuts down gracefully on SIGTERM."""

from __future__ import annotations

import asyncio
import re
import signal
import sys
from pathlib import Path

from inference.client import WorkerClient
from inference.protocol import ErrorCode, EventType, JobEvent
from inference.vocabulary import WorkerJobId
from tests.inference.fixtures_worker import job

TOKEN = "main-test-token"


async def url_from_log(stderr: asyncio.StreamReader) -> str:
    async with asyncio.timeout(90):
        while line := await stderr.readline():
            if found := re.search(rb"worker serving .* on (http://\S+)", line):
                return found.group(1).decode()
    raise AssertionError("the worker exited before serving")


async def test_worker_process_serves_and_shuts_down_gracefully(tiny_model_dir: Path, tmp_path: Path) -> None:
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "inference", "--port", "0", "--token", TOKEN, "--model", str(tiny_model_dir),
        "--device", "cpu", "--cpu-threads", "1", "--cache-dir", str(tmp_path), "--max-batch", "1",
        stderr=asyncio.subprocess.PIPE,
    )  # fmt: skip
    assert proc.stderr is not None
    try:
        url = await url_from_log(proc.stderr)
        async with WorkerClient(url, token=TOKEN) as client:
            assert await client.ready()
            running = await client.submit(job(steps=150))
            queued = await client.submit(job(prompt="a green star"))
            started = {running.id: asyncio.Event(), queued.id: asyncio.Event()}

            async def follow(job_id: WorkerJobId) -> list[JobEvent]:
                seen = []
                async for event in client.events(job_id):
                    seen.append(event)
                    if event.type is EventType.STARTED or job_id == queued.id:
                        started[job_id].set()
                return seen

            # Both streams are open before the signal, so they see the ends the worker gives the jobs.
            follows = [asyncio.create_task(follow(j)) for j in (running.id, queued.id)]
            async with asyncio.timeout(60):
                await asyncio.gather(*[e.wait() for e in started.values()])
            proc.send_signal(signal.SIGTERM)
            ran, waited = await asyncio.gather(*follows)
            assert ran[-1].type is EventType.DONE  # the running batch was let finish
            assert waited[-1].type is EventType.FAILED and waited[-1].error is not None
            assert waited[-1].error.code is ErrorCode.SHUTTING_DOWN
        async with asyncio.timeout(60):
            assert await proc.wait() == 0
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()


async def test_public_bind_without_token_exits_with_a_clear_error() -> None:
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "inference", "--host", "0.0.0.0", stderr=asyncio.subprocess.PIPE
    )
    _, err = await proc.communicate()
    assert proc.returncode == 2
    assert b"refusing to bind '0.0.0.0' without a token" in err
