"""The engine's speed switches (inference/acceleration.py) measured on this machine's CPU, one thread each.

Side by side in one run, each switch on and off:

  prompt_cache   a re-roll (the same one-image job again, new seed) through the engine with and without the
                 prompt-embedding cache, alternated, on the bundled model at its own defaults and on a
                 random-weight sd-turbo (the published architecture, inference/archs) at 128x128, 1 step:
                 median ms per re-roll each way and the ms saved; the cached pictures are checked equal
                 to the uncached ones pixel for pixel (`identical`).
  compile        the bundled model in three fresh processes: eager; compiled with buckets [1, 2, 4] and a
                 cold inductor cache; again with that cache kept (a restart). Load-and-warm-up seconds,
                 then the median ms of a batch of 3 (padded to 4 when bucketed) and eager with buckets
                 (the padding's own cost).
  vae_tiling     one 1024x1024 decode in a fresh process each way, whole and tiled (512-pixel tiles):
                 seconds and the process's peak RSS growth. The VAE is the SD layout at half width
                 (block channels 64-128-256-256, random weights): the full-width one takes minutes per
                 decode on one core. Activations scale with width, the decoder's attention does not.

Nothing here is a GPU figure: on a GPU `bench/gpu.py` measures the same switches. `python bench/accel.py
[--quick] [--skip cache,compile,vae]` (all three parts: about 15 minutes on a loaded 2-core machine, the
cold compile most of it); results in bench/results/accel.json, each part under its own `run_at` (a part
left out with --skip keeps its last figures), the last line of output one JSON object.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
os.environ.setdefault("HF_HUB_OFFLINE", "1")

RESULTS = Path(__file__).resolve().parent / "results"
ROOT = Path(__file__).resolve().parent.parent


def proc_status_mb(field: str) -> float:
    """VmRSS (now) or VmHWM (the peak since the last reset) of this process, in MB."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1]) / 1024
    raise RuntimeError(f"no {field} in /proc/self/status")


def reset_peak_rss() -> None:
    """Reset VmHWM to the current RSS (Linux: writing 5 to clear_refs), so the next peak is the decode's."""
    Path("/proc/self/clear_refs").write_text("5")


# ---------------------------------------------------------------- prompt cache (in this process)


def prompt_cache(model: str, reps: int) -> dict[str, Any]:
    import numpy as np
    import torch

    from inference.acceleration import PromptCache
    from inference.engine import DiffusersEngine
    from inference.settings import EngineSettings, ModelDefaults
    from tests.inference.items import make_item

    if model == "bundled":
        engine = DiffusersEngine.load(EngineSettings(device="cpu", cpu_threads=1))
        d = engine.model_defaults
        item = make_item("r", 0, steps=d.steps, guidance=d.guidance, size=(d.width, d.height))
    else:
        from inference.archs.build import random_engine

        defaults = ModelDefaults(steps=1, guidance=0.0, width=128, height=128)
        engine = random_engine(model, EngineSettings(device="cpu", cpu_threads=1, defaults=defaults))
        item = make_item("r", 0, steps=1, guidance=0.0, size=(128, 128))
    off = PromptCache(0, 0)
    on = PromptCache(64, 64 * 1024 * 1024)
    times: dict[str, list[float]] = {"off": [], "on": []}
    pictures: dict[str, Any] = {}
    pipe = engine._pipes.generate
    encode_ms = []
    for rep in range(reps + 1):  # the first round fills the cache and is not timed
        pair = [("off", off), ("on", on)]
        for name, cache in pair if rep % 2 else pair[::-1]:  # alternate which goes first
            engine._prompt_cache = cache
            reroll = make_item(f"r{rep}", 1000 + rep, prompt=item.request.prompt, steps=item.steps,
                               guidance=item.guidance, size=(item.width, item.height))  # fmt: skip
            started = time.perf_counter()
            result = engine.run_batch([reroll], lambda _: None, lambda: False)
            if rep:
                times[name].append((time.perf_counter() - started) * 1000)
            pictures[name] = np.asarray(result[0][0].pixels)
        started = time.perf_counter()
        with torch.no_grad():
            pipe.encode_prompt(item.request.prompt, pipe._execution_device, 1, False)
        encode_ms.append((time.perf_counter() - started) * 1000)
        identical = bool(np.array_equal(pictures["off"], pictures["on"]))
        if not identical:
            break
    off_ms, on_ms = statistics.median(times["off"]), statistics.median(times["on"])
    return {
        "model": model,
        "size": [item.width, item.height],
        "steps": item.steps,
        "guidance": item.guidance,
        "reps": reps,
        "uncached_ms": round(off_ms, 1),
        "cached_ms": round(on_ms, 1),
        "saved_ms": round(off_ms - on_ms, 1),
        "saved_share": round((off_ms - on_ms) / off_ms, 3),
        "text_encoder_ms": round(statistics.median(encode_ms), 1),
        # Every timed re-roll, in order: on a shared machine the spread says how far to trust the medians.
        "uncached_ms_each": [round(t) for t in times["off"]],
        "cached_ms_each": [round(t) for t in times["on"]],
        "identical": identical,
        "hits": on.stats.hits,
        "misses": on.stats.misses,
    }


