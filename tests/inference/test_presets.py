"""Few-step presets fill in valid engine settings for their models."""

from __future__ import annotations

import pytest

from inference.presets import PRESETS, get_preset
from inference.settings import AdapterSettings, EngineSettings


@pytest.mark.parametrize("name", list(PRESETS))
def test_every_preset_gives_valid_few_step_settings(name: str) -> None:
    mine = AdapterSettings(name="ghibli", path="/loras/ghibli.safetensors")
    settings = get_preset(name).apply(EngineSettings(device="cuda", adapters=[mine]))
    assert settings.model == PRESETS[name].model
    assert settings.device == "cuda"
    assert 1 <= settings.defaults.steps <= 4
    assert settings.defaults.guidance <= 1.0
    assert settings.adapters[-1] == mine
    assert all(a.fuse for a in settings.adapters[:-1])


def test_lightning_fuses_its_lora_and_uses_trailing_euler() -> None:
    settings = get_preset("sdxl-lightning").apply(EngineSettings())
    assert (settings.scheduler, settings.timestep_spacing) == ("EulerDiscreteScheduler", "trailing")
    assert settings.adapters[0].weight_name == "sdxl_lightning_4step_lora.safetensors"


def test_unknown_preset() -> None:
    with pytest.raises(ValueError, match="unknown preset 'sd9'"):
        get_preset("sd9")
