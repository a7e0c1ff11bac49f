"""The bot's /metrics: an /imagine through the fake Discord leaves a count in each latency histogram (and
in the worker's own queue-wait and batch histograms)."""

from __future__ import annotations

import asyncio

import aiohttp
from prometheus_client.parser import text_string_to_metric_families

from bot.core.settings import Settings
from tests.bot.harness import build_world, is_result, running_bot
from tests.fakediscord import FakeDiscord

HISTOGRAMS = (
    "brushfire_bot_defer_seconds",
    "brushfire_bot_queue_wait_seconds",
    "brushfire_bot_generation_seconds",
    "brushfire_bot_delivery_seconds",
)


def counts(text: str) -> dict[str, float]:
    found: dict[str, float] = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name.endswith("_count"):
                found[sample.name.removesuffix("_count")] = sample.value
    return found


async def test_imagine_shows_in_the_four_latency_histograms(
    fake_discord: FakeDiscord, settings: Settings, worker: str
) -> None:
    settings = settings.model_copy(
        update={"discord": settings.discord.model_copy(update={"metrics_port": 0})}
    )
    world = build_world(fake_discord)
    async with running_bot(fake_discord, settings, worker) as bot, aiohttp.ClientSession() as http:
        assert bot.metrics_server is not None
        async with http.get(bot.metrics_server.url) as resp:
            assert resp.status == 200
            before = counts(await resp.text())
        assert all(before[name] == 0 for name in HISTOGRAMS)
        inter = await fake_discord.send_slash(
            "imagine", {"prompt": "a red fox", "seed": 3}, user=world.alice, channel=world.channel
        )
        await inter.wait_original(is_result, timeout=60)
        # The delivery is timed once its message is sent, which the fake sees a moment before the bot's
        # own await returns: read until the four counts settle (or time out and compare what is there).
        deadline = asyncio.get_running_loop().time() + 10
        while True:
            async with http.get(bot.metrics_server.url) as resp:
                assert resp.headers["Content-Type"].startswith("text/plain")
                after = counts(await resp.text())
            if all(after[name] >= 1 for name in HISTOGRAMS) or asyncio.get_running_loop().time() > deadline:
                break
            await asyncio.sleep(0.05)
    assert {name: after[name] for name in HISTOGRAMS} == dict.fromkeys(HISTOGRAMS, 1.0)

    # The worker's /metrics has its own latency histograms beside its gauges and counters.
    async with aiohttp.ClientSession() as http, http.get(f"{worker}/metrics") as resp:
        text = await resp.text()
    worker_counts = counts(text)
    assert worker_counts["brushfire_queue_wait_seconds"] == 1
    assert worker_counts["brushfire_batch_seconds"] == 1
    assert "# TYPE brushfire_batch_seconds histogram" in text and "brushfire_images_total 1" in text


async def test_two_bots_keep_their_own_counts(settings: Settings) -> None:
    """A per-bot registry: metrics of one set of services never show in another's."""
    from bot.core.metrics import BotMetrics

    one, two = BotMetrics(), BotMetrics()
    one.defer.observe(0.1)
    assert counts(one.render().decode())["brushfire_bot_defer_seconds"] == 1
    assert counts(two.render().decode())["brushfire_bot_defer_seconds"] == 0
