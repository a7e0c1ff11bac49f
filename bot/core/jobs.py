"""The job service: the one place that joins quotas, storage and the inference worker.

validate → quote → reserve (falling back to the relax lane) → persist the job → submit it with the job id
as idempotency key → follow its events → store its images → commit, or refund on any failure. Discord
never appears here: the cogs and the command line both drive jobs through this service. Following a job
to its end lives in `following.py`, settling what a crash left behind in `recovery.py`.
"""

from __future__ import annotations

import dataclasses
import logging
import time
import uuid
from collections.abc import Callable

from bot.core.errors import BrushfireError, InvalidInput, JobNotFound, NotPermitted, QuotaRefused, WorkerDown
from bot.core.following import JobFollower
from bot.core.guilds import GuildService
from bot.core.i18n import N_
from bot.core.lifecycle import CrashPoint, ProcessOwner
from bot.core.metrics import BotMetrics
from bot.core.outcomes import Deliver, JobOutcome, ProgressCallback, Ticket, worker_user
from bot.core.plans import Action, Delivery, JobPlan, Planner, Requester
from bot.core.quotas.pricing import CostSpec
from bot.core.quotas.records import QuotaError, QuotaStatus, UserBlocked
from bot.core.quotas.service import QuotaService
from bot.core.recovery import JobRecovery
from bot.core.settings import Limits, Settings
from bot.core.worker_watch import WorkerWatch
from inference import client as worker_client
from inference.client import WorkerClient
from inference.protocol import ErrorCode, InpaintSpec
from inference.vocabulary import JobId, JobKind, JobStatus, Lane
from storage import generations, jobs
from storage.db import Database
from storage.generations import GenerationRecord
from storage.jobs import JobRecord, JobState

