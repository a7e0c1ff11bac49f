"""/quota for everyone, and /quota-admin (Manage Server): limits, tiers, overrides, grants, blocks, report."""

from __future__ import annotations

import asyncio
import io
import logging
from collections.abc import Coroutine
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any, TypeVar

import discord
from discord import app_commands
from discord.ext import commands
from PIL import Image, ImageDraw

from bot.checks import admin_only
from bot.core.errors import InvalidInput, QuotaRefused
from bot.core.i18n import N_
from bot.core.quotas.records import QuotaError, QuotaStatus, UsageReport
from bot.i18n import Translate
from bot.interactions import requester_for

if TYPE_CHECKING:
    from bot.client import ImageBot

log = logging.getLogger(__name__)

HOUR_S = 3600
T = TypeVar("T")
CHART_SIZE = (720, 320)


def describe_window(seconds: int, _: Translate) -> str:
    if seconds % (24 * HOUR_S) == 0:
        days = seconds // (24 * HOUR_S)
        return _.ngettext("{count} day", "{count} days", days, count=days)
    if seconds % HOUR_S == 0:
        hours = seconds // HOUR_S
        return _.ngettext("{count} hour", "{count} hours", hours, count=hours)
    minutes = seconds // 60
    return _.ngettext("{count} minute", "{count} minutes", minutes, count=minutes)


def quota_embed(status: QuotaStatus, who: str, _: Translate) -> discord.Embed:
    """The caller's share: credits left, window, next refill, tier and relax lane."""
    embed = discord.Embed(title=_("Credits for {name}", name=who), colour=discord.Colour.orange())
    if status.blocked:
        embed.description = _("You are blocked from making images on this server.")
    elif status.unlimited:
        embed.description = _("You have unlimited credits on this server.")
    else:
        embed.description = _.ngettext(
            "**{left}** of **{limit}** credit left",
            "**{left}** of **{limit}** credits left",
            status.limit,
            left=status.remaining,
            limit=status.limit,
        )
        if status.bonus_remaining:
            embed.description += " " + _("(+{bonus} bonus)", bonus=status.bonus_remaining)
    embed.add_field(name=_("Window"), value=_("rolling {window}", window=describe_window(status.window_s, _)))
    second = status.next_refill_second
    refill = f"<t:{second}:R>" if second is not None else _("nothing is being used")
    embed.add_field(name=_("Next credit returns"), value=refill)
    sources = {"override": _("personal limit"), "unlimited": _("unlimited")}
    tier = status.tier_name or sources.get(status.source, _("server default"))
    embed.add_field(name=_("Tier"), value=tier)
    if status.relax_enabled:
        used = (
            _("open ({used} of {limit} used)", used=status.relax_used, limit=status.relax_limit)
            if status.relax_limit
            else _("open ({used} used)", used=status.relax_used)
        )
        embed.add_field(name=_("Relax lane"), value=used)
    else:
        embed.add_field(name=_("Relax lane"), value=_("closed on this server"))
    return embed


def report_chart(report: UsageReport, days: int, now: float, title: str) -> bytes:
    """A bar chart of credits used per day (oldest left), drawn with PIL, as PNG."""
    per_day = {d.day: d.credits for d in report.per_day}
    today = datetime.fromtimestamp(now, UTC).date()
    labels = [(today - timedelta(days=i)).isoformat() for i in range(days - 1, -1, -1)]
    values = [per_day.get(label, 0) for label in labels]
    width, height = CHART_SIZE
    img = Image.new("RGB", CHART_SIZE, (32, 34, 37))
    draw = ImageDraw.Draw(img)
    left, bottom, top = 40, height - 30, 30
    peak = max(values) or 1
    bar_w = (width - left - 10) / len(values)
    heading = title.format(peak=peak)  # `title` is in the admin's language, with the peak left to fill
    try:
        draw.text((left, 8), heading, fill=(230, 230, 230))
    except UnicodeEncodeError:  # PIL's bitmap fallback font draws Latin-1 only
        draw.text((left, 8), heading.encode("latin-1", "replace").decode("latin-1"), fill=(230, 230, 230))
    for i, value in enumerate(values):
        x0 = left + i * bar_w + 1
        y0 = bottom - (bottom - top) * value / peak
        draw.rectangle((x0, y0, x0 + bar_w - 2, bottom), fill=(242, 140, 40))
    draw.line((left, bottom, width - 10, bottom), fill=(200, 200, 200))
    draw.text((left, bottom + 6), labels[0][5:], fill=(200, 200, 200))
    draw.text((width - 60, bottom + 6), labels[-1][5:], fill=(200, 200, 200))
    out = io.BytesIO()
    img.save(out, format="PNG")
    return out.getvalue()


