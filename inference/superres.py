"""Super-resolution models (ESRGAN, Real-ESRGAN Compact, SPAN, ...) loaded by path with spandrel, run tiled.

`load_upscaler(path)` reads any single-file model spandrel recognises (.pth, .safetensors) and returns an
`Upscaler`: its scale and an `upscale(batch)` that runs the network over overlapping tiles, so a picture of
any size runs in the memory of one tile batch. Tiling is written here (a few lines: each tile is run with an
overlap on every side and only its centre is kept, so no seam shows); spandrel does the architecture
detection and model building.

spandrel imports every architecture it knows when it is imported, and two of them (LaMa, RestoreFormer)
import torchvision at that moment. A CPU-only torch from the PyTorch wheel index has no matching torchvision
on PyPI (its builds link the CUDA torch), so where `import torchvision` fails, `_import_spandrel` puts a
placeholder in its place that refuses to be used: the super-resolution architectures never touch it, and the
two that do are not super-resolution models (loading one is refused as "not an upscaler" anyway).
"""

from __future__ import annotations

import logging
import sys
import types
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from inference.settings import UpscalerSettings

log = logging.getLogger(__name__)


class UpscalerError(ValueError):
    """A model file that is missing, unreadable, or not a super-resolution model of scale 2, 3 or 4."""


def _torchvision_placeholder() -> None:
    def refuse(*_args: object, **_kwargs: object) -> None:
        raise RuntimeError("torchvision is not usable with this torch build")

    root = types.ModuleType("torchvision")
    transforms = types.ModuleType("torchvision.transforms")
    functional = types.ModuleType("torchvision.transforms.functional")
    functional.InterpolationMode = type("InterpolationMode", (), {})  # type: ignore[attr-defined]
    functional.rotate = refuse  # type: ignore[attr-defined]
    functional.normalize = refuse  # type: ignore[attr-defined]
    root.transforms = transforms  # type: ignore[attr-defined]
    transforms.functional = functional  # type: ignore[attr-defined]
    for name, module in (
        ("torchvision", root),
        ("torchvision.transforms", transforms),
        ("torchvision.transforms.functional", functional),
    ):
        sys.modules[name] = module


def _import_spandrel() -> Any:
    try:
        import torchvision  # noqa: F401
    except (ImportError, RuntimeError, OSError) as exc:
        log.info("torchvision unusable (%s); spandrel loads with a placeholder for it", exc)
        for name in [n for n in sys.modules if n == "torchvision" or n.startswith("torchvision.")]:
            del sys.modules[name]
        _torchvision_placeholder()
    import spandrel

    return spandrel


@dataclass(frozen=True)
class TileSettings:
    tile: int = 256  # input pixels per tile side
    overlap: int = 16  # input pixels of context on each side of a tile, cropped from its output
    batch: int = 8  # tiles run together


