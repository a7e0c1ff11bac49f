"""Challenges on Discord: vote buttons, the announcer that posts each phase, and entering from a result."""

from __future__ import annotations

import io
import logging
import re
from typing import Any, Self

import discord
from discord import ui

from bot.checks import Gate
from bot.components import BUTTONS_PER_ROW, INDEX_RE, JOB_RE, PREFIX, button, guarded
from bot.core.challenges.rules import ChallengeRefused
from bot.core.i18n import N_
from bot.core.records import ChallengeRecord, EntryRecord, Phase, ResultRecord, extension
from bot.i18n import ENGLISH, Translate
from bot.interactions import client_of
from bot.translator import translate_for, translate_for_server
from bot.usertext import shown
from inference.vocabulary import JobId

log = logging.getLogger(__name__)

ENTRY_RE = r"(?P<entry>[0-9]{1,18})"
MESSAGE_MAX = 2000
TOP = 3
MEDALS = ("🥇", "🥈", "🥉")


def timestamp(at: float, style: str = "R") -> str:
    """Discord's own markup for a moment, shown in each reader's time zone."""
    return f"<t:{int(at)}:{style}>"


def user_mention(user_id: int) -> str:
    return f"<@{user_id}>"


def channel_mention(channel_id: int | None) -> str:
    return f"<#{channel_id}>"


# --- persistent vote buttons under each gallery entry ---


class VoteButton(ui.DynamicItem[ui.Button[Any]], template=rf"{PREFIX}:vote:{ENTRY_RE}"):
    def __init__(self, entry_id: int, _: Translate = ENGLISH) -> None:
        super().__init__(
            ui.Button(
                label=_("Vote"),
                emoji="👍",
                style=discord.ButtonStyle.success,
                custom_id=f"{PREFIX}:vote:{entry_id}",
            )
        )
        self.entry_id = entry_id

    @classmethod
    async def from_custom_id(
        cls, interaction: discord.Interaction, item: ui.Item[Any], match: re.Match[str]
    ) -> Self:
        return cls(int(match["entry"]))

    async def callback(self, interaction: discord.Interaction) -> None:
        await guarded(interaction, self._vote(interaction))

    async def _vote(self, interaction: discord.Interaction) -> None:
        bot = client_of(interaction)
        await bot.gate.admit(interaction, Gate.MEMBER)
        receipt = await bot.services.challenges.vote(
            self.entry_id, interaction.user.id, interaction.guild_id or 0
        )
        _ = translate_for(interaction)
        await interaction.response.send_message(
            _.ngettext(
                "Vote for entry #{number} counted ({used} of {budget} vote used). "
                "Press “Take back” to change your mind before voting closes.",
                "Vote for entry #{number} counted ({used} of {budget} votes used). "
                "Press “Take back” to change your mind before voting closes.",
                receipt.budget,
                number=receipt.entry_number,
                used=receipt.used,
                budget=receipt.budget,
            ),
            ephemeral=True,
        )


class UnvoteButton(ui.DynamicItem[ui.Button[Any]], template=rf"{PREFIX}:unvote:{ENTRY_RE}"):
    def __init__(self, entry_id: int, _: Translate = ENGLISH) -> None:
        super().__init__(
            ui.Button(
                label=_("Take back"),
                emoji="↩️",
                style=discord.ButtonStyle.secondary,
                custom_id=f"{PREFIX}:unvote:{entry_id}",
            )
        )
        self.entry_id = entry_id

    @classmethod
    async def from_custom_id(
        cls, interaction: discord.Interaction, item: ui.Item[Any], match: re.Match[str]
    ) -> Self:
        return cls(int(match["entry"]))

    async def callback(self, interaction: discord.Interaction) -> None:
        await guarded(interaction, self._unvote(interaction))

    async def _unvote(self, interaction: discord.Interaction) -> None:
        receipt = await client_of(interaction).services.challenges.unvote(
            self.entry_id, interaction.user.id, interaction.guild_id or 0
        )
        _ = translate_for(interaction)
        await interaction.response.send_message(
            _.ngettext(
                "Vote for entry #{number} taken back ({used} of {budget} vote used).",
                "Vote for entry #{number} taken back ({used} of {budget} votes used).",
                receipt.budget,
                number=receipt.entry_number,
                used=receipt.used,
                budget=receipt.budget,
            ),
            ephemeral=True,
        )


