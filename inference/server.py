"""The worker's aiohttp RPC server: the `/v1` routes over the scheduler, auth, health, stats and metrics.

Reading and checking a submission lives in `inference.intake` (shared with other ingresses), the
Prometheus text in `inference.metrics`. (About 450 lines: the routes share the app's state and auth, and
the process setup at the end is what serves them.)
"""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import hmac
import ipaddress
import logging
import os
import re
import signal
import sys
from collections import Counter
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass

from aiohttp import web
from pydantic import BaseModel

from inference.engine_api import Engine
from inference.intake import MAX_JOB_JSON_BYTES, prepare_submission, read_submission
from inference.metrics import render_metrics
from inference.openapi import openapi_document
from inference.protocol import API_PREFIX, ErrorCode, EventType, ProtocolError, WorkerInfo
from inference.scheduler import Scheduler
from inference.settings import EngineSettings, WorkerSettings
from inference.vocabulary import JobKind

log = logging.getLogger(__name__)

SETTINGS = web.AppKey("settings", WorkerSettings)
SCHEDULER = web.AppKey("scheduler", Scheduler)
ENGINE = web.AppKey("engine", Engine)
HTTP_COUNTS = web.AppKey("http_counts", Counter[tuple[str, str, int]])
OPENAPI = web.AppKey("openapi", dict)

NDJSON = "application/x-ndjson"
FINAL_EVENTS = frozenset({EventType.DONE, EventType.FAILED, EventType.CANCELLED})
_M_MMAP_THRESHOLD = -3  # from glibc's <malloc.h>
_M_ARENA_MAX = -8
HEARTBEAT_S = 15.0  # an empty line on an idle event stream, so proxies and clients keep it open

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


class WorkerConfigError(ValueError):
    """The worker's settings cannot be served as given (e.g. a public bind without a token)."""


# --- middleware ---


def error_response(exc: ProtocolError) -> web.Response:
    headers = {"Retry-After": str(max(1, round(exc.retry_after)))} if exc.retry_after else None
    return web.json_response(
        exc.body().model_dump(mode="json", exclude_none=True), status=exc.status, headers=headers
    )


_HTTP_CODES = {
    401: ErrorCode.UNAUTHORIZED,
    404: ErrorCode.NOT_FOUND,
    408: ErrorCode.REQUEST_TIMEOUT,
    413: ErrorCode.BODY_TOO_LARGE,
}


@web.middleware
async def errors_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Every refusal becomes a JSON `ErrorBody`; user input never causes a 500."""
    try:
        response = await handler(request)
    except ProtocolError as exc:
        response = error_response(exc)
    except web.HTTPException as exc:
        if exc.status < 400:
            raise
        code = _HTTP_CODES.get(exc.status, ErrorCode.BAD_REQUEST)
        response = error_response(ProtocolError(code, exc.reason, status=exc.status))
    except Exception:
        log.exception("unhandled error on %s %s", request.method, request.path)
        response = error_response(ProtocolError(ErrorCode.INTERNAL, "internal error", status=500))
    route = request.match_info.route.resource
    name = route.canonical if route is not None else "unmatched"
    request.app[HTTP_COUNTS][(request.method, name, response.status)] += 1
    return response


def max_body_bytes(settings: WorkerSettings) -> int:
    """The largest request body the worker reads: one image part, one job part, multipart framing."""
    return settings.max_image_bytes + MAX_JOB_JSON_BYTES + 64 * 1024


@web.middleware
async def body_limit_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Refuse a body by its declared size before any of it is read."""
    limit = max_body_bytes(request.app[SETTINGS])
    if request.content_length is not None and request.content_length > limit:
        raise _too_large(request.content_length, limit)
    return await handler(request)


@web.middleware
async def auth_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    token = request.app[SETTINGS].token
    if token and request.path != "/healthz":
        given = request.headers.get("Authorization", "")
        if not hmac.compare_digest(given.encode(), f"Bearer {token}".encode()):
            raise ProtocolError(
                ErrorCode.UNAUTHORIZED, "missing or wrong `Authorization: Bearer` token", status=401
            )
    return await handler(request)


# --- handlers ---


def _json(model: BaseModel, status: int = 200) -> web.Response:
    return web.Response(text=model.model_dump_json(), status=status, content_type="application/json")


