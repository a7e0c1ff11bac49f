"""Inference test fixtures: the tiny pipelines, built once per session, and engine settings that use them."""

from __future__ import annotations

from pathlib import Path

import pytest

from inference.settings import EngineSettings, ModelDefaults


@pytest.fixture(scope="session")
def tiny_models(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """Build both tiny pipelines (generate, edit) once per test session; a few seconds on a CPU."""
    from tools.tiny.build import build

    return build(tmp_path_factory.mktemp("tiny"))


@pytest.fixture(scope="session")
def tiny_model_dir(tiny_models: tuple[Path, Path]) -> Path:
    """A saved StableDiffusionPipeline folder with random weights, 64x64 images."""
    return tiny_models[0]


@pytest.fixture(scope="session")
def tiny_edit_model_dir(tiny_models: tuple[Path, Path]) -> Path:
    """A saved StableDiffusionInstructPix2PixPipeline folder with random weights."""
    return tiny_models[1]


@pytest.fixture
def engine_settings(tiny_model_dir: Path, tiny_edit_model_dir: Path, tmp_path: Path) -> EngineSettings:
    """Settings that load the tiny pipelines on the CPU with small, fast defaults."""
    return EngineSettings(
        model=str(tiny_model_dir),
        edit_model=str(tiny_edit_model_dir),
        device="cpu",
        cpu_threads=1,
        # A preview at every step of these 4-step runs, so tests see them (the defaults make none).
        preview_interval_s=0.0,
        preview_min_steps=1,
        defaults=ModelDefaults(steps=4, guidance=5.0, width=64, height=64, img2img_strength=0.75),
        cache_dir=tmp_path / "cache",
    )
