"""Upscale subtle and creative end to end: the real bot on the fake Discord, a real worker running the
bundled super-resolution model, a real SQLite file and ledger.

To measure quality the result's pictures must have a known truth at twice the size, so after /imagine the
test puts held-out procedural scenes (tools/tiny/train_sr.py's TEST_SEED set, never drawn in training nor used to pick the checkpoint, drawn at 128x128 and
downscaled by area to 64x64) in place of the generated pictures in the database; the buttons then take
them from there like any stored result. Everything after that is the path a member's press takes.
"""

from __future__ import annotations

import asyncio
import io
import sqlite3
from collections.abc import AsyncIterator, Callable
from typing import Any

import numpy as np
import pytest
from PIL import Image

from bot.core.settings import Settings
from inference.engine_api import BatchItem, EngineError, EngineWrapper, GeneratedImage, StepUpdate
from inference.output import read_metadata
from inference.vocabulary import JobKind
from tests.bot.harness import build_world, button, embed_of, ephemeral_reply, is_result, running_bot
from tests.fakediscord import FakeDiscord
from tools.tiny.train_sr import TEST_SEED, bicubic, eval_pairs, psnr
from tools.tiny.train_sr import from_png as pixels_of
from tools.tiny.train_sr import to_png as png

WAIT = 60
MIN_GAIN_DB = 1.5
GRID = 4


@pytest.fixture
def settings(settings: Settings) -> Settings:
    """Prices that make an upscale's output pixels show: a base image is 32x32, so a 128x128 upscale is
    16 base images x 0.25 = 4 credits subtle, and one 64x64 picture of 3 steps costs the minimum, 1."""
    cost = settings.quota.cost.model_copy(update={"base_pixels": 32 * 32})
    # Upscales up to 256x256, so that a third one in a row is over the cap.
    worker = settings.worker.model_copy(update={"max_upscale_pixels": 256 * 256})
    return settings.model_copy(
        update={"quota": settings.quota.model_copy(update={"cost": cost}), "worker": worker}
    )


def rows(settings: Settings, sql: str, *args: Any) -> list[tuple[Any, ...]]:
    with sqlite3.connect(settings.database.path) as conn:
        return conn.execute(sql, args).fetchall()


def charges(settings: Settings) -> list[tuple[Any, ...]]:
    """Each job's cost and its ledger row's state, oldest first."""
    return rows(
        settings, "SELECT j.cost, l.state FROM jobs j JOIN ledger l USING (job_id) ORDER BY j.created_at"
    )


def put_scenes(settings: Settings, job_id: str, inputs: list[np.ndarray]) -> None:
    """The test's own write: the job's stored pictures become the procedural scenes' inputs (waiting out
    the bot's own write of the job's end, which may still hold the lock)."""
    with sqlite3.connect(settings.database.path, timeout=30) as conn:
        for index, small in enumerate(inputs):
            conn.execute(
                "UPDATE generations SET image = ? WHERE job_id = ? AND idx = ?", (png(small), job_id, index)
            )


def job_of(custom_id: str) -> str:
    return custom_id.split(":")[2]


async def test_upscale_subtle_beats_bicubic_and_is_priced_by_output_pixels(
    fake_discord: FakeDiscord, settings: Settings, worker: str
) -> None:
    world = build_world(fake_discord)
    pairs = eval_pairs(2, count=GRID, seed=TEST_SEED)
    async with running_bot(fake_discord, settings, worker):
        inter = await fake_discord.send_slash(
            "imagine", {"prompt": "shapes", "count": GRID, "seed": 3}, user=world.alice, channel=world.channel
        )
        grid = await inter.wait_original(is_result, timeout=WAIT)
        # The grid: U1..U4 are Upscale (subtle) of each image, and the embed says what one costs first.
        ups = [c for c in grid.custom_ids() if c.startswith("brushfire:upscale:")]
        assert [c.rsplit(":", 1)[1] for c in ups] == ["0", "1", "2", "3"]
        assert not any(c.startswith("brushfire:upscale-creative:") for c in grid.custom_ids())
        shown = {f["name"]: f["value"] for f in embed_of(grid)["fields"]}
        assert shown["Upscale"] == "subtle 4 credits, creative 5 credits"
        await asyncio.to_thread(put_scenes, settings, job_of(ups[0]), [small for small, _ in pairs])

        presses = [await fake_discord.click(grid, c, user=world.alice) for c in ups]
        results = [await p.wait_original(is_result, timeout=WAIT) for p in presses]
        outputs = [pixels_of(r.attachments[0].data) for r in results]
        assert all(o.shape == (128, 128, 3) for o in outputs)
        ours = np.mean([psnr(o, ref) for o, (_, ref) in zip(outputs, pairs, strict=True)])
        theirs = np.mean([psnr(bicubic(small, 2), ref) for small, ref in pairs])
        assert ours - theirs >= MIN_GAIN_DB, (ours, theirs)

        # An upscale is a single-image result: Vary, Upscale (subtle) and Upscale (creative) on row 1.
        single = results[0]
        actions = [c.split(":")[1] for c in single.custom_ids()]
        assert actions[:7] == ["reroll", "edit", "delete", "submit", "vary", "upscale", "upscale-creative"]
        assert {"zoom", "region", "pan"} <= set(actions[7:])  # then the tools of bot/tool_views.py
        labels = [single.component(c)["label"] for c in single.custom_ids()[4:7]]
        assert labels == ["Vary", "Upscale (subtle)", "Upscale (creative)"]
        assert embed_of(single)["footer"]["text"].endswith(" · upscale")

    charged = charges(settings)
    # The grid: 4 images of 4 base images at 3 of 30 steps, 1.6: 2. Each upscale: 4, by its output pixels.
    assert charged == [(2, "committed")] + [(4, "committed")] * GRID


