"""The image safety classifier: one verdict per output image, whatever model family made it.

Pipelines other than SD 1.x carry no safety checker, so the engine runs this one on every image itself.
It only flags: the image is returned unchanged and the bot's per-server NSFW policy decides whether to
spoiler or withhold it. Two kinds load from a local folder or a Hugging Face id:

- `clip`: Stable Diffusion's CLIP concept checker (`StableDiffusionSafetyChecker` and its image processor);
- `classifier`: any transformers image-classification model, with the labels that mean unsafe and a
  probability threshold.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any, cast

import numpy as np
import torch
from PIL import Image
from transformers import AutoImageProcessor, AutoModelForImageClassification

from inference.engine_api import EngineError
from inference.settings import SafetySettings

log = logging.getLogger(__name__)


class SafetyClassifier:
    """Flags unsafe images in batches, on the engine's device."""

    def __init__(
        self,
        settings: SafetySettings,
        processor: Any,
        score: Callable[[torch.Tensor], list[bool]],
        device: torch.device,
        dtype: torch.dtype,
    ) -> None:
        self._settings = settings
        self._processor = processor
        self._score = score
        self._device = device
        self._dtype = dtype

    @classmethod
    def load(
        cls, settings: SafetySettings, device: torch.device, dtype: torch.dtype, cache_dir: str | None = None
    ) -> SafetyClassifier:
        """Load the configured checker; any failure (missing files, labels it lacks) is a clear EngineError."""
        kwargs: dict[str, Any] = {"cache_dir": cache_dir} if cache_dir else {}
        try:
            processor = AutoImageProcessor.from_pretrained(settings.model, **kwargs)
            if settings.kind == "clip":
                from diffusers.pipelines.stable_diffusion.safety_checker import StableDiffusionSafetyChecker

                model = StableDiffusionSafetyChecker.from_pretrained(settings.model, **kwargs)
            else:
                model = AutoModelForImageClassification.from_pretrained(settings.model, **kwargs)
        except Exception as exc:  # missing files, offline hub, a config of another kind: all fatal at start
            raise EngineError(
                f"cannot load the {settings.kind} safety checker {settings.model!r}: {type(exc).__name__}: {exc}"
            ) from exc
        # Cast after loading: the dtype argument of from_pretrained changed name across transformers versions.
        model = (
            cast(Any, model).to(device, dtype).eval().requires_grad_(False)
        )  # transformers types .to oddly
        score = _clip_scorer(model) if settings.kind == "clip" else _label_scorer(model, settings)
        log.info("safety checker: %s %s", settings.kind, settings.model)
        return cls(settings, processor, score, device, dtype)

    def flags(self, images: list[Image.Image]) -> list[bool]:
        """One flag per image: True when the checker finds it unsafe."""
        if not images:
            return []
        rgb = [img.convert("RGB") for img in images]
        pixels = self._processor(images=rgb, return_tensors="pt")["pixel_values"]
        with torch.no_grad():
            flags = self._score(pixels.to(self._device, self._dtype))
        if any(flags):
            log.info("safety checker flagged %d of %d images", sum(flags), len(flags))
        return flags


def _clip_scorer(model: torch.nn.Module) -> Callable[[torch.Tensor], list[bool]]:
    def score(pixels: torch.Tensor) -> list[bool]:
        # The checker blacks out what it flags in `images`; give it placeholders, keep ours intact.
        placeholders = np.zeros((pixels.shape[0], 1, 1, 3))
        _, flagged = model(clip_input=pixels, images=placeholders)
        return [bool(f) for f in flagged]

    return score


def _label_scorer(model: Any, settings: SafetySettings) -> Callable[[torch.Tensor], list[bool]]:
    labels = {str(name).lower(): int(i) for i, name in model.config.id2label.items()}
    wanted = [label.lower() for label in settings.unsafe_labels]
    missing = [label for label in wanted if label not in labels]
    if missing:
        raise EngineError(
            f"safety checker {settings.model!r} has no label {', '.join(map(repr, missing))}; "
            f"its labels are {sorted(labels)} (set [engine.safety] unsafe_labels)"
        )
    unsafe = torch.tensor([labels[label] for label in wanted])

    def score(pixels: torch.Tensor) -> list[bool]:
        probs = model(pixel_values=pixels).logits.float().softmax(dim=-1)
        unsafe_prob = probs[:, unsafe.to(probs.device)].sum(dim=-1)
        return [bool(p >= settings.threshold) for p in unsafe_prob]

    return score
