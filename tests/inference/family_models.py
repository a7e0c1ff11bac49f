"""Tiny random-weight pipelines of every supported model family, built offline from their real classes.

Like diffusers' own pipeline tests (`get_dummy_components`), each family is its real pipeline class over
its real component classes (UNet or transformer, autoencoder, CLIP and T5 text encoders, scheduler) at a
tiny size, saved with `save_pretrained` so the engine loads it by local path exactly as it loads a
downloaded model. Nothing is downloaded: the CLIP tokenizer is the bundled tiny one and the T5 tokenizer
is a small Unigram model made here with `tokenizers`. Sizes keep the real latent layout (8x autoencoder,
4 latent channels for SD/SDXL, 16 for SD3/FLUX) so previews and size rules behave as on the real models.
"""

from __future__ import annotations

import string
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from diffusers import (
    AutoencoderKL,
    DiffusionPipeline,
    EulerAncestralDiscreteScheduler,
    EulerDiscreteScheduler,
    FlowMatchEulerDiscreteScheduler,
    FluxPipeline,
    FluxTransformer2DModel,
    LatentConsistencyModelPipeline,
    LCMScheduler,
    SD3Transformer2DModel,
    StableDiffusion3Pipeline,
    StableDiffusionPipeline,
    StableDiffusionXLPipeline,
    UNet2DConditionModel,
)
from tokenizers import Tokenizer, decoders, models, normalizers, pre_tokenizers, processors
from transformers import (  # type: ignore[attr-defined]  # T5TokenizerFast: in transformers 5 a runtime alias only
    CLIPTextConfig,
    CLIPTextModel,
    CLIPTextModelWithProjection,
    CLIPTokenizer,
    T5Config,
    T5EncoderModel,
    T5TokenizerFast,
)

from inference.tiny import TOKENIZER_DIR as CLIP_TOKENIZER_DIR

SEED = 1811
CLIP_DIM = 32
T5_DIM = 64
# The model families and few-step setups the tests build, by name.
FAMILY_MODELS = ("sd1", "sd2", "lcm", "sdxl", "sdxl-turbo", "sd3", "flux-schnell", "flux-dev")


def clip_tokenizer() -> CLIPTokenizer:
    return CLIPTokenizer.from_pretrained(str(CLIP_TOKENIZER_DIR), model_max_length=77)


def t5_tokenizer() -> T5TokenizerFast:
    """A T5-style SentencePiece-Unigram tokenizer over letters, digits and a few words, made offline."""
    specials = ["<pad>", "</s>", "<unk>"]
    words = ["a", "red", "blue", "green", "circle", "square", "star", "cat", "dog", "on", "the", "of", "in"]
    pieces = [*specials, "▁", *(f"▁{w}" for w in words), *string.ascii_lowercase, *string.digits]
    vocab = [(piece, -float(i) / 10) for i, piece in enumerate(pieces)]
    tok = Tokenizer(models.Unigram(vocab, unk_id=2, byte_fallback=False))
    tok.normalizer = normalizers.Sequence([normalizers.NFKC(), normalizers.Lowercase()])
    tok.pre_tokenizer = pre_tokenizers.Metaspace()
    tok.decoder = decoders.Metaspace()
    tok.post_processor = processors.TemplateProcessing(
        single="$A </s>", pair="$A </s> $B </s>", special_tokens=[("</s>", 1)]
    )
    return T5TokenizerFast(
        tokenizer_object=tok,
        eos_token="</s>",
        unk_token="<unk>",
        pad_token="<pad>",
        extra_ids=0,
        model_max_length=512,
    )


def _clip_config(vocab_size: int, **extra: Any) -> CLIPTextConfig:
    return CLIPTextConfig(
        vocab_size=vocab_size,
        hidden_size=CLIP_DIM,
        intermediate_size=37,
        num_hidden_layers=2,
        num_attention_heads=4,
        max_position_embeddings=77,
        projection_dim=CLIP_DIM,
        bos_token_id=vocab_size - 2,
        eos_token_id=vocab_size - 1,
        pad_token_id=vocab_size - 1,
        **extra,
    )


