"""Documented few-step model presets: the model, scheduler and defaults that make each one fast and right.

Few-step (distilled) models make an image in 1-4 denoising steps instead of 25-50, with guidance off: on
the same GPU that is the largest single saving a server owner can make. A preset fills in the engine
settings such a model needs; `docs/models.md` explains how to pick one. No torch here.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field

from inference.settings import AdapterSettings, EngineSettings, ModelDefaults

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class Preset:
    """What one few-step model needs: where it lives, how it is scheduled, and its native defaults."""

    name: str
    model: str  # a Hugging Face id, loaded with from_pretrained
    defaults: ModelDefaults
    summary: str
    vram_gb: float  # roughly what the weights take in 16-bit, before activations
    scheduler: str | None = None
    timestep_spacing: str | None = None
    fused_adapters: tuple[AdapterSettings, ...] = field(default_factory=tuple)

    def apply(self, settings: EngineSettings) -> EngineSettings:
        """`settings` with this preset's model, scheduler, fused adapters and defaults filled in."""
        update = {
            "model": self.model,
            "defaults": self.defaults,
            "scheduler": self.scheduler,
            "timestep_spacing": self.timestep_spacing,
            "adapters": [*self.fused_adapters, *settings.adapters],
        }
        return EngineSettings.model_validate({**settings.model_dump(), **update})


PRESETS: dict[str, Preset] = {
    p.name: p
    for p in (
        Preset(
            name="sd-turbo",
            model="stabilityai/sd-turbo",
            defaults=ModelDefaults(
                steps=1, guidance=0.0, width=512, height=512, img2img_strength=0.5, edit_steps=2
            ),
            summary="SD 2.1 distilled (adversarial diffusion distillation): 1 step at 512x512, guidance off.",
            vram_gb=2.6,
            timestep_spacing="trailing",
        ),
        Preset(
            name="sdxl-turbo",
            model="stabilityai/sdxl-turbo",
            defaults=ModelDefaults(
                steps=1, guidance=0.0, width=512, height=512, img2img_strength=0.5, edit_steps=2
            ),
            summary="SDXL distilled (adversarial diffusion distillation): 1 step at 512x512, guidance off.",
            vram_gb=7.0,
            timestep_spacing="trailing",
        ),
        Preset(
            name="sdxl-lightning",
            model="stabilityai/stable-diffusion-xl-base-1.0",
            defaults=ModelDefaults(
                steps=4, guidance=0.0, width=1024, height=1024, img2img_strength=0.5, edit_steps=4
            ),
            summary="SDXL base with ByteDance's 4-step Lightning LoRA fused in: 4 steps at 1024x1024.",
            vram_gb=7.0,
            scheduler="EulerDiscreteScheduler",
            timestep_spacing="trailing",
            fused_adapters=(
                AdapterSettings(
                    name="sdxl-lightning-4step",
                    path="ByteDance/SDXL-Lightning",
                    weight_name="sdxl_lightning_4step_lora.safetensors",
                    fuse=True,
                ),
            ),
        ),
        Preset(
            name="sdxl-lcm-lora",
            model="stabilityai/stable-diffusion-xl-base-1.0",
            defaults=ModelDefaults(
                steps=4, guidance=1.0, width=1024, height=1024, img2img_strength=0.5, edit_steps=4
            ),
            summary="SDXL base with the LCM-LoRA fused in and the LCM scheduler: 4 steps, guidance 1.",
            vram_gb=7.0,
            scheduler="LCMScheduler",
            fused_adapters=(
                AdapterSettings(name="lcm-lora-sdxl", path="latent-consistency/lcm-lora-sdxl", fuse=True),
            ),
        ),
        Preset(
            name="flux-schnell",
            model="black-forest-labs/FLUX.1-schnell",
            defaults=ModelDefaults(
                steps=4, guidance=0.0, width=1024, height=1024, img2img_strength=0.6, edit_steps=4
            ),
            summary="FLUX.1 [schnell], timestep-distilled: 4 steps at 1024x1024; best prompts, heaviest.",
            vram_gb=33.0,
        ),
    )
}


def get_preset(name: str) -> Preset:
    """The named preset; a clear ValueError listing the known names otherwise."""
    try:
        return PRESETS[name]
    except KeyError:
        raise ValueError(f"unknown preset {name!r}; known: {', '.join(PRESETS)}") from None
