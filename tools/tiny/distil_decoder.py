"""Distil a tiny autoencoder (diffusers' `AutoencoderTiny`, TAESD-style) from the bundled model's full one.

Run `python -m tools.tiny.distil_decoder [--minutes 15] [--out inference/tiny/model/tiny_decoder]`.

The bundled model's AutoencoderKL reads 4x16x16 latents into 64x64 pictures. Its tiny stand-in learns to
copy it: scenes from `tools.tiny.data` are rendered, encoded by the full encoder (a fresh sample of each
latent distribution, scaled as the denoiser sees it), and decoded by the full decoder; the tiny decoder
learns (scaled latent -> the full decoder's picture) and the tiny encoder (picture -> the full encoder's
scaled mean), so the pair can stand in for the full autoencoder in a pipeline (`pipe.vae`), img2img
included. The tiny model's `scaling_factor` is 1.0 because it works on latents already scaled, as TAESD
does for Stable Diffusion.

It runs on ONE CPU thread for at most `--minutes` of training (plus a minute or two to build the data and
measure, much longer on a loaded machine), keeps the checkpoint with the best held-out PSNR, and ends with
one JSON line: PSNR of the tiny decoder against the full decoder on held-out scenes, of each against the
drawn picture, and the decode time of both for a batch of 16 on one thread. The figures go in inference/tiny/MODEL_CARD.md.
"""

from __future__ import annotations

import argparse
import json
import logging
import math
import statistics
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from diffusers import AutoencoderKL, AutoencoderTiny

from tools.tiny import data

log = logging.getLogger("tools.tiny.distil_decoder")

ROOT = Path(__file__).resolve().parents[2]
FULL_VAE = ROOT / "inference" / "tiny" / "model" / "generate" / "vae"
DEFAULT_OUT = ROOT / "inference" / "tiny" / "model" / "tiny_decoder"
# Every channel count of a DecoderTiny is the same; no blocks at full resolution (only the output conv)
# keeps it faster than the full decoder, whose last stage runs 16-channel resnets at 64x64.
SHAPE = {
    "encoder_block_out_channels": (24, 24, 24),
    "num_encoder_blocks": (1, 1, 1),
    "decoder_block_out_channels": (32, 32, 32),
    "num_decoder_blocks": (3, 1, 0),
    "latent_channels": 4,
    "scaling_factor": 1.0,
}
SEED = 23
TRAIN_SCENES = 4096
VAL_SCENES = 256
BATCH = 32
# Training reads random 8x8-latent (32x32-pixel) windows: a quarter of the work per example, and a
# convolutional decoder learns the same thing from windows as from whole pictures.
CROP = 8
EVAL_EVERY_S = 120.0


def scenes_tensor(rng: np.random.Generator, n: int) -> torch.Tensor:
    """n pictures of random scenes as Bx3x64x64 in [-1, 1] (single shapes and groups, as in training)."""
    pictures = [data.to_array(data.render(data.sample_scene(rng, centre_bias=True))) for _ in range(n)]
    return torch.from_numpy(np.stack(pictures)).permute(0, 3, 1, 2).contiguous()


@torch.no_grad()
def teach(vae: AutoencoderKL, images: torch.Tensor, sample: bool, seed: int) -> dict[str, torch.Tensor]:
    """The full autoencoder's view of the pictures: scaled latents, its decoding of them, its scaled mean."""
    scale = vae.config.scaling_factor
    generator = torch.Generator().manual_seed(seed)
    latents, decoded, means = [], [], []
    for chunk in images.split(64):
        dist = vae.encode(chunk).latent_dist
        z = dist.mean + dist.std * torch.randn(dist.mean.shape, generator=generator) if sample else dist.mean
        latents.append(z * scale)
        decoded.append(vae.decode(z).sample.clamp(-1, 1))
        means.append(dist.mean * scale)
    return {
        "images": images,
        "latents": torch.cat(latents),
        "decoded": torch.cat(decoded),
        "means": torch.cat(means),
    }


def psnr(a: torch.Tensor, b: torch.Tensor) -> float:
    """PSNR in dB of two batches of [-1, 1] pictures, over 8-bit pixel values (peak 255)."""
    pa, pb = ((a.clamp(-1, 1) + 1) * 127.5).round(), ((b.clamp(-1, 1) + 1) * 127.5).round()
    mse = float(((pa - pb) ** 2).mean())
    return 10 * math.log10(255.0**2 / max(mse, 1e-10))


