"""Names for the diffusers objects that the tiny model's scripts build, train and run, as mypy sees them.

mypy resolves diffusers' top-level names (`from diffusers import AutoencoderKL`) to the dummy placeholder
classes that its `__init__` imports first, for when torch is missing: they have no attributes or methods, are
no `nn.Module` and cannot be called. So these scripts hold diffusers' objects as Any, under these names, which
say what each one is.
"""

from typing import Any, TypeAlias

Vae: TypeAlias = Any  # diffusers.AutoencoderKL
Denoiser: TypeAlias = Any  # diffusers.UNet2DConditionModel
NoiseScheduler: TypeAlias = Any  # diffusers.DDPMScheduler, or a sampler such as DPMSolverMultistepScheduler
# diffusers.StableDiffusionPipeline, StableDiffusionInstructPix2PixPipeline, or what AutoPipelineForText2Image loads
Pipeline: TypeAlias = Any
