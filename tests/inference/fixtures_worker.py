"""Shared pieces for the worker tests: job helpers, fault-injecting engine wrappers and a flaky TCP proxy.

The engine under test is always the real tiny diffusers pipeline; the wrappers here only record what the
scheduler asked of it, or inject the faults that cannot be produced on demand (out of memory, a batch
that raises, a dropped connection).
"""

from __future__ import annotations

import asyncio
import contextlib
import io
import itertools
import threading
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from aiohttp import web
from PIL import Image

from inference.engine_api import (
    BatchItem,
    Engine,
    EngineError,
    EngineOutOfMemory,
    EngineWrapper,
    GeneratedImage,
    StepUpdate,
)
from inference.protocol import JobRequest
from inference.settings import EngineSettings, ModelDefaults

_keys = itertools.count()


def job(**fields: object) -> JobRequest:
    """A small generate job with a fresh idempotency key; `fields` override the defaults."""
    return JobRequest.model_validate(job_fields(**fields))


def job_fields(**fields: object) -> dict[str, object]:
    """The JSON fields of a small generate job, unvalidated; a field set to None is left out."""
    data: dict[str, object] = {
        "idempotency_key": f"k{next(_keys)}",
        "user": "alice",
        "prompt": "a red circle",
        "steps": 2,
        "width": 64,
        "height": 64,
        "seed": 1,
    }
    data.update(fields)
    return {k: v for k, v in data.items() if v is not None}


def png_bytes(width: int = 64, height: int = 64, colour: tuple[int, int, int] = (200, 30, 30)) -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", (width, height), colour).save(buf, format="PNG")
    return buf.getvalue()


def decompression_bomb() -> bytes:
    """A tiny PNG whose header claims 20000 x 20000 pixels (a 1-bit image compresses to almost nothing)."""
    buf = io.BytesIO()
    Image.new("1", (20000, 20000)).save(buf, format="PNG", optimize=True)
    return buf.getvalue()


@dataclass
class Call:
    """One `run_batch` call as the engine saw it."""

    job_ids: list[str]
    images: int
    steps_done: int = 0
    stopped: bool = False
    returned: threading.Event = field(default_factory=threading.Event)


@dataclass
class InstrumentedEngine(EngineWrapper):
    """Wraps the real engine: records each batch and can inject out-of-memory or a failing batch.

    `oom_over`: raise `EngineOutOfMemory` for batches of more than this many images.
    `fail_prompt`: raise `EngineError` for any batch holding a job with this prompt.
    """

    oom_over: int | None = None
    fail_prompt: str | None = None
    calls: list[Call] = field(default_factory=list)
    started: threading.Event = field(default_factory=threading.Event)
    step_hook: Callable[[StepUpdate], None] | None = None

    def run_batch(
        self,
        items: list[BatchItem],
        on_step: Callable[[StepUpdate], None],
        should_stop: Callable[[], bool],
    ) -> list[list[GeneratedImage]]:
        call = Call([i.job_id for i in items], sum(i.request.count for i in items))
        self.calls.append(call)
        self.started.set()
        if self.oom_over is not None and call.images > self.oom_over:
            raise EngineOutOfMemory(f"injected: {call.images} images do not fit")
        if self.fail_prompt is not None and any(i.request.prompt == self.fail_prompt for i in items):
            raise EngineError("injected pipeline failure")

        def counting(update: StepUpdate) -> None:
            call.steps_done = update.step
            on_step(update)
            if self.step_hook is not None:
                self.step_hook(update)  # on the engine thread, after the scheduler has the update

        def stopping() -> bool:
            call.stopped = call.stopped or should_stop()
            return call.stopped

        try:
            return self.inner.run_batch(items, counting, stopping)
        finally:
            call.returned.set()


