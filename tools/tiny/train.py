"""Trains the bundled tiny text-to-image and edit models on procedural shape scenes, within a time budget.

Run `python -m tools.tiny.train [--part vae|text|unet|edit|all] [--minutes N] [--out DIR] [--threads N]
[--seed S]`. The parts build on each other: the autoencoder first; then `text`, a first denoiser trained
together with the text encoder (which starts from nothing); then, with the autoencoder and text encoder
frozen and shared, the text-to-image denoiser (`unet`, continued from the text part's) and the
InstructPix2Pix-style edit denoiser (`edit`, also started from the text part's). Those two only read what
came before, so they can train at the same time, one core each. Each part stops after `--minutes` of its
own (or `--steps`), saves its state to `<out>/train-state/` every minute so a rerun resumes where it
stopped, and the last two parts write diffusers pipeline folders, `<out>/generate` and `<out>/edit`
(float16 safetensors for the UNets and autoencoder). The data and the initial weights come from `--seed`;
with `--steps` an uninterrupted run is repeatable (a resumed one re-encodes its latent pool, so it differs
slightly), with only `--minutes` the number of steps depends on the machine's speed.
"""

from __future__ import annotations

import argparse
import copy
import hashlib
import json
import logging
import math
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Literal, get_args

import numpy as np
import torch
import torch.nn.functional as F
from diffusers import (
    AutoencoderKL,
    DDPMScheduler,
    DPMSolverMultistepScheduler,
    StableDiffusionInstructPix2PixPipeline,
    StableDiffusionPipeline,
    UNet2DConditionModel,
)
from torch import nn
from transformers import CLIPTextConfig, CLIPTextModel, PreTrainedTokenizerFast

from inference.tiny import MODEL_DIR
from tools.tiny import data, lexicon, phrasing
from tools.tiny.diffusers_types import Denoiser, NoiseScheduler, Pipeline, Vae

log = logging.getLogger(__name__)

# Where the edit denoiser starts (TrainOptions.edit_init).
EditInit = Literal["scratch", "text"]

DEFAULT_OUT = MODEL_DIR
PARTS = ("vae", "text", "unet", "edit")
MAX_TOKENS = lexicon.MAX_TOKENS
TEXT_DIM = 64
# The autoencoder is convolutional, so it learns as well from 32x32 crops at a quarter of the cost.
VAE_CROP = 32
# The autoencoder's three blocks halve the picture twice: 64x64 pixels to 16x16 latent cells.
LATENT_DOWNSCALE = 4
OFFSET_NOISE = 0.1
# The edit denoiser drops the picture, and both picture and instruction, this often each.
DROP = 0.05
CHECKPOINT_SECONDS = 60.0
LOG_SECONDS = 30.0


@dataclass(frozen=True)
class TrainOptions:
    """The command line, parsed."""

    part: str = "all"
    minutes: float = 30.0
    steps: int | None = None
    out: Path = DEFAULT_OUT
    threads: int = 2
    seed: int = 20261129
    pool: int = 4096
    # Zero terminal SNR with v-prediction (see `make_noise_scheduler`). Off by default: at 1,252 steps both
    # schedules drew the right background 98 % of the time at their best guidance, and at the pipelines'
    # guidance 5 the old one did better (colour 80 % vs 63 %); see MODEL_CARD.md.
    zero_snr: bool = False
    # Overrides of the part's own batch size and peak learning rate (`SETTINGS`), for experiments.
    batch: int | None = None
    lr: float | None = None
    # How often the edit denoiser sees the picture without its instruction (InstructPix2Pix: 5 %).
    edit_text_drop: float = 0.05
    # Extra loss weight on the latent cells a shape covers (see `shape_weights`); 0 is a plain loss.
    shape_weight: float = 0.0
    # The edit denoiser's least loss weight on the clean latent at the noisiest steps (`min_snr_weights`).
    snr_floor: float = 0.0
    # Keep the text encoder at its (seeded) random start instead of training it in the text part. Trained
    # with the first denoiser it learned the colour words and left the shape words nearly alike (circle and
    # square 5 % apart); the random one keeps every word apart, and shape accuracy went 63 % -> 90 %.
    random_text_encoder: bool = True
    # Where the edit denoiser starts: "scratch" (random weights, its picture channels too) or "text" (the text
    # part's denoiser with zero picture channels, as InstructPix2Pix starts from SD). Started from the text
    # denoiser it kept drawing from the instruction and barely used the picture (picture-channel weights
    # 0.004-0.0065 against 0.08 after 4,497 steps; shape kept 36 %); see MODEL_CARD.md.
    edit_init: EditInit = "scratch"
    # A budget in the process's own CPU time as well (None: wall clock only). On a machine other people
    # share, wall-clock minutes buy fewer steps from one run to the next; CPU minutes buy the same compute.
    # A part stops at whichever budget it reaches first.
    cpu_minutes: float | None = None
    # Fine-tuning: continue the edit denoiser of this edit pipeline folder (its autoencoder, text encoder and
    # tokenizer are read from there too, frozen) instead of starting one from `edit_init`.
    edit_from: Path | None = None
    # Extra loss weight on the latent cells of a shape that the edit leaves as it was (`cell_weights`): a
    # background edit must not tint the shape. 0 is a plain loss.
    keep_weight: float = 0.0
    # Extra loss weight on the latent cells of a shape that the edit changes (`changed_shape_cells`: the
    # shape a recolour repaints, the old and new place of a moved one): the counterweight to `keep_weight`,
    # so that teaching a background edit to keep the shape does not teach a recolour to keep it too.
    change_weight: float = 0.0
    # What the edit denoiser learns for a picture with no instruction (the `edit_text_drop` share): False,
    # the edited picture, as InstructPix2Pix trains it, so the untold prediction is the average over every
    # kind of edit; True, the picture itself ("no instruction, no change"). Classifier-free guidance scales
    # the difference between the told and the untold prediction: where the average repaints the shape (a
    # recolour is 42 % of the edits), a background edit's guidance pushes the shape's colour away from that
    # average, to a neighbouring hue. With the untold prediction equal to the picture, the cells an
    # instruction keeps have no difference to scale; but the whole edit is then the difference, and guidance
    # 3 to 6 overshoots it (measured worse on every figure: MODEL_CARD.md, "Guidance tinted the shape").
    untold_keeps: bool = False
    # The share of background edits among the edit examples (None: `EDIT_MIX` as it is); the other kinds
    # keep their proportions to one another.
    background_edits: float | None = None
    # The whole edit mix, "KIND=SHARE,..." (e.g. "recolour=0.42,background=0.48"): the named kinds take
    # their shares, the others share what is left in `EDIT_MIX`'s proportions. None: `background_edits`.
    edit_mix: str | None = None
    # Fine-tuning: continue the text-to-image denoiser of this generate pipeline folder (part `unet`; its
    # autoencoder, text encoder and tokenizer are read from there too, frozen) instead of the text part's.
    unet_from: Path | None = None

    @property
    def work(self) -> Path:
        return self.out / "train-state"


