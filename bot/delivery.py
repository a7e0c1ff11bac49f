"""Running a job for a Discord interaction: the progress message, the result post, and never losing it.

A result goes, in order of preference: into the interaction's own message (while its 15-minute token
lives), to the channel mentioning the user, and finally to the user's DMs. The images stay in the
database whatever happens, so the buttons under any result keep working.
"""

from __future__ import annotations

import io
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import discord
from PIL import Image

from bot.core.i18n import N_, Message
from bot.core.jobs import JobService
from bot.core.outcomes import JobOutcome
from bot.core.plans import Action, JobPlan
from bot.core.progress import DisplayGone, ProgressState, ProgressUpdater
from bot.core.records import EXTENSIONS, GenerationRecord, GuildSettings, JobRecord, image_format
from bot.core.services import Services
from bot.errors import answer_error
from bot.i18n import Translate
from bot.interactions import PlanFactory, delivery_for, requester_for
from bot.translator import catalogues_of, translate_for
from bot.usertext import shown
from bot.views import progress_view, result_view
from inference.vocabulary import JobStatus

log = logging.getLogger(__name__)

UNKNOWN_MESSAGE = 10008
INVALID_WEBHOOK_TOKEN = 50027
UNKNOWN_WEBHOOK = 10015
GONE_CODES = frozenset({UNKNOWN_MESSAGE, INVALID_WEBHOOK_TOKEN, UNKNOWN_WEBHOOK})
# How a result's footer names what made it.
ACTION_NAMES = {
    Action.IMAGINE: N_("imagine"),
    Action.EDIT: N_("edit"),
    Action.REROLL: N_("re-roll"),
    Action.VARY: N_("variation"),
    Action.UPSCALE: N_("upscale"),
    Action.UPSCALE_CREATIVE: N_("creative upscale"),
}
# Edits of the interaction's own message ping nobody: the author is looking at it already.
NO_PINGS = discord.AllowedMentions.none()


def author_only(job: JobRecord) -> discord.AllowedMentions:
    """A message posted for a job may ping its author, and nobody a prompt names."""
    return discord.AllowedMentions(everyone=False, roles=False, users=[discord.Object(job.user_id)])


class MessageProgress:
    """The interaction's original message as a progress display; a deleted message ends it cleanly."""

    def __init__(
        self,
        interaction: discord.Interaction,
        jobs: JobService,
        job: JobRecord,
        title: str,
        clock: Callable[[], float],
        _: Translate,
    ) -> None:
        self._ = _
        self._interaction = interaction
        self._jobs = jobs
        self._job = job
        self._title = title
        self._clock = clock
        self._preview_seq = 0
        self._recorded = False

    async def show(self, state: ProgressState) -> None:
        if not self._job.token_valid(self._clock()):
            raise DisplayGone()
        attachments: list[discord.File] = []
        if state.preview_seq > self._preview_seq:
            data = await self._jobs.preview(self._job)
            if data is not None:
                self._preview_seq = state.preview_seq
                attachments = [discord.File(io.BytesIO(data), filename="preview.jpg")]
        content = f"**{self._title}** — {self._.message(state.describe())}"
        kwargs: dict[str, object] = {
            "content": content,
            "view": progress_view(self._job.job_id, self._),
            "allowed_mentions": NO_PINGS,
        }
        if attachments:
            kwargs["attachments"] = attachments
        try:
            message = await self._interaction.edit_original_response(**kwargs)  # type: ignore[arg-type]
        except discord.HTTPException as exc:
            if exc.code in GONE_CODES or exc.status in (401, 404):
                raise DisplayGone() from exc
            raise
        if not self._recorded:  # so a restarted bot can still put the result into this message
            self._recorded = True
            await self._jobs.record_messages(self._job.job_id, progress_message_id=message.id)


