"""Fair two-lane job queue with dynamic batching, driving one engine from a worker thread.

Pure asyncio: the aiohttp server and any other ingress speaking the `/v1` RPC share it. The event loop
owns every job record; the engine runs in a single worker thread and reports progress back to the loop
with `call_soon_threadsafe`, so the loop keeps answering status, events and cancel while the GPU works.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import hashlib
import io
import logging
import secrets
import time
from collections import OrderedDict, deque
from collections.abc import AsyncIterator, Callable, Iterable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field

from PIL import Image

from inference.protocol import (
    BatchItem,
    BatchKey,
    EncodedImage,
    Engine,
    EngineOutOfMemory,
    ErrorBody,
    ErrorCode,
    EventType,
    GeneratedImage,
    JobEvent,
    JobInfo,
    JobKind,
    JobRequest,
    JobStatus,
    Lane,
    LaneStats,
    ProtocolError,
    ReplicaStats,
    StepUpdate,
    WorkerStats,
)
from inference.settings import WorkerSettings

log = logging.getLogger(__name__)

# Events a late subscriber must see in full; of the others only the latest is replayed.
_DURABLE_EVENTS = frozenset(
    {EventType.QUEUED, EventType.STARTED, EventType.DONE, EventType.FAILED, EventType.CANCELLED}
)
_FINAL_EVENT = {
    JobStatus.SUCCEEDED: EventType.DONE,
    JobStatus.FAILED: EventType.FAILED,
    JobStatus.CANCELLED: EventType.CANCELLED,
}
_PREVIEW_SIDE = 256
_DEFAULT_BATCH_S = 2.0  # ETA guess before any batch of a comparable shape was measured


@dataclass(frozen=True, slots=True)
class Submission:
    """A validated job ready to queue: the request with the model's defaults filled in."""

    request: JobRequest
    seed: int
    width: int
    height: int
    steps: int
    guidance: float
    init_image: EncodedImage | None  # compressed: a queued job holds bytes, not pixels
    fingerprint: str

    @property
    def input_bytes(self) -> int:
        return (
            len(self.init_image.data) if self.init_image is not None else 0
        )  # digest of the request and image, to tell an idempotent resubmit from a conflict


@dataclass(eq=False, slots=True)
class Job:
    """One job's record, owned by the event loop."""

    id: str
    sub: Submission
    model: str
    created_at: float
    status: JobStatus = JobStatus.QUEUED
    started_at: float | None = None
    finished_at: float | None = None
    finished_mono: float | None = None
    step: int = 0
    total_steps: int = 0
    images: list[GeneratedImage | None] = field(default_factory=list)
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
        sub = self.sub
        return BatchKey.of(
            sub.request, width=sub.width, height=sub.height, steps=sub.steps, guidance=sub.guidance,
            strength=sub.request.strength,
        )  # fmt: skip


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
            height=sub.height, steps=sub.steps, guidance=sub.guidance, strength=request.strength,
        )  # fmt: skip


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


class BatchTimes:
    """Measured pipeline-call times per shape, smoothed, for ETAs and Retry-After."""

    def __init__(self, alpha: float = 0.3) -> None:
        self._alpha = alpha
        self._ema: dict[tuple[tuple[JobKind, int, int, int], int], float] = {}

    def record(self, shape: tuple[JobKind, int, int, int], n: int, seconds: float) -> None:
        old = self._ema.get((shape, n))
        self._ema[(shape, n)] = seconds if old is None else old + self._alpha * (seconds - old)

    def estimate(self, shape: tuple[JobKind, int, int, int], n: int) -> float:
        exact = self._ema.get((shape, n))
        if exact is not None:
            return exact
        same = [(m, s) for (sh, m), s in self._ema.items() if sh == shape]
        if same:
            m, s = min(same, key=lambda ms: abs(ms[0] - n))
            return s * n / m  # linear in batch size: pessimistic, batching is cheaper than that
        if self._ema:
            # Scale any measurement by pixels x steps x images.
            (sh, m), s = next(iter(self._ema.items()))
            return s * _work(shape, n) / _work(sh, m)
        return _DEFAULT_BATCH_S


