"""Retention on Discord: an admin sets the policy, the scheduled job drops the images, and the buttons on
a dropped image answer that it expired (ephemerally, charging nothing)."""

from __future__ import annotations

import sqlite3

from bot.core.retention import RetentionService
from bot.core.settings import Settings
from tests.bot.harness import admin_do, build_world, button, ephemeral_reply, is_result, running_bot
from tests.fakediscord import FakeDiscord


async def test_buttons_on_an_expired_image_say_so(
    fake_discord: FakeDiscord, settings: Settings, worker: str
) -> None:
    world = build_world(fake_discord)
    async with running_bot(fake_discord, settings, worker) as bot:
        assert bot.scheduler.get_job(RetentionService.JOB_ID) is not None  # registered with the upkeep
        inter = await fake_discord.send_slash(
            "imagine", {"prompt": "a red fox"}, user=world.alice, channel=world.channel
        )
        result = await inter.wait_original(is_result, timeout=60)
        said = await admin_do(fake_discord, world, "settings retention", {"megabytes": 0})
        assert "at most: 0 MB" in said
        report = await bot.services.retention.run()
        assert report.dropped == 1 and report.vacuumed
        for action in ("vary", "upscale"):
            click = await fake_discord.click(result, button(result, action), user=world.alice)
            assert "expired under this server's image retention" in await ephemeral_reply(click)
    with sqlite3.connect(settings.database.path) as conn:
        assert conn.execute("SELECT COUNT(*) FROM ledger").fetchone()[0] == 1  # only the first job
        assert conn.execute("SELECT deleted, length(image) FROM generations").fetchall() == [(1, 0)]
