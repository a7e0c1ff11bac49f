"""The challenge service: lifecycle, phase scheduling, entries, votes, results, season points and bonuses.

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
import math
import re
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Literal, Protocol

from apscheduler.schedulers.asyncio import AsyncIOScheduler
from apscheduler.triggers.date import DateTrigger
from pydantic import BaseModel, ConfigDict, Field

from bot.core.errors import BrushfireError
from bot.core.i18n import N_, Message
from bot.core.quotas.records import QuotaError
from bot.core.quotas.service import QuotaService
from storage import challenges as store
from storage.challenges import (
    ChallengeRecord,
    EntryRecord,
    NewChallenge,
    NewSchedule,
    Phase,
    ResultRecord,
    ScheduleRecord,
    Standing,
)
from storage.db import Database, SyncTx

log = logging.getLogger(__name__)

DAY_S = 24 * 3600
RHYTHMS = {"daily": DAY_S, "weekly": 7 * DAY_S}
_DURATION_PART = re.compile(r"(\d+(?:\.\d+)?)\s*([wdhm])")
_UNIT_S = {"w": 7 * DAY_S, "d": DAY_S, "h": 3600, "m": 60}
# A challenge's phase as members read it ("Challenge #3 is already {phase}.", "“harbours” is now {phase}.").
PHASE_NAMES = {
    Phase.SUBMISSIONS: N_("open for submissions"),
    Phase.VOTING: N_("in voting"),
    Phase.CLOSED: N_("closed"),
    Phase.CANCELLED: N_("cancelled"),
}


class ChallengeSettings(BaseModel):
    """How challenges score and reward."""

    model_config = ConfigDict(extra="forbid")

    vote_budget: int = Field(default=3, ge=1, le=25)
    max_entries: int = Field(default=3, ge=1, le=10)
    # Season points by place (first, second, ...); every other ranked entry gets `participation_points`.
    points: list[int] = Field(default_factory=lambda: [10, 6, 3], max_length=10)
    participation_points: int = Field(default=1, ge=0, le=100)
    # Bonus quota credits by place, granted through the quota service to entries with at least one vote.
    bonus_credits: list[int] = Field(default_factory=list, max_length=10)
    bonus_days: int | None = Field(default=30, ge=1, le=365)
    min_phase_s: int = Field(default=60, ge=1)
    max_phase_s: int = Field(default=60 * DAY_S, ge=60)
    season: Literal["month", "quarter", "year"] = "quarter"


class ChallengeRefused(BrushfireError):
    """A challenge command or button that breaks a rule; the message says which."""


class Announcer(Protocol):
    """Posts what the service decided. Each method may raise; the service logs and retries later."""

    async def opened(self, challenge: ChallengeRecord) -> tuple[int, int]:
        """Post the announcement and open the gallery; returns (announcement id, gallery channel id)."""
        ...

    async def entry_posted(self, challenge: ChallengeRecord, entry: EntryRecord, png: bytes) -> int:
        """Post an entry to the gallery without its author; returns the message id."""
        ...

    async def entry_removed(self, challenge: ChallengeRecord, entry: EntryRecord) -> None: ...

    async def voting(self, challenge: ChallengeRecord) -> None: ...

    async def closed(self, challenge: ChallengeRecord, results: list[ResultRecord]) -> None: ...

    async def cancelled(self, challenge: ChallengeRecord) -> None: ...


@dataclass(frozen=True, slots=True)
class StartRequest:
    guild_id: int
    channel_id: int
    theme: str
    style: str
    submit_s: int
    vote_s: int
    created_by: int
    max_entries: int | None = None


@dataclass(frozen=True, slots=True)
class ScheduleRequest:
    guild_id: int
    channel_id: int
    style: str
    themes: tuple[str, ...]
    rhythm: str
    submit_s: int
    vote_s: int
    created_by: int
    max_entries: int | None = None
    first_start_at: float | None = None


@dataclass(frozen=True, slots=True)
class VoteReceipt:
    entry_number: int
    used: int
    budget: int


def parse_duration(text: str) -> int:
    """`3d`, `12h`, `1d 6h`, `90m`, `1w` (or a bare number of hours) as seconds; refuses zero and negatives."""
    cleaned = text.strip().lower()
    if cleaned.startswith("-"):
        raise ChallengeRefused(
            N_("`{text}` is negative: a phase must last longer than zero."), text=text[:30]
        )
    if re.fullmatch(r"\d+(?:\.\d+)?", cleaned):
        seconds = float(cleaned) * 3600
    elif cleaned and re.fullmatch(rf"(?:{_DURATION_PART.pattern}\s*)+", cleaned):
        seconds = sum(float(n) * _UNIT_S[u] for n, u in _DURATION_PART.findall(cleaned))
    else:
        raise ChallengeRefused(
            N_("`{text}` is not a length of time; write it like `3d`, `12h` or `1d 6h`."), text=text[:30]
        )
    if seconds <= 0:
        raise ChallengeRefused(N_("`{text}` is zero: a phase must last longer than zero."), text=text[:30])
    return int(seconds)


def season_of(at: float, kind: str) -> str:
    day = datetime.fromtimestamp(at, UTC)
    if kind == "month":
        return f"{day.year}-{day.month:02d}"
    if kind == "year":
        return str(day.year)
    return f"{day.year}-Q{(day.month - 1) // 3 + 1}"


class ChallengeService:
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
        pending = await self.db.run(store.unannounced, write=False)
        for challenge in pending:
            async with self._lock:
                await self._announce_or_retry_later(challenge)
        live = await self.db.run(store.live_challenges, write=False)
        for challenge in live:
            self._schedule_challenge(challenge)
        for schedule in await self.db.run(store.active_schedules, write=False):
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
            changed = await self._close(challenge)
            await self._grant_bonuses(changed)
        log.info("challenge %d: %s -> %s", challenge.challenge_id, challenge.phase, changed.phase)
        return await self._announce_or_retry_later(changed)

    async def _set_phase(self, challenge: ChallengeRecord, old: Phase, new: Phase) -> ChallengeRecord:
        now = self.clock()

        def body(tx: SyncTx) -> ChallengeRecord:
            current = _require(tx, challenge.challenge_id)
            if current.phase is old:
                store.set_phase(tx, current.challenge_id, new, now)
            return _require(tx, challenge.challenge_id)

        return await self.db.run(body)

    async def _close(self, challenge: ChallengeRecord) -> ChallengeRecord:
        """Rank the entries and store results with the phase change, in one transaction."""
        now = self.clock()
        points, bonus = self.settings.points, self.settings.bonus_credits

        def body(tx: SyncTx) -> ChallengeRecord:
            current = _require(tx, challenge.challenge_id)
            if current.phase is not Phase.VOTING:
                return current
            ranked = store.tally(tx, current.challenge_id)
            store.insert_results(
                tx,
                [
                    ResultRecord(
                        challenge_id=current.challenge_id,
                        entry_id=t.entry.entry_id,
                        number=t.entry.number,
                        user_id=t.entry.user_id,
                        rank=place,
                        votes=t.votes,
                        points=points[place - 1]
                        if place <= len(points)
                        else self.settings.participation_points,
                        bonus=bonus[place - 1] if place <= len(bonus) and t.votes > 0 else 0,
                    )
                    for place, t in enumerate(ranked, start=1)
                ],
            )
            store.set_phase(tx, current.challenge_id, Phase.CLOSED, now)
            return _require(tx, current.challenge_id)

        return await self.db.run(body)

    async def _grant_bonuses(self, challenge: ChallengeRecord) -> None:
        """Grant winners their bonus credits; a grant already made for this place is never made twice."""
        results = await self.db.run(lambda tx: store.results(tx, challenge.challenge_id), write=False)
        for result in results:
            if result.bonus > 0 and result.bonus_id is None:
                try:
                    await self._grant_bonus(challenge, result)
                except QuotaError:
                    log.exception(
                        "challenge %d: could not grant a bonus to %d", challenge.challenge_id, result.user_id
                    )

    async def _grant_bonus(self, challenge: ChallengeRecord, result: ResultRecord) -> None:
        reason = f"challenge #{challenge.challenge_id}: place {result.rank}"

        def granted(tx: SyncTx) -> int | None:
            return store.bonus_granted(tx, challenge.guild_id, result.user_id, reason)

        days = self.settings.bonus_days
        bonus_id = await self.db.run(granted, write=False) or await self.quotas.admin.grant_bonus(
            challenge.guild_id,
            result.user_id,
            result.bonus,
            actor_id=challenge.created_by,
            expires_at=self.clock() + days * DAY_S if days else None,
            reason=reason,
        )

        def record(tx: SyncTx) -> None:
            store.set_bonus_id(tx, challenge.challenge_id, result.entry_id, bonus_id)

        await self.db.run(record)

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
                    await self.db.run(
                        lambda tx: store.set_messages(tx, challenge.challenge_id, message_id, gallery_id)
                    )
            elif challenge.phase is Phase.VOTING:
                await self.announcer.voting(challenge)
            elif challenge.phase is Phase.CLOSED:
                results = await self.db.run(lambda tx: store.results(tx, challenge.challenge_id), write=False)
                await self.announcer.closed(challenge, results)
            else:
                await self.announcer.cancelled(challenge)
        except Exception:
            log.exception("challenge %d: could not announce %s", challenge.challenge_id, challenge.phase)
            raise
        await self.db.run(lambda tx: store.set_announced(tx, challenge.challenge_id, challenge.phase))
        return await self._get_required(challenge.challenge_id)

    async def _announce_or_retry_later(self, challenge: ChallengeRecord) -> ChallengeRecord:
        """Announce; a failure is logged (by `_announce`) and left for the next start to post."""
        try:
            return await self._announce(challenge)
        except Exception:
            return challenge

    # --- admin actions ---

    def _check_phase_length(self, seconds: int, what: str) -> int:
        s = self.settings
        if seconds <= 0:
            raise ChallengeRefused(N_("{what} must last longer than zero."), what=Message(what))
        if not s.min_phase_s <= seconds <= s.max_phase_s:
            raise ChallengeRefused(
                N_("{what} must last from {low} to {high}, not {length}."),
                what=Message(what),
                low=_span(s.min_phase_s),
                high=_span(s.max_phase_s),
                length=_span(seconds),
            )
        return seconds

    def _check_entries(self, max_entries: int | None) -> int:
        value = self.settings.max_entries if max_entries is None else max_entries
        if not 1 <= value <= 10:
            raise ChallengeRefused(N_("Each member may enter 1 to 10 images, not {value}."), value=value)
        return value

    async def start(self, request: StartRequest) -> ChallengeRecord:
        """Open a challenge now and announce it; refuses bad lengths and a channel that has one running."""
        submit_s = self._check_phase_length(request.submit_s, N_("The submission phase"))
        vote_s = self._check_phase_length(request.vote_s, N_("The voting phase"))
        theme = _check_theme(request.theme)
        now = self.clock()
        new = NewChallenge(
            guild_id=request.guild_id,
            channel_id=request.channel_id,
            theme=theme,
            style=request.style,
            opens_at=now,
            voting_at=now + submit_s,
            closes_at=now + submit_s + vote_s,
            max_entries=self._check_entries(request.max_entries),
            vote_budget=self.settings.vote_budget,
            season=season_of(now, self.settings.season),
            created_by=request.created_by,
        )
        return await self._open(new)

    async def _open(self, new: NewChallenge) -> ChallengeRecord:
        now = self.clock()

        def body(tx: SyncTx) -> ChallengeRecord:
            try:
                return _require(tx, store.insert_challenge(tx, new, now))
            except store.ChannelBusy:
                raise ChallengeRefused(
                    N_("<#{channel_id}> already has a challenge running; close or cancel it first."),
                    channel_id=new.channel_id,
                ) from None

        challenge = await self.db.run(body)
        async with self._lock:
            try:
                challenge = await self._announce(challenge)
            except ChallengeRefused:
                await self.db.run(lambda tx: store.delete_challenge(tx, challenge.challenge_id))
                raise
            except Exception:
                await self.db.run(lambda tx: store.delete_challenge(tx, challenge.challenge_id))
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
        self._check_phase_length(by_s, N_("The extension"))

        def body(tx: SyncTx) -> ChallengeRecord:
            current = _live(tx, challenge.challenge_id)
            shift_voting = current.phase is Phase.SUBMISSIONS
            voting_at = current.voting_at + by_s if shift_voting else current.voting_at
            store.set_deadlines(tx, current.challenge_id, voting_at, current.closes_at + by_s)
            return _require(tx, current.challenge_id)

        async with self._lock:
            changed = await self.db.run(body)
        self._schedule_challenge(changed)
        return changed

    async def end_phase_now(self, challenge: ChallengeRecord) -> ChallengeRecord:
        """Close the current phase early: submissions go to voting now, voting goes to results now."""
        now = self.clock()

        def body(tx: SyncTx) -> ChallengeRecord:
            current = _live(tx, challenge.challenge_id)
            if current.phase is Phase.SUBMISSIONS:
                store.set_deadlines(tx, current.challenge_id, now, max(current.closes_at, now + 1))
            else:
                store.set_deadlines(tx, current.challenge_id, min(current.voting_at, now - 1), now)
            return _require(tx, current.challenge_id)

        async with self._lock:
            await self.db.run(body)
        return await self.advance(challenge.challenge_id) or challenge

    async def cancel(self, challenge: ChallengeRecord) -> ChallengeRecord:
        async with self._lock:

            def body(tx: SyncTx) -> ChallengeRecord:
                current = _live(tx, challenge.challenge_id)
                store.set_phase(tx, current.challenge_id, Phase.CANCELLED, self.clock())
                return _require(tx, current.challenge_id)

            changed = await self.db.run(body)
            self._schedule_challenge(changed)
            return await self._announce_or_retry_later(changed)

    # --- recurring challenges ---

    async def schedule(self, request: ScheduleRequest) -> ScheduleRecord:
        """Store a recurring challenge; the first starts at `first_start_at` (default: now)."""
        period = RHYTHMS.get(request.rhythm)
        if period is None:
            raise ChallengeRefused(N_("The rhythm must be one of {rhythms}."), rhythms=", ".join(RHYTHMS))
        submit_s = self._check_phase_length(request.submit_s, N_("The submission phase"))
        vote_s = self._check_phase_length(request.vote_s, N_("The voting phase"))
        if submit_s + vote_s > period:
            raise ChallengeRefused(
                N_(
                    "Submissions ({submit}) and voting ({vote}) must fit in one {rhythm} period ({period}), or the challenges would overlap."
                ),
                submit=_span(submit_s),
                vote=_span(vote_s),
                rhythm=request.rhythm,
                period=_span(period),
            )
        themes = tuple(_check_theme(t) for t in request.themes)
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
            max_entries=self._check_entries(request.max_entries),
            next_start_at=request.first_start_at or self.clock(),
            created_by=request.created_by,
        )

        def body(tx: SyncTx) -> ScheduleRecord:
            try:
                schedule_id = store.insert_schedule(tx, new, self.clock())
            except store.ChannelBusy:
                raise ChallengeRefused(
                    N_("<#{channel_id}> already has a recurring challenge; stop it first."),
                    channel_id=new.channel_id,
                ) from None
            found = store.get_schedule(tx, schedule_id)
            assert found is not None
            return found

        schedule = await self.db.run(body)
        self._schedule_recurrence(schedule)
        return schedule

    async def stop_schedule(self, guild_id: int, channel_id: int) -> ScheduleRecord:
        def body(tx: SyncTx) -> ScheduleRecord:
            for s in store.active_schedules(tx, guild_id):
                if s.channel_id == channel_id:
                    store.stop_schedule(tx, s.schedule_id)
                    return s
            raise ChallengeRefused(N_("<#{channel_id}> has no recurring challenge."), channel_id=channel_id)

        schedule = await self.db.run(body)
        if self._scheduler is not None:
            job = self._scheduler.get_job(f"brushfire.challenge-schedule.{schedule.schedule_id}")
            if job is not None:
                job.remove()
        return schedule

    async def schedules(self, guild_id: int) -> list[ScheduleRecord]:
        return await self.db.run(lambda tx: store.active_schedules(tx, guild_id), write=False)

    async def run_recurrence(self, schedule_id: int) -> ChallengeRecord | None:
        """Start the schedule's next challenge if it is due; a missed start (the bot was down) starts now.

        Missed periods are not made up one by one: the next start moves to the first slot after now.
        """
        try:
            return await self._recur(schedule_id)
        except Exception:
            log.exception("recurring challenge %d failed to start", schedule_id)
            return None

    def _next_round(self, schedule: ScheduleRecord, now: float) -> tuple[NewChallenge, float]:
        """The round that starts now, and when the one after it starts.

        On time, the phases keep to the slot so the round ends by the next slot; late (the bot was down),
        the round gets its full length from now and the next start moves to the first slot after it ends.
        """
        late = now - schedule.next_start_at >= schedule.submit_s / 2
        base = now if late else schedule.next_start_at
        closes_at = base + schedule.submit_s + schedule.vote_s
        periods = max(1, math.ceil((closes_at - schedule.next_start_at) / schedule.period_s))
        new = NewChallenge(
            guild_id=schedule.guild_id,
            channel_id=schedule.channel_id,
            theme=schedule.themes[schedule.next_theme % len(schedule.themes)],
            style=schedule.style,
            opens_at=now,
            voting_at=base + schedule.submit_s,
            closes_at=closes_at,
            max_entries=schedule.max_entries,
            vote_budget=self.settings.vote_budget,
            season=season_of(now, self.settings.season),
            created_by=schedule.created_by,
            schedule_id=schedule.schedule_id,
        )
        return new, schedule.next_start_at + periods * schedule.period_s

    async def _recur(self, schedule_id: int) -> ChallengeRecord | None:
        schedule = await self.db.run(lambda tx: store.get_schedule(tx, schedule_id), write=False)
        now = self.clock()
        if schedule is None or not schedule.active:
            return None
        if schedule.next_start_at > now:
            self._schedule_recurrence(schedule)
            return None
        new, next_start = self._next_round(schedule, now)
        for live in await self.live(schedule.guild_id):
            if live.channel_id == schedule.channel_id:  # the last round ends at this instant: end it first
                await self.advance(live.challenge_id)
        await self.db.run(
            lambda tx: store.advance_schedule(tx, schedule_id, schedule.next_theme + 1, next_start)
        )
        self._schedule_recurrence(
            dataclasses.replace(schedule, next_start_at=next_start, next_theme=schedule.next_theme + 1)
        )
        try:
            return await self._open(new)
        except ChallengeRefused as refused:
            log.warning("recurring challenge %d skipped a round: %s", schedule_id, refused.message)
            return None

    # --- finding a challenge ---

    async def _get(self, challenge_id: int) -> ChallengeRecord | None:
        return await self.db.run(lambda tx: store.get_challenge(tx, challenge_id), write=False)

    async def _get_required(self, challenge_id: int) -> ChallengeRecord:
        return await self.db.run(lambda tx: _require(tx, challenge_id), write=False)

    async def live(self, guild_id: int) -> list[ChallengeRecord]:
        return await self.db.run(lambda tx: store.live_challenges(tx, guild_id), write=False)

    async def find(self, guild_id: int, channel_id: int, challenge_id: int | None = None) -> ChallengeRecord:
        """The challenge a command means: the one named, the one in (or whose gallery is) this channel, or
        the only one running in the server."""
        if challenge_id is not None:
            found = await self._get(challenge_id)
            if found is None or found.guild_id != guild_id:
                raise ChallengeRefused(
                    N_("This server has no challenge #{challenge_id}."), challenge_id=challenge_id
                )
            return found
        live = await self.live(guild_id)
        here = [c for c in live if channel_id in (c.channel_id, c.gallery_id)]
        if here:
            return here[0]
        if len(live) == 1:
            return live[0]
        if not live:
            raise ChallengeRefused(N_("There is no challenge running in this server."))
        ids = ", ".join(f"#{c.challenge_id} ({c.theme[:30]})" for c in live[:10])
        raise ChallengeRefused(
            N_("Several challenges are running ({ids}); name one with `challenge:`."), ids=ids
        )

    # --- entries ---

    async def submit(
        self, challenge: ChallengeRecord, user_id: int, generation_id: str | None
    ) -> tuple[ChallengeRecord, EntryRecord]:
        """Enter an image, checking every rule in one transaction, then post it to the gallery."""
        now = self.clock()

        def body(tx: SyncTx) -> tuple[ChallengeRecord, EntryRecord, bytes]:
            current = _require(tx, challenge.challenge_id)
            _check_submissions_open(current, now)
            gen_id = generation_id or store.latest_generation(tx, current.guild_id, user_id, current.style)
            if gen_id is None:
                raise ChallengeRefused(
                    N_("You have no `{style}` image here yet: make one with `/imagine style:{style}`."),
                    style=current.style,
                )
            source = store.entry_source(tx, gen_id)
            _check_source(current, source, user_id)
            try:
                entry = store.insert_entry(tx, current.challenge_id, user_id, gen_id, now)
            except store.AlreadyEntered:
                raise ChallengeRefused(N_("That image is already entered in this challenge.")) from None
            except store.EntryCapReached:
                raise ChallengeRefused(
                    N_(
                        "You have already entered the most images this challenge takes ({max}). Withdraw one"
                        " first with `/challenge withdraw`."
                    ),
                    max=current.max_entries,
                ) from None
            png = tx.fetchone("SELECT png FROM generations WHERE generation_id = ?", (gen_id,))
            return current, entry, bytes(png[0]) if png else b""

        current, entry, png = await self.db.run(body)
        if self.announcer is None:
            return current, entry
        try:
            message_id = await self.announcer.entry_posted(current, entry, png)
        except Exception:
            log.exception("challenge %d: could not post entry %d", current.challenge_id, entry.number)
            await self.db.run(lambda tx: store.delete_entry(tx, entry.entry_id))
            raise ChallengeRefused(
                N_("brushfire could not post your entry to the gallery; it was not entered.")
            ) from None
        await self.db.run(lambda tx: store.set_entry_message(tx, entry.entry_id, message_id))
        return current, dataclasses.replace(entry, message_id=message_id)

    async def withdraw(self, challenge: ChallengeRecord, user_id: int, number: int) -> EntryRecord:
        now = self.clock()

        def body(tx: SyncTx) -> EntryRecord:
            current = _require(tx, challenge.challenge_id)
            entry = store.entry_by_number(tx, current.challenge_id, number)
            if entry is None or entry.user_id != user_id:
                raise ChallengeRefused(N_("You have no entry #{number} in this challenge."), number=number)
            if current.phase is not Phase.SUBMISSIONS or now >= current.voting_at:
                raise ChallengeRefused(N_("Entries can only be withdrawn until voting starts."))
            store.delete_entry(tx, entry.entry_id)
            return entry

        entry = await self.db.run(body)
        if self.announcer is not None:
            try:
                await self.announcer.entry_removed(challenge, entry)
            except Exception:  # the entry is gone from the database; a stale gallery post only confuses
                log.warning("challenge %d: could not remove entry %d's post", challenge.challenge_id, number)
        return entry

    async def my_entries(self, challenge: ChallengeRecord, user_id: int) -> list[EntryRecord]:
        return await self.db.run(lambda tx: store.entries(tx, challenge.challenge_id, user_id), write=False)

    # --- votes ---

    async def vote(self, entry_id: int, voter_id: int) -> VoteReceipt:
        now = self.clock()

        def body(tx: SyncTx) -> VoteReceipt:
            entry, challenge = _entry_and_challenge(tx, entry_id)
            _check_voting_open(challenge, now)
            if entry.user_id == voter_id:
                raise ChallengeRefused(N_("You cannot vote for your own entry."))
            try:
                store.insert_vote(tx, entry, voter_id, now)
            except store.AlreadyVoted:
                raise ChallengeRefused(
                    N_("You already voted for entry #{number}; press “Take back” to change your mind."),
                    number=entry.number,
                ) from None
            except store.VoteBudgetSpent:
                raise ChallengeRefused(
                    N_("You have used all {vote_budget} of your votes. Take one back to vote here."),
                    vote_budget=challenge.vote_budget,
                ) from None
            except store.OwnEntryVote:
                raise ChallengeRefused(N_("You cannot vote for your own entry.")) from None
            used = store.votes_used(tx, challenge.challenge_id, voter_id)
            return VoteReceipt(entry.number, used, challenge.vote_budget)

        return await self.db.run(body)

    async def unvote(self, entry_id: int, voter_id: int) -> VoteReceipt:
        now = self.clock()

        def body(tx: SyncTx) -> VoteReceipt:
            entry, challenge = _entry_and_challenge(tx, entry_id)
            _check_voting_open(challenge, now)
            if not store.delete_vote(tx, entry_id, voter_id):
                raise ChallengeRefused(N_("You have not voted for entry #{number}."), number=entry.number)
            used = store.votes_used(tx, challenge.challenge_id, voter_id)
            return VoteReceipt(entry.number, used, challenge.vote_budget)

        return await self.db.run(body)

    # --- results ---

    async def results(self, challenge_id: int) -> list[ResultRecord]:
        return await self.db.run(lambda tx: store.results(tx, challenge_id), write=False)

    async def leaderboard(self, guild_id: int, season: str | None = None) -> tuple[str, list[Standing]]:
        chosen = season or season_of(self.clock(), self.settings.season)
        rows = await self.db.run(lambda tx: store.standings(tx, guild_id, chosen), write=False)
        return chosen, rows


def _require(tx: SyncTx, challenge_id: int) -> ChallengeRecord:
    found = store.get_challenge(tx, challenge_id)
    if found is None:
        raise ChallengeRefused(N_("Challenge #{challenge_id} no longer exists."), challenge_id=challenge_id)
    return found


def _live(tx: SyncTx, challenge_id: int) -> ChallengeRecord:
    current = _require(tx, challenge_id)
    if not current.phase.live:
        raise ChallengeRefused(
            N_("Challenge #{challenge_id} is already {phase}."),
            challenge_id=challenge_id,
            phase=Message(PHASE_NAMES[current.phase]),
        )
    return current


def _check_theme(theme: str) -> str:
    text = " ".join(theme.split())
    if not 1 <= len(text) <= 200:
        raise ChallengeRefused(N_("A theme must be 1 to 200 characters."))
    return text


def _check_submissions_open(challenge: ChallengeRecord, now: float) -> None:
    if challenge.phase is not Phase.SUBMISSIONS or now >= challenge.voting_at:
        raise ChallengeRefused(N_("Submissions for “{theme}” are closed."), theme=challenge.theme[:80])
    if now < challenge.opens_at:
        raise ChallengeRefused(N_("Submissions open <t:{opens_at}:R>."), opens_at=int(challenge.opens_at))


def _check_source(challenge: ChallengeRecord, source: store.EntrySource | None, user_id: int) -> None:
    """The entry rules: made by brushfire, by the submitter, in this server, during submissions, in style."""
    if source is None or source.deleted:
        raise ChallengeRefused(N_("Only images brushfire made (and that still exist) can be entered."))
    if source.user_id != user_id:
        raise ChallengeRefused(N_("You can only enter images you made yourself."))
    if source.guild_id != challenge.guild_id:
        raise ChallengeRefused(N_("That image was made in another server."))
    if source.from_upload:
        raise ChallengeRefused(N_("Images edited from an upload cannot be entered; make one with /imagine."))
    if source.style != challenge.style:
        raise ChallengeRefused(
            N_(
                "This challenge takes `{style}` images; that one is `{actual}`. Make one with `/imagine style:{style}`."
            ),
            style=challenge.style,
            actual=source.style or Message(N_("no style")),
        )
    if source.created_at < challenge.opens_at:
        raise ChallengeRefused(
            N_("That image was made before the challenge opened (<t:{opens_at}:f>); make a new one."),
            opens_at=int(challenge.opens_at),
        )


def _entry_and_challenge(tx: SyncTx, entry_id: int) -> tuple[EntryRecord, ChallengeRecord]:
    entry = store.get_entry(tx, entry_id)
    if entry is None:
        raise ChallengeRefused(N_("That entry was withdrawn."))
    return entry, _require(tx, entry.challenge_id)


def _check_voting_open(challenge: ChallengeRecord, now: float) -> None:
    if challenge.phase is Phase.SUBMISSIONS and now < challenge.voting_at:
        raise ChallengeRefused(
            N_("Voting has not started yet; it opens <t:{voting_at}:R>."), voting_at=int(challenge.voting_at)
        )
    if challenge.phase is Phase.CANCELLED:
        raise ChallengeRefused(N_("That challenge was cancelled."))
    if challenge.phase is Phase.CLOSED or now >= challenge.closes_at:
        raise ChallengeRefused(N_("Voting has closed for this challenge."))


def _span(seconds: float) -> str:
    """A length of time in the notation /challenge takes (`3d`, `12h`, `90m`): the same in every language."""
    for unit, size in (("d", DAY_S), ("h", 3600), ("m", 60)):
        if seconds >= size and seconds % size == 0:
            return f"{int(seconds // size)}{unit}"
    return f"{int(seconds)}s"
