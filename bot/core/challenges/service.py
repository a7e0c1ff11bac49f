"""The challenge service: each challenge's lifecycle and phase schedule, results, season points and bonuses.

Discord never appears here. The cog attaches an `Announcer` that posts what happens; the service decides
what happens and when. Every phase change is a database transition first and an announcement second: a
crash between the two leaves `announced` behind `phase`, and the next start posts what was missed. Phase
changes run from APScheduler jobs whose times come from the injected clock; on start the schedule is rebuilt
from the database and anything already due fires at once.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta

from apscheduler.schedulers.asyncio import AsyncIOScheduler
from apscheduler.triggers.date import DateTrigger

from bot.core.challenges import closing
from bot.core.challenges.entries import ChallengeEntries
from bot.core.challenges.rules import (
    RHYTHMS,
    Announcer,
    ChallengeRefused,
    ChallengeSettings,
    ScheduleRequest,
    StartRequest,
    check_entries,
    check_phase_length,
    check_theme,
    live_challenge,
    next_round,
    require_challenge,
    season_of,
    span,
)
from bot.core.i18n import N_
from bot.core.quotas.service import QuotaService
from storage import challenge_entries as entry_store
from storage import challenges as store
from storage.challenges import (
    ChallengeRecord,
    NewChallenge,
    NewSchedule,
    Phase,
    ScheduleRecord,
)
from storage.db import Database

log = logging.getLogger(__name__)


class ChallengeService(ChallengeEntries):
    """Runs every guild's challenges. Built once with the bot; `attach` gives it Discord and a scheduler."""

    def __init__(
        self,
        *,
        db: Database,
        quotas: QuotaService,
        settings: ChallengeSettings,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.db = db
        self.quotas = quotas
        self.settings = settings
        self.clock = clock
        self.announcer: Announcer | None = None
        self._scheduler: AsyncIOScheduler | None = None
        self._lock = asyncio.Lock()  # one phase change at a time: a timer and "close now" never both run

    def attach(self, announcer: Announcer, scheduler: AsyncIOScheduler) -> None:
        self.announcer = announcer
        self._scheduler = scheduler

    async def drain(self, timeout_s: float = 5.0) -> None:
        """Wait (briefly) for a phase change in flight, so closing does not cut it between post and record."""
        if self._scheduler is not None and self._scheduler.running:
            self._scheduler.pause()  # no new phase change starts while closing
        try:
            async with asyncio.timeout(timeout_s), self._lock:
                pass
        except TimeoutError:
            log.warning("closing during a challenge phase change; the next start finishes its announcement")

    # --- the schedule ---

    async def rebuild(self) -> None:
        """At start (and whenever the clock jumps): post missed announcements and schedule every deadline.

        A deadline that passed while the bot was down is scheduled for now, so it fires at once.
        """
        async with self.db.transaction(write=False) as tx:
            pending = await store.unannounced(tx)
        for challenge in pending:
            async with self._lock:
                await self._announce_or_retry_later(challenge)
        async with self.db.transaction(write=False) as tx:
            live = await store.live_challenges(tx)
        for challenge in live:
            self._schedule_challenge(challenge)
        async with self.db.transaction(write=False) as tx:
            schedules = await store.active_schedules(tx)
        for schedule in schedules:
            self._schedule_recurrence(schedule)
        log.info("challenge schedule rebuilt: %d live challenge(s), %d unannounced", len(live), len(pending))

    def _wall_time(self, at: float) -> datetime:
        """The real time at which the clock will read `at` (now, if it already has)."""
        return datetime.now(UTC) + timedelta(seconds=max(0.0, at - self.clock()))

    def _schedule_challenge(self, challenge: ChallengeRecord) -> None:
        if self._scheduler is None:
            return
        job_id = f"brushfire.challenge.{challenge.challenge_id}"
        due = challenge.next_change_at
        if due is None:
            if self._scheduler.get_job(job_id) is not None:
                self._scheduler.remove_job(job_id)
            return
        self._scheduler.add_job(
            self.advance,
            DateTrigger(run_date=self._wall_time(due)),
            args=[challenge.challenge_id],
            id=job_id,
            replace_existing=True,
            misfire_grace_time=None,  # late is better than never: a deadline is never skipped
            coalesce=True,
        )

    def _schedule_recurrence(self, schedule: ScheduleRecord) -> None:
        if self._scheduler is None:
            return
        self._scheduler.add_job(
            self.run_recurrence,
            DateTrigger(run_date=self._wall_time(schedule.next_start_at)),
            args=[schedule.schedule_id],
            id=f"brushfire.challenge-schedule.{schedule.schedule_id}",
            replace_existing=True,
            misfire_grace_time=None,
            coalesce=True,
        )

    # --- phase changes ---

    async def advance(self, challenge_id: int) -> ChallengeRecord | None:
        """Move a challenge through every phase change that is due (both, if the bot slept through voting)."""
        try:
            async with self._lock:
                challenge = await self._get(challenge_id)
                while challenge is not None and challenge.phase.live:
                    due = challenge.next_change_at
                    if due is None or due > self.clock():
                        break
                    challenge = await self._step(challenge)
                if challenge is not None:
                    self._schedule_challenge(challenge)
                return challenge
        except Exception:
            log.exception("challenge %s: phase change failed", challenge_id)
            return None

    async def _step(self, challenge: ChallengeRecord) -> ChallengeRecord:
        if challenge.phase is Phase.SUBMISSIONS:
            changed = await self._set_phase(challenge, Phase.SUBMISSIONS, Phase.VOTING)
        else:
            changed = await closing.close(self.db, self.settings, challenge.challenge_id, self.clock())
            await closing.grant_bonuses(self.db, self.quotas, self.settings, changed, self.clock())
        log.info("challenge %d: %s -> %s", challenge.challenge_id, challenge.phase, changed.phase)
        return await self._announce_or_retry_later(changed)

    async def _set_phase(self, challenge: ChallengeRecord, old: Phase, new: Phase) -> ChallengeRecord:
        async with self.db.transaction() as tx:
            current = await require_challenge(tx, challenge.challenge_id)
            if current.phase is old:
                await store.set_phase(tx, current.challenge_id, new, self.clock())
            return await require_challenge(tx, challenge.challenge_id)

    async def _announce(self, challenge: ChallengeRecord) -> ChallengeRecord:
        """Post the current phase's announcement once; on failure leave it for the next start."""
        if self.announcer is None:
            return challenge
        challenge = await self._get_required(challenge.challenge_id)  # a caller's copy may be stale
        if challenge.announced is challenge.phase:
            return challenge
        try:
            if challenge.phase is Phase.SUBMISSIONS:
                if challenge.message_id is None:
                    message_id, gallery_id = await self.announcer.opened(challenge)
                    async with self.db.transaction() as tx:
                        await store.set_messages(tx, challenge.challenge_id, message_id, gallery_id)
            elif challenge.phase is Phase.VOTING:
                await self.announcer.voting(challenge)
            elif challenge.phase is Phase.CLOSED:
                async with self.db.transaction(write=False) as tx:
                    results = await entry_store.results(tx, challenge.challenge_id)
                await self.announcer.closed(challenge, results)
            else:
                await self.announcer.cancelled(challenge)
        except Exception:
            log.exception("challenge %d: could not announce %s", challenge.challenge_id, challenge.phase)
            raise
        async with self.db.transaction() as tx:
            await store.set_announced(tx, challenge.challenge_id, challenge.phase)
        return await self._get_required(challenge.challenge_id)

    async def _announce_or_retry_later(self, challenge: ChallengeRecord) -> ChallengeRecord:
        """Announce; a failure is logged (by `_announce`) and left for the next start to post."""
        try:
            return await self._announce(challenge)
        except Exception:
            return challenge

    # --- admin actions ---

    async def start(self, request: StartRequest) -> ChallengeRecord:
        """Open a challenge now and announce it; refuses bad lengths and a channel that has one running."""
        submit_s = check_phase_length(self.settings, request.submit_s, N_("The submission phase"))
        vote_s = check_phase_length(self.settings, request.vote_s, N_("The voting phase"))
        theme = check_theme(request.theme)
        now = self.clock()
        new = NewChallenge(
            guild_id=request.guild_id,
            channel_id=request.channel_id,
            theme=theme,
            style=request.style,
            opens_at=now,
            voting_at=now + submit_s,
            closes_at=now + submit_s + vote_s,
            max_entries=check_entries(self.settings, request.max_entries),
            vote_budget=self.settings.vote_budget,
            season=season_of(now, self.settings.season),
            created_by=request.created_by,
        )
        return await self._open(new)

    async def _open(self, new: NewChallenge) -> ChallengeRecord:
        try:
            async with self.db.transaction() as tx:
                challenge = await require_challenge(tx, await store.insert_challenge(tx, new, self.clock()))
        except store.ChannelBusy:
            raise ChallengeRefused(
                N_("<#{channel_id}> already has a challenge running; close or cancel it first."),
                channel_id=new.channel_id,
            ) from None
        async with self._lock:
            try:
                challenge = await self._announce(challenge)
            except ChallengeRefused:
                async with self.db.transaction() as tx:
                    await store.delete_challenge(tx, challenge.challenge_id)
                raise
            except Exception:
                async with self.db.transaction() as tx:
                    await store.delete_challenge(tx, challenge.challenge_id)
                raise ChallengeRefused(
                    N_(
                        "brushfire could not post the challenge in <#{channel_id}> (check its permissions there)."
                    ),
                    channel_id=new.channel_id,
                ) from None
        self._schedule_challenge(challenge)
        return challenge

    async def extend(self, challenge: ChallengeRecord, by_s: int) -> ChallengeRecord:
        """Push the current phase's end (and everything after it) back by `by_s`."""
        check_phase_length(self.settings, by_s, N_("The extension"))

        async with self._lock, self.db.transaction() as tx:
            current = await live_challenge(tx, challenge.challenge_id)
            shift_voting = current.phase is Phase.SUBMISSIONS
            voting_at = current.voting_at + by_s if shift_voting else current.voting_at
            await store.set_deadlines(tx, current.challenge_id, voting_at, current.closes_at + by_s)
            changed = await require_challenge(tx, current.challenge_id)
        self._schedule_challenge(changed)
        return changed

    async def end_phase_now(self, challenge: ChallengeRecord) -> ChallengeRecord:
        """Close the current phase early: submissions go to voting now, voting goes to results now."""
        now = self.clock()
        async with self._lock, self.db.transaction() as tx:
            current = await live_challenge(tx, challenge.challenge_id)
            if current.phase is Phase.SUBMISSIONS:
                await store.set_deadlines(tx, current.challenge_id, now, max(current.closes_at, now + 1))
            else:
                await store.set_deadlines(tx, current.challenge_id, min(current.voting_at, now - 1), now)
        return await self.advance(challenge.challenge_id) or challenge

    async def cancel(self, challenge: ChallengeRecord) -> ChallengeRecord:
        async with self._lock:
            async with self.db.transaction() as tx:
                current = await live_challenge(tx, challenge.challenge_id)
                await store.set_phase(tx, current.challenge_id, Phase.CANCELLED, self.clock())
                changed = await require_challenge(tx, current.challenge_id)
            self._schedule_challenge(changed)
            return await self._announce_or_retry_later(changed)

    # --- recurring challenges ---

    async def schedule(self, request: ScheduleRequest) -> ScheduleRecord:
        """Store a recurring challenge; the first starts at `first_start_at` (default: now)."""
        period = RHYTHMS.get(request.rhythm)
        if period is None:
            raise ChallengeRefused(N_("The rhythm must be one of {rhythms}."), rhythms=", ".join(RHYTHMS))
        submit_s = check_phase_length(self.settings, request.submit_s, N_("The submission phase"))
        vote_s = check_phase_length(self.settings, request.vote_s, N_("The voting phase"))
        if submit_s + vote_s > period:
            raise ChallengeRefused(
                N_(
                    "Submissions ({submit}) and voting ({vote}) must fit in one {rhythm} period ({period}), or the challenges would overlap."
                ),
                submit=span(submit_s),
                vote=span(vote_s),
                rhythm=request.rhythm,
                period=span(period),
            )
        themes = tuple(check_theme(t) for t in request.themes)
        if not themes:
            raise ChallengeRefused(N_("Give at least one theme (separate several with `;`)."))
        new = NewSchedule(
            guild_id=request.guild_id,
            channel_id=request.channel_id,
            style=request.style,
            themes=themes,
            period_s=period,
            submit_s=submit_s,
            vote_s=vote_s,
            max_entries=check_entries(self.settings, request.max_entries),
            next_start_at=request.first_start_at or self.clock(),
            created_by=request.created_by,
        )

        try:
            async with self.db.transaction() as tx:
                schedule = await store.get_schedule(tx, await store.insert_schedule(tx, new, self.clock()))
        except store.ChannelBusy:
            raise ChallengeRefused(
                N_("<#{channel_id}> already has a recurring challenge; stop it first."),
                channel_id=new.channel_id,
            ) from None
        assert schedule is not None
        self._schedule_recurrence(schedule)
        return schedule

    async def stop_schedule(self, guild_id: int, channel_id: int) -> ScheduleRecord:
        async with self.db.transaction() as tx:
            schedule = next(
                (s for s in await store.active_schedules(tx, guild_id) if s.channel_id == channel_id), None
            )
            if schedule is None:
                raise ChallengeRefused(
                    N_("<#{channel_id}> has no recurring challenge."), channel_id=channel_id
                )
            await store.stop_schedule(tx, schedule.schedule_id)
        if self._scheduler is not None:
            job = self._scheduler.get_job(f"brushfire.challenge-schedule.{schedule.schedule_id}")
            if job is not None:
                job.remove()
        return schedule

    async def schedules(self, guild_id: int) -> list[ScheduleRecord]:
        async with self.db.transaction(write=False) as tx:
            return await store.active_schedules(tx, guild_id)

    async def run_recurrence(self, schedule_id: int) -> ChallengeRecord | None:
        """Start the schedule's next challenge if it is due; a missed start (the bot was down) starts now.

        Missed periods are not made up one by one: the next start moves to the first slot after now.
        """
        try:
            return await self._recur(schedule_id)
        except Exception:
            log.exception("recurring challenge %d failed to start", schedule_id)
            return None

    async def _recur(self, schedule_id: int) -> ChallengeRecord | None:
        async with self.db.transaction(write=False) as tx:
            schedule = await store.get_schedule(tx, schedule_id)
        now = self.clock()
        if schedule is None or not schedule.active:
            return None
        if schedule.next_start_at > now:
            self._schedule_recurrence(schedule)
            return None
        new, next_start = next_round(self.settings, schedule, now)
        for live in await self.live(schedule.guild_id):
            if live.channel_id == schedule.channel_id:  # the last round ends at this instant: end it first
                await self.advance(live.challenge_id)
        async with self.db.transaction() as tx:
            await store.advance_schedule(tx, schedule_id, schedule.next_theme + 1, next_start)
        self._schedule_recurrence(
            dataclasses.replace(schedule, next_start_at=next_start, next_theme=schedule.next_theme + 1)
        )
        try:
            return await self._open(new)
        except ChallengeRefused as refused:
            log.warning("recurring challenge %d skipped a round: %s", schedule_id, refused.message)
            return None

    # --- finding a challenge ---
