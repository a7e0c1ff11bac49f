"""/challenge: community style challenges (start, schedule, submit, vote, results) and their Discord posts."""

from __future__ import annotations

import io
import logging
import re
from typing import TYPE_CHECKING, Any, Literal, Self

import discord
from discord import app_commands, ui
from discord.ext import commands

from bot.challenges import (
    ChallengeRefused,
    ScheduleRequest,
    StartRequest,
    parse_duration,
)
from bot.checks import Gate, admin_only
from bot.usertext import shown
from bot.views import PREFIX, guarded, submit_picker
from storage.challenges import ChallengeRecord, EntryRecord, Phase, ResultRecord

if TYPE_CHECKING:
    from bot.bot import ImageBot

log = logging.getLogger(__name__)

ENTRY_RE = r"(?P<entry>[0-9]{1,18})"
MESSAGE_MAX = 2000
TOP = 3
MEDALS = ("🥇", "🥈", "🥉")
ChannelOption = discord.TextChannel | discord.ForumChannel


def _bot(interaction: discord.Interaction) -> ImageBot:
    return interaction.client  # type: ignore[return-value]


def _ts(at: float, style: str = "R") -> str:
    return f"<t:{int(at)}:{style}>"


# --- persistent vote buttons under each gallery entry ---


class VoteButton(ui.DynamicItem[ui.Button[Any]], template=rf"{PREFIX}:vote:{ENTRY_RE}"):
    def __init__(self, entry_id: int) -> None:
        super().__init__(
            ui.Button(
                label="Vote",
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
        bot = _bot(interaction)
        await bot.gate.admit(interaction, Gate.MEMBER)
        receipt = await bot.challenges.vote(self.entry_id, interaction.user.id, interaction.guild_id or 0)
        await interaction.response.send_message(
            f"Vote for entry #{receipt.entry_number} counted ({receipt.used} of {receipt.budget} votes used). "
            "Press “Take back” to change your mind before voting closes.",
            ephemeral=True,
        )


class UnvoteButton(ui.DynamicItem[ui.Button[Any]], template=rf"{PREFIX}:unvote:{ENTRY_RE}"):
    def __init__(self, entry_id: int) -> None:
        super().__init__(
            ui.Button(
                label="Take back",
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
        receipt = await _bot(interaction).challenges.unvote(
            self.entry_id, interaction.user.id, interaction.guild_id or 0
        )
        await interaction.response.send_message(
            f"Vote for entry #{receipt.entry_number} taken back ({receipt.used} of {receipt.budget} votes used).",
            ephemeral=True,
        )


def entry_view(entry_id: int) -> ui.View:
    view = ui.View(timeout=None)
    view.add_item(VoteButton(entry_id))
    view.add_item(UnvoteButton(entry_id))
    return view


# --- what the service asks Discord to show ---


def announcement_embed(challenge: ChallengeRecord) -> discord.Embed:
    embed = discord.Embed(title=f"🏆 Challenge: {shown(challenge.theme, 240)}", colour=discord.Colour.gold())
    embed.description = (
        f"Make an image with the **{challenge.style}** style (`/imagine style:{challenge.style}`), then press "
        "**Submit to challenge** under it or use `/challenge submit`. Entries appear in the gallery thread "
        "without names until the results."
    )
    embed.add_field(name="Submissions close", value=_ts(challenge.voting_at))
    embed.add_field(name="Voting closes", value=_ts(challenge.closes_at))
    embed.add_field(name="Entries per member", value=str(challenge.max_entries))
    embed.add_field(name="Votes per member", value=str(challenge.vote_budget))
    embed.set_footer(text=f"challenge #{challenge.challenge_id} · season {challenge.season}")
    return embed


def ranking_lines(results: list[ResultRecord]) -> list[str]:
    return [
        f"{r.rank}. entry #{r.number} by <@{r.user_id}> — {r.votes} vote(s), {r.points} point(s)"
        + (f", +{r.bonus} bonus credits" if r.bonus else "")
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

    def __init__(self, bot: ImageBot) -> None:
        self.bot = bot

    async def _channel(self, channel_id: int) -> discord.abc.GuildChannel | discord.Thread:
        found = self.bot.get_channel(channel_id)
        if found is None:
            found = await self.bot.fetch_channel(channel_id)
        return found  # type: ignore[return-value]

    async def opened(self, challenge: ChallengeRecord) -> tuple[int, int]:
        channel = await self._channel(challenge.channel_id)
        embed = announcement_embed(challenge)
        name = f"Gallery: {challenge.theme}"[:100]
        if isinstance(channel, discord.ForumChannel):
            post = await channel.create_thread(name=name, embed=embed)
            return post.message.id, post.thread.id
        if not isinstance(channel, discord.TextChannel):
            raise ChallengeRefused(
                "A challenge needs a text or forum channel, not a thread or voice channel."
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

    async def entry_posted(self, challenge: ChallengeRecord, entry: EntryRecord, png: bytes) -> int:
        file = discord.File(io.BytesIO(png), filename=f"entry-{entry.number}.png")
        message = await self._gallery(challenge).send(
            content=f"**Entry #{entry.number}** — “{shown(challenge.theme, 400)}”",
            file=file,
            view=entry_view(entry.entry_id),
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
        text = (
            f"🗳️ Voting is open for **{shown(challenge.theme, 400)}**! Vote in <#{challenge.gallery_id}> with the buttons "
            f"under each entry: {challenge.vote_budget} vote(s) each, not for your own. Closes "
            f"{_ts(challenge.closes_at)}."
        )
        channel, in_gallery = self._news(challenge)
        await channel.send(text)
        if challenge.gallery_id and not in_gallery:
            await self._gallery(challenge).send(
                f"Submissions are closed; voting is open until {_ts(challenge.closes_at)}."
            )

    async def closed(self, challenge: ChallengeRecord, results: list[ResultRecord]) -> None:
        channel, _ = self._news(challenge)
        embed = discord.Embed(title=f"Results: {shown(challenge.theme, 240)}", colour=discord.Colour.gold())
        if not results:
            embed.description = "No entries this time."
        for medal, r in zip(MEDALS, results[:TOP], strict=False):
            value = f"<@{r.user_id}> — entry #{r.number}, {r.votes} vote(s), {r.points} point(s)"
            if r.bonus:
                value += f", +{r.bonus} bonus credits"
            embed.add_field(name=f"{medal} place {r.rank}", value=value, inline=False)
        embed.set_footer(text=f"challenge #{challenge.challenge_id} · season {challenge.season}")
        winners = " ".join(dict.fromkeys(f"<@{r.user_id}>" for r in results[:TOP]))
        content = f"🏁 **{shown(challenge.theme, 400)}** is over" + (
            f": congratulations {winners}!" if winners else "."
        )
        # Only the winners are pinged (embeds never ping); the theme is escaped text.
        winner_ids = dict.fromkeys(r.user_id for r in results[:TOP])  # one member may place twice
        winners_only = discord.AllowedMentions(users=[discord.Object(u) for u in winner_ids])
        await channel.send(content, embed=embed, allowed_mentions=winners_only)
        if challenge.gallery_id:
            lines = [f"**Final ranking for “{shown(challenge.theme, 400)}”**", *ranking_lines(results)]
            for text in chunks(lines):
                await self._gallery(challenge).send(text, allowed_mentions=discord.AllowedMentions.none())
            await self._reveal(challenge, results)

    async def _reveal(self, challenge: ChallengeRecord, results: list[ResultRecord]) -> None:
        """Name each entry's author on its gallery post, now that voting is over (best effort)."""
        gallery = self._gallery(challenge)
        for r in results:
            if r.message_id is None:
                continue
            text = f"**Entry #{r.number}** by <@{r.user_id}> — place {r.rank}, {r.votes} vote(s)"
            try:
                await gallery.get_partial_message(r.message_id).edit(
                    content=text, allowed_mentions=discord.AllowedMentions.none()
                )
            except discord.HTTPException as exc:  # a deleted post: the ranking above still names everyone
                log.info("challenge %d: could not reveal entry %d: %s", challenge.challenge_id, r.number, exc)

    async def cancelled(self, challenge: ChallengeRecord) -> None:
        channel, _ = self._news(challenge)
        await channel.send(
            f"The challenge **{shown(challenge.theme, 400)}** was cancelled; there will be no results."
        )


# --- entering from a result's button ---


async def submit_from_result(interaction: discord.Interaction, job_id: str, index: int | None) -> None:
    bot = _bot(interaction)
    await bot.gate.admit(interaction, Gate.MEMBER)
    gens = await bot.jobs.images_in(job_id, interaction.guild_id or 0)
    if not gens:
        raise ChallengeRefused("That result has no images left to enter.")
    if index is None and len(gens) > 1:
        await interaction.response.send_message(
            "Which image do you want to enter?",
            view=submit_picker(job_id, [g.index for g in gens]),
            ephemeral=True,
        )
        return
    gen = next((g for g in gens if g.index == (index or 0)), None)
    if gen is None:
        raise ChallengeRefused(f"Image {(index or 0) + 1} of that result is gone.")
    challenge = await _challenge_for_image(interaction, gen.style)
    await _submit(interaction, challenge, gen.generation_id)


async def _challenge_for_image(interaction: discord.Interaction, style: str | None) -> ChallengeRecord:
    """The running challenge an image is meant for: among several, the one taking its style."""
    bot = _bot(interaction)
    guild_id, channel_id = interaction.guild_id or 0, interaction.channel_id or 0
    open_ = [c for c in await bot.challenges.live(guild_id) if c.phase is Phase.SUBMISSIONS]
    matching = [c for c in open_ if c.style == style]
    if len(matching) == 1:
        return matching[0]
    return await bot.challenges.find(guild_id, channel_id)


async def _submit(
    interaction: discord.Interaction, challenge: ChallengeRecord, generation_id: str | None
) -> None:
    await interaction.response.defer(ephemeral=True, thinking=True)
    challenge, entry = await _bot(interaction).challenges.submit(
        challenge, interaction.user.id, generation_id
    )
    where = f"<#{challenge.gallery_id}>" if challenge.gallery_id else "the gallery"
    await interaction.followup.send(
        f"Entered as entry #{entry.number} in **{shown(challenge.theme, 400)}** (posted in {where} without your name). "
        f"You can withdraw it with `/challenge withdraw entry:{entry.number}` until {_ts(challenge.voting_at)}.",
        ephemeral=True,
    )


class _ChallengeCog(commands.GroupCog):
    """What both challenge command groups share: finding a challenge and autocompleting it."""

    def __init__(self, bot: ImageBot) -> None:
        self.bot = bot
        super().__init__()

    async def _style(self, interaction: discord.Interaction, name: str) -> str:
        book = await self.bot.jobs.style_book(interaction.guild_id or 0)
        style = book.style(name)
        if style is None:
            raise ChallengeRefused("A challenge needs a style; pick one of the presets.")
        return style.name

    async def _find(self, interaction: discord.Interaction, challenge: int | None) -> ChallengeRecord:
        return await self.bot.challenges.find(
            interaction.guild_id or 0, interaction.channel_id or 0, challenge
        )

    async def _live_choices(
        self, interaction: discord.Interaction, current: int | str
    ) -> list[app_commands.Choice[int]]:
        live = await self.bot.challenges.live(interaction.guild_id or 0)
        text = str(current or "").strip().lower()
        return [
            app_commands.Choice(
                name=f"#{c.challenge_id} {c.theme} ({c.phase.value})"[:100], value=c.challenge_id
            )
            for c in live
            if not text or text == "0" or text in f"#{c.challenge_id} {c.theme}".lower()
        ][:25]


class Challenges(_ChallengeCog, group_name="challenge", group_description="Community style challenges"):
    """What members do: enter, withdraw, see the standings (votes are buttons in the gallery)."""

    async def cog_load(self) -> None:
        self.bot.add_dynamic_items(VoteButton, UnvoteButton)
        self.bot.challenges.attach(DiscordAnnouncer(self.bot), self.bot.scheduler)

    @app_commands.command(
        name="submit",
        description="Enter one of your images in the running challenge",
        extras={"gate": Gate.MEMBER},
    )
    @app_commands.describe(
        job="The job id from your result's footer (default: your newest image in the challenge's style)",
        image="Which image of that result (1 = first)",
    )
    async def submit(
        self,
        interaction: discord.Interaction,
        job: app_commands.Range[str, 32, 32] | None = None,
        image: app_commands.Range[int, 1, 8] = 1,
        challenge: int | None = None,
    ) -> None:
        found = await self._find(interaction, challenge)
        generation_id = None
        if job is not None:
            gens = await self.bot.jobs.images_in(job.strip().lower(), interaction.guild_id or 0)
            gen = next((g for g in gens if g.index == image - 1), None)
            if gen is None:
                raise ChallengeRefused("Only images brushfire made (and that still exist) can be entered.")
            generation_id = gen.generation_id
        await _submit(interaction, found, generation_id)

    @app_commands.command(name="withdraw", description="Take one of your entries back before voting starts")
    async def withdraw(
        self,
        interaction: discord.Interaction,
        entry: app_commands.Range[int, 1, 10_000],
        challenge: int | None = None,
    ) -> None:
        found = await self._find(interaction, challenge)
        await self.bot.challenges.withdraw(found, interaction.user.id, entry)
        await interaction.response.send_message(f"Entry #{entry} withdrawn.", ephemeral=True)

    @app_commands.command(name="leaderboard", description="Season standings")
    @app_commands.describe(season="e.g. 2026-Q4 (default: the current season)")
    async def leaderboard(self, interaction: discord.Interaction, season: str | None = None) -> None:
        chosen, rows = await self.bot.challenges.leaderboard(interaction.guild_id or 0, season)
        embed = discord.Embed(title=f"Challenge leaderboard · season {chosen}", colour=discord.Colour.gold())
        lines = [
            f"{n}. <@{s.user_id}> — **{s.points}** point(s), {s.wins} win(s), {s.entries} ranked entr"
            + ("y" if s.entries == 1 else "ies")
            for n, s in enumerate(rows, start=1)
        ]
        embed.description = "\n".join(lines) or "No results this season yet."
        await interaction.response.send_message(embed=embed, ephemeral=True)

    @submit.autocomplete("challenge")
    @withdraw.autocomplete("challenge")
    async def _live(
        self, interaction: discord.Interaction, current: int | str
    ) -> list[app_commands.Choice[int]]:
        return await self._live_choices(interaction, current)


@admin_only
class ChallengeAdmin(
    _ChallengeCog,
    group_name="challenge-admin",
    group_description="Run this server's challenges (Manage Server)",
):
    """The admin verbs, in their own command so members never see them (Discord hides whole commands only)."""

    @app_commands.command(name="start", description="Start a challenge (Manage Server)")
    @app_commands.describe(
        theme="What to make, e.g. harbours at dawn",
        style="The style every entry must use",
        submit_for="How long submissions stay open, e.g. 3d or 12h",
        vote_for="How long voting lasts after that, e.g. 2d",
        channel="Where to announce it (default: here)",
        max_entries="Most images each member may enter",
    )
    async def start(
        self,
        interaction: discord.Interaction,
        *,
        theme: app_commands.Range[str, 1, 200],
        style: str,
        submit_for: str,
        vote_for: str,
        channel: ChannelOption | None = None,
        max_entries: app_commands.Range[int, 1, 10] | None = None,
    ) -> None:
        request = StartRequest(
            guild_id=interaction.guild_id or 0,
            channel_id=channel.id if channel else interaction.channel_id or 0,
            theme=theme,
            style=await self._style(interaction, style),
            submit_s=parse_duration(submit_for),
            vote_s=parse_duration(vote_for),
            created_by=interaction.user.id,
            max_entries=max_entries,
        )
        await interaction.response.defer(ephemeral=True, thinking=True)
        started = await self.bot.challenges.start(request)
        await interaction.followup.send(
            f"Challenge #{started.challenge_id} “{shown(started.theme, 400)}” is open in <#{started.channel_id}>; "
            f"submissions close {_ts(started.voting_at)}.",
            ephemeral=True,
        )

    @app_commands.command(
        name="schedule", description="Run challenges by themselves, daily or weekly (Manage Server)"
    )
    @app_commands.describe(
        themes="Themes to rotate through, separated by ;",
        rhythm="How often a new challenge starts",
        submit_for="Submission phase length, e.g. 4d",
        vote_for="Voting phase length, e.g. 2d",
    )
    async def schedule(
        self,
        interaction: discord.Interaction,
        *,
        themes: app_commands.Range[str, 1, 1000],
        style: str,
        rhythm: Literal["daily", "weekly"],
        submit_for: str,
        vote_for: str,
        channel: ChannelOption | None = None,
        max_entries: app_commands.Range[int, 1, 10] | None = None,
    ) -> None:
        request = ScheduleRequest(
            guild_id=interaction.guild_id or 0,
            channel_id=channel.id if channel else interaction.channel_id or 0,
            style=await self._style(interaction, style),
            themes=tuple(t for t in (p.strip() for p in themes.split(";")) if t),
            rhythm=rhythm,
            submit_s=parse_duration(submit_for),
            vote_s=parse_duration(vote_for),
            created_by=interaction.user.id,
            max_entries=max_entries,
        )
        scheduled = await self.bot.challenges.schedule(request)
        await interaction.response.send_message(
            f"A {rhythm} challenge will start in <#{scheduled.channel_id}> {_ts(scheduled.next_start_at)}, "
            f"rotating {len(scheduled.themes)} theme(s).",
            ephemeral=True,
        )

    @app_commands.command(
        name="unschedule", description="Stop a channel's recurring challenge (Manage Server)"
    )
    async def unschedule(
        self, interaction: discord.Interaction, channel: ChannelOption | None = None
    ) -> None:
        channel_id = channel.id if channel else interaction.channel_id or 0
        await self.bot.challenges.stop_schedule(interaction.guild_id or 0, channel_id)
        await interaction.response.send_message(
            f"No more recurring challenges in <#{channel_id}>.", ephemeral=True
        )

    @app_commands.command(name="extend", description="Give the current phase more time (Manage Server)")
    async def extend(self, interaction: discord.Interaction, by: str, challenge: int | None = None) -> None:
        found = await self._find(interaction, challenge)
        changed = await self.bot.challenges.extend(found, parse_duration(by))
        end = changed.voting_at if changed.phase is Phase.SUBMISSIONS else changed.closes_at
        await interaction.response.send_message(
            f"The {changed.phase.value} phase of “{shown(changed.theme, 400)}” now ends {_ts(end)}.",
            ephemeral=True,
        )

    @app_commands.command(name="close", description="End the current phase now (Manage Server)")
    async def close(self, interaction: discord.Interaction, challenge: int | None = None) -> None:
        found = await self._find(interaction, challenge)
        await interaction.response.defer(ephemeral=True, thinking=True)
        changed = await self.bot.challenges.end_phase_now(found)
        await interaction.followup.send(
            f"“{shown(changed.theme, 400)}” is now {changed.phase.value}.", ephemeral=True
        )

    @app_commands.command(name="cancel", description="Cancel a challenge without results (Manage Server)")
    async def cancel(self, interaction: discord.Interaction, challenge: int | None = None) -> None:
        found = await self._find(interaction, challenge)
        changed = await self.bot.challenges.cancel(found)
        await interaction.response.send_message(
            f"“{shown(changed.theme, 400)}” was cancelled.", ephemeral=True
        )

    @extend.autocomplete("challenge")
    @close.autocomplete("challenge")
    @cancel.autocomplete("challenge")
    async def _live(
        self, interaction: discord.Interaction, current: int | str
    ) -> list[app_commands.Choice[int]]:
        return await self._live_choices(interaction, current)

    @start.autocomplete("style")
    @schedule.autocomplete("style")
    async def _styles(self, interaction: discord.Interaction, current: str) -> list[app_commands.Choice[str]]:
        book = await self.bot.jobs.style_book(interaction.guild_id or 0)
        return [app_commands.Choice(name=s.name, value=s.name) for s in book.search(current)]


async def setup(bot: ImageBot) -> None:
    members = Challenges(bot)
    members.app_command.guild_only = True
    await bot.add_cog(members)
    await bot.add_cog(ChallengeAdmin(bot))