@dataclass(frozen=True)
class PartSettings:
    """Optimiser and batch settings of one part."""

    batch: int
    lr: float
    warmup: int = 100
    ema_decay: float = 0.999


SETTINGS = {
    "vae": PartSettings(batch=32, lr=1e-3, ema_decay=0.0),
    "text": PartSettings(batch=64, lr=5e-4),
    "unet": PartSettings(batch=64, lr=5e-4),
    "edit": PartSettings(batch=48, lr=5e-4),
    # tools/tiny/train_inpaint.py: a fine-tune of the shipped denoiser, so a lower rate and a shorter EMA.
    "inpaint": PartSettings(batch=32, lr=2e-4, warmup=50, ema_decay=0.995),
}


@dataclass
class Progress:
    """How far a part has come; saved with its checkpoint so a resumed run keeps counting."""

    step: int = 0
    seconds: float = 0.0
    losses: list[float] = field(default_factory=list)
    # CPU time of the training process (all its threads); None in checkpoints from before it was counted.
    cpu_seconds: float | None = None


@dataclass(frozen=True)
class PartStats:
    """What one part's run measured, written to `<work>/<part>-stats.json` for planning and the model card."""

    part: str
    steps: int
    seconds: float
    cpu_seconds: float
    steps_per_second: float
    samples_per_second: float
    final_loss: float
    threads: int
    parameters: int


# ---------------------------------------------------------------- the models


def make_tokenizer() -> PreTrainedTokenizerFast:
    """The word-level prompt tokenizer with its normaliser (inference/tiny/lexicon.py); it ships with the model."""
    return lexicon.make_tokenizer()


def make_vae() -> Vae:
    """About 0.7M parameters; 64x64x3 pictures to 4x16x16 latents."""
    return AutoencoderKL(
        in_channels=3,
        out_channels=3,
        latent_channels=4,
        block_out_channels=(16, 32, 64),
        down_block_types=("DownEncoderBlock2D",) * 3,
        up_block_types=("UpDecoderBlock2D",) * 3,
        layers_per_block=1,
        norm_num_groups=8,
        sample_size=64,
    )


def make_text_encoder(tokenizer: PreTrainedTokenizerFast) -> CLIPTextModel:
    """About 0.29M parameters: 4 layers of width 64 over at most 32 tokens."""
    config = CLIPTextConfig(
        vocab_size=len(tokenizer),
        hidden_size=TEXT_DIM,
        intermediate_size=6 * TEXT_DIM,
        num_hidden_layers=4,
        num_attention_heads=4,
        max_position_embeddings=MAX_TOKENS,
        projection_dim=TEXT_DIM,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
    )
    return CLIPTextModel(config)


def make_unet(in_channels: int = 4) -> Denoiser:
    """About 4.1M parameters: 32/64/128 channels, cross-attention in the two lower-resolution blocks."""
    return UNet2DConditionModel(
        sample_size=16,
        in_channels=in_channels,
        out_channels=4,
        block_out_channels=(32, 64, 128),
        layers_per_block=1,
        down_block_types=("DownBlock2D", "CrossAttnDownBlock2D", "CrossAttnDownBlock2D"),
        up_block_types=("CrossAttnUpBlock2D", "CrossAttnUpBlock2D", "UpBlock2D"),
        cross_attention_dim=TEXT_DIM,
        attention_head_dim=16,
        norm_num_groups=16,
    )


def make_noise_scheduler(zero_snr: bool = False) -> NoiseScheduler:
    """The training schedule: Stable Diffusion's scaled-linear betas, with `zero_snr` rescaled to zero terminal SNR.

    Unrescaled, the last step keeps sqrt(alpha_bar) = 0.068 of the picture. On 16x16 latents the mean of
    unit noise has a spread of only 1/16, so the picture's mean (its background colour) stays readable at
    the last step, the model learns to take it from the noise, and at sampling time takes it from the
    random start. With zero terminal SNR the last step holds nothing of the picture; epsilon prediction is
    undefined there, hence v-prediction, and sampling must start at the last step ("trailing" spacing).
    """
    if not zero_snr:
        return DDPMScheduler(
            num_train_timesteps=1000, beta_start=0.00085, beta_end=0.012, beta_schedule="scaled_linear"
        )
    return DDPMScheduler(
        num_train_timesteps=1000,
        beta_start=0.00085,
        beta_end=0.012,
        beta_schedule="scaled_linear",
        rescale_betas_zero_snr=True,
        prediction_type="v_prediction",
        timestep_spacing="trailing",
    )


def make_sampler(zero_snr: bool = False) -> NoiseScheduler:
    """The pipelines' default sampler: DPM-Solver++ on the training noise schedule."""
    return DPMSolverMultistepScheduler.from_config(
        make_noise_scheduler(zero_snr).config, algorithm_type="dpmsolver++"
    )


def parameter_count(*modules: nn.Module) -> int:
    return sum(p.numel() for m in modules for p in m.parameters())


# ---------------------------------------------------------------- batches


def to_tensor(images: list) -> torch.Tensor:
    """PIL pictures as a Bx3xHxW float tensor in [-1, 1]."""
    return torch.from_numpy(np.stack([data.to_array(im) for im in images])).permute(0, 3, 1, 2).contiguous()


def scene_batch(rng: np.random.Generator, n: int) -> tuple[torch.Tensor, list[data.Scene]]:
    """Pictures and the scenes they show; a caption is phrased from the scene each time it is used."""
    scenes = [data.sample_scene(rng, centre_bias=True) for _ in range(n)]
    return to_tensor([data.render(s) for s in scenes]), scenes


def crop_batch(rng: np.random.Generator, n: int) -> torch.Tensor:
    images, _ = scene_batch(rng, n)
    offsets = rng.integers(0, data.SIZE - VAE_CROP + 1, size=(n, 2))
    return torch.stack(
        [im[:, y : y + VAE_CROP, x : x + VAE_CROP] for im, (y, x) in zip(images, offsets, strict=True)]
    )


@dataclass(frozen=True)
class EditBatch:
    before: torch.Tensor
    after: torch.Tensor
    triples: list[data.EditTriple]


# How often each kind of edit is drawn. Recolouring and changing the background keep the picture's layout
# and are what people ask for most, so they get most of the examples; the others keep the model general.
EDIT_MIX: dict[data.EditKind, float] = {
    data.EditKind.RECOLOUR: 0.4,
    data.EditKind.BACKGROUND: 0.4,
    data.EditKind.MOVE: 0.05,
    data.EditKind.RESIZE: 0.05,
    data.EditKind.ADD: 0.05,
    data.EditKind.REMOVE: 0.05,
}


def edit_mix(background: float | None = None) -> dict[data.EditKind, float]:
    """`EDIT_MIX`, or with background edits at the share `background` and the rest scaled to fill the others."""
    if background is None:
        return dict(EDIT_MIX)
    others = {k: w for k, w in EDIT_MIX.items() if k is not data.EditKind.BACKGROUND}
    scale = (1.0 - background) / sum(others.values())
    return {data.EditKind.BACKGROUND: background} | {k: w * scale for k, w in others.items()}


