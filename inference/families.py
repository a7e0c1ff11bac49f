"""The supported model families (SD 1.x/2.x, SDXL, SD3, FLUX) and what each needs from the engine.

A family is recognised from the loaded pipeline's class. It says how the engine must call that pipeline
(sizes, guidance, negative prompts, text-encoder sequence length), how to turn its latents into a live
preview, and which settings it cannot honour, refused when the worker starts rather than at the first job.
"""

from __future__ import annotations

import json
import logging
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeAlias

import torch
from diffusers import FluxPipeline

from inference.engine_api import EngineError
from inference.settings import EngineSettings

log = logging.getLogger(__name__)

# diffusers pipelines gain their components and methods at runtime, out of mypy's sight.
Pipeline: TypeAlias = Any

Rgb = tuple[float, float, float]


@dataclass(frozen=True, slots=True)
class Family:
    """One model family: the pipelines that belong to it and how the engine drives them."""

    name: str
    title: str
    pipelines: frozenset[str]  # text-to-image pipeline class names
    latent_channels: int
    # Width and height must be multiples of this: the autoencoder's 8x times the transformer's 2x2
    # patches for SD3 and FLUX.
    size_multiple: int
    # Flow-matching families take only flow-matching schedulers, which have no timestep spacing.
    flow_matching: bool
    # Whether the job's negative prompt reaches the model (through classifier-free guidance).
    negative_prompts: bool
    # Latent-to-RGB projections for live previews: the approximations ComfyUI uses
    # (comfy/latent_formats.py), applied to the latents the pipeline denoises.
    rgb_factors: tuple[Rgb, ...]
    rgb_bias: Rgb = (0.0, 0.0, 0.0)


SD = Family(
    name="sd",
    title="Stable Diffusion 1.x/2.x",
    pipelines=frozenset({"StableDiffusionPipeline", "LatentConsistencyModelPipeline"}),
    latent_channels=4,
    size_multiple=8,
    flow_matching=False,
    negative_prompts=True,
    rgb_factors=(
        (0.3512, 0.2297, 0.3227),
        (0.3250, 0.4974, 0.2350),
        (-0.2829, 0.1762, 0.2721),
        (-0.2120, -0.2616, -0.7177),
    ),
)

SDXL = Family(
    name="sdxl",
    title="Stable Diffusion XL",
    pipelines=frozenset({"StableDiffusionXLPipeline"}),
    latent_channels=4,
    size_multiple=8,
    flow_matching=False,
    negative_prompts=True,
    rgb_factors=(
        (0.3651, 0.4232, 0.4341),
        (-0.2533, -0.0042, 0.1068),
        (0.1076, 0.1111, -0.0362),
        (-0.3165, -0.2492, -0.2188),
    ),
    rgb_bias=(0.1084, -0.0175, -0.0011),
)

SD3 = Family(
    name="sd3",
    title="Stable Diffusion 3/3.5",
    pipelines=frozenset({"StableDiffusion3Pipeline"}),
    latent_channels=16,
    size_multiple=16,
    flow_matching=True,
    negative_prompts=True,
    rgb_factors=(
        (-0.0922, -0.0175, 0.0749),
        (0.0311, 0.0633, 0.0954),
        (0.1994, 0.0927, 0.0458),
        (0.0856, 0.0339, 0.0902),
        (0.0587, 0.0272, -0.0496),
        (-0.0006, 0.1104, 0.0309),
        (0.0978, 0.0306, 0.0427),
        (-0.0042, 0.1038, 0.1358),
        (-0.0194, 0.0020, 0.0669),
        (-0.0488, 0.0130, -0.0268),
        (0.0922, 0.0988, 0.0951),
        (-0.0278, 0.0524, -0.0542),
        (0.0332, 0.0456, 0.0895),
        (-0.0069, -0.0030, -0.0810),
        (-0.0596, -0.0465, -0.0293),
        (-0.1448, -0.1463, -0.1189),
    ),
    rgb_bias=(0.2394, 0.2135, 0.1925),
)

