"""The benchmark architectures: their configs build exactly the published models (checked on the meta device)."""

from __future__ import annotations

import pytest
import torch

from inference.archs import ARCH_NAMES, get_arch
from inference.archs.build import build_random_pipeline

# Parameter counts of the published checkpoints (stabilityai/sd-turbo and stabilityai/sdxl-turbo).
PUBLISHED = {
    "sd-turbo": {"unet": 865_910_724, "vae": 83_653_863, "text_encoder": 340_387_840},
    "sdxl-turbo": {
        "unet": 2_567_463_684,
        "vae": 83_653_863,
        "text_encoder": 123_060_480,
        "text_encoder_2": 694_659_840,
    },
}


@pytest.mark.parametrize("name", ARCH_NAMES)
def test_configs_build_the_published_architectures(name: str) -> None:
    pipe = build_random_pipeline(name, "meta", torch.float16)
    counts = {
        part: sum(p.numel() for p in module.parameters())
        for part, module in pipe.components.items()
        if isinstance(module, torch.nn.Module)
    }
    assert counts == PUBLISHED[name]
    assert pipe.unet.dtype == torch.float16


def test_native_defaults_and_unknown_names() -> None:
    defaults = get_arch("sdxl-turbo").defaults
    assert (defaults.steps, defaults.guidance, defaults.width, defaults.height) == (1, 0.0, 512, 512)
    with pytest.raises(ValueError, match="unknown architecture 'sd3'"):
        get_arch("sd3")
