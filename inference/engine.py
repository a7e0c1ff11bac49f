"""The diffusers engine: loads the pipelines once and runs one batched pipeline call per batch of jobs.

This is the only module of the worker that imports torch and diffusers. The scheduler drives it through
the `Engine` protocol in `inference.protocol`, from a worker thread, one batch at a time.
"""

from __future__ import annotations

import functools
import inspect
import io
import logging
import math
import threading
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import diffusers
import torch
from diffusers import (
    AutoencoderTiny,
    AutoPipelineForImage2Image,
    AutoPipelineForText2Image,
    DiffusionPipeline,
    StableDiffusionInstructPix2PixPipeline,
)
from PIL import Image
from PIL.PngImagePlugin import PngInfo

from inference import families
from inference.families import Family
from inference.protocol import (
    MAX_STEPS,
    BatchItem,
    BatchKey,
    EngineError,
    EngineOutOfMemory,
    GeneratedImage,
    JobKind,
    StepUpdate,
)
from inference.safety import SafetyClassifier
from inference.settings import AdapterSettings, EngineSettings, ModelDefaults

log = logging.getLogger(__name__)

PREVIEW_MAX_SIDE = 128
TINY_MODEL_NAME = "brushfire/tiny"
# What an edit's PNG `model` chunk names when the bundled edit pipeline made it.
TINY_EDIT_MODEL_NAME = "brushfire/tiny-edit"
# The trained tiny shapes model (inference/tiny/MODEL_CARD.md): its `generate` and `edit` pipelines.
BUNDLED_MODEL_ROOT = Path(__file__).parent / "tiny" / "model"


class _Stopped(Exception):
    """Raised from the step callback of a pipeline that has no `_interrupt` flag of its own."""


@dataclass(slots=True)
class _Pipelines:
    generate: DiffusionPipeline
    img2img: DiffusionPipeline  # shares every module with `generate`
    edit: DiffusionPipeline | None  # an instruction-editing pipeline, when configured
    family: Family  # of `generate` and `img2img`


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


class _Previewer:
    """Turns the latents of a step into small RGB previews, one per image, for the family that made them."""

    def __init__(self, decoder: AutoencoderTiny | None, family: Family) -> None:
        self._decoder = decoder
        self._family = family  # the main model's, which the decoder was checked against

    def __call__(
        self, pipe: DiffusionPipeline, latents: torch.Tensor | None, size: tuple[int, int], family: Family
    ) -> list[Image.Image]:
        if latents is None:
            return []
        latents = families.preview_latents(family, pipe, latents, size)
        if latents is None:
            return []
        with torch.no_grad():
            if self._decoder is not None and family is self._family:
                # As the pipeline would decode with this decoder in place of its autoencoder.
                config = self._decoder.config
                latents = latents / config.scaling_factor + getattr(config, "shift_factor", 0.0)
                rgb = self._decoder.decode(latents.to(self._decoder.dtype)).sample
            else:
                factors = torch.tensor(family.rgb_factors, device=latents.device, dtype=latents.dtype)
                bias = torch.tensor(family.rgb_bias, device=latents.device, dtype=latents.dtype)
                rgb = torch.einsum("bchw,cr->brhw", latents, factors) + bias[None, :, None, None]
            pixels = ((rgb.float().clamp(-1, 1) + 1) * 127.5).round().to(torch.uint8)
            arrays = pixels.permute(0, 2, 3, 1).cpu().numpy()
        return [_fit_preview(Image.fromarray(a)) for a in arrays]


def _fit_preview(img: Image.Image) -> Image.Image:
    scale = PREVIEW_MAX_SIDE / max(img.size)
    size = (max(1, round(img.width * scale)), max(1, round(img.height * scale)))
    resample = Image.Resampling.NEAREST if scale > 1 else Image.Resampling.BILINEAR
    return img.resize(size, resample)


@functools.cache
def _call_parameters(pipeline_class: type) -> frozenset[str]:
    """What a pipeline's call accepts (InstructPix2Pix takes no size, the LCM pipelines no negative prompt)."""
    return frozenset(inspect.signature(pipeline_class.__call__).parameters)


def _is_oom(exc: BaseException) -> bool:
    return isinstance(exc, torch.cuda.OutOfMemoryError) or (
        isinstance(exc, RuntimeError) and "out of memory" in str(exc).lower()
    )


