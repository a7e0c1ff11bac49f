"""Benchmark the inference worker: batching gain, RPC throughput against the bare pipeline, per-job overhead.

Measured side by side in one run, with 16 concurrent clients going through the real RPC (aiohttp server,
`WorkerClient`, NDJSON events, PNG download), in the same process as the worker. Throughputs are read in
the steady state (between batch ends inside a window, after a warm-up) and interleaved round by round
with the bare pipeline, so that load from other processes weighs on all of them alike:

  (a) batched_over_unbatched: images/s with `max_batch` ÷ the same server with `max_batch=1`;
  (b) rpc_over_limit: images/s through the RPC ÷ the bare in-process `run_batch` at the batch size the
      server actually formed;
  (c) overhead_p50_ms: one job alone end to end (submit, events until done, image download) minus the
      bare pipeline call for the same job, median over interleaved pairs.

`python bench/worker.py` uses the tiny model at 64x64 on the CPU; `--arch sd-turbo|sdxl-turbo --device
cuda` builds random-weight models of those architectures and runs at their native size and steps. The
last line of output is one JSON object with the three figures.
"""

from __future__ import annotations

import argparse
import asyncio
import itertools
import json
import logging
import os
import platform
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from inference.client import WorkerClient
from inference.engine_api import BatchItem, Engine, EngineWrapper, GeneratedImage, StepUpdate
from inference.protocol import JobRequest
from inference.server import start_worker
from inference.settings import EngineSettings, ModelDefaults, WorkerSettings
from inference.vocabulary import JobKind, WorkerJobId

log = logging.getLogger("bench.worker")

RESULTS = Path(__file__).resolve().parent / "results"
TINY_DEFAULTS = ModelDefaults(steps=4, guidance=0.0, width=64, height=64)


@dataclass
class Throughput:
    """Pipeline calls in a steady state: each call's images and its period (time since the previous
    call ended, so the gaps between calls count). Rates are medians over calls: robust to the bursts of
    load other processes put on a shared machine."""

    images: list[int] = field(default_factory=list)
    periods: list[float] = field(default_factory=list)
    gaps: list[float] = field(default_factory=list)  # idle time of the engine before each call

    @property
    def images_per_s(self) -> float:
        return statistics.median(n / p for n, p in zip(self.images, self.periods, strict=True))

    @property
    def mean_images_per_s(self) -> float:
        return sum(self.images) / sum(self.periods)

    @property
    def mean_batch(self) -> float:
        return sum(self.images) / max(len(self.images), 1)

    def __add__(self, other: Throughput) -> Throughput:
        return Throughput(self.images + other.images, self.periods + other.periods, self.gaps + other.gaps)

    def summary(self) -> dict[str, float]:
        return {
            "calls": len(self.images),
            "images": sum(self.images),
            "seconds": round(sum(self.periods), 3),
            "images_per_s_median": round(self.images_per_s, 2),
            "images_per_s_mean": round(self.mean_images_per_s, 2),
            "mean_batch": round(self.mean_batch, 2),
        } | ({"idle_gap_ms_median": round(statistics.median(self.gaps) * 1000, 2)} if self.gaps else {})


def load_engine(arch: str, device: str, threads: int) -> Engine:
    """The real engine: the tiny model (built into a temp dir) or a random-weight published architecture."""
    if arch == "tiny":
        from inference.engine import DiffusersEngine
        from inference.tiny.build import build

        generate_dir, _ = build(Path(tempfile.mkdtemp(prefix="bench-tiny-")))
        settings = EngineSettings(
            model=str(generate_dir), device=device, cpu_threads=threads, defaults=TINY_DEFAULTS
        )
        return DiffusersEngine.load(settings)
    from inference.archs import get_arch
    from inference.archs.build import random_engine

    settings = EngineSettings(device=device, cpu_threads=threads, defaults=get_arch(arch).defaults)
    return random_engine(arch, settings)


def request(n: int, user: str) -> JobRequest:
    return JobRequest(
        idempotency_key=f"bench-{n}-{time.monotonic_ns()}", user=user, prompt=f"a red circle {n}", seed=n
    )


async def one_job(client: WorkerClient, n: int, user: str) -> None:
    info = await client.submit(request(n, user))
    final = await client.wait(info.id)
    if final.status != "succeeded":
        raise RuntimeError(f"job {info.id} ended {final.status}: {final.error}")
    await client.image(info.id, 0)


@dataclass
class TimedEngine(EngineWrapper):
    """The real engine, noting when each pipeline call ends, so throughput is read in the steady state
    (between batch ends inside a window), free of the ramp-up and tail of a fixed amount of work."""

    ends: list[tuple[float, int]] = field(default_factory=list)
    starts: list[float] = field(default_factory=list)

    def run_batch(
        self, items: list[BatchItem], on_step: Callable[[StepUpdate], None], should_stop: Callable[[], bool]
    ) -> list[list[GeneratedImage]]:
        self.starts.append(time.perf_counter())
        out = self.inner.run_batch(items, on_step, should_stop)
        self.ends.append((time.perf_counter(), sum(i.request.count for i in items)))
        return out


