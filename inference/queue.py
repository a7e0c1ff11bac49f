"""The worker's queue: a submitted job's record, the slices batches are cut into, and one fair lane."""

from __future__ import annotations

import asyncio
import hashlib
from collections import OrderedDict, deque
from dataclasses import dataclass, field

from PIL import Image

from inference.engine_api import BatchItem, BatchKey, ResolvedRequest
from inference.output import ServedImage
from inference.protocol import ErrorBody, JobEvent, JobInfo, JobRequest
from inference.vocabulary import JobStatus, Lane, WorkerJobId


@dataclass(frozen=True, slots=True, kw_only=True)
class Submission(ResolvedRequest):
    """A validated job ready to queue: its resolved request, and what tells a resubmit from a conflict."""

    fingerprint: str  # digest of the request and image, to tell an idempotent resubmit from a conflict

    @property
    def input_bytes(self) -> int:
        """Bytes of client input this queued job holds (its compressed input image)."""
        return len(self.init_image.data) if self.init_image is not None else 0


@dataclass(eq=False, slots=True)
class Job:
    """One job's record, owned by the event loop."""

    id: WorkerJobId
    sub: Submission
    model: str
    created_at: float
    status: JobStatus = JobStatus.QUEUED
    started_at: float | None = None
    finished_at: float | None = None
    finished_mono: float | None = None
    step: int = 0
    total_steps: int = 0
    images: list[ServedImage | None] = field(default_factory=list)  # while running; then in the store
    nsfw: list[bool] = field(default_factory=list)  # each image's flag, once it succeeded
    error: ErrorBody | None = None
    preview: Image.Image | None = None  # encoded only when someone asks for it
    preview_jpeg: bytes | None = None
    seq: int = 0
    durable: list[JobEvent] = field(default_factory=list)
    latest: JobEvent | None = None  # the latest position/progress/preview event
    listeners: set[asyncio.Queue[JobEvent | None]] = field(default_factory=set)

    @property
    def request(self) -> JobRequest:
        return self.sub.request

    @property
    def key(self) -> BatchKey:
        return self.sub.key

    @property
    def fingerprint(self) -> str:
        return self.sub.fingerprint

    @property
    def count(self) -> int:
        return self.sub.request.count


@dataclass(frozen=True, slots=True)
class FinishedJob:
    """What the worker keeps of a job once it has ended: what a late client can still ask for and no more.

    Its final state is the final event, kept as the JSON line a stream would send (it holds the whole
    `JobInfo`); the key and fingerprint answer a resubmit; status and count answer a fetch. About 0.6 KB
    against the 5 KB of the live record's models, so `max_finished_jobs` records stay small
    (`tests/inference/test_scheduler.py` measures it).
    """

    id: WorkerJobId
    idempotency_key: str
    fingerprint: str
    status: JobStatus
    count: int
    finished_mono: float
    final_event: bytes

    @classmethod
    def of(cls, job: Job) -> FinishedJob:
        """The tombstone of a job that has just ended (its final event is the last durable one)."""
        final = job.durable[-1]
        assert job.status.is_final and job.finished_mono is not None
        return cls(
            id=job.id, idempotency_key=job.request.idempotency_key, fingerprint=job.fingerprint,
            status=job.status, count=job.count, finished_mono=job.finished_mono,
            final_event=final.model_dump_json(exclude_none=True).encode(),
        )  # fmt: skip

    def event(self) -> JobEvent:
        return JobEvent.model_validate_json(self.final_event)

    def info(self) -> JobInfo:
        info = self.event().job
        assert info is not None  # a final event always carries the job's state
        return info


# A job the worker knows: still queued or running (the live record), or ended (its tombstone).
KnownJob = Job | FinishedJob


@dataclass(frozen=True, slots=True)
class Slice:
    """Some of one job's images (`count` of them from `offset`): the unit a batch is made of."""

    job: Job
    offset: int
    count: int

    def item(self) -> BatchItem:
        sub = self.job.sub
        request = sub.request
        if self.count != request.count:
            request = request.model_copy(update={"count": self.count})
        return BatchItem(
            job_id=self.job.id, request=request, seed=sub.seed + self.offset, width=sub.width,
            height=sub.height, steps=sub.steps, guidance=sub.guidance, init_image=sub.init_image,
        )  # fmt: skip


