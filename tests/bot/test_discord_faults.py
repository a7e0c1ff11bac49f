"""Faults end to end: deleted progress message, expired token, deleted channel, worker death, bot restart,
cancel and delete buttons. The jobs use a slow style (many steps) so there is time to act mid-job."""

from __future__ import annotations

import asyncio
import io
import sqlite3
from collections.abc import Callable

import pytest
from PIL import Image

from bot.client import ImageBot
from bot.core.plans import ImagineOptions, JobPlan, Requester
from bot.core.settings import Settings
from bot.core.styles import StylePreset
from inference.engine import DiffusersEngine
from inference.server import SCHEDULER, start_worker
from inference.vocabulary import JobId
from storage.db import Database
from storage.jobs import JobRecord, JobsRepo
from tests.bot.conftest import free_port
from tests.bot.harness import World, build_world, button, ephemeral_reply, is_result, running_bot
from tests.fakediscord import FakeDiscord, FakeUser, Message

SLOW = {"prompt": "a slow lighthouse", "style": "slow"}


@pytest.fixture
def slow_settings(settings: Settings) -> Settings:
    styles = [*settings.styles, StylePreset(name="slow", description="many steps", steps=120)]
    limits = settings.limits.model_copy(update={"worker_grace_s": 1.0, "progress_interval_s": 0.3})
    return settings.model_copy(update={"styles": styles, "limits": limits})


def states(settings: Settings) -> list[tuple[str, str]]:
    with sqlite3.connect(settings.database.path) as conn:
        return conn.execute(
            "SELECT j.status, l.state FROM jobs j JOIN ledger l USING (job_id) ORDER BY j.created_at"
        ).fetchall()


def is_progress(message: Message) -> bool:
    return "Drawing" in message.content or "Queued" in message.content


def mentions(user: FakeUser) -> Callable[[Message], bool]:
    return lambda m: f"<@{user.id}>" in m.content and bool(m.attachments)


async def test_deleted_progress_message_and_expired_token(
    fake_discord: FakeDiscord, slow_settings: Settings, worker: str
) -> None:
    world = build_world(fake_discord)
    async with running_bot(fake_discord, slow_settings, worker):
        first = await fake_discord.send_slash("imagine", SLOW, user=world.alice, channel=world.channel)
        progress = await first.wait_original(is_progress, timeout=30)
        assert any(c.startswith("brushfire:cancel:") for c in progress.custom_ids())
        await fake_discord.delete_message(progress)
        edits_at_delete = len(progress.edits)
        result = await fake_discord.wait_message(mentions(world.alice), timeout=60)
        assert result.channel_id == world.channel.id
        assert len(progress.edits) == edits_at_delete  # the updater stopped instead of editing a ghost

        second = await fake_discord.send_slash("imagine", SLOW, user=world.bob, channel=world.channel)
        # The progress message shows the step and the worker's preview of the picture forming.
        shown = await second.wait_original(
            lambda m: "Drawing: step" in m.content and m.attachments, timeout=30
        )
        assert shown.attachments[0].filename == "preview.jpg"
        fake_discord.expire_tokens()
        late = await fake_discord.wait_message(mentions(world.bob), timeout=60)
        assert is_result(late) and late.channel_id == world.channel.id
    assert states(slow_settings) == [("succeeded", "committed"), ("succeeded", "committed")]


async def test_deleted_channel_sends_the_result_by_dm(
    fake_discord: FakeDiscord, slow_settings: Settings, worker: str
) -> None:
    world = build_world(fake_discord)
    async with running_bot(fake_discord, slow_settings, worker):
        inter = await fake_discord.send_slash("imagine", SLOW, user=world.alice, channel=world.channel)
        await inter.wait_original(is_progress, timeout=30)
        fake_discord.expire_tokens()
        await fake_discord.delete_channel(world.channel)
        await fake_discord.world.wait_until(lambda: fake_discord.dms(world.alice), 60, "a DM to alice")
        dm = fake_discord.dms(world.alice)[0]
        assert dm.attachments and is_result(dm)


