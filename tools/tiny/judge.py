"""Reads a 64x64 picture's background colour, shapes and their colours from pixels alone (no learned model).

The background is the commonest palette colour along the border. Pixels far from it are the foreground;
its connected parts are the shapes. A part's colour is the palette colour nearest to the median of its
most saturated pixels, so blurred edges do not pull it towards the background. Its shape is the template
silhouette (drawn by the data generator, normalised to the part's bounding box) with the highest overlap,
less a penalty for a different aspect ratio. Used by the tiny model's evaluation and by the tests.
"""

from __future__ import annotations

import logging
import math
from collections import Counter, deque
from dataclasses import dataclass

import numpy as np
from PIL import Image, ImageFilter

from tools.tiny.data import COLOURS, PALETTE, SHAPES, Scene, Shape, render

log = logging.getLogger(__name__)

BORDER = 2
# Pixels this far (RGB distance) from the background belong to a shape; about half way to the nearest
# colour a shape may have, so anti-aliased edges split evenly.
FOREGROUND_DISTANCE = 60.0
MIN_AREA = 8
GRID = 32
ASPECT_PENALTY = 0.5
TEMPLATE_RADII = (0.11, 0.18, 0.3)
# Blurred templates too, since a small shape from a soft decoder has lost its points and corners.
TEMPLATE_BLURS = (0.0, 1.0)


@dataclass(frozen=True)
class Blob:
    """One connected shape found in the picture; centre and size are fractions of the picture side."""

    colour: str
    shape: str
    area: int
    x: float
    y: float
    width: float
    height: float
    score: float


@dataclass(frozen=True)
class Verdict:
    """What the judge saw: the background, every shape (largest first), and the dominant one's traits."""

    background: str
    blobs: tuple[Blob, ...]

    @property
    def colour(self) -> str | None:
        """The colour covering most foreground pixels."""
        areas: Counter[str] = Counter()
        for blob in self.blobs:
            areas[blob.colour] += blob.area
        return areas.most_common(1)[0][0] if areas else None

    @property
    def shape(self) -> str | None:
        return self.blobs[0].shape if self.blobs else None


def _palette_array() -> np.ndarray:
    return np.array([PALETTE[c] for c in COLOURS], dtype=np.float32)


def nearest_colours(pixels: np.ndarray) -> np.ndarray:
    """Index into COLOURS of the nearest palette colour for each RGB row of `pixels` (N x 3)."""
    distances = np.linalg.norm(pixels[:, None, :].astype(np.float32) - _palette_array()[None], axis=2)
    return distances.argmin(axis=1)


def nearest_colour(rgb: np.ndarray) -> str:
    return COLOURS[int(nearest_colours(np.asarray(rgb, dtype=np.float32).reshape(1, 3))[0])]


def _border(pixels: np.ndarray) -> np.ndarray:
    b = BORDER
    return np.concatenate(
        [
            pixels[:b].reshape(-1, 3),
            pixels[-b:].reshape(-1, 3),
            pixels[b:-b, :b].reshape(-1, 3),
            pixels[b:-b, -b:].reshape(-1, 3),
        ]
    )


def _components(mask: np.ndarray) -> list[np.ndarray]:
    """The 8-connected parts of a boolean mask, each as an array of (row, col) pixels."""
    seen = np.zeros_like(mask, dtype=bool)
    height, width = mask.shape
    parts = []
    for start in zip(*np.nonzero(mask), strict=True):
        if seen[start]:
            continue
        seen[start] = True
        queue, members = deque([start]), []
        while queue:
            r, c = queue.popleft()
            members.append((r, c))
            for dr in (-1, 0, 1):
                for dc in (-1, 0, 1):
                    nr, nc = r + dr, c + dc
                    if 0 <= nr < height and 0 <= nc < width and mask[nr, nc] and not seen[nr, nc]:
                        seen[nr, nc] = True
                        queue.append((nr, nc))
        parts.append(np.array(members))
    return parts


def _normalised(mask: np.ndarray) -> tuple[np.ndarray, float]:
    """The mask's bounding box resized to GRID x GRID (soft), and the box's width/height ratio."""
    rows, cols = np.nonzero(mask)
    crop = mask[rows.min() : rows.max() + 1, cols.min() : cols.max() + 1].astype(np.float32)
    aspect = crop.shape[1] / crop.shape[0]
    image = Image.fromarray((crop * 255).astype(np.uint8)).resize((GRID, GRID), Image.Resampling.BILINEAR)
    return np.asarray(image, dtype=np.float32) / 255.0, aspect


