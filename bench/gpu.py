"""The prepared device check: raw batched pipeline against the whole stack, on one GPU, nothing downloaded.

For each architecture (`sd-turbo`, `sdxl-turbo`: random weights, the published shapes, built on the GPU by
`inference.archs.build`), eager and then compiled as a deployment would set it (the engine's `compile`
with `batch_buckets` = the measured batch sizes, static shapes, every bucket warmed up at load: the row's
`warm_up_s`), and for sd-turbo with CUDA graphs too (`compile_mode = "reduce-overhead"`), and for each
batch size (1, 8, 16):

  raw_ips        images/s of back-to-back bare pipeline calls of that batch (decoded, left on the device);
  stack_ips      images/s through the whole worker stack (engine conversion and encoding, scheduler, HTTP
                 RPC, PNG download) with `max_batch` = that batch and 2 x batch clients running jobs back
                 to back in a separate process; stack_over_raw is their ratio;
  gpu_busy       the share of the window the GPU spent inside pipeline calls, from CUDA events recorded
                 when the text encoder starts and the VAE decoder ends (raw and stack);
  p50_ms/p99_ms  job latency (submit to picture downloaded) under an offered load of open-loop Poisson
                 arrivals at `--load` (default 0.7) of the measured stack rate.

(compiled rows: raw figures only, the stack's cost around the model being the eager rows'), and, eager at
the largest batch, `tiny_decoder`: the raw rate with a TAESD-shaped AutoencoderTiny (random weights)
decoding in place of the VAE, as the opt-in `final_decoder` setting would (`over_own_vae`); and
`switches`, each on and off on an eager engine before any compile: `prompt_cache` (a one-image sd-turbo
re-roll, ms uncached and cached) and `vae_tiling` (one sdxl-turbo picture at 1024², decoded whole and in
512-pixel tiles: ms and peak device memory).

The plan runs in order of value (eager rows, switches, sd-turbo compiled, sd-turbo CUDA graphs,
sdxl-turbo compiled), so what the budget cuts is the least needed.

Everything runs against a time budget (`--budget-s`, default 170 s: no measurement starts after it, which
leaves room for a compile that starts late within a 4-minute device check); whatever does not fit is
listed under `skipped`, never guessed. The last line of output is one
JSON object. `--smoke` runs the same code end to end on the CPU in seconds: microscopic pipelines of the
same classes at 64x64, short windows, compile left out (inductor on a CPU takes minutes) -- it proves the
script works, its figures mean nothing. No GPU figure from this script has been measured yet.
"""

from __future__ import annotations

import argparse
import asyncio
import itertools
import json
import logging
import os
import random
import statistics
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

RESULTS = Path(__file__).resolve().parent / "results"
log = logging.getLogger("bench.gpu")


# ---------------------------------------------------------------- timing on the device


@dataclass
class BusyClock:
    """Model time of pipeline calls, from the text encoder's start to the VAE decoder's end.

    On CUDA these are events on the device's timeline (read once the window is over); on the CPU, wall time.
    """

    cuda: bool
    spans: list[tuple[Any, Any]] = field(default_factory=list)
    _open: Any = None

    def attach(self, pipe: Any) -> None:
        pipe.text_encoder.register_forward_pre_hook(lambda *_: self._start())
        pipe.vae.decoder.register_forward_hook(lambda *_: self._end())

    def _mark(self) -> Any:
        if not self.cuda:
            return time.perf_counter()
        import torch

        event = torch.cuda.Event(enable_timing=True)
        event.record()
        return event

    def _start(self) -> None:
        if self._open is None:  # SDXL runs two text encoders: the first one opens the span
            self._open = self._mark()

    def _end(self) -> None:
        if self._open is not None:
            self.spans.append((self._open, self._mark()))
            self._open = None

    def reset(self) -> None:
        self.spans.clear()
        self._open = None

    def busy_s(self) -> float:
        if not self.cuda:
            return sum(end - start for start, end in self.spans)
        import torch

        torch.cuda.synchronize()
        return sum(start.elapsed_time(end) for start, end in self.spans) / 1000.0


def synchronize(cuda: bool) -> None:
    if cuda:
        import torch

        torch.cuda.synchronize()


# ---------------------------------------------------------------- building


