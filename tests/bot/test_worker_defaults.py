"""A bot talking to a worker elsewhere plans with the defaults of the model that worker serves.

The worker is the real one on the tiny pipelines with its own defaults (3 steps, 64x64, guidance 5); the
bot's settings name another model, or none, and the bot learns the worker's through its health watch.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator, Callable

import pytest

from bot.core.jobs import JobService
from bot.core.plans import LOCAL_USER, ImagineOptions, JobPlan
from bot.core.services import open_services
from bot.core.settings import Settings
from inference.settings import BUNDLED_MODEL_DEFAULTS, EngineSettings, ModelDefaults
from storage.guilds import GuildSettings
from tests.bot.conftest import free_port
from tests.inference.fixtures_worker import worker_without_info

# What the `worker` fixture's engine was configured with (tests/bot/conftest.py).
WORKER_DEFAULTS = ModelDefaults(steps=3, guidance=5.0, width=64, height=64, img2img_strength=0.75)
# The generic defaults a bot assumes for a model it is only told the name of.
SD_MODEL = EngineSettings(model="some/sd-model")


@contextlib.asynccontextmanager
async def watched(settings: Settings, url: str) -> AsyncIterator[JobService]:
    """The job service on `url` with its worker health watch running, as the Discord bot runs it."""
    async with open_services(settings, url) as services:
        jobs = services.jobs
        watch = asyncio.create_task(jobs.worker.watch(0.05))
        try:
            yield jobs
        finally:
            watch.cancel()
            await asyncio.gather(watch, return_exceptions=True)


async def until(check: Callable[[], bool], timeout_s: float = 30.0) -> None:
    """Poll the service's state (changed by its watch task, which signals nothing) until `check` holds."""
    for _ in range(int(timeout_s / 0.02)):
        if check():
            return
        await asyncio.sleep(0.02)
    raise TimeoutError("the condition never held")


def imagine(jobs: JobService, aspect: str | None = "1:1") -> JobPlan:
    options = ImagineOptions(prompt="a red circle", aspect=aspect)
    return jobs.planner.plan_imagine(LOCAL_USER, options, GuildSettings(LOCAL_USER.guild_id))


def square(jobs: JobService) -> tuple[int | None, int | None]:
    plan = imagine(jobs)
    return plan.width, plan.height


@pytest.mark.parametrize("engine", [SD_MODEL, EngineSettings()], ids=["configured-model", "bundled-model"])
async def test_a_bot_without_defaults_of_its_own_plans_with_the_workers(
    settings: Settings, worker: str, engine: EngineSettings, caplog: pytest.LogCaptureFixture
) -> None:
    bot_settings = settings.model_copy(update={"engine": engine})
    caplog.set_level(logging.INFO, logger="bot.core.worker_watch")
    async with watched(bot_settings, worker) as jobs:
        await until(lambda: jobs.planner.defaults == WORKER_DEFAULTS)
        assert square(jobs) == (64, 64)
        await asyncio.sleep(0.3)  # more health checks: the worker is known, nothing is asked or logged again
        assert jobs.planner.defaults == WORKER_DEFAULTS
    adopted = [r for r in caplog.records if r.getMessage().startswith("planning with the defaults")]
    assert len(adopted) == 1 and "steps=3" in adopted[0].getMessage()


async def test_the_job_the_worker_gets_is_sized_and_priced_for_its_model(
    settings: Settings, worker: str
) -> None:
    async with watched(settings.model_copy(update={"engine": SD_MODEL}), worker) as jobs:
        assert square(jobs) == (256, 256)  # 512x512 assumed, capped at the worker's pixel limit
        await until(lambda: jobs.planner.defaults == WORKER_DEFAULTS)
        plan = imagine(jobs)
        assert jobs.cost_spec(plan).steps == 3
        ticket = await jobs.start(LOCAL_USER, plan)
        outcome = await jobs.follow(ticket.job)
    assert outcome.ok and outcome.info is not None, outcome.message
    assert (outcome.info.width, outcome.info.height, outcome.info.steps) == (64, 64, 3)


async def test_defaults_set_by_hand_win_over_the_workers(settings: Settings, worker: str) -> None:
    own = ModelDefaults(steps=30, width=512, height=512)
    engine = EngineSettings(model="some/sd-model", defaults=own)
    async with open_services(settings.model_copy(update={"engine": engine}), worker) as services:
        jobs = services.jobs
        assert await jobs.worker.learn_model()
        d = jobs.planner.defaults
        assert (d.steps, d.width, d.height) == (30, 512, 512)
        assert square(jobs) == (256, 256)  # from its own 512x512, capped at the pixel limit
        assert jobs.cost_spec(imagine(jobs, aspect=None)).steps == 30
        # What it does not set is still the worker's: an instance built with `defaults=` sets only those.
        assert (d.guidance, d.img2img_strength) == (5.0, 0.75)


async def test_an_older_or_unreachable_worker_leaves_the_bots_defaults(
    settings: Settings, caplog: pytest.LogCaptureFixture
) -> None:
    bot_settings = settings.model_copy(update={"engine": EngineSettings()})
    caplog.set_level(logging.INFO, logger="bot.core.worker_watch")
    async with worker_without_info() as url, watched(bot_settings, url) as jobs:
        await until(lambda: any("does not advertise" in r.getMessage() for r in caplog.records))
        assert jobs.planner.defaults == BUNDLED_MODEL_DEFAULTS and jobs.worker_healthy
    async with open_services(bot_settings, f"http://127.0.0.1:{free_port()}") as services:
        jobs = services.jobs
        assert not await jobs.worker.learn_model()  # asked again when the worker is back
        assert jobs.planner.defaults == BUNDLED_MODEL_DEFAULTS
        assert square(jobs) == (64, 64)