@dataclass(frozen=True)
class _Template:
    shape: str
    grid: np.ndarray
    aspect: float


class Judge:
    """Builds the shape templates once; `judge(image)` then reads any number of pictures."""

    def __init__(self) -> None:
        self._templates = [
            self._template(kind, radius, blur)
            for kind in SHAPES
            for radius in TEMPLATE_RADII
            for blur in TEMPLATE_BLURS
        ]

    @staticmethod
    def _template(kind: str, radius: float, blur: float) -> _Template:
        scene = Scene("black", (Shape(kind, "white", "large", 0.5, 0.5, radius),))
        image = render(scene)
        if blur > 0:
            image = image.filter(ImageFilter.GaussianBlur(blur))
        pixels = np.asarray(image, dtype=np.float32)
        grid, aspect = _normalised(pixels[..., 0] > 127.5)
        return _Template(kind, grid, aspect)

    def classify(self, mask: np.ndarray) -> tuple[str, float]:
        """The template shape that best matches a boolean mask of one part, and its score."""
        grid, aspect = _normalised(mask)
        best = ("", -math.inf)
        for template in self._templates:
            iou = np.minimum(grid, template.grid).sum() / max(np.maximum(grid, template.grid).sum(), 1e-6)
            score = float(iou) - ASPECT_PENALTY * abs(math.log(aspect / template.aspect))
            if score > best[1]:
                best = (template.shape, score)
        return best

    def judge(self, image: Image.Image) -> Verdict:
        pixels = np.asarray(image.convert("RGB"), dtype=np.float32)
        border = _border(pixels)
        votes = Counter(nearest_colours(border).tolist())
        background_index = votes.most_common(1)[0][0]
        # The measured background (not the palette's) so a slightly off-colour decoder is not all foreground.
        near_bg = border[nearest_colours(border) == background_index]
        bg_rgb = np.median(near_bg, axis=0)
        distance = np.linalg.norm(pixels - bg_rgb, axis=2)
        parts = [p for p in _components(distance > FOREGROUND_DISTANCE) if len(p) >= MIN_AREA]
        blobs = sorted((self._blob(pixels, bg_rgb, distance, p) for p in parts), key=lambda b: -b.area)
        return Verdict(background=COLOURS[background_index], blobs=tuple(blobs))

    def _blob(
        self, pixels: np.ndarray, bg_rgb: np.ndarray, distance: np.ndarray, members: np.ndarray
    ) -> Blob:
        rows, cols = members[:, 0], members[:, 1]
        strength = distance[rows, cols]
        core = strength >= np.percentile(strength, 60)
        core_rgb = np.median(pixels[rows[core], cols[core]], axis=0)
        mask = _half_coverage(pixels, bg_rgb, core_rgb, members)
        shape, score = self.classify(mask)
        side = float(distance.shape[0])
        return Blob(
            colour=nearest_colour(core_rgb),
            shape=shape,
            area=len(members),
            x=float(cols.mean() + 0.5) / side,
            y=float(rows.mean() + 0.5) / side,
            width=float(cols.max() - cols.min() + 1) / side,
            height=float(rows.max() - rows.min() + 1) / side,
            score=score,
        )


def _half_coverage(
    pixels: np.ndarray, bg_rgb: np.ndarray, core_rgb: np.ndarray, members: np.ndarray
) -> np.ndarray:
    """The part's silhouette cut where a pixel is half shape, half background.

    A fixed distance threshold eats into holes and rounds corners once the picture is blurred; cutting at
    the half-way point between this part's own colour and the background keeps the outline where it was.
    """
    rows, cols = members[:, 0], members[:, 1]
    top, bottom = max(rows.min() - 1, 0), rows.max() + 2
    left, right = max(cols.min() - 1, 0), cols.max() + 2
    axis = core_rgb - bg_rgb
    window = pixels[top:bottom, left:right] - bg_rgb
    coverage = window @ axis / max(float(axis @ axis), 1e-6)
    mask = np.zeros(pixels.shape[:2], dtype=bool)
    mask[top:bottom, left:right] = coverage > 0.5
    if not mask.any():
        mask[rows, cols] = True
    return mask
