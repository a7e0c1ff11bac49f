"""Benchmark the whole stack at a GPU's rate, without a GPU: what the worker and bot cost per picture.

On the bundled 64x64 model the model is nearly all of a job's time; on a real GPU the balance flips and
the stack's own CPU (conversion, encoding, HTTP, scheduling, SQLite) decides the rate. This bench replaces
only the model call, by the clearly labelled stand-in of `bench/standin.py` (a calibrated wall-clock wait
per batch that releases the GIL, returning realistic pictures of the real size), and keeps everything
else real, in two processes as in production:

  the worker (a subprocess): `DiffusersEngine.from_pipeline` over the stand-in pipeline, so the engine's
      conversion, encoding and previews, the scheduler and the aiohttp RPC are the serving code;
  the bot (this process): `bot.core` services over a real SQLite file and the real `WorkerClient`;
      `clients` members each run /imagine jobs back to back (plan, reserve, submit, follow events, fetch
      the pictures, store them, commit), and every picture is written into the multipart body a Discord
      upload would carry.

Figures, over the measurement window after a warm-up (the last line is one JSON object):
  sim_limit_ips      the stand-in's own rate at `max_batch` (what a GPU would allow);
  stack_ips          pictures the bot delivered per second;  stack_over_limit = stack_ips / sim_limit_ips;
  cpu_ms_per_image   core-milliseconds per picture outside the model, by part: `encode` (time in PIL's
                     encoders, any thread of the worker), `engine` (the rest of the engine thread:
                     conversion, previews, batch set-up), `rpc` (the rest of the worker process: HTTP,
                     scheduler, events, and any encoder pool's child processes), `bot` (this process),
                     `total`. Read from process CPU time and thread CPU time; the stand-in's own CPU (copying
                     its pictures, and the pipeline's `postprocess` of them, which a real pipeline runs on the
                     GPU inside the model call) is taken out and shown as `standin_cpu_ms_per_image`;
  png_ms_per_image   CPU ms per delivered picture spent in PNG encoding in the worker (0 when the worker's
                     output format is not PNG); `encode_ms_per_image_by_format` has every format;
  rss_growth_mb      the worker's RSS (with its children) at the end minus after the warm-up; the RSS over
                     time goes in bench/results/gpu_rate-<size>-rss.csv.

`python bench/gpu_rate.py` runs 10 minutes at 512x512 with an SD-Turbo-class stand-in of 100 images/s
(issue 23's acceptance run); `--size 1024` uses the SDXL-Turbo-class table; `--minutes`, `--rate`,
`--max-batch`, `--clients`, `--count` change the run.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import io
import json
import logging
import os
import platform
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import aiohttp
import psutil

RESULTS = Path(__file__).resolve().parent / "results"
log = logging.getLogger("bench.gpu_rate")


# ---------------------------------------------------------------- the worker process


class EncodeMeter:
    """Thread CPU spent inside PIL's `Image.save` (every encoder the worker uses), by format and thread."""

    def __init__(self) -> None:
        self.by_format: dict[str, float] = {}
        self.count: dict[str, int] = {}
        self._local = threading.local()
        self._lock = threading.Lock()

    def on_this_thread(self) -> float:
        return getattr(self._local, "cpu", 0.0)

    def install(self) -> None:
        from PIL import Image

        original = Image.Image.save
        meter = self

        def save(image: Any, fp: Any, format: str | None = None, **params: Any) -> None:
            start = time.thread_time()
            try:
                original(image, fp, format, **params)
            finally:
                spent = time.thread_time() - start
                name = (format or str(getattr(fp, "name", fp)).rsplit(".", 1)[-1]).upper()
                meter._local.cpu = meter.on_this_thread() + spent
                with meter._lock:
                    meter.by_format[name] = meter.by_format.get(name, 0.0) + spent
                    meter.count[name] = meter.count.get(name, 0) + 1

        Image.Image.save = save  # type: ignore[method-assign]


