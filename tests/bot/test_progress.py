"""The progress updater: at most one push per interval, latest state wins, a gone display stops it."""

import asyncio
import itertools

from bot.core.progress import DisplayGone, ProgressState, ProgressUpdater
from inference.vocabulary import JobStatus


class Recorder:
    def __init__(self, gone_after: int | None = None) -> None:
        self.shown: list[tuple[float, ProgressState]] = []
        self.gone_after = gone_after
        self.calls = 0

    async def show(self, state: ProgressState) -> None:
        self.calls += 1
        if self.gone_after is not None and self.calls > self.gone_after:
            raise DisplayGone()
        self.shown.append((asyncio.get_running_loop().time(), state))


def running(step: int) -> ProgressState:
    return ProgressState(status=JobStatus.RUNNING, step=step, total=100)


async def test_updates_are_coalesced_and_spaced() -> None:
    rec = Recorder()
    updater = ProgressUpdater(rec, interval_s=0.2)
    updater.start()
    for step in range(1, 41):
        updater.update(running(step))
        await asyncio.sleep(0.01)
    await asyncio.sleep(0.25)
    await updater.close(flush=True)
    times = [t for t, _ in rec.shown]
    assert 2 <= len(rec.shown) <= 5  # 0.4 s of updates at one per 0.2 s
    assert all(b - a >= 0.19 for a, b in itertools.pairwise(times))
    assert rec.shown[-1][1].step == 40  # the newest state is the one left on screen


async def test_deleted_display_stops_cleanly() -> None:
    rec = Recorder(gone_after=1)
    updater = ProgressUpdater(rec, interval_s=0.05)
    updater.start()
    for step in range(10):
        updater.update(running(step))
        await asyncio.sleep(0.03)
    await updater.close(flush=True)
    assert updater.gone
    assert rec.calls == 2  # one success, one DisplayGone, then silence


def test_describe() -> None:
    assert "next in line" in str(ProgressState(status=JobStatus.QUEUED, position=0).describe())
    assert "3 ahead" in str(ProgressState(status=JobStatus.QUEUED, position=3).describe())
    running = ProgressState(status=JobStatus.RUNNING, step=4, total=8, eta_s=12.4).describe()
    assert str(running) == "Drawing: step 4/8, about 12 s left"
    # The core hands the display a template and its fields; the display picks the language.
    assert running.template == "Drawing: step {step}/{total}, about {eta} s left"
    assert dict(running.params) == {"step": 4, "total": 8, "eta": 12}