class Upscaler:
    """One loaded super-resolution network: `upscale` takes and returns float tensors in [0, 1], NCHW."""

    def __init__(
        self,
        model: torch.nn.Module,
        scale: int,
        architecture: str,
        path: Path,
        half_dtypes: frozenset[torch.dtype] = frozenset(),
    ) -> None:
        self.model = model
        self.scale = scale
        self.architecture = architecture
        self.path = path
        self.half_dtypes = half_dtypes  # the reduced precisions spandrel says this architecture runs in

    @property
    def device(self) -> torch.device:
        return next(self.model.parameters()).device

    def to(self, device: torch.device | str) -> Upscaler:
        self.model.to(device)
        return self

    @torch.inference_mode()
    def upscale(self, images: torch.Tensor, tiles: TileSettings = TileSettings()) -> torch.Tensor:
        """Upscale a batch (N, 3, H, W) tile by tile; output (N, 3, H*scale, W*scale), clamped to [0, 1]."""
        n, c, h, w = images.shape
        s, size, pad = self.scale, tiles.tile, tiles.overlap
        out = torch.empty((n, c, h * s, w * s), dtype=images.dtype, device=images.device)
        # Reflect-pad once so every tile, the edge ones included, has its overlap of real-looking context.
        padded = F.pad(images, (pad, pad, pad, pad), mode="replicate")
        boxes = [(y, x) for y in range(0, h, size) for x in range(0, w, size)]
        crops: list[tuple[int, int, int, int, torch.Tensor]] = []
        for y, x in boxes:
            th, tw = min(size, h - y), min(size, w - x)
            crops.append((y, x, th, tw, padded[:, :, y : y + th + 2 * pad, x : x + tw + 2 * pad]))
        # Tiles of one shape run together (all but the right and bottom edges share the full tile size).
        by_shape: dict[tuple[int, int], list[tuple[int, int, int, int, torch.Tensor]]] = {}
        for crop in crops:
            by_shape.setdefault((crop[2], crop[3]), []).append(crop)
        per_run = max(1, tiles.batch // n)
        for group in by_shape.values():
            for start in range(0, len(group), per_run):
                chunk = group[start : start + per_run]
                result = self.model(torch.cat([t for *_, t in chunk]).to(self.device)).to(images.device)
                for i, (y, x, th, tw, _) in enumerate(chunk):
                    part = result[i * n : (i + 1) * n, :, pad * s : (pad + th) * s, pad * s : (pad + tw) * s]
                    out[:, :, y * s : (y + th) * s, x * s : (x + tw) * s] = part
        return out.clamp_(0.0, 1.0)


def load_upscaler(path: Path, device: torch.device | str = "cpu") -> Upscaler:
    """Read a super-resolution model file with spandrel; refuse anything that is not an RGB upscaler."""
    if not path.is_file():
        raise UpscalerError(f"upscaler model file not found: {path}")
    spandrel = _import_spandrel()
    try:
        descriptor = spandrel.ModelLoader(device="cpu").load_from_file(str(path))
    except Exception as exc:  # spandrel raises its own errors, torch's and pickle's: all mean "unreadable"
        raise UpscalerError(f"{path.name} is not a model spandrel can read: {exc}") from exc
    if not isinstance(descriptor, spandrel.ImageModelDescriptor) or descriptor.scale not in (2, 3, 4):
        raise UpscalerError(f"{path.name} is not a super-resolution model of scale 2, 3 or 4")
    if descriptor.input_channels != 3 or descriptor.output_channels != 3:
        raise UpscalerError(f"{path.name} does not take and give RGB pictures")
    model = descriptor.model.eval().to(device)
    log.info("upscaler %s: %s, %dx", path.name, descriptor.architecture.name, descriptor.scale)
    halves = {torch.float16: descriptor.supports_half, torch.bfloat16: descriptor.supports_bfloat16}
    half_dtypes = frozenset(dtype for dtype, ok in halves.items() if ok)
    return Upscaler(model, descriptor.scale, descriptor.architecture.name, path, half_dtypes)


def to_tensor(pixels: np.ndarray) -> torch.Tensor:
    """uint8 (N, H, W, 3) → float (N, 3, H, W) in [0, 1]."""
    return torch.from_numpy(pixels).permute(0, 3, 1, 2).float().div_(255.0)


def to_uint8(images: torch.Tensor) -> np.ndarray:
    """float (N, 3, H, W) in [0, 1] → uint8 (N, H, W, 3), rounded."""
    return images.mul(255.0).round_().clamp_(0, 255).to(torch.uint8).permute(0, 2, 3, 1).cpu().numpy()


BUNDLED_UPSCALERS = Path(__file__).parent / "tiny" / "model" / "upscaler"


def bundled_upscaler(scale: int) -> Path:
    """The bundled tiny upscaler of this scale (trained on the procedural scenes: MODEL_CARD.md)."""
    return BUNDLED_UPSCALERS / f"upscaler_x{scale}.safetensors"


class UpscaleStage:
    """What an engine needs for upscale jobs: the loaded model, its tiling and the creative strength."""

    def __init__(self, upscaler: Upscaler, tiles: TileSettings, creative_strength: float) -> None:
        self.upscaler = upscaler
        self.tiles = tiles
        self.creative_strength = creative_strength

    @classmethod
    def load_or_none(
        cls, settings: UpscalerSettings, device: torch.device, dtype: torch.dtype
    ) -> UpscaleStage | None:
        """The configured upscaler; None when spandrel is not installed and none is named by path (the
        bundled default), so a worker without the `upscale` extra runs and refuses upscales."""
        try:
            return cls.load(settings, device, dtype)
        except ModuleNotFoundError as exc:
            if settings.path is not None or exc.name != "spandrel":
                raise
            log.warning("spandrel is not installed (the `upscale` extra): this worker refuses upscale jobs")
            return None

    @classmethod
    def load(cls, settings: UpscalerSettings, device: torch.device, dtype: torch.dtype) -> UpscaleStage:
        path = settings.path or bundled_upscaler(settings.scale)
        upscaler = load_upscaler(path, device)
        if settings.path is not None and upscaler.scale != settings.scale:
            raise UpscalerError(
                f"{path.name} upscales by {upscaler.scale}, not by the configured {settings.scale}"
            )
        if dtype in upscaler.half_dtypes and device.type != "cpu":
            upscaler.model.to(dtype)
        tiles = TileSettings(tile=settings.tile, overlap=settings.tile_overlap, batch=settings.tile_batch)
        return cls(upscaler, tiles, settings.creative_strength)

    @property
    def scale(self) -> int:
        return self.upscaler.scale

    def describe(self) -> str:
        """For the pictures' metadata: architecture, factor and file."""
        return f"{self.upscaler.architecture} {self.scale}x ({self.upscaler.path.name})"

    def enlarge(self, inputs: list[np.ndarray]) -> list[np.ndarray]:
        """Upscale same-sized uint8 (H, W, 3) pictures together; uint8 (H*s, W*s, 3) each, in order."""
        batch = to_tensor(np.stack(inputs)).to(
            self.upscaler.device, next(self.upscaler.model.parameters()).dtype
        )
        return list(to_uint8(self.upscaler.upscale(batch, self.tiles).float()))
