"""Following a job to its end: stream the worker's events, ride out a worker restart by resubmitting,
store the images and commit the charge, or refund it with a message that says why."""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass

from bot.core.i18n import N_, LocalisedError, Message
from bot.core.lifecycle import CrashPoint
from bot.core.metrics import BotMetrics
from bot.core.outcomes import JobOutcome, ProgressCallback, image_size, next_state, worker_user
from bot.core.plans import JobPlan
from bot.core.progress import ProgressState
from bot.core.quotas.service import QuotaService
from bot.core.settings import Limits
from bot.core.worker_watch import WorkerWatch
from inference import client as worker_client
from inference.client import WorkerClient
from inference.protocol import EventType, JobInfo
from inference.vocabulary import JobKind, JobStatus, Lane
from storage import generations, jobs
from storage.db import Database
from storage.generations import GenerationRecord
from storage.jobs import JobRecord, JobState

log = logging.getLogger(__name__)

MAX_RESUBMITS = 2


class JobLost(LocalisedError):
    """The job cannot be finished; the text tells its member why (the follower refunds it)."""


@dataclass(frozen=True, slots=True, kw_only=True)
class JobFollower:
    """Follows started jobs to their end and settles their charge; the job service and the recovery at
    start share it (the recovery settles through its database, quotas, worker client and clock)."""

    db: Database
    quotas: QuotaService
    client: WorkerClient
    worker: WorkerWatch
    limits: Limits
    crash: CrashPoint
    metrics: BotMetrics
    clock: Callable[[], float] = time.time

    async def refund(self, record: JobRecord, reason: str, state: JobState = JobState.REFUNDED) -> JobRecord:
        await self.quotas.refund(record.job_id)
        log.info("job %s refunded: %s", record.job_id, reason)
        async with self.db.transaction() as tx:
            return await jobs.update_status(tx, record.job_id, state, now=self.clock(), error=reason[:500])

    async def follow(self, job: JobRecord, on_progress: ProgressCallback | None = None) -> JobOutcome:
        """Follow the job's events until it ends; store the images and commit, or refund. Never raises
        for a job failure: the outcome says what happened, and a refused job is never charged."""
        started = self.clock()
        progress = on_progress or (lambda _state: None)
        try:
            async with asyncio.timeout(self.limits.job_timeout_s):
                final, images = await self._final_info(job, progress)
        except TimeoutError:
            with contextlib.suppress(Exception):
                await self.client.cancel(job.worker_job_id or "")
            return await self.fail(
                job, Message(N_("The job took too long and was stopped. Your credits were refunded."))
            )
        except JobLost as lost:
            return await self.fail(job, lost.text)
        except worker_client.WorkerError as exc:
            log.warning("job %s: worker failed while finishing: %s", job.job_id, exc)
            return await self.fail(
                job, Message(N_("The image worker failed while returning your images. Credits refunded."))
            )
        except Exception:
            log.exception("job %s failed unexpectedly", job.job_id)
            return await self.fail(
                job, Message(N_("Something went wrong with this job. Your credits were refunded."))
            )
        # Past this point the images are in hand: a database error must not refund a delivered result.
        outcome = await self._settle(job, final, images)
        return dataclasses.replace(outcome, elapsed_s=self.clock() - started)

    async def _fetch_images(self, info: JobInfo) -> list[bytes]:
        if info.status is not JobStatus.SUCCEEDED:
            return []
        return [await self.client.image(info.id, n) for n in range(info.images)]

    async def _final_info(self, job: JobRecord, progress: ProgressCallback) -> tuple[JobInfo, list[bytes]]:
        """The job's final state and images from the worker, riding out a worker restart by resubmitting
        (a restarted worker has forgotten the job and its images)."""
        attempts = 0
        while True:
            try:
                info = await self._stream(job, progress)
                self.crash.reached("images_ready")
                return info, await self._fetch_images(info)
            except (worker_client.WorkerUnavailable, worker_client.JobNotFound) as exc:
                log.warning("lost track of job %s (%s); checking the worker", job.job_id, type(exc).__name__)
            progress(
                ProgressState(
                    status=JobStatus.QUEUED,
                    note=Message(N_("The image worker is restarting; waiting for it…")),
                )
            )
            job = await self.recover_submission(job)
            attempts += 1
            if attempts > MAX_RESUBMITS:
                raise JobLost(N_("The image worker kept failing on this job. Your credits were refunded."))

    async def _stream(self, job: JobRecord, progress: ProgressCallback) -> JobInfo:
        state = ProgressState(status=JobStatus.QUEUED)
        started: float | None = None
        async for event in self.client.events(job.worker_job_id or ""):
            new = next_state(state, event)
            if new != state:
                state = new
                progress(state)
            if event.type is EventType.STARTED:
                started = self.clock()
                self.metrics.queue_wait.observe(max(0.0, started - job.created_at))
                if job.status is not JobState.RUNNING:
                    async with self.db.transaction() as tx:
                        job = await jobs.update_status(tx, job.job_id, JobState.RUNNING, now=self.clock())
                self.crash.reached("running")
            if event.type is EventType.DONE and started is not None:
                self.metrics.generation.observe(max(0.0, self.clock() - started))
            if event.type in (EventType.DONE, EventType.FAILED, EventType.CANCELLED):
                return event.job or await self.client.get(job.worker_job_id or "")
        # The stream ended without a final event (worker shutting down): ask for the state directly.
        info = await self.client.get(job.worker_job_id or "")
        if not info.status.is_final:
            raise worker_client.WorkerUnavailable("event stream ended early")
        return info

    async def recover_submission(self, job: JobRecord) -> JobRecord:
        """After losing the worker: wait for it, then find the job there or submit it again (same key)."""
        if not await self.worker.wait_until_up(self.limits.worker_grace_s):
            raise JobLost(N_("The image worker stopped and did not come back. Your credits were refunded."))
        if job.worker_job_id:
            with contextlib.suppress(worker_client.JobNotFound):
                await self.client.get(job.worker_job_id)
                return job
        plan = JobPlan.from_parameters(job.parameters)
        if plan.kind is not JobKind.GENERATE:
            image = await self._input_image(plan)
            if image is None:
                raise JobLost(
                    N_(
                        "brushfire restarted and your uploaded image was not kept, so the job cannot be"
                        " finished. Your credits were refunded."
                    )
                )
            plan = dataclasses.replace(plan, image=image)
        async with self.db.transaction() as tx:
            job = await jobs.bump_attempts(tx, job.job_id, self.clock())
        if job.attempts > MAX_RESUBMITS:
            raise JobLost(N_("The image worker kept failing on this job. Your credits were refunded."))
        request = plan.request(job.job_id, worker_user(job), Lane(job.lane))
        try:
            info = await self.client.submit(request, image=plan.image)
        except worker_client.WorkerRejected as exc:
            raise JobLost(
                N_("The image worker refused the job after restarting: {reason}."), reason=exc.message
            ) from None
        except (worker_client.WorkerUnavailable, worker_client.QueueFull):
            raise JobLost(N_("The image worker is not taking jobs. Your credits were refunded.")) from None
        log.info("job %s resubmitted to the worker as %s", job.job_id, info.id)
        async with self.db.transaction() as tx:
            return await jobs.set_worker_job(
                tx, job.job_id, info.id, now=self.clock(), status=JobState.QUEUED
            )

    async def _input_image(self, plan: JobPlan) -> bytes | None:
        if plan.parent_generation_id is None:
            return None
        async with self.db.transaction(write=False) as tx:
            gen = await generations.get(tx, plan.parent_generation_id)
        return gen.image if gen is not None and not gen.deleted else None

    async def _settle(self, job: JobRecord, info: JobInfo, images: list[bytes]) -> JobOutcome:
        if info.status is JobStatus.SUCCEEDED:
            return await self._succeed(job, info, images)
        if info.status is JobStatus.CANCELLED:
            job = await self.refund(job, "cancelled", JobState.CANCELLED)
            return JobOutcome(
                job=job,
                state=JobState.CANCELLED,
                info=info,
                message=Message(N_("Cancelled; nothing was charged.")),
            )
        reason = info.error.message if info.error else "unknown error"
        failed = Message(N_("The job failed ({reason}). Your credits were refunded."), {"reason": reason})
        return await self.fail(job, failed, info)

    async def fail(self, job: JobRecord, message: Message, info: JobInfo | None = None) -> JobOutcome:
        job = await self.refund(job, str(message), JobState.REFUNDED)
        return JobOutcome(job=job, state=JobState.REFUNDED, info=info, message=message)

    async def _succeed(self, job: JobRecord, info: JobInfo, images: list[bytes]) -> JobOutcome:
        gens = await self._store_images(job, info, images)
        self.crash.reached("commit")
        await self.quotas.commit(job.job_id)
        async with self.db.transaction() as tx:
            job = await jobs.update_status(tx, job.job_id, JobState.SUCCEEDED, now=self.clock())
        return JobOutcome(job=job, state=JobState.SUCCEEDED, generations=gens, info=info)

    async def _store_images(
        self, job: JobRecord, info: JobInfo, images: list[bytes]
    ) -> list[GenerationRecord]:
        """The job's stored pictures: these, or those a recovered job stored before a crash (checked in
        the same transaction, so they are never stored twice)."""
        plan = JobPlan.from_parameters(job.parameters)
        records = []
        for n, image in enumerate(images):
            w, h = image_size(image, info)
            records.append(
                GenerationRecord(
                    generation_id=uuid.uuid4().hex,
                    job_id=job.job_id,
                    index=n,
                    prompt=plan.prompt,
                    negative_prompt=plan.negative,
                    style=plan.style,
                    seed=info.seed + n,
                    width=w,
                    height=h,
                    steps=info.steps,
                    guidance=info.guidance,
                    model=info.model,
                    kind=job.kind,
                    image=image,
                    parent_generation_id=job.parent_generation_id,
                    nsfw=bool(info.nsfw[n]) if n < len(info.nsfw) else False,
                )
            )
        async with self.db.transaction() as tx:
            if stored := await generations.for_job(tx, job.job_id):
                return stored
            return await generations.add(tx, records, self.clock())