log = logging.getLogger(__name__)


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
        self._db = db
        self._follower = JobFollower(
            db=db,
            quotas=quotas,
            client=client,
            worker=self.worker,
            limits=self.limits,
            crash=self.crash,
            metrics=self.metrics,
            clock=clock,
        )
        self._recovery = JobRecovery(self._follower, owner)
        self._clock = clock

    @property
    def worker_healthy(self) -> bool:
        return self.worker.healthy

    # --- results and their messages ---

    async def images_in(self, job_id: JobId, guild_id: int) -> list[GenerationRecord]:
        """The job's images that still exist (without their PNG bytes), if the job belongs to this server."""
        await self.job_in(job_id, guild_id)
        async with self._db.transaction(write=False) as tx:
            gens = await generations.for_job_in_guild(tx, job_id, guild_id, with_image=False)
        return [g for g in gens if not g.deleted]

    async def delete_result(self, job_id: JobId, requester: Requester, message_id: int | None) -> JobRecord:
        """Delete a result's images, pressed on `message_id`: the job's author or a server admin, from
        the result's own message. In DMs (a result delivered there) only the author may."""
        if requester.guild_id:
            job = await self.job_in(job_id, requester.guild_id)
        else:
            async with self._db.transaction(write=False) as tx:
                found = await jobs.get(tx, job_id)
            if found is None or found.user_id != requester.user_id:
                raise NotPermitted(N_("Only the person who made this image can delete it here."))
            job = found
        if job.user_id != requester.user_id and not requester.is_admin:
            raise NotPermitted(N_("Only the person who made this image, or an admin, can delete it."))
        own = {job.result_message_id, job.progress_message_id} - {None}
        if message_id is None or message_id not in own:
            raise NotPermitted(N_("This Delete button is not on that result's own message."))
        async with self._db.transaction() as tx:
            await generations.mark_job_deleted(tx, job.job_id)
        return job

    async def record_messages(
        self, job_id: JobId, *, progress_message_id: int | None = None, result_message_id: int | None = None
    ) -> JobRecord:
        """Remember where a job's progress or result was posted, so a restarted bot can find it."""
        async with self._db.transaction() as tx:
            return await jobs.set_messages(
                tx,
                job_id,
                now=self._clock(),
                progress_message_id=progress_message_id,
                result_message_id=result_message_id,
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
        async with self._db.transaction(write=False) as tx:
            job = await jobs.get_in_guild(tx, job_id, guild_id)
        if job is None and not guild_id:
            raise JobNotFound(N_("In DMs a result's buttons can only delete it; press them in its server."))
        if job is None:
            raise JobNotFound(N_("That result is not in this server's history (deleted, or made elsewhere)."))
        return job

    async def plan_from_result(
        self,
        action: Action,
        job_id: JobId,
        index: int,
        requester: Requester,
        instruction: str | None = None,
        *,
        spec: InpaintSpec | None = None,
    ) -> JobPlan:
        """A new job from a button on an earlier result: re-roll, vary, upscale, edit, zoom out, pan or
        vary a region (`spec`) of image `index`."""
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
                await self._parent_image(parent.parent_generation_id) if parent.parent_generation_id else None
            )
            return self.planner.reroll(parent, job_id, image, guild)
        async with self._db.transaction(write=False) as tx:
            gens = await generations.for_job(tx, job_id)
        source = next((g for g in gens if g.index == index), None)
        if source is None or source.deleted:
            raise JobNotFound(
                N_(
                    "Image {number} of that result is gone (deleted, expired under this server's image retention, or never made)."
                ),
                number=index + 1,
            )
        return self.planner.derive(action, parent, source, guild, instruction, spec=spec)

    async def _parent_image(self, generation_id: str) -> bytes:
        async with self._db.transaction(write=False) as tx:
            gen = await generations.get(tx, generation_id)
        if gen is None or gen.deleted:
            raise JobNotFound(
                N_(
                    "The image this result was made from has been deleted or has expired under this server's image retention."
                )
            )
        return gen.image

    # --- charging and submitting ---

    def cost_spec(self, plan: JobPlan) -> CostSpec:
        d = self.planner.defaults
        width, height = plan.width or d.width, plan.height or d.height
        redraw = plan.strength if plan.kind is JobKind.UPSCALE and plan.creative else None
        return CostSpec(
            kind=plan.kind,
            width=width,
            height=height,
            steps=plan.steps or d.steps,
            count=plan.count,
            redraw_strength=redraw,
        )

    def upscale_costs(self, plan: JobPlan, width: int, height: int) -> dict[Action, int] | None:
        """What upscaling one `width`x`height` image of this result costs, subtle and creative, before a
        press (the result shows it); None when it cannot be upscaled here (no upscaler, over the cap)."""
        base = dataclasses.replace(plan, width=width, height=height, count=1, creative=False)
        costs = {}
        for action in (Action.UPSCALE, Action.UPSCALE_CREATIVE):
            try:
                costs[action] = self.quotas.quote(self.cost_spec(self.planner.upscale_plan(base, action)))
            except BrushfireError:
                return None
        return costs

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
            async with self._db.transaction() as tx:
                record = await jobs.create(tx, record, self._clock())
        except Exception:
            await self.quotas.refund(job_id)
            raise
        try:
            record = await self._submit(record, plan)
        except BaseException:
            await self.mark_delivered(job_id)  # refused now, and the caller tells the user now
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
            await self._follower.refund(record, exc.message)
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
            await self._follower.refund(record, f"rejected: {exc.message}")
            raise InvalidInput(
                N_("The image worker refused this job: {reason}. Nothing was charged."), reason=exc.message
            ) from None
        except worker_client.WorkerUnavailable:
            await self._follower.refund(record, "worker unavailable")
            self.worker.healthy = False
            raise WorkerDown(
                N_("The image worker is not reachable right now; nothing was charged. Try again soon.")
            ) from None
        except BaseException:
            await self._follower.refund(record, "submit failed")
            raise
        state = JobState.RUNNING if info.status is JobStatus.RUNNING else JobState.QUEUED
        async with self._db.transaction() as tx:
            return await jobs.set_worker_job(tx, record.job_id, info.id, now=self._clock(), status=state)

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
            return await self._follower.refund(job, "cancelled before submission", JobState.CANCELLED)
        try:
            await self._client.cancel(job.worker_job_id)
        except worker_client.JobNotFound:
            return await self._follower.refund(
                job, "cancelled; the worker no longer had it", JobState.CANCELLED
            )
        except worker_client.WorkerUnavailable:
            raise WorkerDown(
                N_("The image worker is not reachable, so the job cannot be cancelled now.")
            ) from None
        return job

    async def quota_status(self, requester: Requester) -> QuotaStatus:
        return await self.quotas.status(requester.guild_id, requester.user_id, requester.role_ids)

    async def follow(self, job: JobRecord, on_progress: ProgressCallback | None = None) -> JobOutcome:
        """Follow the job's events until it ends; store the images and commit, or refund. Never raises
        for a job failure: the outcome says what happened, and a refused job is never charged."""
        return await self._follower.follow(job, on_progress)

    async def reconcile(self, deliver: Deliver, kinds: frozenset[str] = frozenset({"bot"})) -> int:
        """At start: settle what dead processes of these kinds left behind (see `JobRecovery`)."""
        return await self._recovery.reconcile(deliver, kinds)

    async def mark_delivered(self, job_id: JobId) -> None:
        """Record that a job's outcome reached its user (or that delivery was given up): a restart posts
        only what a crash kept from its user, once."""
        async with self._db.transaction() as tx:
            await jobs.mark_delivered(tx, job_id, self._clock())
