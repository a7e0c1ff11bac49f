"""Scheduled upkeep: the stale-reservation sweep, ledger pruning and the optional nightly backup."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path

from apscheduler.job import Job
from apscheduler.schedulers.asyncio import AsyncIOScheduler
from apscheduler.triggers.cron import CronTrigger
from apscheduler.triggers.interval import IntervalTrigger

from bot.core.quotas.pricing import DAY_S
from bot.core.quotas.service import QuotaService
from storage import jobs
from storage.db import Database

log = logging.getLogger(__name__)


class Maintenance:
    """Registers the stale-reservation sweep, ledger pruning and the optional nightly backup."""

    SWEEP_ID = "brushfire.quota.sweep"
    PRUNE_ID = "brushfire.quota.prune"
    BACKUP_ID = "brushfire.db.backup"

    def __init__(self, quotas: QuotaService, db: Database, clock: Callable[[], float] = time.time) -> None:
        self._quotas = quotas
        self._db = db
        self._clock = clock

    def register(self, scheduler: AsyncIOScheduler) -> list[Job]:
        """Add the jobs (replacing earlier ones with the same ids); the scheduler may already be running."""
        qs = self._quotas.settings
        common = {"replace_existing": True, "coalesce": True, "max_instances": 1, "misfire_grace_time": 300}
        added = [
            scheduler.add_job(
                self.sweep, IntervalTrigger(seconds=qs.sweep_interval_s), id=self.SWEEP_ID, **common
            ),
            scheduler.add_job(
                self.prune, IntervalTrigger(seconds=qs.prune_interval_s), id=self.PRUNE_ID, **common
            ),
        ]
        ds = self._db.settings
        if ds.backup_dir is not None and ds.backup_hour is not None:
            added.append(
                scheduler.add_job(
                    self.backup, CronTrigger(hour=ds.backup_hour, minute=0), id=self.BACKUP_ID, **common
                )
            )
        return added

    # The jobs log their own failures: an exception escaping into APScheduler would only be logged there,
    # far from the context, and a failed sweep must never stop the next one.
    async def sweep(self) -> int:
        try:
            return await self._quotas.sweep_stale()
        except Exception:
            log.exception("stale-reservation sweep failed")
            return 0

    async def prune(self) -> int:
        """Prune the ledger, and forget interaction tokens of jobs finished over a day ago (they expire anyway)."""
        try:
            removed = await self._quotas.prune()
            async with self._db.transaction() as tx:
                await jobs.prune_finished(tx, self._clock() - DAY_S)
        except Exception:
            log.exception("ledger pruning failed")
            return 0
        return removed

    async def backup(self) -> Path | None:
        """Write `brushfire-YYYYMMDD-HHMMSS.sqlite3` into the backup folder and keep the newest few."""
        ds = self._db.settings
        if ds.backup_dir is None:
            return None
        stamp = datetime.fromtimestamp(self._clock(), UTC).strftime("%Y%m%d-%H%M%S")
        target = ds.backup_dir / f"brushfire-{stamp}.sqlite3"
        try:
            await self._db.backup_to(target)
        except Exception:
            log.exception("nightly backup to %s failed", target)
            return None
        for old in sorted(ds.backup_dir.glob("brushfire-*.sqlite3"))[: -ds.backups_kept]:
            old.unlink(missing_ok=True)
        log.info("database backed up to %s", target)
        return target
