"""Fine-tunes the tiny shapes model's denoiser into an inpainting denoiser (9 input channels), within a budget.

Run `python -m tools.tiny.train_inpaint [--minutes N] [--steps N] [--out DIR] [--threads N] [--seed S]`.

The denoiser is Stable Diffusion's inpainting form: the noisy latent (4 channels), the mask at latent size
(1, nearest-neighbour resized, 1 = paint) and the latent of the picture with the masked pixels set to 0 (4,
scaled by the autoencoder's factor), exactly what `StableDiffusionInpaintPipeline` feeds a 9-channel UNet.
It starts from the shipped text-to-image denoiser (`inference/tiny/model/generate`), the five new input
channels' weights at zero, so at step 0 it draws what the generate model draws; the shipped autoencoder and
text encoder are frozen and reused as they are, so only the UNet is new (and shipped).

Each example is a procedural scene (`tools/tiny/data.py`, phrased afresh at every use by
`tools/tiny/phrasing.py`) with a random mask of the kinds brushfire's tools make (`MASK_MIX`): the 3x3 grid
cells covering one shape (vary region: the caption says what belongs there), random grid cells, a border
ring (zoom out 1.5x/2x), one side's strip (pan), or everything (plain text-to-image, for guidance). Training
seeds are `--seed`; the evaluation (`bench/tools_inpaint.py`) draws its scenes from other seeds.

It stops at `--minutes` (wall clock) or `--steps`, checkpoints every minute under `<out>/train-state/` (a
rerun resumes), and writes the EMA denoiser to `<out>/inpaint/unet` (float16 safetensors).
"""

from __future__ import annotations

import argparse
import copy
import json
import logging
from dataclasses import asdict
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from diffusers import StableDiffusionPipeline, UNet2DConditionModel

from inference.tiny import MODEL_DIR
from tools.tiny import data, phrasing, train
from tools.tiny.diffusers_types import Denoiser, Pipeline, Vae

log = logging.getLogger(__name__)

NAME = "inpaint"
GRID = 3
# Which mask each example gets, and how often.
MASK_MIX = {"cover": 0.35, "cells": 0.2, "border": 0.15, "side": 0.2, "full": 0.1}
DEFAULT_OUT = Path("/work/art/inpaint")


def inpaint_unet_from(unet: Denoiser) -> Denoiser:
    """A 9-channel denoiser started from the text-to-image one; the mask and picture channels start at zero."""
    inpaint = train.make_unet(in_channels=9)
    state = unet.state_dict()
    weight = state["conv_in.weight"]
    extra = torch.zeros(weight.shape[0], 5, *weight.shape[2:], dtype=weight.dtype)
    state["conv_in.weight"] = torch.cat([weight, extra], dim=1)
    inpaint.load_state_dict(state)
    return inpaint


def _cells_mask(cells: set[tuple[int, int]], side: int = data.SIZE) -> np.ndarray:
    """A 0/1 mask of the given (row, col) cells of a 3x3 grid, edges rounded as brushfire's worker rounds them."""
    mask = np.zeros((side, side), dtype=np.float32)
    edges = [round(i * side / GRID) for i in range(GRID + 1)]
    for row, col in cells:
        mask[edges[row] : edges[row + 1], edges[col] : edges[col + 1]] = 1.0
    return mask


def _cover_cells(shape: data.Shape, margin: float = 0.02) -> set[tuple[int, int]]:
    """The grid cells a shape's bounding box (plus a margin) touches."""
    lo = [max(0, int((c - shape.radius - margin) * GRID)) for c in (shape.y, shape.x)]
    hi = [min(GRID - 1, int((c + shape.radius + margin) * GRID)) for c in (shape.y, shape.x)]
    return {(r, c) for r in range(lo[0], hi[0] + 1) for c in range(lo[1], hi[1] + 1)}


def random_mask(rng: np.random.Generator, scene: data.Scene) -> np.ndarray:
    """One mask (1 = paint) of a kind drawn from MASK_MIX, for a 64x64 picture of `scene`."""
    kinds = list(MASK_MIX)
    kind = kinds[int(rng.choice(len(kinds), p=list(MASK_MIX.values())))]
    side = data.SIZE
    if kind == "cover":
        shape = scene.shapes[int(rng.integers(len(scene.shapes)))]
        cells = _cover_cells(shape)
        cells |= {(r, c) for r in range(GRID) for c in range(GRID) if rng.random() < 0.1}
        return _cells_mask(cells)
    if kind == "cells":
        cells = {(r, c) for r in range(GRID) for c in range(GRID) if rng.random() < 0.35}
        return _cells_mask(cells or {(int(rng.integers(GRID)), int(rng.integers(GRID)))})
    mask = np.zeros((side, side), dtype=np.float32)
    if kind == "border":
        zoom = float(rng.uniform(1.4, 2.1))
        inner = round(side / zoom)
        lo = (side - inner) // 2 + int(rng.integers(-1, 2))
        mask[:] = 1.0
        mask[lo : lo + inner, lo : lo + inner] = 0.0
        return mask
    if kind == "side":
        width = round(side * float(rng.uniform(0.25, 0.55)))
        where = int(rng.integers(4))
        if where == 0:
            mask[:, :width] = 1.0
        elif where == 1:
            mask[:, side - width :] = 1.0
        elif where == 2:
            mask[:width, :] = 1.0
        else:
            mask[side - width :, :] = 1.0
        return mask
    mask[:] = 1.0
    return mask


