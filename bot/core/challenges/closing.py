"""Closing a challenge: rank the entries, store the results with the phase change, pay the winners' bonuses."""

from __future__ import annotations

import logging

from bot.core.challenges.rules import DAY_S, ChallengeSettings, require_challenge
from bot.core.quotas.records import QuotaError
from bot.core.quotas.service import QuotaService
from storage import challenge_entries as entry_store
from storage import challenges as store
from storage.challenge_entries import Tally
from storage.challenges import ChallengeRecord, Phase, ResultRecord
from storage.db import Database

log = logging.getLogger(__name__)


def rank(settings: ChallengeSettings, challenge_id: int, ranked: list[Tally]) -> list[ResultRecord]:
    """Places in vote order: the configured points per place (participation points after them), and a
    bonus for the first places, only for an entry that got a vote."""
    points, bonus = settings.points, settings.bonus_credits
    return [
        ResultRecord(
            challenge_id=challenge_id,
            entry_id=t.entry.entry_id,
            number=t.entry.number,
            user_id=t.entry.user_id,
            rank=place,
            votes=t.votes,
            points=points[place - 1] if place <= len(points) else settings.participation_points,
            bonus=bonus[place - 1] if place <= len(bonus) and t.votes > 0 else 0,
        )
        for place, t in enumerate(ranked, start=1)
    ]


async def close(db: Database, settings: ChallengeSettings, challenge_id: int, now: float) -> ChallengeRecord:
    """Rank the entries and store the results with the phase change, in one transaction; a challenge
    no longer in voting is returned as it is."""
    async with db.transaction() as tx:
        current = await require_challenge(tx, challenge_id)
        if current.phase is not Phase.VOTING:
            return current
        ranked = await entry_store.tally(tx, challenge_id)
        await entry_store.insert_results(tx, rank(settings, challenge_id, ranked))
        await store.set_phase(tx, challenge_id, Phase.CLOSED, now)
        return await require_challenge(tx, challenge_id)


async def grant_bonuses(
    db: Database, quotas: QuotaService, settings: ChallengeSettings, challenge: ChallengeRecord, now: float
) -> None:
    """Grant winners their bonus credits; a grant already made for this place is never made twice."""
    async with db.transaction(write=False) as tx:
        results = await entry_store.results(tx, challenge.challenge_id)
    for result in results:
        if result.bonus > 0 and result.bonus_id is None:
            try:
                await _grant_bonus(db, quotas, settings, challenge, result, now)
            except QuotaError:
                log.exception(
                    "challenge %d: could not grant a bonus to %d", challenge.challenge_id, result.user_id
                )


async def _grant_bonus(  # noqa: PLR0917 - the collaborators and the two records it joins
    db: Database,
    quotas: QuotaService,
    settings: ChallengeSettings,
    challenge: ChallengeRecord,
    result: ResultRecord,
    now: float,
) -> None:
    reason = f"challenge #{challenge.challenge_id}: place {result.rank}"
    async with db.transaction(write=False) as tx:
        granted = await entry_store.bonus_granted(tx, challenge.guild_id, result.user_id, reason)
    days = settings.bonus_days
    bonus_id = granted or await quotas.admin.grant_bonus(
        challenge.guild_id,
        result.user_id,
        result.bonus,
        actor_id=challenge.created_by,
        expires_at=now + days * DAY_S if days else None,
        reason=reason,
    )
    async with db.transaction() as tx:
        await entry_store.set_bonus_id(tx, challenge.challenge_id, result.entry_id, bonus_id)
