"""Hostile clients and crashes: at least 1,000 generated hostile requests against a live worker (malformed,
nested, oversized, invisible, slow, and whatever the fuzz finds), a flood of maximum-size edit uploads,
then a crash matrix (kill -9 of the bot, the worker, the command line and the combined `run.py` at each
phase of a job, then a restart). Writes bench/results/hostile.json and ends with one JSON line.

python bench/hostile.py            the full run (about 15-25 minutes on 2 cores)
python bench/hostile.py --quick    a short version for CI: fewer requests, one phase per process
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import os
import platform
import random
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import aiohttp

from tests.hostile.crashes import PHASES, PROCESSES, CrashMatrix
from tests.hostile.fuzz import fuzz
from tests.hostile.requests import HostileRequest, hostile_requests, max_size_png, send_raw
from tests.hostile.tools import (
    WorkerProcess,
    closed_within,
    edit_form,
    free_port,
    half_sent_requests,
    write_config,
)

RESULTS = Path(__file__).resolve().parent / "results" / "hostile.json"
QUICK_CASES = [("cli", "delivery"), ("worker", "images_ready"), ("bot", "queued"), ("all", "running")]
log = logging.getLogger("bench.hostile")


async def hostile_phase(worker: WorkerProcess, count: int, fuzz_examples: int, seed: int) -> dict[str, Any]:
    """Generated hostile requests, then the fuzz; counts answers by status."""
    rng = random.Random(seed)
    statuses: Counter[str] = Counter()
    unclear: list[str] = []
    sem = asyncio.Semaphore(16)  # 16 clients at once, so the few that stall do not serialise the rest

    async def one(request: HostileRequest) -> None:
        async with sem:
            status, body = await send_raw("127.0.0.1", worker.port, request.raw, request.wait_s)
        statuses[str(status)] += 1
        if status >= 500 or (status >= 400 and request.expects_json and not _is_error_body(body)):
            unclear.append(f"{request.kind}: {status} {body[:120]!r}")

    await asyncio.gather(*(one(r) for r in hostile_requests(rng, count)))
    fuzzed = await asyncio.to_thread(fuzz, worker.url, fuzz_examples)
    for status, n in fuzzed.statuses.items():
        statuses[str(status)] += n
    unclear += fuzzed.failures
    slow_heads = await half_sent_requests("127.0.0.1", worker.port, 300)
    slow_bodies = await half_sent_requests("127.0.0.1", worker.port, 50, body=True)
    closed = await closed_within(slow_heads, 25.0) + await closed_within(slow_bodies, 40.0)
    return {
        "requests": count + sum(fuzzed.statuses.values()) + 350,
        "statuses": dict(sorted(statuses.items())),
        "server_errors": sum(n for s, n in statuses.items() if s.isdigit() and int(s) >= 500),
        "unclear_answers": unclear[:20],
        "slow_connections_closed": closed,
        "slow_connections": 350,
    }


def _is_error_body(body: bytes) -> bool:
    try:
        data = json.loads(body)
    except ValueError:
        return False
    return isinstance(data, dict) and bool(data.get("code")) and bool(data.get("message"))


async def memory_phase(worker: WorkerProcess, jobs: int, max_image_bytes: int) -> dict[str, Any]:
    """`jobs` edit submissions with maximum-size inputs, 8 at a time; the worker's RSS before and after."""
    image = max_size_png(max_image_bytes)
    statuses: Counter[str] = Counter()
    peak = before = worker.rss_mb()
    accepted: list[str] = []
    sem = asyncio.Semaphore(8)
    async with aiohttp.ClientSession() as session:

        async def one(i: int) -> None:
            nonlocal peak
            job = {"idempotency_key": f"flood-{i}", "user": f"flood{i % 50}", "kind": "edit",
                   "prompt": "make it red", "width": 64, "height": 64, "steps": 150}  # fmt: skip
            async with sem:
                try:
                    form = edit_form(job, image)
                    async with session.post(f"{worker.url}/v1/jobs", data=form, expect100=True) as resp:
                        statuses[str(resp.status)] += 1
                        if resp.status == 201:
                            accepted.append((await resp.json())["id"])
                except aiohttp.ClientError as exc:
                    statuses[type(exc).__name__] += 1
                peak = max(peak, worker.rss_mb())

        await asyncio.gather(*(one(i) for i in range(jobs)))
        after = worker.rss_mb()
        for job_id in accepted:
            async with session.delete(f"{worker.url}/v1/jobs/{job_id}"):
                pass
    return {
        "edit_jobs": jobs,
        "input_bytes": len(image),
        "statuses": dict(statuses),
        "rss_before_mb": round(before, 1),
        "rss_after_mb": round(after, 1),
        "rss_peak_mb": round(peak, 1),
        "rss_growth_mb": round(after - before, 1),
    }