# ---------------------------------------------------------------- compile (child processes)


def compile_child(mode: str, cache: str, reps: int) -> dict[str, Any]:
    """In a fresh process: load the bundled model as `mode` says, then time batches of 3."""
    import torch

    from inference.engine import DiffusersEngine
    from inference.settings import EngineSettings
    from tests.inference.items import make_item

    torch.set_num_threads(1)
    switches: dict[str, Any] = {}
    if mode != "eager":
        switches = {"batch_buckets": [1, 2, 4]}
    if mode.startswith("compiled"):
        switches |= {"compile": True, "compile_cache_dir": Path(cache)}
    started = time.perf_counter()
    engine = DiffusersEngine.load(EngineSettings(device="cpu", cpu_threads=1, **switches))
    load_s = time.perf_counter() - started
    d = engine.model_defaults
    batch = [
        make_item(f"j{i}", i, steps=d.steps, guidance=d.guidance, size=(d.width, d.height)) for i in range(3)
    ]
    engine.run_batch(batch, lambda _: None, lambda: False)  # eager: its first batch; compiled: warmed up
    times = []
    for _ in range(reps):
        started = time.perf_counter()
        engine.run_batch(batch, lambda _: None, lambda: False)
        times.append((time.perf_counter() - started) * 1000)
    return {
        "mode": mode,
        "load_and_warm_up_s": round(load_s, 1),
        "batch3_ms": round(statistics.median(times), 1),
    }


def child(args: list[str]) -> dict[str, Any]:
    env = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"}
    out = subprocess.run(
        [sys.executable, __file__, *args], capture_output=True, text=True, env=env, check=False, timeout=900
    )
    if out.returncode != 0:
        raise RuntimeError(f"{args} failed:\n{out.stderr[-3000:]}")
    return dict(json.loads(out.stdout.strip().splitlines()[-1]))


def compile_figures(reps: int) -> dict[str, Any]:
    with tempfile.TemporaryDirectory() as cache:
        rows = [child(["--part", f"compile:{mode}", "--cache", cache, "--reps", str(reps)])
                for mode in ("eager", "bucketed", "compiled-cold", "compiled-warm")]  # fmt: skip
    by = {r["mode"]: r for r in rows}
    eager, cold, warm = by["eager"]["batch3_ms"], by["compiled-cold"], by["compiled-warm"]
    return {
        "rows": rows,
        "compiled_over_eager": round(eager / min(cold["batch3_ms"], warm["batch3_ms"]), 3),
        "padding_cost_share": round(by["bucketed"]["batch3_ms"] / eager - 1, 3),
        "warm_up_saved_by_disk_cache_s": round(cold["load_and_warm_up_s"] - warm["load_and_warm_up_s"], 1),
    }


