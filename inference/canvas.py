"""Zoom out, pan and vary region as canvases and masks: where the picture goes, what is painted, how it blends.

Pure geometry and pixel arithmetic (numpy and PIL, no torch), shared by the worker's engine, which paints,
and the bot, which prices a job at its output size before it runs.

- **zoom** (1.5x, 2x): the picture centred on a canvas `zoom` times its size; the border is painted.
- **pan** (left, right, up, down): the canvas extended on one side by half the picture's side; the new
  strip is painted.
- **region**: the picture's own canvas; the chosen cells of a 3x3 grid (0-8, row by row) are painted.

The model paints at about its native size (`paint_size`: the canvas scaled to the model's native area), so a
2x zoom of a 1024x1024 picture is painted at 1024x1024, not 2048x2048; the result is then scaled to the
canvas and the original is put back at full resolution outside the mask (`composite`). Pixels further than
`feather` outside a painted region are the original's, byte for byte; within it the two blend linearly. A
zoom or pan keeps the whole original and blends inside the new area instead (`blend_weight`).
"""

from __future__ import annotations

import math
from typing import Literal

import numpy as np
from PIL import Image, ImageFilter

Op = Literal["zoom", "pan", "region"]
Direction = Literal["left", "right", "up", "down"]
GRID = 3
CELLS = GRID * GRID
ZOOMS = (1.5, 2.0)
PAN_FRACTION = 0.5  # a pan extends the canvas by half the picture's side
MAX_FEATHER_PX = 64

# Named regions a member may pick instead of cells (row-major cell numbers of the 3x3 grid).
REGIONS: dict[str, tuple[int, ...]] = {
    "left": (0, 3, 6),
    "centre_column": (1, 4, 7),
    "right": (2, 5, 8),
    "top": (0, 1, 2),
    "middle_row": (3, 4, 5),
    "bottom": (6, 7, 8),
    "centre": (4,),
    "left_half": (0, 1, 3, 4, 6, 7),
    "right_half": (1, 2, 4, 5, 7, 8),
    "top_half": (0, 1, 2, 3, 4, 5),
    "bottom_half": (3, 4, 5, 6, 7, 8),
    "border": (0, 1, 2, 3, 5, 6, 7, 8),
}