async def submit_job(request: web.Request) -> web.Response:
    """Queue a job. Its body is held against the worker's input budget, by declared size, before a
    byte of it is read; the queued job then holds only its compressed image against the same budget."""
    scheduler = request.app[SCHEDULER]
    if not scheduler.accepting:
        raise ProtocolError(ErrorCode.SHUTTING_DOWN, "the worker is shutting down", status=503)
    settings = request.app[SETTINGS]
    held = request.content_length if request.content_length is not None else max_body_bytes(settings)
    if not scheduler.memory.take(held):
        raise scheduler.memory_full()
    try:
        try:
            async with asyncio.timeout(settings.body_timeout_s):
                job_request, image = await read_submission(request, settings)
        except TimeoutError:
            raise ProtocolError(
                ErrorCode.REQUEST_TIMEOUT,
                f"the request body did not arrive within {settings.body_timeout_s:g} s",
                status=408,
            ) from None
        sub = await prepare_submission(
            job_request, image, settings, scheduler.engine, decode_slots=scheduler.decode_slots
        )
    finally:
        scheduler.memory.give(held)  # no await from here to submit(): the job takes its share at once
    job, created = scheduler.submit(sub)
    return _json(scheduler.info(job), status=201 if created else 200)


async def expect_job_body(request: web.Request) -> web.StreamResponse | None:
    """`Expect: 100-continue` on POST /v1/jobs: a body too large, or one the input budget cannot hold now,
    is refused before the client sends it; otherwise the client is told to go on."""
    scheduler, settings = request.app[SCHEDULER], request.app[SETTINGS]
    declared = request.content_length
    refusal = None
    if request.headers.get("Expect", "").lower() != "100-continue":
        refusal = ProtocolError(
            ErrorCode.BAD_REQUEST, "only `Expect: 100-continue` is understood", status=417
        )
    elif declared is not None and declared > max_body_bytes(settings):
        refusal = _too_large(declared, max_body_bytes(settings))
    elif declared is not None and scheduler.memory.used + declared > scheduler.memory.limit:
        refusal = scheduler.memory_full()
    if refusal is not None:
        response = error_response(refusal)
        response.force_close()  # the unsent body must not be read as the next request
        return response
    await request.writer.write(b"HTTP/1.1 100 Continue\r\n\r\n")
    request.writer.output_size = 0  # the 100 is not part of the response proper
    return None


def _too_large(declared: int, limit: int) -> ProtocolError:
    return ProtocolError(
        ErrorCode.BODY_TOO_LARGE, f"the body is {declared} bytes; the limit is {limit}", status=413
    )


async def get_job(request: web.Request) -> web.Response:
    scheduler = request.app[SCHEDULER]
    return _json(scheduler.info(scheduler.get(request.match_info["job_id"])))


async def cancel_job(request: web.Request) -> web.Response:
    scheduler = request.app[SCHEDULER]
    return _json(scheduler.info(scheduler.cancel(request.match_info["job_id"])))


class _EventStream(web.StreamResponse):
    # Hold the headers back until the first events, so they leave in one packet: on a busy worker every
    # send() costs the event loop, and a job's stream carries only a handful of lines.
    _send_headers_immediately = False


async def job_events(request: web.Request) -> web.StreamResponse:
    """NDJSON stream of the job's events; `?after=SEQ` resumes after the last event a client saw."""
    scheduler = request.app[SCHEDULER]
    job_id = request.match_info["job_id"]
    scheduler.get(job_id)  # a 404 before the stream starts
    after = _int_query(request, "after", 0)
    response = _EventStream(headers={"Content-Type": NDJSON, "Cache-Control": "no-store"})
    await response.prepare(request)
    with contextlib.suppress(ConnectionResetError):
        batches = scheduler.event_batches(job_id, after, heartbeat=HEARTBEAT_S)
        async with contextlib.aclosing(batches):
            async for batch in batches:
                data = b"".join(e.model_dump_json(exclude_none=True).encode() + b"\n" for e in batch)
                if batch and batch[-1].type in FINAL_EVENTS:
                    await response.write_eof(data)  # the last line and the end of the stream together
                    return response
                await response.write(data or b"\n")  # an empty line is a keep-alive
        await response.write_eof()
    return response


async def job_image(request: web.Request) -> web.Response:
    scheduler = request.app[SCHEDULER]
    n = _int_path(request, "n")
    image = scheduler.image(request.match_info["job_id"], n)
    return web.Response(body=image.data, content_type=image.media_type)


async def job_preview(request: web.Request) -> web.Response:
    preview = request.app[SCHEDULER].preview(request.match_info["job_id"])
    if preview is None:
        return web.Response(status=204)
    return web.Response(body=preview, content_type="image/jpeg", headers={"Cache-Control": "no-store"})