def build(name: str, smoke: bool, device: str) -> tuple[Any, Any]:
    """The pipeline and its native defaults: the published architecture, or a microscopic one for --smoke."""
    from inference.archs import get_arch
    from inference.loading import resolve_dtype
    from inference.settings import ModelDefaults

    if smoke:
        import torch

        torch.manual_seed(0)
        if name == "sd-turbo":
            from tools.tiny.build import build_generate

            pipe = build_generate()
        else:
            from tests.inference.family_models import build_pipeline

            pipe = build_pipeline("sdxl-turbo")
        return pipe, ModelDefaults(steps=1, guidance=0.0, width=64, height=64)
    import torch

    from inference.archs.build import build_random_pipeline

    dtype = resolve_dtype("auto", torch.device(device))
    return build_random_pipeline(name, device, dtype), get_arch(name).defaults


# The compile variants: eager, then as a deployment would set it (static shapes padded to the measured
# batch sizes as buckets, warmed up at load), then CUDA graphs on top.
VARIANTS = {
    "eager": {},
    "compile": {"compile": True},
    "reduce-overhead": {"compile": True, "compile_mode": "reduce-overhead"},
}


def engine_for(
    pipe: Any, defaults: Any, name: str, device: str, variant: str, buckets: list[int]
) -> tuple[Any, float]:
    """The engine over `pipe` and the seconds it took; a compiled variant compiles the UNet in place and
    warms up every bucket at the default size before it returns."""
    from inference.engine import DiffusersEngine
    from inference.settings import EngineSettings

    switches: dict[str, Any] = dict(VARIANTS[variant])
    if switches:
        switches["batch_buckets"] = buckets
    settings = EngineSettings(device=device, defaults=defaults, cpu_threads=None, **switches)
    started = time.perf_counter()
    engine = DiffusersEngine.from_pipeline(settings, pipe, model_name=f"random:{name}")
    return engine, time.perf_counter() - started


# ---------------------------------------------------------------- the three measurements


def raw(pipe: Any, defaults: Any, batch: int, window_s: float, clock: BusyClock) -> dict[str, float]:
    """Back-to-back bare pipeline calls of `batch` images, the pictures left on the device."""
    kwargs = {
        "prompt": [f"a lighthouse at dusk {i}" for i in range(batch)],
        "num_inference_steps": defaults.steps,
        "guidance_scale": defaults.guidance,
        "width": defaults.width,
        "height": defaults.height,
        "output_type": "pt",
    }
    for _ in range(2):  # warm-up (and, compiled, the graph for this batch size)
        pipe(**kwargs)
    synchronize(clock.cuda)
    clock.reset()
    calls, start = 0, time.perf_counter()
    while calls < 3 or time.perf_counter() - start < window_s:
        pipe(**kwargs)
        calls += 1
    synchronize(clock.cuda)
    elapsed = time.perf_counter() - start
    return {"raw_ips": batch * calls / elapsed, "gpu_busy_raw": clock.busy_s() / elapsed}


async def drive(url: str, mode: str, clients: int, rate: float, seconds: float) -> dict[str, Any]:
    """The client side, in its own process: closed loop (`clients` back to back) or open loop (Poisson
    arrivals at `rate` jobs/s). Every job: submit, events until done, the picture downloaded."""
    from inference.client import WorkerClient
    from inference.protocol import JobRequest

    keys = itertools.count()
    latencies: list[float] = []

    async def job(client: WorkerClient) -> None:
        n = next(keys)
        started = time.perf_counter()
        request = JobRequest(
            idempotency_key=f"gpu-{os.getpid()}-{n}", user=f"u{n % 64}", prompt=f"a lighthouse {n}", seed=n
        )
        info = await client.submit(request)
        final = await client.wait(info.id)
        if final.status != "succeeded":
            raise RuntimeError(f"job {info.id} ended {final.status}: {final.error}")
        await client.image(info.id, 0)
        latencies.append(time.perf_counter() - started)

    async with WorkerClient(url, timeout=600) as client:
        print("ready", flush=True)  # imported and connected: the parent starts its clock on "go"
        await asyncio.to_thread(sys.stdin.readline)
        start = time.perf_counter()
        if mode == "closed":

            async def member() -> None:
                while time.perf_counter() - start < seconds:
                    await job(client)

            await asyncio.gather(*(member() for _ in range(clients)))
        else:
            rng = random.Random(23)
            tasks = []
            next_at = start
            while next_at - start < seconds:
                await asyncio.sleep(max(0.0, next_at - time.perf_counter()))
                tasks.append(asyncio.create_task(job(client)))
                next_at += rng.expovariate(rate)
            await asyncio.gather(*tasks)
        elapsed = time.perf_counter() - start
    return {"images": len(latencies), "seconds": elapsed, "latencies": latencies}