def canvas_size(
    op: Op,
    width: int,
    height: int,
    *,
    zoom: float = 2.0,
    direction: Direction = "right",
    max_pixels: int | None = None,
    max_side: int | None = None,
) -> tuple[int, int]:
    """The output canvas for a picture of `width` x `height`, on multiples of 8, shrunk to fit the limits."""
    if op == "zoom":
        w, h = width * zoom, height * zoom
    elif op == "pan":
        w = width * (1 + PAN_FRACTION) if direction in ("left", "right") else width
        h = height * (1 + PAN_FRACTION) if direction in ("up", "down") else height
    else:
        w, h = width, height
    scale = 1.0
    if max_pixels is not None and w * h > max_pixels:
        scale = math.sqrt(max_pixels / (w * h))
    if max_side is not None and max(w, h) * scale > max_side:
        scale = max_side / max(w, h)
    # Rounded down so a shrunk canvas stays within the limits.
    return max(8, int(w * scale) // 8 * 8), max(8, int(h * scale) // 8 * 8)


def placement(
    op: Op, canvas: tuple[int, int], *, zoom: float = 2.0, direction: Direction = "right"
) -> tuple[int, int, int, int]:
    """Where the original goes on the canvas: (left, top, width, height) in canvas pixels."""
    cw, ch = canvas
    if op == "zoom":
        w, h = round(cw / zoom), round(ch / zoom)
        return (cw - w) // 2, (ch - h) // 2, w, h
    if op == "pan":
        if direction in ("left", "right"):
            w = round(cw / (1 + PAN_FRACTION))
            return (cw - w if direction == "left" else 0), 0, w, ch
        h = round(ch / (1 + PAN_FRACTION))
        return 0, (ch - h if direction == "up" else 0), cw, h
    return 0, 0, cw, ch


def cells_mask(cells: tuple[int, ...] | list[int], width: int, height: int) -> np.ndarray:
    """A boolean (height, width) mask, True on the chosen cells of the 3x3 grid."""
    mask = np.zeros((height, width), dtype=bool)
    xs = [round(i * width / GRID) for i in range(GRID + 1)]
    ys = [round(i * height / GRID) for i in range(GRID + 1)]
    for cell in cells:
        row, col = divmod(int(cell), GRID)
        mask[ys[row] : ys[row + 1], xs[col] : xs[col + 1]] = True
    return mask


def outside_mask(canvas: tuple[int, int], box: tuple[int, int, int, int]) -> np.ndarray:
    """True everywhere on the canvas but the original's box: what a zoom or a pan paints."""
    mask = np.ones((canvas[1], canvas[0]), dtype=bool)
    x, y, w, h = box
    mask[y : y + h, x : x + w] = False
    return mask


def feather_px(feather: float, canvas: tuple[int, int]) -> int:
    """The soft edge's width in canvas pixels: `feather` of the shorter side, at least 1 pixel."""
    return max(1, min(MAX_FEATHER_PX, round(feather * min(canvas))))


def alpha(mask: np.ndarray, feather: int) -> np.ndarray:
    """How much of the painted picture each pixel takes: 1 on the mask, falling linearly to 0 over
    `feather` pixels outside it (chessboard distance), exactly 0 beyond."""
    out = mask.astype(np.float32)
    grown = Image.fromarray(mask.astype(np.uint8) * 255)
    for k in range(1, feather + 1):
        grown = grown.filter(ImageFilter.MaxFilter(3))
        ring = np.asarray(grown) > 0
        np.maximum(out, ring * np.float32(1 - k / (feather + 1)), out=out)
    return out


def grown(mask: np.ndarray, feather: int) -> np.ndarray:
    """The mask grown by `feather` pixels: everything the blend takes anything painted from."""
    return alpha(mask, feather) > 0


def blend_weight(mask: np.ndarray, feather: int, *, inside: bool) -> np.ndarray:
    """The painted picture's weight per pixel. A region's soft edge lies outside its cells, so the old
    content of the cells never shows through; a zoom's or pan's lies inside the new area, against the
    stretched edge of the picture, so the original stays exactly as it was."""
    if not inside:
        return alpha(mask, feather)
    core = ~grown(~mask, feather)  # the new area less a band of `feather` pixels along the picture
    weight: np.ndarray = alpha(core, feather) * mask
    return weight


def paint_size(canvas: tuple[int, int], native: tuple[int, int], multiple: int = 8) -> tuple[int, int]:
    """The size the model paints at: the canvas's shape at the model's native area, on `multiple`s."""
    cw, ch = canvas
    scale = math.sqrt(native[0] * native[1] / (cw * ch))

    def side(v: float) -> int:
        return max(multiple, round(v * scale / multiple) * multiple)

    return side(cw), side(ch)


def composite(original: np.ndarray, painted: np.ndarray, weight: np.ndarray) -> np.ndarray:
    """original * (1 - weight) + painted * weight, rounded to uint8; where weight is 0 the original exactly."""
    blend = (
        original.astype(np.float32) * (1 - weight[..., None]) + painted.astype(np.float32) * weight[..., None]
    )
    out: np.ndarray = np.clip(np.rint(blend), 0, 255).astype(np.uint8)
    keep = weight == 0
    out[keep] = original[keep]
    return out


def on_canvas(picture: Image.Image, canvas: tuple[int, int], box: tuple[int, int, int, int]) -> np.ndarray:
    """The picture placed on the canvas at `box`, the rest filled by stretching its nearest edge pixels
    (what the model sees there is masked anyway; edge colours keep the masked picture's latent calm)."""
    x, y, w, h = box
    small = np.asarray(picture.convert("RGB").resize((w, h), Image.Resampling.LANCZOS))
    rows = np.clip(np.arange(canvas[1]) - y, 0, h - 1)
    cols = np.clip(np.arange(canvas[0]) - x, 0, w - 1)
    return np.ascontiguousarray(small[rows][:, cols])