async def test_cancel_and_delete_buttons_check_who_presses(
    fake_discord: FakeDiscord, slow_settings: Settings, worker: str
) -> None:
    world = build_world(fake_discord)
    async with running_bot(fake_discord, slow_settings, worker):
        inter = await fake_discord.send_slash("imagine", SLOW, user=world.alice, channel=world.channel)
        progress = await inter.wait_original(is_progress, timeout=30)
        cancel = button(progress, "cancel")
        refused = await fake_discord.click(progress, cancel, user=world.bob)
        assert "Only the person who started this job" in await ephemeral_reply(refused)
        ok = await fake_discord.click(progress, cancel, user=world.alice)
        assert "Cancelling" in await ephemeral_reply(ok)
        await inter.wait_original(lambda m: "Cancelled" in m.content, timeout=30)

        done = await fake_discord.send_slash(
            "imagine", {"prompt": "quick"}, user=world.alice, channel=world.channel
        )
        result = await done.wait_original(is_result, timeout=60)
        delete = button(result, "delete")
        refused = await fake_discord.click(result, delete, user=world.bob)
        assert "Only the person who made this image" in await ephemeral_reply(refused)
        await fake_discord.click(result, delete, user=world.admin)  # admins may delete anything
        await fake_discord.world.wait_until(lambda: result.deleted, 15, "the result deleted")
        with sqlite3.connect(slow_settings.database.path) as conn:
            assert conn.execute("SELECT deleted FROM generations").fetchall() == [(1,)]
    assert states(slow_settings) == [("cancelled", "refunded"), ("succeeded", "committed")]


async def test_worker_killed_mid_job_refunds_with_a_message(
    fake_discord: FakeDiscord, slow_settings: Settings
) -> None:
    world = build_world(fake_discord)
    engine = await asyncio.to_thread(DiffusersEngine.load, slow_settings.engine)
    running = await start_worker(slow_settings.worker.model_copy(update={"port": 0}), engine)
    async with running_bot(fake_discord, slow_settings, running.url):
        inter = await fake_discord.send_slash("imagine", SLOW, user=world.alice, channel=world.channel)
        await inter.wait_original(lambda m: "Drawing" in m.content, timeout=30)
        await running.runner.cleanup()  # the worker's server goes away mid-job and does not come back
        final = await inter.wait_original(lambda m: "refunded" in m.content, timeout=60)
        assert "worker" in final.content
        after = await fake_discord.send_slash(
            "imagine", {"prompt": "x"}, user=world.alice, channel=world.channel
        )
        assert "not reachable" in await ephemeral_reply(after, timeout=30)
    await running.app[SCHEDULER].shutdown()  # the engine thread of the "dead" worker
    assert [s for _, s in states(slow_settings)] == ["refunded", "refunded"]


async def test_bot_restart_mid_job_finishes_it_and_old_buttons_work(
    fake_discord: FakeDiscord, slow_settings: Settings, worker: str
) -> None:
    world = build_world(fake_discord)
    async with running_bot(fake_discord, slow_settings, worker):
        quick = await fake_discord.send_slash(
            "imagine", {"prompt": "before"}, user=world.bob, channel=world.channel
        )
        old_result = await quick.wait_original(is_result, timeout=60)
        inter = await fake_discord.send_slash("imagine", SLOW, user=world.alice, channel=world.channel)
        await inter.wait_original(lambda m: "Drawing" in m.content, timeout=30)
    # The bot is gone mid-job; a new one starts on the same database and worker, and puts the result
    # into the job's own message (its token still lives).
    async with running_bot(fake_discord, slow_settings, worker):
        await inter.wait_original(is_result, timeout=60)
        reroll = await fake_discord.click(old_result, button(old_result, "reroll"), user=world.bob)
        assert is_result(await reroll.wait_original(is_result, timeout=60))
    assert states(slow_settings) == [("succeeded", "committed")] * 3


