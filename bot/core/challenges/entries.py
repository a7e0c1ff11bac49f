"""Entries and votes: entering an image, withdrawing it, voting, and reading results and standings."""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Callable

from bot.core.challenges.rules import (
    Announcer,
    ChallengeRefused,
    ChallengeSettings,
    VoteReceipt,
    check_source,
    check_submissions_open,
    check_voting_open,
    entry_and_challenge,
    require_challenge,
    season_of,
)
from bot.core.i18n import N_
from storage import challenge_entries as entry_store
from storage import challenges as store
from storage.challenges import ChallengeRecord, EntryRecord, Phase, ResultRecord, Standing
from storage.db import Database

log = logging.getLogger(__name__)


class ChallengeEntries:
    """The member-facing verbs of `ChallengeService` (which builds it): entering, withdrawing, voting."""

    db: Database
    settings: ChallengeSettings
    clock: Callable[[], float]
    announcer: Announcer | None

    async def _get(self, challenge_id: int) -> ChallengeRecord | None:
        async with self.db.transaction(write=False) as tx:
            return await store.get_challenge(tx, challenge_id)

    async def _get_required(self, challenge_id: int) -> ChallengeRecord:
        async with self.db.transaction(write=False) as tx:
            return await require_challenge(tx, challenge_id)

    async def live(self, guild_id: int) -> list[ChallengeRecord]:
        async with self.db.transaction(write=False) as tx:
            return await store.live_challenges(tx, guild_id)

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

        async with self.db.transaction() as tx:
            current = await require_challenge(tx, challenge.challenge_id)
            check_submissions_open(current, now)
            gen_id = generation_id or await entry_store.latest_generation(
                tx, current.guild_id, user_id, current.style
            )
            if gen_id is None:
                raise ChallengeRefused(
                    N_("You have no `{style}` image here yet: make one with `/imagine style:{style}`."),
                    style=current.style,
                )
            source = await entry_store.entry_source(tx, gen_id)
            check_source(current, source, user_id)
            try:
                entry = await entry_store.insert_entry(tx, current.challenge_id, user_id, gen_id, now)
            except store.AlreadyEntered:
                raise ChallengeRefused(N_("That image is already entered in this challenge.")) from None
            except store.EntryCapReached:
                raise ChallengeRefused(
                    N_(
                        "You have already entered the most images this challenge takes ({max}). Withdraw one first with `/challenge withdraw`."
                    ),
                    max=current.max_entries,
                ) from None
        if self.announcer is None:
            return current, entry
        async with self.db.transaction(write=False) as tx:  # the picture, outside the write lock
            image = await entry_store.entry_image(tx, gen_id)
        try:
            message_id = await self.announcer.entry_posted(current, entry, image)
        except Exception:
            log.exception("challenge %d: could not post entry %d", current.challenge_id, entry.number)
            async with self.db.transaction() as tx:
                await entry_store.delete_entry(tx, entry.entry_id)
            raise ChallengeRefused(
                N_("brushfire could not post your entry to the gallery; it was not entered.")
            ) from None
        async with self.db.transaction() as tx:
            await entry_store.set_entry_message(tx, entry.entry_id, message_id)
        return current, dataclasses.replace(entry, message_id=message_id)

    async def withdraw(self, challenge: ChallengeRecord, user_id: int, number: int) -> EntryRecord:
        now = self.clock()

        async with self.db.transaction() as tx:
            current = await require_challenge(tx, challenge.challenge_id)
            entry = await entry_store.entry_by_number(tx, current.challenge_id, number)
            if entry is None or entry.user_id != user_id:
                raise ChallengeRefused(N_("You have no entry #{number} in this challenge."), number=number)
            if current.phase is not Phase.SUBMISSIONS or now >= current.voting_at:
                raise ChallengeRefused(N_("Entries can only be withdrawn until voting starts."))
            await entry_store.delete_entry(tx, entry.entry_id)
        if self.announcer is not None:
            try:
                await self.announcer.entry_removed(challenge, entry)
            except Exception:  # the entry is gone from the database; a stale gallery post only confuses
                log.warning("challenge %d: could not remove entry %d's post", challenge.challenge_id, number)
        return entry

    async def my_entries(self, challenge: ChallengeRecord, user_id: int) -> list[EntryRecord]:
        async with self.db.transaction(write=False) as tx:
            return await entry_store.entries(tx, challenge.challenge_id, user_id)

    # --- votes ---

    async def vote(self, entry_id: int, voter_id: int, guild_id: int) -> VoteReceipt:
        """Count a vote from a member of `guild_id`; an entry of another server's challenge is not found."""
        now = self.clock()

        async with self.db.transaction() as tx:
            entry, challenge = await entry_and_challenge(tx, entry_id, guild_id)
            check_voting_open(challenge, now)
            if entry.user_id == voter_id:
                raise ChallengeRefused(N_("You cannot vote for your own entry."))
            try:
                await entry_store.insert_vote(tx, entry, voter_id, now)
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
            used = await entry_store.votes_used(tx, challenge.challenge_id, voter_id)
            return VoteReceipt(entry.number, used, challenge.vote_budget)

    async def unvote(self, entry_id: int, voter_id: int, guild_id: int) -> VoteReceipt:
        now = self.clock()

        async with self.db.transaction() as tx:
            entry, challenge = await entry_and_challenge(tx, entry_id, guild_id)
            check_voting_open(challenge, now)
            if not await entry_store.delete_vote(tx, entry_id, voter_id):
                raise ChallengeRefused(N_("You have not voted for entry #{number}."), number=entry.number)
            used = await entry_store.votes_used(tx, challenge.challenge_id, voter_id)
            return VoteReceipt(entry.number, used, challenge.vote_budget)

    # --- results ---

    async def results(self, challenge_id: int) -> list[ResultRecord]:
        async with self.db.transaction(write=False) as tx:
            return await entry_store.results(tx, challenge_id)

    async def leaderboard(self, guild_id: int, season: str | None = None) -> tuple[str, list[Standing]]:
        chosen = season or season_of(self.clock(), self.settings.season)
        async with self.db.transaction(write=False) as tx:
            rows = await entry_store.standings(tx, guild_id, chosen)
        return chosen, rows