def _work(shape: tuple[JobKind, int, int, int], n: int) -> float:
    _, w, h, steps = shape
    return float(w * h * steps * n)


class _Lane:
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


@dataclass(eq=False, slots=True)
class _Running:
    """The batch in flight. `stop` is read from the worker thread through `should_stop`."""

    slices: list[Slice]
    started: float
    estimate: float
    stop: bool = False
    last_report: float = 0.0
    future: asyncio.Future[list[list[GeneratedImage]]] | None = None

    @property
    def jobs(self) -> list[Job]:
        return list(dict.fromkeys(s.job for s in self.slices))

    def should_stop(self) -> bool:
        return self.stop or all(j.status.is_final for j in self.jobs)


class _BatchTimeout(Exception):
    pass


class Scheduler:
    """Queues jobs in two fair lanes and runs compatible ones in batches on one engine.

    Call `start()` inside a running loop and `shutdown()` at the end. Every public method is called on
    the loop; refusals raise `ProtocolError` carrying the HTTP status and error body.
    """

    def __init__(self, engine: Engine, settings: WorkerSettings) -> None:
        self._engine = engine
        self._settings = settings
        self._lanes = {Lane.FAST: _Lane(), Lane.RELAX: _Lane()}
        self._jobs: dict[str, Job] = {}
        self._by_key: dict[str, Job] = {}
        self._runs: set[_Running] = set()  # the batches in flight, at most `batches_in_flight`
        self._batch_tasks: set[asyncio.Task[None]] = set()
        self._times = BatchTimes()
        self._relax_credit = 0.0
        self._accepting = True
        self.memory = ByteBudget(settings.input_budget_bytes)
        # One upload decoded at a time: each may be tens of MB of pixels while it is checked.
        self.decode_slots = asyncio.Semaphore(1)
        self._executor = ThreadPoolExecutor(
            max_workers=settings.batches_in_flight, thread_name_prefix="engine"
        )
        self._sweeper: asyncio.Task[None] | None = None
        self._done_images: deque[tuple[float, int]] = deque()
        self.counters: dict[JobStatus, int] = dict.fromkeys(JobStatus, 0)
        self.batches = 0
        self.batch_seconds = 0.0
        self.images_total = 0

    @property
    def engine(self) -> Engine:
        return self._engine

    @property
    def settings(self) -> WorkerSettings:
        return self._settings

    @property
    def accepting(self) -> bool:
        return self._accepting

    # --- lifecycle ---

    async def start(self) -> None:
        self._sweeper = asyncio.create_task(self._sweep(), name="scheduler-sweep")
        self._fill()

    async def shutdown(self) -> None:
        """Stop intake, fail queued jobs with `shutting_down`, let running batches finish (bounded)."""
        if not self._accepting and self._sweeper is None:
            return
        self._accepting = False
        for lane in self._lanes.values():
            for job in lane.clear():
                self._finish(job, JobStatus.FAILED, _shutting_down())
        if self._batch_tasks:
            await asyncio.wait(set(self._batch_tasks), timeout=self._settings.shutdown_grace_s)
        if self._runs:
            log.warning("running batches did not finish within the shutdown grace; stopping them")
        for run in list(self._runs):
            run.stop = True
            for job in run.jobs:
                self._finish(job, JobStatus.FAILED, _shutting_down())
        tasks = [*self._batch_tasks, *([self._sweeper] if self._sweeper else [])]
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        self._sweeper = None
        self._executor.shutdown(wait=False, cancel_futures=True)

    # --- intake ---

    def submit(self, sub: Submission) -> tuple[Job, bool]:
        """Queue a job; return it and whether it is new (False: an idempotent resubmit)."""
        request = sub.request
        existing = self._by_key.get(request.idempotency_key)
        if existing is not None:
            if existing.sub.fingerprint != sub.fingerprint:
                raise ProtocolError(
                    ErrorCode.CONFLICT,
                    f"idempotency key {request.idempotency_key!r} was used for a different job",
                    status=409,
                    field="idempotency_key",
                )
            return existing, False
        if not self._accepting:
            raise ProtocolError(ErrorCode.SHUTTING_DOWN, "the worker is shutting down", status=503)
        self._check_caps(request)
        if not self.memory.take(sub.input_bytes):
            raise self.memory_full()
        job = Job(
            id=secrets.token_hex(8),
            sub=sub,
            model=self._engine.model_name,
            created_at=time.time(),
            total_steps=sub.steps,
            images=[None] * request.count,
        )
        self._jobs[job.id] = job
        self._by_key[request.idempotency_key] = job
        self._lanes[request.lane].push(job)
        self._emit(job, EventType.QUEUED, position=self._position(job), eta_s=self._eta(job))
        self._fill()
        return job, True

    def _check_caps(self, request: JobRequest) -> None:
        lane = self._lanes[request.lane]
        if len(lane) >= self._settings.max_queue_per_lane:
            raise ProtocolError(
                ErrorCode.QUEUE_FULL,
                f"the {request.lane} lane is full ({len(lane)} jobs queued)",
                status=429,
                retry_after=self._retry_after(None),
            )
        mine = [j for ln in self._lanes.values() for j in ln.users.get(request.user, ())]
        if len(mine) >= self._settings.max_queue_per_user:
            raise ProtocolError(
                ErrorCode.USER_QUEUE_FULL,
                f"user {request.user!r} already has {len(mine)} jobs queued",
                status=429,
                retry_after=self._retry_after(mine[0]),
            )

    def memory_full(self) -> ProtocolError:
        """The refusal for input that does not fit the byte budget now: retry once a batch has run."""
        return ProtocolError(
            ErrorCode.QUEUE_FULL,
            f"the worker holds {self.memory.used} of its {self.memory.limit} bytes of queued input; "
            "retry later",
            status=429,
            retry_after=self._retry_after(None),
        )

    def _retry_after(self, job: Job | None) -> float:
        """Seconds until a place frees: the user's first job starts, or else the running batch ends."""
        eta = self._eta(job) if job is not None else self._running_remaining()
        return round(min(max(eta or 1.0, 1.0), 300.0), 1)

    # --- queries and cancel ---

    def get(self, job_id: str) -> Job:
        job = self._jobs.get(job_id)
        if job is None:
            raise ProtocolError(ErrorCode.NOT_FOUND, f"no job {job_id!r}", status=404, field="job_id")
        return job

    def info(self, job: Job) -> JobInfo:
        sub, r = job.sub, job.request
        ready = job.status is JobStatus.SUCCEEDED
        return JobInfo(
            id=job.id, idempotency_key=r.idempotency_key, user=r.user, lane=r.lane, kind=r.kind,
            status=job.status, position=self._position(job), step=job.step, total_steps=job.total_steps,
            seed=sub.seed, width=sub.width, height=sub.height, steps=sub.steps, guidance=sub.guidance,
            count=r.count, model=job.model, images=len(job.images) if ready else 0,
            nsfw=[bool(i and i.nsfw) for i in job.images] if ready else [], eta_s=self._eta(job),
            error=job.error, created_at=job.created_at, started_at=job.started_at,
            finished_at=job.finished_at,
        )  # fmt: skip

    def cancel(self, job_id: str) -> Job:
        """Cancel a job: a queued one leaves the queue; a running one is reported cancelled at once."""
        job = self.get(job_id)
        if job.status.is_final:
            return job
        if job.status is JobStatus.QUEUED:
            self._lanes[job.request.lane].remove(job)
        error = ErrorBody(code=ErrorCode.CANCELLED, message="cancelled on request")
        self._finish(job, JobStatus.CANCELLED, error)
        self._announce_positions()
        return job

    def image(self, job_id: str, n: int) -> bytes:
        job = self.get(job_id)
        if job.status is not JobStatus.SUCCEEDED:
            raise ProtocolError(
                ErrorCode.NOT_READY, f"job {job_id} is {job.status}, it has no images", status=409
            )
        if not 0 <= n < len(job.images):
            raise ProtocolError(
                ErrorCode.NOT_FOUND, f"job {job_id} has images 0..{len(job.images) - 1}", status=404
            )
        img = job.images[n]
        assert img is not None  # a succeeded job has all its images
        return img.png

    def preview(self, job_id: str) -> bytes | None:
        """The latest preview of the job's first image as a small JPEG, or None before the first one."""
        job = self.get(job_id)
        if job.preview is not None and job.preview_jpeg is None:
            job.preview_jpeg = _jpeg(job.preview)
        return job.preview_jpeg

    async def events(
        self, job_id: str, after: int = 0, heartbeat: float | None = None
    ) -> AsyncIterator[JobEvent | None]:
        """A job's events with `seq > after`: its current state first, then live ones until it ends.

        With `heartbeat`, yields None after that many idle seconds, so a stream can show it is alive.
        """
        async with contextlib.aclosing(self.event_batches(job_id, after, heartbeat)) as batches:
            async for batch in batches:
                if not batch:
                    yield None
                for event in batch:
                    yield event

    async def event_batches(
        self, job_id: str, after: int = 0, heartbeat: float | None = None
    ) -> AsyncIterator[list[JobEvent]]:
        """Like `events`, but each item is every event available at that moment (an empty list after
        `heartbeat` idle seconds), so a stream can send them in one write."""
        job = self.get(job_id)
        backlog = [e for e in job.durable if e.seq > after]
        if job.latest is not None and job.latest.seq > after:
            backlog.append(job.latest)
        backlog.sort(key=lambda e: e.seq)
        if job.status.is_final:
            if backlog:
                yield backlog
            return
        last = backlog[-1].seq if backlog else after
        queue: asyncio.Queue[JobEvent | None] = asyncio.Queue()
        job.listeners.add(queue)  # before the backlog goes out, so nothing emitted meanwhile is lost
        try:
            if backlog:
                yield backlog
            while True:
                try:
                    first = await asyncio.wait_for(queue.get(), heartbeat)
                except TimeoutError:
                    yield []
                    continue
                items = [first, *(queue.get_nowait() for _ in range(queue.qsize()))]
                fresh = [e for e in items if e is not None and e.seq > last]
                if fresh:
                    last = fresh[-1].seq
                    yield fresh
                if None in items:
                    return
        finally:
            job.listeners.discard(queue)

    def stats(self) -> WorkerStats:
        used, total = self._engine.memory()
        running = [s for run in self._runs for s in run.slices]
        return WorkerStats(
            model=self._engine.model_name,
            device=self._engine.device_name,
            lanes={
                name: LaneStats(queued=len(lane), users=len(lane.users)) for name, lane in self._lanes.items()
            },
            running=len({s.job for s in running if not s.job.status.is_final}),
            batch_size=sum(s.count for s in running),
            images_per_s_1m=self._images_per_s(),
            jobs_done=self.counters[JobStatus.SUCCEEDED],
            jobs_failed=self.counters[JobStatus.FAILED],
            device_memory_bytes=used,
            device_memory_total_bytes=total,
            accepting=self._accepting,
            replicas=_replica_stats(self._engine),
        )

    def _images_per_s(self) -> float:
        self._forget_old_rates()
        return round(sum(n for _, n in self._done_images) / 60.0, 3)

    def _forget_old_rates(self) -> None:
        cutoff = time.monotonic() - 60.0
        while self._done_images and self._done_images[0][0] < cutoff:
            self._done_images.popleft()

    # --- order, positions and ETAs ---

    def _order(self) -> list[Job]:
        return self._lanes[Lane.FAST].fair_order() + self._lanes[Lane.RELAX].fair_order()

    def _position(self, job: Job) -> int | None:
        if job.status is not JobStatus.QUEUED:
            return None
        return self._order().index(job)

    def _running_remaining(self) -> float:
        """Seconds until a batch slot frees: the soonest end among the batches in flight."""
        if len(self._runs) < self._settings.batches_in_flight:
            return 0.0
        now = time.monotonic()
        return min(max(run.estimate - (now - run.started), 0.0) for run in self._runs)

    def _eta(self, job: Job) -> float | None:
        """Seconds until the job finishes, from measured batch times; None once it has."""
        if job.status.is_final:
            return None
        if job.status is JobStatus.RUNNING:
            run = next((r for r in self._runs if job in r.jobs), None)
            return round(max(run.estimate - (time.monotonic() - run.started), 0.0), 2) if run else 0.0
        work = 0.0
        for ahead in self._order():
            work += self._image_seconds(ahead) * ahead.request.count
            if ahead is job:
                break
        return round(self._running_remaining() + work / self._settings.batches_in_flight, 2)

    def _image_seconds(self, job: Job) -> float:
        n = self._settings.max_batch
        return self._times.estimate(job.key.shape, n) / n

    def _announce_positions(self) -> None:
        work, parallel = 0.0, self._settings.batches_in_flight
        wait = self._running_remaining()
        for place, job in enumerate(self._order()):
            work += self._image_seconds(job) * job.request.count
            if job.listeners:
                self._emit(job, EventType.POSITION, position=place, eta_s=round(wait + work / parallel, 2))

    # --- events ---

    def _emit(self, job: Job, type_: EventType, **fields: object) -> None:
        job.seq += 1
        final = type_ in (EventType.DONE, EventType.FAILED, EventType.CANCELLED)
        if final:
            fields |= {"job": self.info(job), "error": job.error}
        # Built from trusted values on the hot path (several events per step), so not re-validated.
        event = JobEvent.model_construct(type=type_, job_id=job.id, seq=job.seq, **fields)
        if type_ in _DURABLE_EVENTS:
            job.durable.append(event)
        else:
            job.latest = event
        for queue in job.listeners:
            queue.put_nowait(event)
            if final:
                queue.put_nowait(None)

    def _finish(self, job: Job, status: JobStatus, error: ErrorBody | None = None) -> None:
        if job.status.is_final:
            return
        job.status = status
        job.error = error
        self.memory.give(job.sub.input_bytes)
        job.sub = dataclasses.replace(job.sub, init_image=None)  # the upload is not needed any more
        job.finished_at = time.time()
        job.finished_mono = time.monotonic()
        self.counters[status] += 1
        if status is not JobStatus.SUCCEEDED:
            job.images = [None] * job.request.count
        self._emit(job, _FINAL_EVENT[status])
        log.info("job %s %s%s", job.id, status, f" ({error.code}: {error.message})" if error else "")

    # --- the GPU loop ---

    def _next_batch(self) -> list[Job] | None:
        fast, relax = self._lanes[Lane.FAST], self._lanes[Lane.RELAX]
        if fast.users and relax.users:
            self._relax_credit += self._settings.relax_share
            lane = fast
            if self._relax_credit >= 1.0:
                self._relax_credit -= 1.0
                lane = relax
        elif fast.users or relax.users:
            lane = fast if fast.users else relax
        else:
            return None
        return lane.take_batch(self._settings.max_batch)

    def _fill(self) -> None:
        """Start batches while a slot is free and jobs wait: never waiting for batch-mates."""
        while self._accepting and len(self._runs) < self._settings.batches_in_flight:
            batch = self._next_batch()
            if batch is None:
                return
            now = time.time()
            for job in batch:
                job.status = JobStatus.RUNNING
                job.started_at = now
                self._emit(job, EventType.STARTED)
            run = self._launch([Slice(j, 0, j.request.count) for j in batch])
            task = asyncio.create_task(self._batch(run), name="batch")
            self._batch_tasks.add(task)
            task.add_done_callback(self._batch_tasks.discard)

    def _launch(self, slices: list[Slice]) -> _Running:
        """Hand a batch to an engine thread now (synchronously, so no loop turn delays the GPU)."""
        loop = asyncio.get_running_loop()
        n = sum(s.count for s in slices)
        run = _Running(slices, time.monotonic(), self._times.estimate(slices[0].job.key.shape, n))
        items = [s.item() for s in slices]
        inputs = [s.job.sub.init_image for s in slices]
        on_step = self._progress_reporter(run, loop)
        run.future = loop.run_in_executor(
            self._executor, self._run_engine, items, inputs, on_step, run.should_stop
        )
        self._runs.add(run)
        self._announce_positions()  # once the engine has its work: everyone behind moved up
        return run

    async def _batch(self, run: _Running) -> None:
        """One batch's task: settle it, then refill the slot whatever happened."""
        try:
            await self._settle(run, first_try=True)
        except Exception:  # a bug here must not leave jobs running forever or stop the GPU loop
            log.exception("batch failed unexpectedly")
            self._fail(run.slices, ErrorCode.INTERNAL, "the worker hit an internal error running this batch")
        finally:
            self._fill()

    async def _settle(self, run: _Running, *, first_try: bool) -> None:
        """Await a batch and hand out its results or its failure. On out-of-memory, the first try is
        split in halves that are retried once each, one after the other, in the same slot."""
        try:
            results = await self._await_engine(run)
        except EngineOutOfMemory as exc:
            images = sum(s.count for s in run.slices)
            if not first_try or images < 2:
                self._fail(run.slices, ErrorCode.OUT_OF_MEMORY, f"out of device memory: {exc}")
                return
            log.warning("out of memory on a batch of %d images; retrying in halves", images)
            for half in halves(run.slices):
                if live := [s for s in half if not s.job.status.is_final]:
                    await self._settle(self._launch(live), first_try=False)
        except _BatchTimeout:
            self._fail(run.slices, ErrorCode.PIPELINE_ERROR, "the pipeline call timed out")
        except Exception as exc:
            log.exception("pipeline call failed")
            self._fail(run.slices, ErrorCode.PIPELINE_ERROR, f"pipeline failed: {type(exc).__name__}: {exc}")
        else:
            if first_try:
                self._fill()  # the freed slot gets the next batch before these results are handed out
            self._deliver_or_fail(run.slices, results)

    async def _await_engine(self, run: _Running) -> list[list[GeneratedImage]]:
        assert run.future is not None
        try:
            async with asyncio.timeout(self._settings.batch_timeout_s):
                results = await asyncio.shield(run.future)
        except TimeoutError:
            run.stop = True
            await asyncio.wait({run.future})  # the engine stops at its next step; the thread is then free
            raise _BatchTimeout from None
        finally:
            self._runs.discard(run)
        elapsed = time.monotonic() - run.started
        if not run.should_stop():
            self._times.record(run.slices[0].job.key.shape, sum(s.count for s in run.slices), elapsed)
        self.batches += 1
        self.batch_seconds += elapsed
        return results

    def _run_engine(
        self,
        items: list[BatchItem],
        inputs: list[EncodedImage | None],
        on_step: Callable[[StepUpdate], None],
        should_stop: Callable[[], bool],
    ) -> list[list[GeneratedImage]]:
        """On the engine thread: decode the batch's input images (one at a time, straight to the output
        size), then run it."""
        for item, encoded in zip(items, inputs, strict=True):
            if encoded is not None:
                item.init_image = encoded.decode((item.width, item.height))
        return self._engine.run_batch(items, on_step, should_stop)

    def _progress_reporter(
        self, run: _Running, loop: asyncio.AbstractEventLoop
    ) -> Callable[[StepUpdate], None]:
        """The engine's `on_step`: paced to `progress_interval_s`, handed to the loop thread-safely."""
        interval = self._settings.progress_interval_s

        def on_step(update: StepUpdate) -> None:  # on the engine thread
            now = time.monotonic()
            if now - max(run.last_report, run.started) < interval:
                return
            run.last_report = now
            previews = _first_previews(run.slices, update.previews)
            loop.call_soon_threadsafe(self._on_step, run, update, previews)

        return on_step

    def _on_step(self, run: _Running, update: StepUpdate, previews: dict[str, Image.Image]) -> None:
        for job in run.jobs:
            if job.status is not JobStatus.RUNNING:
                continue
            job.step, job.total_steps = update.step, update.total
            if job.id in previews:
                job.preview, job.preview_jpeg = previews[job.id], None
                self._emit(job, EventType.PREVIEW, step=update.step, total=update.total)
            self._emit(job, EventType.PROGRESS, step=update.step, total=update.total, eta_s=self._eta(job))

    def _deliver_or_fail(self, slices: list[Slice], results: list[list[GeneratedImage]]) -> None:
        try:
            self._deliver(slices, results)
        except Exception:  # outside the GPU loop's own guard: no job may be left running forever
            log.exception("delivering a batch failed")
            self._fail(slices, ErrorCode.INTERNAL, "the worker hit an internal error delivering this batch")

    def _deliver(self, slices: list[Slice], results: list[list[GeneratedImage]]) -> None:
        if len(results) != len(slices):
            self._fail(slices, ErrorCode.PIPELINE_ERROR, "the engine returned the wrong number of results")
            return
        made = 0
        for s, images in zip(slices, results, strict=True):
            if s.job.status.is_final:
                continue  # cancelled while running: its output is dropped
            if len(images) != s.count:
                self._fail([s], ErrorCode.PIPELINE_ERROR, f"expected {s.count} images, got {len(images)}")
                continue
            s.job.images[s.offset : s.offset + s.count] = images
            made += len(images)
            if all(img is not None for img in s.job.images):
                self._finish(s.job, JobStatus.SUCCEEDED)
        self.images_total += made
        self._done_images.append((time.monotonic(), made))
        self._forget_old_rates()

    def _fail(self, slices: Iterable[Slice], code: ErrorCode, message: str) -> None:
        for job in dict.fromkeys(s.job for s in slices):
            self._finish(job, JobStatus.FAILED, ErrorBody(code=code, message=message))

    # --- housekeeping ---

    async def _sweep(self) -> None:
        ttl = self._settings.job_ttl_s
        while True:
            await asyncio.sleep(min(60.0, ttl / 2))
            self.evict_expired(time.monotonic() - ttl)

    def evict_expired(self, before: float) -> None:
        """Forget finished jobs (and their images and idempotency keys) that ended before `before`."""
        for job in list(self._jobs.values()):
            if job.finished_mono is not None and job.finished_mono < before:
                del self._jobs[job.id]
                if self._by_key.get(job.request.idempotency_key) is job:
                    del self._by_key[job.request.idempotency_key]