async def test_restart_resubmits_lost_and_unsubmitted_jobs_and_refunds_unfinishable_ones(
    fake_discord: FakeDiscord, slow_settings: Settings
) -> None:
    world = build_world(fake_discord)
    port = free_port()
    worker_settings = slow_settings.worker.model_copy(update={"port": port})
    url = f"http://127.0.0.1:{port}"
    engine = await asyncio.to_thread(DiffusersEngine.load, slow_settings.engine)
    first_worker = await start_worker(worker_settings, engine)
    async with running_bot(fake_discord, slow_settings, url) as bot:
        inter = await fake_discord.send_slash("imagine", SLOW, user=world.alice, channel=world.channel)
        await inter.wait_original(lambda m: "Drawing" in m.content, timeout=30)
        # Two jobs reserved and stored but not (known to be) submitted: a crash in between.
        planner, server = bot.services.jobs.planner, await bot.services.guilds.settings(world.guild.id)
        generate = planner.plan_imagine(requester(world), ImagineOptions(prompt="orphan"), server)
        upload = planner.plan_edit(
            requester(world), image=png(), instruction="snow", strength=None, guild=server
        )
        fake_discord.note_author(world.guild, world.bob)  # bob's jobs below were stored, never sent
        orphan = await stored_but_unsubmitted(bot, world, generate, JobId("e" * 32))
        lost_upload = await stored_but_unsubmitted(bot, world, upload, JobId("f" * 32))
    # Both go down; a fresh worker (empty queue) comes up on the same address, then the bot.
    await first_worker.stop()
    second_worker = await start_worker(worker_settings, engine)
    try:
        async with running_bot(fake_discord, slow_settings, url):
            await inter.wait_original(is_result, timeout=90)  # resubmitted, and put into its own message
            await fake_discord.wait_message(mentions(world.bob), timeout=60)  # the orphan, finished
            refunded = await fake_discord.wait_message(lambda m: "was not kept" in m.content, timeout=30)
            assert f"<@{world.bob.id}>" in refunded.content
    finally:
        await second_worker.stop()
    with sqlite3.connect(slow_settings.database.path) as conn:
        attempts = dict(conn.execute("SELECT job_id, attempts FROM jobs").fetchall())
    assert attempts[orphan] == 1 and attempts[lost_upload] == 0 and max(attempts.values()) == 1
    assert sorted(states(slow_settings)) == [
        ("refunded", "refunded"),
        ("succeeded", "committed"),
        ("succeeded", "committed"),
    ]


def png() -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", (64, 64), (9, 9, 9)).save(buf, format="PNG")
    return buf.getvalue()


def requester(world: World) -> Requester:
    return Requester(user_id=world.bob.id, guild_id=world.guild.id, channel_id=world.channel.id, name="bob")


async def stored_but_unsubmitted(bot: ImageBot, world: World, plan: JobPlan, job_id: JobId) -> JobId:
    """Reserve and store a job the way JobService.start does, but stop before submitting it."""
    who = requester(world)
    await bot.services.quotas.reserve(job_id, who.guild_id, who.user_id, (), 1, "fast")
    # Stored through a second connection to the same file, as the crashed bot's own write would be.
    async with Database.open(bot.settings.database) as db:
        await JobsRepo(db).create(
            JobRecord(
                job_id=job_id,
                guild_id=who.guild_id,
                channel_id=who.channel_id,
                user_id=who.user_id,
                kind=plan.kind,
                parameters=plan.parameters(),
                cost=1,
                idempotency_key=job_id,
            )
        )
    return job_id


async def test_per_user_queue_cap_is_a_clear_refusal(
    fake_discord: FakeDiscord, slow_settings: Settings
) -> None:
    world = build_world(fake_discord)
    engine = await asyncio.to_thread(DiffusersEngine.load, slow_settings.engine)
    capped = slow_settings.worker.model_copy(update={"port": 0, "max_queue_per_user": 1, "max_batch": 1})
    running = await start_worker(capped, engine)
    try:
        async with running_bot(fake_discord, slow_settings, running.url):
            first = await fake_discord.send_slash("imagine", SLOW, user=world.alice, channel=world.channel)
            await first.wait_original(lambda m: "Drawing" in m.content, timeout=30)
            second = await fake_discord.send_slash("imagine", SLOW, user=world.alice, channel=world.channel)
            await second.wait_original(lambda m: "Queued" in m.content, timeout=30)
            third = await fake_discord.send_slash("imagine", SLOW, user=world.alice, channel=world.channel)
            assert "as many jobs waiting as allowed" in await ephemeral_reply(third)
            for inter in (first, second):
                await inter.wait_original(is_result, timeout=60)
    finally:
        await running.stop()
    assert sorted(s for _, s in states(slow_settings)) == ["committed", "committed", "refunded"]
