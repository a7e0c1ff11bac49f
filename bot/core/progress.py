"""One progress display per job, refreshed at most every N seconds with only the latest state (coalesced)."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Protocol

from bot.core.i18n import N_, Message
from inference.vocabulary import JobStatus

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class ProgressState:
    """What a progress display shows: where the job is in the queue or how far it has run."""

    status: JobStatus
    position: int | None = None  # 0-based place in the queue while queued
    step: int = 0
    total: int = 0
    eta_s: float | None = None
    preview_seq: int = 0  # increases when the worker has a newer preview image
    note: Message | None = None  # replaces the usual line, e.g. while waiting for a restarting worker

    def describe(self) -> Message:
        """One line for people (the queue position, or the step and ETA), for the display to translate."""
        if self.note:
            return self.note
        eta = round(self.eta_s) if self.eta_s else None
        if self.status is JobStatus.QUEUED:
            if self.position:
                if eta:
                    return Message(
                        N_("Queued: {ahead} ahead, about {eta} s"), {"ahead": self.position, "eta": eta}
                    )
                return Message(N_("Queued: {ahead} ahead in the queue"), {"ahead": self.position})
            if eta:
                return Message(N_("Queued: next in line, about {eta} s"), {"eta": eta})
            return Message(N_("Queued: next in line"))
        if self.status is JobStatus.RUNNING:
            if not self.total:
                return Message(N_("Starting…"))
            step = {"step": self.step, "total": self.total}
            if eta:
                return Message(N_("Drawing: step {step}/{total}, about {eta} s left"), step | {"eta": eta})
            return Message(N_("Drawing: step {step}/{total}"), step)
        return Message(_STATUS_WORDS.get(self.status, self.status.value))


_STATUS_WORDS = {
    JobStatus.SUCCEEDED: N_("Done"),
    JobStatus.FAILED: N_("Failed"),
    JobStatus.CANCELLED: N_("Cancelled"),
}


class DisplayGone(Exception):
    """The display can no longer be updated (the message was deleted, or the token expired)."""


class ProgressDisplay(Protocol):
    """Somewhere a job's progress is shown: a Discord message, or a terminal bar."""

    async def show(self, state: ProgressState) -> None:
        """Render the state; raise DisplayGone when the display no longer exists."""
        ...


class ProgressUpdater:
    """Pushes the newest state to a display, never more often than `interval_s`.

    Updates arriving faster are coalesced: only the latest is shown. A display that goes away (a
    moderator deleted the message) stops the updater for good without an error; the job goes on.
    """

    def __init__(
        self, display: ProgressDisplay, interval_s: float, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self._display = display
        self._interval = interval_s
        self._clock = clock
        self._latest: ProgressState | None = None
        self._shown: ProgressState | None = None
        self._wake = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self.gone = False
        self.pushes = 0

    def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name="progress-updater")

    def update(self, state: ProgressState) -> None:
        """Record the newest state; it is shown at the next allowed moment. Never blocks."""
        self._latest = state
        self._wake.set()

    async def close(self, flush: bool = False) -> None:
        """Stop the updater; with `flush`, show the last state first if it was not shown yet."""
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None
        if flush and not self.gone and self._latest is not None and self._latest != self._shown:
            await self._push(self._latest)

    async def _run(self) -> None:
        last = -self._interval
        while not self.gone:
            await self._wake.wait()
            wait = last + self._interval - self._clock()
            if wait > 0:
                await asyncio.sleep(wait)
            self._wake.clear()
            state = self._latest
            if state is None or state == self._shown:
                continue
            last = self._clock()
            await self._push(state)

    async def _push(self, state: ProgressState) -> None:
        try:
            await self._display.show(state)
        except DisplayGone:
            log.info("progress display went away; no more updates for this job")
            self.gone = True
        except Exception:  # a failed edit must never take the job down with it
            log.exception("progress update failed")
        else:
            self._shown = state
            self.pushes += 1