def entry_view(entry_id: int, _: Translate = ENGLISH) -> ui.View:
    view = ui.View(timeout=None)
    view.add_item(VoteButton(entry_id, _))
    view.add_item(UnvoteButton(entry_id, _))
    return view


# --- what the service asks Discord to show ---


def announcement_embed(challenge: ChallengeRecord, _: Translate = ENGLISH) -> discord.Embed:
    title = "🏆 " + _("Challenge: {theme}", theme=shown(challenge.theme, 240))
    embed = discord.Embed(title=title[:256], colour=discord.Colour.gold())
    embed.description = _(
        "Make an image with the **{style}** style (`/imagine style:{style}`), then press "
        "**Submit to challenge** under it or use `/challenge submit`. Entries appear in the gallery thread "
        "without names until the results.",
        style=challenge.style,
    )
    embed.add_field(name=_("Submissions close"), value=timestamp(challenge.voting_at))
    embed.add_field(name=_("Voting closes"), value=timestamp(challenge.closes_at))
    embed.add_field(name=_("Entries per member"), value=str(challenge.max_entries))
    embed.add_field(name=_("Votes per member"), value=str(challenge.vote_budget))
    embed.set_footer(text=footer(challenge, _))
    return embed


def footer(challenge: ChallengeRecord, _: Translate) -> str:
    return _("challenge #{number} · season {season}", number=challenge.challenge_id, season=challenge.season)


def score(r: ResultRecord, _: Translate) -> str:
    """Votes, points and any bonus of a ranked entry."""
    parts = [
        _.ngettext("{count} vote", "{count} votes", r.votes, count=r.votes),
        _.ngettext("{count} point", "{count} points", r.points, count=r.points),
    ]
    if r.bonus:
        parts.append(_.ngettext("+{count} bonus credit", "+{count} bonus credits", r.bonus, count=r.bonus))
    return ", ".join(parts)


def ranking_lines(results: list[ResultRecord], _: Translate = ENGLISH) -> list[str]:
    return [
        _("{rank}. entry #{number} by {author}", rank=r.rank, number=r.number, author=user_mention(r.user_id))
        + " — "
        + score(r, _)
        for r in results
    ]


def chunks(lines: list[str], limit: int = MESSAGE_MAX) -> list[str]:
    """Lines packed into messages under Discord's length limit."""
    out: list[str] = []
    current = ""
    for line in lines:
        if current and len(current) + 1 + len(line) > limit:
            out.append(current)
            current = ""
        current = f"{current}\n{line}" if current else line[:limit]
    if current:
        out.append(current)
    return out


