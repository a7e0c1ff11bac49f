"""Build the tiny random-weight Stable-Diffusion-style pipelines the fast tests and benchmarks use.

(The offline default is the trained model in inference/tiny/model/, made by inference/tiny/train.py.)

Run `python -m tools.tiny.build OUT_DIR`: it writes `OUT_DIR/generate` (a StableDiffusionPipeline)
and `OUT_DIR/edit` (a StableDiffusionInstructPix2PixPipeline, whose UNet takes 8 input channels, on the same
VAE and text encoder). Both are
made of the real diffusers/transformers classes and saved with `save_pretrained` as safetensors, so the
engine loads them through the same `from_pretrained` path as a downloaded model. The weights come from a
fixed seed, so two builds are identical. Sized for speed on a CPU: 64x64 images from an 8x8 latent.
"""

from __future__ import annotations

import argparse
import logging
from pathlib import Path

import torch
from diffusers import (
    AutoencoderKL,
    EulerDiscreteScheduler,
    StableDiffusionInstructPix2PixPipeline,
    StableDiffusionPipeline,
    UNet2DConditionModel,
)
from transformers import CLIPTextConfig, CLIPTextModel, CLIPTokenizer

from tools.tiny.diffusers_types import Pipeline
from tools.tiny.make_tokenizer import DEFAULT_DIR as TOKENIZER_DIR

log = logging.getLogger(__name__)

SEED = 20261129
TEXT_DIM = 32
MAX_TOKENS = 77


def make_tokenizer() -> CLIPTokenizer:
    return CLIPTokenizer.from_pretrained(str(TOKENIZER_DIR), model_max_length=MAX_TOKENS)


def make_text_encoder(vocab_size: int) -> CLIPTextModel:
    config = CLIPTextConfig(
        vocab_size=vocab_size,
        hidden_size=TEXT_DIM,
        intermediate_size=64,
        num_hidden_layers=2,
        num_attention_heads=4,
        max_position_embeddings=MAX_TOKENS,
        projection_dim=TEXT_DIM,
        bos_token_id=vocab_size - 2,
        eos_token_id=vocab_size - 1,
        pad_token_id=vocab_size - 1,
    )
    return CLIPTextModel(config)


def make_unet(in_channels: int) -> UNet2DConditionModel:
    return UNet2DConditionModel(
        sample_size=8,
        in_channels=in_channels,
        out_channels=4,
        block_out_channels=(32, 64),
        layers_per_block=1,
        down_block_types=("CrossAttnDownBlock2D", "DownBlock2D"),
        up_block_types=("UpBlock2D", "CrossAttnUpBlock2D"),
        cross_attention_dim=TEXT_DIM,
        attention_head_dim=1,  # diffusers reads this as the number of heads; one is fastest on a CPU
        norm_num_groups=8,
    )


def make_vae() -> AutoencoderKL:
    # Four blocks give the usual 8x downsampling, so sizes behave as they do on a real SD model.
    return AutoencoderKL(
        sample_size=64,
        in_channels=3,
        out_channels=3,
        latent_channels=4,
        block_out_channels=(16, 16, 16, 16),
        down_block_types=("DownEncoderBlock2D",) * 4,
        up_block_types=("UpDecoderBlock2D",) * 4,
        layers_per_block=1,
        norm_num_groups=8,
    )


def make_scheduler() -> EulerDiscreteScheduler:
    # Trailing spacing as SD-Turbo uses, so one to four steps still start from pure noise.
    return EulerDiscreteScheduler(
        beta_start=0.00085,
        beta_end=0.012,
        beta_schedule="scaled_linear",
        timestep_spacing="trailing",
        prediction_type="epsilon",
        steps_offset=1,
    )


def build_generate() -> Pipeline:
    """A StableDiffusionPipeline of fixed-seed random weights."""
    torch.manual_seed(SEED)
    tokenizer = make_tokenizer()
    return StableDiffusionPipeline(
        vae=make_vae(),
        text_encoder=make_text_encoder(len(tokenizer)),
        tokenizer=tokenizer,
        unet=make_unet(in_channels=4),
        scheduler=make_scheduler(),
        safety_checker=None,
        feature_extractor=None,
        requires_safety_checker=False,
    )


def build_edit(base: Pipeline) -> Pipeline:
    """The edit pipeline on `base`'s VAE and text encoder, as InstructPix2Pix reuses SD 1.5's."""
    torch.manual_seed(SEED + 1)
    return StableDiffusionInstructPix2PixPipeline(
        vae=base.vae,
        text_encoder=base.text_encoder,
        tokenizer=base.tokenizer,
        unet=make_unet(in_channels=8),
        scheduler=make_scheduler(),
        safety_checker=None,
        feature_extractor=None,
        requires_safety_checker=False,
    )


def build(out_dir: Path) -> tuple[Path, Path]:
    """Write both tiny pipelines under `out_dir`; return (generate_dir, edit_dir)."""
    generate_dir, edit_dir = out_dir / "generate", out_dir / "edit"
    generate = build_generate()
    generate.save_pretrained(generate_dir, safe_serialization=True)
    build_edit(generate).save_pretrained(edit_dir, safe_serialization=True)
    log.info("tiny pipelines written to %s and %s", generate_dir, edit_dir)
    return generate_dir, edit_dir


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("out_dir", type=Path)
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO)
    build(args.out_dir)


if __name__ == "__main__":
    main()
