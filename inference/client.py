"""The typed async client for the worker's `/v1` RPC, as the bot uses it.

Retries with backoff only where a call is safe to repeat: reads, cancel (cancelling twice is cancelling
once) and submit (it carries an idempotency key, so a resubmit returns the same job). An event stream
that drops is resumed from the last event seen.
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from types import TracebackType
from typing import Any, Self

import aiohttp
from pydantic import ValidationError

from inference.protocol import (
    API_PREFIX,
    ErrorBody,
    ErrorCode,
    EventType,
    JobEvent,
    JobInfo,
    JobRequest,
    WorkerInfo,
    WorkerStats,
)

log = logging.getLogger(__name__)

_FINAL_EVENTS = frozenset({EventType.DONE, EventType.FAILED, EventType.CANCELLED})


class WorkerError(Exception):
    """Any failure talking to the worker."""


class WorkerUnavailable(WorkerError):
    """The worker could not be reached, timed out, or is shutting down; try again later or elsewhere."""

    def __init__(self, message: str, code: ErrorCode | None = None) -> None:
        super().__init__(message)
        self.code = code


class WorkerRejected(WorkerError):
    """The worker refused the request; `code` says why (see `ErrorCode`)."""

    def __init__(self, code: ErrorCode, message: str, field: str | None = None, status: int = 400) -> None:
        super().__init__(f"{code}: {message}")
        self.code = code
        self.message = message
        self.field = field
        self.status = status


class QueueFull(WorkerRejected):
    """A lane or per-user queue cap was reached; try again after `retry_after` seconds."""

    def __init__(self, code: ErrorCode, message: str, retry_after: float, status: int = 429) -> None:
        super().__init__(code, message, None, status)
        self.retry_after = retry_after


class JobNotFound(WorkerRejected):
    """The worker does not know the job (never existed, or expired)."""


class ResultGone(WorkerRejected):
    """The worker no longer holds this image (410 `gone`): it keeps a picture a few seconds after its first
    fetch (so a retried fetch still finds it) and drops the oldest when its result budget is full."""


@dataclass(frozen=True, slots=True)
class _Reply:
    status: int
    body: bytes


class WorkerClient:
    """`async with WorkerClient(base_url, token=...) as worker: job = await worker.submit(request)`."""

    def __init__(
        self,
        base_url: str,
        *,
        token: str | None = None,
        timeout: float = 30.0,
        connect_timeout: float = 5.0,
        retries: int = 3,
        backoff: float = 0.25,
        stream_idle_timeout: float = 60.0,
    ) -> None:
        self._base = base_url.rstrip("/")
        self._headers = {"Authorization": f"Bearer {token}"} if token else {}
        self._timeout = aiohttp.ClientTimeout(total=timeout, connect=connect_timeout)
        self._stream_timeout = aiohttp.ClientTimeout(
            total=None, connect=connect_timeout, sock_read=stream_idle_timeout
        )
        self._retries = retries
        self._backoff = backoff
        self._session: aiohttp.ClientSession | None = None

    async def __aenter__(self) -> Self:
        self._session = aiohttp.ClientSession(headers=self._headers, timeout=self._timeout)
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.close()

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None

    @property
    def session(self) -> aiohttp.ClientSession:
        if self._session is None:
            raise RuntimeError("use `async with WorkerClient(...)` before calling it")
        return self._session

    # --- the RPC ---

    async def submit(self, request: JobRequest, image: bytes | None = None) -> JobInfo:
        """Submit a job (with its input image for img2img/edit); safe to retry thanks to its key."""
        if image is None:
            body = request.model_dump_json(exclude_none=True).encode()
            reply = await self._call("POST", f"{API_PREFIX}/jobs", retry=True, data=lambda: body,
                                     content_type="application/json")  # fmt: skip
        else:
            reply = await self._call("POST", f"{API_PREFIX}/jobs", retry=True,
                                     data=lambda: _multipart(request, image))  # fmt: skip
        return JobInfo.model_validate_json(reply.body)

    async def get(self, job_id: str) -> JobInfo:
        reply = await self._call("GET", f"{API_PREFIX}/jobs/{job_id}", retry=True)
        return JobInfo.model_validate_json(reply.body)

    async def cancel(self, job_id: str) -> JobInfo:
        reply = await self._call("DELETE", f"{API_PREFIX}/jobs/{job_id}", retry=True)
        return JobInfo.model_validate_json(reply.body)

    async def image(self, job_id: str, n: int) -> bytes:
        """The job's `n`-th image (0-based), in the format the job asked for (PNG unless it asked another
        or the worker is set to another). Raises `ResultGone` once the worker has dropped it: fetch a
        job's images as soon as it is done; a retry within seconds of a fetch still finds the image."""
        return (await self._call("GET", f"{API_PREFIX}/jobs/{job_id}/images/{n}", retry=True)).body

    async def preview(self, job_id: str) -> bytes | None:
        """The latest small preview (JPEG) of a running job's first image, or None if there is none yet."""
        reply = await self._call("GET", f"{API_PREFIX}/jobs/{job_id}/preview", retry=True)
        return reply.body if reply.status == 200 else None

    async def stats(self) -> WorkerStats:
        reply = await self._call("GET", f"{API_PREFIX}/stats", retry=True)
        return WorkerStats.model_validate_json(reply.body)

    async def info(self) -> WorkerInfo | None:
        """The worker's model and its defaults; None from a worker too old to advertise them."""
        try:
            reply = await self._call("GET", f"{API_PREFIX}/info", retry=True)
        except WorkerRejected as exc:
            if exc.status == 404:
                return None
            raise
        return WorkerInfo.model_validate_json(reply.body)

    async def health(self) -> bool:
        """Whether the worker process answers at all."""
        try:
            await self._call("GET", "/healthz", retry=False)
        except WorkerError:
            return False
        return True

    async def ready(self) -> bool:
        """Whether the worker has its model loaded and takes jobs."""
        try:
            await self._call("GET", "/readyz", retry=False)
        except WorkerError:
            return False
        return True

    async def events(self, job_id: str) -> AsyncIterator[JobEvent]:
        """The job's events until it ends: its current state first, then live ones.

        A dropped stream is reopened from the last event seen, with backoff, up to `retries` times in a
        row; the worker replays what was missed, so no event is seen twice.
        """
        after, failures = 0, 0
        while True:
            try:
                async for event in self._stream(job_id, after):
                    after, failures = event.seq, 0
                    yield event
                    if event.type in _FINAL_EVENTS:
                        return
            except WorkerUnavailable as exc:
                failures += 1
                if failures > self._retries:
                    raise
                log.info("event stream for %s dropped (%s); resuming after %d", job_id, exc, after)
                await asyncio.sleep(self._backoff * 2 ** (failures - 1))
                continue
            failures += 1  # the stream ended without a final event: the worker closed it
            if failures > self._retries:
                raise WorkerUnavailable(f"the event stream of job {job_id} keeps closing early")

    async def wait(self, job_id: str) -> JobInfo:
        """Follow the job's events until it ends; return its final state."""
        async for event in self.events(job_id):
            if event.type in _FINAL_EVENTS and event.job is not None:
                return event.job
        return await self.get(job_id)

    # --- plumbing ---

    async def _stream(self, job_id: str, after: int) -> AsyncIterator[JobEvent]:
        url = f"{self._base}{API_PREFIX}/jobs/{job_id}/events"
        try:
            async with self.session.get(url, params={"after": after}, timeout=self._stream_timeout) as resp:
                if resp.status != 200:
                    raise _error(resp.status, await resp.read(), resp.headers.get("Retry-After"))
                async for raw in resp.content:
                    line = raw.strip()
                    if line:  # empty lines are keep-alives
                        yield JobEvent.model_validate_json(line)
        except (aiohttp.ClientConnectionError, aiohttp.ClientPayloadError, TimeoutError) as exc:
            raise WorkerUnavailable(f"event stream failed: {type(exc).__name__}: {exc}") from exc

    async def _call(
        self,
        method: str,
        path: str,
        *,
        retry: bool,
        data: Callable[[], Any] | None = None,
        content_type: str | None = None,
    ) -> _Reply:
        attempts = self._retries + 1 if retry else 1
        for attempt in range(attempts):
            try:
                return await self._once(method, path, data, content_type)
            except WorkerUnavailable as exc:
                if attempt + 1 >= attempts:
                    raise
                delay = self._backoff * 2**attempt
                log.info("%s %s: %s; retrying in %.2fs", method, path, exc, delay)
                await asyncio.sleep(delay)
        raise AssertionError("unreachable")

    async def _once(
        self, method: str, path: str, data: Callable[[], Any] | None, content_type: str | None
    ) -> _Reply:
        headers = {"Content-Type": content_type} if content_type else None
        try:
            body = data() if data is not None else None
            # A multipart upload (an image) asks first: a worker that is full or refuses the size answers
            # before the image is sent.
            expect = isinstance(body, aiohttp.FormData)
            async with self.session.request(
                method, self._base + path, data=body, headers=headers, expect100=expect
            ) as resp:
                payload = await resp.read()
                if resp.status >= 400:
                    raise _error(resp.status, payload, resp.headers.get("Retry-After"))
                return _Reply(resp.status, payload)
        except (aiohttp.ClientConnectionError, aiohttp.ClientPayloadError, TimeoutError) as exc:
            raise WorkerUnavailable(f"{method} {path} failed: {type(exc).__name__}: {exc}") from exc


