"""Challenge storage and service rules on a real SQLite file: races, caps, budgets, phases, results, upgrades."""

from __future__ import annotations

import asyncio
import dataclasses
import io
import sqlite3
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from PIL import Image

from bot.core.challenges import closing
from bot.core.challenges.rules import (
    ChallengeRefused,
    ChallengeSettings,
    ScheduleRequest,
    StartRequest,
    parse_duration,
    season_of,
)
from bot.core.challenges.service import ChallengeService
from bot.core.quotas.pricing import QuotaSettings
from bot.core.quotas.service import QuotaService
from storage import generations
from storage.challenges import ChallengeRecord, Phase
from storage.db import Database, load_migrations
from storage.generations import GenerationRecord
from tests.storage.helpers import in_tx, write

GUILD, CHANNEL, ADMIN, ALICE, BOB, CAROL = 1, 10, 99, 2, 3, 4
HOUR = 3600


class Clock:
    def __init__(self) -> None:
        self.t = 1_800_000_000.0

    def __call__(self) -> float:
        return self.t


def png() -> bytes:
    out = io.BytesIO()
    Image.new("RGB", (8, 8), "red").save(out, format="PNG")
    return out.getvalue()


@pytest.fixture
async def db(tmp_path: Path) -> AsyncIterator[Database]:
    async with Database.open(tmp_path / "c.sqlite3") as opened:
        yield opened


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def service(db: Database, clock: Clock) -> ChallengeService:
    settings = ChallengeSettings(vote_budget=2, max_entries=2, bonus_credits=[5, 2])
    return ChallengeService(
        db=db, quotas=QuotaService(db, QuotaSettings(), clock), settings=settings, clock=clock
    )


async def image(
    db: Database, clock: Clock, user: int, style: str | None = "anime", guild: int = GUILD
) -> str:
    """A generation as /imagine would store it; returns its id."""
    n = int(clock.t * 1000) % 10**9 + user * 7
    job_id = f"{n:032x}"
    # Plain SQL with the first schema's columns, so the helper also fills databases held at older versions.
    await write(
        db,
        "INSERT INTO jobs (job_id, guild_id, channel_id, user_id, kind, parameters, created_at, updated_at)"
        " VALUES (?, ?, ?, ?, 'generate', '{}', ?, ?)",
        (job_id, guild, CHANNEL, user, clock.t, clock.t),
    )
    gen_id = f"{n + 1:032x}"
    if db.schema_version >= 9:  # the picture's column is `image` from version 9 (`png` before)
        rec = GenerationRecord(
            gen_id, job_id, 0, "a harbour", 1, 8, 8, 3, 5.0, "tiny", "generate", png(), style=style
        )
        await in_tx(db, generations.add, [rec], clock.t)
    else:
        await write(
            db,
            "INSERT INTO generations (generation_id, job_id, idx, prompt, style, seed, width, height, steps,"
            " guidance, model, kind, png, created_at) VALUES (?, ?, 0, 'a harbour', ?, 1, 8, 8, 3, 5.0, 'tiny',"
            " 'generate', ?, ?)",
            (gen_id, job_id, style, png(), clock.t),
        )
    clock.t += 1
    return gen_id


async def start(
    service: ChallengeService, channel: int = CHANNEL, submit_s: int = HOUR, vote_s: int = HOUR
) -> ChallengeRecord:
    request = StartRequest(
        guild_id=GUILD,
        channel_id=channel,
        theme="harbours",
        style="anime",
        submit_s=submit_s,
        vote_s=vote_s,
        created_by=ADMIN,
    )
    return await service.start(request)