async def test_creative_upscale_redraws_and_an_upscale_over_the_cap_is_refused_free(
    fake_discord: FakeDiscord, settings: Settings, worker: str
) -> None:
    world = build_world(fake_discord)
    async with running_bot(fake_discord, settings, worker):
        inter = await fake_discord.send_slash(
            "imagine",
            {"prompt": "a red circle", "count": 1, "seed": 5},
            user=world.alice,
            channel=world.channel,
        )
        first = await inter.wait_original(is_result, timeout=WAIT)
        subtle = await (
            await fake_discord.click(first, button(first, "upscale"), user=world.alice)
        ).wait_original(is_result, timeout=WAIT)
        press = await fake_discord.click(first, button(first, "upscale-creative"), user=world.alice)
        creative = await press.wait_original(is_result, timeout=WAIT)
        with Image.open(io.BytesIO(creative.attachments[0].data)) as img:
            assert img.size == (128, 128)
            # The worker's own record of what ran: the upscaler, then img2img at the bot's creative strength.
            assert (
                read_metadata(creative.attachments[0].data)["kind"] == "upscale"
                and read_metadata(creative.attachments[0].data)["strength"]
                == f"{settings.limits.upscale_strength:g}"
            )
        difference = np.abs(
            pixels_of(creative.attachments[0].data).astype(int) - pixels_of(subtle.attachments[0].data)
        )
        assert difference.mean() > 1.0  # the img2img pass redrew it
        assert embed_of(creative)["footer"]["text"].endswith(" · creative upscale")

        # 128x128 upscaled again is 256x256, at the worker's cap; once more would be over it: refused, free.
        bigger = await (
            await fake_discord.click(creative, button(creative, "upscale"), user=world.alice)
        ).wait_original(is_result, timeout=WAIT)
        assert "Upscale" not in {f["name"] for f in embed_of(bigger)["fields"]}  # no upscale fits any more
        refused = await fake_discord.click(bigger, button(bigger, "upscale"), user=world.alice)
        assert "over this server's limit of 65536 pixels" in await ephemeral_reply(refused)

    costs = charges(settings)
    # 1 for the picture, 4 subtle, 4 + its img2img pass (16 base images x 3 steps x 0.3 / 30 = 0.48): 5;
    # 256x256 is 64 base images x 0.25 = 16. The refused press left no row.
    assert costs == [(1, "committed"), (4, "committed"), (5, "committed"), (16, "committed")]


class UpscalerFails(EngineWrapper):
    """The fault double: upscale batches fail as a broken model file would; everything else runs."""

    def run_batch(
        self, items: list[BatchItem], on_step: Callable[[StepUpdate], None], should_stop: Callable[[], bool]
    ) -> list[list[GeneratedImage]]:
        if items and items[0].request.kind is JobKind.UPSCALE:
            raise EngineError("upscaler failed: RuntimeError: broken weights")
        return self.inner.run_batch(items, on_step, should_stop)


@pytest.fixture
async def failing_worker(settings: Settings) -> AsyncIterator[str]:
    from inference.models import load_engine
    from inference.server import start_worker

    engine = UpscalerFails(await asyncio.to_thread(load_engine, settings.engine))
    running = await start_worker(settings.worker.model_copy(update={"port": 0}), engine)
    try:
        yield running.url
    finally:
        await running.stop()


async def test_a_failed_upscale_is_refunded(
    fake_discord: FakeDiscord, settings: Settings, failing_worker: str
) -> None:
    world = build_world(fake_discord)
    async with running_bot(fake_discord, settings, failing_worker):
        inter = await fake_discord.send_slash(
            "imagine", {"prompt": "a blue square", "count": 1}, user=world.alice, channel=world.channel
        )
        first = await inter.wait_original(is_result, timeout=WAIT)
        press = await fake_discord.click(first, button(first, "upscale"), user=world.alice)
        await press.wait_original(
            lambda m: "refund" in m.content.lower() or "failed" in m.content.lower(), timeout=WAIT
        )
    states = charges(settings)
    assert states == [(1, "committed"), (4, "refunded")]