class DiscordAnnouncer:
    """Posts a challenge's life in its channel and gallery thread (or forum post)."""

    def __init__(self, bot: discord.Client) -> None:
        self.bot = bot

    async def _channel(self, channel_id: int) -> discord.abc.GuildChannel | discord.Thread:
        found = self.bot.get_channel(channel_id)
        if found is None:
            found = await self.bot.fetch_channel(channel_id)
        return found  # type: ignore[return-value]

    def _texts(self, challenge: ChallengeRecord) -> Translate:
        """Posts everyone in the server reads are in the server's language."""
        return translate_for_server(self.bot, challenge.guild_id)

    async def opened(self, challenge: ChallengeRecord) -> tuple[int, int]:
        channel = await self._channel(challenge.channel_id)
        _ = self._texts(challenge)
        embed = announcement_embed(challenge, _)
        name = _("Gallery: {theme}", theme=challenge.theme)[:100]
        if isinstance(channel, discord.ForumChannel):
            post = await channel.create_thread(name=name, embed=embed)
            return post.message.id, post.thread.id
        if not isinstance(channel, discord.TextChannel):
            raise ChallengeRefused(
                N_("A challenge needs a text or forum channel, not a thread or voice channel.")
            )
        message = await channel.send(embed=embed)
        try:
            thread = await message.create_thread(name=name)
        except discord.HTTPException:
            await message.delete()  # no gallery, no challenge: do not leave an announcement of nothing
            raise
        return message.id, thread.id

    def _gallery(self, challenge: ChallengeRecord) -> discord.PartialMessageable:
        return self.bot.get_partial_messageable(
            challenge.gallery_id or challenge.channel_id, guild_id=challenge.guild_id
        )

    async def entry_posted(self, challenge: ChallengeRecord, entry: EntryRecord, image: bytes) -> int:
        file = discord.File(io.BytesIO(image), filename=f"entry-{entry.number}.{extension(image)}")
        _ = self._texts(challenge)
        message = await self._gallery(challenge).send(
            content=_(
                "**Entry #{number}** — “{theme}”", number=entry.number, theme=shown(challenge.theme, 400)
            ),
            file=file,
            view=entry_view(entry.entry_id, _),
        )
        return message.id

    async def entry_removed(self, challenge: ChallengeRecord, entry: EntryRecord) -> None:
        if entry.message_id is not None:
            await self._gallery(challenge).get_partial_message(entry.message_id).delete()

    def _news(self, challenge: ChallengeRecord) -> tuple[discord.PartialMessageable, bool]:
        """Where phase news goes: the channel, or the challenge's own post when the channel is a forum
        (a forum takes posts, not messages). The flag says whether that is the gallery itself."""
        if isinstance(self.bot.get_channel(challenge.channel_id), discord.ForumChannel):
            return self._gallery(challenge), True
        return self.bot.get_partial_messageable(challenge.channel_id, guild_id=challenge.guild_id), False

    async def voting(self, challenge: ChallengeRecord) -> None:
        _ = self._texts(challenge)
        text = "🗳️ " + _.ngettext(
            "Voting is open for **{theme}**! Vote in {gallery} with the buttons under each entry: {budget} vote "
            "each, not for your own. Closes {when}.",
            "Voting is open for **{theme}**! Vote in {gallery} with the buttons under each entry: {budget} votes "
            "each, not for your own. Closes {when}.",
            challenge.vote_budget,
            theme=shown(challenge.theme, 400),
            gallery=channel_mention(challenge.gallery_id),
            budget=challenge.vote_budget,
            when=timestamp(challenge.closes_at),
        )
        channel, in_gallery = self._news(challenge)
        await channel.send(text)
        if challenge.gallery_id and not in_gallery:
            await self._gallery(challenge).send(
                _("Submissions are closed; voting is open until {when}.", when=timestamp(challenge.closes_at))
            )

    async def closed(self, challenge: ChallengeRecord, results: list[ResultRecord]) -> None:
        channel, _in_gallery = self._news(challenge)
        _ = self._texts(challenge)
        title = _("Results: {theme}", theme=shown(challenge.theme, 240))
        embed = discord.Embed(title=title[:256], colour=discord.Colour.gold())
        if not results:
            embed.description = _("No entries this time.")
        for medal, r in zip(MEDALS, results[:TOP], strict=False):
            value = f"<@{r.user_id}> — " + _("entry #{number}", number=r.number) + ", " + score(r, _)
            embed.add_field(name=medal + " " + _("place {rank}", rank=r.rank), value=value, inline=False)
        embed.set_footer(text=footer(challenge, _))
        winners = " ".join(dict.fromkeys(f"<@{r.user_id}>" for r in results[:TOP]))
        theme = shown(challenge.theme, 400)
        content = "🏁 " + (
            _("**{theme}** is over: congratulations {winners}!", theme=theme, winners=winners)
            if winners
            else _("**{theme}** is over.", theme=theme)
        )
        # Only the winners are pinged (embeds never ping); the theme is escaped text.
        winner_ids = dict.fromkeys(r.user_id for r in results[:TOP])  # one member may place twice
        winners_only = discord.AllowedMentions(users=[discord.Object(u) for u in winner_ids])
        await channel.send(content, embed=embed, allowed_mentions=winners_only)
        if challenge.gallery_id:
            heading = _("**Final ranking for “{theme}”**", theme=theme)
            lines = [heading, *ranking_lines(results, _)]
            for text in chunks(lines):
                await self._gallery(challenge).send(text, allowed_mentions=discord.AllowedMentions.none())
            await self._reveal(challenge, results)

    async def _reveal(self, challenge: ChallengeRecord, results: list[ResultRecord]) -> None:
        """Name each entry's author on its gallery post, now that voting is over (best effort)."""
        gallery = self._gallery(challenge)
        _ = self._texts(challenge)
        for r in results:
            if r.message_id is None:
                continue
            text = _(
                "**Entry #{number}** by {author} — place {rank}, {votes}",
                number=r.number,
                author=user_mention(r.user_id),
                rank=r.rank,
                votes=_.ngettext("{count} vote", "{count} votes", r.votes, count=r.votes),
            )
            try:
                await gallery.get_partial_message(r.message_id).edit(
                    content=text, allowed_mentions=discord.AllowedMentions.none()
                )
            except discord.HTTPException as exc:  # a deleted post: the ranking above still names everyone
                log.info("challenge %d: could not reveal entry %d: %s", challenge.challenge_id, r.number, exc)

    async def cancelled(self, challenge: ChallengeRecord) -> None:
        channel, _in_gallery = self._news(challenge)
        _ = self._texts(challenge)
        await channel.send(
            _(
                "The challenge **{theme}** was cancelled; there will be no results.",
                theme=shown(challenge.theme, 400),
            )
        )