async def test_double_click_and_concurrent_votes_count_once_and_respect_the_budget(
    service: ChallengeService, db: Database, clock: Clock
) -> None:
    challenge = await start(service)
    entries = [
        (await service.submit(challenge, u, await image(db, clock, u)))[1] for u in (ALICE, CAROL, ADMIN)
    ]
    clock.t = challenge.voting_at
    await service.advance(challenge.challenge_id)
    # A double click: the same vote twice at once counts once; the other gets a specific refusal.
    outcomes = await asyncio.gather(
        *(service.vote(entries[0].entry_id, BOB, GUILD) for _ in range(2)), return_exceptions=True
    )
    assert sum(not isinstance(o, Exception) for o in outcomes) == 1
    assert any(isinstance(o, ChallengeRefused) and "already voted" in o.message for o in outcomes)
    # A budget of 2 and three votes at once: exactly one more fits.
    outcomes = await asyncio.gather(
        *(service.vote(e.entry_id, BOB, GUILD) for e in entries[1:]), service.vote(entries[0].entry_id, CAROL, GUILD),
        return_exceptions=True,
    )  # fmt: skip
    refused = [o for o in outcomes if isinstance(o, ChallengeRefused)]
    assert len(refused) == 1 and "used all 2" in refused[0].message
    with sqlite3.connect(db.path) as conn:
        assert (
            conn.execute("SELECT COUNT(*) FROM challenge_votes WHERE voter_id = ?", (BOB,)).fetchone()[0] == 2
        )
    with pytest.raises(ChallengeRefused, match="own entry"):
        await service.vote(entries[0].entry_id, ALICE, GUILD)
    # Votes are changeable: take one back, spend it elsewhere.
    first_bob = 0 if not isinstance(outcomes[0], Exception) else 1
    taken = await service.unvote(entries[1 + first_bob].entry_id, BOB, GUILD)
    assert taken.used == 1
    with pytest.raises(ChallengeRefused, match="not voted"):
        await service.unvote(entries[1 + first_bob].entry_id, BOB, GUILD)


async def test_entry_cap_holds_under_concurrent_submissions(
    service: ChallengeService, db: Database, clock: Clock
) -> None:
    challenge = await start(service)
    images = [await image(db, clock, ALICE) for _ in range(4)]
    outcomes = await asyncio.gather(
        *(service.submit(challenge, ALICE, g) for g in images), return_exceptions=True
    )
    refused = [o for o in outcomes if isinstance(o, ChallengeRefused)]
    assert len(refused) == 2 and all("the most images this challenge takes" in r.message for r in refused)
    assert len(await service.my_entries(challenge, ALICE)) == 2


async def test_the_schema_refuses_what_the_rules_forbid_even_without_the_service(
    service: ChallengeService, db: Database, clock: Clock
) -> None:
    challenge = await start(service)
    gen = await image(db, clock, ALICE)
    _, entry = await service.submit(challenge, ALICE, gen)
    with sqlite3.connect(db.path) as conn:
        with pytest.raises(sqlite3.IntegrityError, match="own entry"):
            conn.execute(
                "INSERT INTO challenge_votes VALUES (?, ?, ?, 0)",
                (entry.entry_id, ALICE, challenge.challenge_id),
            )
        with pytest.raises(sqlite3.IntegrityError, match="UNIQUE"):
            conn.execute(
                "INSERT INTO challenges (guild_id, channel_id, theme, style, opens_at, voting_at, closes_at, "
                "max_entries, vote_budget, season, created_by, created_at) VALUES (1, ?, 't', 's', 0, 1, 2, 1, 1, 'x', 1, 0)",
                (CHANNEL,),
            )  # fmt: skip
        with pytest.raises(sqlite3.IntegrityError, match="CHECK"):
            conn.execute(
                "INSERT INTO challenges (guild_id, channel_id, theme, style, opens_at, voting_at, closes_at, "
                "max_entries, vote_budget, season, created_by, created_at) VALUES (1, 77, 't', 's', 5, 5, 9, 1, 1, 'x', 1, 0)"
            )  # fmt: skip