def _replica_stats(engine: Engine) -> list[ReplicaStats]:
    """Each replica's load when the engine fans batches out to replicas (`inference.ray_app.RayEngine`)."""
    report = getattr(engine, "replica_stats", None)
    return report() if callable(report) else []


def _shutting_down() -> ErrorBody:
    return ErrorBody(code=ErrorCode.SHUTTING_DOWN, message="the worker shut down; resubmit the job")


def _first_previews(slices: list[Slice], previews: list[Image.Image]) -> dict[str, Image.Image]:
    """Each job's first image's preview, picked from the batch's previews (one per image, in order)."""
    out: dict[str, Image.Image] = {}
    index = 0
    for s in slices:
        if s.offset == 0 and index < len(previews):
            out[s.job.id] = previews[index]
        index += s.count
    return out


def _jpeg(image: Image.Image) -> bytes:
    img = image.convert("RGB")
    img.thumbnail((_PREVIEW_SIDE, _PREVIEW_SIDE))
    buf = io.BytesIO()
    img.save(buf, format="JPEG", quality=80)
    return buf.getvalue()


def job_fingerprint(request: JobRequest, image_digest: str | None) -> str:
    """What makes two submissions the same job, for idempotency."""
    h = hashlib.sha256(request.model_dump_json().encode())
    h.update((image_digest or "").encode())
    return h.hexdigest()