async def stats(request: web.Request) -> web.Response:
    return _json(request.app[SCHEDULER].stats())


async def info(request: web.Request) -> web.Response:
    return _json(worker_info(request.app[ENGINE]))


def worker_info(engine: Engine) -> WorkerInfo:
    """What this worker advertises about its model, so a bot need not be told its defaults by hand."""
    return WorkerInfo(
        model=engine.model_name,
        defaults=engine.model_defaults,
        has_edit_model=engine.has_edit_model,
        can_inpaint=engine.can_inpaint,
        models=engine.served_models,
        upscale_scales=upscale_scales(engine),
    )


def upscale_scales(engine: Engine) -> dict[str, int]:
    """Each served model's upscaler factor, for the models that have one."""
    scales = {}
    for name in engine.served_models:
        model = None if name == engine.model_name else name
        scale = engine.defaults(JobKind.UPSCALE, model).scale
        if scale > 1:
            scales[name] = scale
    return scales


async def openapi(request: web.Request) -> web.Response:
    return web.json_response(request.app[OPENAPI])


async def healthz(request: web.Request) -> web.Response:
    return web.json_response({"ok": True})


async def readyz(request: web.Request) -> web.Response:
    if not request.app[SCHEDULER].accepting:
        raise ProtocolError(ErrorCode.SHUTTING_DOWN, "the worker is shutting down", status=503)
    return web.json_response({"ready": True, "model": request.app[SCHEDULER].engine.model_name})


async def metrics(request: web.Request) -> web.Response:
    text = render_metrics(request.app[SCHEDULER], request.app[HTTP_COUNTS])
    return web.Response(text=text, content_type="text/plain", charset="utf-8", headers={"X-Format": "0.0.4"})


_WHOLE_NUMBER = re.compile(r"[0-9]{1,18}")  # ASCII digits only (str.isdigit takes "²"), within int64


def _int_query(request: web.Request, name: str, default: int) -> int:
    raw = request.query.get(name)
    if raw is None:
        return default
    if not _WHOLE_NUMBER.fullmatch(raw):
        raise ProtocolError(
            ErrorCode.INVALID_FIELD, f"{name} must be a whole number of at most 18 digits", field=name
        )
    return int(raw)


def _int_path(request: web.Request, name: str) -> int:
    raw = request.match_info[name]
    if not _WHOLE_NUMBER.fullmatch(raw) or len(raw) > 6:
        raise ProtocolError(ErrorCode.NOT_FOUND, f"no image {raw[:20]!r}", status=404, field=name)
    return int(raw)


# --- the application ---


def create_app(settings: WorkerSettings, engine: Engine) -> web.Application:
    """The worker's aiohttp application over a loaded engine; the scheduler lives in its cleanup_ctx."""
    app = web.Application(
        client_max_size=max_body_bytes(settings),
        middlewares=[errors_middleware, body_limit_middleware, auth_middleware],
    )
    app[SETTINGS] = settings
    app[ENGINE] = engine
    app[SCHEDULER] = Scheduler(engine, settings)
    app[HTTP_COUNTS] = Counter()
    app[OPENAPI] = openapi_document()
    app.cleanup_ctx.append(_scheduler_ctx)
    p = API_PREFIX
    app.router.add_post(f"{p}/jobs", submit_job, expect_handler=expect_job_body)
    app.router.add_get(f"{p}/jobs/{{job_id}}", get_job)
    app.router.add_delete(f"{p}/jobs/{{job_id}}", cancel_job)
    app.router.add_post(f"{p}/jobs/{{job_id}}/cancel", cancel_job)
    app.router.add_get(f"{p}/jobs/{{job_id}}/events", job_events)
    app.router.add_get(f"{p}/jobs/{{job_id}}/images/{{n}}", job_image)
    app.router.add_get(f"{p}/jobs/{{job_id}}/preview", job_preview)
    app.router.add_get(f"{p}/stats", stats)
    app.router.add_get(f"{p}/info", info)
    app.router.add_get(f"{p}/openapi.json", openapi)
    app.router.add_get("/metrics", metrics)
    app.router.add_get("/healthz", healthz)
    app.router.add_get("/readyz", readyz)
    return app


async def _scheduler_ctx(app: web.Application) -> AsyncIterator[None]:
    scheduler = app[SCHEDULER]
    await scheduler.start()
    yield
    await scheduler.shutdown()