class FlakyProxy:
    """A TCP proxy to the worker that cuts chosen connections, to test the client's retries and resume.

    `cut_events`: cut the first events stream after its first response chunk.
    `cut_submit_reply`: forward the first POST to the worker but cut the connection before the reply.
    """

    def __init__(self, target_port: int, *, cut_events: bool = False, cut_submit_reply: bool = False) -> None:
        self._target = target_port
        self.cut_events = cut_events
        self.cut_submit_reply = cut_submit_reply
        self.cuts = 0
        self._server: asyncio.Server | None = None
        self._tasks: set[asyncio.Task[None]] = set()

    @property
    def url(self) -> str:
        assert self._server is not None
        port = self._server.sockets[0].getsockname()[1]
        return f"http://127.0.0.1:{port}"

    async def __aenter__(self) -> FlakyProxy:
        self._server = await asyncio.start_server(self._handle, "127.0.0.1", 0)
        return self

    async def __aexit__(self, *exc: object) -> None:
        assert self._server is not None
        self._server.close()
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)

    async def _handle(self, creader: asyncio.StreamReader, cwriter: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        self._tasks.add(task)
        sreader, swriter = await asyncio.open_connection("127.0.0.1", self._target)
        try:
            head = _one_request_per_connection(await creader.readuntil(b"\r\n\r\n"))
            cut_events = self.cut_events and b"/events" in head.split(b"\r\n")[0]
            cut_submit = self.cut_submit_reply and head.startswith(b"POST /v1/jobs ")
            swriter.write(head)
            upstream = asyncio.create_task(_pipe(creader, swriter))
            if cut_submit:
                self.cut_submit_reply = False
                await sreader.read(1)  # the worker has taken the job and started replying
                self.cuts += 1
                return
            if cut_events:
                self.cut_events = False
                cwriter.write(await sreader.read(65536))
                await cwriter.drain()
                await asyncio.sleep(0.05)
                self.cuts += 1
                return
            await _pipe(sreader, cwriter)
            upstream.cancel()
        except (ConnectionError, asyncio.IncompleteReadError, asyncio.CancelledError):
            pass
        finally:
            for w in (cwriter, swriter):
                w.close()
            self._tasks.discard(task)


def _one_request_per_connection(head: bytes) -> bytes:
    """Ask the worker to close after this reply, so each request gets its own proxied connection."""
    lines = [ln for ln in head.split(b"\r\n") if ln and not ln.lower().startswith(b"connection:")]
    return b"\r\n".join([*lines, b"Connection: close"]) + b"\r\n\r\n"


async def _pipe(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    with contextlib.suppress(ConnectionError):
        while data := await reader.read(65536):
            writer.write(data)
            await writer.drain()


@contextlib.asynccontextmanager
async def worker_without_info() -> AsyncIterator[str]:
    """A worker from before `GET /v1/info`, as the wire sees it: `/healthz` answers, `/v1/info` is an
    unknown route (`404 not_found`, the body the worker's error middleware sends). Yields its URL."""

    async def healthz(request: web.Request) -> web.Response:
        return web.json_response({"ok": True})

    async def unknown(request: web.Request) -> web.Response:
        return web.json_response({"code": "not_found", "message": "Not Found"}, status=404)

    app = web.Application()
    app.router.add_get("/healthz", healthz)
    app.router.add_route("*", "/{tail:.*}", unknown)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    try:
        yield f"http://127.0.0.1:{runner.addresses[0][1]}"
    finally:
        await runner.cleanup()


async def collect(events: AsyncIterator[object]) -> list[object]:
    return [e async for e in events]


@pytest.fixture(scope="module")
def tiny_engine(tiny_model_dir: Path, tiny_edit_model_dir: Path) -> Engine:
    """The real engine over the tiny pipelines, loaded once per test module: 2 steps, no guidance."""
    from inference.engine import DiffusersEngine

    settings = EngineSettings(
        model=str(tiny_model_dir),
        edit_model=str(tiny_edit_model_dir),
        device="cpu",
        cpu_threads=1,
        preview_interval_s=0.0,  # previews on every step, so tests see them (the defaults make none)
        preview_min_steps=1,
        defaults=ModelDefaults(steps=2, guidance=0.0, width=64, height=64, img2img_strength=0.75),
    )
    return DiffusersEngine.load(settings)