FLUX = Family(
    name="flux",
    title="FLUX.1",
    pipelines=frozenset({"FluxPipeline"}),
    latent_channels=16,
    size_multiple=16,
    flow_matching=True,
    # FLUX.1 is guidance-distilled: one transformer pass per step, no negative branch.
    negative_prompts=False,
    rgb_factors=(
        (-0.0346, 0.0244, 0.0681),
        (0.0034, 0.0210, 0.0687),
        (0.0275, -0.0668, -0.0433),
        (-0.0174, 0.0160, 0.0617),
        (0.0859, 0.0721, 0.0329),
        (0.0004, 0.0383, 0.0115),
        (0.0405, 0.0861, 0.0915),
        (-0.0236, -0.0185, -0.0259),
        (-0.0245, 0.0250, 0.1180),
        (0.1008, 0.0755, -0.0421),
        (-0.0515, 0.0201, 0.0011),
        (0.0428, -0.0012, -0.0036),
        (0.0817, 0.0765, 0.0749),
        (-0.1264, -0.0522, -0.1103),
        (-0.0280, -0.0881, -0.0499),
        (-0.1262, -0.0982, -0.0778),
    ),
    rgb_bias=(-0.0329, -0.0718, -0.0851),
)

FAMILIES = (SD, SDXL, SD3, FLUX)
# FLUX.1 [schnell]'s T5 was trained on 256 tokens, [dev]'s on 512 (diffusers' FluxPipeline docs).
FLUX_SCHNELL_MAX_TOKENS = 256
FLUX_DEV_MAX_TOKENS = 512


def family_of(pipe: Pipeline) -> Family:
    """The family of a loaded text-to-image pipeline; a clear EngineError for any other kind of model."""
    return family_named(type(pipe).__name__)


def family_named(pipeline_class: str) -> Family:
    """The family of a pipeline class name (a folder's `model_index.json` `_class_name`)."""
    for family in FAMILIES:
        if pipeline_class in family.pipelines:
            return family
    supported = ", ".join(f"{f.title} ({'/'.join(sorted(f.pipelines))})" for f in FAMILIES)
    hint = (
        " (an instruction-editing pipeline goes in edit_model)" if "InstructPix2Pix" in pipeline_class else ""
    )
    raise EngineError(f"{pipeline_class} is not a supported model family{hint}; brushfire runs {supported}")


def check_model_folder(source: str) -> None:
    """Refuse a local model folder of an unsupported family before loading any weights.

    (A Hugging Face id is checked once loaded, by `family_of`.)
    """
    index = Path(source) / "model_index.json"
    if not index.is_file():
        return
    try:
        class_name = str(json.loads(index.read_text())["_class_name"])
    except (ValueError, KeyError, TypeError) as exc:
        raise EngineError(f"cannot read the pipeline class of {source!r}: {exc}") from exc
    family_named(class_name)


def check_settings(family: Family, pipe: Pipeline, settings: EngineSettings) -> None:
    """Refuse, at start, settings this family cannot honour (schedulers of the other kind, spacing)."""
    if settings.scheduler is not None and settings.scheduler.startswith("FlowMatch") != family.flow_matching:
        kind = "flow-matching" if family.flow_matching else "noise-prediction"
        raise EngineError(
            f"scheduler {settings.scheduler!r} does not fit {family.title}, which takes {kind} schedulers "
            f"(it ships {type(pipe.scheduler).__name__})"
        )
    if settings.timestep_spacing is not None and family.flow_matching:
        raise EngineError(
            f"timestep_spacing does not apply to {family.title}: its flow-matching scheduler "
            f"{type(pipe.scheduler).__name__} has no timestep spacing; remove it"
        )


