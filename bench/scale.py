"""Benchmark the Ray Serve path: throughput with 1 and 2 model replicas, per-job overhead against standalone.

Measured side by side in one run, every job through the real RPC with the bot's `WorkerClient` (submit,
NDJSON events until done, PNG download):

  (a) images/s with 1 replica and with 2 replicas of the model behind the Ray ingress (the app is
      redeployed with the other count), `clients` concurrent clients each submitting one job after
      another; `two_over_one` is their ratio. On a 2-core machine expect little gain: the two replicas
      share the same two cores with the ingress and the clients.
  (b) ray_overhead_p50_ms: one job alone end to end through the Ray ingress minus the same job through
      the standalone worker (same engine code, same settings), median over interleaved pairs.

`python bench/scale.py` runs the tiny model at 64x64 on the CPU (one torch thread per engine). The last
line of output is one JSON object with the figures.
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
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from inference.client import WorkerClient
from inference.protocol import JobRequest
from inference.ray_app import RayScaleSettings, connect_cluster, deploy
from inference.server import start_worker
from inference.settings import EngineSettings, ModelDefaults, WorkerSettings

log = logging.getLogger("bench.scale")

RESULTS = Path(__file__).resolve().parent / "results"
TINY_DEFAULTS = ModelDefaults(steps=4, guidance=0.0, width=64, height=64)
_keys = itertools.count()


def request(user: str) -> JobRequest:
    return JobRequest(idempotency_key=f"b{next(_keys)}", user=user, prompt="a red circle", seed=7)


async def one_job(client: WorkerClient, user: str) -> float:
    """Submit, follow the events to the end, download the image; return the seconds it took."""
    started = time.perf_counter()
    info = await client.submit(request(user))
    done = await client.wait(info.id)
    if done.status != "succeeded":
        raise RuntimeError(f"bench job failed: {done.error}")
    await client.image(info.id, 0)
    return time.perf_counter() - started


async def throughput(url: str, clients: int, warmup_s: float, window_s: float) -> float:
    """Images per second finished inside the window, with `clients` clients busy throughout."""
    finished: list[float] = []
    start = time.perf_counter()
    end = start + warmup_s + window_s

    async def client_loop(n: int) -> None:
        async with WorkerClient(url, timeout=120) as client:
            while time.perf_counter() < end:
                await one_job(client, f"user{n}")
                finished.append(time.perf_counter())

    await asyncio.gather(*[client_loop(n) for n in range(clients)])
    inside = [t for t in finished if start + warmup_s <= t <= end]
    return len(inside) / window_s


async def overhead_ms(ray_url: str, local_url: str, repeats: int) -> list[float]:
    """Ray minus standalone, one job alone each, interleaved pair by pair."""
    diffs = []
    async with WorkerClient(ray_url, timeout=60) as ray_client, WorkerClient(local_url, timeout=60) as local:
        for _ in range(3):  # warm both paths (connections, first pipeline calls)
            await one_job(ray_client, "warm")
            await one_job(local, "warm")
        for _ in range(repeats):
            diffs.append((await one_job(ray_client, "solo") - await one_job(local, "solo")) * 1000)
    return diffs


def engine_settings(model_dir: Path) -> EngineSettings:
    return EngineSettings(model=str(model_dir), device="cpu", cpu_threads=1, defaults=TINY_DEFAULTS)


async def measure(args: argparse.Namespace, model_dir: Path) -> dict[str, object]:
    from inference.engine import DiffusersEngine

    settings = engine_settings(model_dir)
    worker = WorkerSettings(port=0, max_batch=args.max_batch, progress_interval_s=0.2)
    local = await start_worker(worker, await asyncio.to_thread(DiffusersEngine.load, settings))
    rates: dict[int, float] = {}
    try:
        for replicas in (1, 2):
            scale = RayScaleSettings.fixed(replicas, num_gpus=0, num_cpus=args.cpus / 2)
            url = await asyncio.to_thread(deploy, settings, worker, scale)
            await throughput(url, args.clients, 1.0, 1.0)  # warm the replicas
            rates[replicas] = await throughput(url, args.clients, args.warmup_s, args.window_s)
            log.info("%d replica(s): %.2f images/s", replicas, rates[replicas])
        diffs = await overhead_ms(url, local.url, args.repeats)
        local_rate = await throughput(local.url, args.clients, args.warmup_s, args.window_s)
    finally:
        await local.stop()
    return {
        "figures": {
            "ray_overhead_p50_ms": round(statistics.median(diffs), 2),
            "two_over_one": round(rates[2] / rates[1], 3),
        },
        "targets": {"ray_overhead_p50_ms": "<= 25", "two_over_one": "> 1 with a core or GPU per replica"},
        "detail": {
            "images_per_s_1_replica": round(rates[1], 2),
            "images_per_s_2_replicas": round(rates[2], 2),
            "images_per_s_standalone": round(local_rate, 2),
            "ray_overhead_p90_ms": round(statistics.quantiles(diffs, n=10)[-1], 2),
        },
    }


def parse_args() -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--clients", type=int, default=8)
    p.add_argument("--max-batch", type=int, default=8)
    p.add_argument("--warmup-s", type=float, default=1.0)
    p.add_argument("--window-s", type=float, default=6.0)
    p.add_argument("--repeats", type=int, default=40)
    p.add_argument("--cpus", type=int, default=2, help="CPUs of the local Ray cluster")
    p.add_argument("--out", type=Path, default=RESULTS / "scale.json")
    return p.parse_args()


def main() -> None:
    args = parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    from ray import serve

    from tools.tiny.build import build

    with tempfile.TemporaryDirectory(prefix="bench-scale-") as tmp:
        model_dir, _ = build(Path(tmp))
        connect_cluster(None, num_cpus=args.cpus)
        load_before = os.getloadavg()[0]
        try:
            result = asyncio.run(measure(args, model_dir))
        finally:
            serve.shutdown()
    result["config"] = {k: str(v) if isinstance(v, Path) else v for k, v in vars(args).items()}
    result["machine"] = {
        "cpus": os.cpu_count(),
        "python": platform.python_version(),
        "load_avg_1m_before_after": [round(load_before, 2), round(os.getloadavg()[0], 2)],
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps(result, indent=2))
    print(json.dumps(result["figures"]))


if __name__ == "__main__":
    main()