def timed_engine(inner: Any, meter: EncodeMeter, pipe: Any) -> Any:
    """The real engine, with the engine thread's CPU per call noted (less the stand-in's and the encoders')."""
    from inference.engine_api import EngineWrapper

    @dataclass
    class Timed(EngineWrapper):
        engine_cpu_s: float = 0.0
        images: int = 0
        batches: list[int] = field(default_factory=list)
        # A counters snapshot asked for, taken right after the next batch ends, so that no batch straddles
        # a measurement window's edge (each call's CPU is only added when it ends).
        wanted: list[Callable[[dict[str, Any]], None]] = field(default_factory=list)

        def snapshot(self) -> dict[str, Any]:
            return {
                "cpu_s": process_cpu_s(psutil.Process()),
                "standin_cpu_s": pipe.own_cpu_s,
                "engine_cpu_s": self.engine_cpu_s,
                "encode_cpu_s": dict(meter.by_format),
                "encode_count": dict(meter.count),
                "images": self.images,
                "batches": len(self.batches),
                "mean_batch": sum(self.batches[-200:]) / max(len(self.batches[-200:]), 1),
            }

        def run_batch(
            self, items: list[Any], on_step: Callable[..., None], should_stop: Callable[[], bool]
        ) -> Any:
            cpu, enc, own = time.thread_time(), meter.on_this_thread(), pipe.own_cpu_s
            try:
                return self.inner.run_batch(items, on_step, should_stop)
            finally:
                spent = time.thread_time() - cpu
                spent -= (meter.on_this_thread() - enc) + (pipe.own_cpu_s - own)
                self.engine_cpu_s += spent
                n = sum(it.request.count for it in items)
                self.images += n
                self.batches.append(n)
                while True:  # list.pop is atomic; the event loop may clear the list meanwhile
                    try:
                        answer = self.wanted.pop()
                    except IndexError:
                        break
                    answer(self.snapshot())

    return Timed(inner)


def process_cpu_s(proc: psutil.Process) -> float:
    """CPU seconds of a process and its live children (an encoder pool's processes, if any)."""
    total = sum(proc.cpu_times()[:2])
    for child in proc.children(recursive=True):
        with contextlib.suppress(psutil.Error):
            total += sum(child.cpu_times()[:2])
    return total


def process_rss(proc: psutil.Process) -> int:
    rss = proc.memory_info().rss
    for child in proc.children(recursive=True):
        with contextlib.suppress(psutil.Error):
            rss += child.memory_info().rss
    return rss


async def serve(args: argparse.Namespace) -> None:
    """The worker subprocess: the stand-in engine behind the real server; answers `stats` on stdin."""
    import torch

    from bench.standin import standin_pipeline
    from inference.engine import DiffusersEngine
    from inference.loading import quiet_libraries
    from inference.server import bound_heap, start_worker
    from inference.settings import EngineSettings, ModelDefaults, WorkerSettings

    bound_heap()  # as the real worker does first (inference.server._run)
    torch.set_num_threads(1)
    quiet_libraries()
    meter = EncodeMeter()
    meter.install()
    calibration = calibration_for(args)
    pipe = standin_pipeline(calibration)
    defaults = ModelDefaults(steps=calibration.steps, guidance=0.0, width=args.size, height=args.size)
    settings = EngineSettings(device="cpu", dtype="float32", cpu_threads=1, defaults=defaults)
    engine = timed_engine(
        DiffusersEngine.from_pipeline(settings, pipe, model_name=f"standin:{calibration.arch}"), meter, pipe
    )
    worker_settings = WorkerSettings(
        port=0,
        max_batch=args.max_batch,
        max_queue_per_user=50,
        max_queue_per_lane=1000,
        max_pixels=max(1024 * 1024, args.size * args.size),
    )
    worker = await start_worker(worker_settings, engine)
    print(json.dumps({"url": worker.url}), flush=True)
    loop = asyncio.get_running_loop()
    reader = asyncio.StreamReader()
    await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(reader), sys.stdin)
    try:
        while line := await reader.readline():
            if line.strip() != b"stats":
                continue
            taken: asyncio.Future[dict[str, Any]] = loop.create_future()
            engine.wanted.append(lambda stats, f=taken: loop.call_soon_threadsafe(f.set_result, stats))
            try:  # at the next batch's end; when idle, now
                stats = await asyncio.wait_for(asyncio.shield(taken), 120)
            except TimeoutError:
                engine.wanted.clear()
                stats = engine.snapshot()
            print(json.dumps(stats), flush=True)
    finally:
        await worker.stop()


