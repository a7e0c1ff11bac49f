"""Train the bundled tiny upscaler: Real-ESRGAN's SRVGGNetCompact ("Compact"), small, on procedural scenes.

Pairs come from tools/tiny/data.py's scene grammar: a scene is drawn anti-aliased at `scale` times the
input size (the reference), and the input is that reference downscaled by area (box filter). Every step
draws fresh scenes at random input sizes, so nothing is seen twice; the held-out set (`eval_pairs`) uses
its own seed, never drawn in training. Loss is L1; the checkpoint with the best held-out PSNR is kept.

Reproducible from --seed; one thread; stops, saves and exits at --minutes. Run detached:

    setsid nohup python -m tools.tiny.train_sr --scale 2 --minutes 32 --out /work/art/sr > log 2>&1 &

The output (`upscaler_x{scale}.safetensors` plus a JSON of its figures) is a plain state dict that spandrel
recognises as "RealESRGAN Compact", loaded by inference/superres.py like any downloaded model.
"""

from __future__ import annotations

import argparse
import io
import json
import math
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image, ImageDraw
from safetensors.torch import save_file

from inference.superres import _import_spandrel
from tools.tiny import data

EVAL_SEED = 9_120_719  # the held-out scenes: a seed no training run draws from
TEST_SEED = 4_477_301  # the tests' scenes (tests/inference/test_upscale.py, the fake-Discord ones)
BENCH_SEED = 6_102_233  # bench/tools.py's
EVAL_SCENES = 48
EVAL_INPUT = 64


def render_at(scene: data.Scene, side: int) -> Image.Image:
    """The scene drawn at `side` pixels, anti-aliased like data.render (drawn 4x larger, box-downsampled)."""
    big = side * data.SUPERSAMPLE
    image = Image.new("RGB", (big, big), data.PALETTE[scene.background])
    draw = ImageDraw.Draw(image)
    for shape in scene.shapes:
        cx, cy, r = shape.x * big, shape.y * big, shape.radius * big
        fill = data.PALETTE[shape.colour]
        if shape.kind in ("circle", "ring"):
            draw.ellipse((cx - r, cy - r, cx + r, cy + r), fill=fill)
            if shape.kind == "ring":
                ri = r * data.RING_INNER
                draw.ellipse((cx - ri, cy - ri, cx + ri, cy + ri), fill=data.PALETTE[scene.background])
            continue
        draw.polygon([(cx + x * r, cy + y * r) for x, y in data.POLYGONS[shape.kind]], fill=fill)
    return image.resize((side, side), Image.Resampling.BOX)


def pair(scene: data.Scene, input_side: int, scale: int) -> tuple[np.ndarray, np.ndarray]:
    """(input, reference) uint8 arrays: the reference at input_side*scale, the input its area downscale."""
    reference = render_at(scene, input_side * scale)
    small = reference.resize((input_side, input_side), Image.Resampling.BOX)
    return np.asarray(small), np.asarray(reference)


def eval_pairs(
    scale: int, count: int = EVAL_SCENES, side: int = EVAL_INPUT, seed: int = EVAL_SEED
) -> list[tuple[np.ndarray, np.ndarray]]:
    """A fixed held-out set: `count` scenes from `seed`, inputs `side` pixels square. EVAL_SEED's picks the
    checkpoint; the tests (TEST_SEED) and the bench (BENCH_SEED) check on sets that choice never saw."""
    rng = np.random.default_rng(seed)
    return [pair(data.sample_scene(rng), side, scale) for _ in range(count)]


def psnr(a: np.ndarray, b: np.ndarray) -> float:
    mse = float(np.mean((a.astype(np.float64) - b.astype(np.float64)) ** 2))
    return 99.0 if mse == 0 else 10 * math.log10(255.0**2 / mse)


def to_png(pixels: np.ndarray) -> bytes:
    """uint8 (H, W, 3) pixels as PNG bytes (what an upscale job sends the worker)."""
    buf = io.BytesIO()
    Image.fromarray(pixels).save(buf, format="PNG")
    return buf.getvalue()


def from_png(data: bytes) -> np.ndarray:
    """A picture's bytes (what the worker or Discord gives back) as uint8 (H, W, 3) RGB pixels."""
    with Image.open(io.BytesIO(data)) as img:
        return np.asarray(img.convert("RGB"))


def bicubic(small: np.ndarray, scale: int) -> np.ndarray:
    h, w = small.shape[:2]
    return np.asarray(Image.fromarray(small).resize((w * scale, h * scale), Image.Resampling.BICUBIC))


