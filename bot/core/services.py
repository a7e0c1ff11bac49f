"""Every service of the core, built together by `open_services()` for the bot, the command line and tests."""

from __future__ import annotations

import logging
import time
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass

from bot.core.challenges.service import ChallengeService
from bot.core.guilds import GuildService
from bot.core.jobs import JobService
from bot.core.lifecycle import CrashPoint, ProcessOwner
from bot.core.metrics import BotMetrics
from bot.core.quotas.maintenance import Maintenance
from bot.core.quotas.service import QuotaService
from bot.core.retention import RetentionService
from bot.core.settings import Settings
from bot.core.styles import StyleBook
from inference.client import WorkerClient
from storage.db import Database

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class Services:
    """The core, as one typed value: what every front end (Discord, the command line, tests) drives."""

    settings: Settings
    jobs: JobService
    quotas: QuotaService
    guilds: GuildService
    challenges: ChallengeService
    maintenance: Maintenance
    retention: RetentionService
    metrics: BotMetrics
    clock: Callable[[], float]


@asynccontextmanager
async def open_services(
    settings: Settings,
    worker_url: str | None = None,
    clock: Callable[[], float] = time.time,
    owner: ProcessOwner | None = None,
    crash: CrashPoint | None = None,
) -> AsyncIterator[Services]:
    """Open the database and the worker client, and build every service over them; close both at the end.

    `owner` is recorded on the jobs this process starts (so a later start can tell whether it died);
    `crash` is the test-only fault hook of the crash matrix."""
    url = worker_url or settings.resolved_worker_url
    async with (
        Database.open(settings.database) as db,
        WorkerClient(url, token=settings.resolved_worker_token) as client,
    ):
        quotas = QuotaService(db, settings.quota, clock)
        guilds = GuildService(
            db, StyleBook(settings.styles, settings.aspects), settings.switchable_adapters, clock
        )
        metrics = BotMetrics()  # one registry per set of services: no process-wide metric globals
        yield Services(
            settings=settings,
            jobs=JobService(
                settings=settings,
                db=db,
                quotas=quotas,
                guilds=guilds,
                client=client,
                clock=clock,
                owner=owner,
                crash=crash,
                metrics=metrics,
            ),
            quotas=quotas,
            guilds=guilds,
            challenges=ChallengeService(db=db, quotas=quotas, settings=settings.challenges, clock=clock),
            maintenance=Maintenance(quotas, db, clock),
            retention=RetentionService(db, clock),
            metrics=metrics,
            clock=clock,
        )