# ---------------------------------------------------------------- the bot side (this process)


class Worker:
    """The worker subprocess and its stats pipe."""

    def __init__(self, proc: asyncio.subprocess.Process, url: str) -> None:
        self.proc, self.url = proc, url
        self.ps = psutil.Process(proc.pid)

    @classmethod
    async def start(cls, args: argparse.Namespace) -> Worker:
        argv = [
            sys.executable,
            __file__,
            "--serve",
            "--size",
            str(args.size),
            "--max-batch",
            str(args.max_batch),
        ]
        if args.rate is not None:
            argv += ["--rate", str(args.rate)]
        proc = await asyncio.create_subprocess_exec(
            *argv, stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE
        )
        assert proc.stdout is not None
        line = await proc.stdout.readline()
        if not line:
            raise RuntimeError("the worker subprocess exited before serving")
        return cls(proc, json.loads(line)["url"])

    async def stats(self) -> dict[str, Any]:
        assert self.proc.stdin is not None and self.proc.stdout is not None
        self.proc.stdin.write(b"stats\n")
        await self.proc.stdin.drain()
        return dict(json.loads(await self.proc.stdout.readline()))

    async def stop(self) -> None:
        if self.proc.stdin is not None:
            self.proc.stdin.close()
        try:
            await asyncio.wait_for(self.proc.wait(), 60)
        except TimeoutError:
            self.proc.kill()
            await self.proc.wait()


class Upload:
    """What a Discord upload carries: the picture in a multipart body, written out (and dropped)."""

    class _Sink:
        def __init__(self) -> None:
            self.size = 0

        async def write(self, chunk: bytes) -> None:
            self.size += len(chunk)

    @staticmethod
    async def body_bytes(png: bytes, name: str) -> int:
        form = aiohttp.FormData()
        form.add_field("payload_json", json.dumps({"attachments": [{"id": 0, "filename": name}]}))
        form.add_field("files[0]", io.BytesIO(png), filename=name, content_type="image/png")
        sink = Upload._Sink()
        await form().write(sink)  # type: ignore[arg-type]
        return sink.size


@dataclass(frozen=True)
class Mark:
    """Where the counters stood at one moment: the worker's, this process's CPU, pictures delivered, RSS."""

    worker: dict[str, Any]
    bot_cpu_s: float
    at: float
    delivered: int
    rss: int

    @classmethod
    async def take(cls, worker: Worker, out: Delivered) -> Mark:
        stats = await worker.stats()
        bot = sum(psutil.Process().cpu_times()[:2])
        return cls(stats, bot, time.perf_counter(), len(out.times), process_rss(worker.ps))


@dataclass
class Delivered:
    times: list[float] = field(default_factory=list)  # one entry per delivered picture
    upload_bytes: int = 0
    failed: int = 0
    picture: dict[str, int] = field(default_factory=dict)  # the first delivered one: what it was


async def member(
    services: Any, user: int, args: argparse.Namespace, out: Delivered, stop: asyncio.Event
) -> None:
    from bot.core.plans import ImagineOptions, Requester
    from bot.core.records import JobState, extension

    requester = Requester(user_id=10_000 + user, guild_id=1, channel_id=1, name=f"member{user}")
    n = 0
    while not stop.is_set():
        n += 1
        guild = await services.guilds.settings(requester.guild_id)
        options = ImagineOptions(prompt=f"a red circle over a blue sea, study {user}.{n}", count=args.count)
        plan = services.jobs.planner.plan_imagine(requester, options, guild)
        ticket = await services.jobs.start(requester, plan)
        outcome = await services.jobs.follow(ticket.job)
        if outcome.state is not JobState.SUCCEEDED:
            out.failed += 1
            log.warning("job %s ended %s", ticket.job.job_id, outcome.state)
            continue
        for gen in outcome.generations:
            out.picture = out.picture or {"width": gen.width, "height": gen.height, "bytes": len(gen.image)}
            body = await Upload.body_bytes(gen.image, f"brushfire-{gen.generation_id}.{extension(gen.image)}")
            out.upload_bytes += body  # added after the await: `x += await f()` would lose other members' adds
            out.times.append(time.perf_counter())
        await services.jobs.mark_delivered(ticket.job.job_id)


