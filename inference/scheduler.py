"""The worker's scheduler: takes jobs into the fair two-lane queue and runs them in batches on one engine.

Pure asyncio: the aiohttp server and any other ingress speaking the `/v1` RPC share it. The event loop
owns every job record; the engine runs in worker threads and reports progress back to the loop with
`call_soon_threadsafe`, so the loop keeps answering status, events and cancel while the GPU works.
The queue (`inference.queue`), the event log (`inference.events`), the timings behind ETAs
(`inference.eta`), what is kept of finished jobs and the encoding of their pictures (`inference.results`)
live apart; what stays here (about 560 lines) is every change of a job's state, kept in one class so
that no two objects can disagree about which jobs are queued, running, being encoded or done.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
import secrets
import time
from collections.abc import AsyncGenerator, AsyncIterator, Callable, Iterable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

from PIL import Image

from inference.engine_api import Engine, EngineOutOfMemory, GeneratedImage, StepUpdate
from inference.eta import BatchTimes, Throughput, queue_finish_times
from inference.events import FINAL_EVENT, event_batches, first_previews, preview_jpeg, publish
from inference.histograms import WorkerHistograms
from inference.output import OutputSettings, ServedImage, encoder_pool
from inference.protocol import (
    ErrorBody,
    ErrorCode,
    EventType,
    JobEvent,
    JobInfo,
    JobRequest,
    LaneStats,
    ProtocolError,
    ReplicaStats,
    WorkerStats,
)
from inference.queue import ByteBudget, FinishedJob, Job, KnownJob, Slice, Submission, TwoLaneQueue, halves
from inference.results import JobIndex, ResultStore, encode_batch
from inference.settings import WorkerSettings
from inference.vocabulary import JobStatus, WorkerJobId

log = logging.getLogger(__name__)


@dataclass(eq=False, slots=True)
class _Running:
    """The batch in flight. `stop` is read from the worker thread through `should_stop`."""

    slices: list[Slice]
    started: float
    estimate: float
    stop: bool = False
    last_report: float = 0.0
    retry: bool = False  # half of a batch retried after out-of-memory: holds the slot to the end
    device_done: float | None = None  # when the engine said the device was free (`StepUpdate.device_free`)
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

    def __init__(
        self,
        engine: Engine,
        settings: WorkerSettings,
        *,
        clock: Callable[[], float] = time.time,
        monotonic: Callable[[], float] = time.monotonic,
    ) -> None:
        self._clock = clock  # wall time, for the times a job reports
        self._monotonic = monotonic  # for durations, ETAs and expiry
        self._engine = engine
        self._settings = settings
        self._queue = TwoLaneQueue(settings.relax_share)
        self._runs: set[_Running] = set()  # the batches in flight, at most `batches_in_flight`
        self._batch_tasks: set[asyncio.Task[None]] = set()
        self._times = BatchTimes()
        self._accepting = True
        self.memory = ByteBudget(settings.input_budget_bytes)
        # One upload decoded at a time: each may be tens of MB of pixels while it is checked.
        self.decode_slots = asyncio.Semaphore(1)
        # One thread more than batches in flight: a batch's pictures are converted on its thread after
        # the engine says the device is free, while the next batch's call runs on another.
        self._executor = ThreadPoolExecutor(
            max_workers=settings.batches_in_flight + 1, thread_name_prefix="engine"
        )
        # Pictures are encoded on their own pool while the engine runs the next batch; at most two
        # batches per engine slot wait for it, so a slow encoder holds back the GPU, not memory.
        self._output = OutputSettings.of(settings)
        self._encoder = encoder_pool(settings)
        self._encoding = 0
        self.results = ResultStore(settings.result_budget_bytes, settings.fetched_result_grace_s, monotonic)
        self.jobs = JobIndex(settings.max_finished_jobs, self.results)
        self._sweeper: asyncio.Task[None] | None = None
        self._throughput = Throughput(monotonic)
        self.counters: dict[JobStatus, int] = dict.fromkeys(JobStatus, 0)
        self.batches = 0
        self.batch_seconds = 0.0
        self.images_total = 0
        self.histograms = WorkerHistograms()

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
        for job in self._queue.clear():
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
        self._encoder.shutdown(wait=False, cancel_futures=True)

    # --- intake ---

    def submit(self, sub: Submission) -> tuple[KnownJob, bool]:
        """Queue a job; return it and whether it is new (False: an idempotent resubmit)."""
        request = sub.request
        existing = self.jobs.by_key(request.idempotency_key)
        if existing is not None:
            if existing.fingerprint != sub.fingerprint:
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
            id=WorkerJobId(secrets.token_hex(8)),
            sub=sub,
            model=request.model or self._engine.model_name,  # the one that runs it
            created_at=self._clock(),
            total_steps=sub.steps,
            images=[None] * request.count,
        )
        self.jobs.add(job)
        self._queue.push(job)
        self._emit(job, EventType.QUEUED, position=self._position(job), eta_s=self._eta(job))
        self._fill()
        return job, True

    def _check_caps(self, request: JobRequest) -> None:
        lane = self._queue.lanes[request.lane]
        if len(lane) >= self._settings.max_queue_per_lane:
            raise ProtocolError(
                ErrorCode.QUEUE_FULL,
                f"the {request.lane} lane is full ({len(lane)} jobs queued)",
                status=429,
                retry_after=self._retry_after(None),
            )
        mine = self._queue.queued_for(request.user)
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

    def get(self, job_id: str) -> KnownJob:
        """The job's live record while it is queued or running, its tombstone once it has ended."""
        job = self.jobs.get(job_id)
        if job is None:
            raise ProtocolError(ErrorCode.NOT_FOUND, f"no job {job_id!r}", status=404, field="job_id")
        return job

    def info(self, job: KnownJob) -> JobInfo:
        if isinstance(job, FinishedJob):
            return job.info()
        sub, r = job.sub, job.request
        ready = job.status is JobStatus.SUCCEEDED
        return JobInfo(
            id=job.id, idempotency_key=r.idempotency_key, user=r.user, lane=r.lane, kind=r.kind,
            status=job.status, position=self._position(job), step=job.step, total_steps=job.total_steps,
            seed=sub.seed, width=sub.width, height=sub.height, steps=sub.steps, guidance=sub.guidance,
            count=r.count, model=job.model, images=r.count if ready else 0,
            nsfw=list(job.nsfw) if ready else [], eta_s=self._eta(job),
            error=job.error, created_at=job.created_at, started_at=job.started_at,
            finished_at=job.finished_at,
        )  # fmt: skip

    def cancel(self, job_id: str) -> KnownJob:
        """Cancel a job: a queued one leaves the queue; a running one is reported cancelled at once."""
        job = self.get(job_id)
        if isinstance(job, FinishedJob) or job.status.is_final:
            return job
        if job.status is JobStatus.QUEUED:
            self._queue.remove(job)
        error = ErrorBody(code=ErrorCode.CANCELLED, message="cancelled on request")
        tomb = self._finish(job, JobStatus.CANCELLED, error)
        self._announce_positions()
        return tomb or job

    def image(self, job_id: str, n: int) -> ServedImage:
        """Picture `n` of a finished job; `gone` once it was fetched and its grace passed, or evicted."""
        job = self.get(job_id)
        if job.status is not JobStatus.SUCCEEDED:
            raise ProtocolError(
                ErrorCode.NOT_READY, f"job {job_id} is {job.status}, it has no images", status=409
            )
        if not 0 <= n < job.count:
            raise ProtocolError(
                ErrorCode.NOT_FOUND, f"job {job_id} has images 0..{job.count - 1}", status=404
            )
        img = self.results.get(job.id, n)
        if img is None:
            raise ProtocolError(
                ErrorCode.GONE,
                f"image {n} of job {job_id} is no longer held: the worker keeps a picture "
                f"{self._settings.fetched_result_grace_s:g} s after it is first fetched, and drops the "
                "oldest when its result budget is full",
                status=410,
            )
        return img

    def preview(self, job_id: str) -> bytes | None:
        """The latest preview of the job's first image as a small JPEG, or None before the first one."""
        job = self.get(job_id)
        if isinstance(job, FinishedJob):
            return None
        if job.preview is not None and job.preview_jpeg is None:
            job.preview_jpeg = preview_jpeg(job.preview)
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

    def event_batches(
        self, job_id: str, after: int = 0, heartbeat: float | None = None
    ) -> AsyncGenerator[list[JobEvent], None]:
        """Like `events`, but each item is every event available at that moment (an empty list after
        `heartbeat` idle seconds), so a stream can send them in one write."""
        job = self.get(job_id)
        if isinstance(job, FinishedJob):
            return _final_batch(job, after)
        return event_batches(job, after, heartbeat)

    def stats(self) -> WorkerStats:
        memory = self._engine.memory()
        running = [s for run in self._runs for s in run.slices]
        return WorkerStats(
            model=self._engine.model_name,
            device=self._engine.device_name,
            lanes={
                name: LaneStats(queued=len(lane), users=len(lane.users))
                for name, lane in self._queue.lanes.items()
            },
            running=len({s.job for s in running if not s.job.status.is_final}),
            batch_size=sum(s.count for s in running),
            images_per_s_1m=self._throughput.per_second(),
            jobs_done=self.counters[JobStatus.SUCCEEDED],
            jobs_failed=self.counters[JobStatus.FAILED],
            device_memory_bytes=memory.used,
            device_memory_total_bytes=memory.total,
            accepting=self._accepting,
            replicas=_replica_stats(self._engine),
        )

    # --- order, positions and ETAs ---

    def _position(self, job: Job) -> int | None:
        if job.status is not JobStatus.QUEUED:
            return None
        return self._queue.order().index(job)

    def _running_remaining(self) -> float:
        """Seconds until a batch slot frees: the soonest end among the batches in flight."""
        if len(self._runs) < self._settings.batches_in_flight:
            return 0.0
        now = self._monotonic()
        return min(max(run.estimate - (now - run.started), 0.0) for run in self._runs)

    def _eta(self, job: Job) -> float | None:
        """Seconds until the job finishes, from measured batch times; None once it has."""
        if job.status.is_final:
            return None
        if job.status is JobStatus.RUNNING:
            run = next((r for r in self._runs if job in r.jobs), None)
            return round(max(run.estimate - (self._monotonic() - run.started), 0.0), 2) if run else 0.0
        return next((eta for _, queued, eta in self._finish_times() if queued is job), None)

    def _finish_times(self) -> Iterator[tuple[int, Job, float]]:
        return queue_finish_times(
            self._queue.order(),
            self._image_seconds,
            self._running_remaining(),
            self._settings.batches_in_flight,
        )

    def _image_seconds(self, job: Job) -> float:
        n = self._settings.max_batch
        return self._times.estimate(job.key.shape, n) / n

    def _announce_positions(self) -> None:
        for place, job, eta in self._finish_times():
            if job.listeners:
                self._emit(job, EventType.POSITION, position=place, eta_s=eta)

    # --- events ---

    def _emit(self, job: Job, type_: EventType, **fields: object) -> None:
        final = self.info(job) if type_ in FINAL_EVENT.values() else None
        publish(job, type_, final, **fields)

    def _finish(self, job: Job, status: JobStatus, error: ErrorBody | None = None) -> FinishedJob | None:
        """End a job: its pictures go to the result store, its record becomes a tombstone (returned)."""
        if job.status.is_final:
            return None
        job.status = status
        job.error = error
        self.memory.give(job.sub.input_bytes)
        job.sub = dataclasses.replace(job.sub, init_image=None)  # the upload is not needed any more
        job.finished_at = self._clock()
        job.finished_mono = self._monotonic()
        self.counters[status] += 1
        if status is JobStatus.SUCCEEDED:
            served = [img for img in job.images if img is not None]
            job.nsfw = [img.nsfw for img in served]
            self.results.put(job.id, served)
        job.images = []
        job.preview = job.preview_jpeg = None
        self._emit(job, FINAL_EVENT[status])
        job.durable, job.latest = job.durable[-1:], None  # the final event holds the job's whole state
        tomb = self.jobs.finished(job)
        # Named by the client's id for it (the bot's job id, its idempotency key), as the bot and CLI name it.
        key = job.request.idempotency_key
        why = f" ({error.code}: {error.message})" if error else ""
        log.info("job %s %s%s (worker id %s)", key, status, why, job.id, extra={"job_id": key})
        return tomb

    # --- the GPU loop ---

    def _fill(self) -> None:
        """Start batches while a slot is free and jobs wait: never waiting for batch-mates (nor for the
        encoding of the last batch, unless two per slot are still being encoded)."""
        slots = self._settings.batches_in_flight
        while self._accepting and len(self._runs) < slots and self._encoding < 2 * slots:
            batch = self._queue.take_batch(self._settings.max_batch)
            if batch is None:
                return
            now = self._clock()
            for job in batch:
                job.status = JobStatus.RUNNING
                job.started_at = now
                self.histograms.queue_wait.observe(max(0.0, now - job.created_at))
                self._emit(job, EventType.STARTED)
            run = self._launch([Slice(j, 0, j.request.count) for j in batch])
            task = asyncio.create_task(self._batch(run), name="batch")
            self._batch_tasks.add(task)
            task.add_done_callback(self._batch_tasks.discard)

    def _launch(self, slices: list[Slice], *, retry: bool = False) -> _Running:
        """Hand a batch to an engine thread now (synchronously, so no loop turn delays the GPU). A retry
        (half of a batch that ran out of memory) keeps its slot until it returns: the other half follows."""
        loop = asyncio.get_running_loop()
        n = sum(s.count for s in slices)
        run = _Running(
            slices, self._monotonic(), self._times.estimate(slices[0].job.key.shape, n), retry=retry
        )
        items = [s.item() for s in slices]  # input images still compressed: the engine decodes them
        on_step = self._progress_reporter(run, loop)
        run.future = loop.run_in_executor(
            self._executor, self._engine.run_batch, items, on_step, run.should_stop
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
                    await self._settle(self._launch(live, retry=True), first_try=False)
        except _BatchTimeout:
            self._fail(run.slices, ErrorCode.PIPELINE_ERROR, "the pipeline call timed out")
        except Exception as exc:
            log.exception("pipeline call failed")
            self._fail(run.slices, ErrorCode.PIPELINE_ERROR, f"pipeline failed: {type(exc).__name__}: {exc}")
        else:
            if first_try:
                self._fill()  # the freed slot gets the next batch before these results are encoded
            await self._deliver_or_fail(run.slices, results)

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
        # The device's time for the batch (what the next one waits for), not the host's conversion after.
        elapsed = (run.device_done or self._monotonic()) - run.started
        if not run.should_stop():
            self._times.record(run.slices[0].job.key.shape, sum(s.count for s in run.slices), elapsed)
        self.batches += 1
        self.batch_seconds += elapsed
        self.histograms.batch.observe(elapsed)
        return results

    def _progress_reporter(
        self, run: _Running, loop: asyncio.AbstractEventLoop
    ) -> Callable[[StepUpdate], None]:
        """The engine's `on_step`: paced to `progress_interval_s`, handed to the loop thread-safely."""
        interval = self._settings.progress_interval_s

        def on_step(update: StepUpdate) -> None:  # on the engine thread
            now = self._monotonic()
            if update.device_free:
                loop.call_soon_threadsafe(self._device_free, run, now)
                return
            # Previews are already paced by the engine (`preview_interval_s`): never dropped here.
            if now - max(run.last_report, run.started) < interval and not update.previews:
                return
            run.last_report = now
            previews = first_previews(run.slices, update.previews)
            loop.call_soon_threadsafe(self._on_step, run, update, previews)

        return on_step

    def _device_free(self, run: _Running, at: float) -> None:
        """The engine is done with the device for this batch: its slot takes the next batch now, while
        this one's pictures are converted on the host (they are then encoded on the encoder pool)."""
        if run in self._runs and not run.stop and not run.retry:
            run.device_done = at
            self._runs.discard(run)
            self._fill()

    def _on_step(self, run: _Running, update: StepUpdate, previews: dict[WorkerJobId, Image.Image]) -> None:
        for job in run.jobs:
            if job.status is not JobStatus.RUNNING:
                continue
            job.step, job.total_steps = update.step, update.total
            if job.id in previews:
                job.preview, job.preview_jpeg = previews[job.id], None
                self._emit(job, EventType.PREVIEW, step=update.step, total=update.total)
            self._emit(job, EventType.PROGRESS, step=update.step, total=update.total, eta_s=self._eta(job))

    async def _deliver_or_fail(self, slices: list[Slice], results: list[list[GeneratedImage]]) -> None:
        self._encoding += 1
        try:
            self._deliver(slices, await encode_batch(self._encoder, self._output, slices, results))
        except Exception:  # outside the GPU loop's own guard: no job may be left running forever
            log.exception("delivering a batch failed")
            self._fail(slices, ErrorCode.INTERNAL, "the worker hit an internal error delivering this batch")
        finally:
            self._encoding -= 1

    def _deliver(self, slices: list[Slice], results: list[list[ServedImage]] | None) -> None:
        if results is None:
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
        self._throughput.add(made)

    def _fail(self, slices: Iterable[Slice], code: ErrorCode, message: str) -> None:
        for job in dict.fromkeys(s.job for s in slices):
            self._finish(job, JobStatus.FAILED, ErrorBody(code=code, message=message))

    # --- housekeeping ---

    async def _sweep(self) -> None:
        ttl = self._settings.job_ttl_s
        while True:  # fetched pictures expire on every fetch too; this catches a quiet worker
            await asyncio.sleep(min(60.0, ttl / 2, max(1.0, self._settings.fetched_result_grace_s)))
            self.evict_expired(self._monotonic() - ttl)

    def evict_expired(self, before: float) -> None:
        """Forget finished jobs (and their images and idempotency keys) that ended before `before`."""
        self.jobs.evict_expired(before)


async def _final_batch(job: FinishedJob, after: int) -> AsyncGenerator[list[JobEvent], None]:
    """An ended job's event stream: its final event, unless the client has already seen it."""
    event = job.event()
    if event.seq > after:
        yield [event]


def _replica_stats(engine: Engine) -> list[ReplicaStats]:
    """Each replica's load when the engine fans batches out to replicas (`inference.ray_app.RayEngine`)."""
    report = getattr(engine, "replica_stats", None)
    return report() if callable(report) else []


def _shutting_down() -> ErrorBody:
    return ErrorBody(code=ErrorCode.SHUTTING_DOWN, message="the worker shut down; resubmit the job")
