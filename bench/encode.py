"""Benchmark the worker's CPU cost per picture after the pipeline call: conversion and encoding.

Side by side in one run, on the same pictures (512² and 1024²):

  (a) before: what the engine did until issue 23 on its single thread after each pipeline call: the
      pipeline's float output turned into PIL pictures (`output_type="pil"`: float → uint8 → PIL) and
      each one PNG-encoded at compress_level 4 with its text chunks;
  (b) after: one vectorised float → uint8 conversion of the whole batch (what `inference.pixels`
      does with the pipeline's "pt" output; the only part left on the engine's thread), then the
      worker's default format with its metadata (on the encoder pool, while the next batch runs);
  (c) every output format the worker offers: ms per picture and bytes per picture;
  (d) whether the encoders release the GIL, so that a pool of threads (not processes) encodes in
      parallel: how much Python another thread runs while one encodes (`python_loops_during`), against
      the same for a C function that keeps the GIL (sum over a range).

The pictures are realistic, not noise (which compresses unlike real pictures): smooth gradients, soft
shapes and a little fine grain, like a diffusion model's output. `python bench/encode.py [--quick]`;
the last line of output is one JSON object with the figures; results go to bench/results/encode.json.
"""

from __future__ import annotations

import argparse
import io
import json
import math
import os
import statistics
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch
from diffusers.image_processor import VaeImageProcessor
from PIL import Image, ImageDraw, ImageFilter
from PIL.PngImagePlugin import PngInfo

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from inference.output import OUTPUT_FORMATS, OutputSettings, encode, pool_size
from inference.pixels import to_uint8
from inference.settings import WorkerSettings

RESULTS = Path(__file__).resolve().parent / "results"
META = {
    "prompt": "a lighthouse on a cliff at sunset, oil painting, warm light",
    "negative_prompt": "",
    "seed": "1234",
    "steps": "1",
    "guidance": "0",
    "model": "stabilityai/sd-turbo",
    "kind": "generate",
    "Software": "brushfire",
}


def scene(side: int, seed: int) -> np.ndarray:
    """A picture like a model's: sky gradient, soft shapes, blur, a little grain; (side, side, 3) uint8."""
    rng = np.random.default_rng(seed)
    y = np.linspace(0.0, 1.0, side, dtype=np.float32)[:, None, None]
    top, bottom = rng.uniform(0, 255, 3), rng.uniform(0, 255, 3)
    sky = (top * (1 - y) + bottom * y).repeat(side, axis=1)
    img = Image.fromarray(sky.astype(np.uint8))
    draw = ImageDraw.Draw(img)
    for _ in range(12):
        x0, y0 = rng.uniform(-0.2, 1.0, 2) * side
        w, h = rng.uniform(0.1, 0.6, 2) * side
        colour = tuple(int(c) for c in rng.uniform(0, 255, 3))
        if rng.random() < 0.5:
            draw.ellipse((x0, y0, x0 + w, y0 + h), fill=colour)
        else:
            draw.polygon([(x0, y0 + h), (x0 + w / 2, y0), (x0 + w, y0 + h)], fill=colour)
    img = img.filter(ImageFilter.GaussianBlur(side / 128))
    grain = rng.normal(0.0, 2.0, (side, side, 3))
    return np.clip(np.asarray(img, dtype=np.float32) + grain, 0, 255).astype(np.uint8)


def pipeline_output(pictures: list[np.ndarray]) -> torch.Tensor:
    """The batch as a diffusers pipeline holds it after the VAE and its postprocess: float in [0, 1], NCHW."""
    return torch.from_numpy(np.stack(pictures)).permute(0, 3, 1, 2).float().div(255.0)


def png_level4(img: Image.Image) -> bytes:
    """The old encoder: PNG at compress_level 4 with the metadata in text chunks."""
    info = PngInfo()
    for key, value in META.items():
        info.add_text(key, value)
    buf = io.BytesIO()
    img.save(buf, format="PNG", pnginfo=info, compress_level=4)
    return buf.getvalue()


def before(batch: torch.Tensor) -> list[bytes]:
    """The old path: diffusers' "pil" postprocess (NCHW float → NHWC numpy, times 255, round, uint8 →
    PIL), then PNG at compress_level 4, one picture after another."""
    arrays = batch.cpu().permute(0, 2, 3, 1).float().numpy()
    return [png_level4(img) for img in VaeImageProcessor.numpy_to_pil(arrays)]


def per_picture_ms(fn: Callable[[], object], pictures: int, repeat: int) -> float:
    """Median over `repeat` runs of `fn`, in ms per picture (process CPU time: the core-ms it costs)."""
    times = []
    for _ in range(repeat):
        t0 = time.process_time()
        fn()
        times.append((time.process_time() - t0) * 1000 / pictures)
    return round(statistics.median(times), 2)


def wall_ms(fn: Callable[[], object], repeat: int) -> float:
    times = []
    for _ in range(repeat):
        t0 = time.perf_counter()
        fn()
        times.append((time.perf_counter() - t0) * 1000)
    return statistics.median(times)


def psnr(original: np.ndarray, encoded: bytes) -> float:
    """How close the decoded picture is to the original, in dB (inf for a lossless format)."""
    with Image.open(io.BytesIO(encoded)) as img:
        decoded = np.asarray(img.convert("RGB"), dtype=np.float64)
    mse = float(np.mean((decoded - original.astype(np.float64)) ** 2))
    return math.inf if mse == 0 else 10 * math.log10(255**2 / mse)


