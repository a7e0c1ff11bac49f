"""/challenge and /challenge-admin: community style challenges (start, schedule, submit, vote, results)."""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Literal

import discord
from discord import app_commands
from discord.ext import commands

from bot.challenge_posts import (
    DiscordAnnouncer,
    UnvoteButton,
    VoteButton,
    channel_mention,
    submit_entry,
    timestamp,
)
from bot.checks import Gate, admin_only
from bot.core.challenges.rules import (
    PHASE_NAMES,
    ChallengeRefused,
    ScheduleRequest,
    StartRequest,
    parse_duration,
)
from bot.core.i18n import N_, Message
from bot.core.records import ChallengeRecord, Phase
from bot.usertext import shown
from inference.vocabulary import JobId

if TYPE_CHECKING:
    from bot.client import ImageBot

log = logging.getLogger(__name__)

ChannelOption = discord.TextChannel | discord.ForumChannel


class _ChallengeCog(commands.GroupCog):
    """What both challenge command groups share: finding a challenge and autocompleting it."""

    def __init__(self, bot: ImageBot) -> None:
        self.bot = bot
        super().__init__()

    async def _style(self, interaction: discord.Interaction, name: str) -> str:
        book = await self.bot.services.guilds.style_book(interaction.guild_id or 0)
        style = book.style(name)
        if style is None:
            raise ChallengeRefused(N_("A challenge needs a style; pick one of the presets."))
        return style.name

    async def _find(self, interaction: discord.Interaction, challenge: int | None) -> ChallengeRecord:
        return await self.bot.services.challenges.find(
            interaction.guild_id or 0, interaction.channel_id or 0, challenge
        )

    async def _live_choices(
        self, interaction: discord.Interaction, current: int | str
    ) -> list[app_commands.Choice[int]]:
        live = await self.bot.services.challenges.live(interaction.guild_id or 0)
        _ = self.bot.i18n_for(interaction)
        text = str(current or "").strip().lower()
        return [
            app_commands.Choice(
                name=f"#{c.challenge_id} {c.theme} ({_.message(Message(PHASE_NAMES[c.phase]))})"[:100],
                value=c.challenge_id,
            )
            for c in live
            if not text or text == "0" or text in f"#{c.challenge_id} {c.theme}".lower()
        ][:25]


@app_commands.guild_only()
class Challenges(_ChallengeCog, group_name="challenge", group_description="Community style challenges"):
    """What members do: enter, withdraw, see the standings (votes are buttons in the gallery)."""

    async def cog_load(self) -> None:
        self.bot.add_dynamic_items(VoteButton, UnvoteButton)
        self.bot.services.challenges.attach(DiscordAnnouncer(self.bot), self.bot.scheduler)

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
            gens = await self.bot.services.jobs.images_in(
                JobId(job.strip().lower()), interaction.guild_id or 0
            )
            gen = next((g for g in gens if g.index == image - 1), None)
            if gen is None:
                raise ChallengeRefused(
                    N_("Only images brushfire made (and that still exist) can be entered.")
                )
            generation_id = gen.generation_id
        await submit_entry(interaction, found, generation_id)

    @app_commands.command(name="withdraw", description="Take one of your entries back before voting starts")
    async def withdraw(
        self,
        interaction: discord.Interaction,
        entry: app_commands.Range[int, 1, 10_000],
        challenge: int | None = None,
    ) -> None:
        found = await self._find(interaction, challenge)
        await self.bot.services.challenges.withdraw(found, interaction.user.id, entry)
        _ = self.bot.i18n_for(interaction)
        await interaction.response.send_message(_("Entry #{number} withdrawn.", number=entry), ephemeral=True)

    @app_commands.command(name="leaderboard", description="Season standings")
    @app_commands.describe(season="e.g. 2026-Q4 (default: the current season)")
    async def leaderboard(self, interaction: discord.Interaction, season: str | None = None) -> None:
        chosen, rows = await self.bot.services.challenges.leaderboard(interaction.guild_id or 0, season)
        _ = self.bot.i18n_for(interaction)
        title = _("Challenge leaderboard · season {season}", season=chosen)
        embed = discord.Embed(title=title, colour=discord.Colour.gold())
        lines = [
            f"{n}. <@{s.user_id}> — "
            + ", ".join(
                (
                    _.ngettext("**{count}** point", "**{count}** points", s.points, count=s.points),
                    _.ngettext("{count} win", "{count} wins", s.wins, count=s.wins),
                    _.ngettext("{count} ranked entry", "{count} ranked entries", s.entries, count=s.entries),
                )
            )
            for n, s in enumerate(rows, start=1)
        ]
        embed.description = "\n".join(lines) or _("No results this season yet.")
        await interaction.response.send_message(embed=embed, ephemeral=True)

    @submit.autocomplete("challenge")
    @withdraw.autocomplete("challenge")
    async def _live(
        self, interaction: discord.Interaction, current: int | str
    ) -> list[app_commands.Choice[int]]:
        return await self._live_choices(interaction, current)