def _t5(vocab_size: int) -> T5EncoderModel:
    config = T5Config(
        vocab_size=vocab_size,
        d_model=T5_DIM,
        d_kv=16,
        d_ff=64,
        num_layers=1,
        num_heads=4,
        relative_attention_num_buckets=8,
        decoder_start_token_id=0,  # type: ignore[call-arg]  # a PreTrainedConfig field T5Config's dataclass omits
        pad_token_id=0,
        eos_token_id=1,
    )
    return T5EncoderModel(config)


def _vae(latent_channels: int, **extra: Any) -> AutoencoderKL:
    # Four blocks: the usual 8x downsampling, so 64x64 pictures have 8x8 latents.
    return AutoencoderKL(
        sample_size=64,
        in_channels=3,
        out_channels=3,
        latent_channels=latent_channels,
        block_out_channels=(8, 8, 8, 8),
        down_block_types=("DownEncoderBlock2D",) * 4,
        up_block_types=("UpDecoderBlock2D",) * 4,
        layers_per_block=1,
        norm_num_groups=4,
        **extra,
    )


def _unet(cross_attention_dim: int, **extra: Any) -> UNet2DConditionModel:
    return UNet2DConditionModel(
        sample_size=8,
        in_channels=4,
        out_channels=4,
        block_out_channels=(16, 32),
        layers_per_block=1,
        down_block_types=("CrossAttnDownBlock2D", "DownBlock2D"),
        up_block_types=("UpBlock2D", "CrossAttnUpBlock2D"),
        cross_attention_dim=cross_attention_dim,
        norm_num_groups=8,
        **extra,
    )


def _sd_scheduler(**extra: Any) -> EulerDiscreteScheduler:
    return EulerDiscreteScheduler(
        beta_start=0.00085, beta_end=0.012, beta_schedule="scaled_linear", steps_offset=1, **extra
    )


def build_sd(v2: bool) -> StableDiffusionPipeline:
    """SD 1.x (epsilon prediction, one head size) or SD 2.x (v-prediction, linear projections)."""
    tokenizer = clip_tokenizer()
    unet_extra: dict[str, Any] = {"attention_head_dim": (2, 4), "use_linear_projection": True} if v2 else {}
    return StableDiffusionPipeline(
        vae=_vae(4),
        text_encoder=CLIPTextModel(_clip_config(len(tokenizer), hidden_act="gelu" if v2 else "quick_gelu")),
        tokenizer=tokenizer,
        unet=_unet(CLIP_DIM, **unet_extra),
        scheduler=_sd_scheduler(prediction_type="v_prediction" if v2 else "epsilon"),
        safety_checker=None,
        feature_extractor=None,
        requires_safety_checker=False,
    )


def build_lcm() -> LatentConsistencyModelPipeline:
    """A latent-consistency-distilled SD model (as LCM_Dreamshaper): guidance is an embedded input."""
    tokenizer = clip_tokenizer()
    return LatentConsistencyModelPipeline(
        vae=_vae(4),
        text_encoder=CLIPTextModel(_clip_config(len(tokenizer))),
        tokenizer=tokenizer,
        unet=_unet(CLIP_DIM, time_cond_proj_dim=32),
        scheduler=LCMScheduler(beta_start=0.00085, beta_end=0.012, beta_schedule="scaled_linear"),
        safety_checker=None,
        feature_extractor=None,
        requires_safety_checker=False,
    )


def build_sdxl(turbo: bool) -> StableDiffusionXLPipeline:
    """SDXL: two CLIP encoders (the second projected and pooled) and a UNet with size/crop conditioning."""
    tokenizer = clip_tokenizer()
    unet = _unet(
        2 * CLIP_DIM,
        attention_head_dim=(2, 4),
        use_linear_projection=True,
        addition_embed_type="text_time",
        addition_time_embed_dim=8,
        # six size/crop numbers embedded at 8 each, plus the pooled text embedding
        projection_class_embeddings_input_dim=6 * 8 + CLIP_DIM,
    )
    # SDXL-Turbo ships Euler Ancestral with trailing spacing; the base model Euler with leading spacing.
    scheduler = (
        EulerAncestralDiscreteScheduler(
            beta_start=0.00085, beta_end=0.012, beta_schedule="scaled_linear", timestep_spacing="trailing"
        )
        if turbo
        else _sd_scheduler(timestep_spacing="leading")
    )
    return StableDiffusionXLPipeline(
        vae=_vae(4, scaling_factor=0.13025),
        text_encoder=CLIPTextModel(_clip_config(len(tokenizer))),
        text_encoder_2=CLIPTextModelWithProjection(_clip_config(len(tokenizer))),
        tokenizer=tokenizer,
        tokenizer_2=clip_tokenizer(),
        unet=unet,
        scheduler=scheduler,
        force_zeros_for_empty_prompt=True,
    )