# ---------------------------------------------------------------- tiled VAE (child processes)


def vae_child(tiled: bool, size: int) -> dict[str, Any]:
    import torch
    from diffusers import AutoencoderKL

    from inference.archs import get_arch

    torch.set_num_threads(1)
    torch.manual_seed(0)
    config = dict(get_arch("sd-turbo").config("vae"))
    config["block_out_channels"] = [c // 2 for c in config["block_out_channels"]]
    config["norm_num_groups"] = 16
    vae = AutoencoderKL.from_config(config).eval()
    if tiled:
        vae.tile_sample_min_size, vae.tile_latent_min_size = 512, 64
        vae.enable_tiling()
    latents = torch.randn(1, 4, size // 8, size // 8)
    reset_peak_rss()
    before = proc_status_mb("VmRSS")
    started = time.perf_counter()
    with torch.no_grad():
        vae.decode(latents)
    seconds = time.perf_counter() - started
    peak = proc_status_mb("VmHWM") - before
    return {
        "tiled": tiled,
        "size": size,
        "decode_s": round(seconds, 1),
        "peak_rss_growth_mb": round(peak),
    }


def vae_figures(size: int) -> dict[str, Any]:
    whole = child(["--part", "vae:whole", "--size", str(size)])
    tiled = child(["--part", "vae:tiled", "--size", str(size)])
    return {
        "rows": [whole, tiled],
        "tiled_time_ratio": round(tiled["decode_s"] / whole["decode_s"], 2),
        "tiled_memory_ratio": round(tiled["peak_rss_growth_mb"] / max(1, whole["peak_rss_growth_mb"]), 3),
    }


# ---------------------------------------------------------------- main


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--quick", action="store_true", help="fewer repetitions, 512x512 VAE decode")
    p.add_argument("--skip", default="", help="comma-separated parts to leave out: cache,compile,vae")
    p.add_argument("--part", help=argparse.SUPPRESS)
    p.add_argument("--cache", help=argparse.SUPPRESS)
    p.add_argument("--reps", type=int, default=5, help=argparse.SUPPRESS)
    p.add_argument("--size", type=int, default=1024, help=argparse.SUPPRESS)
    args = p.parse_args()
    from inference.loading import quiet_libraries

    quiet_libraries()
    if args.part:
        kind, _, mode = args.part.partition(":")
        row = (
            compile_child(mode, args.cache, args.reps)
            if kind == "compile"
            else vae_child(mode == "tiled", args.size)
        )
        print(json.dumps(row))
        return 0
    import torch

    torch.set_num_threads(1)
    skip = set(args.skip.split(",")) - {""}
    reps = 3 if args.quick else 5
    started = time.perf_counter()
    out = RESULTS / "accel.json"
    # A part left out with --skip keeps its figures from the last run that made them (each part's own
    # `run_at` says when); each part measures its switch on and off side by side within itself.
    result: dict[str, Any] = json.loads(out.read_text()) if skip and out.is_file() else {}
    result |= {"machine": f"{platform.machine()} cpu, 1 thread", "quick": args.quick}
    parts = {
        "prompt_cache": (
            "cache",
            lambda: [prompt_cache("bundled", reps * 2), prompt_cache("sd-turbo", reps)],
        ),
        "compile": ("compile", lambda: compile_figures(reps)),
        "vae_tiling": ("vae", lambda: vae_figures(512 if args.quick else 1024)),
    }
    for key, (name, measure) in parts.items():
        if name in skip:
            continue
        print(f"measuring {key}", file=sys.stderr, flush=True)
        result[key] = {"run_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()), "figures": measure()}
    result["elapsed_s"] = round(time.perf_counter() - started, 1)
    RESULTS.mkdir(exist_ok=True)
    out.write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