async def run(quick: bool, seed: int, only: list[tuple[str, str]] | None = None) -> dict[str, Any]:
    with tempfile.TemporaryDirectory(prefix="hostile-") as tmp_dir:
        tmp = Path(tmp_dir)
        port = free_port()
        worker_keys = {"keepalive_timeout_s": 15.0, "body_timeout_s": 30.0} if not quick else {
            "keepalive_timeout_s": 3.0, "body_timeout_s": 5.0}  # fmt: skip
        config = write_config(tmp / "worker.toml", port=port, database=tmp / "w.sqlite3", worker=worker_keys)
        worker = await WorkerProcess(config, port).start()
        try:
            started = time.monotonic()
            hostile = await hostile_phase(worker, 400 if quick else 1200, 40 if quick else 400, seed)
            memory = await memory_phase(worker, 100 if quick else 1000, 10 * 1024 * 1024)
            alive = worker.alive() and await _healthy(worker)
            hostile_s = time.monotonic() - started
        finally:
            worker.stop()
        crashes = 0 if alive else 1
        # Quick: one phase per process, a different one each, so the short run still touches every phase
        # (tests/bot/test_cli_crash.py adds the CLI at commit).
        cases = only or (QUICK_CASES if quick else [(p, phase) for p in PROCESSES for phase in PHASES])
        started = time.monotonic()
        matrix = await CrashMatrix(tmp / "crash").run(cases)
        matrix_s = time.monotonic() - started
    summary = {
        "requests": hostile["requests"] + memory["edit_jobs"],
        "server_errors": hostile["server_errors"] + len(hostile["unclear_answers"]),
        "crashes": crashes,
        "rss_growth_mb": memory["rss_growth_mb"],
        "orphans": matrix["orphans"],
        "unsettled": matrix["unsettled"],
        "double_charges": matrix["double_charges"],
    }
    detail = {
        "summary": summary,
        "quick": quick,
        "crash_cases": [f"{p}:{phase}" for p, phase in cases],
        "hostile": hostile,
        "memory": memory,
        "crash_matrix": matrix,
        "seconds": {"hostile_and_memory": round(hostile_s, 1), "crash_matrix": round(matrix_s, 1)},
        "machine": {"cpus": os.cpu_count(), "python": platform.python_version()},
    }
    return detail


async def _healthy(worker: WorkerProcess) -> bool:
    from tests.hostile.tools import healthy

    return await healthy(worker.url)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="the short version CI runs")
    parser.add_argument("--seed", type=int, default=15)
    parser.add_argument(
        "--cases",
        help="crash cases to run instead of all (or the quick set), as process:phase,… e.g. bot:commit,all:queued",
    )
    parser.add_argument("--output", type=Path, default=RESULTS)
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING)
    only = [tuple(c.split(":", 1)) for c in args.cases.split(",")] if args.cases else None
    detail = asyncio.run(run(args.quick, args.seed, only))  # type: ignore[arg-type]
    args.output.parent.mkdir(parents=True, exist_ok=True)
    args.output.write_text(json.dumps(detail, indent=2) + "\n", encoding="utf-8")
    print(json.dumps(detail["summary"]))
    return 0


if __name__ == "__main__":
    sys.exit(main())