def build_sd3() -> StableDiffusion3Pipeline:
    """SD3: two projected CLIP encoders and a T5 encoder feeding an MMDiT transformer, 16 latent channels."""
    tokenizer, t5_tok = clip_tokenizer(), t5_tokenizer()
    transformer = SD3Transformer2DModel(
        sample_size=8,
        patch_size=2,
        in_channels=16,
        out_channels=16,
        num_layers=1,
        attention_head_dim=8,
        num_attention_heads=4,
        caption_projection_dim=32,
        joint_attention_dim=T5_DIM,  # CLIP's two 32-wide outputs side by side, padded to T5's width
        pooled_projection_dim=2 * CLIP_DIM,
    )
    return StableDiffusion3Pipeline(
        transformer=transformer,
        vae=_vae(
            16, scaling_factor=1.5305, shift_factor=0.0609, use_quant_conv=False, use_post_quant_conv=False
        ),
        text_encoder=CLIPTextModelWithProjection(_clip_config(len(tokenizer))),
        text_encoder_2=CLIPTextModelWithProjection(_clip_config(len(tokenizer))),
        text_encoder_3=_t5(len(t5_tok)),
        tokenizer=tokenizer,
        tokenizer_2=clip_tokenizer(),
        tokenizer_3=t5_tok,
        scheduler=FlowMatchEulerDiscreteScheduler(shift=3.0),
    )


def build_flux(guidance_embeds: bool) -> FluxPipeline:
    """FLUX: CLIP (pooled) and T5 encoders, a transformer on packed 2x2 latent patches of 16 channels.

    `guidance_embeds` is FLUX.1 [dev]'s distilled guidance input; [schnell] has none.
    """
    tokenizer, t5_tok = clip_tokenizer(), t5_tokenizer()
    transformer = FluxTransformer2DModel(
        patch_size=1,
        in_channels=64,  # 16 latent channels packed 2x2
        num_layers=1,
        num_single_layers=1,
        attention_head_dim=16,
        num_attention_heads=2,
        joint_attention_dim=T5_DIM,
        pooled_projection_dim=CLIP_DIM,
        guidance_embeds=guidance_embeds,
        axes_dims_rope=(4, 4, 8),
    )
    scheduler = FlowMatchEulerDiscreteScheduler(
        shift=1.0 if not guidance_embeds else 3.0,
        use_dynamic_shifting=guidance_embeds,
        base_shift=0.5,
        max_shift=1.15,
        base_image_seq_len=256,
        max_image_seq_len=4096,
    )
    return FluxPipeline(
        transformer=transformer,
        vae=_vae(
            16, scaling_factor=0.3611, shift_factor=0.1159, use_quant_conv=False, use_post_quant_conv=False
        ),
        text_encoder=CLIPTextModel(_clip_config(len(tokenizer))),
        text_encoder_2=_t5(len(t5_tok)),
        tokenizer=tokenizer,
        tokenizer_2=t5_tok,
        scheduler=scheduler,
    )


def build_pipeline(name: str) -> Any:
    """The named tiny pipeline (one of FAMILY_MODELS) with fixed-seed random weights.

    Any, not DiffusionPipeline: mypy resolves diffusers' top-level pipeline names to its dummy placeholder
    classes (imported first for when torch is missing), which share no base class and have no methods."""
    torch.manual_seed(SEED)
    builders: dict[str, Callable[[], Any]] = {
        "sd1": lambda: build_sd(v2=False),
        "sd2": lambda: build_sd(v2=True),
        "lcm": build_lcm,
        "sdxl": lambda: build_sdxl(turbo=False),
        "sdxl-turbo": lambda: build_sdxl(turbo=True),
        "sd3": build_sd3,
        "flux-schnell": lambda: build_flux(guidance_embeds=False),
        "flux-dev": lambda: build_flux(guidance_embeds=True),
    }
    return builders[name]()