class ByteBudget:
    """Bytes of client input the worker may hold at once: bodies being read plus queued jobs' images.

    Owned by the event loop (no lock): `take` and `give` are called only from it.
    """

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.used = 0

    def take(self, n: int) -> bool:
        """Hold `n` more bytes if they fit; False (holding nothing) if they do not."""
        if self.used + n > self.limit:
            return False
        self.used += n
        return True

    def give(self, n: int) -> None:
        self.used = max(0, self.used - n)


def halves(slices: list[Slice]) -> tuple[list[Slice], list[Slice]]:
    """Split a batch into two with half the images each, cutting a job's images apart if need be."""
    total = sum(s.count for s in slices)
    first: list[Slice] = []
    second: list[Slice] = []
    room = total // 2
    for s in slices:
        take = min(room, s.count)
        if take:
            first.append(Slice(s.job, s.offset, take))
        if s.count - take:
            second.append(Slice(s.job, s.offset + take, s.count - take))
        room -= take
    return first, second


class FairLane:
    """One lane's queue: a FIFO per user, served round-robin across users."""

    def __init__(self) -> None:
        self.users: OrderedDict[str, deque[Job]] = OrderedDict()

    def __len__(self) -> int:
        return sum(len(q) for q in self.users.values())

    def push(self, job: Job) -> None:
        self.users.setdefault(job.request.user, deque()).append(job)

    def remove(self, job: Job) -> None:
        q = self.users.get(job.request.user)
        if q is not None and job in q:
            q.remove(job)
            if not q:
                del self.users[job.request.user]

    def fair_order(self) -> list[Job]:
        """Queued jobs in the order they would be served: one per user per round."""
        queues = list(self.users.values())
        order: list[Job] = []
        depth = max((len(q) for q in queues), default=0)
        for r in range(depth):
            order.extend(q[r] for q in queues if len(q) > r)
        return order

    def take_batch(self, max_images: int) -> list[Job]:
        """Take the next job and the compatible jobs after it in fair order, up to `max_images`."""
        order = self.fair_order()
        head = order[0]
        batch, images = [head], head.request.count
        for job in order[1:]:
            if job.key == head.key and images + job.request.count <= max_images:
                batch.append(job)
                images += job.request.count
        for job in batch:
            self.remove(job)
        # Users served in this batch move to the back of the round, in the order they were served.
        for user in dict.fromkeys(j.request.user for j in batch):
            if user in self.users:
                self.users.move_to_end(user)
        return batch

    def clear(self) -> list[Job]:
        jobs = [j for q in self.users.values() for j in q]
        self.users.clear()
        return jobs


class TwoLaneQueue:
    """The `fast` and `relax` lanes: fast first, relax when fast is empty or its reserved share is due."""

    def __init__(self, relax_share: float) -> None:
        self.lanes = {Lane.FAST: FairLane(), Lane.RELAX: FairLane()}
        self._relax_share = relax_share
        self._relax_credit = 0.0

    def push(self, job: Job) -> None:
        self.lanes[job.request.lane].push(job)

    def remove(self, job: Job) -> None:
        self.lanes[job.request.lane].remove(job)

    def order(self) -> list[Job]:
        """Every queued job in the order it would be served, fast lane first."""
        return self.lanes[Lane.FAST].fair_order() + self.lanes[Lane.RELAX].fair_order()

    def queued_for(self, user: str) -> list[Job]:
        return [j for lane in self.lanes.values() for j in lane.users.get(user, ())]

    def take_batch(self, max_images: int) -> list[Job] | None:
        """The next batch: from relax once its credit (its share of the turns) adds up to one."""
        fast, relax = self.lanes[Lane.FAST], self.lanes[Lane.RELAX]
        if fast.users and relax.users:
            self._relax_credit += self._relax_share
            lane = fast
            if self._relax_credit >= 1.0:
                self._relax_credit -= 1.0
                lane = relax
        elif fast.users or relax.users:
            lane = fast if fast.users else relax
        else:
            return None
        return lane.take_batch(max_images)

    def clear(self) -> list[Job]:
        return [job for lane in self.lanes.values() for job in lane.clear()]


def job_fingerprint(request: JobRequest, image_digest: str | None) -> str:
    """What makes two submissions the same job, for idempotency."""
    h = hashlib.sha256(request.model_dump_json().encode())
    h.update((image_digest or "").encode())
    return h.hexdigest()
