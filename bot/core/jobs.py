"""The job service: the one place that joins quotas, storage and the inference worker.

validate → quote → reserve (falling back to the relax lane) → persist the job → submit it with the job id
as idempotency key → follow its events → store its images → commit, or refund on any failure. Discord
never appears here: the cogs and the command line both drive jobs through this service.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
import time
import uuid
from collections.abc import Callable
from typing import Literal

from bot.core.errors import InvalidInput, JobNotFound, NotPermitted, QuotaRefused, WorkerDown
from bot.core.guilds import GuildService
from bot.core.i18n import N_, LocalisedError, Message
from bot.core.lifecycle import CrashPoint, ProcessOwner
from bot.core.metrics import BotMetrics
from bot.core.outcomes import Deliver, JobOutcome, ProgressCallback, Ticket, next_state, png_size, worker_user
from bot.core.plans import Action, Delivery, JobPlan, Planner, Requester
from bot.core.progress import ProgressState
from bot.core.quotas.pricing import CostSpec
from bot.core.quotas.records import QuotaError, QuotaStatus, UserBlocked
from bot.core.quotas.service import QuotaService
from bot.core.settings import Limits, Settings
from bot.core.worker_watch import WorkerWatch
from inference import client as worker_client
from inference.client import WorkerClient
from inference.protocol import ErrorCode, EventType, JobInfo
from inference.vocabulary import JobId, JobKind, JobStatus, Lane
from storage.db import Database
from storage.generations import GenerationRecord, GenerationsRepo
from storage.jobs import JobRecord, JobsRepo, JobState

log = logging.getLogger(__name__)

MAX_RESUBMITS = 2
UNDELIVERED_WINDOW_S = 24 * 3600.0  # a crash-interrupted delivery older than this is not posted any more


class JobService:
    """Starts, follows, cancels and recovers jobs. Built once in run.py and shared by cogs and the CLI."""

    def __init__(
        self,
        *,
        settings: Settings,
        db: Database,
        quotas: QuotaService,
        guilds: GuildService,
        client: WorkerClient,
        clock: Callable[[], float] = time.time,
        owner: ProcessOwner | None = None,
        crash: CrashPoint | None = None,
        metrics: BotMetrics | None = None,
    ) -> None:
        self.metrics = metrics or BotMetrics()
        self.owner = owner  # recorded on each job it starts, so a later start can tell if we died
        self.crash = crash or CrashPoint()
        self.limits: Limits = settings.limits
        self.quotas = quotas
        self.guilds = guilds
        self.planner = Planner(settings, guilds.styles)
        self.worker = WorkerWatch(client, self.planner, clock)
        self._client = client
        self._jobs = JobsRepo(db, clock)
        self._generations = GenerationsRepo(db, clock)
        self._clock = clock

    @property
    def worker_healthy(self) -> bool:
        return self.worker.healthy

    # --- results and their messages ---

    async def images_in(self, job_id: JobId, guild_id: int) -> list[GenerationRecord]:
        """The job's images that still exist (without their PNG bytes), if the job belongs to this server."""
        await self.job_in(job_id, guild_id)
        gens = await self._generations.for_job_in_guild(job_id, guild_id, with_png=False)
        return [g for g in gens if not g.deleted]

    async def delete_result(self, job_id: JobId, requester: Requester, message_id: int | None) -> JobRecord:
        """Delete a result's images, pressed on `message_id`: the job's author or a server admin, from
        the result's own message. In DMs (a result delivered there) only the author may."""
        if requester.guild_id:
            job = await self.job_in(job_id, requester.guild_id)
        else:
            found = await self._jobs.get(job_id)
            if found is None or found.user_id != requester.user_id:
                raise NotPermitted(N_("Only the person who made this image can delete it here."))
            job = found
        if job.user_id != requester.user_id and not requester.is_admin:
            raise NotPermitted(N_("Only the person who made this image, or an admin, can delete it."))
        own = {job.result_message_id, job.progress_message_id} - {None}
        if message_id is None or message_id not in own:
            raise NotPermitted(N_("This Delete button is not on that result's own message."))
        await self._generations.mark_job_deleted(job.job_id)
        return job

    async def record_messages(
        self, job_id: JobId, *, progress_message_id: int | None = None, result_message_id: int | None = None
    ) -> JobRecord:
        """Remember where a job's progress or result was posted, so a restarted bot can find it."""
        return await self._jobs.set_messages(
            job_id, progress_message_id=progress_message_id, result_message_id=result_message_id
        )

    # --- planning needs the database only for buttons on earlier results ---

    async def check_admission(self, requester: Requester, *, channel: bool = True) -> None:
        """The cheap rules checked before anything is shown: a blocked member is refused (any lane, and
        challenge entries and votes too), and, for jobs, a channel the server does not allow."""
        if not requester.guild_id:
            return
        if channel:
            self.planner.check_channel(requester, await self.guilds.settings(requester.guild_id))
        status = await self.quotas.status(requester.guild_id, requester.user_id, requester.role_ids)
        if status.blocked:
            raise QuotaRefused(str(UserBlocked()))

    # --- the records a button or command names, only as seen from the server it came from ---

    async def job_in(self, job_id: JobId, guild_id: int) -> JobRecord:
        """The job a button names, if it belongs to the server the press came from.

        Discord's client only shows a member buttons on messages they can see, but a custom_id is just text:
        every lookup is scoped, so a press from another server finds nothing there.
        """
        job = await self._jobs.get_in_guild(job_id, guild_id)
        if job is None and not guild_id:
            raise JobNotFound(N_("In DMs a result's buttons can only delete it; press them in its server."))
        if job is None:
            raise JobNotFound(N_("That result is not in this server's history (deleted, or made elsewhere)."))
        return job

    async def plan_from_result(
        self, action: Action, job_id: JobId, index: int, requester: Requester, instruction: str | None = None
    ) -> JobPlan:
        """A new job from a button on an earlier result: re-roll, vary, upscale or edit image `index`."""
        job = await self.job_in(job_id, requester.guild_id)
        guild = await self.guilds.settings(requester.guild_id)
        self.planner.check_channel(requester, guild)
        parent = JobPlan.from_parameters(job.parameters)
        if action is Action.REROLL:
            if parent.kind is not JobKind.GENERATE and parent.parent_generation_id is None:
                raise InvalidInput(
                    N_("Re-roll needs the original upload, which is not kept; use Edit on the result.")
                )
            image = (
                await self._parent_png(parent.parent_generation_id) if parent.parent_generation_id else None
            )
            return self.planner.reroll(parent, job_id, image, guild)
        gens = await self._generations.for_job(job_id)
        source = next((g for g in gens if g.index == index), None)
        if source is None or source.deleted:
            raise JobNotFound(
                N_(
                    "Image {number} of that result is gone (deleted, expired under this server's image retention, or never made)."
                ),
                number=index + 1,
            )
        return self.planner.derive(action, parent, source, guild, instruction)

    async def _parent_png(self, generation_id: str) -> bytes:
        gen = await self._generations.get(generation_id)
        if gen is None or gen.deleted:
            raise JobNotFound(
                N_(
                    "The image this result was made from has been deleted or has expired under this server's image retention."
                )
            )
        return gen.png

    # --- charging and submitting ---

    def cost_spec(self, plan: JobPlan) -> CostSpec:
        d = self.planner.defaults
        kind: JobKind | Literal["upscale"] = "upscale" if plan.action is Action.UPSCALE else plan.kind
        width, height = plan.width or d.width, plan.height or d.height
        return CostSpec(kind=kind, width=width, height=height, steps=plan.steps or d.steps, count=plan.count)

    async def start(self, requester: Requester, plan: JobPlan, delivery: Delivery | None = None) -> Ticket:
        """Reserve the cost, store the job and hand it to the worker. Any failure refunds and raises."""
        job_id = JobId(uuid.uuid4().hex)
        cost = self.quotas.quote(self.cost_spec(plan))
        lane, fell_back = await self._reserve(job_id, requester, cost, plan.lane)
        delivery = delivery or Delivery()
        record = JobRecord(
            job_id=job_id,
            guild_id=requester.guild_id,
            channel_id=requester.channel_id,
            user_id=requester.user_id,
            kind=plan.kind,
            parameters=plan.parameters(),
            lane=lane,
            cost=cost,
            application_id=delivery.application_id,
            interaction_token=delivery.interaction_token,
            token_expires_at=delivery.token_expires_at,
            language=delivery.language,
            idempotency_key=job_id,
            parent_job_id=plan.parent_job_id,
            parent_generation_id=plan.parent_generation_id,
            owner=str(self.owner) if self.owner else None,
        )
        try:
            record = await self._jobs.create(record)
        except Exception:
            await self.quotas.refund(job_id)
            raise
        try:
            record = await self._submit(record, plan)
        except BaseException:
            await self._jobs.mark_delivered(job_id)  # refused now, and the caller tells the user now
            raise
        self.crash.reached("queued")
        return Ticket(job=record, plan=plan, cost=cost, lane=lane, fell_back_to_relax=fell_back)

    async def _reserve(
        self, job_id: JobId, requester: Requester, cost: int, lane: Lane | None
    ) -> tuple[Lane, bool]:
        """Reserve in the asked lane; with no lane asked, the quota service falls back to relax itself."""
        try:
            reservation = await self.quotas.reserve(
                job_id,
                requester.guild_id,
                requester.user_id,
                requester.role_ids,
                cost,
                lane.value if lane else None,
            )
        except QuotaError as exc:
            raise QuotaRefused(exc.text) from None
        chosen = Lane(reservation.lane)
        return chosen, lane is None and chosen is Lane.RELAX

    async def _submit(self, record: JobRecord, plan: JobPlan) -> JobRecord:
        request = plan.request(record.job_id, worker_user(record), Lane(record.lane))
        try:
            info = await self._client.submit(request, image=plan.image)
        except worker_client.QueueFull as exc:
            await self._refund(record, exc.message)
            seconds = round(exc.retry_after)
            if exc.code is ErrorCode.USER_QUEUE_FULL:
                raise WorkerDown(
                    N_(
                        "You already have as many jobs waiting as allowed. Try again in about {seconds} s;"
                        " nothing was charged."
                    ),
                    seconds=seconds,
                ) from None
            raise WorkerDown(
                N_("The queue is full right now. Try again in about {seconds} s; nothing was charged."),
                seconds=seconds,
            ) from None
        except worker_client.WorkerRejected as exc:
            await self._refund(record, f"rejected: {exc.message}")
            raise InvalidInput(
                N_("The image worker refused this job: {reason}. Nothing was charged."), reason=exc.message
            ) from None
        except worker_client.WorkerUnavailable:
            await self._refund(record, "worker unavailable")
            self.worker.healthy = False
            raise WorkerDown(
                N_("The image worker is not reachable right now; nothing was charged. Try again soon.")
            ) from None
        except BaseException:
            await self._refund(record, "submit failed")
            raise
        state = JobState.RUNNING if info.status is JobStatus.RUNNING else JobState.QUEUED
        return await self._jobs.set_worker_job(record.job_id, info.id, state)

    async def _refund(self, record: JobRecord, reason: str, state: JobState = JobState.REFUNDED) -> JobRecord:
        await self.quotas.refund(record.job_id)
        log.info("job %s refunded: %s", record.job_id, reason)
        return await self._jobs.update_status(record.job_id, state, error=reason[:500])

    # --- following a job to its end ---

    async def follow(self, job: JobRecord, on_progress: ProgressCallback | None = None) -> JobOutcome:
        """Follow the job's events until it ends; store the images and commit, or refund. Never raises
        for a job failure: the outcome says what happened, and a refused job is never charged."""
        started = self._clock()
        progress = on_progress or (lambda _state: None)
        try:
            async with asyncio.timeout(self.limits.job_timeout_s):
                final, pngs = await self._final_info(job, progress)
        except TimeoutError:
            with contextlib.suppress(Exception):
                await self._client.cancel(job.worker_job_id or "")
            return await self._fail(
                job, Message(N_("The job took too long and was stopped. Your credits were refunded."))
            )
        except _Lost as lost:
            return await self._fail(job, lost.text)
        except worker_client.WorkerError as exc:
            log.warning("job %s: worker failed while finishing: %s", job.job_id, exc)
            return await self._fail(
                job, Message(N_("The image worker failed while returning your images. Credits refunded."))
            )
        except Exception:
            log.exception("job %s failed unexpectedly", job.job_id)
            return await self._fail(
                job, Message(N_("Something went wrong with this job. Your credits were refunded."))
            )
        # Past this point the images are in hand: a database error must not refund a delivered result.
        outcome = await self._settle(job, final, pngs)
        return dataclasses.replace(outcome, elapsed_s=self._clock() - started)

    async def _fetch_images(self, info: JobInfo) -> list[bytes]:
        if info.status is not JobStatus.SUCCEEDED:
            return []
        return [await self._client.image(info.id, n) for n in range(info.images)]

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
            job = await self._recover_submission(job)
            attempts += 1
            if attempts > MAX_RESUBMITS:
                raise _Lost(N_("The image worker kept failing on this job. Your credits were refunded."))

    async def _stream(self, job: JobRecord, progress: ProgressCallback) -> JobInfo:
        state = ProgressState(status=JobStatus.QUEUED)
        started: float | None = None
        async for event in self._client.events(job.worker_job_id or ""):
            new = next_state(state, event)
            if new != state:
                state = new
                progress(state)
            if event.type is EventType.STARTED:
                started = self._clock()
                self.metrics.queue_wait.observe(max(0.0, started - job.created_at))
                if job.status is not JobState.RUNNING:
                    job = await self._jobs.update_status(job.job_id, JobState.RUNNING)
                self.crash.reached("running")
            if event.type is EventType.DONE and started is not None:
                self.metrics.generation.observe(max(0.0, self._clock() - started))
            if event.type in (EventType.DONE, EventType.FAILED, EventType.CANCELLED):
                return event.job or await self._client.get(job.worker_job_id or "")
        # The stream ended without a final event (worker shutting down): ask for the state directly.
        info = await self._client.get(job.worker_job_id or "")
        if not info.status.is_final:
            raise worker_client.WorkerUnavailable("event stream ended early")
        return info

    async def _recover_submission(self, job: JobRecord) -> JobRecord:
        """After losing the worker: wait for it, then find the job there or submit it again (same key)."""
        if not await self.worker.wait_until_up(self.limits.worker_grace_s):
            raise _Lost(N_("The image worker stopped and did not come back. Your credits were refunded."))
        if job.worker_job_id:
            with contextlib.suppress(worker_client.JobNotFound):
                await self._client.get(job.worker_job_id)
                return job
        plan = JobPlan.from_parameters(job.parameters)
        if plan.kind is not JobKind.GENERATE:
            image = await self._input_image(plan)
            if image is None:
                raise _Lost(
                    N_(
                        "brushfire restarted and your uploaded image was not kept, so the job cannot be"
                        " finished. Your credits were refunded."
                    )
                )
            plan = dataclasses.replace(plan, image=image)
        job = await self._jobs.bump_attempts(job.job_id)
        if job.attempts > MAX_RESUBMITS:
            raise _Lost(N_("The image worker kept failing on this job. Your credits were refunded."))
        request = plan.request(job.job_id, worker_user(job), Lane(job.lane))
        try:
            info = await self._client.submit(request, image=plan.image)
        except worker_client.WorkerRejected as exc:
            raise _Lost(
                N_("The image worker refused the job after restarting: {reason}."), reason=exc.message
            ) from None
        except (worker_client.WorkerUnavailable, worker_client.QueueFull):
            raise _Lost(N_("The image worker is not taking jobs. Your credits were refunded.")) from None
        log.info("job %s resubmitted to the worker as %s", job.job_id, info.id)
        return await self._jobs.set_worker_job(job.job_id, info.id, JobState.QUEUED)

    async def _input_image(self, plan: JobPlan) -> bytes | None:
        if plan.parent_generation_id is None:
            return None
        gen = await self._generations.get(plan.parent_generation_id)
        return gen.png if gen is not None and not gen.deleted else None

    async def _settle(self, job: JobRecord, info: JobInfo, pngs: list[bytes]) -> JobOutcome:
        if info.status is JobStatus.SUCCEEDED:
            return await self._succeed(job, info, pngs)
        if info.status is JobStatus.CANCELLED:
            job = await self._refund(job, "cancelled", JobState.CANCELLED)
            return JobOutcome(
                job=job,
                state=JobState.CANCELLED,
                info=info,
                message=Message(N_("Cancelled; nothing was charged.")),
            )
        reason = info.error.message if info.error else "unknown error"
        failed = Message(N_("The job failed ({reason}). Your credits were refunded."), {"reason": reason})
        return await self._fail(job, failed, info)

    async def _fail(self, job: JobRecord, message: Message, info: JobInfo | None = None) -> JobOutcome:
        job = await self._refund(job, str(message), JobState.REFUNDED)
        return JobOutcome(job=job, state=JobState.REFUNDED, info=info, message=message)

    async def _succeed(self, job: JobRecord, info: JobInfo, pngs: list[bytes]) -> JobOutcome:
        gens = await self._generations.for_job(job.job_id)
        if not gens:  # a recovered job may have stored its images before a crash
            gens = await self._store_images(job, info, pngs)
        self.crash.reached("commit")
        await self.quotas.commit(job.job_id)
        job = await self._jobs.update_status(job.job_id, JobState.SUCCEEDED)
        return JobOutcome(job=job, state=JobState.SUCCEEDED, generations=gens, info=info)

    async def _store_images(self, job: JobRecord, info: JobInfo, pngs: list[bytes]) -> list[GenerationRecord]:
        plan = JobPlan.from_parameters(job.parameters)
        records = []
        for n, png in enumerate(pngs):
            w, h = png_size(png, info)
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
                    png=png,
                    parent_generation_id=job.parent_generation_id,
                    nsfw=bool(info.nsfw[n]) if n < len(info.nsfw) else False,
                )
            )
        return await self._generations.add(*records)

    async def preview(self, job: JobRecord) -> bytes | None:
        """The worker's newest preview image for a running job, or None."""
        try:
            return await self._client.preview(job.worker_job_id or "")
        except Exception:  # previews are best effort
            return None

    # --- cancel, quota display, recovery, health ---

    async def cancel(self, job_id: JobId, requester: Requester) -> JobRecord:
        """Cancel a queued or running job; only its author or an admin may. The follower refunds it."""
        job = await self.job_in(job_id, requester.guild_id)
        if job.user_id != requester.user_id and not requester.is_admin:
            raise NotPermitted(N_("Only the person who started this job, or an admin, can cancel it."))
        if job.status.is_final:
            raise InvalidInput(N_("That job has already finished."))
        if job.worker_job_id is None:
            return await self._refund(job, "cancelled before submission", JobState.CANCELLED)
        try:
            await self._client.cancel(job.worker_job_id)
        except worker_client.JobNotFound:
            return await self._refund(job, "cancelled; the worker no longer had it", JobState.CANCELLED)
        except worker_client.WorkerUnavailable:
            raise WorkerDown(
                N_("The image worker is not reachable, so the job cannot be cancelled now.")
            ) from None
        return job

    async def quota_status(self, requester: Requester) -> QuotaStatus:
        return await self.quotas.status(requester.guild_id, requester.user_id, requester.role_ids)

    async def mark_delivered(self, job_id: JobId) -> None:
        """Record that a job's outcome reached its user (or that delivery was given up): a restart posts
        only what a crash kept from its user, once."""
        await self._jobs.mark_delivered(job_id)

    async def reconcile(self, deliver: Deliver, kinds: frozenset[str] = frozenset({"bot"})) -> int:
        """At start: settle what dead processes of these kinds left behind; returns how many jobs.

        Each unfinished job whose owner is gone is claimed (one claimant wins) and then followed,
        resubmitted or refunded; a bot's jobs may be resubmitted, a command line's only followed (nobody
        waits for a resubmitted one). Each ends by handing its outcome to `deliver`, as does each
        finished job whose outcome a crash kept from its user.
        """
        await self.quotas.refund_jobless()
        orphans = [job for job in await self._jobs.list_unfinished() if self._orphaned(job, kinds)]
        undelivered = [
            job
            for job in await self._jobs.list_undelivered(self._clock() - UNDELIVERED_WINDOW_S)
            if self._orphaned(job, kinds)
        ]
        if orphans or undelivered:
            log.info("settling %d unfinished and %d undelivered job(s) left by a crash", len(orphans), len(undelivered))  # fmt: skip
        await asyncio.gather(
            *(self._recover(job, deliver) for job in orphans),
            *(self._redeliver(job, deliver) for job in undelivered),
        )
        return len(orphans) + len(undelivered)

    def _orphaned(self, job: JobRecord, kinds: frozenset[str]) -> bool:
        """A job of these kinds whose follower is gone: unknown (an older row, or a service built without
        an owner), or a process that no longer runs."""
        if _owner_kind(job) not in kinds:
            return False
        owner = ProcessOwner.parse(job.owner)
        return owner is None or (owner != self.owner and not owner.alive())

    async def _claim(self, job: JobRecord) -> JobRecord | None:
        mine = str(self.owner) if self.owner else None
        if not await self._jobs.claim(job.job_id, job.owner, mine):
            return None  # another process settles it
        return dataclasses.replace(job, owner=mine)

    async def _recover(self, job: JobRecord, deliver: Deliver) -> None:
        try:
            from_cli = _owner_kind(job) == "cli"
            claimed = await self._claim(job)
            if claimed is None:
                return
            job = claimed
            if from_cli:  # nobody waits for a resubmitted command-line job: follow it or refund it
                await deliver(await self._follow_or_refund(job))
                return
            if job.worker_job_id is None:
                # Stored but not known to be accepted: submitting again with the same key either finds
                # the job at the worker (the reply was lost) or starts it now.
                try:
                    job = await self._recover_submission(job)
                except _Lost as lost:
                    await deliver(await self._fail(job, lost.text))
                    return
            await deliver(await self.follow(job))
        except Exception:
            log.exception("could not recover job %s", job.job_id)

    async def _follow_or_refund(self, job: JobRecord) -> JobOutcome:
        """Follow a job the worker still has to its end; refund one it lost (no resubmit)."""
        if job.worker_job_id is not None and await self._client.health():
            try:
                await self._client.get(job.worker_job_id)
            except worker_client.WorkerError:
                pass
            else:
                return await self.follow(job)
        stopped = N_("The command that started this job stopped before it finished. Credits refunded.")
        return await self._fail(job, Message(stopped))

    async def _redeliver(self, job: JobRecord, deliver: Deliver) -> None:
        try:
            claimed = await self._claim(job)
            if claimed is None:
                return
            gens = await self._generations.for_job(job.job_id) if job.status is JobState.SUCCEEDED else []
            await deliver(
                # The stored error is the English text: one without fields is still found in the catalogue.
                JobOutcome(
                    job=claimed,
                    state=claimed.status,
                    generations=gens,
                    message=Message(claimed.error) if claimed.error else None,
                )
            )
        except Exception:
            log.exception("could not deliver job %s", job.job_id)


def _owner_kind(job: JobRecord) -> str:
    owner = ProcessOwner.parse(job.owner)
    return owner.kind if owner else "bot"  # rows from before owners were recorded were the bot's


class _Lost(LocalisedError):
    """The job cannot be finished; the text tells its member why (the follower refunds it)."""
