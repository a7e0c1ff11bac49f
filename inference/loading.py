"""Loading diffusers pipelines: device and dtype, the bundled or named model, schedulers and LoRA adapters."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any, TypeAlias

import diffusers
import torch
from diffusers import AutoencoderTiny, AutoPipelineForText2Image, DiffusionPipeline

from inference import families
from inference.acceleration import compile_denoiser
from inference.checkpoints import from_single_file, hub_access, is_single_file
from inference.engine_api import EngineError
from inference.settings import TINY_MODEL_NAME, AdapterSettings, EngineSettings

log = logging.getLogger(__name__)

# diffusers pipelines gain their components and mixin methods (LoRA, schedulers, `to`) at runtime, out of
# mypy's sight, so the engine and its loaders call them through this alias.
Pipeline: TypeAlias = Any

# What an edit's PNG `model` chunk names when the bundled edit pipeline made it.
TINY_EDIT_MODEL_NAME = "brushfire/tiny-edit"
# The trained tiny shapes model (inference/tiny/MODEL_CARD.md): its `generate` and `edit` pipelines.
BUNDLED_MODEL_ROOT = Path(__file__).parent / "tiny" / "model"
# Its tiny autoencoder, distilled from the full one (tools/tiny/distil_decoder.py): the bundled previews.
BUNDLED_TINY_DECODER = BUNDLED_MODEL_ROOT / "tiny_decoder"


def resolve_device(choice: str) -> torch.device:
    """The device for a settings choice: `auto` takes cuda, then mps, then cpu."""
    if choice == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda")
        if torch.backends.mps.is_available():
            return torch.device("mps")
        return torch.device("cpu")
    if choice == "cuda" and not torch.cuda.is_available():
        raise EngineError("device 'cuda' was asked for but torch sees no CUDA device")
    if choice == "mps" and not torch.backends.mps.is_available():
        raise EngineError("device 'mps' was asked for but this torch has no MPS backend")
    return torch.device(choice)


def resolve_dtype(choice: str, device: torch.device) -> torch.dtype:
    """The weight dtype: bf16 (or fp16 where bf16 is unsupported) on a GPU, fp32 on the CPU."""
    if choice != "auto":
        return getattr(torch, choice)
    if device.type == "cuda":
        return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
    if device.type == "mps":
        return torch.float16
    return torch.float32


def bundled_model_dir(kind: str) -> Path:
    """The bundled trained tiny model's `generate` or `edit` pipeline folder, shipped inside the package."""
    folder = BUNDLED_MODEL_ROOT / kind
    if not (folder / "model_index.json").is_file():
        raise EngineError(
            f"the bundled tiny model is missing: no {kind} pipeline at {folder} "
            "(reinstall brushfire, or set [engine] model to a model of your own)"
        )
    return folder


def model_sources(settings: EngineSettings) -> tuple[str, str | None]:
    """The main and edit model to load: the configured ones, or both bundled pipelines when none is set.

    A configured main model without an edit model edits by img2img on its own weights.
    """
    if settings.model:
        return settings.model, settings.edit_model
    generate = str(bundled_model_dir("generate"))
    return generate, settings.edit_model or str(bundled_model_dir("edit"))


def quiet_libraries() -> None:
    """Route diffusers/transformers chatter to our logs: no tqdm bars, no optional-backend warnings.

    The worker process owns these libraries, so setting their process-wide verbosity here is safe; the
    loading progress bars would otherwise garble the CLI's own progress line.
    """
    diffusers.utils.logging.disable_progress_bar()
    diffusers.utils.logging.set_verbosity_error()
    transformers_logging = getattr(__import__("transformers").utils, "logging", None)
    if transformers_logging is not None:
        transformers_logging.disable_progress_bar()
        transformers_logging.set_verbosity_error()


def from_pretrained(loader: Any, source: str, settings: EngineSettings, dtype: torch.dtype) -> Any:
    """`loader.from_pretrained(source)` (a pipeline or a model), or `from_single_file` for a checkpoint
    file, with any failure as a clear EngineError."""
    if is_single_file(source):
        return from_single_file(loader, source, load_kwargs(loader, settings, dtype))
    hub = hub_access(source, settings.cache_dir)
    try:
        return loader.from_pretrained(source, **load_kwargs(loader, settings, dtype), **hub)
    except Exception as exc:  # missing files, offline hub, bad configs, corrupt weights: all fatal here
        raise EngineError(f"cannot load model {source!r}: {type(exc).__name__}: {exc}") from exc


def load_kwargs(loader: Any, settings: EngineSettings, dtype: torch.dtype) -> dict[str, Any]:
    kwargs: dict[str, Any] = {"torch_dtype": dtype, "use_safetensors": True}
    if settings.cache_dir is not None:
        kwargs["cache_dir"] = str(settings.cache_dir)
    # An independent checker replaces the pipeline's own, so no image is checked twice.
    own_checker = settings.safety_checker and settings.safety is None
    if not own_checker and issubclass(loader, (DiffusionPipeline, AutoPipelineForText2Image)):
        kwargs["safety_checker"] = None
        kwargs["requires_safety_checker"] = False
    return kwargs


# --- Tiny autoencoders (TAESD-class `AutoencoderTiny`): previews, and an opt-in final decoder ---


def load_tiny_autoencoder(source: str, settings: EngineSettings, dtype: torch.dtype) -> Any:
    """A diffusers `AutoencoderTiny` by Hugging Face id or local folder, as any model is loaded."""
    return from_pretrained(AutoencoderTiny, source, settings, dtype)


