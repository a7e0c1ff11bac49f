"""Finished pictures waiting to be fetched, in a byte budget: the worker's memory stays level at any rate.

A picture is kept until it has been fetched, then for a short grace (so a retried fetch still finds it),
then dropped. Over the budget the oldest already-fetched pictures go first, then the oldest unfetched
ones; a fetch of a dropped picture is answered `gone`. Owned by the event loop (no lock).
"""

from __future__ import annotations

from collections import OrderedDict, deque
from collections.abc import Callable
from dataclasses import dataclass, field

from inference.output import ServedImage
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