def _multipart(request: JobRequest, image: bytes) -> aiohttp.FormData:
    form = aiohttp.FormData()
    form.add_field("job", request.model_dump_json(exclude_none=True), content_type="application/json")
    form.add_field("image", image, content_type="application/octet-stream", filename="image")
    return form


def _error(status: int, payload: bytes, retry_after_header: str | None) -> WorkerError:
    """The typed error for a refused call."""
    try:
        body = ErrorBody.model_validate_json(payload)
    except (ValidationError, json.JSONDecodeError):
        body = None
    if body is None or status in (502, 503, 504):
        text = payload[:200].decode(errors="replace")
        return WorkerUnavailable(
            f"HTTP {status}: {body.message if body else text}", body.code if body else None
        )
    if status == 429:
        retry_after = body.retry_after or _seconds(retry_after_header) or 1.0
        return QueueFull(body.code, body.message, retry_after, status)
    if status == 404 and body.code is ErrorCode.NOT_FOUND:
        return JobNotFound(body.code, body.message, body.field, status)
    if status == 410 and body.code is ErrorCode.GONE:
        return ResultGone(body.code, body.message, body.field, status)
    return WorkerRejected(body.code, body.message, body.field, status)


def _seconds(header: str | None) -> float | None:
    try:
        return float(header) if header else None
    except ValueError:
        return None