@dataclass(frozen=True, slots=True)
class ResultPost:
    """The pieces of a result message."""

    content: str
    embed: discord.Embed
    files: list[discord.File]
    view: discord.ui.View


class JobRunner:
    """Drives one job from an interaction to a posted result (or a clear refusal), for cogs and buttons."""

    def __init__(
        self,
        bot: discord.Client,
        services: Services,
        *,
        track_job: Callable[[], None] = lambda: None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.bot = bot
        self._track_job = track_job  # so closing the bot stops the followers before the database
        self.services = services
        self.jobs = services.jobs
        self._clock = clock

    async def run(self, interaction: discord.Interaction, plan_for: PlanFactory) -> None:
        """Defer at once, then plan, charge, submit, show progress and post the result.

        `plan_for(requester, guild)` validates the user's input; its BrushfireError reaches the user
        ephemerally with nothing charged.
        """
        await interaction.response.defer(thinking=True)
        waited = self._clock() - interaction.created_at.timestamp()
        self.services.metrics.defer.observe(max(0.0, waited))
        self._track_job()
        requester = requester_for(interaction)
        _ = translate_for(interaction)
        try:
            guild = await self.services.guilds.settings(requester.guild_id)
            plan = await plan_for(requester, guild)
            ticket = await self.jobs.start(requester, plan, delivery_for(interaction, _))
        except Exception as exc:
            await answer_error(interaction, exc)
            return
        title = shown(plan.prompt, 400)
        if ticket.fell_back_to_relax:
            title += " " + _("(relax lane: out of fast credits)")
        display = MessageProgress(interaction, self.jobs, ticket.job, title, self._clock, _)
        updater = ProgressUpdater(display, self.services.settings.limits.progress_interval_s)
        updater.update(ProgressState(status=JobStatus.QUEUED))
        updater.start()
        try:
            outcome = await self.jobs.follow(ticket.job, updater.update)
        finally:
            await updater.close()
        await self.deliver(outcome, interaction, guild, progress_gone=updater.gone)

    async def deliver(
        self,
        outcome: JobOutcome,
        interaction: discord.Interaction | None = None,
        guild: GuildSettings | None = None,
        progress_gone: bool = False,
    ) -> None:
        """Post the outcome, then record that it was delivered: a restart posts only what a crash kept
        from its user, once."""
        self.jobs.crash.reached("delivery")
        with self.services.metrics.delivery.time():
            await self._post_outcome(outcome, interaction, guild, progress_gone)
        await self.jobs.mark_delivered(outcome.job.job_id)

    async def _post_outcome(
        self,
        outcome: JobOutcome,
        interaction: discord.Interaction | None,
        guild: GuildSettings | None,
        progress_gone: bool,
    ) -> None:
        """Post the outcome where it can still be seen: the original message, the channel, or DMs."""
        job = outcome.job
        guild = guild or await self.services.guilds.settings(job.guild_id or 0)
        _ = self.translate(job)
        post = self.compose(outcome, guild, _) if outcome.ok else None
        why = _.message(outcome.message) if outcome.message else _("Your job did not finish.")
        text = None if post else f"<@{job.user_id}> {why}"
        reachable = interaction is not None or job.progress_message_id is not None
        if reachable and job.token_valid(self._clock()) and not progress_gone:
            try:
                if post:
                    msg = await self._edit_original(
                        job,
                        interaction,
                        content=post.content,
                        embed=post.embed,
                        attachments=post.files,
                        view=post.view,
                        allowed_mentions=NO_PINGS,
                    )
                else:
                    msg = await self._edit_original(
                        job, interaction, content=text, attachments=[], view=None, allowed_mentions=NO_PINGS
                    )
                await self.jobs.record_messages(job.job_id, result_message_id=msg.id)
                return
            except discord.HTTPException as exc:
                log.info("job %s: original message unusable (%s); posting in the channel", job.job_id, exc)
                if post:
                    post = rewind(post)  # the failed upload consumed the files
        await self._post_elsewhere(job, post, text)

    async def _edit_original(
        self, job: JobRecord, interaction: discord.Interaction | None, **fields: Any
    ) -> discord.Message:
        """Edit the job's own message: through the live interaction, or (after a restart) through the
        interaction's webhook, which still works while the token lives."""
        if interaction is not None:
            return await interaction.edit_original_response(**fields)
        assert job.application_id and job.interaction_token and job.progress_message_id
        hook = discord.Webhook.partial(job.application_id, job.interaction_token, client=self.bot)
        return await hook.edit_message(job.progress_message_id, **fields)

    async def _post_elsewhere(self, job: JobRecord, post: ResultPost | None, text: str | None) -> None:
        mention = f"<@{job.user_id}>"
        try:
            channel = self.bot.get_partial_messageable(job.channel_id, guild_id=job.guild_id)
            if post:
                msg = await channel.send(
                    content=f"{mention} {post.content}",
                    embed=post.embed,
                    files=post.files,
                    view=post.view,
                    allowed_mentions=author_only(job),
                )
            else:
                msg = await channel.send(content=text, allowed_mentions=author_only(job))
            await self.jobs.record_messages(job.job_id, result_message_id=msg.id)
            return
        except discord.HTTPException as exc:
            log.info("job %s: channel %s unusable (%s); sending a DM", job.job_id, job.channel_id, exc)
        await self._dm(job, post, text)

    async def _dm(self, job: JobRecord, post: ResultPost | None, text: str | None) -> None:
        try:
            user = await self.bot.fetch_user(job.user_id)
            if post:
                post = rewind(post)
                msg = await user.send(
                    content=post.content,
                    embed=post.embed,
                    files=post.files,
                    view=post.view,
                    allowed_mentions=NO_PINGS,
                )
            else:
                msg = await user.send(content=text, allowed_mentions=NO_PINGS)
            # Recorded so the result's own Delete button can find this message.
            await self.jobs.record_messages(job.job_id, result_message_id=msg.id)
        except discord.HTTPException:
            log.exception(
                "job %s: could not deliver to user %s anywhere; it stays in the database",
                job.job_id,
                job.user_id,
            )

    def translate(self, job: JobRecord) -> Translate:
        """The language of the member who asked (kept with the job), else their server's, else English."""
        catalogues = catalogues_of(self.bot)
        server = self.bot.get_guild(job.guild_id) if job.guild_id else None
        server_locale = server.preferred_locale.value if server else None
        return Translate(catalogues, catalogues.choose(job.language, server_locale))

    def compose(self, outcome: JobOutcome, guild: GuildSettings, _: Translate) -> ResultPost:
        gens = outcome.generations
        plan = JobPlan.from_parameters(outcome.job.parameters)
        costs = self.services.jobs.upscale_costs(plan, gens[0].width, gens[0].height) if gens else None
        return compose_result(outcome, guild, self.services.settings.limits.upload_bytes, _, costs)


def compose_result(
    outcome: JobOutcome,
    guild: GuildSettings,
    upload_bytes: int,
    _: Translate,
    upscale_costs: dict[Action, int] | None = None,
) -> ResultPost:
    """The result message: images (spoilered, or withheld when the server refuses flagged ones), an
    embed with the parameters (and what an upscale of one image costs, before anyone presses), and
    buttons for the images shown."""
    job = outcome.job
    plan = JobPlan.from_parameters(job.parameters)
    visible = [
        g for g in outcome.generations if not g.deleted and not (g.nsfw and guild.nsfw_mode == "refuse")
    ]
    withheld = len(outcome.generations) - len(visible)
    content = f"**{shown(plan.prompt, 1200)}**"
    if withheld:
        content += "\n" + _.ngettext(
            "{count} image withheld by this server's content filter.",
            "{count} images withheld by this server's content filter.",
            withheld,
            count=withheld,
        )
    return ResultPost(
        content=content,
        embed=result_embed(outcome, plan, _, upscale_costs),
        files=[_file(job.job_id, g, upload_bytes) for g in visible],
        view=result_view(
            job.job_id, [g.index for g in visible], _, from_upload=plan.from_upload, single=plan.count == 1
        ),
    )


def _file(job_id: str, gen: GenerationRecord, upload_bytes: int) -> discord.File:
    data, ext = fit_upload(gen.image, upload_bytes)
    name = f"brushfire-{job_id[:8]}-{gen.index + 1}.{ext}"
    return discord.File(io.BytesIO(data), filename=name, spoiler=gen.nsfw)


def rewind(post: ResultPost) -> ResultPost:
    """Make a post's files readable again after an upload attempt read them."""
    for f in post.files:
        f.reset()
    return post


def result_embed(
    outcome: JobOutcome, plan: JobPlan, _: Translate, upscale_costs: dict[Action, int] | None = None
) -> discord.Embed:
    """The parameters of a result (the prompt and style names are the member's own words, never translated)."""
    job, info = outcome.job, outcome.info
    embed = discord.Embed(title=shown(plan.prompt, 256), colour=discord.Colour.orange())
    if plan.negative:
        embed.description = _("Negative: {negative}", negative=shown(plan.negative, 1200))
    gens = outcome.generations
    seeds = ", ".join(str(g.seed) for g in gens[:8]) or str(plan.seed)
    embed.add_field(name=_("Style"), value=shown(plan.style, 100) if plan.style else _("none"))
    embed.add_field(name=_("Seed"), value=seeds)
    if gens:
        embed.add_field(name=_("Size"), value=f"{gens[0].width}x{gens[0].height}")
    if info is not None:
        embed.add_field(name=_("Model"), value=_clip(info.model, 100))
        embed.add_field(name=_("Steps"), value=str(info.steps))
    lane = _("relax lane") if job.lane == "relax" else _("fast lane")
    cost = _.ngettext(
        "{count} credit, {lane}", "{count} credits, {lane}", job.cost, count=job.cost, lane=lane
    )
    embed.add_field(name=_("Cost"), value=cost)
    if upscale_costs:
        subtle, creative = upscale_costs[Action.UPSCALE], upscale_costs[Action.UPSCALE_CREATIVE]
        embed.add_field(
            name=_("Upscale"),
            value=_(
                "subtle {subtle}, creative {creative}",
                subtle=_credits(_, subtle),
                creative=_credits(_, creative),
            ),
        )
    if outcome.elapsed_s:
        embed.add_field(name=_("Time"), value=f"{outcome.elapsed_s:.1f} s")
    action = Message(ACTION_NAMES.get(plan.action, plan.action.value))
    embed.set_footer(text=_("job {job_id} · {action}", job_id=job.job_id, action=action))
    return embed


def fit_upload(image: bytes, limit: int) -> tuple[bytes, str]:
    """The image as stored (in the format the server chose, which the worker encoded) when it fits the
    upload limit, else high-quality WebP, else JPEG; with its file extension."""
    stored = image_format(image)
    if stored is not None and len(image) <= limit:
        return image, EXTENSIONS[stored]
    with Image.open(io.BytesIO(image)) as img:
        rgb = img.convert("RGB")
    for fmt, ext, quality in (("WEBP", "webp", 92), ("JPEG", "jpg", 88), ("JPEG", "jpg", 70)):
        out = io.BytesIO()
        rgb.save(out, format=fmt, quality=quality)
        if out.tell() <= limit:
            return out.getvalue(), ext
    raise ValueError("the image does not fit the upload limit even as JPEG")


def _credits(_: Translate, count: int) -> str:
    return _.ngettext("{count} credit", "{count} credits", count, count=count)


def _clip(text: str, limit: int) -> str:
    return text if len(text) <= limit else text[: limit - 1] + "…"