def check_preview_decoder(family: Family, decoder: torch.nn.Module) -> None:
    """A preview decoder must read this family's latents (TAESD/TAESDXL: 4 channels; TAESD3/TAEF1: 16)."""
    channels = int(getattr(decoder.config, "latent_channels", 4))
    if channels != family.latent_channels:
        raise EngineError(
            f"preview_decoder reads {channels}-channel latents but {family.title} makes "
            f"{family.latent_channels}-channel ones (use a decoder made for {family.title})"
        )


def pipeline_size(family: Family, width: int, height: int) -> tuple[int, int]:
    """The size to run the pipeline at: the requested one rounded up to the family's multiple.

    Requests come in multiples of 8; SD3 and FLUX need 16. The engine resizes the result back, so every
    job still gets the size it asked for.
    """
    m = family.size_multiple
    return math.ceil(width / m) * m, math.ceil(height / m) * m


def adapt_call(family: Family, pipe: Pipeline, kwargs: dict[str, Any]) -> dict[str, Any]:
    """Turn the engine's generic call arguments into what this family's pipeline needs."""
    if family is FLUX:
        return _flux_call(pipe, kwargs)
    if family is SDXL:
        return _sdxl_call(pipe, kwargs)
    return kwargs


def _flux_call(pipe: Pipeline, kwargs: dict[str, Any]) -> dict[str, Any]:
    kwargs.pop("negative_prompt", None)  # FluxPipeline would ignore it without true CFG (a second pass)
    distilled = bool(getattr(pipe.transformer.config, "guidance_embeds", False))
    if not distilled:
        # [schnell] has no guidance input at all: the value would be ignored, so do not pretend.
        kwargs.pop("guidance_scale", None)
    limit = FLUX_DEV_MAX_TOKENS if distilled else FLUX_SCHNELL_MAX_TOKENS
    kwargs["max_sequence_length"] = min(limit, int(pipe.tokenizer_2.model_max_length))
    return kwargs


def _sdxl_call(pipe: Pipeline, kwargs: dict[str, Any]) -> dict[str, Any]:
    """SDXL was trained with zeros, not the encoded empty string, as the unconditional input.

    The pipeline uses zeros only when the whole call has no negative prompt; a batch mixing jobs with and
    without one would give the latter the encoded empty string, so a job's image would depend on its
    batch. Encode the prompts once and zero exactly the rows of jobs with no negative prompt.
    """
    negatives = kwargs.get("negative_prompt") or []
    if kwargs.get("guidance_scale", 0.0) <= 1.0 or not pipe.config.get("force_zeros_for_empty_prompt", False):
        return kwargs
    if all(negatives):
        return kwargs
    prompt = kwargs.pop("prompt")
    kwargs.pop("negative_prompt")
    with torch.no_grad():
        embeds, negative, pooled, negative_pooled = pipe.encode_prompt(
            prompt=prompt,
            device=pipe._execution_device,
            do_classifier_free_guidance=True,
            negative_prompt=list(negatives),
        )
    empty = torch.tensor([not n for n in negatives], device=negative.device)
    kwargs.update(
        prompt_embeds=embeds,
        negative_prompt_embeds=negative.masked_fill(empty[:, None, None], 0.0),
        pooled_prompt_embeds=pooled,
        negative_pooled_prompt_embeds=negative_pooled.masked_fill(empty[:, None], 0.0),
    )
    return kwargs


def preview_latents(
    family: Family, pipe: Pipeline, latents: torch.Tensor, size: tuple[int, int]
) -> torch.Tensor | None:
    """The step's latents as (batch, channels, h, w), unpacking FLUX's 2x2 patches; None if unreadable."""
    if family is FLUX and latents.ndim == 3:
        width, height = size
        latents = FluxPipeline._unpack_latents(latents, height, width, pipe.vae_scale_factor)
    if latents.ndim != 4 or latents.shape[1] != family.latent_channels:
        return None
    return latents
