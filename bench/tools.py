"""Benchmark the image tools (issue 19) through a real worker: the upscaler's quality and speed.

Side by side in one run, on this machine:

  (a) quality: held-out procedural scenes (tools/tiny/train_sr.py's BENCH_SEED: never drawn in training,
      nor used to pick the checkpoint), drawn at `scale` times the input size (the reference) and
      downscaled by area (the input); each input is upscaled by the worker (an upscale job over HTTP,
      the bundled model, all submitted at once so they batch) and by bicubic (PIL); PSNR of each against
      the reference. `sr_psnr_gain_db` is the worker's mean PSNR less bicubic's;
  (b) speed: a larger picture upscaled through the worker, wall time from submit to fetched PNG, per
      output megapixel (`upscale_ms_per_mpix`), beside bicubic's own ms per megapixel on the same picture
      (`bicubic_ms_per_mpix`). One CPU thread, as the tests run: no GPU figure is claimed here.

Where bench/tools_inpaint.py exists (zoom, pan and vary region), its `measure_inpaint()` figures are
merged in. `python bench/tools.py [--quick]`; results go to bench/results/tools.json and the last line
of output is one JSON object with the figures.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import statistics
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
os.environ.setdefault("HF_HUB_OFFLINE", "1")

from inference.client import WorkerClient
from inference.protocol import JobRequest
from inference.server import start_worker
from inference.settings import EngineSettings, UpscalerSettings, WorkerSettings
from inference.vocabulary import JobKind
from tools.tiny.train_sr import BENCH_SEED, bicubic, eval_pairs, from_png, psnr, to_png

RESULTS = Path(__file__).resolve().parent / "results"


async def _upscale(worker: WorkerClient, inputs: list[np.ndarray], tag: str) -> list[np.ndarray]:
    """Upscale jobs for every input, submitted together; their outputs' pixels, in order."""
    jobs = []
    for i, x in enumerate(inputs):
        request = JobRequest(
            idempotency_key=f"bench-{tag}-{i}-{time.monotonic_ns()}",
            user="bench",
            prompt="shapes",
            kind=JobKind.UPSCALE,
        )
        jobs.append(await worker.submit(request, to_png(x)))
    finals = await asyncio.gather(*[worker.wait(j.id) for j in jobs])
    failed = [f.error for f in finals if f.status != "succeeded"]
    if failed:
        raise RuntimeError(f"upscale jobs failed: {failed}")
    return [from_png(await worker.image(j.id, 0)) for j in jobs]


def measure_upscale(
    scale: int = 2, scenes: int = 32, side: int = 64, big_side: int = 256, repeats: int = 3
) -> dict[str, Any]:
    """The bundled upscaler of `scale` through a real worker against bicubic: PSNR gain and ms per MP."""
    from inference.engine import DiffusersEngine

    settings = EngineSettings(device="cpu", cpu_threads=1, upscaler=UpscalerSettings(scale=scale))
    engine = DiffusersEngine.load(settings)
    pairs = eval_pairs(scale, count=scenes, side=side, seed=BENCH_SEED)
    big, _ = eval_pairs(scale, count=1, side=big_side, seed=BENCH_SEED + 1)[0]

    async def run() -> tuple[list[np.ndarray], list[float]]:
        worker_settings = WorkerSettings(
            port=0, max_upscale_pixels=(big_side * scale) ** 2, max_batch=8, max_queue_per_user=scenes
        )
        running = await start_worker(worker_settings, engine)
        try:
            async with WorkerClient(running.url, timeout=600) as worker:
                outputs = await _upscale(worker, [small for small, _ in pairs], "quality")
                await _upscale(worker, [big], "warm")
                times = []
                for r in range(repeats):
                    start = time.perf_counter()
                    await _upscale(worker, [big], f"speed{r}")
                    times.append(time.perf_counter() - start)
                return outputs, times
        finally:
            await running.stop()

    outputs, times = asyncio.run(run())
    ours = [psnr(o, ref) for o, (_, ref) in zip(outputs, pairs, strict=True)]
    theirs = [psnr(bicubic(small, scale), ref) for small, ref in pairs]
    mpix = (big_side * scale) ** 2 / 1e6
    bicubic_times = []
    for _ in range(max(repeats, 5)):
        start = time.perf_counter()
        bicubic(big, scale)
        bicubic_times.append(time.perf_counter() - start)
    return {
        "scale": scale,
        "scenes": scenes,
        "input_side": side,
        "sr_psnr_db": round(float(np.mean(ours)), 3),
        "bicubic_psnr_db": round(float(np.mean(theirs)), 3),
        "sr_psnr_gain_db": round(float(np.mean(ours) - np.mean(theirs)), 3),
        "sr_psnr_gain_min_db": round(float(min(a - b for a, b in zip(ours, theirs, strict=True))), 3),
        "speed_picture": f"{big_side}x{big_side} -> {big_side * scale}x{big_side * scale}",
        "upscale_ms_per_mpix": round(statistics.median(times) * 1000 / mpix, 1),
        "bicubic_ms_per_mpix": round(statistics.median(bicubic_times) * 1000 / mpix, 2),
        "upscaler": f"bundled upscaler_x{scale}, factor {engine.defaults(JobKind.UPSCALE).scale}",
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="fewer scenes and repeats (a smoke run)")
    args = parser.parse_args()
    scenes, repeats = (8, 1) if args.quick else (32, 3)
    x2 = measure_upscale(2, scenes=scenes, repeats=repeats)
    x4 = measure_upscale(4, scenes=scenes, side=32, big_side=128, repeats=repeats)
    figures: dict[str, Any] = {
        "sr_psnr_gain_db": x2["sr_psnr_gain_db"],
        "upscale_ms_per_mpix": x2["upscale_ms_per_mpix"],
        "sr_psnr_gain_db_x4": x4["sr_psnr_gain_db"],
        "upscale_ms_per_mpix_x4": x4["upscale_ms_per_mpix"],
    }
    detail: dict[str, Any] = {"x2": x2, "x4": x4}
    try:
        from bench.tools_inpaint import measure_inpaint  # zoom, pan and vary region: written beside this
    except ImportError:
        measure_inpaint = None
    if measure_inpaint is not None:
        inpaint = measure_inpaint()
        figures.update(inpaint)
        detail["inpaint"] = inpaint
    RESULTS.mkdir(exist_ok=True)
    record = {
        "machine": platform.machine(),
        "cpus": os.cpu_count(),
        "quick": args.quick,
        **detail,
        "figures": figures,
    }
    (RESULTS / "tools.json").write_text(json.dumps(record, indent=1) + "\n")
    print(json.dumps(record, indent=1))
    print(json.dumps(figures))


if __name__ == "__main__":
    main()
