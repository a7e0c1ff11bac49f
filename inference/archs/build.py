"""Build random-weight pipelines with the exact architectures in `inference.archs`, for GPU benchmarks.

Like `inference.tiny.build`, this is a build script and imports torch and diffusers. The modules are
created directly on the target device (random init on a GPU takes seconds; SDXL on a CPU would take
minutes), then wrapped by the same engine that serves downloaded models.
"""

from __future__ import annotations

import logging
from typing import Any

import torch
from diffusers import (
    AutoencoderKL,
    EulerDiscreteScheduler,
    StableDiffusionPipeline,
    StableDiffusionXLPipeline,
    UNet2DConditionModel,
)
from transformers import CLIPTextConfig, CLIPTextModel, CLIPTextModelWithProjection, CLIPTokenizer

from inference.archs import Arch, get_arch
from inference.engine import DiffusersEngine
from inference.loading import Pipeline, resolve_device, resolve_dtype
from inference.settings import EngineSettings
from inference.tiny.make_tokenizer import DEFAULT_DIR as TOKENIZER_DIR

log = logging.getLogger(__name__)

SEED = 0
MAX_TOKENS = 77


def _tokenizer() -> CLIPTokenizer:
    # The tiny vocabulary: token ids differ from CLIP's, but every prompt still pads to 77 tokens, so the
    # text encoders do the same work as with the real 49,408-token vocabulary.
    return CLIPTokenizer.from_pretrained(str(TOKENIZER_DIR), model_max_length=MAX_TOKENS)


def _text_config(arch: Arch, component: str) -> CLIPTextConfig:
    config: dict[str, Any] = {
        k: v for k, v in arch.config(component).items() if k not in ("architectures", "model_type")
    }
    return CLIPTextConfig(**config)


def _modules(arch: Arch) -> dict[str, torch.nn.Module]:
    modules: dict[str, torch.nn.Module] = {
        "unet": UNet2DConditionModel.from_config(arch.config("unet")),
        "vae": AutoencoderKL.from_config(arch.config("vae")),
        "text_encoder": CLIPTextModel(_text_config(arch, "text_encoder")),
    }
    if arch.pipeline == "StableDiffusionXLPipeline":
        modules["text_encoder_2"] = CLIPTextModelWithProjection(_text_config(arch, "text_encoder_2"))
    return modules


def build_random_pipeline(name: str, device: str | torch.device, dtype: torch.dtype) -> Pipeline:
    """The named architecture with random weights, built on `device` in `dtype` ("meta" builds no weights)."""
    arch = get_arch(name)
    torch.manual_seed(SEED)
    with torch.device(device):
        modules = _modules(arch)
    for module in modules.values():
        module.to(dtype).eval().requires_grad_(False)
    parts: dict[str, Any] = {
        **modules,
        "scheduler": EulerDiscreteScheduler.from_config(arch.config("scheduler")),
        "tokenizer": _tokenizer(),
    }
    if arch.pipeline == "StableDiffusionXLPipeline":
        return StableDiffusionXLPipeline(**parts, tokenizer_2=_tokenizer())
    return StableDiffusionPipeline(
        **parts, safety_checker=None, feature_extractor=None, requires_safety_checker=False
    )


def random_engine(name: str, settings: EngineSettings) -> DiffusersEngine:
    """An engine serving the named architecture with random weights on the device `settings` picks.

    Pass `defaults=get_arch(name).defaults` in `settings` to run at the architecture's native size and steps.
    """
    device = resolve_device(settings.device)
    dtype = resolve_dtype(settings.dtype, device)
    log.info("building random-weight %s on %s as %s", name, device, dtype)
    pipe = build_random_pipeline(name, device, dtype)
    return DiffusersEngine.from_pipeline(settings, pipe, model_name=f"random:{name}", device=device)