def _batch(rng: np.random.Generator, scale: int, size: int, crop: int) -> tuple[torch.Tensor, torch.Tensor]:
    inputs, targets = [], []
    for _ in range(size):
        side = int(rng.integers(crop, 3 * crop))
        small, ref = pair(data.sample_scene(rng), side, scale)
        y, x = (int(v) for v in rng.integers(0, side - crop + 1, size=2))
        inputs.append(small[y : y + crop, x : x + crop])
        targets.append(ref[y * scale : (y + crop) * scale, x * scale : (x + crop) * scale])

    def stack(arrays: list[np.ndarray]) -> torch.Tensor:
        return torch.from_numpy(np.stack(arrays)).permute(0, 3, 1, 2).float() / 255.0

    return stack(inputs), stack(targets)


@torch.inference_mode()
def evaluate(
    model: torch.nn.Module, pairs: list[tuple[np.ndarray, np.ndarray]], scale: int
) -> dict[str, float]:
    model.eval()
    sr_scores, bic_scores = [], []
    for small, ref in pairs:
        x = torch.from_numpy(small[None].copy()).permute(0, 3, 1, 2).float() / 255.0
        y = model(x).clamp(0, 1).mul(255).round().byte()[0].permute(1, 2, 0).numpy()
        sr_scores.append(psnr(y, ref))
        bic_scores.append(psnr(bicubic(small, scale), ref))
    model.train()
    sr, bic = float(np.mean(sr_scores)), float(np.mean(bic_scores))
    return {"psnr_sr": round(sr, 3), "psnr_bicubic": round(bic, 3), "gain_db": round(sr - bic, 3)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--scale", type=int, default=2, choices=(2, 4))
    parser.add_argument("--minutes", type=float, default=30.0)
    parser.add_argument("--features", type=int, default=32)
    parser.add_argument("--convs", type=int, default=8)
    parser.add_argument("--batch", type=int, default=16)
    parser.add_argument("--crop", type=int, default=24, help="input pixels per training crop side")
    parser.add_argument("--lr", type=float, default=2e-3)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--loss", choices=("l1", "mse"), default="mse")
    parser.add_argument("--eval-every", type=int, default=250)
    parser.add_argument("--out", type=Path, default=Path("/work/art/sr"))
    args = parser.parse_args()

    torch.set_num_threads(1)
    torch.manual_seed(args.seed)
    rng = np.random.default_rng(args.seed)
    args.out.mkdir(parents=True, exist_ok=True)
    budget = args.minutes * 60.0
    started = time.monotonic()

    compact = _import_spandrel().architectures.Compact.Compact
    model = compact(num_feat=args.features, num_conv=args.convs, upscale=args.scale, act_type="prelu")
    opt = torch.optim.Adam(model.parameters(), lr=args.lr)
    held_out = eval_pairs(args.scale)
    name = f"upscaler_x{args.scale}"
    best: dict[str, float] = {"psnr_sr": -1.0}
    step = 0

    def save(tag: str, figures: dict[str, float]) -> None:
        state = {k: v.detach().clone().contiguous() for k, v in model.state_dict().items()}
        save_file(state, str(args.out / f"{name}{tag}.safetensors"))
        meta = {
            **figures,
            "step": step,
            "minutes": round((time.monotonic() - started) / 60, 2),
            "params": sum(p.numel() for p in model.parameters()),
            "args": {k: str(v) for k, v in vars(args).items()},
        }
        (args.out / f"{name}{tag}.json").write_text(json.dumps(meta, indent=1))

    while True:
        elapsed = time.monotonic() - started
        if elapsed >= budget:
            break
        # Cosine decay over the wall-clock budget: the rate follows time, not a step count we can't know.
        for group in opt.param_groups:
            group["lr"] = args.lr * (0.02 + 0.98 * 0.5 * (1 + math.cos(math.pi * elapsed / budget)))
        x, y = _batch(rng, args.scale, args.batch, args.crop)
        loss = (F.mse_loss if args.loss == "mse" else F.l1_loss)(model(x), y)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        step += 1
        if step % args.eval_every == 0:
            figures = evaluate(model, held_out, args.scale)
            print(f"step {step} {elapsed / 60:.1f} min loss {loss.item():.4f} {figures}", flush=True)
            save("_last", figures)
            if figures["psnr_sr"] > best["psnr_sr"]:
                best = figures
                save("", figures)
    figures = evaluate(model, held_out, args.scale)
    print(f"end step {step} {figures}", flush=True)
    if figures["psnr_sr"] > best["psnr_sr"]:
        save("", figures)
    save("_last", figures)


if __name__ == "__main__":
    main()