def _png(img: Image.Image, meta: dict[str, str]) -> bytes:
    info = PngInfo()
    for key, value in meta.items():
        info.add_text(key, value)
    buf = io.BytesIO()
    img.save(buf, format="PNG", pnginfo=info, compress_level=4)
    return buf.getvalue()


def _steps_for_strength(steps: int, strength: float) -> int:
    """img2img runs int(steps * strength) steps; raise `steps` so at least one runs (turbo at 1-2 steps)."""
    needed = max(steps, math.ceil(1 / strength))
    while int(needed * strength) < 1:  # float rounding: 3 * (1/3) may fall just short of 1
        needed += 1
    if needed > MAX_STEPS:
        raise EngineError(f"strength {strength:g} is too low to run even one of at most {MAX_STEPS} steps")
    return needed


class DiffusersEngine:
    """Runs batches of jobs on diffusers pipelines loaded once; see `inference.protocol.Engine`."""

    def __init__(
        self,
        settings: EngineSettings,
        pipes: _Pipelines,
        *,
        model_name: str,
        device: torch.device,
        previewer: _Previewer,
        safety: SafetyClassifier | None = None,
    ) -> None:
        self._settings = settings
        self._pipes = pipes
        self._model_name = model_name
        self._device = device
        self._previewer = previewer
        self._safety = safety
        self._adapters = [a.name for a in settings.adapters if not a.fuse]
        self._lock = threading.Lock()  # one batch at a time: pipelines and schedulers keep state

    # --- Loading ---

    @classmethod
    def load(cls, settings: EngineSettings) -> DiffusersEngine:
        """Load every configured pipeline onto the device. Slow and synchronous: call it in a thread."""
        if settings.cpu_threads:
            torch.set_num_threads(settings.cpu_threads)
        _quiet_libraries()
        device = resolve_device(settings.device)
        dtype = resolve_dtype(settings.dtype, device)
        source, edit_source = model_sources(settings)
        # `dtype` also upcasts the bundled model's float16-saved weights to float32 on a CPU.
        log.info("loading %s on %s as %s", source, device, dtype)
        families.check_model_folder(source)
        generate = _from_pretrained(AutoPipelineForText2Image, source, settings, dtype)
        edit = None
        if edit_source:
            edit = _from_pretrained(StableDiffusionInstructPix2PixPipeline, edit_source, settings, dtype)
        return cls.from_pipeline(
            settings, generate, edit=edit, model_name=settings.model or TINY_MODEL_NAME, device=device
        )

    @classmethod
    def from_pipeline(
        cls,
        settings: EngineSettings,
        generate: DiffusionPipeline,
        *,
        model_name: str,
        edit: DiffusionPipeline | None = None,
        device: torch.device | None = None,
    ) -> DiffusersEngine:
        """Wrap already-built pipelines (the random-weight benchmark architectures use this)."""
        device = device or resolve_device(settings.device)
        dtype = resolve_dtype(settings.dtype, device)
        family = families.family_of(generate)
        families.check_settings(family, generate, settings)
        for pipe in (generate, edit):
            if pipe is not None:
                _prepare(pipe, settings, device, dtype)
        if edit is not None:
            _share_components(edit, generate)
        _set_scheduler(generate, settings)
        pipes = _Pipelines(generate, AutoPipelineForImage2Image.from_pipe(generate), edit, family)
        pipes.img2img.set_progress_bar_config(disable=True)
        _load_adapters(pipes.generate, settings)
        decoder = None
        if settings.preview_decoder:
            decoder = _from_pretrained(AutoencoderTiny, settings.preview_decoder, settings, dtype).to(device)
            families.check_preview_decoder(family, decoder)
        safety = None
        if settings.safety is not None:
            cache = str(settings.cache_dir) if settings.cache_dir else None
            safety = SafetyClassifier.load(settings.safety, device, dtype, cache)
        log.info("engine ready: %s (%s) on %s", model_name, family.title, device)
        previewer = _Previewer(decoder, family)
        return cls(settings, pipes, model_name=model_name, device=device, previewer=previewer, safety=safety)

    # --- The Engine protocol ---

    @property
    def model_name(self) -> str:
        return self._model_name

    @property
    def device_name(self) -> str:
        if self._device.type == "cuda":
            return f"cuda:{torch.cuda.get_device_name(self._device)}"
        return self._device.type

    @property
    def adapter_names(self) -> list[str]:
        return list(self._adapters)

    @property
    def has_edit_model(self) -> bool:
        return self._pipes.edit is not None

    @property
    def model_defaults(self) -> ModelDefaults:
        return self._settings.defaults.model_copy()

    def defaults(self, kind: JobKind) -> tuple[int, float, int, int]:
        d = self._settings.defaults
        if kind is JobKind.EDIT:
            steps = d.edit_steps if d.edit_steps is not None else d.steps
            guidance = d.edit_guidance if d.edit_guidance is not None else d.guidance
            return steps, guidance, d.width, d.height
        return d.steps, d.guidance, d.width, d.height

    def memory(self) -> tuple[int | None, int | None]:
        if self._device.type == "cuda":
            total = torch.cuda.get_device_properties(self._device).total_memory
            return torch.cuda.memory_allocated(self._device), total
        if self._device.type == "mps":
            # Apple GPUs share system memory; torch reports the working-set limit Metal recommends.
            return torch.mps.current_allocated_memory(), torch.mps.recommended_max_memory()
        return None, None

    def run_batch(
        self,
        items: list[BatchItem],
        on_step: Callable[[StepUpdate], None],
        should_stop: Callable[[], bool],
    ) -> list[list[GeneratedImage]]:
        if not items:
            return []
        shape = self._shape(items)
        with self._lock:
            pipe = self._pipe_for(shape)
            self._apply_adapter(pipe, shape)
            kwargs = self._call_kwargs(pipe, items, shape)
            stopped = threading.Event()
            kwargs["callback_on_step_end"] = self._step_callback(kwargs, on_step, should_stop, stopped)
            output = self._call(pipe, kwargs)
        if stopped.is_set() or output is None:
            return [[] for _ in items]
        return self._results(items, shape, output, pipe)

    # --- One batch, step by step ---

    def _shape(self, items: list[BatchItem]) -> BatchKey:
        shapes = {
            BatchKey.of(
                it.request,
                width=it.width,
                height=it.height,
                steps=it.steps,
                guidance=it.guidance,
                strength=it.strength,
            )
            for it in items
        }
        if len(shapes) != 1:
            raise EngineError(f"batch mixes incompatible jobs: {sorted(map(repr, shapes))}")
        shape = shapes.pop()
        missing = [it.job_id for it in items if shape.kind.needs_image and it.init_image is None]
        if missing:
            raise EngineError(f"{shape.kind} jobs need an input image: {missing}")
        return shape

    def _pipe_for(self, shape: BatchKey) -> DiffusionPipeline:
        if shape.kind is JobKind.GENERATE:
            return self._pipes.generate
        if shape.kind is JobKind.EDIT and self._pipes.edit is not None:
            if shape.adapter is not None:
                raise EngineError("adapters apply to the main model, not to the instruction-editing model")
            return self._pipes.edit
        return self._pipes.img2img

    def _apply_adapter(self, pipe: DiffusionPipeline, shape: BatchKey) -> None:
        """Switch LoRA adapters for this batch so no batch inherits another's adapter."""
        if shape.adapter is not None and shape.adapter not in self._adapters:
            raise EngineError(f"unknown adapter {shape.adapter!r}; loaded: {self._adapters}")
        if not self._adapters or pipe is self._pipes.edit:
            return
        if shape.adapter is None:
            pipe.disable_lora()
        else:
            pipe.enable_lora()
            pipe.set_adapters([shape.adapter], adapter_weights=[shape.adapter_scale])

    def _call_kwargs(
        self, pipe: DiffusionPipeline, items: list[BatchItem], shape: BatchKey
    ) -> dict[str, Any]:
        size = families.pipeline_size(self._pipes.family, shape.width, shape.height)
        prompts = [it.request.prompt for it in items for _ in range(it.request.count)]
        negatives = [it.request.negative_prompt for it in items for _ in range(it.request.count)]
        # CPU generators: the same seed draws the same noise whatever the device.
        generators = [
            torch.Generator("cpu").manual_seed(it.seed + i) for it in items for i in range(it.request.count)
        ]
        kwargs: dict[str, Any] = {
            "prompt": prompts,
            "negative_prompt": negatives,
            "generator": generators,
            "num_inference_steps": shape.steps,
            "guidance_scale": shape.guidance,
            "width": size[0],
            "height": size[1],
            "output_type": "pil",
            "callback_on_step_end_tensor_inputs": ["latents"],
        }
        if shape.kind.needs_image:
            kwargs["image"] = [self._init_image(it, size) for it in items for _ in range(it.request.count)]
        if pipe is self._pipes.edit:
            kwargs["image_guidance_scale"] = (
                shape.image_guidance or self._settings.defaults.edit_image_guidance
            )
        elif shape.kind.needs_image:
            strength = shape.strength or self._settings.defaults.img2img_strength
            kwargs["strength"] = strength
            kwargs["num_inference_steps"] = _steps_for_strength(shape.steps, strength)
        if pipe is not self._pipes.edit:
            kwargs = families.adapt_call(self._pipes.family, pipe, kwargs)
        accepted = _call_parameters(type(pipe))
        return {k: v for k, v in kwargs.items() if k in accepted}

    @staticmethod
    def _init_image(item: BatchItem, size: tuple[int, int]) -> Image.Image:
        assert item.init_image is not None
        img = item.init_image.convert("RGB")
        if img.size != size:
            img = img.resize(size, Image.Resampling.LANCZOS)
        return img

    def _step_callback(
        self,
        kwargs: dict[str, Any],
        on_step: Callable[[StepUpdate], None],
        should_stop: Callable[[], bool],
        stopped: threading.Event,
    ) -> Callable[..., dict[str, Any]]:
        every = self._settings.preview_every
        planned = kwargs.get("num_inference_steps", 1)
        size = (kwargs.get("width", 0), kwargs.get("height", 0))

        def callback(pipe: DiffusionPipeline, i: int, _t: Any, tensors: dict[str, Any]) -> dict[str, Any]:
            total = getattr(pipe, "_num_timesteps", None) or planned
            step = i + 1
            want_preview = step % every == 0 and step < total
            # The instruction-editing pipeline (InstructPix2Pix) is an SD 1.5 one, whatever the main model.
            family = families.SD if pipe is self._pipes.edit else self._pipes.family
            previews = self._previewer(pipe, tensors.get("latents"), size, family) if want_preview else []
            on_step(StepUpdate(step=step, total=total, previews=previews))
            if should_stop():
                stopped.set()
                pipe._interrupt = True
                if not hasattr(type(pipe), "interrupt"):
                    raise _Stopped
            return tensors

        return callback

    def _call(self, pipe: DiffusionPipeline, kwargs: dict[str, Any]) -> Any:
        try:
            return pipe(**kwargs)
        except _Stopped:
            return None
        except Exception as exc:
            if _is_oom(exc):
                if self._device.type == "cuda":
                    torch.cuda.empty_cache()
                n = len(kwargs["prompt"])
                raise EngineOutOfMemory(f"out of memory running {n} images: {exc}") from exc
            raise EngineError(f"pipeline failed: {type(exc).__name__}: {exc}") from exc

    def _results(
        self, items: list[BatchItem], shape: BatchKey, output: Any, pipe: DiffusionPipeline
    ) -> list[list[GeneratedImage]]:
        # SD3 and FLUX ran at a multiple of 16: give each job the size it asked for.
        images = [
            img if img.size == (shape.width, shape.height) else img.resize((shape.width, shape.height))
            for img in output.images
        ]
        flags = getattr(output, "nsfw_content_detected", None) or [False] * len(images)
        if self._safety is not None:
            flags = [bool(a) or b for a, b in zip(flags, self._checked(images), strict=True)]
        results: list[list[GeneratedImage]] = []
        k = 0
        for it in items:
            mine = []
            for i in range(it.request.count):
                meta = self._metadata(it, shape, it.seed + i, pipe)
                img = images[k]
                mine.append(
                    GeneratedImage(
                        png=_png(img, meta),
                        seed=it.seed + i,
                        width=img.width,
                        height=img.height,
                        nsfw=bool(flags[k]),
                    )
                )
                k += 1
            results.append(mine)
        return results

    def _checked(self, images: list[Image.Image]) -> list[bool]:
        """The safety classifier's flags; a failure fails the batch (no picture goes out unchecked)."""
        assert self._safety is not None
        try:
            return self._safety.flags(images)
        except Exception as exc:
            if _is_oom(exc):
                raise EngineOutOfMemory(f"out of memory checking {len(images)} images: {exc}") from exc
            raise EngineError(f"safety checker failed: {type(exc).__name__}: {exc}") from exc

    def _metadata(
        self, item: BatchItem, shape: BatchKey, seed: int, pipe: DiffusionPipeline
    ) -> dict[str, str]:
        edit_model = pipe is self._pipes.edit
        meta = {
            "prompt": item.request.prompt,
            "negative_prompt": item.request.negative_prompt,
            "seed": str(seed),
            "steps": str(shape.steps),
            "guidance": f"{shape.guidance:g}",
            "width": str(shape.width),
            "height": str(shape.height),
            "model": (self._settings.edit_model or TINY_EDIT_MODEL_NAME) if edit_model else self._model_name,
            "kind": str(shape.kind),
            "Software": "brushfire",
        }
        if shape.kind.needs_image and not edit_model:
            meta["strength"] = f"{shape.strength or self._settings.defaults.img2img_strength:g}"
        if shape.adapter:
            meta["adapter"] = f"{shape.adapter}:{shape.adapter_scale:g}"
        return meta