def weighted_loss(out: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """L1 + MSE against the teacher, pixels unlike the background counting five times (as the VAE's own)."""
    background = target.flatten(2).median(dim=2).values[:, :, None, None]
    weight = 1.0 + 4.0 * ((target - background).abs().sum(dim=1, keepdim=True) > 0.3).float()
    return (weight * ((out - target).abs() + (out - target) ** 2)).mean()


@torch.no_grad()
def evaluate(
    tiny: AutoencoderTiny, val: dict[str, torch.Tensor], full: AutoencoderKL | None = None
) -> dict[str, float]:
    """Held-out scores; with `full`, also the tiny encoder read back by the full decoder (slower)."""
    tiny.eval()
    decoded = torch.cat([tiny.decode(z).sample for z in val["latents"].split(64)]).clamp(-1, 1)
    encoded = torch.cat([tiny.encode(x).latents for x in val["images"].split(64)])
    scores = {
        "psnr_vs_full_decoder_db": round(psnr(decoded, val["decoded"]), 2),
        "psnr_full_decoder_vs_picture_db": round(psnr(val["decoded"], val["images"]), 2),
        "psnr_tiny_decoder_vs_picture_db": round(psnr(decoded, val["images"]), 2),
        "encoder_latent_rmse": round(float(((encoded - val["means"]) ** 2).mean().sqrt()), 4),
    }
    if full is not None:
        through = torch.cat([full.decode(z / full.config.scaling_factor).sample for z in encoded.split(64)])
        scores["psnr_tiny_encoder_then_full_decoder_vs_full_db"] = round(psnr(through, val["decoded"]), 2)
    tiny.train()
    return scores


def windows(train: dict[str, torch.Tensor], rng: np.random.Generator) -> tuple[torch.Tensor, ...]:
    """A batch of random CROP x CROP latent windows and the matching picture windows (4x larger)."""
    idx = torch.from_numpy(rng.integers(0, len(train["latents"]), size=BATCH))
    side = train["latents"].shape[-1]
    y, x = (int(v) for v in rng.integers(0, side - CROP + 1, size=2))
    f = train["images"].shape[-1] // side
    latent = (slice(None), slice(None), slice(y, y + CROP), slice(x, x + CROP))
    pixel = (slice(None), slice(None), slice(y * f, (y + CROP) * f), slice(x * f, (x + CROP) * f))
    return (
        train["latents"][idx][latent],
        train["decoded"][idx][pixel],
        train["images"][idx][pixel],
        train["means"][idx][latent],
    )


@torch.no_grad()
def decode_ms(fn: Callable[[torch.Tensor], object], latents: torch.Tensor, repeats: int = 15) -> float:
    fn(latents)
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn(latents)
        times.append(time.perf_counter() - start)
    return round(statistics.median(times) * 1000, 2)


def main(argv: list[str] | None = None) -> dict[str, object]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--minutes", type=float, default=15.0, help="training time (20 at most)")
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT)
    parser.add_argument("--train-scenes", type=int, default=TRAIN_SCENES)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
    if args.minutes > 20:
        parser.error("--minutes is at most 20")
    torch.set_num_threads(1)
    torch.manual_seed(SEED)
    rng = np.random.default_rng(SEED)
    full = AutoencoderKL.from_pretrained(str(FULL_VAE)).eval().requires_grad_(False)

    started = time.perf_counter()
    train = teach(full, scenes_tensor(rng, args.train_scenes), sample=True, seed=SEED)
    val = teach(full, scenes_tensor(rng, VAL_SCENES), sample=False, seed=SEED + 1)
    log.info(
        "data: %d train, %d held-out scenes in %.0f s",
        args.train_scenes,
        VAL_SCENES,
        time.perf_counter() - started,
    )

    tiny = AutoencoderTiny(**SHAPE)
    params = sum(p.numel() for p in tiny.parameters())
    optimiser = torch.optim.AdamW(tiny.parameters(), lr=2e-3, weight_decay=1e-4)
    budget = args.minutes * 60
    start = time.perf_counter()
    best: dict[str, float] = {"psnr_vs_full_decoder_db": -1.0}
    last_eval, steps = start, 0
    while (elapsed := time.perf_counter() - start) < budget:
        for group in optimiser.param_groups:  # cosine decay over the time budget
            group["lr"] = 2e-4 + (2e-3 - 2e-4) * 0.5 * (1 + math.cos(math.pi * elapsed / budget))
        latents, targets, images, means = windows(train, rng)
        decoded = tiny.decode(latents).sample
        encoded = tiny.encode(images).latents
        loss = weighted_loss(decoded, targets) + F.mse_loss(encoded, means)
        optimiser.zero_grad(set_to_none=True)
        loss.backward()
        optimiser.step()
        steps += 1
        if time.perf_counter() - last_eval > EVAL_EVERY_S or time.perf_counter() - start >= budget:
            last_eval = time.perf_counter()
            scores = evaluate(tiny, val)
            log.info("step %d (%.0f s): loss %.4f %s", steps, last_eval - start, loss.item(), scores)
            if scores["psnr_vs_full_decoder_db"] > best["psnr_vs_full_decoder_db"]:
                best = scores
                tiny.save_pretrained(str(args.out))

    tiny = AutoencoderTiny.from_pretrained(str(args.out)).eval()
    batch = val["latents"][:16]
    report: dict[str, object] = {
        **evaluate(tiny, val, full),
        "steps": steps,
        "train_minutes": round((time.perf_counter() - start) / 60, 1),
        "params": params,
        "bytes": sum(f.stat().st_size for f in args.out.iterdir()),
        "threads": 1,
        "full_decode_ms_batch16": decode_ms(lambda z: full.decode(z / full.config.scaling_factor), batch),
        "tiny_decode_ms_batch16": decode_ms(tiny.decode, batch),
    }
    report["decode_speedup"] = round(report["full_decode_ms_batch16"] / report["tiny_decode_ms_batch16"], 2)  # type: ignore[operator]
    print(json.dumps(report))
    return report


if __name__ == "__main__":
    main()
