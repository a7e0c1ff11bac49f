"""/imagine end to end: the real bot on the fake Discord, the real tiny worker, a real SQLite file."""

from __future__ import annotations

import io
import sqlite3

from PIL import Image

from bot.core.settings import Settings
from tests.bot.harness import build_world, button, is_result, running_bot
from tests.fakediscord import FakeDiscord


def ledger(settings: Settings) -> list[tuple[int, str, str | None]]:
    with sqlite3.connect(settings.database.path) as conn:
        return conn.execute("SELECT user_id, state, lane FROM ledger ORDER BY created_at").fetchall()


async def test_imagine_posts_result_with_buttons_and_charges(
    fake_discord: FakeDiscord, settings: Settings, worker: str
) -> None:
    world = build_world(fake_discord)
    async with running_bot(fake_discord, settings, worker):
        inter = await fake_discord.send_slash(
            "imagine",
            {"prompt": "a red fox", "count": 2, "seed": 11},
            user=world.alice,
            channel=world.channel,
        )
        response = await inter.wait_response()
        assert response.type == 5  # deferred at once
        result = await inter.wait_original(is_result, timeout=60)
        assert len(result.attachments) == 2
        assert all(a.data.startswith(b"\xff\xd8\xff") for a in result.attachments)
        embed = result.embed
        assert embed is not None and "a red fox" in embed["title"]
        fields = {f["name"]: f["value"] for f in embed["fields"]}
        assert fields["Seed"] == "11, 12" and fields["Size"] == "64x64"
        ids = result.custom_ids()
        assert {c.split(":")[1] for c in ids} == {"reroll", "edit", "delete", "submit", "vary", "upscale"}
        assert all(len(c) <= 100 for c in ids)
        assert any(v.edits for v in [result])  # the progress message became the result
        assert ledger(settings) == [(world.alice.id, "committed", "fast")]

        # Re-roll: a new job with its own charge and a parent link.
        again = await fake_discord.click(result, button(result, "reroll"), user=world.bob)
        second = await again.wait_original(is_result, timeout=60)
        assert len(second.attachments) == 2
        assert [r[0] for r in ledger(settings)] == [world.alice.id, world.bob.id]
        with sqlite3.connect(settings.database.path) as conn:
            parent = conn.execute(
                "SELECT parent_job_id FROM jobs ORDER BY created_at DESC LIMIT 1"
            ).fetchone()[0]
        assert parent == button(result, "reroll").split(":")[2]


async def test_vary_and_upscale_make_child_jobs_from_one_image(
    fake_discord: FakeDiscord, settings: Settings, worker: str
) -> None:
    world = build_world(fake_discord)
    async with running_bot(fake_discord, settings, worker):
        inter = await fake_discord.send_slash(
            "imagine",
            {"prompt": "a blue bird", "count": 2, "aspect": "1:1"},
            user=world.alice,
            channel=world.channel,
        )
        result = await inter.wait_original(is_result, timeout=60)
        vary_2 = next(c for c in result.custom_ids() if c.startswith("brushfire:vary:") and c.endswith(":1"))
        varied = await (await fake_discord.click(result, vary_2, user=world.alice)).wait_original(
            is_result, timeout=60
        )
        assert len(varied.attachments) == 1
        upscale_1 = next(
            c for c in result.custom_ids() if c.startswith("brushfire:upscale:") and c.endswith(":0")
        )
        upscaled = await (await fake_discord.click(result, upscale_1, user=world.alice)).wait_original(
            is_result, timeout=60
        )
        with Image.open(io.BytesIO(upscaled.attachments[0].data)) as img:
            assert img.size == (128, 128)  # twice the 64x64 original, within the worker's pixel cap
    with sqlite3.connect(settings.database.path) as conn:
        rows = conn.execute(
            "SELECT j.kind, g.parent_generation_id IS NOT NULL, l.state FROM jobs j "
            "JOIN generations g USING (job_id) JOIN ledger l USING (job_id) ORDER BY j.created_at, g.idx"
        ).fetchall()
    assert rows == [
        ("generate", 0, "committed"),
        ("generate", 0, "committed"),
        ("img2img", 1, "committed"),
        ("upscale", 1, "committed"),
    ]
