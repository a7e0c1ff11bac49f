"""Recovery at start: settle the jobs that dead processes left behind (follow, resubmit or refund them),
and deliver the outcomes a crash kept from their members."""

from __future__ import annotations

import asyncio
import dataclasses
import logging

from bot.core.following import JobFollower, JobLost
from bot.core.i18n import N_, Message
from bot.core.lifecycle import ProcessOwner
from bot.core.outcomes import Deliver, JobOutcome
from inference import client as worker_client
from storage import generations, jobs
from storage.jobs import JobRecord, JobState

log = logging.getLogger(__name__)

UNDELIVERED_WINDOW_S = 24 * 3600.0  # a crash-interrupted delivery older than this is not posted any more


class JobRecovery:
    """Claims (one claimant wins) and settles the unfinished and undelivered jobs of dead processes."""

    def __init__(self, follower: JobFollower, owner: ProcessOwner | None) -> None:
        self._follower = follower  # settles each job, and lends its database, quotas, worker and clock
        self._owner = owner

    async def reconcile(self, deliver: Deliver, kinds: frozenset[str] = frozenset({"bot"})) -> int:
        """At start: settle what dead processes of these kinds left behind; returns how many jobs.

        Each unfinished job whose owner is gone is claimed (one claimant wins) and then followed,
        resubmitted or refunded; a bot's jobs may be resubmitted, a command line's only followed (nobody
        waits for a resubmitted one). Each ends by handing its outcome to `deliver`, as does each
        finished job whose outcome a crash kept from its user.
        """
        await self._follower.quotas.refund_jobless()
        async with self._follower.db.transaction(write=False) as tx:
            unfinished = await jobs.list_unfinished(tx)
            finished = await jobs.list_undelivered(tx, self._follower.clock() - UNDELIVERED_WINDOW_S)
        orphans = [job for job in unfinished if self._orphaned(job, kinds)]
        undelivered = [job for job in finished if self._orphaned(job, kinds)]
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
        return owner is None or (owner != self._owner and not owner.alive())

    async def _claim(self, job: JobRecord) -> JobRecord | None:
        mine = str(self._owner) if self._owner else None
        async with self._follower.db.transaction() as tx:
            claimed = await jobs.claim(tx, job.job_id, job.owner, mine, self._follower.clock())
        if not claimed:
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
                    job = await self._follower.recover_submission(job)
                except JobLost as lost:
                    await deliver(await self._follower.fail(job, lost.text))
                    return
            await deliver(await self._follower.follow(job))
        except Exception:
            log.exception("could not recover job %s", job.job_id)

    async def _follow_or_refund(self, job: JobRecord) -> JobOutcome:
        """Follow a job the worker still has to its end; refund one it lost (no resubmit)."""
        if job.worker_job_id is not None and await self._follower.client.health():
            try:
                await self._follower.client.get(job.worker_job_id)
            except worker_client.WorkerError:
                pass
            else:
                return await self._follower.follow(job)
        stopped = N_("The command that started this job stopped before it finished. Credits refunded.")
        return await self._follower.fail(job, Message(stopped))

    async def _redeliver(self, job: JobRecord, deliver: Deliver) -> None:
        try:
            claimed = await self._claim(job)
            if claimed is None:
                return
            gens = []
            if job.status is JobState.SUCCEEDED:
                async with self._follower.db.transaction(write=False) as tx:
                    gens = await generations.for_job(tx, job.job_id)
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