# --- entering from a result's button ---


async def submit_from_result(interaction: discord.Interaction, job_id: JobId, index: int | None) -> None:
    bot = client_of(interaction)
    await bot.gate.admit(interaction, Gate.MEMBER)
    gens = await bot.services.jobs.images_in(job_id, interaction.guild_id or 0)
    if not gens:
        raise ChallengeRefused(N_("That result has no images left to enter."))
    if index is None and len(gens) > 1:
        _ = translate_for(interaction)
        await interaction.response.send_message(
            _("Which image do you want to enter?"),
            view=submit_picker(job_id, [g.index for g in gens], _),
            ephemeral=True,
        )
        return
    gen = next((g for g in gens if g.index == (index or 0)), None)
    if gen is None:
        raise ChallengeRefused(N_("Image {number} of that result is gone."), number=(index or 0) + 1)
    challenge = await challenge_for_image(interaction, gen.style)
    await submit_entry(interaction, challenge, gen.generation_id)


async def challenge_for_image(interaction: discord.Interaction, style: str | None) -> ChallengeRecord:
    """The running challenge an image is meant for: among several, the one taking its style."""
    bot = client_of(interaction).services
    guild_id, channel_id = interaction.guild_id or 0, interaction.channel_id or 0
    open_ = [c for c in await bot.challenges.live(guild_id) if c.phase is Phase.SUBMISSIONS]
    matching = [c for c in open_ if c.style == style]
    if len(matching) == 1:
        return matching[0]
    return await bot.challenges.find(guild_id, channel_id)


async def submit_entry(
    interaction: discord.Interaction, challenge: ChallengeRecord, generation_id: str | None
) -> None:
    await interaction.response.defer(ephemeral=True, thinking=True)
    challenge, entry = await client_of(interaction).services.challenges.submit(
        challenge, interaction.user.id, generation_id
    )
    _ = translate_for(interaction)
    where = f"<#{challenge.gallery_id}>" if challenge.gallery_id else _("the gallery")
    await interaction.followup.send(
        _(
            "Entered as entry #{number} in **{theme}** (posted in {where} without your name). "
            "You can withdraw it with `/challenge withdraw entry:{number}` until {when}.",
            number=entry.number,
            theme=shown(challenge.theme, 400),
            where=where,
            when=timestamp(challenge.voting_at),
        ),
        ephemeral=True,
    )


class SubmitButton(ui.DynamicItem[ui.Button[Any]], template=rf"{PREFIX}:submit:{JOB_RE}(?::{INDEX_RE})?"):
    """Enter this result in the server's running challenge; on a several-image result, pick which first."""

    def __init__(
        self, job_id: JobId, index: int | None = None, row: int | None = 0, _: Translate = ENGLISH
    ) -> None:
        label = _("Submit to challenge") if index is None else _("Submit image {number}", number=index + 1)
        super().__init__(
            button(
                "submit", job_id, index, label=label, emoji="🏆", style=discord.ButtonStyle.secondary, row=row
            )
        )
        self.job_id = job_id
        self.index = index

    @classmethod
    async def from_custom_id(
        cls, interaction: discord.Interaction, item: ui.Item[Any], match: re.Match[str]
    ) -> Self:
        return cls(JobId(match["job"]), int(match["n"]) if match["n"] is not None else None)

    async def callback(self, interaction: discord.Interaction) -> None:
        await guarded(interaction, submit_from_result(interaction, self.job_id, self.index))


def submit_picker(job_id: JobId, indexes: list[int], _: Translate = ENGLISH) -> ui.View:
    """One Submit button per image, for a result with several."""
    view = ui.View(timeout=None)
    for n in indexes[: BUTTONS_PER_ROW * 4]:
        view.add_item(SubmitButton(job_id, n, row=None, _=_))
    return view