def parse_edit_mix(text: str) -> dict[data.EditKind, float]:
    """`EDIT_MIX` with the shares named in `text` ("recolour=0.42,background=0.48"); the kinds not named
    share the rest in their `EDIT_MIX` proportions. Raises ValueError on an unknown kind, a bad share, a
    kind named twice or shares summing over 1 (or to under 1 when every kind is named)."""
    named: dict[data.EditKind, float] = {}
    for item in text.split(","):
        kind_text, sep, share_text = item.partition("=")
        try:
            kind, share = data.EditKind(kind_text.strip().lower()), float(share_text)
        except ValueError:
            raise ValueError(
                f"{item.strip()!r} is not KIND=SHARE with KIND one of {list(EDIT_MIX)}"
            ) from None
        if not sep or not 0.0 <= share <= 1.0 or kind in named:
            raise ValueError(f"{item.strip()!r}: each kind once, with a share between 0 and 1")
        named[kind] = share
    rest = 1.0 - sum(named.values())
    others = {k: w for k, w in EDIT_MIX.items() if k not in named}
    if rest < -1e-9 or (not others and abs(rest) > 1e-9) or (others and rest <= 0):
        raise ValueError(
            f"the shares in {text!r} must leave a positive rest for the kinds not named, or sum to 1"
        )
    scale = rest / sum(others.values()) if others else 0.0
    return {k: named[k] if k in named else EDIT_MIX[k] * scale for k in EDIT_MIX}


def edit_batch(rng: np.random.Generator, n: int, mix: dict[data.EditKind, float] | None = None) -> EditBatch:
    mix = EDIT_MIX if mix is None else mix
    kinds, weights = list(mix), list(mix.values())
    picks = rng.choice(len(kinds), size=n, p=np.asarray(weights) / sum(weights))
    triples = [data.sample_edit(rng, kinds[i]) for i in picks]
    return EditBatch(
        before=to_tensor([data.render(t.before) for t in triples]),
        after=to_tensor([data.render(t.after) for t in triples]),
        triples=triples,
    )


def token_ids(tokenizer: PreTrainedTokenizerFast, texts: list[str]) -> torch.Tensor:
    return tokenizer(
        texts, padding="max_length", max_length=MAX_TOKENS, truncation=True, return_tensors="pt"
    ).input_ids


@dataclass(frozen=True)
class Encoded:
    """Training examples already through the autoencoder's encoder: the latent distribution of the
    picture to draw, what it shows (a scene, or an edit) to phrase a caption or instruction from at each
    use, and (for edits) the picture to start from as the pipeline feeds it."""

    mean: torch.Tensor
    std: torch.Tensor
    labels: list
    condition: torch.Tensor | None = None
    # For edits: per latent cell, the share of its pixels that lie on a shape and stay as they were, and
    # the share that lie on a shape (before or after) and change.
    keep: torch.Tensor | None = None
    change: torch.Tensor | None = None

    def latents(self, vae: Vae) -> torch.Tensor:
        """A fresh sample of each example's latent, scaled as the denoiser sees it."""
        return (self.mean + self.std * torch.randn_like(self.std)) * vae.config.scaling_factor


@torch.no_grad()
def encode_scenes(vae: Vae, rng: np.random.Generator, n: int) -> Encoded:
    images, scenes = scene_batch(rng, n)
    dist = vae.encode(images).latent_dist
    return Encoded(dist.mean, dist.std, scenes)


# A pixel lies on a shape when its colour is this far (summed over channels, in [-1, 1] units) from the
# picture's median, its background, as in `vae_loss`; it is kept when before and after differ by less than
# KEPT_PIXEL (rendering is deterministic, so a kept pixel is equal up to float noise).
SHAPE_PIXEL = 0.3
KEPT_PIXEL = 0.05


def _on_shape(picture: torch.Tensor) -> torch.Tensor:
    background = picture.flatten(2).median(dim=2).values[:, :, None, None]
    return (picture - background).abs().sum(dim=1, keepdim=True) > SHAPE_PIXEL


def kept_shape_cells(before: torch.Tensor, after: torch.Tensor) -> torch.Tensor:
    """Per latent cell (N x 1 x H/4 x W/4), the share of its pixels that lie on a shape of `before` and that
    the edit leaves unchanged: the shape itself in a background edit, the shapes an edit does not name."""
    kept = (before - after).abs().sum(dim=1, keepdim=True) < KEPT_PIXEL
    return F.avg_pool2d((_on_shape(before) & kept).float(), LATENT_DOWNSCALE)


def changed_shape_cells(before: torch.Tensor, after: torch.Tensor) -> torch.Tensor:
    """Per latent cell, the share of its pixels that lie on a shape of `before` or of `after` and that the
    edit changes: the shape a recolour repaints, where a shape was and is after a move; in a background edit
    only part of the cells on a shape's rim, whose pixels blend the shape into the background that changed."""
    changed = (before - after).abs().sum(dim=1, keepdim=True) >= KEPT_PIXEL
    return F.avg_pool2d(((_on_shape(before) | _on_shape(after)) & changed).float(), LATENT_DOWNSCALE)


@torch.no_grad()
def encode_edits(
    vae: Vae, rng: np.random.Generator, n: int, mix: dict[data.EditKind, float] | None = None
) -> Encoded:
    edits = edit_batch(rng, n, mix)
    after = vae.encode(edits.after).latent_dist
    # The pipeline conditions on the picture's unscaled latent mode; so must training.
    before = vae.encode(edits.before).latent_dist.mode()
    return Encoded(
        after.mean,
        after.std,
        edits.triples,
        before,
        kept_shape_cells(edits.before, edits.after),
        changed_shape_cells(edits.before, edits.after),
    )


# The optional per-example tensors of `Encoded` (first dimension: the example) that the pool stores, draws
# and refreshes beside `mean` and `std`.
_OPTIONAL_PER_EXAMPLE = ("condition", "keep", "change")


