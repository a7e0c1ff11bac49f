"""Tiny autoencoders (diffusers' AutoencoderTiny, TAESD-class): loaded by path like any model, as the opt-in
final decoder and for previews, and the bundled model's own distilled one (tools/tiny/distil_decoder.py)."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from diffusers import AutoencoderKL, AutoencoderTiny

from inference.engine import DiffusersEngine
from inference.engine_api import EngineError, GeneratedImage, StepUpdate
from inference.loading import BUNDLED_MODEL_ROOT, BUNDLED_TINY_DECODER
from inference.settings import EngineSettings
from tests.inference.items import make_item, progress
from tools.tiny import data

# Measured by tools/tiny/distil_decoder.py on held-out scenes (inference/tiny/MODEL_CARD.md); the test
# reads other, fewer scenes, so it asks for 2 dB less than the 24.1 dB measured.
BUNDLED_MIN_PSNR_DB = 22.0


def tiny_autoencoder(out_dir: Path, blocks: int) -> Path:
    """A random AutoencoderTiny whose decoder upsamples 2**(blocks-1) times (TAESD has 4 blocks: 8x)."""
    torch.manual_seed(0)
    build: Any = (
        AutoencoderTiny  # mypy sees diffusers' torch-less placeholder class (tools/tiny/diffusers_types.py)
    )
    build(
        encoder_block_out_channels=(8,) * blocks,
        decoder_block_out_channels=(8,) * blocks,
        num_encoder_blocks=(1,) * blocks,
        num_decoder_blocks=(1,) * blocks,
    ).save_pretrained(out_dir)
    return out_dir


def run(engine: DiffusersEngine, count: int) -> tuple[list[GeneratedImage], list[StepUpdate]]:
    updates: list[StepUpdate] = []
    results = engine.run_batch([make_item("a", 3, count=count)], updates.append, lambda: False)
    return results[0], progress(results, updates)


def test_a_final_decoder_replaces_the_models_vae(engine_settings: EngineSettings, tmp_path: Path) -> None:
    decoder = tiny_autoencoder(tmp_path / "taesd", blocks=4)
    engine = DiffusersEngine.load(engine_settings.model_copy(update={"final_decoder": str(decoder)}))
    pipes = engine._pipes
    assert isinstance(pipes.generate.vae, AutoencoderTiny)
    assert pipes.img2img.vae is pipes.generate.vae  # img2img encodes and decodes with it too
    images, updates = run(engine, count=2)
    assert [(img.width, img.height) for img in images] == [(64, 64), (64, 64)]
    assert len(updates) == engine_settings.defaults.steps
    plain = DiffusersEngine.load(engine_settings)
    assert isinstance(plain._pipes.generate.vae, AutoencoderKL)  # opt-in only


def test_a_final_decoder_of_another_scale_is_refused_at_start(
    engine_settings: EngineSettings, tmp_path: Path
) -> None:
    decoder = tiny_autoencoder(tmp_path / "taesd-4x", blocks=3)  # 4x, the tiny model's VAE is 8x
    with pytest.raises(EngineError, match=r"final_decoder .* 4-channel latents 4x smaller .* 8x smaller"):
        DiffusersEngine.load(engine_settings.model_copy(update={"final_decoder": str(decoder)}))


def test_a_missing_final_decoder_is_a_clear_error(engine_settings: EngineSettings, tmp_path: Path) -> None:
    missing = str(tmp_path / "no-such-decoder")
    with pytest.raises(EngineError, match=r"cannot load model .*no-such-decoder"):
        DiffusersEngine.load(engine_settings.model_copy(update={"final_decoder": missing}))


def test_the_bundled_model_previews_with_its_own_tiny_decoder(engine_settings: EngineSettings) -> None:
    bundled = DiffusersEngine.load(EngineSettings(device="cpu", cpu_threads=1))
    assert isinstance(bundled._previewer._decoder, AutoencoderTiny)
    configured = DiffusersEngine.load(engine_settings)  # another model: the latent projection, as before
    assert configured._previewer._decoder is None


def psnr(a: torch.Tensor, b: torch.Tensor) -> float:
    pa, pb = ((a.clamp(-1, 1) + 1) * 127.5).round(), ((b.clamp(-1, 1) + 1) * 127.5).round()
    return 10 * math.log10(255.0**2 / max(float(((pa - pb) ** 2).mean()), 1e-10))


@torch.no_grad()
def test_the_bundled_tiny_decoder_is_small_and_close_to_the_full_one() -> None:
    size = sum(f.stat().st_size for f in BUNDLED_TINY_DECODER.iterdir())
    assert size < 1_000_000
    tiny: Any = AutoencoderTiny.from_pretrained(str(BUNDLED_TINY_DECODER)).eval()  # type: ignore[no-untyped-call]
    full: Any = AutoencoderKL.from_pretrained(str(BUNDLED_MODEL_ROOT / "generate" / "vae")).eval()  # type: ignore[no-untyped-call]
    rng = np.random.default_rng(7)
    pictures = np.stack([data.to_array(data.render(data.sample_scene(rng))) for _ in range(32)])
    images = torch.from_numpy(pictures).permute(0, 3, 1, 2)
    latents = full.encode(images).latent_dist.mean
    reference = full.decode(latents).sample
    # The tiny decoder reads latents as the denoiser makes them (scaled), so its own scaling_factor is 1.
    assert tiny.config.scaling_factor == 1.0
    decoded = tiny.decode(latents * full.config.scaling_factor).sample
    assert decoded.shape == reference.shape == (32, 3, 64, 64)
    assert psnr(decoded, reference) >= BUNDLED_MIN_PSNR_DB