def report_table(report: UsageReport, _: Translate) -> str:
    """The top users as a short ranked list (mentions render as names, unlike a code block)."""
    users = report.top_users or report.per_user[:10]
    if not users:
        return _("No images were made in this period.")
    lines = [
        f"{rank}. <@{u.user_id}>: "
        + _.ngettext("{count} credit", "{count} credits", u.credits, count=u.credits)
        + ", "
        + _.ngettext("{count} job", "{count} jobs", u.jobs, count=u.jobs)
        for rank, u in enumerate(users, 1)
    ]
    return "\n".join(lines)


class Quota(commands.Cog):
    def __init__(self, bot: ImageBot) -> None:
        self.bot = bot

    @app_commands.command(name="quota", description="Your credits: what is left and when more return")
    @app_commands.guild_only()
    async def quota(self, interaction: discord.Interaction) -> None:
        status = await self.bot.services.jobs.quota_status(requester_for(interaction))
        _ = self.bot.i18n_for(interaction)
        await interaction.response.send_message(
            embed=quota_embed(status, interaction.user.display_name, _), ephemeral=True
        )

    admin = admin_only(N_("Only members with Manage Server can change credits."))(
        app_commands.Group(name="quota-admin", description="Manage credits on this server")
    )

    async def _run(self, interaction: discord.Interaction, text: str) -> None:
        await interaction.response.send_message(text, ephemeral=True)

    @admin.command(name="set-default", description="Credits per window for everyone")
    @app_commands.describe(limit="Credits per window", window_hours="Window length in hours")
    async def set_default(
        self, interaction: discord.Interaction, limit: int, window_hours: int | None = None
    ) -> None:
        window = window_hours * HOUR_S if window_hours is not None else None
        overview = await _quota_call(
            self.bot.services.quotas.admin.set_guild_default(
                _guild(interaction), interaction.user.id, limit=limit, window_s=window
            )
        )
        _ = self.bot.i18n_for(interaction)
        per = describe_window(overview.window_s, _)
        await self._run(
            interaction,
            _.ngettext(
                "Everyone now gets {limit} credit per {window}.",
                "Everyone now gets {limit} credits per {window}.",
                overview.limit,
                limit=overview.limit,
                window=per,
            ),
        )

    @admin.command(name="set-tier", description="Credits per window for a role (0 removes the tier)")
    async def set_tier(self, interaction: discord.Interaction, role: discord.Role, limit: int) -> None:
        _ = self.bot.i18n_for(interaction)
        if limit == 0:
            await _quota_call(
                self.bot.services.quotas.admin.clear_role_tier(
                    _guild(interaction), role.id, interaction.user.id
                )
            )
            await self._run(interaction, _("{role} no longer has its own tier.", role=role.mention))
            return
        await _quota_call(
            self.bot.services.quotas.admin.set_role_tier(
                _guild(interaction), role.id, role.name, limit, interaction.user.id
            )
        )
        await self._run(
            interaction,
            _.ngettext(
                "{role} now gets {limit} credit per window.",
                "{role} now gets {limit} credits per window.",
                limit,
                role=role.mention,
                limit=limit,
            ),
        )

    @admin.command(name="set-user", description="A personal limit for a member (0 clears it)")
    async def set_user(
        self, interaction: discord.Interaction, user: discord.Member, limit: int, unlimited: bool = False
    ) -> None:
        guild = _guild(interaction)
        _ = self.bot.i18n_for(interaction)
        if limit == 0 and not unlimited:
            await _quota_call(
                self.bot.services.quotas.admin.clear_user_override(guild, user.id, interaction.user.id)
            )
            await self._run(interaction, _("{user} is back on the server's limits.", user=user.mention))
            return
        await _quota_call(
            self.bot.services.quotas.admin.set_user_override(
                guild, user.id, interaction.user.id, limit=limit or None, unlimited=unlimited
            )
        )
        text = (
            _("{user} now has unlimited credits.", user=user.mention)
            if unlimited
            else _.ngettext(
                "{user} now has {limit} credit per window.",
                "{user} now has {limit} credits per window.",
                limit,
                user=user.mention,
                limit=limit,
            )
        )
        await self._run(interaction, text)

    @admin.command(name="grant", description="Give a member bonus credits")
    @app_commands.describe(expires_hours="Hours until unspent bonus credits expire (empty: never)")
    async def grant(
        self,
        interaction: discord.Interaction,
        user: discord.Member,
        credits: int,
        expires_hours: int | None = None,
        reason: str | None = None,
    ) -> None:
        expires = self.bot.services.clock() + expires_hours * HOUR_S if expires_hours else None
        await _quota_call(
            self.bot.services.quotas.admin.grant_bonus(
                _guild(interaction), user.id, credits, interaction.user.id, expires, reason
            )
        )
        _ = self.bot.i18n_for(interaction)
        await self._run(
            interaction,
            _.ngettext(
                "Gave {user} {credits} bonus credit.",
                "Gave {user} {credits} bonus credits.",
                credits,
                user=user.mention,
                credits=credits,
            ),
        )

    @admin.command(name="reset", description="Forgive a member's usage in the current window")
    async def reset(self, interaction: discord.Interaction, user: discord.Member) -> None:
        done = await _quota_call(
            self.bot.services.quotas.admin.reset_user(_guild(interaction), user.id, interaction.user.id)
        )
        _ = self.bot.i18n_for(interaction)
        credits = _.ngettext("{count} credit", "{count} credits", done.credits, count=done.credits)
        if done.relax_credits:
            relax = _.ngettext(
                "{count} relax credit", "{count} relax credits", done.relax_credits, count=done.relax_credits
            )
            credits = _("{credits} and {relax}", credits=credits, relax=relax)
        await self._run(
            interaction,
            _.ngettext(
                "Reset {user}: {credits} forgiven over {count} charge; bonus credits already spent stay spent.",
                "Reset {user}: {credits} forgiven over {count} charges; bonus credits already spent stay spent.",
                done.jobs,
                user=user.mention,
                credits=credits,
                count=done.jobs,
            ),
        )

    @admin.command(name="block", description="Stop a member from making images")
    async def block(
        self, interaction: discord.Interaction, user: discord.Member, reason: str | None = None
    ) -> None:
        await _quota_call(
            self.bot.services.quotas.admin.block(_guild(interaction), user.id, interaction.user.id, reason)
        )
        _ = self.bot.i18n_for(interaction)
        await self._run(interaction, _("{user} is blocked.", user=user.mention))

    @admin.command(name="unblock", description="Let a blocked member make images again")
    async def unblock(self, interaction: discord.Interaction, user: discord.Member) -> None:
        await _quota_call(
            self.bot.services.quotas.admin.unblock(_guild(interaction), user.id, interaction.user.id)
        )
        _ = self.bot.i18n_for(interaction)
        await self._run(interaction, _("{user} is unblocked.", user=user.mention))

    @admin.command(name="report", description="Usage over the last days: top users and a chart")
    async def report(
        self, interaction: discord.Interaction, days: app_commands.Range[int, 1, 90] = 30
    ) -> None:
        await interaction.response.defer(ephemeral=True, thinking=True)
        report = await _quota_call(
            self.bot.services.quotas.reports.usage_report(_guild(interaction), days=days, top=10)
        )
        _ = self.bot.i18n_for(interaction)
        title = _.ngettext(
            "credits per day, last {days} day (peak {peak})",
            "credits per day, last {days} days (peak {peak})",
            days,
            days=days,
            peak="{peak}",
        )
        chart = await asyncio.to_thread(report_chart, report, days, self.bot.services.clock(), title)
        total = sum(d.credits for d in report.per_day)
        members = len(report.per_user)
        summary = _(
            "{credits} used by {members} in {days}",
            credits=_.ngettext("**{count}** credit", "**{count}** credits", total, count=total),
            members=_.ngettext("**{count}** member", "**{count}** members", members, count=members),
            days=_.ngettext("{count} day", "{count} days", days, count=days),
        )
        text = f"{summary}\n{report_table(report, _)}"
        await interaction.followup.send(
            text, file=discord.File(io.BytesIO(chart), filename="usage.png"), ephemeral=True
        )


def _guild(interaction: discord.Interaction) -> int:
    if interaction.guild_id is None:
        raise InvalidInput(N_("This command works only in a server."))
    return interaction.guild_id


async def _quota_call(work: Coroutine[Any, Any, T]) -> T:
    """Await a quota-service call, turning its errors (written for users) into ephemeral answers."""
    try:
        return await work
    except QuotaError as exc:
        raise QuotaRefused(exc.text) from None


async def setup(bot: ImageBot) -> None:
    await bot.add_cog(Quota(bot))
