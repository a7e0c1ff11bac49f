"""Zoom out, pan and vary region on the bundled tiny model, judged from pixels (issue 19).

Every case runs through the worker's engine (`DiffusersEngine.run_batch`, the code path a worker batch
takes: canvas, mask, the inpainting pipeline at the model's size, the blend at full size) on scenes drawn
from seeds the inpainting trainer never used (`tools/tiny/train_inpaint.py` draws from its `--seed`, here
`CASE_SEED`), and is judged by `tools/tiny/judge.py`, which reads shapes and colours from pixels:

- **vary region** (`cases`, 100 by default): a one-shape scene; the cells of the 3x3 grid that its shape
  covers are repainted with a caption asking for another shape in another colour at the same place.
  `region_follow`: how often the judge finds, with its centre in those cells, a shape of the asked colour
  and kind (`region_follow_colour`: the colour alone). `region_outside_mad`: mean absolute difference
  (0-255) from the original outside the cells beyond the soft edge.
- **zoom out 2x** (`cases // 2`): `zoom_keep_mad`, mean absolute difference between the canvas's centre
  and the original, soft edge included; the border is checked as painted, not left blank or noisy:
  `zoom_border_background` is how often the border's commonest palette colour is the original's
  background, `zoom_border_noise` the mean absolute difference between neighbouring border pixels (flat
  colour is near 0, the masked grey left as it was would fail the first check, noise scores tens).
- **pan** (`cases // 4`, each direction in turn): `pan_extends`, how often the canvas grew by half on the
  chosen side with the original found there (MAD under 4); `pan_keep_mad` its mean.

`python bench/tools_inpaint.py [--cases N] [--unet FOLDER]` writes bench/results/tools_inpaint.json and
ends with one JSON line; `measure_inpaint(...)` returns the same figures (bench/tools.py imports it).
"""

from __future__ import annotations

import argparse
import io
import json
import sys
import time
from collections import Counter
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from inference import canvas  # noqa: E402
from inference.engine import DiffusersEngine  # noqa: E402
from inference.engine_api import BatchItem  # noqa: E402
from inference.images import EncodedImage, ImageLimits  # noqa: E402
from inference.intake import inpaint_size  # noqa: E402
from inference.protocol import InpaintSpec, JobRequest  # noqa: E402
from inference.settings import EngineSettings  # noqa: E402
from inference.vocabulary import JobKind, WorkerJobId  # noqa: E402
from tools.tiny import data  # noqa: E402
from tools.tiny.judge import Judge, nearest_colours  # noqa: E402
from tools.tiny.train_inpaint import _cover_cells  # noqa: E402

RESULTS = ROOT / "bench" / "results"
CASE_SEED = 91_019  # not the trainer's seed (20261129): scenes it never drew
LIMITS = ImageLimits(max_bytes=10**7, max_pixels=10**7)
STEPS = 20


def load_engine(unet: str | None = None) -> DiffusersEngine:
    settings = EngineSettings(cpu_threads=1, device="cpu", inpaint={"unet": unet} if unet else {})
    return DiffusersEngine.load(settings)


def _encoded(picture: Image.Image) -> EncodedImage:
    buf = io.BytesIO()
    picture.save(buf, "PNG")
    return EncodedImage.check(buf.getvalue(), LIMITS)


def run_inpaint(
    engine: DiffusersEngine, picture: Image.Image, prompt: str, spec: InpaintSpec, seed: int
) -> np.ndarray:
    """One inpaint job through the engine, as a worker batch of one."""
    request = JobRequest(
        idempotency_key=f"b{seed}", user="bench", kind=JobKind.INPAINT, prompt=prompt, inpaint=spec
    )
    width, height = inpaint_size(spec, picture.width, picture.height, 4 * 1024 * 1024)
    defaults = engine.defaults(JobKind.INPAINT)
    item = BatchItem(
        request=request, seed=seed, width=width, height=height, steps=STEPS, guidance=defaults.guidance,
        init_image=_encoded(picture), job_id=WorkerJobId(f"b{seed}"),
    )  # fmt: skip
    return engine.run_batch([item], lambda _u: None, lambda: False)[0][0].pixels


def region_case(rng: np.random.Generator) -> tuple[data.Scene, data.Scene, tuple[int, ...]]:
    """A one-shape scene, the same scene with another shape in another colour there, and the cells to repaint."""
    original = data.sample_single_scene(rng)
    old = original.shapes[0]
    colour = data._pick(rng, [c for c in data.contrasting(original.background) if c != old.colour])
    kind = data._pick(rng, [k for k in data.SHAPES if k != old.kind])
    new = data.Shape(kind, colour, old.size, old.x, old.y, old.radius)
    target = data.Scene(original.background, (new,), original.position)
    cells = tuple(sorted(r * canvas.GRID + c for r, c in _cover_cells(old)))
    return original, target, cells


def _beyond_edge(mask: np.ndarray, feather: float) -> np.ndarray:
    side = (mask.shape[1], mask.shape[0])
    beyond: np.ndarray = canvas.alpha(mask, canvas.feather_px(feather, side)) == 0
    return beyond