def check_bind(settings: WorkerSettings) -> None:
    """Refuse to serve a non-loopback address without a token."""
    if settings.token or is_loopback(settings.host):
        return
    raise WorkerConfigError(
        f"refusing to bind {settings.host!r} without a token: anyone who can reach it could use the GPU. "
        "Give it a token (run.py: `token` under [worker] in the config file, or BRUSHFIRE_WORKER__TOKEN; "
        "python -m inference: --token or BRUSHFIRE_WORKER_TOKEN), or bind 127.0.0.1."
    )


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False  # a hostname may resolve to anything


@dataclass(slots=True)
class RunningWorker:
    """A worker serving on a socket; `url` is its base address."""

    app: web.Application
    runner: web.AppRunner
    url: str

    async def stop(self) -> None:
        """Graceful shutdown: stop intake, finish the running batch (bounded), then close."""
        await self.app[SCHEDULER].shutdown()
        await self.runner.cleanup()


async def start_worker(settings: WorkerSettings, engine: Engine) -> RunningWorker:
    """Serve an already loaded engine on `settings.host:settings.port` (port 0 picks a free one)."""
    check_bind(settings)
    app = create_app(settings, engine)
    runner = web.AppRunner(
        app,
        handle_signals=False,
        access_log=None,
        # A connection gets this long to send each request's head (from connecting, or from the end of
        # the previous response) and idles no longer than this: half-sent requests do not linger.
        keepalive_timeout=settings.keepalive_timeout_s,
        lingering_time=min(settings.body_timeout_s, 10.0),  # draining an unread body after a refusal
    )
    await runner.setup()
    site = web.TCPSite(runner, settings.host, settings.port)
    await site.start()
    host, port = runner.addresses[0][:2]
    url = f"http://{host if ':' not in host else f'[{host}]'}:{port}"
    log.info("worker serving %s on %s", engine.model_name, url)
    return RunningWorker(app, runner, url)


def run_worker(worker: WorkerSettings, engine: EngineSettings, parent_pid: int | None = None) -> None:
    """Load the engine, serve until SIGINT, SIGTERM or SIGHUP (or, given `parent_pid`, until that
    process is gone), then shut down gracefully."""
    check_bind(worker)
    asyncio.run(_run(worker, engine, parent_pid))


def bound_heap(threshold: int = 1024 * 1024, arenas: int = 2) -> bool:
    """On glibc, keep the worker's heap from growing with its throughput; False elsewhere (nothing changes).

    - Allocations over `threshold` come from mmap, so a freed upload or decoded picture goes back to the
      OS at once instead of staying resident (glibc's default threshold grows to 32 MB after the first
      large free, which would keep every request-sized buffer resident after use).
    - At most `arenas` malloc arenas: glibc gives each thread that allocates (the encoder pool's, the
      engine's, the executor's) an arena of its own, up to 8 per core, and each keeps its freed memory.
      With two, the soak of `bench/gpu_rate.py` levels off tens of MB lower for no measurable CPU.
    """
    if not sys.platform.startswith("linux"):
        return False
    try:
        libc = ctypes.CDLL("libc.so.6")
        return bool(libc.mallopt(_M_MMAP_THRESHOLD, threshold)) and bool(libc.mallopt(_M_ARENA_MAX, arenas))
    except (OSError, AttributeError):
        return False


async def _watch_parent(parent_pid: int, stop: asyncio.Event) -> None:
    """Stop when the run.py that started this worker is gone (PR_SET_PDEATHSIG covers Linux; this the rest)."""
    while not stop.is_set():
        if os.getppid() != parent_pid:
            log.warning("the run.py that started this worker (pid %d) is gone; stopping", parent_pid)
            stop.set()
            return
        await asyncio.sleep(1.0)


async def _run(worker: WorkerSettings, engine_settings: EngineSettings, parent_pid: int | None) -> None:
    from inference.models import load_engine  # torch is imported only when a worker really starts

    bound_heap()  # first, before the threads that would each take an arena start
    log.info("loading the model")
    engine = await asyncio.to_thread(load_engine, engine_settings)
    running = await start_worker(worker, engine)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
        loop.add_signal_handler(sig, stop.set)
    watch = asyncio.create_task(_watch_parent(parent_pid, stop)) if parent_pid else None
    await stop.wait()
    if watch is not None:
        watch.cancel()
    log.info("shutting down: finishing the running batch, failing queued jobs")
    await running.stop()
    log.info("worker stopped")