def window(engine: TimedEngine, mark: int, count: int) -> Throughput:
    """The calls that ended in a window: each one's images, its period since the previous end, and the
    engine's idle gap before it (the scheduler's own cost between batches)."""
    ends, starts = engine.ends[mark : mark + count], engine.starts[mark : mark + count]
    if len(ends) < 2:
        raise RuntimeError("fewer than two batches ended in the window; give it more --window-s")
    times = [t for t, _ in ends]
    return Throughput(
        [n for _, n in ends[1:]],
        [b - a for a, b in itertools.pairwise(times)],
        [start - end for start, end in zip(starts[1:], times, strict=False)],
    )


async def drive(url: str, clients: int) -> None:
    """The client side of a throughput window, run in its own process as the bot would be: `clients`
    clients run jobs back to back until stdin closes."""
    stop = asyncio.Event()
    numbers = itertools.count()
    loop = asyncio.get_running_loop()
    loop.add_reader(sys.stdin.fileno(), lambda: sys.stdin.buffer.read1() or stop.set())

    async def user(u: int) -> None:
        while not stop.is_set():
            await one_job(client, next(numbers), f"user{u}")

    async with WorkerClient(url, timeout=600) as client:
        print("ready", flush=True)
        await asyncio.gather(*[user(u) for u in range(clients)])


async def served_round(engine: TimedEngine, url: str, args: argparse.Namespace) -> Throughput:
    """Steady-state images per second through the RPC while `clients` clients each run jobs back to back."""
    driver = await asyncio.create_subprocess_exec(
        sys.executable, __file__, "--drive", url, "--clients", str(args.clients),
        stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE,
    )  # fmt: skip
    assert driver.stdin is not None and driver.stdout is not None
    await driver.stdout.readline()  # ready
    await asyncio.sleep(args.warmup_s)
    mark = len(engine.ends)
    await asyncio.sleep(args.window_s)
    for _ in range(100):  # a loaded machine can stretch a window's few batches: wait for three
        if len(engine.ends) - mark >= 3:
            break
        await asyncio.sleep(args.window_s / 10)
    count = len(engine.ends) - mark
    driver.stdin.close()
    if await driver.wait() != 0:
        raise RuntimeError("the client driver failed")
    return window(engine, mark, count)


def bare_items(engine: Engine, size: int, offset: int) -> list[BatchItem]:
    """The batch the server would hand the engine for these jobs, built without the server."""
    d = engine.defaults(JobKind.GENERATE)
    steps, guidance, width, height = d.steps, d.guidance, d.width, d.height
    items = []
    for i in range(size):
        job = request(offset + i, f"u{i}")
        items.append(
            BatchItem(
                job_id=WorkerJobId(f"bare{i}"),
                request=job,
                seed=offset + i,
                width=width,
                height=height,
                steps=steps,
                guidance=guidance,
            )
        )
    return items


def bare_call(engine: Engine, items: list[BatchItem]) -> float:
    start = time.perf_counter()
    engine.run_batch(items, lambda _u: None, lambda: False)
    return time.perf_counter() - start


def bare_throughput(engine: Engine, batch: int, seconds: float) -> Throughput:
    """The limit: back-to-back in-process `run_batch` calls of `batch` images for `seconds`, no RPC."""
    items = bare_items(engine, batch, 0)
    bare_call(engine, items)  # warm-up
    result = Throughput()
    while sum(result.periods) < seconds or len(result.periods) < 2:
        result.periods.append(bare_call(engine, items))
        result.images.append(batch)
    return result


async def overhead_ms(engine: Engine, repeats: int) -> list[float]:
    """Per pair: one job alone through the RPC, end to end, minus the bare pipeline call for it."""
    worker = await start_worker(WorkerSettings(port=0), engine)
    diffs = []
    try:
        async with WorkerClient(worker.url) as client:
            await one_job(client, 100_000, "warm")
            for n in range(repeats):
                bare = asyncio.to_thread(bare_call, engine, bare_items(engine, 1, n))
                raw = await bare if n % 2 else 0.0  # alternate which goes first, against drift
                start = time.perf_counter()
                await one_job(client, n, "solo")
                rpc = time.perf_counter() - start
                raw = raw or await bare
                diffs.append((rpc - raw) * 1000)
    finally:
        await worker.stop()
    return diffs


@dataclass
class Rounds:
    """Each round's three throughputs, measured back to back."""

    batched: list[Throughput] = field(default_factory=list)
    unbatched: list[Throughput] = field(default_factory=list)
    limit: list[Throughput] = field(default_factory=list)

    @staticmethod
    def ratios(top: list[Throughput], bottom: list[Throughput]) -> list[float]:
        """Per-round ratios: each pair was measured back to back, under the same load from elsewhere."""
        return [round(t.images_per_s / b.images_per_s, 3) for t, b in zip(top, bottom, strict=True)]

    def ratio(self, top: list[Throughput], bottom: list[Throughput]) -> float:
        """The median over rounds of the per-round ratios."""
        return statistics.median(self.ratios(top, bottom))

    @staticmethod
    def pooled(runs: list[Throughput]) -> Throughput:
        return sum(runs, Throughput())


