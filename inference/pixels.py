"""Pixels off the pipeline: its output as uint8 in one vectorised step, and small previews of a step's latents.

Torch-facing (the engine's side): the scheduler never imports it.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
from PIL import Image

from inference import families
from inference.families import Family
from inference.loading import Pipeline

PREVIEW_MAX_SIDE = 128


def to_uint8(images: torch.Tensor) -> list[np.ndarray]:
    """A pipeline's "pt" output (N, 3, H, W floats in [0, 1], on its device) as N (H, W, 3) uint8 arrays on the CPU.

    On a GPU, converted there in one pass over the batch (kernels), so only a quarter of the bytes cross
    to the host. On the CPU, a band of rows at a time: a whole picture's float temporaries (3 MB at 512²)
    are over the worker's mmap threshold (`inference.server.bound_heap`), so each would be fresh pages
    faulted in on every call, costing more than the arithmetic; a band's stay in the reused heap and in
    the cache (bench/encode.py measures the conversion).
    """
    pictures = images.detach()
    if pictures.device.type != "cpu":
        pixels = pictures.mul(255.0).round_().clamp_(0, 255).to(torch.uint8)
        return list(pixels.permute(0, 2, 3, 1).contiguous().cpu().numpy())
    _n, channels, height, width = pictures.shape
    rows = max(1, _BAND_BYTES // (channels * width * pictures.element_size()))
    out = []
    for picture in pictures:
        converted = torch.empty((height, width, channels), dtype=torch.uint8)
        for top in range(0, height, rows):
            band = picture[:, top : top + rows].mul(255.0).round_().clamp_(0, 255)
            converted[top : top + rows] = band.permute(1, 2, 0)  # cast to uint8 on the copy
        out.append(converted.numpy())
    return out


_BAND_BYTES = 512 * 1024  # a band's float temporary: under the 1 MiB mmap threshold, about an L2 cache


def resized(pixels: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """A (H, W, 3) uint8 picture at `size` (width, height): SD3 and FLUX run at a multiple of 16."""
    if (pixels.shape[1], pixels.shape[0]) == size:
        return pixels
    return np.asarray(Image.fromarray(pixels).resize(size, Image.Resampling.BICUBIC))


class Previewer:
    """Turns the latents of a step into small RGB previews, one per image, for the family that made them."""

    def __init__(self, decoder: Any, family: Family) -> None:
        self._decoder = decoder
        self._family = family  # the main model's, which the decoder was checked against

    def __call__(
        self, pipe: Pipeline, latents: torch.Tensor | None, size: tuple[int, int], family: Family
    ) -> list[Image.Image]:
        if latents is None:
            return []
        latents = families.preview_latents(family, pipe, latents, size)
        if latents is None:
            return []
        with torch.no_grad():
            if self._decoder is not None and family is self._family:
                # As the pipeline would decode with this decoder in place of its autoencoder.
                config = self._decoder.config
                latents = latents / config.scaling_factor + getattr(config, "shift_factor", 0.0)
                rgb = self._decoder.decode(latents.to(self._decoder.dtype)).sample
            else:
                factors = torch.tensor(family.rgb_factors, device=latents.device, dtype=latents.dtype)
                bias = torch.tensor(family.rgb_bias, device=latents.device, dtype=latents.dtype)
                rgb = torch.einsum("bchw,cr->brhw", latents, factors) + bias[None, :, None, None]
            pixels = ((rgb.float().clamp(-1, 1) + 1) * 127.5).round().to(torch.uint8)
            arrays = pixels.permute(0, 2, 3, 1).cpu().numpy()
        return [_fit_preview(Image.fromarray(a)) for a in arrays]


def _fit_preview(img: Image.Image) -> Image.Image:
    scale = PREVIEW_MAX_SIDE / max(img.size)
    size = (max(1, round(img.width * scale)), max(1, round(img.height * scale)))
    resample = Image.Resampling.NEAREST if scale > 1 else Image.Resampling.BILINEAR
    return img.resize(size, resample)