def save_family(name: str, out_dir: Path) -> Path:
    """Build the named tiny pipeline and save it as a diffusers folder; return the folder."""
    build_pipeline(name).save_pretrained(out_dir, safe_serialization=True)
    return out_dir


def save_lora(model_dir: Path, out_dir: Path) -> Path:
    """A random rank-4 LoRA on the attention projections of the saved pipeline's denoiser, in the diffusers
    LoRA format its pipeline class loads (`unet_lora_layers` or `transformer_lora_layers`); returns the file."""
    from diffusers.utils.state_dict_utils import convert_state_dict_to_diffusers
    from peft import LoraConfig
    from peft.utils import get_peft_model_state_dict

    pipe = DiffusionPipeline.from_pretrained(model_dir)
    torch.manual_seed(SEED + 1)
    denoiser_name = "unet" if hasattr(pipe, "unet") else "transformer"
    denoiser = getattr(pipe, denoiser_name)
    config = LoraConfig(
        r=4, lora_alpha=4, target_modules=["to_q", "to_k", "to_v", "to_out.0"], init_lora_weights=False
    )
    denoiser.add_adapter(config)
    layers = get_peft_model_state_dict(denoiser)
    if denoiser_name == "unet":
        layers = convert_state_dict_to_diffusers(layers)
    type(pipe).save_lora_weights(out_dir, **{f"{denoiser_name}_lora_layers": layers}, safe_serialization=True)
    return out_dir / "pytorch_lora_weights.safetensors"


def save_classifier(out_dir: Path, *, unsafe: bool) -> Path:
    """A tiny ViT image classifier (labels `normal`, `nsfw`) whose verdict its head's bias sets: every
    image scores ~99% `nsfw` when `unsafe`, ~1% otherwise. Saved with its image processor."""
    from transformers import ViTConfig, ViTForImageClassification, ViTImageProcessor

    torch.manual_seed(SEED + 2)
    config = ViTConfig(
        image_size=32,
        patch_size=8,
        hidden_size=16,
        num_hidden_layers=1,
        num_attention_heads=2,
        intermediate_size=32,
        id2label={0: "normal", 1: "nsfw"},
        label2id={"normal": 0, "nsfw": 1},
    )
    model = ViTForImageClassification(config)
    head = model.classifier
    assert isinstance(head, torch.nn.Linear), "two labels give the classifier a linear head"
    with torch.no_grad():
        head.weight.zero_()
        head.bias.copy_(torch.tensor([0.0, 5.0] if unsafe else [5.0, 0.0]))
    model.save_pretrained(out_dir)
    ViTImageProcessor(size={"height": 32, "width": 32}).save_pretrained(out_dir)
    return out_dir


def save_clip_checker(out_dir: Path, *, unsafe: bool) -> Path:
    """A tiny Stable Diffusion CLIP concept checker: a concept's threshold of -1 flags every image, 1 none."""
    from diffusers.pipelines.stable_diffusion.safety_checker import StableDiffusionSafetyChecker
    from transformers import CLIPConfig, CLIPImageProcessor

    torch.manual_seed(SEED + 3)
    small = {"hidden_size": 32, "intermediate_size": 37, "num_hidden_layers": 1, "num_attention_heads": 4}
    config = CLIPConfig(
        text_config=small, vision_config={**small, "image_size": 32, "patch_size": 8}, projection_dim=16
    )
    checker = StableDiffusionSafetyChecker(config)
    checker.concept_embeds_weights.data.fill_(-1.0 if unsafe else 1.0)
    checker.special_care_embeds_weights.data.fill_(1.0)
    checker.save_pretrained(out_dir)
    CLIPImageProcessor(size={"shortest_edge": 32}, crop_size={"height": 32, "width": 32}).save_pretrained(
        out_dir
    )
    return out_dir
