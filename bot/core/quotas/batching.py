"""Quota calls that arrive together go to the database together: the hot path's batching.

While one batch of reserves (or of commits and refunds) runs its transaction, new calls queue; the next
batch takes all of them at once. A batch reads every call's share in one trip to the database thread
and writes all of its rows in one more, where one call at a time would pay those trips each.
"""

from __future__ import annotations

import asyncio
import collections
from collections.abc import Awaitable, Callable, Hashable
from typing import Generic, TypeVar

Q = TypeVar("Q")
A = TypeVar("A")


class Coalescer(Generic[Q, A]):
    """Runs queued calls in batches through `run`, which returns one outcome per call, in order: the
    value to return or the exception to raise.

    A batch takes at most `limit` calls and at most one per `key`: a call whose key is already in the
    batch waits for the next one (so two reserves of one member never share a batch, and a second
    settle of one job sees the first's result). A caller cancelled before its batch starts runs nothing;
    one cancelled while its batch runs is not told the outcome, which stands (a reservation nobody
    stored a job for is refunded by `QuotaService.refund_jobless`).
    """

    def __init__(
        self,
        run: Callable[[list[Q]], Awaitable[list[A | Exception]]],
        *,
        key: Callable[[Q], Hashable],
        limit: int = 64,
    ) -> None:
        self._run = run
        self._key = key
        self._limit = limit
        self._queue: collections.deque[tuple[Q, asyncio.Future[A]]] = collections.deque()
        self._drainer: asyncio.Task[None] | None = None

    async def submit(self, call: Q) -> A:
        future: asyncio.Future[A] = asyncio.get_running_loop().create_future()
        self._queue.append((call, future))
        if self._drainer is None or self._drainer.done():
            self._drainer = asyncio.create_task(self._drain(), name="brushfire-quota-batch")
        return await future

    def _take(self) -> list[tuple[Q, asyncio.Future[A]]]:
        batch: list[tuple[Q, asyncio.Future[A]]] = []
        keys: set[Hashable] = set()
        later: list[tuple[Q, asyncio.Future[A]]] = []
        while self._queue and len(batch) < self._limit:
            call, future = entry = self._queue.popleft()
            if future.cancelled():
                continue
            key = self._key(call)
            if key in keys:
                later.append(entry)
            else:
                keys.add(key)
                batch.append(entry)
        self._queue.extendleft(reversed(later))  # back at the front, in their order
        return batch

    async def _drain(self) -> None:
        while self._queue:
            batch = self._take()
            if not batch:
                continue
            try:
                outcomes = await self._run([call for call, _ in batch])
            except BaseException as exc:  # the batch's transaction failed: every call in it fails
                for _, future in batch:
                    if not future.done():
                        future.set_exception(exc)
                if not isinstance(exc, Exception):
                    raise
                continue
            for (_, future), outcome in zip(batch, outcomes, strict=True):
                if future.done():
                    continue
                if isinstance(outcome, Exception):
                    future.set_exception(outcome)
                else:
                    future.set_result(outcome)