async def through_driver(
    url: str, mode: str, clients: int, rate: float, seconds: float, clock: BusyClock | None = None
) -> dict[str, Any]:
    """Run a client driver process; the window (and `clock`) starts once it has imported and connected."""
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        __file__,
        "--drive",
        url,
        "--mode",
        mode,
        "--clients",
        str(clients),
        "--rate",
        str(rate),
        "--seconds",
        str(seconds),
        stdin=asyncio.subprocess.PIPE,
        stdout=asyncio.subprocess.PIPE,
    )
    assert proc.stdin is not None and proc.stdout is not None
    await proc.stdout.readline()  # ready
    if clock is not None:
        synchronize(clock.cuda)
        clock.reset()
    started = time.perf_counter()
    out, _ = await proc.communicate(b"go\n")
    if proc.returncode != 0:
        raise RuntimeError(f"the client driver failed ({proc.returncode})")
    result = dict(json.loads(out.decode().strip().splitlines()[-1]))
    if clock is not None:
        result["busy"] = clock.busy_s() / (time.perf_counter() - started)
    return result


async def stack(engine: Any, batch: int, args: argparse.Namespace, clock: BusyClock) -> dict[str, float]:
    """The whole worker stack at `max_batch=batch`: saturated throughput, then latency under a load."""
    from inference.server import start_worker
    from inference.settings import WorkerSettings

    worker = await start_worker(WorkerSettings(port=0, max_batch=batch, max_queue_per_user=50), engine)
    try:
        if args.warmup_s > 0:
            await through_driver(worker.url, "closed", 2 * batch, 0, args.warmup_s)
        closed = await through_driver(worker.url, "closed", 2 * batch, 0, args.window_s, clock)
        busy = closed["busy"]
        stack_ips = closed["images"] / closed["seconds"]
        offered = args.load * stack_ips
        opened = await through_driver(worker.url, "open", 0, offered, args.window_s)
    finally:
        await worker.stop()
    lat = sorted(opened["latencies"])
    return {
        "stack_ips": stack_ips,
        "gpu_busy_stack": busy,
        "offered_ips": offered,
        "p50_ms": statistics.median(lat) * 1000,
        "p99_ms": lat[min(len(lat) - 1, round(0.99 * (len(lat) - 1)))] * 1000,
        "latency_jobs": len(lat),
    }


def with_tiny_decoder(
    pipe: Any, defaults: Any, batch: int, window_s: float, clock: BusyClock
) -> dict[str, Any]:
    """Raw rate with a TAESD-shaped AutoencoderTiny (random weights) decoding in place of the VAE: what the
    opt-in `final_decoder` would gain. The model's own VAE is put back afterwards."""
    from diffusers import AutoencoderTiny

    vae = pipe.vae
    tiny = AutoencoderTiny(latent_channels=vae.config.latent_channels).to(vae.device, vae.dtype).eval()
    tiny.decoder.register_forward_hook(lambda *_: clock._end())
    pipe.register_modules(vae=tiny)
    try:
        figures = raw(pipe, defaults, batch, window_s, clock)
    finally:
        pipe.register_modules(vae=vae)
    return {"decoder": "taesd-shaped AutoencoderTiny", "batch": batch} | figures


def prompt_cache(engine: Any, defaults: Any, reps: int) -> dict[str, Any]:
    """A one-image re-roll (same prompt, new seed) through the engine, the prompt-embedding cache off and
    on, alternated: median ms each way (the first round fills the cache and is not timed)."""
    from inference.acceleration import PromptCache
    from tests.inference.items import make_item

    caches = {"off": PromptCache(0, 0), "on": PromptCache(64, 64 * 1024 * 1024)}
    times: dict[str, list[float]] = {"off": [], "on": []}
    own = engine._prompt_cache
    try:
        for rep in range(reps + 1):
            for name, cache in caches.items():
                engine._prompt_cache = cache
                item = make_item(f"r{rep}", rep, steps=defaults.steps, guidance=defaults.guidance,
                                 size=(defaults.width, defaults.height))  # fmt: skip
                started = time.perf_counter()
                engine.run_batch([item], lambda _: None, lambda: False)
                if rep:
                    times[name].append((time.perf_counter() - started) * 1000)
    finally:
        engine._prompt_cache = own
    off, on = statistics.median(times["off"]), statistics.median(times["on"])
    return {"uncached_ms": off, "cached_ms": on, "saved_ms": off - on, "hits": caches["on"].stats.hits}


