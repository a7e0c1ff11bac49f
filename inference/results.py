"""What the worker keeps of jobs, bounded at any rate: finished pictures in a byte budget, and every job's
record in an index where finished ones are capped by count and age.

A picture is encoded on a pool (`encode_batch`), kept until it has been fetched, then for a short grace
(so a retried fetch still finds it), then dropped. Over the budget the oldest already-fetched pictures go
first, then the oldest unfetched ones; a fetch of a dropped picture is answered `gone`. A finished job's
record is a tombstone that keeps only what a late client needs: its key, status and final event as JSON.
Owned by the event loop (no lock).
"""

from __future__ import annotations

import asyncio
from collections import OrderedDict, deque
from collections.abc import Callable
from concurrent.futures import Executor
from dataclasses import dataclass, field

from inference.engine_api import GeneratedImage
from inference.output import OutputSettings, ServedImage, encode
from inference.queue import FinishedJob, Job, KnownJob, Slice
from inference.vocabulary import WorkerJobId


@dataclass(slots=True)
class _Entry:
    images: list[ServedImage | None]
    fetched: set[int] = field(default_factory=set)


class ResultStore:
    """A job's encoded pictures, held until fetched (plus `grace_s`) within `budget_bytes`."""

    def __init__(self, budget_bytes: int, grace_s: float, monotonic: Callable[[], float]) -> None:
        self.budget_bytes = budget_bytes
        self._grace_s = grace_s
        self._monotonic = monotonic
        self._jobs: OrderedDict[WorkerJobId, _Entry] = OrderedDict()  # oldest finished first
        self._fetched: deque[tuple[float, WorkerJobId, int]] = deque()  # (drop at, job, n), in time order
        self.bytes = 0
        self.dropped_unfetched = 0

    def __len__(self) -> int:
        """Pictures held."""
        return sum(img is not None for e in self._jobs.values() for img in e.images)

    def __contains__(self, job_id: WorkerJobId) -> bool:
        return job_id in self._jobs

    def put(self, job_id: WorkerJobId, images: list[ServedImage]) -> None:
        """Hold a finished job's pictures, making room within the budget first."""
        self.expire()
        size = sum(len(i.data) for i in images)
        self._make_room(size)
        self._jobs[job_id] = _Entry(list(images))
        self.bytes += size

    def get(self, job_id: WorkerJobId, n: int) -> ServedImage | None:
        """Picture `n` of the job, or None when it is gone; the first fetch starts its grace."""
        self.expire()
        entry = self._jobs.get(job_id)
        if entry is None or entry.images[n] is None:
            return None
        if n not in entry.fetched:
            entry.fetched.add(n)
            self._fetched.append((self._monotonic() + self._grace_s, job_id, n))
        return entry.images[n]

    def drop(self, job_id: WorkerJobId) -> None:
        entry = self._jobs.pop(job_id, None)
        if entry is not None:
            self.bytes -= sum(len(i.data) for i in entry.images if i is not None)

    def expire(self) -> None:
        """Drop the fetched pictures whose grace has passed."""
        now = self._monotonic()
        while self._fetched and self._fetched[0][0] <= now:
            _, job_id, n = self._fetched.popleft()
            self._drop_one(job_id, n)

    def _drop_one(self, job_id: WorkerJobId, n: int) -> None:
        entry = self._jobs.get(job_id)
        if entry is None or entry.images[n] is None:
            return
        self.bytes -= len(entry.images[n].data)  # type: ignore[union-attr]
        entry.images[n] = None
        if all(i is None for i in entry.images):
            del self._jobs[job_id]

    def _make_room(self, size: int) -> None:
        # Fetched pictures first, soonest to expire first; then whole jobs, oldest first.
        while self.bytes + size > self.budget_bytes and self._fetched:
            _, job_id, n = self._fetched.popleft()
            self._drop_one(job_id, n)
        while self.bytes + size > self.budget_bytes and self._jobs:
            job_id, entry = next(iter(self._jobs.items()))
            self.dropped_unfetched += sum(
                i is not None and n not in entry.fetched for n, i in enumerate(entry.images)
            )
            self.drop(job_id)


class JobIndex:
    """Every job the worker knows, by id and by idempotency key. A job that ends is replaced by its
    tombstone (`FinishedJob`); tombstones are forgotten oldest first past `max_finished` or once older
    than the TTL, with their pictures."""

    def __init__(self, max_finished: int, results: ResultStore) -> None:
        self.results = results
        self._max_finished = max_finished
        self._jobs: dict[str, KnownJob] = {}
        self._by_key: dict[str, KnownJob] = {}
        self._finished: OrderedDict[WorkerJobId, FinishedJob] = OrderedDict()  # in the order they ended

    def __contains__(self, job_id: str) -> bool:
        return job_id in self._jobs

    def get(self, job_id: str) -> KnownJob | None:
        return self._jobs.get(job_id)

    def by_key(self, key: str) -> KnownJob | None:
        return self._by_key.get(key)

    def add(self, job: Job) -> None:
        self._jobs[job.id] = job
        self._by_key[job.request.idempotency_key] = job

    def finished(self, job: Job) -> FinishedJob:
        """Replace an ended job's record with its tombstone, forgetting the oldest past the cap."""
        tomb = FinishedJob.of(job)
        self._jobs[job.id] = tomb
        if self._by_key.get(tomb.idempotency_key) is job:
            self._by_key[tomb.idempotency_key] = tomb
        self._finished[job.id] = tomb
        while len(self._finished) > self._max_finished:
            self._forget(next(iter(self._finished.values())))
        return tomb

    def evict_expired(self, before: float) -> None:
        """Forget finished jobs (and their pictures and idempotency keys) that ended before `before`."""
        self.results.expire()
        while self._finished:
            tomb = next(iter(self._finished.values()))
            if tomb.finished_mono >= before:
                break
            self._forget(tomb)

    def _forget(self, tomb: FinishedJob) -> None:
        del self._finished[tomb.id]
        self._jobs.pop(tomb.id, None)
        self.results.drop(tomb.id)
        if self._by_key.get(tomb.idempotency_key) is tomb:
            del self._by_key[tomb.idempotency_key]


async def encode_batch(
    pool: Executor, output: OutputSettings, slices: list[Slice], results: list[list[GeneratedImage]]
) -> list[list[ServedImage]] | None:
    """Each live slice's pictures encoded on `pool` in the format its job asked for; None when the engine
    returned the wrong number of results. A slice already ended, or with the wrong count, gets none."""
    if len(results) != len(slices):
        return None
    loop = asyncio.get_running_loop()

    async def one(img: GeneratedImage, fmt: OutputSettings) -> ServedImage:
        data = await loop.run_in_executor(pool, encode, img.pixels, img.meta, fmt)
        return ServedImage(data, fmt.media_type, img.nsfw)

    async def mine(s: Slice, images: list[GeneratedImage]) -> list[ServedImage]:
        if s.job.status.is_final or len(images) != s.count:
            return []
        fmt = output.with_format(s.job.request.output_format)
        return list(await asyncio.gather(*(one(img, fmt) for img in images)))

    return list(await asyncio.gather(*(mine(s, imgs) for s, imgs in zip(slices, results, strict=True))))