@torch.no_grad()
def encode_inpaint(vae: Vae, rng: np.random.Generator, n: int) -> train.Encoded:
    """Scenes, their masks, and the 5 condition channels the inpainting pipeline feeds the denoiser."""
    images, scenes = train.scene_batch(rng, n)
    masks = torch.from_numpy(np.stack([random_mask(rng, s) for s in scenes]))[:, None]
    target = vae.encode(images).latent_dist
    # As StableDiffusionInpaintPipeline: masked pixels become 0, the latent is a sample, scaled.
    masked = vae.encode(images * (masks < 0.5)).latent_dist.sample() * vae.config.scaling_factor
    small = F.interpolate(masks, size=masked.shape[-2:])
    return train.Encoded(target.mean, target.std, scenes, torch.cat([small, masked], dim=1))


def load_generate() -> Pipeline:
    return StableDiffusionPipeline.from_pretrained(MODEL_DIR / "generate", torch_dtype=torch.float32)


def train_inpaint(options: train.TrainOptions) -> train.PartStats:
    torch.manual_seed(options.seed + 4)
    base = load_generate()
    vae = base.vae.eval().requires_grad_(False)
    text_encoder = base.text_encoder.eval().requires_grad_(False)
    tokenizer = base.tokenizer
    scheduler = train.make_noise_scheduler(False)
    unet = inpaint_unet_from(base.unet)
    settings = train.SETTINGS[NAME]
    optimizer = torch.optim.AdamW(unet.parameters(), lr=settings.lr, weight_decay=1e-2)
    trainee = train.Trainee(
        NAME,
        {"unet": unet},
        {"unet": copy.deepcopy(unet).requires_grad_(False)},
        optimizer,
        np.random.default_rng([options.seed, 7]),
    )
    batch = train.batch_size(options, NAME)
    pool = train.LatentPool(lambda rng, n: encode_inpaint(vae, rng, n), size=options.pool)

    def step(t: train.Trainee) -> torch.Tensor:
        pool.refresh(t.rng)
        examples = pool.sample(t.rng, batch)
        captions = [phrasing.describe(t.rng, scene) for scene in examples.labels]
        with torch.no_grad():
            text = text_encoder(train.token_ids(tokenizer, train.drop_captions(t.rng, captions)))[0]
        return train.denoise_loss(unet, scheduler, examples.latents(vae), text, examples.condition)

    stats = train.run_loop(options, trainee, step, setup=pool.fill)
    ema = train.ema_denoiser(trainee)
    folder = options.out / NAME / "unet"
    half = copy.deepcopy(ema).to(dtype=torch.float16)
    half.save_pretrained(folder, safe_serialization=True)
    log.info("wrote %s", folder)
    return stats


def load_inpaint_unet(folder: Path) -> Denoiser:
    return UNet2DConditionModel.from_pretrained(folder, torch_dtype=torch.float32)


def parse_args(argv: list[str] | None = None) -> train.TrainOptions:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--minutes", type=float, default=55.0)
    parser.add_argument("--steps", type=int, default=None)
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--seed", type=int, default=train.TrainOptions.seed)
    parser.add_argument("--pool", type=int, default=2048)
    parser.add_argument("--batch", type=int, default=None)
    parser.add_argument("--lr", type=float, default=None)
    args = parser.parse_args(argv)
    if args.minutes <= 0 or args.threads <= 0 or (args.steps is not None and args.steps <= 0):
        parser.error("--minutes, --steps and --threads must be positive")
    if args.pool < 64 or args.pool % 64:
        parser.error("--pool must be a positive multiple of 64")
    return train.TrainOptions(
        part=NAME, minutes=args.minutes, steps=args.steps, out=args.out, threads=args.threads,
        seed=args.seed, pool=args.pool, batch=args.batch, lr=args.lr,
    )  # fmt: skip


def main(argv: list[str] | None = None) -> None:
    options = parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    torch.set_num_threads(options.threads)
    print(json.dumps(asdict(train_inpaint(options))))


if __name__ == "__main__":
    main()