def vae_tiling(engine: Any, defaults: Any, cuda: bool, tile: int) -> dict[str, Any]:
    """One image at the default size decoded whole, then tiled: ms per call and peak device memory."""
    from tests.inference.items import make_item

    own = engine._settings
    rows: dict[str, Any] = {}
    try:
        for name, pixels in (("whole", None), ("tiled", defaults.width * defaults.height)):
            engine._settings = own.model_copy(update={"vae_tiling_min_pixels": pixels, "vae_tile_size": tile})
            times = []
            for rep in range(3):
                item = make_item(f"t{rep}", rep, steps=defaults.steps, guidance=defaults.guidance,
                                 size=(defaults.width, defaults.height))  # fmt: skip
                if cuda:
                    import torch

                    torch.cuda.reset_peak_memory_stats()
                started = time.perf_counter()
                engine.run_batch([item], lambda _: None, lambda: False)
                synchronize(cuda)
                times.append((time.perf_counter() - started) * 1000)
            rows[f"{name}_ms"] = statistics.median(times[1:])
            if cuda:
                rows[f"{name}_peak_mb"] = torch.cuda.max_memory_allocated() / 2**20
    finally:
        engine._settings = own
    return {"size": [defaults.width, defaults.height], "tile": tile} | rows


def switches(pipes: dict[str, Any], args: argparse.Namespace) -> dict[str, Any]:
    """The switches that need no compile, each on and off on an eager engine: the prompt-embedding cache
    on sd-turbo (an SD pipeline; SDXL is not cached), tiled VAE decoding on sdxl-turbo at its 1024²."""
    cuda = args.device == "cuda"
    out: dict[str, Any] = {}
    if "sd-turbo" in pipes:
        pipe, defaults, _ = pipes["sd-turbo"]
        engine, _ = engine_for(pipe, defaults, "sd-turbo", args.device, "eager", [])
        out["prompt_cache"] = rounded(prompt_cache(engine, defaults, 2 if args.smoke else 10))
    if "sdxl-turbo" in pipes:
        pipe, defaults, _ = pipes["sdxl-turbo"]
        engine, _ = engine_for(pipe, defaults, "sdxl-turbo", args.device, "eager", [])
        out["vae_tiling"] = rounded(vae_tiling(engine, defaults, cuda, 32 if args.smoke else 512))
    return out


# ---------------------------------------------------------------- the plan


async def run(args: argparse.Namespace) -> dict[str, Any]:
    import torch

    cuda = args.device == "cuda"
    deadline = time.perf_counter() + args.budget_s
    rows: list[dict[str, Any]] = []
    skipped: list[str] = []
    tiny_rows: list[dict[str, Any]] = []
    # Every eager figure before any compile; CUDA graphs on sd-turbo only (the budget).
    plan = [("eager", a) for a in args.archs]
    if not args.smoke:
        compiled = [("compile", "sd-turbo"), ("reduce-overhead", "sd-turbo"), ("compile", "sdxl-turbo")]
        plan += [(v, a) for v, a in compiled if a in args.archs]
    switch_figures: dict[str, Any] = {}
    pipes: dict[str, tuple[Any, Any, BusyClock]] = {}
    for variant, name in plan:
        if variant != "eager" and not switch_figures:  # the eager switches, before any compile
            switch_figures = await asyncio.to_thread(switches, pipes, args)
        if time.perf_counter() > deadline:
            skipped += [f"{name} {variant} batch={b}: over the time budget" for b in args.batches]
            continue
        if name not in pipes:
            started = time.perf_counter()
            pipe, defaults = await asyncio.to_thread(build, name, args.smoke, args.device)
            clock = BusyClock(cuda)
            clock.attach(pipe)
            pipes[name] = (pipe, defaults, clock)
            log.info("built %s in %.1f s", name, time.perf_counter() - started)
        pipe, defaults, clock = pipes[name]
        if variant != "eager":
            torch._dynamo.reset()  # each variant compiles afresh, within dynamo's recompile limit
        try:
            engine, warm_up_s = await asyncio.to_thread(
                engine_for, pipe, defaults, name, args.device, variant, args.batches
            )
        except Exception as exc:  # a compile mode that does not hold for this model: say so, go on
            if variant == "eager":
                raise
            skipped.append(f"{name} {variant}: failed to compile and warm up ({type(exc).__name__}: {exc})")
            continue
        for batch in args.batches:
            if time.perf_counter() > deadline:
                skipped.append(f"{name} {variant} batch={batch}: over the time budget")
                continue
            row: dict[str, Any] = {"arch": name, "variant": variant, "batch": batch}
            if variant != "eager":
                row["warm_up_s"] = warm_up_s
            try:
                row |= await asyncio.to_thread(raw, pipe, defaults, batch, args.window_s, clock)
                if variant == "eager":
                    row |= await stack(engine, batch, args, clock)
            except torch.cuda.OutOfMemoryError as exc:
                skipped.append(f"{name} {variant} batch={batch}: out of memory ({exc})")
                continue
            except Exception as exc:  # e.g. CUDA graphs that do not hold for this pipeline
                if variant == "eager":
                    raise
                skipped.append(f"{name} {variant} batch={batch}: {type(exc).__name__}: {exc}")
                continue
            if "stack_ips" in row:
                row["stack_over_raw"] = row["stack_ips"] / row["raw_ips"]
            rows.append(rounded(row))
            log.info("%s", rows[-1])
        if variant == "eager" and time.perf_counter() < deadline:
            batch = max(args.batches)
            tiny = await asyncio.to_thread(with_tiny_decoder, pipe, defaults, batch, args.window_s, clock)
            own = [
                r["raw_ips"] for r in rows if (r["arch"], r["variant"], r["batch"]) == (name, "eager", batch)
            ]
            ratio = {"over_own_vae": tiny["raw_ips"] / own[0]} if own else {}
            tiny_rows.append(rounded({"arch": name, **tiny, **ratio}))
        if cuda:
            torch.cuda.empty_cache()
    if not switch_figures and time.perf_counter() < deadline:
        switch_figures = await asyncio.to_thread(switches, pipes, args)
    device_name = torch.cuda.get_device_name() if cuda else "cpu"
    return {
        "device": device_name,
        "smoke": args.smoke,
        "results": rows,
        "tiny_decoder": tiny_rows,
        "switches": switch_figures,
        "skipped": skipped,
        "config": {
            k: v for k, v in vars(args).items() if k not in ("drive", "mode", "clients", "rate", "seconds")
        },
    }