def bot_settings(tmp: Path, args: argparse.Namespace) -> Any:
    from bot.core.settings import Settings
    from inference.settings import EngineSettings, ModelDefaults
    from storage.db import DatabaseSettings

    calibration = calibration_for(args)
    defaults = ModelDefaults(steps=calibration.steps, guidance=0.0, width=args.size, height=args.size)
    return Settings(
        database=DatabaseSettings(path=tmp / "bench.sqlite3"),
        engine=EngineSettings(device="cpu", defaults=defaults),
        quota={"default_limit": 1_000_000},
        limits={"job_timeout_s": 600, "max_images_per_job": max(4, args.count)},
        discord={"sync_state_file": tmp / "sync"},
    )


def calibration_for(args: argparse.Namespace) -> Any:
    from bench.standin import ARCH_FOR_SIZE, CALIBRATION

    base = CALIBRATION[ARCH_FOR_SIZE[args.size]]
    rate = args.rate if args.rate is not None else (100.0 if args.size == 512 else None)
    return base.scaled_to(rate, args.max_batch) if rate else base


async def run(args: argparse.Namespace) -> dict[str, Any]:
    from bot.core.services import open_services

    calibration = calibration_for(args)
    sim_limit = calibration.images_per_s(args.max_batch)
    worker = await Worker.start(args)
    rss: list[tuple[float, int]] = []
    out = Delivered()
    stop = asyncio.Event()
    try:
        with tempfile.TemporaryDirectory(prefix="gpu-rate-") as tmp_dir:
            settings = bot_settings(Path(tmp_dir), args)
            async with open_services(settings, worker.url) as services:
                started = time.perf_counter()
                members = [
                    asyncio.create_task(member(services, u, args, out, stop)) for u in range(args.clients)
                ]

                async def sample_until(deadline: float) -> None:
                    while time.perf_counter() < deadline:
                        rss.append((time.perf_counter() - started, process_rss(worker.ps)))
                        for task in members:
                            if task.done() and task.exception() is not None:
                                raise task.exception()  # type: ignore[misc]
                        await asyncio.sleep(min(args.sample_s, max(deadline - time.perf_counter(), 0.01)))

                await sample_until(started + args.warmup_s)
                m0 = await Mark.take(worker, out)
                await sample_until(m0.at + args.minutes * 60)
                m1 = await Mark.take(worker, out)
                stop.set()
                await asyncio.wait(members, timeout=120)
    finally:
        await worker.stop()
    w0, w1 = m0.worker, m1.worker
    images = m1.delivered - m0.delivered
    if images <= 0:
        raise RuntimeError("no picture was delivered in the measurement window")
    seconds = m1.at - m0.at
    ms = 1000.0 / images
    encode_by_format = {
        k: round((v - w0["encode_cpu_s"].get(k, 0.0)) * ms, 2) for k, v in w1["encode_cpu_s"].items()
    }
    encode = sum(w1["encode_cpu_s"].values()) - sum(w0["encode_cpu_s"].values())
    standin = w1["standin_cpu_s"] - w0["standin_cpu_s"]
    worker_cpu = (w1["cpu_s"] - w0["cpu_s"]) - standin
    engine = w1["engine_cpu_s"] - w0["engine_cpu_s"]
    bot = m1.bot_cpu_s - m0.bot_cpu_s
    parts = {
        "encode": round(encode * ms, 2),
        "engine": round(engine * ms, 2),
        "rpc": round((worker_cpu - encode - engine) * ms, 2),
        "bot": round(bot * ms, 2),
        "total": round((worker_cpu + bot) * ms, 2),
    }
    stack_ips = images / seconds
    # Shown, never counted: the stand-in's own CPU (copying its pictures and the pipeline's post-processing,
    # which a GPU runs on the device inside the model call).
    standin_ms = round(standin * ms, 2)
    figures = {
        "sim_limit_ips": round(sim_limit, 2),
        "stack_ips": round(stack_ips, 2),
        "stack_over_limit": round(stack_ips / sim_limit, 3),
        "cpu_ms_per_image": parts,
        "standin_cpu_ms_per_image": standin_ms,
        "png_ms_per_image": encode_by_format.get("PNG", 0.0),
        "rss_growth_mb": round((m1.rss - m0.rss) / 2**20, 1),
    }
    return {
        "figures": figures,
        "targets": {
            "stack_over_limit": ">= 0.90 (512, default output format)",
            "cpu_ms_per_image.total": "<= 12 at 512",
            "rss_growth_mb": "<= 64 over 10 minutes",
        },
        "stand_in": {
            "arch": calibration.arch,
            "size": calibration.size,
            "steps": calibration.steps,
            "batch_ms": {
                b: round(calibration.batch_s(b) * 1000, 1) for b in (1, 4, 8, 16) if b <= args.max_batch
            },
            "source": calibration.source,
            "label": "bench stand-in for the model call (bench/standin.py), not a measurement of a GPU",
        },
        "config": {k: v for k, v in vars(args).items() if k != "serve"},
        "window": {
            "seconds": round(seconds, 1),
            "images": images,
            "mean_batch": round(w1["mean_batch"], 2),
            "failed_jobs": out.failed,
            "first_picture": out.picture,
            "upload_bytes_per_image": round(out.upload_bytes / max(len(out.times), 1)),
            "encode_ms_per_image_by_format": encode_by_format,
            "encodes_by_format": {k: v - w0["encode_count"].get(k, 0) for k, v in w1["encode_count"].items()},
            "worker_rss_mb": {
                "start": round(m0.rss / 2**20, 1),
                "end": round(m1.rss / 2**20, 1),
                "max": round(max(r for _, r in rss) / 2**20, 1),
            },
        },
        "machine": {
            "cpus": os.cpu_count(),
            "python": platform.python_version(),
            "load_avg_1m_end": round(os.getloadavg()[0], 2),
        },
        "rss_series": rss,
    }


