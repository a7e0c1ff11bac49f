"""Benchmark the inference worker: batching gain, RPC throughput against the bare pipeline, per-job overhead.

Measured side by side in one run, with 16 concurrent clients going through the real RPC (aiohttp server,
`WorkerClient`, NDJSON events, PNG download):

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
import json
import logging
import statistics
import sys
import tempfile
import time
from dataclasses import asdict, dataclass
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from inference.client import WorkerClient
from inference.protocol import BatchItem, Engine, JobKind, JobRequest
from inference.server import SCHEDULER, RunningWorker, start_worker
from inference.settings import EngineSettings, ModelDefaults, WorkerSettings

log = logging.getLogger("bench.worker")

RESULTS = Path(__file__).resolve().parent / "results"
TINY_DEFAULTS = ModelDefaults(steps=4, guidance=0.0, width=64, height=64)


@dataclass
class Throughput:
    images: int
    seconds: float
    batches: int

    @property
    def images_per_s(self) -> float:
        return self.images / self.seconds

    @property
    def mean_batch(self) -> float:
        return self.images / max(self.batches, 1)

    def __add__(self, other: Throughput) -> Throughput:
        return Throughput(
            self.images + other.images, self.seconds + other.seconds, self.batches + other.batches
        )

    def summary(self) -> dict[str, float]:
        return asdict(self) | {
            "images_per_s": round(self.images_per_s, 2),
            "mean_batch": round(self.mean_batch, 2),
        }


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


async def served_round(worker: RunningWorker, client: WorkerClient, clients: int, jobs: int) -> Throughput:
    """Images per second through the RPC with `clients` clients each running `jobs` jobs back to back."""
    scheduler = worker.app[SCHEDULER]
    images0, batches0 = scheduler.images_total, scheduler.batches

    async def user(u: int) -> None:
        for k in range(jobs):
            await one_job(client, u * jobs + k, f"user{u}")

    start = time.perf_counter()
    await asyncio.gather(*[user(u) for u in range(clients)])
    seconds = time.perf_counter() - start
    return Throughput(scheduler.images_total - images0, seconds, scheduler.batches - batches0)


def bare_items(engine: Engine, size: int, offset: int) -> list[BatchItem]:
    """The batch the server would hand the engine for these jobs, built without the server."""
    steps, guidance, width, height = engine.defaults(JobKind.GENERATE)
    items = []
    for i in range(size):
        job = request(offset + i, f"u{i}")
        items.append(BatchItem(f"bare{i}", job, offset + i, width, height, steps, guidance))
    return items


def bare_call(engine: Engine, items: list[BatchItem]) -> float:
    start = time.perf_counter()
    engine.run_batch(items, lambda _u: None, lambda: False)
    return time.perf_counter() - start


def bare_throughput(engine: Engine, batch: int, images: int) -> Throughput:
    """The limit: back-to-back in-process `run_batch` calls of `batch` images, no RPC at all."""
    calls = max(images // batch, 3)
    items = bare_items(engine, batch, 0)
    bare_call(engine, items)  # warm-up
    seconds = sum(bare_call(engine, items) for _ in range(calls))
    return Throughput(calls * batch, seconds, calls)


async def overhead_ms(engine: Engine, repeats: int) -> list[float]:
    """Per pair: one job alone through the RPC, end to end, minus the bare pipeline call for it."""
    worker = await start_worker(WorkerSettings(port=0), engine)
    diffs = []
    try:
        async with WorkerClient(worker.url) as client:
            await one_job(client, 100_000, "warm")
            for n in range(repeats):
                start = time.perf_counter()
                await one_job(client, n, "solo")
                rpc = time.perf_counter() - start
                raw = await asyncio.to_thread(bare_call, engine, bare_items(engine, 1, n))
                diffs.append((rpc - raw) * 1000)
    finally:
        await worker.stop()
    return diffs


async def throughputs(engine: Engine, args: argparse.Namespace) -> tuple[Throughput, Throughput, Throughput]:
    """Batched RPC, unbatched RPC and the bare pipeline, interleaved round by round so that load from
    other processes on the machine weighs on all three alike."""
    batched, unbatched, limit = Throughput(0, 0.0, 0), Throughput(0, 0.0, 0), Throughput(0, 0.0, 0)
    queue_cap = args.jobs + 1
    one = await start_worker(WorkerSettings(port=0, max_batch=1, max_queue_per_user=queue_cap), engine)
    many = await start_worker(
        WorkerSettings(port=0, max_batch=args.max_batch, max_queue_per_user=queue_cap), engine
    )
    try:
        async with WorkerClient(one.url, timeout=600) as c1, WorkerClient(many.url, timeout=600) as c8:
            await asyncio.gather(*[one_job(c8, 100_000 + i, f"warm{i}") for i in range(args.max_batch)])
            await one_job(c1, 100_000, "warm")
            for r in range(args.rounds):
                b = await served_round(many, c8, args.clients, args.jobs)
                u = await served_round(one, c1, args.clients, args.jobs)
                size = max(round(b.mean_batch), 1)
                lim = await asyncio.to_thread(bare_throughput, engine, size, b.images)
                log.info("round %d: batched %.1f/s (mean batch %.2f), max_batch=1 %.1f/s, bare at %d %.1f/s",
                         r, b.images_per_s, b.mean_batch, u.images_per_s, size, lim.images_per_s)  # fmt: skip
                batched, unbatched, limit = batched + b, unbatched + u, limit + lim
    finally:
        await one.stop()
        await many.stop()
    return batched, unbatched, limit


async def run(args: argparse.Namespace) -> dict[str, object]:
    engine = await asyncio.to_thread(load_engine, args.arch, args.device, args.threads)
    batched, unbatched, limit = await throughputs(engine, args)
    diffs = await overhead_ms(engine, args.repeats)
    figures = {
        "batched_over_unbatched": round(batched.images_per_s / unbatched.images_per_s, 3),
        "rpc_over_limit": round(batched.images_per_s / limit.images_per_s, 3),
        "overhead_p50_ms": round(statistics.median(diffs), 2),
    }
    return {
        "figures": figures,
        "targets": {
            "batched_over_unbatched": ">= 1.8",
            "rpc_over_limit": ">= 0.85",
            "overhead_p50_ms": "<= 15",
        },
        "config": vars(args) | {"model": engine.model_name, "device_name": engine.device_name},
        "batched": batched.summary(),
        "unbatched": unbatched.summary(),
        "limit": limit.summary(),
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
    p.add_argument("--jobs", type=int, default=2, help="jobs per client in the throughput runs")
    p.add_argument("--max-batch", type=int, default=8)
    p.add_argument("--rounds", type=int, default=8, help="interleaved rounds of the three throughputs")
    p.add_argument("--repeats", type=int, default=30, help="solo jobs for the overhead figure")
    p.add_argument("--out", type=Path, default=None, help="results file (default bench/results/worker*.json)")
    args = p.parse_args()
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
