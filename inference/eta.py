"""Measured batch times per shape, the basis of every ETA and Retry-After the worker gives."""

from __future__ import annotations

import time
from collections import deque
from collections.abc import Callable, Iterator

from inference.queue import Job
from inference.vocabulary import JobKind

DEFAULT_BATCH_S = 2.0  # ETA guess before any batch of a comparable shape was measured


class BatchTimes:
    """Measured pipeline-call times per shape, smoothed, for ETAs and Retry-After."""

    def __init__(self, alpha: float = 0.3) -> None:
        self._alpha = alpha
        self._ema: dict[tuple[tuple[JobKind, int, int, int], int], float] = {}

    def record(self, shape: tuple[JobKind, int, int, int], n: int, seconds: float) -> None:
        old = self._ema.get((shape, n))
        self._ema[(shape, n)] = seconds if old is None else old + self._alpha * (seconds - old)

    def estimate(self, shape: tuple[JobKind, int, int, int], n: int) -> float:
        exact = self._ema.get((shape, n))
        if exact is not None:
            return exact
        same = [(m, s) for (sh, m), s in self._ema.items() if sh == shape]
        if same:
            m, s = min(same, key=lambda ms: abs(ms[0] - n))
            return s * n / m  # linear in batch size: pessimistic, batching is cheaper than that
        if self._ema:
            # Scale any measurement by pixels x steps x images.
            (sh, m), s = next(iter(self._ema.items()))
            return s * _work(shape, n) / _work(sh, m)
        return DEFAULT_BATCH_S


def _work(shape: tuple[JobKind, int, int, int], n: int) -> float:
    _, w, h, steps = shape
    return float(w * h * steps * n)


class Throughput:
    """Images finished over the last minute, for the worker's images-per-second figure."""

    def __init__(self, clock: Callable[[], float] = time.monotonic, window_s: float = 60.0) -> None:
        self._clock = clock
        self._window_s = window_s
        self._done: deque[tuple[float, int]] = deque()

    def add(self, images: int) -> None:
        self._done.append((self._clock(), images))
        self._forget_old()

    def per_second(self) -> float:
        self._forget_old()
        return round(sum(n for _, n in self._done) / self._window_s, 3)

    def _forget_old(self) -> None:
        cutoff = self._clock() - self._window_s
        while self._done and self._done[0][0] < cutoff:
            self._done.popleft()


def queue_finish_times(
    order: list[Job], image_seconds: Callable[[Job], float], wait_s: float, parallel: int
) -> Iterator[tuple[int, Job, float]]:
    """Each queued job in serving order with its place and the seconds until it should finish: the
    wait for a free batch slot plus the work ahead of it (its own included), spread over the slots."""
    work = 0.0
    for place, job in enumerate(order):
        work += image_seconds(job) * job.request.count
        yield place, job, round(wait_s + work / parallel, 2)