async def throughputs(engine: Engine, args: argparse.Namespace) -> Rounds:
    """Batched RPC, the bare pipeline and unbatched RPC, round after round, so that load from other
    processes on the machine weighs on all three alike."""
    rounds = Rounds()
    e1, e8 = TimedEngine(engine), TimedEngine(engine)
    one = await start_worker(WorkerSettings(port=0, max_batch=1), e1)
    many = await start_worker(WorkerSettings(port=0, max_batch=args.max_batch), e8)
    try:
        for r in range(args.rounds):
            b = await served_round(e8, many.url, args)
            size = max(round(b.mean_batch), 1)
            lim = await asyncio.to_thread(bare_throughput, engine, size, args.window_s)
            u = await served_round(e1, one.url, args)
            log.info("round %d: batched %.1f/s (mean batch %.2f), bare at %d %.1f/s, max_batch=1 %.1f/s",
                     r, b.images_per_s, b.mean_batch, size, lim.images_per_s, u.images_per_s)  # fmt: skip
            rounds.batched.append(b)
            rounds.limit.append(lim)
            rounds.unbatched.append(u)
    finally:
        await one.stop()
        await many.stop()
    return rounds


async def run(args: argparse.Namespace) -> dict[str, object]:
    load_before = os.getloadavg()
    engine = await asyncio.to_thread(load_engine, args.arch, args.device, args.threads)
    rounds = await throughputs(engine, args)
    diffs = await overhead_ms(engine, args.repeats)
    figures = {
        "batched_over_unbatched": round(rounds.ratio(rounds.batched, rounds.unbatched), 3),
        "rpc_over_limit": round(rounds.ratio(rounds.batched, rounds.limit), 3),
        "overhead_p50_ms": round(statistics.median(diffs), 2),
    }
    per_round = {
        "rpc_over_limit": rounds.ratios(rounds.batched, rounds.limit),
        "batched_over_unbatched": rounds.ratios(rounds.batched, rounds.unbatched),
    }
    return {
        "figures": figures,
        "targets": {
            "batched_over_unbatched": ">= 1.8",
            "rpc_over_limit": ">= 0.85",
            "overhead_p50_ms": "<= 15",
        },
        "config": vars(args) | {"model": engine.model_name, "device_name": engine.device_name},
        "machine": {
            "cpus": os.cpu_count(),
            "python": platform.python_version(),
            # Other processes share the machine; its load average says how much they weighed.
            "load_avg_1m_before_after": [round(load_before[0], 2), round(os.getloadavg()[0], 2)],
        },
        "per_round": per_round,
        "batched": Rounds.pooled(rounds.batched).summary(),
        "unbatched": Rounds.pooled(rounds.unbatched).summary(),
        "limit": Rounds.pooled(rounds.limit).summary(),
        "overhead_ms": {
            "p50": figures["overhead_p50_ms"],
            "p90": round(sorted(diffs)[int(len(diffs) * 0.9)], 2),
        },
    }


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--arch", default="tiny", choices=["tiny", "sd-turbo", "sdxl-turbo"])
    p.add_argument("--device", default="cpu", choices=["cpu", "cuda", "mps", "auto"])
    p.add_argument(
        "--threads", type=int, default=1, help="torch CPU threads (the event loop takes the other core)"
    )
    p.add_argument("--clients", type=int, default=16)
    p.add_argument("--warmup-s", type=float, default=0.5, help="load before each throughput window")
    p.add_argument("--window-s", type=float, default=1.5, help="length of each throughput window")
    p.add_argument("--max-batch", type=int, default=8)
    p.add_argument("--rounds", type=int, default=10, help="interleaved rounds of the three throughputs")
    p.add_argument("--repeats", type=int, default=40, help="solo jobs for the overhead figure")
    p.add_argument("--out", type=Path, default=None, help="results file (default bench/results/worker*.json)")
    p.add_argument("--drive", metavar="URL", help=argparse.SUPPRESS)  # internal: the client process
    args = p.parse_args()
    if args.drive:
        asyncio.run(drive(args.drive, args.clients))
        return
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s")
    logging.getLogger("inference").setLevel(logging.WARNING)
    result = asyncio.run(run(args))
    suffix = "" if args.arch == "tiny" and args.device == "cpu" else f"-{args.arch}-{args.device}"
    out = args.out or RESULTS / f"worker{suffix}.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=2, default=str) + "\n")
    print(json.dumps(result, indent=2, default=str))
    print(json.dumps(result["figures"]))


if __name__ == "__main__":
    main()