async def test_every_entry_refusal_is_specific(service: ChallengeService, db: Database, clock: Clock) -> None:
    early = await image(db, clock, ALICE)
    challenge = await start(service)
    cases = [
        (ALICE, early, "before the challenge opened"),
        (BOB, await image(db, clock, ALICE), "images you made yourself"),
        (ALICE, await image(db, clock, ALICE, style="photo"), "takes `anime`"),
        (ALICE, await image(db, clock, ALICE, style=None), "`no style`"),
        (ALICE, await image(db, clock, ALICE, guild=GUILD + 1), "another server"),
        (ALICE, "f" * 32, "Only images brushfire made"),
    ]
    for user, gen, expected in cases:
        with pytest.raises(ChallengeRefused, match=expected):
            await service.submit(challenge, user, gen)
    good = await image(db, clock, ALICE)
    await service.submit(challenge, ALICE, good)
    with pytest.raises(ChallengeRefused, match="already entered"):
        await service.submit(challenge, ALICE, good)
    assert len(await service.my_entries(challenge, ALICE)) == 1


async def test_phases_results_points_and_bonuses(
    service: ChallengeService, db: Database, clock: Clock
) -> None:
    with pytest.raises(ChallengeRefused, match="zero"):
        await start(service, submit_s=0)
    with pytest.raises(ChallengeRefused, match="zero"):
        await start(service, vote_s=-5)
    challenge = await start(service)
    with pytest.raises(ChallengeRefused, match="already has a challenge"):
        await start(service)
    a = (await service.submit(challenge, ALICE, await image(db, clock, ALICE)))[1]
    b = (await service.submit(challenge, BOB, await image(db, clock, BOB)))[1]
    with pytest.raises(ChallengeRefused, match="not started yet"):
        await service.vote(a.entry_id, BOB, GUILD)
    clock.t = challenge.closes_at + 10  # slept through both deadlines: both changes happen, in order
    closed = await service.advance(challenge.challenge_id)
    assert closed is not None and closed.phase is Phase.CLOSED
    results = await service.results(challenge.challenge_id)
    assert [(r.user_id, r.rank, r.points, r.bonus) for r in results] == [(ALICE, 1, 10, 0), (BOB, 2, 6, 0)]
    with pytest.raises(ChallengeRefused, match="closed"):
        await service.vote(b.entry_id, ALICE, GUILD)
    season, standings = await service.leaderboard(GUILD)
    assert season == season_of(clock.t, "quarter") and [s.user_id for s in standings] == [ALICE, BOB]


async def test_bonus_is_granted_once_for_a_winner_with_votes(
    service: ChallengeService, db: Database, clock: Clock
) -> None:
    challenge = await start(service)
    a = (await service.submit(challenge, ALICE, await image(db, clock, ALICE)))[1]
    await service.submit(challenge, BOB, await image(db, clock, BOB))
    clock.t = challenge.voting_at
    await service.advance(challenge.challenge_id)
    await service.vote(a.entry_id, CAROL, GUILD)
    clock.t = challenge.closes_at
    await service.advance(challenge.challenge_id)
    # a retried close must not pay twice
    await closing.grant_bonuses(service.db, service.quotas, service.settings, challenge, clock.t)
    status = await service.quotas.status(GUILD, ALICE)
    assert status.bonus_remaining == 5
    assert (await service.quotas.status(GUILD, BOB)).bonus_remaining == 0  # second place had no votes


async def test_recurring_schedule_starts_rotates_and_skips_missed_rounds(
    service: ChallengeService, db: Database, clock: Clock
) -> None:
    request = ScheduleRequest(
        guild_id=GUILD, channel_id=CHANNEL, style="anime", themes=("boats", "birds"), rhythm="daily",
        submit_s=12 * HOUR, vote_s=12 * HOUR, created_by=ADMIN,
    )  # fmt: skip
    with pytest.raises(ChallengeRefused, match="overlap"):
        await service.schedule(dataclasses.replace(request, submit_s=20 * HOUR))
    schedule = await service.schedule(request)
    first = await service.run_recurrence(schedule.schedule_id)
    assert first is not None and first.theme == "boats"
    assert await service.run_recurrence(schedule.schedule_id) is None  # not due again yet
    clock.t += 3 * 24 * HOUR + 5  # down for three days
    await service.advance(first.challenge_id)
    second = await service.run_recurrence(schedule.schedule_id)
    assert second is not None and second.theme == "birds"
    (current,) = await service.schedules(GUILD)
    # A late round gets its full length; the next starts on the first slot after it ends.
    assert second.closes_at == clock.t + 24 * HOUR
    assert second.closes_at <= current.next_start_at < second.closes_at + 24 * HOUR
    assert (current.next_start_at - schedule.next_start_at) % (24 * HOUR) == 0