@admin_only(N_("Only members with Manage Server can run challenges."))
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
        started = await self.bot.services.challenges.start(request)
        _ = self.bot.i18n_for(interaction)
        await interaction.followup.send(
            _(
                "Challenge #{number} “{theme}” is open in {channel}; submissions close {when}.",
                number=started.challenge_id,
                theme=shown(started.theme, 400),
                channel=channel_mention(started.channel_id),
                when=timestamp(started.voting_at),
            ),
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
        scheduled = await self.bot.services.challenges.schedule(request)
        _ = self.bot.i18n_for(interaction)
        template = (
            N_("A daily challenge will start in {channel} {when}, rotating {themes}.")
            if rhythm == "daily"
            else N_("A weekly challenge will start in {channel} {when}, rotating {themes}.")
        )
        count = len(scheduled.themes)
        text = Message(
            template,
            {
                "channel": channel_mention(scheduled.channel_id),
                "when": timestamp(scheduled.next_start_at),
                "themes": _.ngettext("{count} theme", "{count} themes", count, count=count),
            },
        )
        await interaction.response.send_message(_.message(text), ephemeral=True)

    @app_commands.command(
        name="unschedule", description="Stop a channel's recurring challenge (Manage Server)"
    )
    async def unschedule(
        self, interaction: discord.Interaction, channel: ChannelOption | None = None
    ) -> None:
        channel_id = channel.id if channel else interaction.channel_id or 0
        await self.bot.services.challenges.stop_schedule(interaction.guild_id or 0, channel_id)
        _ = self.bot.i18n_for(interaction)
        await interaction.response.send_message(
            _("No more recurring challenges in {channel}.", channel=channel_mention(channel_id)),
            ephemeral=True,
        )

    @app_commands.command(name="extend", description="Give the current phase more time (Manage Server)")
    async def extend(self, interaction: discord.Interaction, by: str, challenge: int | None = None) -> None:
        found = await self._find(interaction, challenge)
        changed = await self.bot.services.challenges.extend(found, parse_duration(by))
        end = changed.voting_at if changed.phase is Phase.SUBMISSIONS else changed.closes_at
        _ = self.bot.i18n_for(interaction)
        theme = shown(changed.theme, 400)
        text = (
            _("Submissions for “{theme}” now close {when}.", theme=theme, when=timestamp(end))
            if changed.phase is Phase.SUBMISSIONS
            else _("Voting on “{theme}” now closes {when}.", theme=theme, when=timestamp(end))
        )
        await interaction.response.send_message(text, ephemeral=True)

    @app_commands.command(name="close", description="End the current phase now (Manage Server)")
    async def close(self, interaction: discord.Interaction, challenge: int | None = None) -> None:
        found = await self._find(interaction, challenge)
        await interaction.response.defer(ephemeral=True, thinking=True)
        changed = await self.bot.services.challenges.end_phase_now(found)
        _ = self.bot.i18n_for(interaction)
        phase = Message(PHASE_NAMES[changed.phase])
        await interaction.followup.send(
            _("“{theme}” is now {phase}.", theme=shown(changed.theme, 400), phase=phase), ephemeral=True
        )

    @app_commands.command(name="cancel", description="Cancel a challenge without results (Manage Server)")
    async def cancel(self, interaction: discord.Interaction, challenge: int | None = None) -> None:
        found = await self._find(interaction, challenge)
        changed = await self.bot.services.challenges.cancel(found)
        _ = self.bot.i18n_for(interaction)
        await interaction.response.send_message(
            _("“{theme}” was cancelled.", theme=shown(changed.theme, 400)), ephemeral=True
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
        book = await self.bot.services.guilds.style_book(interaction.guild_id or 0)
        return [app_commands.Choice(name=s.name, value=s.name) for s in book.search(current)]


async def setup(bot: ImageBot) -> None:
    await bot.add_cog(Challenges(bot))
    await bot.add_cog(ChallengeAdmin(bot))
