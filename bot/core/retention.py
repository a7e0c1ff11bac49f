"""Image retention: each server's policy, and the maintenance job that prunes and compacts the database.

A server sets a max age (days) and a max total size (bytes) for its stored images (`/settings retention`).
The job, every `interval_s`, drops each server's images past its policy oldest first (rows stay; buttons on
them answer that the image expired), shrinks challenge entries' images to a thumbnail instead of dropping
them, and VACUUMs when it freed anything, so the file and every backup stop growing.
"""

from __future__ import annotations

import io
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass

from apscheduler.job import Job
from apscheduler.schedulers.asyncio import AsyncIOScheduler
from apscheduler.triggers.interval import IntervalTrigger
from PIL import Image

from bot.core.errors import InvalidInput
from bot.core.i18n import N_
from storage import retention
from storage.db import Database
from storage.retention import PruneResult, RetentionPolicy

log = logging.getLogger(__name__)

THUMBNAIL_SIDE = 256  # a challenge entry's image past the policy keeps a copy this size on its long side
MAX_AGE_DAYS = 3650
MAX_MEGABYTES = 1_000_000
MB = 1_000_000


@dataclass(frozen=True, slots=True)
class RetentionReport:
    """One maintenance pass over every server with a policy."""

    dropped: int = 0
    shrunk: int = 0
    freed_bytes: int = 0
    vacuumed: bool = False


def thumbnail(image: bytes, side: int = THUMBNAIL_SIDE) -> bytes | None:
    """The picture at most `side` pixels on its long side, in its own format (PNG, WebP or JPEG), or None
    when the bytes are not a readable image."""
    try:
        with Image.open(io.BytesIO(image)) as img:
            fmt = img.format if img.format in ("PNG", "WEBP", "JPEG") else "PNG"
            img.thumbnail((side, side))
            out = io.BytesIO()
            img.save(out, format=fmt, optimize=True, quality=90)
    except (OSError, ValueError, Image.DecompressionBombError):
        return None
    return out.getvalue()


class RetentionService:
    """Reads and sets a server's retention policy, and runs the pruning pass."""

    JOB_ID = "brushfire.images.retention"

    def __init__(
        self, db: Database, clock: Callable[[], float] = time.time, interval_s: float = 3600.0
    ) -> None:
        self._db = db
        self._clock = clock
        self.interval_s = interval_s

    async def policy(self, guild_id: int) -> RetentionPolicy:
        async with self._db.transaction(write=False) as tx:
            return await retention.get(tx, guild_id)

    async def set_policy(
        self, guild_id: int, actor_id: int, *, max_age_days: int | None, max_megabytes: float | None
    ) -> RetentionPolicy:
        """Set both limits (None: none of that kind); audited as `actor_id`'s change."""
        if max_age_days is not None and not 1 <= max_age_days <= MAX_AGE_DAYS:
            raise InvalidInput(
                N_("Images can be kept for 1 to {max} days, not {days}."), max=MAX_AGE_DAYS, days=max_age_days
            )
        if max_megabytes is not None and not 0 <= max_megabytes <= MAX_MEGABYTES:
            raise InvalidInput(
                N_("The stored images' limit must be between 0 and {max} MB, not {size}."),
                max=MAX_MEGABYTES,
                size=max_megabytes,
            )
        max_bytes = None if max_megabytes is None else int(max_megabytes * MB)
        async with self._db.transaction() as tx:
            return await retention.save(
                tx, guild_id, actor_id, max_age_days=max_age_days, max_bytes=max_bytes, now=self._clock()
            )

    async def stored_bytes(self, guild_id: int) -> int:
        async with self._db.transaction(write=False) as tx:
            return await retention.stored_bytes(tx, guild_id)

    def register(self, scheduler: AsyncIOScheduler) -> Job:
        """Add the pruning job (replacing an earlier one); the scheduler may already be running."""
        return scheduler.add_job(
            self.run,
            IntervalTrigger(seconds=self.interval_s),
            id=self.JOB_ID,
            replace_existing=True,
            coalesce=True,
            max_instances=1,
            misfire_grace_time=300,
        )

    async def run(self) -> RetentionReport:
        """One pass; logs its own failures (a failed pass must never stop the next)."""
        try:
            return await self.prune_all()
        except Exception:
            log.exception("image retention pass failed")
            return RetentionReport()

    async def prune_all(self) -> RetentionReport:
        dropped = shrunk = freed = 0
        async with self._db.transaction(write=False) as tx:
            limited = await retention.policies(tx)
        for policy in limited:
            async with self._db.transaction() as tx:  # one server's pass at a time: others write between
                result = await retention.prune(tx, policy, self._clock())
            dropped += result.dropped
            freed += result.freed_bytes
            shrunk += await self._shrink(result)
        vacuumed = bool(dropped or shrunk)
        if vacuumed:
            await retention.vacuum(self._db.path, self._db.settings.busy_timeout_ms)
            log.info("retention: dropped %d image(s), shrank %d, freed %d bytes", dropped, shrunk, freed)
        return RetentionReport(dropped=dropped, shrunk=shrunk, freed_bytes=freed, vacuumed=vacuumed)

    async def _shrink(self, result: PruneResult) -> int:
        """Challenge entries past the policy keep a thumbnail instead of their full image."""
        shrunk = 0
        for generation_id in result.pinned:
            async with self._db.transaction(write=False) as tx:
                image = await retention.image(tx, generation_id)
            small = thumbnail(image)  # outside any transaction: decoding is no database work
            if small is None:
                continue
            async with self._db.transaction() as tx:
                if await retention.shrink(tx, generation_id, small):
                    shrunk += 1
        return shrunk
