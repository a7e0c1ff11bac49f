"""Inpaint jobs on the engine's side: the family's inpainting pipeline, each job's canvas and mask, the blend.

`inpaint_pipeline` builds the pipeline once at load (a dedicated inpainting checkpoint, the main weights
with an inpainting UNet swapped in, or `AutoPipelineForInpainting.from_pipe` on the main pipeline), or says
why there is none. `Canvases` turns a batch of inpaint jobs into the pipeline's arguments at the model's
native size and puts the original pixels back, at full resolution, over what it painted
(`inference.canvas` has the geometry).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from diffusers import AutoPipelineForInpainting, UNet2DConditionModel
from PIL import Image

from inference import canvas
from inference.engine_api import BatchItem, BatchKey
from inference.loading import BUNDLED_MODEL_ROOT, Pipeline, from_pretrained, prepare
from inference.settings import EngineSettings

log = logging.getLogger(__name__)

# The bundled tiny model's inpainting denoiser; it reuses the generate pipeline's other parts.
BUNDLED_INPAINT_UNET = BUNDLED_MODEL_ROOT / "inpaint" / "unet"


def inpaint_pipeline(
    settings: EngineSettings, generate: Pipeline, device: torch.device, dtype: torch.dtype, *, bundled: bool
) -> tuple[Pipeline | None, str]:
    """The inpainting pipeline for the main model, and where it came from (or why there is none).

    `bundled`: the main model is the bundled tiny one, whose own inpainting UNet is then used."""
    config = settings.inpaint
    if not config.enabled:
        return None, "inpainting is turned off ([engine.inpaint] enabled = false)"
    unet_source = config.unet
    if unet_source is None and bundled and (BUNDLED_INPAINT_UNET / "config.json").is_file():
        unet_source = str(BUNDLED_INPAINT_UNET)
    try:
        if config.model is not None:
            pipe = from_pretrained(AutoPipelineForInpainting, config.model, settings, dtype)
            prepare(pipe, settings, device, dtype)
            origin = config.model
        elif unet_source is not None:
            unet = UNet2DConditionModel.from_pretrained(Path(unet_source), torch_dtype=dtype).to(device)
            pipe = AutoPipelineForInpainting.from_pipe(generate, unet=unet)
            origin = f"the main model with the inpainting UNet {unet_source}"
        else:
            pipe = AutoPipelineForInpainting.from_pipe(generate)
            origin = "the main model's own weights"
    except (ValueError, OSError, TypeError) as exc:
        # AutoPipelineForInpainting has no inpainting class for this family (or the weights are missing).
        return None, f"no inpainting pipeline: {type(exc).__name__}: {exc}"
    pipe.set_progress_bar_config(disable=True)
    return pipe, f"{type(pipe).__name__} on {origin}"


def size_multiple(pipe: Pipeline, family_multiple: int) -> int:
    """What the paint size is rounded to: the latent grid times the denoiser's downsampling."""
    vae_factor = int(getattr(pipe, "vae_scale_factor", 8))
    unet = getattr(pipe, "unet", None)
    levels = len(unet.config.block_out_channels) - 1 if unet is not None else 0
    return max(family_multiple, vae_factor * 2**levels)


@dataclass
class Canvases:
    """One batch of inpaint jobs: each image's canvas and blend weight at full size, and what the
    pipeline paints at `paint` size (the model's native area)."""

    originals: list[np.ndarray]
    weights: list[np.ndarray]
    images: list[Image.Image]
    masks: list[Image.Image]
    paint: tuple[int, int]

    @classmethod
    def of(
        cls, items: list[BatchItem], shape: BatchKey, native: tuple[int, int], multiple: int, feather: float
    ) -> Canvases:
        spec = shape.inpaint
        assert spec is not None  # the engine sends only inpaint batches here
        size = (shape.width, shape.height)
        zoom, direction = spec.zoom or 2.0, spec.direction or "right"
        box = canvas.placement(spec.op, size, zoom=zoom, direction=direction)
        mask = (
            canvas.cells_mask(spec.cells or (), *size)
            if spec.op == "region"
            else canvas.outside_mask(size, box)
        )
        edge = canvas.feather_px(feather, size)
        weight = canvas.blend_weight(mask, edge, inside=spec.op != "region")
        paint = canvas.paint_size(size, native, multiple)
        painted_mask = Image.fromarray((weight > 0).astype(np.uint8) * 255).resize(
            paint, Image.Resampling.NEAREST
        )
        originals, images = [], []
        for it in items:
            assert it.init_image is not None
            whole = canvas.on_canvas(it.init_image.decode(), size, box)
            picture = Image.fromarray(whole).resize(paint, Image.Resampling.LANCZOS)
            for _ in range(it.request.count):
                originals.append(whole)
                images.append(picture)
        n = len(originals)
        return cls(originals, [weight] * n, images, [painted_mask] * n, paint)

    def call_kwargs(self) -> dict[str, Any]:
        return {
            "image": self.images,
            "mask_image": self.masks,
            "width": self.paint[0],
            "height": self.paint[1],
        }

    def finish(self, painted: list[np.ndarray]) -> list[np.ndarray]:
        """Each painted picture (already at canvas size) blended with its original: the original's pixels
        wherever the weight is 0."""
        return [
            canvas.composite(o, p, w) for o, p, w in zip(self.originals, painted, self.weights, strict=True)
        ]