# --- Loading helpers ---


def _quiet_libraries() -> None:
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


def _from_pretrained(loader: Any, source: str, settings: EngineSettings, dtype: torch.dtype) -> Any:
    """`loader.from_pretrained(source)` (a pipeline or a model), with any failure as a clear EngineError."""
    try:
        return loader.from_pretrained(source, **_load_kwargs(loader, settings, dtype))
    except Exception as exc:  # missing files, offline hub, bad configs, corrupt weights: all fatal here
        raise EngineError(f"cannot load model {source!r}: {type(exc).__name__}: {exc}") from exc


def _load_kwargs(loader: Any, settings: EngineSettings, dtype: torch.dtype) -> dict[str, Any]:
    kwargs: dict[str, Any] = {"torch_dtype": dtype, "use_safetensors": True}
    if settings.cache_dir is not None:
        kwargs["cache_dir"] = str(settings.cache_dir)
    # An independent checker replaces the pipeline's own, so no image is checked twice.
    own_checker = settings.safety_checker and settings.safety is None
    if not own_checker and issubclass(loader, (DiffusionPipeline, AutoPipelineForText2Image)):
        kwargs["safety_checker"] = None
        kwargs["requires_safety_checker"] = False
    return kwargs


def _prepare(
    pipe: DiffusionPipeline, settings: EngineSettings, device: torch.device, dtype: torch.dtype
) -> None:
    """Move to the device and apply the optional speed switches (SDPA attention is diffusers' default)."""
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
        denoiser.compile()