def measure_inpaint(
    engine: DiffusersEngine | None = None, cases: int = 100, unet: str | None = None, seed: int = CASE_SEED
) -> dict[str, Any]:
    engine = engine or load_engine(unet)
    feather = engine._settings.inpaint.feather
    judge = Judge()
    rng = np.random.default_rng(seed)
    clock = time.perf_counter()
    follow = follow_colour = 0
    outside: list[float] = []
    for i in range(cases):
        original, target, cells = region_case(rng)
        picture = data.render(original)
        out = run_inpaint(
            engine, picture, data.caption(target), InpaintSpec(op="region", cells=cells), seed=i
        )
        mask = canvas.cells_mask(cells, out.shape[1], out.shape[0])
        keep = _beyond_edge(mask, feather)
        outside.append(
            float(np.abs(out.astype(float) - np.asarray(picture, dtype=float))[keep].mean())
            if keep.any()
            else 0.0
        )
        asked = target.shapes[0]
        inside = [
            b for b in judge.judge(Image.fromarray(out)).blobs
            if mask[min(int(b.y * out.shape[0]), out.shape[0] - 1), min(int(b.x * out.shape[1]), out.shape[1] - 1)]
        ]  # fmt: skip
        top = max(inside, key=lambda b: b.area, default=None)
        follow_colour += top is not None and top.colour == asked.colour
        follow += top is not None and top.colour == asked.colour and top.shape == asked.kind
    zoom_mad, border_bg, border_noise = [], 0, []
    zooms = max(1, cases // 2)
    for i in range(zooms):
        scene = data.sample_scene(rng)
        picture = data.render(scene)
        out = run_inpaint(
            engine, picture, data.caption(scene), InpaintSpec(op="zoom", zoom=2.0), seed=1000 + i
        )
        size = (out.shape[1], out.shape[0])
        x, y, w, h = canvas.placement("zoom", size, zoom=2.0)
        kept = np.asarray(picture.resize((w, h), Image.Resampling.LANCZOS), dtype=float)
        zoom_mad.append(float(np.abs(out[y : y + h, x : x + w].astype(float) - kept).mean()))
        border = canvas.outside_mask(size, (x, y, w, h))
        colours = Counter(nearest_colours(out[border].astype(np.float32)).tolist())
        border_bg += data.COLOURS[colours.most_common(1)[0][0]] == judge.judge(picture).background
        diffs = np.abs(np.diff(out.astype(float), axis=1)).sum(axis=2)
        border_noise.append(float(diffs[border[:, 1:] & border[:, :-1]].mean()))
    pans, pan_mad, extends = max(1, cases // 4), [], 0
    for i in range(pans):
        direction: canvas.Direction = ("left", "right", "up", "down")[i % 4]
        scene = data.sample_scene(rng)
        picture = data.render(scene)
        spec = InpaintSpec.model_validate({"op": "pan", "direction": direction})
        out = run_inpaint(engine, picture, data.caption(scene), spec, seed=2000 + i)
        size = (out.shape[1], out.shape[0])
        x, y, w, h = canvas.placement("pan", size, direction=direction)
        kept = np.asarray(picture.resize((w, h), Image.Resampling.LANCZOS), dtype=float)
        mad = float(np.abs(out[y : y + h, x : x + w].astype(float) - kept).mean())
        pan_mad.append(mad)
        wider = direction in ("left", "right")
        grown = size == ((96, 64) if wider else (64, 96))
        extends += grown and mad < 4
    seconds = time.perf_counter() - clock
    return {
        "region_follow": round(follow / cases, 3),
        "region_follow_colour": round(follow_colour / cases, 3),
        "region_outside_mad": round(float(np.mean(outside)), 3),
        "zoom_keep_mad": round(float(np.mean(zoom_mad)), 3),
        "zoom_border_background": round(border_bg / zooms, 3),
        "zoom_border_noise": round(float(np.mean(border_noise)), 2),
        "pan_extends": round(extends / pans, 3),
        "pan_keep_mad": round(float(np.mean(pan_mad)), 3),
        "cases": {"region": cases, "zoom": zooms, "pan": pans},
        "seconds": round(seconds, 1),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cases", type=int, default=100)
    parser.add_argument("--unet", default=None, help="an inpainting UNet folder (default: the bundled one)")
    parser.add_argument("--seed", type=int, default=CASE_SEED, help="the cases' seed (another: a fresh set)")
    args = parser.parse_args()
    figures = measure_inpaint(cases=args.cases, unet=args.unet, seed=args.seed)
    RESULTS.mkdir(exist_ok=True)
    name = "tools_inpaint.json" if args.seed == CASE_SEED else f"tools_inpaint-seed{args.seed}.json"
    (RESULTS / name).write_text(json.dumps({"seed": args.seed, **figures}, indent=2) + "\n")
    print(json.dumps(figures))


if __name__ == "__main__":
    main()