def preview_decoder(
    family: families.Family,
    settings: EngineSettings,
    model_name: str,
    dtype: torch.dtype,
    device: torch.device,
) -> Any | None:
    """The configured preview decoder, else the bundled model's own tiny one (when serving it), else None."""
    source = settings.preview_decoder
    if source is None and model_name == TINY_MODEL_NAME and (BUNDLED_TINY_DECODER / "config.json").is_file():
        source = str(BUNDLED_TINY_DECODER)
    if source is None:
        return None
    decoder = load_tiny_autoencoder(source, settings, dtype).to(device)
    families.check_preview_decoder(family, decoder)
    return decoder


def use_final_decoder(pipe: Pipeline, settings: EngineSettings, dtype: torch.dtype) -> None:
    """Opt-in (`final_decoder`): the pipeline decodes (and img2img encodes) with a tiny autoencoder.

    Faster and a little less faithful than the model's own VAE; meant for few-step (turbo) models, where
    the VAE is a large share of each call. It must read the model's latents at the model's scale.
    """
    vae = getattr(pipe, "vae", None)
    if settings.final_decoder is None or vae is None or isinstance(vae, AutoencoderTiny):
        return
    tiny = load_tiny_autoencoder(settings.final_decoder, settings, dtype)
    ours = (int(vae.config.latent_channels), 2 ** (len(vae.config.block_out_channels) - 1))
    theirs = (int(tiny.config.latent_channels), 2 ** (len(tiny.config.block_out_channels) - 1))
    if ours != theirs:
        raise EngineError(
            f"final_decoder {settings.final_decoder!r} reads {theirs[0]}-channel latents {theirs[1]}x smaller "
            f"than its pictures, but this model's are {ours[0]}-channel and {ours[1]}x smaller"
        )
    pipe.register_modules(vae=tiny)
    log.info("final pictures decoded by the tiny autoencoder %s", settings.final_decoder)


def prepare(pipe: Pipeline, settings: EngineSettings, device: torch.device, dtype: torch.dtype) -> None:
    """Move to the device and apply the optional speed switches (SDPA attention is diffusers' default)."""
    use_final_decoder(pipe, settings, dtype)
    # from_pretrained already loaded the weights in `dtype`; cast only pipelines built some other way.
    if pipe.dtype != dtype:
        pipe.to(dtype=dtype)
    pipe.to(device)
    pipe.set_progress_bar_config(disable=True)
    denoiser = getattr(pipe, "unet", None) or getattr(pipe, "transformer", None)
    if settings.channels_last:
        for module in (denoiser, getattr(pipe, "vae", None)):
            if module is not None:
                module.to(memory_format=torch.channels_last)
    if settings.compile and denoiser is not None:
        # In place, so the img2img pipeline that shares this module runs the compiled one too.
        compile_denoiser(denoiser, settings, device)


def share_components(edit: Pipeline, generate: Pipeline) -> None:
    """Point the edit pipeline at the main VAE and text encoder where their weights are identical.

    InstructPix2Pix fine-tuned only the UNet of SD 1.5, so next to an SD 1.5 model this drops a second
    copy of both from device memory.
    """
    for name in ("vae", "text_encoder"):
        mine, main = getattr(edit, name, None), getattr(generate, name, None)
        if mine is None or main is None or type(mine) is not type(main) or not same_weights(mine, main):
            continue
        edit.register_modules(**{name: main})
        log.info("edit pipeline shares the main %s", name)


def same_weights(a: torch.nn.Module, b: torch.nn.Module) -> bool:
    sa, sb = a.state_dict(), b.state_dict()
    return sa.keys() == sb.keys() and all(
        sa[k].shape == sb[k].shape and sa[k].dtype == sb[k].dtype and torch.equal(sa[k], sb[k]) for k in sa
    )


def set_scheduler(pipe: Pipeline, settings: EngineSettings) -> None:
    if settings.scheduler is None and settings.timestep_spacing is None:
        return
    cls: Any = type(pipe.scheduler)
    if settings.scheduler is not None:
        cls = getattr(diffusers, settings.scheduler, None)
        if cls is None or not hasattr(cls, "from_config"):
            raise EngineError(f"unknown scheduler {settings.scheduler!r}")
    overrides = {"timestep_spacing": settings.timestep_spacing} if settings.timestep_spacing else {}
    pipe.scheduler = cls.from_config(pipe.scheduler.config, **overrides)


def load_adapters(pipe: Pipeline, settings: EngineSettings) -> None:
    """Fuse the always-on adapters into the weights, then load the switchable ones (disabled)."""
    fused = [a for a in settings.adapters if a.fuse]
    switchable = [a for a in settings.adapters if not a.fuse]
    for adapter in fused:
        load_adapter(pipe, adapter)
    if fused:
        pipe.set_adapters([a.name for a in fused], adapter_weights=[a.scale for a in fused])
        pipe.fuse_lora(adapter_names=[a.name for a in fused])
        pipe.unload_lora_weights()  # the fused weights stay; the LoRA layers go
    for adapter in switchable:
        load_adapter(pipe, adapter)
    if switchable:
        pipe.disable_lora()


def load_adapter(pipe: Pipeline, adapter: AdapterSettings) -> None:
    try:
        pipe.load_lora_weights(adapter.path, weight_name=adapter.weight_name, adapter_name=adapter.name)
    except Exception as exc:  # a missing file, no peft, keys that match no layer
        raise EngineError(f"cannot load adapter {adapter.name!r} from {adapter.path!r}: {exc}") from exc
    loaded = {name for names in pipe.get_list_adapters().values() for name in names}
    if adapter.name not in loaded:  # diffusers only warns when no key fits (a LoRA made for another family)
        family = families.family_of(pipe)
        raise EngineError(
            f"adapter {adapter.name!r} from {adapter.path!r} matched no layer of this {family.title} model"
        )