@pytest.mark.parametrize(
    ("text", "seconds"),
    [("3d", 3 * 86400), ("12h", 12 * HOUR), ("1d 6h", 30 * HOUR), ("90m", 5400), ("2", 2 * HOUR)],
)
def test_durations(text: str, seconds: int) -> None:
    assert parse_duration(text) == seconds


@pytest.mark.parametrize(
    ("text", "why"), [("0h", "zero"), ("-1d", "negative"), ("soon", "not a length"), ("", "not")]
)
def test_bad_durations(text: str, why: str) -> None:
    with pytest.raises(ChallengeRefused, match=why):
        parse_duration(text)


async def test_upgrade_from_version_3_keeps_data_and_adds_challenges(tmp_path: Path) -> None:
    path = tmp_path / "v3.sqlite3"
    async with Database.open(path, migrate_to=3) as db:
        await write(
            db, "INSERT INTO guild_settings (guild_id, default_style, updated_at) VALUES (1, 'anime', 0)"
        )
    async with Database.open(path) as db:
        assert db.schema_version == len(load_migrations())
    with sqlite3.connect(path) as conn:
        assert conn.execute("SELECT default_style FROM guild_settings").fetchone() == ("anime",)
        tables = {
            r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type IN ('table', 'trigger')")
        }
    assert {
        "guild_styles",
        "challenges",
        "challenge_entries",
        "challenge_votes",
        "challenge_results",
    } <= tables
    assert {"challenge_entry_cap", "challenge_vote_budget", "challenge_no_self_vote"} <= tables


async def test_challenge_rows_survive_every_later_migration(
    service: ChallengeService, db: Database, clock: Clock, tmp_path: Path
) -> None:
    """Rows in every version-4 table, upgraded to the newest schema: nothing lost (guards future migrations)."""
    path = tmp_path / "v4.sqlite3"
    async with Database.open(path, migrate_to=4) as v4:
        svc = ChallengeService(
            db=v4, quotas=QuotaService(v4, QuotaSettings(), clock), settings=service.settings, clock=clock
        )
        await write(
            v4,
            "INSERT INTO guild_styles (guild_id, name, prompt, created_by, created_at) VALUES (1, 'ink', 'ink {prompt}', 9, 0)",
        )
        challenge = await start(svc)
        _, entry = await svc.submit(challenge, ALICE, await image(v4, clock, ALICE))
        clock.t = challenge.voting_at
        await svc.advance(challenge.challenge_id)
        await svc.vote(entry.entry_id, BOB, GUILD)
        clock.t = challenge.closes_at
        await svc.advance(challenge.challenge_id)
        await svc.schedule(
            ScheduleRequest(
                GUILD, CHANNEL + 1, "anime", ("a",), "daily", HOUR, HOUR, ADMIN, first_start_at=clock.t + HOUR
            )
        )
    tables = (
        "guild_styles",
        "challenges",
        "challenge_entries",
        "challenge_votes",
        "challenge_results",
        "challenge_schedules",
    )
    async with Database.open(path) as latest:
        assert latest.schema_version == len(load_migrations())
    with sqlite3.connect(path) as conn:
        assert [conn.execute(f"SELECT COUNT(*) FROM {t}").fetchone()[0] for t in tables] == [1] * len(tables)
        assert conn.execute("SELECT phase, announced FROM challenges").fetchone() == ("closed", None)