def rounded(row: dict[str, Any]) -> dict[str, Any]:
    return {k: round(v, 3) if isinstance(v, float) else v for k, v in row.items()}


def parse(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument(
        "--smoke", action="store_true", help="CPU, microscopic pipelines, seconds: proves the script runs"
    )
    p.add_argument("--archs", default="sd-turbo,sdxl-turbo", type=lambda s: s.split(","))
    p.add_argument(
        "--batches",
        default=None,
        type=lambda s: [int(b) for b in s.split(",")],
        help="default 1,8,16 (1,4 with --smoke)",
    )
    p.add_argument("--device", default=None, help="default: cuda (cpu with --smoke)")
    p.add_argument(
        "--window-s", type=float, default=None, help="each measurement window (default 3, 0.5 smoke)"
    )
    p.add_argument(
        "--warmup-s", type=float, default=None, help="stack warm-up (default 2, none with --smoke)"
    )
    p.add_argument(
        "--load", type=float, default=0.7, help="offered load for the latency figures, x stack rate"
    )
    p.add_argument("--budget-s", type=float, default=170.0, help="stop starting measurements after this")
    p.add_argument("--out", type=Path, default=None)
    # internal: the client driver process
    p.add_argument("--drive", help=argparse.SUPPRESS)
    p.add_argument("--mode", default="closed", help=argparse.SUPPRESS)
    p.add_argument("--clients", type=int, default=1, help=argparse.SUPPRESS)
    p.add_argument("--rate", type=float, default=1.0, help=argparse.SUPPRESS)
    p.add_argument("--seconds", type=float, default=1.0, help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    args.device = args.device or ("cpu" if args.smoke else "cuda")
    args.window_s = args.window_s or (0.5 if args.smoke else 3.0)
    args.warmup_s = args.warmup_s if args.warmup_s is not None else (0.0 if args.smoke else 2.0)
    args.batches = args.batches or ([1, 4] if args.smoke else [1, 8, 16])
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse(argv)
    if args.drive:
        print(json.dumps(asyncio.run(drive(args.drive, args.mode, args.clients, args.rate, args.seconds))))
        return 0
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s")
    logging.getLogger("inference").setLevel(logging.WARNING)
    import torch

    from inference.loading import quiet_libraries

    quiet_libraries()
    if args.device == "cuda" and not torch.cuda.is_available():
        print("bench/gpu.py needs a CUDA device (or --smoke for the CPU run)", file=sys.stderr)
        return 2
    if args.smoke:
        torch.set_num_threads(1)
    started = time.perf_counter()
    result = asyncio.run(run(args))
    result["elapsed_s"] = round(time.perf_counter() - started, 1)
    out = args.out or RESULTS / ("gpu-smoke.json" if args.smoke else "gpu.json")
    if args.out is not None or not args.smoke:
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(json.dumps(result, indent=2, default=str) + "\n")
    print(json.dumps(result, default=str))
    return 0


if __name__ == "__main__":
    sys.exit(main())