def _share_components(edit: DiffusionPipeline, generate: DiffusionPipeline) -> None:
    """Point the edit pipeline at the main VAE and text encoder where their weights are identical.

    InstructPix2Pix fine-tuned only the UNet of SD 1.5, so next to an SD 1.5 model this drops a second
    copy of both from device memory.
    """
    for name in ("vae", "text_encoder"):
        mine, main = getattr(edit, name, None), getattr(generate, name, None)
        if mine is None or main is None or type(mine) is not type(main) or not _same_weights(mine, main):
            continue
        edit.register_modules(**{name: main})
        log.info("edit pipeline shares the main %s", name)


def _same_weights(a: torch.nn.Module, b: torch.nn.Module) -> bool:
    sa, sb = a.state_dict(), b.state_dict()
    return sa.keys() == sb.keys() and all(
        sa[k].shape == sb[k].shape and sa[k].dtype == sb[k].dtype and torch.equal(sa[k], sb[k]) for k in sa
    )


def _set_scheduler(pipe: DiffusionPipeline, settings: EngineSettings) -> None:
    if settings.scheduler is None and settings.timestep_spacing is None:
        return
    cls = type(pipe.scheduler)
    if settings.scheduler is not None:
        cls = getattr(diffusers, settings.scheduler, None)
        if cls is None or not hasattr(cls, "from_config"):
            raise EngineError(f"unknown scheduler {settings.scheduler!r}")
    overrides = {"timestep_spacing": settings.timestep_spacing} if settings.timestep_spacing else {}
    pipe.scheduler = cls.from_config(pipe.scheduler.config, **overrides)


def _load_adapters(pipe: DiffusionPipeline, settings: EngineSettings) -> None:
    """Fuse the always-on adapters into the weights, then load the switchable ones (disabled)."""
    fused = [a for a in settings.adapters if a.fuse]
    switchable = [a for a in settings.adapters if not a.fuse]
    for adapter in fused:
        _load_adapter(pipe, adapter)
    if fused:
        pipe.set_adapters([a.name for a in fused], adapter_weights=[a.scale for a in fused])
        pipe.fuse_lora(adapter_names=[a.name for a in fused])
        pipe.unload_lora_weights()  # the fused weights stay; the LoRA layers go
    for adapter in switchable:
        _load_adapter(pipe, adapter)
    if switchable:
        pipe.disable_lora()


def _load_adapter(pipe: DiffusionPipeline, adapter: AdapterSettings) -> None:
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