class LatentPool:
    """A pool of encoded examples that batches are drawn from, a few replaced with fresh ones every step.

    Encoding a whole batch afresh every step costs more than the denoiser's own step on a CPU; the pool
    encodes each example once and uses it a few times, while a steady trickle keeps the data new.
    """

    def __init__(
        self, encode: Callable[[np.random.Generator, int], Encoded], size: int = 4096, refresh: int = 8
    ) -> None:
        self._encode = encode
        self.size = size
        self.refresh_count = refresh
        self._pool: Encoded | None = None

    def fill(self, trainee: Trainee) -> None:
        clock = time.monotonic()
        chunks = [self._encode(trainee.rng, 64) for _ in range(self.size // 64)]
        optional: dict[str, torch.Tensor | None] = {}
        for name in _OPTIONAL_PER_EXAMPLE:
            parts = [getattr(c, name) for c in chunks if getattr(c, name) is not None]
            optional[name] = torch.cat(parts) if parts else None
        self._pool = Encoded(
            torch.cat([c.mean for c in chunks]),
            torch.cat([c.std for c in chunks]),
            [label for c in chunks for label in c.labels],
            **optional,
        )
        log.info(
            "%s: encoded a pool of %d examples in %.0f s", trainee.name, self.size, time.monotonic() - clock
        )

    def _filled(self) -> Encoded:
        if self._pool is None:
            raise RuntimeError("the latent pool is empty: fill() it first")
        return self._pool

    def refresh(self, rng: np.random.Generator) -> None:
        pool, fresh = self._filled(), self._encode(rng, self.refresh_count)
        slots = torch.from_numpy(rng.choice(self.size, self.refresh_count, replace=False))
        for name in ("mean", "std", *_OPTIONAL_PER_EXAMPLE):
            held, new = getattr(pool, name), getattr(fresh, name)
            if held is not None and new is not None:
                held[slots] = new
        for slot, label in zip(slots.tolist(), fresh.labels, strict=True):
            pool.labels[slot] = label

    def sample(self, rng: np.random.Generator, n: int) -> Encoded:
        pool = self._filled()
        idx = torch.from_numpy(rng.choice(self.size, n, replace=False))
        optional = {
            name: (held[idx] if (held := getattr(pool, name)) is not None else None)
            for name in _OPTIONAL_PER_EXAMPLE
        }
        labels = [pool.labels[i] for i in idx.tolist()]
        return Encoded(pool.mean[idx], pool.std[idx], labels, **optional)


# ---------------------------------------------------------------- losses


def vae_loss(vae: Vae, images: torch.Tensor) -> torch.Tensor:
    """Pixel L1 + MSE, weighted towards the shapes, plus a low-frequency term and a tiny KL.

    Shapes cover a tenth of a picture, so a plain pixel loss is mostly about the background, while the
    shape's colour is what a prompt asks for; pixels unlike the picture's median (the background) count
    five times. The low-frequency term (4x4 averages) makes flat colours come back exactly: the reference
    run's colour errors (red read as orange, green as grey) came from the autoencoder.
    """
    posterior = vae.encode(images).latent_dist
    recon = vae.decode(posterior.sample()).sample
    background = images.flatten(2).median(dim=2).values[:, :, None, None]
    weight = 1.0 + 4.0 * ((images - background).abs().sum(dim=1, keepdim=True) > 0.3).float()
    pixel = (weight * ((recon - images).abs() + (recon - images) ** 2)).mean()
    low = F.l1_loss(F.avg_pool2d(recon, 4), F.avg_pool2d(images, 4))
    return pixel + 2.0 * low + 1e-6 * posterior.kl().mean()


def min_snr_weights(
    scheduler: NoiseScheduler, timesteps: torch.Tensor, gamma: float = 5.0, floor: float = 0.0
) -> torch.Tensor:
    """Min-SNR-gamma loss weights (Hang et al. 2023) for the scheduler's prediction type.

    For v-prediction the SNR is floored at 1: plain min(snr, gamma) / (snr + 1) goes to zero at the
    noisiest steps, which are exactly where the prompt alone must decide the background.

    With epsilon prediction the weighted loss is the error of the implied clean latent weighted by
    min(snr, gamma), which vanishes at the noisiest steps; `floor` keeps that weight at least `floor` there.
    Meant for the edit denoiser, which at high noise can only learn what to draw from its picture (it
    made no clear difference in a 12-minute run; see MODEL_CARD.md).
    """
    alphas = scheduler.alphas_cumprod[timesteps]
    snr = alphas / (1 - alphas)
    if scheduler.config.prediction_type == "v_prediction":
        return torch.clamp(snr, min=max(1.0, floor), max=gamma) / (snr + 1)
    return torch.clamp(snr, min=floor, max=gamma) / snr


# A latent cell belongs to a shape when some channel differs from the picture's median (its background) by
# more than this (latents at unit scale): on 64 scenes it finds 83 % of the cells a shape touches, 94 %
# precisely; the 3x3 dilation in `shape_weights` catches the rest of the outline.
SHAPE_LATENT_DISTANCE = 0.5


def shape_weights(extra: float, *latents: torch.Tensor) -> torch.Tensor | None:
    """Per-cell loss weights: 1 on the background, 1 + `extra` on (and next to) the shapes of any of `latents`.

    A shape covers a seventh of the latent grid, so a plain loss is mostly about the background, which the
    model gets right early; which shape to draw is decided by a few cells and is what it learns slowest.
    The same reasoning weights the autoencoder's pixels (`vae_loss`); for the denoisers it made no clear
    difference in 20-minute runs (MODEL_CARD.md), so it is off (None) unless asked for.
    """
    if not extra:
        return None
    masks = []
    for lat in latents:
        background = lat.flatten(2).median(dim=2).values[:, :, None, None]
        masks.append(((lat - background).abs().amax(dim=1, keepdim=True) > SHAPE_LATENT_DISTANCE).float())
    mask = F.max_pool2d(torch.stack(masks).amax(dim=0), 3, stride=1, padding=1)
    return 1.0 + extra * mask


def denoise_loss(
    unet: Denoiser,
    scheduler: NoiseScheduler,
    latents: torch.Tensor,
    text: torch.Tensor,
    condition: torch.Tensor | None = None,
    *,
    weights: torch.Tensor | None = None,
    snr_floor: float = 0.0,
) -> torch.Tensor:
    noise = torch.randn_like(latents)
    v_prediction = scheduler.config.prediction_type == "v_prediction"
    if not v_prediction:
        # Offset noise: without zero terminal SNR the last step keeps a trace of the picture's mean, so a
        # model trained on plain noise takes the background from the starting noise, not the prompt.
        noise = noise + OFFSET_NOISE * torch.randn(*latents.shape[:2], 1, 1)
    timesteps = torch.randint(0, scheduler.config.num_train_timesteps, (latents.shape[0],))
    noisy = scheduler.add_noise(latents, noise, timesteps)
    if condition is not None:
        noisy = torch.cat([noisy, condition], dim=1)
    prediction = unet(noisy, timesteps, text).sample
    target = scheduler.get_velocity(latents, noise, timesteps) if v_prediction else noise
    error = F.mse_loss(prediction, target, reduction="none")
    if weights is not None:
        error = error * weights
    per_sample = error.mean(dim=(1, 2, 3))
    return (min_snr_weights(scheduler, timesteps, floor=snr_floor) * per_sample).mean()


# ---------------------------------------------------------------- the training loop


@dataclass
class Trainee:
    """What one part trains: its modules, their EMA copies, the optimiser, and its data generator."""

    name: str
    modules: dict[str, nn.Module]
    ema: dict[str, nn.Module]
    optimizer: torch.optim.Optimizer
    rng: np.random.Generator
    progress: Progress = field(default_factory=Progress)


def new_trainee(name: str, modules: dict[str, nn.Module], seed: int) -> Trainee:
    settings = SETTINGS[name]
    params = [p for m in modules.values() for p in m.parameters()]
    optimizer = torch.optim.AdamW(params, lr=settings.lr, weight_decay=1e-2)
    ema = (
        {k: copy.deepcopy(m).requires_grad_(False) for k, m in modules.items()} if settings.ema_decay else {}
    )
    return Trainee(name, modules, ema, optimizer, np.random.default_rng([seed, PARTS.index(name)]))


def state_path(options: TrainOptions, name: str) -> Path:
    return options.work / f"{name}.pt"


def save_state(options: TrainOptions, trainee: Trainee) -> None:
    options.work.mkdir(parents=True, exist_ok=True)
    state = {
        "modules": {k: m.state_dict() for k, m in trainee.modules.items()},
        "ema": {k: m.state_dict() for k, m in trainee.ema.items()},
        "optimizer": trainee.optimizer.state_dict(),
        "rng": trainee.rng.bit_generator.state,
        "torch_rng": torch.get_rng_state(),
        "progress": asdict(trainee.progress),
        "upstream": upstream_fingerprint(options, trainee.name),
    }
    tmp = state_path(options, trainee.name).with_suffix(".tmp")
    torch.save(state, tmp)
    tmp.replace(state_path(options, trainee.name))


UPSTREAM = {
    "vae": (),
    "text": ("vae",),
    "unet": ("vae", "text_encoder", "text_unet"),
    "edit": ("vae", "text_encoder", "text_unet"),
    "inpaint": (),  # reads the shipped generate model, not this run's folders
}


def upstream(options: TrainOptions, name: str) -> tuple[str, ...]:
    """The trained folders a part reads; an edit denoiser started from scratch does not read the text one."""
    if name == "edit" and options.edit_init == "scratch":
        return ("vae", "text_encoder")
    return UPSTREAM[name]


def upstream_fingerprint(options: TrainOptions, name: str) -> str:
    """A digest of the trained parts this part builds on, so a checkpoint over stale ones is not resumed."""
    digest = hashlib.sha256()
    shipped = {"edit": options.edit_from, "unet": options.unet_from}.get(name)
    if shipped is not None:
        folders = [shipped / part for part in ("vae", "text_encoder", "unet")]
    else:
        folders = [options.work / folder for folder in upstream(options, name)]
    for folder in folders:
        for file in sorted(folder.glob("*.safetensors")):
            digest.update(file.read_bytes())
    return digest.hexdigest()


def resume(options: TrainOptions, trainee: Trainee) -> None:
    """Continue from the part's last checkpoint, if there is one and the parts under it are unchanged."""
    path = state_path(options, trainee.name)
    if not path.exists():
        return
    state = torch.load(path, weights_only=False)
    if state.get("upstream") != upstream_fingerprint(options, trainee.name):
        log.warning(
            "%s: the parts it builds on were retrained since its checkpoint; starting afresh", trainee.name
        )
        return
    for key, module in trainee.modules.items():
        module.load_state_dict(state["modules"][key])
    for key, module in trainee.ema.items():
        module.load_state_dict(state["ema"][key])
    trainee.optimizer.load_state_dict(state["optimizer"])
    trainee.rng.bit_generator.state = state["rng"]
    torch.set_rng_state(state["torch_rng"])
    trainee.progress = Progress(**state["progress"])
    log.info(
        "%s: resumed at step %d after %.0f s", trainee.name, trainee.progress.step, trainee.progress.seconds
    )


def fraction_done(options: TrainOptions, progress: Progress) -> float:
    if options.steps is not None:
        return progress.step / options.steps
    wall = progress.seconds / (options.minutes * 60)
    if options.cpu_minutes is None:
        return wall
    return max(wall, (progress.cpu_seconds or 0.0) / (options.cpu_minutes * 60))


def learning_rate(options: TrainOptions, name: str, progress: Progress) -> float:
    """Linear warm-up, then cosine decay to a tenth over the budget."""
    settings = SETTINGS[name]
    warm = min(1.0, (progress.step + 1) / settings.warmup)
    cosine = 0.55 + 0.45 * math.cos(math.pi * min(1.0, fraction_done(options, progress)))
    return (options.lr or settings.lr) * warm * cosine


def batch_size(options: TrainOptions, name: str) -> int:
    return options.batch or SETTINGS[name].batch


@torch.no_grad()
def ema_denoiser(trainee: Trainee) -> Denoiser:
    """The part's EMA copy of its denoiser: what it saves and exports."""
    return trainee.ema["unet"]


def update_ema(trainee: Trainee) -> None:
    decay = min(SETTINGS[trainee.name].ema_decay, (1 + trainee.progress.step) / (10 + trainee.progress.step))
    for key, ema in trainee.ema.items():
        for target, source in zip(ema.parameters(), trainee.modules[key].parameters(), strict=True):
            target.lerp_(source, 1 - decay)


def run_loop(
    options: TrainOptions,
    trainee: Trainee,
    step_loss: Callable[[Trainee], torch.Tensor],
    setup: Callable[[Trainee], None] | None = None,
) -> PartStats:
    """Optimise `step_loss(trainee)` until the budget is spent, checkpointing as it goes.

    `setup` runs after resuming (it may draw from the part's generator); its time counts as training time.
    """
    resume(options, trainee)
    progress = trainee.progress
    start_step, start_seconds = progress.step, progress.seconds
    # An older checkpoint did not count CPU time: count its wall time instead, which is never less.
    start_cpu = progress.seconds if progress.cpu_seconds is None else progress.cpu_seconds
    progress.cpu_seconds = start_cpu
    clock, cpu_clock = time.monotonic(), time.process_time()
    if setup is not None and fraction_done(options, progress) < 1.0:
        setup(trainee)
    last_save = last_log = clock
    while fraction_done(options, progress) < 1.0:
        for group in trainee.optimizer.param_groups:
            group["lr"] = learning_rate(options, trainee.name, progress)
        loss = step_loss(trainee)
        trainee.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        nn.utils.clip_grad_norm_([p for m in trainee.modules.values() for p in m.parameters()], 1.0)
        trainee.optimizer.step()
        update_ema(trainee)
        now = time.monotonic()
        progress.step += 1
        progress.seconds = start_seconds + now - clock
        progress.cpu_seconds = start_cpu + time.process_time() - cpu_clock
        progress.losses.append(float(loss.detach()))
        if now - last_log >= LOG_SECONDS:
            log.info(
                "%s: step %d, %.0f s (CPU %.0f s), loss %.4f",
                trainee.name,
                progress.step,
                progress.seconds,
                progress.cpu_seconds,
                _recent(progress),
            )
            last_log = now
        if now - last_save >= CHECKPOINT_SECONDS:
            save_state(options, trainee)
            last_save = now
    save_state(options, trainee)
    return _stats(options, trainee, progress.step - start_step, progress.seconds - start_seconds)


def _recent(progress: Progress, n: int = 50) -> float:
    return float(np.mean(progress.losses[-n:])) if progress.losses else math.nan


def _stats(options: TrainOptions, trainee: Trainee, steps: int, seconds: float) -> PartStats:
    rate = steps / seconds if seconds > 0 else 0.0
    stats = PartStats(
        part=trainee.name,
        steps=trainee.progress.step,
        seconds=round(trainee.progress.seconds, 1),
        cpu_seconds=round(trainee.progress.cpu_seconds or 0.0, 1),
        steps_per_second=round(rate, 4),
        samples_per_second=round(rate * batch_size(options, trainee.name), 2),
        final_loss=round(_recent(trainee.progress), 5),
        threads=options.threads,
        parameters=parameter_count(*trainee.modules.values()),
    )
    (options.work / f"{trainee.name}-stats.json").write_text(json.dumps(asdict(stats), indent=1) + "\n")
    log.info("%s done: %s", trainee.name, stats)
    return stats


# ---------------------------------------------------------------- the three parts


def train_vae(options: TrainOptions) -> PartStats:
    torch.manual_seed(options.seed)
    vae = make_vae()
    trainee = new_trainee("vae", {"vae": vae}, options.seed)
    batch = batch_size(options, "vae")
    stats = run_loop(options, trainee, lambda t: vae_loss(vae, crop_batch(t.rng, batch)))
    vae.eval()
    vae.register_to_config(scaling_factor=latent_scale(vae, np.random.default_rng([options.seed, 99])))
    vae.save_pretrained(options.work / "vae")
    return stats


@torch.no_grad()
def latent_scale(vae: Vae, rng: np.random.Generator, n: int = 128) -> float:
    """1 / the latents' standard deviation, so the denoiser sees unit-variance latents as in SD."""
    images, _ = scene_batch(rng, n)
    latents = vae.encode(images).latent_dist.sample()
    return float(1.0 / latents.std())


def load_vae(options: TrainOptions) -> Vae:
    folder = options.work / "vae"
    if not folder.exists():
        raise FileNotFoundError(f"no trained autoencoder in {folder}: run --part vae first")
    return AutoencoderKL.from_pretrained(folder).eval().requires_grad_(False)


def scene_training(
    options: TrainOptions,
    name: str,
    *,
    vae: Vae,
    tokenizer: PreTrainedTokenizerFast,
    scheduler: NoiseScheduler,
    text_encoder: CLIPTextModel,
    unet: Denoiser,
    train_encoder: bool = False,
) -> tuple[LatentPool, Callable[[Trainee], torch.Tensor]]:
    """The scene pool and the loss of one step of a text-to-image part (`text` or `unet`): a batch from
    the pool, captions dropped for guidance, the (possibly shape-weighted) denoising loss."""
    batch = batch_size(options, name)
    pool = LatentPool(lambda rng, n: encode_scenes(vae, rng, n), size=options.pool)

    def step(t: Trainee) -> torch.Tensor:
        pool.refresh(t.rng)
        examples = pool.sample(t.rng, batch)
        # A fresh phrasing of every scene at every use: the model learns the scene, not one sentence.
        captions = [phrasing.describe(t.rng, scene) for scene in examples.labels]
        with torch.set_grad_enabled(train_encoder):
            text = text_encoder(token_ids(tokenizer, drop_captions(t.rng, captions)))[0]
        latents = examples.latents(vae)
        return denoise_loss(
            unet, scheduler, latents, text, weights=shape_weights(options.shape_weight, latents)
        )

    return pool, step


def train_text(options: TrainOptions) -> PartStats:
    """The text-to-image denoiser and its text encoder; the starting point of the `unet` and `edit` parts.

    No pre-trained CLIP may be downloaded, so the encoder starts from random weights. By default it stays
    there (`--random-text-encoder`): a frozen random encoder keeps every word of the grammar apart, while
    one trained with the denoiser learned the colour words and let the shape words collapse (MODEL_CARD.md).
    With `--no-random-text-encoder` it is trained here together with the denoiser. Either way it is frozen
    after this part, so the text-to-image and edit denoisers share it and can train side by side.
    """
    torch.manual_seed(options.seed + 1)
    vae, tokenizer, scheduler = load_vae(options), make_tokenizer(), make_noise_scheduler(options.zero_snr)
    unet, text_encoder = make_unet(), make_text_encoder(tokenizer)
    if options.random_text_encoder:
        text_encoder.eval().requires_grad_(False)
        # Saved at once: it never changes, so the edit part can start side by side with this one.
        text_encoder.save_pretrained(options.work / "text_encoder")
        trainee = new_trainee("text", {"unet": unet}, options.seed)
    else:
        trainee = new_trainee("text", {"unet": unet, "text_encoder": text_encoder}, options.seed)
    pool, step = scene_training(
        options, "text", vae=vae, tokenizer=tokenizer, scheduler=scheduler, text_encoder=text_encoder,
        unet=unet, train_encoder=not options.random_text_encoder,
    )  # fmt: skip
    stats = run_loop(options, trainee, step, setup=pool.fill)
    ema_unet = ema_denoiser(trainee)
    ema_unet.save_pretrained(options.work / "text_unet")
    encoder = trainee.ema.get("text_encoder", text_encoder)
    assert isinstance(encoder, CLIPTextModel)  # the encoder, or its EMA copy
    encoder.save_pretrained(options.work / "text_encoder")
    # A complete text-to-image model already; the `unet` part may continue its denoiser.
    export_pipeline(
        options, StableDiffusionPipeline, "generate", vae=vae, text_encoder=encoder,
        tokenizer=tokenizer, unet=ema_unet,
    )  # fmt: skip
    return stats


def drop_captions(rng: np.random.Generator, texts: list[str], p: float = 0.1) -> list[str]:
    """Classifier-free guidance needs the model to know the empty prompt too."""
    return ["" if rng.random() < p else c for c in texts]


def frozen_parts(
    options: TrainOptions,
) -> tuple[Vae, PreTrainedTokenizerFast, NoiseScheduler, CLIPTextModel]:
    """What the two denoisers after the text part read and never train: autoencoder, tokenizer, noise
    schedule and the text part's encoder."""
    text_encoder = load_trained(options, "text_encoder").eval().requires_grad_(False)
    return load_vae(options), make_tokenizer(), make_noise_scheduler(options.zero_snr), text_encoder


def train_unet(options: TrainOptions) -> PartStats:
    """The text-to-image denoiser, continued from the text part's with its text encoder frozen; with
    `--unet-from DIR`, the denoiser of the generate pipeline in DIR over that pipeline's own frozen
    autoencoder, tokenizer and text encoder (which the exported pipeline carries byte for byte)."""
    torch.manual_seed(options.seed + 2)
    if options.unet_from is not None:
        vae, tokenizer, scheduler, text_encoder, unet = shipped_parts(options.unet_from, "generate")
    else:
        vae, tokenizer, scheduler, text_encoder = frozen_parts(options)
        unet = load_trained(options, "text_unet")
    trainee = new_trainee("unet", {"unet": unet}, options.seed)
    pool, step = scene_training(
        options, "unet", vae=vae, tokenizer=tokenizer, scheduler=scheduler, text_encoder=text_encoder,
        unet=unet,
    )  # fmt: skip
    stats = run_loop(options, trainee, step, setup=pool.fill)
    ema_unet = ema_denoiser(trainee)
    ema_unet.save_pretrained(options.work / "unet")
    export_pipeline(
        options, StableDiffusionPipeline, "generate", vae=vae, text_encoder=text_encoder,
        tokenizer=tokenizer, unet=ema_unet,
    )  # fmt: skip
    return stats


def edit_unet_from(unet: Denoiser) -> Denoiser:
    """An 8-channel denoiser started from the text-to-image one; the picture's channels start at zero."""
    edit = make_unet(in_channels=8)
    state = unet.state_dict()
    weight = state["conv_in.weight"]
    state["conv_in.weight"] = torch.cat([weight, torch.zeros_like(weight)], dim=1)
    edit.load_state_dict(state)
    return edit


def load_trained(options: TrainOptions, name: str) -> CLIPTextModel | Denoiser:
    """The saved `text_encoder` (a CLIPTextModel), or the saved denoiser called `name`."""
    folder = options.work / name
    if not folder.exists():
        raise FileNotFoundError(f"no trained {name} in {folder}: run --part text first")
    cls = CLIPTextModel if name == "text_encoder" else UNet2DConditionModel
    return cls.from_pretrained(folder)


def shipped_parts(
    folder: Path, what: str = "edit"
) -> tuple[Vae, PreTrainedTokenizerFast, NoiseScheduler, CLIPTextModel, Denoiser]:
    """A pipeline folder's parts, in float32, for fine-tuning its denoiser (`--edit-from`, `--unet-from`):
    the autoencoder, tokenizer and text encoder frozen as they ship, the training noise schedule, the denoiser."""
    if not (folder / "model_index.json").exists():
        raise FileNotFoundError(f"no {what} pipeline in {folder}")
    vae = AutoencoderKL.from_pretrained(folder / "vae", torch_dtype=torch.float32)
    text_encoder = CLIPTextModel.from_pretrained(folder / "text_encoder", torch_dtype=torch.float32)
    tokenizer = PreTrainedTokenizerFast.from_pretrained(folder / "tokenizer")
    unet = UNet2DConditionModel.from_pretrained(folder / "unet", torch_dtype=torch.float32)
    return (
        vae.eval().requires_grad_(False),
        tokenizer,
        make_noise_scheduler(),
        text_encoder.eval().requires_grad_(False),
        unet,
    )


def untold_targets(latents: torch.Tensor, picture: torch.Tensor, untold: torch.Tensor) -> torch.Tensor:
    """The denoiser's targets with the rows in `untold` (a boolean per row) replaced by the picture itself."""
    return torch.where(untold[:, None, None, None], picture, latents)


def cell_weights(extra: float, share: torch.Tensor | None) -> torch.Tensor | None:
    """Per-cell loss weights 1 + `extra` x a per-cell share (`Encoded.keep`: the share of the cell that is a
    shape the edit keeps; `Encoded.change`: that it changes). None: a plain loss."""
    if not extra or share is None:
        return None
    return 1.0 + extra * share


def _combined(*weights: torch.Tensor | None) -> torch.Tensor | None:
    present = [w for w in weights if w is not None]
    if not present:
        return None
    out = present[0]
    for w in present[1:]:
        out = out * w
    return out


def train_edit(options: TrainOptions) -> PartStats:
    """The InstructPix2Pix denoiser; the autoencoder and text encoder stay as the text-to-image model has them.

    By default it starts from random weights (`--edit-init scratch`), so it learns from the first step that
    the picture is what to keep; its budget is then its own, not what the text part left of one. With
    `--edit-from DIR` it fine-tunes the denoiser of the edit pipeline in DIR over that pipeline's own
    frozen autoencoder, tokenizer and text encoder (see MODEL_CARD.md, "Edits keep what they do not name").
    """
    torch.manual_seed(options.seed + 3)
    if options.edit_from is not None:
        vae, tokenizer, scheduler, text_encoder, unet = shipped_parts(options.edit_from)
    else:
        vae, tokenizer, scheduler, text_encoder = frozen_parts(options)
        if options.edit_init == "scratch":
            unet = make_unet(in_channels=8)
        else:
            unet = edit_unet_from(load_trained(options, "text_unet"))
    trainee = new_trainee("edit", {"unet": unet}, options.seed)
    batch = batch_size(options, "edit")
    mix = parse_edit_mix(options.edit_mix) if options.edit_mix else edit_mix(options.background_edits)
    log.info("edit mix: %s", {str(k): round(w, 4) for k, w in mix.items()})

    pool = LatentPool(lambda rng, n: encode_edits(vae, rng, n, mix), size=options.pool)

    def step(t: Trainee) -> torch.Tensor:
        pool.refresh(t.rng)
        examples = pool.sample(t.rng, batch)
        # InstructPix2Pix drops the instruction, the picture, or both (5 % each there) for its two guidance
        # scales. [0, DROP): picture dropped; [DROP, text_end): instruction dropped; [text_end, text_end + DROP): both.
        roll = t.rng.random(batch)
        text_end = DROP + options.edit_text_drop
        phrased = [phrasing.instruct(t.rng, triple) for triple in examples.labels]
        texts = ["" if DROP <= r < text_end + DROP else s for r, s in zip(roll, phrased, strict=True)]
        keep_image = torch.from_numpy(
            ~((roll < DROP) | ((roll >= text_end) & (roll < text_end + DROP)))
        ).float()
        assert examples.condition is not None  # an edit example holds the picture it starts from
        condition = examples.condition * keep_image[:, None, None, None]
        with torch.no_grad():
            text = text_encoder(token_ids(tokenizer, texts))[0]
        latents = examples.latents(vae)
        picture = examples.condition * vae.config.scaling_factor
        if options.untold_keeps:
            untold = torch.from_numpy((roll >= DROP) & (roll < text_end))
            latents = untold_targets(latents, picture, untold)
        # The shapes of the picture and of the result: where keeping and changing both happen.
        weights = _combined(
            shape_weights(options.shape_weight, latents, picture),
            cell_weights(options.keep_weight, examples.keep),
            cell_weights(options.change_weight, examples.change),
        )
        return denoise_loss(
            unet, scheduler, latents, text, condition, weights=weights, snr_floor=options.snr_floor
        )

    stats = run_loop(options, trainee, step, setup=pool.fill)
    ema_unet = ema_denoiser(trainee)
    ema_unet.save_pretrained(options.work / "edit_unet")
    export_pipeline(
        options, StableDiffusionInstructPix2PixPipeline, "edit", vae=vae, text_encoder=text_encoder,
        tokenizer=tokenizer, unet=ema_unet,
    )  # fmt: skip
    return stats


# ---------------------------------------------------------------- export


def export_pipeline(
    options: TrainOptions,
    pipeline_class: type[Pipeline],  # StableDiffusionPipeline or StableDiffusionInstructPix2PixPipeline
    folder: str,
    *,
    vae: Vae,
    text_encoder: CLIPTextModel,
    tokenizer: PreTrainedTokenizerFast,
    unet: Denoiser,
) -> Path:
    """Save trained parts as a diffusers pipeline folder (`generate` or `edit`) under `options.out`."""
    pipe = pipeline_class(
        vae=vae,
        text_encoder=text_encoder,
        tokenizer=tokenizer,
        unet=unet,
        scheduler=make_sampler(options.zero_snr),
        safety_checker=None,
        feature_extractor=None,
        requires_safety_checker=False,
    )
    return _save_half(pipe, options.out / folder)


def _save_half(pipe: Pipeline, folder: Path) -> Path:
    """Save the denoiser and autoencoder as float16 safetensors, so both pipelines stay under 25 MB.

    The text encoder stays float32: transformers loads weights in their saved type while diffusers
    upcasts to float32, and a plain `from_pretrained` must not end up with mixed types.
    """
    half = copy.deepcopy(pipe)
    half.unet.to(dtype=torch.float16)
    half.vae.to(dtype=torch.float16)
    half.save_pretrained(folder, safe_serialization=True)
    size = sum(p.stat().st_size for p in folder.rglob("*") if p.is_file())
    log.info("wrote %s (%.1f MB)", folder, size / 1e6)
    return folder


# ---------------------------------------------------------------- command line


TRAINERS = {"vae": train_vae, "text": train_text, "unet": train_unet, "edit": train_edit}


def parse_args(argv: list[str] | None = None) -> TrainOptions:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--part", choices=[*PARTS, "all"], default="all")
    parser.add_argument("--minutes", type=float, default=30.0, help="time budget of each part")
    parser.add_argument("--steps", type=int, default=None, help="fixed step count per part (repeatable runs)")
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument(
        "--cpu-minutes",
        type=float,
        default=None,
        help="also stop a part after this much CPU time of its own (a shared machine); --minutes caps wall time",
    )
    parser.add_argument("--seed", type=int, default=TrainOptions.seed)
    parser.add_argument(
        "--pool", type=int, default=TrainOptions.pool, help="encoded examples kept (denoisers)"
    )
    parser.add_argument("--batch", type=int, default=None, help="override the part's batch size")
    parser.add_argument("--lr", type=float, default=None, help="override the part's peak learning rate")
    # The loss and edit-mix knobs: all floats, each defaulting to its TrainOptions field.
    for flag, help_text in (
        ("--edit-text-drop", "how often the edit denoiser sees the picture without its instruction"),
        (
            "--shape-weight",
            "extra loss weight on the latent cells the shapes cover (denoisers; 0: plain loss)",
        ),
        (
            "--snr-floor",
            "edit denoiser: least weight of the clean latent's error at the noisiest steps (0: min-SNR)",
        ),
        (
            "--keep-weight",
            "edit part: extra loss weight on the shape cells an edit leaves unchanged (0: plain loss)",
        ),
        (
            "--change-weight",
            "edit part: extra loss weight on the shape cells an edit changes (0: plain loss)",
        ),
        ("--background-edits", "edit part: share of background edits (default: the built-in mix)"),
    ):
        default = getattr(TrainOptions, flag[2:].replace("-", "_"))
        parser.add_argument(flag, type=float, default=default, help=help_text)
    parser.add_argument(
        "--edit-from",
        type=Path,
        default=None,
        help="edit part: fine-tune the denoiser of this edit pipeline folder (its other parts stay frozen)",
    )
    parser.add_argument(
        "--unet-from",
        type=Path,
        default=None,
        help="unet part: fine-tune the denoiser of this generate pipeline folder (its other parts stay frozen)",
    )
    parser.add_argument(
        "--edit-mix",
        default=None,
        help='edit part: shares of edit kinds, e.g. "recolour=0.42,background=0.48" (the rest keep their '
        "proportions; overrides --background-edits)",
    )
    parser.add_argument(
        "--edit-init",
        choices=get_args(EditInit),
        default=TrainOptions.edit_init,
        help="edit denoiser's start: random weights (default) or the text part's denoiser",
    )
    parser.add_argument(
        "--random-text-encoder",
        action=argparse.BooleanOptionalAction,
        default=TrainOptions.random_text_encoder,
        help="text part: keep the text encoder at its seeded random start (default) or train it (--no-...)",
    )
    parser.add_argument(
        "--untold-keeps",
        action=argparse.BooleanOptionalAction,
        default=TrainOptions.untold_keeps,
        help="edit part: with no instruction the target is the picture itself (default: the edited picture)",
    )
    parser.add_argument(
        "--zero-snr",
        action=argparse.BooleanOptionalAction,
        default=TrainOptions.zero_snr,
        help="zero-terminal-SNR schedule with v-prediction (default: SD's schedule, epsilon, offset noise)",
    )
    args = parser.parse_args(argv)
    if (
        args.minutes <= 0
        or (args.steps is not None and args.steps <= 0)
        or args.threads <= 0
        or (args.cpu_minutes is not None and args.cpu_minutes <= 0)
    ):
        parser.error("--minutes, --cpu-minutes, --steps and --threads must be positive")
    if args.pool < 64 or args.pool % 64:
        parser.error("--pool must be a positive multiple of 64")
    if (args.batch is not None and not 1 <= args.batch <= args.pool) or (
        args.lr is not None and args.lr <= 0
    ):
        parser.error("--batch must be between 1 and --pool, --lr positive")
    for flag, value, low, high in (
        ("--edit-text-drop", args.edit_text_drop, 0.0, 0.5),
        ("--snr-floor", args.snr_floor, 0.0, 5.0),
        ("--shape-weight", args.shape_weight, 0.0, 20.0),
        ("--keep-weight", args.keep_weight, 0.0, 20.0),
        ("--change-weight", args.change_weight, 0.0, 20.0),
        ("--background-edits", 0.5 if args.background_edits is None else args.background_edits, 0.0, 0.95),
    ):
        if not low <= value <= high:
            parser.error(f"{flag} must be between {low:g} and {high:g}")
    if args.edit_mix is not None:
        try:
            parse_edit_mix(args.edit_mix)
        except ValueError as error:
            parser.error(f"--edit-mix: {error}")
    # Every option's destination is named after its TrainOptions field.
    return TrainOptions(**{f.name: getattr(args, f.name) for f in fields(TrainOptions)})


def main(argv: list[str] | None = None) -> None:
    options = parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    torch.set_num_threads(options.threads)
    parts = PARTS if options.part == "all" else (options.part,)
    for part in parts:
        stats = TRAINERS[part](options)
        print(json.dumps(asdict(stats)))


if __name__ == "__main__":
    main()