def write_results(result: dict[str, Any], args: argparse.Namespace) -> Path:
    RESULTS.mkdir(parents=True, exist_ok=True)
    out = args.out or RESULTS / f"gpu_rate-{args.size}.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    series = result.pop("rss_series")
    csv = out.with_name(out.stem + "-rss.csv")
    csv.write_text("seconds,worker_rss_mb\n" + "".join(f"{t:.1f},{r / 2**20:.1f}\n" for t, r in series))
    result["rss_csv"] = (
        str(csv.relative_to(RESULTS.parent.parent)) if csv.is_relative_to(RESULTS.parent.parent) else str(csv)
    )
    out.write_text(json.dumps(result, indent=2, default=str) + "\n")
    return out


def parse(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--size", type=int, default=512, choices=[512, 1024])
    p.add_argument("--minutes", type=float, default=10.0, help="measurement window after the warm-up")
    p.add_argument("--warmup-s", type=float, default=15.0)
    p.add_argument(
        "--rate",
        type=float,
        default=None,
        help="stand-in images/s at --max-batch (default: 100 at 512, the SDXL-Turbo table at 1024)",
    )
    p.add_argument("--max-batch", type=int, default=16)
    p.add_argument("--clients", type=int, default=48, help="members running jobs back to back")
    p.add_argument("--count", type=int, default=1, help="pictures per job")
    p.add_argument("--sample-s", type=float, default=2.0, help="how often to note the worker's RSS")
    p.add_argument("--out", type=Path, default=None)
    p.add_argument("--serve", action="store_true", help=argparse.SUPPRESS)  # internal: the worker process
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> None:
    args = parse(argv)
    logging.basicConfig(level=logging.WARNING, format="%(asctime)s %(name)s: %(message)s")
    if args.serve:
        asyncio.run(serve(args))
        return
    import torch

    torch.set_num_threads(1)
    result = asyncio.run(run(args))
    out = write_results(result, args)
    print(json.dumps(result, indent=2, default=str), file=sys.stderr)
    print(f"results in {out}", file=sys.stderr)
    print(json.dumps(result["figures"]))


if __name__ == "__main__":
    main()