def measure(side: int, batch: int, repeat: int) -> dict[str, object]:
    pictures = [scene(side, seed) for seed in range(batch)]
    floats = pipeline_output(pictures)
    default = OutputSettings.of(WorkerSettings())
    formats: dict[str, dict[str, float]] = {}
    for name in OUTPUT_FORMATS:
        cfg = default.with_format(name)
        encoded = [encode(p, META, cfg) for p in pictures]
        ms = per_picture_ms(lambda cfg=cfg: [encode(p, META, cfg) for p in pictures], batch, repeat)
        formats[name] = {
            "ms": ms,
            "kb": round(statistics.mean(len(b) for b in encoded) / 1024, 1),
            "psnr_db": round(statistics.mean(psnr(p, b) for p, b in zip(pictures, encoded, strict=True)), 1),
        }
    old_png = lambda: [png_level4(Image.fromarray(p)) for p in pictures]  # noqa: E731
    formats["png level 4 (before)"] = {
        "ms": per_picture_ms(old_png, batch, repeat),
        "kb": round(statistics.mean(len(b) for b in old_png()) / 1024, 1),
    }
    convert_before = per_picture_ms(
        lambda: VaeImageProcessor.numpy_to_pil(floats.cpu().permute(0, 2, 3, 1).float().numpy()),
        batch,
        repeat,
    )
    convert_after = per_picture_ms(lambda: to_uint8(floats), batch, repeat)
    before_ms = per_picture_ms(lambda: before(floats), batch, repeat)
    after_ms = per_picture_ms(lambda: [encode(p, META, default) for p in to_uint8(floats)], batch, repeat)
    return {
        "side": side,
        "batch": batch,
        "before_ms_per_image": before_ms,
        "after_ms_per_image": after_ms,
        "convert_before_ms": convert_before,
        "convert_after_ms": convert_after,
        "default_format": default.format,
        "formats": formats,
    }


def python_loops_during(fn: Callable[[], object]) -> int:
    """How many times this thread ran a Python loop while another thread ran `fn`.

    With a long GIL switch interval the other thread keeps the GIL unless it gives it up itself, so the
    count stays near 0 where `fn` holds the GIL throughout, and is large where its C code releases it
    (this thread then runs until the other wants the GIL back). Unlike a speed-up, this does not depend
    on how busy the machine is.
    """
    started, done = threading.Event(), threading.Event()

    def other() -> None:
        started.set()
        fn()
        done.set()

    old = sys.getswitchinterval()
    sys.setswitchinterval(1.0)
    try:
        thread = threading.Thread(target=other)
        thread.start()
        started.wait()
        loops = 0
        while not done.is_set():
            loops += 1
        thread.join()
    finally:
        sys.setswitchinterval(old)
    return loops


def gil_check(side: int, repeat: int) -> dict[str, int]:
    """Python loops this thread ran while another encoded one picture, per format (median of runs)."""
    picture = scene(side, 0)
    out: dict[str, int] = {}
    for name in ("png", "webp", "jpeg"):
        cfg = OutputSettings.of(WorkerSettings()).with_format(name)
        runs = [python_loops_during(lambda cfg=cfg: encode(picture, META, cfg)) for _ in range(repeat)]
        out[f"{name}_python_loops_while_encoding"] = int(statistics.median(runs))
    # The control: a C function of about the same length that keeps the GIL (sum over a range).
    runs = [python_loops_during(lambda: sum(range(2_000_000))) for _ in range(repeat)]
    out["control_python_loops_while_c_holds_the_gil"] = int(statistics.median(runs))
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="fewer pictures and repeats (a smoke run)")
    args = parser.parse_args()
    torch.set_num_threads(1)  # the worker's conversion runs beside the engine: one core's cost
    batch, repeat = (2, 1) if args.quick else (8, 5)
    sizes = [measure(512, batch, repeat), measure(1024, max(1, batch // 2), repeat)]
    gil = gil_check(1024, repeat)
    for s in sizes:
        print(
            f"{s['side']}²: before {s['before_ms_per_image']} ms/picture (conversion {s['convert_before_ms']}),"
            f" after {s['after_ms_per_image']} (conversion {s['convert_after_ms']})"
        )
        for name, f in s["formats"].items():  # type: ignore[union-attr]
            print(f"  {name:22} {f['ms']:7.2f} ms  {f['kb']:8.1f} KB  {f.get('psnr_db', '')} dB")
    print(f"GIL: {gil}")
    at512 = sizes[0]
    summary = {
        # Core-ms per picture of CPU work after the pipeline call: all of it was on the engine's thread
        # before; after, only the uint8 conversion is (`engine_thread_*`), the encoding runs on the pool.
        "before_ms_per_image_512": at512["before_ms_per_image"],
        "after_ms_per_image_512": at512["after_ms_per_image"],
        "engine_thread_before_ms_512": at512["before_ms_per_image"],
        "engine_thread_after_ms_512": at512["convert_after_ms"],
        "before_ms_per_image_1024": sizes[1]["before_ms_per_image"],
        "after_ms_per_image_1024": sizes[1]["after_ms_per_image"],
        "default_format": at512["default_format"],
        "gil": gil,
        "encoder_pool_threads": pool_size(),
        "cpus": os.cpu_count(),
    }
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "encode.json").write_text(json.dumps({"sizes": sizes, **summary}, indent=2) + "\n")
    print(json.dumps(summary))


if __name__ == "__main__":
    main()
