"""Watching the image worker: whether it is up, and which model's defaults the planner should use."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable

from pydantic import ValidationError

from bot.core.plans import Planner
from inference import client as worker_client
from inference.client import WorkerClient

log = logging.getLogger(__name__)


class WorkerWatch:
    """Knows whether the worker answers, and teaches the planner the defaults of the model it serves."""

    def __init__(
        self, client: WorkerClient, planner: Planner, clock: Callable[[], float] = time.time
    ) -> None:
        self._client = client
        self._planner = planner
        self._clock = clock
        self.healthy = True

    async def wait_until_up(self, timeout_s: float) -> bool:
        """Poll the worker until it answers (True) or `timeout_s` passes (False)."""
        deadline = self._clock() + timeout_s
        while True:
            if await self._client.health():
                self.healthy = True
                return True
            if self._clock() >= deadline:
                self.healthy = False
                return False
            await asyncio.sleep(min(1.0, max(0.05, timeout_s / 10)))

    async def watch(self, interval_s: float) -> None:
        """Check the worker forever; log when it goes away and when it comes back.

        Each time it is (back) up, read which model it serves: it may have been restarted with another.
        """
        learned = False
        while True:
            healthy = await self._client.health()
            if healthy != self.healthy:
                log.warning("image worker is %s", "back" if healthy else "unreachable")
            self.healthy = healthy
            if not healthy:
                learned = False
            elif not learned:
                learned = await self.learn_model()
            await asyncio.sleep(interval_s)

    async def learn_model(self) -> bool:
        """Ask the worker what it serves, and plan with its model's defaults unless they were set by hand.

        False when the worker could not be asked (ask again later); True once it answered, even if only
        to say it is too old to tell.
        """
        try:
            info = await self._client.info()
        except worker_client.WorkerUnavailable:
            return False
        except (worker_client.WorkerRejected, ValidationError) as exc:
            log.warning("cannot read the image worker's model info (%s); planning with engine.defaults", exc)
            return True
        if info is None:
            log.info("the image worker does not advertise its model (too old); planning with engine.defaults")
            return True
        planner = self._planner
        kept = ", ".join(sorted(planner.defaults_by_hand))
        note = f" ({kept} as set in engine.defaults)" if kept else ""
        if planner.adopt_worker_defaults(info):
            log.info("planning with the defaults of the worker's model %s: %s%s", info.model, planner.defaults, note)  # fmt: skip
        elif planner.defaults != info.defaults:
            log.info(
                "keeping engine.defaults as set (%s) over those of the worker's model %s", kept, info.model
            )
        return True
