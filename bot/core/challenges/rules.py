"""The challenge rules: settings, requests, refusals, what a challenge may be and what an entry must be."""

from __future__ import annotations

import logging
import math
import re
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Literal, Protocol

from pydantic import BaseModel, ConfigDict, Field

from bot.core.errors import BrushfireError
from bot.core.i18n import N_, Message
from bot.core.validation import has_visible_text
from storage import challenge_entries as entry_store
from storage import challenges as store
from storage.challenges import ChallengeRecord, EntryRecord, NewChallenge, Phase, ResultRecord, ScheduleRecord
from storage.db import Tx

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

    async def entry_posted(self, challenge: ChallengeRecord, entry: EntryRecord, image: bytes) -> int:
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


async def require_challenge(tx: Tx, challenge_id: int) -> ChallengeRecord:
    found = await store.get_challenge(tx, challenge_id)
    if found is None:
        raise ChallengeRefused(N_("Challenge #{challenge_id} no longer exists."), challenge_id=challenge_id)
    return found


async def live_challenge(tx: Tx, challenge_id: int) -> ChallengeRecord:
    current = await require_challenge(tx, challenge_id)
    if not current.phase.live:
        raise ChallengeRefused(
            N_("Challenge #{challenge_id} is already {phase}."),
            challenge_id=challenge_id,
            phase=Message(PHASE_NAMES[current.phase]),
        )
    return current


def check_theme(theme: str) -> str:
    text = " ".join(theme.split())
    if not 1 <= len(text) <= 200 or not has_visible_text(text):
        raise ChallengeRefused(N_("A theme must be 1 to 200 characters, and show something."))
    return text


def check_submissions_open(challenge: ChallengeRecord, now: float) -> None:
    if challenge.phase is not Phase.SUBMISSIONS or now >= challenge.voting_at:
        raise ChallengeRefused(N_("Submissions for “{theme}” are closed."), theme=challenge.theme[:80])
    if now < challenge.opens_at:
        raise ChallengeRefused(N_("Submissions open <t:{opens_at}:R>."), opens_at=int(challenge.opens_at))


def check_source(challenge: ChallengeRecord, source: entry_store.EntrySource | None, user_id: int) -> None:
    """The entry rules: made by brushfire, by the submitter, in this server, during submissions, in style."""
    if source is None or source.deleted:
        raise ChallengeRefused(N_("Only images brushfire made (and that still exist) can be entered."))
    if source.user_id != user_id or source.lineage_owners != {user_id}:
        # Re-roll, Vary, Upscale or Edit under someone else's picture makes a copy of their work.
        raise ChallengeRefused(
            N_(
                "You can only enter images you made yourself; that one was made from another member's picture."
            )
        )
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


async def entry_and_challenge(tx: Tx, entry_id: int, guild_id: int) -> tuple[EntryRecord, ChallengeRecord]:
    """An entry and its challenge, only if that challenge is in `guild_id` (so no other server's vote counts)."""
    entry = await entry_store.get_entry(tx, entry_id)
    challenge = await store.get_challenge(tx, entry.challenge_id) if entry is not None else None
    if entry is None or challenge is None:
        raise ChallengeRefused(N_("That entry was withdrawn."))
    if challenge.guild_id != guild_id:
        raise ChallengeRefused(N_("That entry is not in one of this server's challenges."))
    return entry, challenge


def check_voting_open(challenge: ChallengeRecord, now: float) -> None:
    if challenge.phase is Phase.SUBMISSIONS and now < challenge.voting_at:
        raise ChallengeRefused(
            N_("Voting has not started yet; it opens <t:{voting_at}:R>."), voting_at=int(challenge.voting_at)
        )
    if challenge.phase is Phase.CANCELLED:
        raise ChallengeRefused(N_("That challenge was cancelled."))
    if challenge.phase is Phase.CLOSED or now >= challenge.closes_at:
        raise ChallengeRefused(N_("Voting has closed for this challenge."))


def span(seconds: float) -> str:
    """A length of time in the notation /challenge takes (`3d`, `12h`, `90m`): the same in every language."""
    for unit, size in (("d", DAY_S), ("h", 3600), ("m", 60)):
        if seconds >= size and seconds % size == 0:
            return f"{int(seconds // size)}{unit}"
    return f"{int(seconds)}s"


def check_phase_length(settings: ChallengeSettings, seconds: int, what: str) -> int:
    s = settings
    if seconds <= 0:
        raise ChallengeRefused(N_("{what} must last longer than zero."), what=Message(what))
    if not s.min_phase_s <= seconds <= s.max_phase_s:
        raise ChallengeRefused(
            N_("{what} must last from {low} to {high}, not {length}."),
            what=Message(what),
            low=span(s.min_phase_s),
            high=span(s.max_phase_s),
            length=span(seconds),
        )
    return seconds


def check_entries(settings: ChallengeSettings, max_entries: int | None) -> int:
    value = settings.max_entries if max_entries is None else max_entries
    if not 1 <= value <= 10:
        raise ChallengeRefused(N_("Each member may enter 1 to 10 images, not {value}."), value=value)
    return value


def next_round(
    settings: ChallengeSettings, schedule: ScheduleRecord, now: float
) -> tuple[NewChallenge, float]:
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
        vote_budget=settings.vote_budget,
        season=season_of(now, settings.season),
        created_by=schedule.created_by,
        schedule_id=schedule.schedule_id,
    )
    return new, schedule.next_start_at + periods * schedule.period_s
