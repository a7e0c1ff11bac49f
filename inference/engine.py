"""The diffusers engine: loads the pipelines once and runs one batched pipeline call per batch of jobs.

This is the only module of the worker that imports torch and diffusers. The scheduler drives it through
the `Engine` protocol in `inference.engine_api`, from a worker thread, one batch at a time.
(About 620 lines: loading, the batch call and its results share the pipelines' state and belong together;
upscale batches add a short path that shares the same img2img call and results; inpaint batches' canvases
and blending live in inference/inpainting.py, the speed switches in inference/acceleration.py.)
"""

from __future__ import annotations

import functools
import inspect
import logging
import math
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, replace
from typing import Any

import diffusers
import numpy as np
import torch
from diffusers import (
    AutoPipelineForImage2Image,
    AutoPipelineForText2Image,
    SchedulerMixin,
    StableDiffusionInstructPix2PixPipeline,
)
from PIL import Image

from inference import acceleration, families, inpainting
from inference.acceleration import PromptCache
from inference.engine_api import (
    BatchItem,
    BatchKey,
    DeviceMemory,
    EngineError,
    EngineOutOfMemory,
    GeneratedImage,
    KindDefaults,
    StepUpdate,
    kind_defaults,
)
from inference.families import Family
from inference.loading import (
    TINY_EDIT_MODEL_NAME,
    TINY_MODEL_NAME,
    Pipeline,
    from_pretrained,
    load_adapters,
    model_sources,
    prepare,
    preview_decoder,
    quiet_libraries,
    resolve_device,
    resolve_dtype,
    set_scheduler,
    share_components,
)
from inference.pixels import Previewer, resized, to_uint8
from inference.protocol import MAX_STEPS
from inference.safety import SafetyClassifier
from inference.settings import EngineSettings, ModelDefaults
from inference.superres import UpscaleStage
from inference.vocabulary import JobKind

log = logging.getLogger(__name__)


class _Stopped(Exception):
    """Raised from the step callback of a pipeline that has no `_interrupt` flag of its own."""


@dataclass(slots=True)
class _Pipelines:
    generate: Pipeline
    img2img: Pipeline  # shares every module with `generate`
    edit: Pipeline | None  # an instruction-editing pipeline, when configured
    family: Family  # of `generate` and `img2img`
    upscale: UpscaleStage | None  # the super-resolution model behind upscale jobs (None: spandrel missing)
    inpaint: Pipeline | None = None  # zoom out, pan, vary region (inference/inpainting.py)


@functools.cache
def _call_parameters(pipeline_class: type) -> frozenset[str]:
    """What a pipeline's call accepts (InstructPix2Pix takes no size, the LCM pipelines no negative prompt)."""
    return frozenset(inspect.signature(pipeline_class.__call__).parameters)


def _is_oom(exc: BaseException) -> bool:
    return isinstance(exc, torch.cuda.OutOfMemoryError) or (
        isinstance(exc, RuntimeError) and "out of memory" in str(exc).lower()
    )


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
        previewer: Previewer,
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
        self._prompt_cache = PromptCache(settings.prompt_cache_entries, settings.prompt_cache_bytes)
        self._padded_rows = 0  # bucket padding: rows computed and dropped

    # --- Loading ---

    @classmethod
    def load(
        cls,
        settings: EngineSettings,
        *,
        model_name: str | None = None,
        safety: SafetyClassifier | None = None,
    ) -> DiffusersEngine:
        """Load every configured pipeline onto the device. Slow and synchronous: call it in a thread.

        `model_name` is what jobs and metadata call the model (default: `settings.model`); `safety` an
        already loaded classifier to share (`inference.models` serves several models with one)."""
        if settings.cpu_threads:
            torch.set_num_threads(settings.cpu_threads)
        quiet_libraries()
        device = resolve_device(settings.device)
        dtype = resolve_dtype(settings.dtype, device)
        source, edit_source = model_sources(settings)
        # `dtype` also upcasts the bundled model's float16-saved weights to float32 on a CPU.
        log.info("loading %s on %s as %s", source, device, dtype)
        families.check_model_folder(source)
        generate = from_pretrained(AutoPipelineForText2Image, source, settings, dtype)
        edit = None
        if edit_source:
            edit = from_pretrained(StableDiffusionInstructPix2PixPipeline, edit_source, settings, dtype)
        name = model_name or settings.model or TINY_MODEL_NAME
        return cls.from_pipeline(settings, generate, edit=edit, model_name=name, device=device, safety=safety)

    @classmethod
    def from_pipeline(
        cls,
        settings: EngineSettings,
        generate: Pipeline,
        *,
        model_name: str,
        edit: Pipeline | None = None,
        device: torch.device | None = None,
        safety: SafetyClassifier | None = None,
    ) -> DiffusersEngine:
        """Wrap already-built pipelines (the random-weight benchmark architectures use this)."""
        device = device or resolve_device(settings.device)
        dtype = resolve_dtype(settings.dtype, device)
        family = families.family_of(generate)
        families.check_settings(family, generate, settings)
        for pipe in (generate, edit):
            if pipe is not None:
                prepare(pipe, settings, device, dtype)
        if edit is not None:
            share_components(edit, generate)
        set_scheduler(generate, settings)
        upscale = UpscaleStage.load_or_none(settings.upscaler, device, dtype)
        pipes = _Pipelines(generate, AutoPipelineForImage2Image.from_pipe(generate), edit, family, upscale)
        pipes.img2img.set_progress_bar_config(disable=True)
        pipes.inpaint, inpaint_origin = inpainting.inpaint_pipeline(
            settings,
            generate,
            device,
            dtype,
            bundled=settings.model is None and model_name == TINY_MODEL_NAME,
        )
        log.info("inpainting: %s", inpaint_origin)
        load_adapters(pipes.generate, settings)
        decoder = preview_decoder(family, settings, model_name, dtype, device)
        if safety is None and settings.safety is not None:
            cache = str(settings.cache_dir) if settings.cache_dir else None
            safety = SafetyClassifier.load(settings.safety, device, dtype, cache)
        previewer = Previewer(decoder, family)
        engine = cls(
            settings, pipes, model_name=model_name, device=device, previewer=previewer, safety=safety
        )
        acceleration.warm_up(settings, engine.run_batch)
        log.info("engine ready: %s (%s) on %s", model_name, family.title, device)
        return engine

    @property
    def acceleration_counters(self) -> dict[str, float]:
        """The speed switches' counters for the worker's metrics."""
        stats = self._prompt_cache.stats
        return {
            "prompt_cache_hits": stats.hits,
            "prompt_cache_misses": stats.misses,
            "prompt_cache_entries": stats.entries,
            "prompt_cache_bytes": stats.bytes,
            "padded_rows": self._padded_rows,
        }

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
    def can_inpaint(self) -> bool:
        return self._pipes.inpaint is not None

    @property
    def safety(self) -> SafetyClassifier | None:
        return self._safety

    @property
    def model_defaults(self) -> ModelDefaults:
        return self._settings.defaults.model_copy()

    @property
    def served_models(self) -> dict[str, ModelDefaults]:
        return {self._model_name: self.model_defaults}

    def defaults(self, kind: JobKind, model: str | None = None) -> KindDefaults:
        if model not in (None, self._model_name):
            raise EngineError(f"unknown model {model!r}; this engine serves {self._model_name!r}")
        defaults = kind_defaults(self._settings.defaults, kind)
        if kind is not JobKind.UPSCALE or self._pipes.upscale is None:
            return defaults  # scale 1: no upscaler, so intake refuses upscale jobs
        return replace(defaults, scale=self._pipes.upscale.scale)

    def memory(self) -> DeviceMemory:
        if self._device.type == "cuda":
            total = torch.cuda.get_device_properties(self._device).total_memory
            return DeviceMemory(torch.cuda.memory_allocated(self._device), total)
        if self._device.type == "mps":
            # Apple GPUs share system memory; torch reports the working-set limit Metal recommends.
            return DeviceMemory(torch.mps.current_allocated_memory(), torch.mps.recommended_max_memory())
        return DeviceMemory()

    def run_batch(
        self,
        items: list[BatchItem],
        on_step: Callable[[StepUpdate], None],
        should_stop: Callable[[], bool],
    ) -> list[list[GeneratedImage]]:
        if not items:
            return []
        shape = self._shape(items)
        if shape.kind is JobKind.UPSCALE:
            return self._upscale_batch(items, shape, on_step, should_stop)
        with self._lock:
            pipe = self._pipe_for(shape)
            kwargs = self._call_kwargs(pipe, items, shape)
            canvases = self._canvases(pipe, items, shape, kwargs)
            output = self._denoise(pipe, kwargs, shape, on_step, should_stop)
        if output is None:
            return [[] for _ in items]
        on_step(StepUpdate(step=shape.steps, total=shape.steps, device_free=True))
        return self._results(items, shape, output, pipe, canvases)

    def _upscale_batch(
        self,
        items: list[BatchItem],
        shape: BatchKey,
        on_step: Callable[[StepUpdate], None],
        should_stop: Callable[[], bool],
    ) -> list[list[GeneratedImage]]:
        """The upscaler on every input at once (tiled); a creative batch then runs img2img over the results."""
        stage = self._pipes.upscale
        if stage is None:
            raise EngineError("this worker has no upscaler (spandrel is not installed)")
        with self._lock:
            try:
                enlarged = stage.enlarge(
                    [np.asarray(it.init_image.decode()) for it in items if it.init_image]
                )
            except Exception as exc:
                if _is_oom(exc):
                    raise EngineOutOfMemory(f"out of memory upscaling {len(items)} images: {exc}") from exc
                raise EngineError(f"upscaler failed: {type(exc).__name__}: {exc}") from exc
            pipe: Pipeline | None = None  # the redraw's, when the batch is creative
            output: Any = None
            steps = 1
            if shape.creative:
                strength = shape.strength or stage.creative_strength
                redraw = replace(shape, kind=JobKind.IMG2IMG, strength=strength)
                pipe = self._pipes.img2img
                kwargs = self._call_kwargs(pipe, items, redraw, [Image.fromarray(p) for p in enlarged])
                output = self._denoise(pipe, kwargs, redraw, on_step, should_stop)
                if output is None:
                    return [[] for _ in items]
                steps = redraw.steps
        # As in `run_batch`: the device is done, so the next batch may start while these are packaged.
        on_step(StepUpdate(step=steps, total=steps, device_free=True))
        if pipe is None:
            return self._package(items, shape, enlarged, [False] * len(enlarged), None)
        return self._results(items, shape, output, pipe)

    # --- One batch, step by step ---

    def _denoise(
        self,
        pipe: Pipeline,
        kwargs: dict[str, Any],
        shape: BatchKey,
        on_step: Callable[[StepUpdate], None],
        should_stop: Callable[[], bool],
    ) -> Any:
        """One pipeline call (holding the lock): the batch's adapter and sampler, the speed switches and
        the step callback; the model's own sampler is put back after. None when it was stopped."""
        self._apply_adapter(pipe, shape)
        own = pipe.scheduler
        pipe.scheduler = self._sampler(own, shape.sampler)
        try:
            kwargs, rows = self._accelerated(pipe, kwargs, shape)
            stopped = threading.Event()
            kwargs["callback_on_step_end"] = self._step_callback(kwargs, on_step, should_stop, stopped, rows)
            output = self._call(pipe, kwargs, rows)
        finally:
            pipe.scheduler = own  # the next batch starts from the model's own sampler
        return None if stopped.is_set() else output

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

    def _sampler(self, own: Any, name: str | None) -> Any:
        """The batch's sampler: the pipeline's own, or the named scheduler built from its config."""
        if name is None or name == type(own).__name__:
            return own
        cls = getattr(diffusers, name, None)
        if cls is None or not isinstance(cls, type) or not issubclass(cls, SchedulerMixin):
            raise EngineError(f"unknown sampler {name!r}")
        if name.startswith("FlowMatch") != self._pipes.family.flow_matching:
            raise EngineError(f"the sampler {name} does not fit {self._pipes.family.title}")
        return cls.from_config(own.config)

    def _pipe_for(self, shape: BatchKey) -> Pipeline:
        if shape.kind is JobKind.GENERATE:
            return self._pipes.generate
        if shape.kind is JobKind.INPAINT:
            if self._pipes.inpaint is None or shape.adapter is not None:
                raise EngineError("inpainting runs on the main model's inpainting pipeline, without adapters")
            return self._pipes.inpaint
        if shape.kind is JobKind.EDIT and self._pipes.edit is not None:
            if shape.adapter is not None:
                raise EngineError("adapters apply to the main model, not to the instruction-editing model")
            return self._pipes.edit
        return self._pipes.img2img

    def _apply_adapter(self, pipe: Pipeline, shape: BatchKey) -> None:
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
        self, pipe: Pipeline, items: list[BatchItem], shape: BatchKey, inputs: list[Image.Image] | None = None
    ) -> dict[str, Any]:
        """The pipeline call's arguments; `inputs`: each item's input picture, already decoded."""
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
            # Pictures leave the pipeline as tensors on its device, made uint8 there in one step.
            "output_type": "pt",
            "callback_on_step_end_tensor_inputs": ["latents"],
        }
        if shape.kind.needs_image and shape.kind is not JobKind.INPAINT:
            # Each job's input decoded once, straight to the output size, only while its batch runs.
            inputs = inputs or [self._init_image(it, size) for it in items]
            kwargs["image"] = [
                img for it, img in zip(items, inputs, strict=True) for _ in range(it.request.count)
            ]
        if pipe is self._pipes.edit:
            kwargs["image_guidance_scale"] = (
                shape.image_guidance or self._settings.defaults.edit_image_guidance
            )
        elif shape.kind.needs_image:
            default = self._settings.inpaint.strength if shape.kind is JobKind.INPAINT else None
            strength = shape.strength or default or self._settings.defaults.img2img_strength
            kwargs["strength"] = strength
            kwargs["num_inference_steps"] = _steps_for_strength(shape.steps, strength)
        if pipe is not self._pipes.edit:
            kwargs = families.adapt_call(self._pipes.family, pipe, kwargs)
        accepted = _call_parameters(pipe.__class__)
        return {k: v for k, v in kwargs.items() if k in accepted}

    def _canvases(
        self, pipe: Pipeline, items: list[BatchItem], shape: BatchKey, kwargs: dict[str, Any]
    ) -> inpainting.Canvases | None:
        """An inpaint batch's canvases, their pictures and masks put into the call's `kwargs`."""
        if shape.kind is not JobKind.INPAINT:
            return None
        d = self._settings.defaults
        multiple = inpainting.size_multiple(pipe, self._pipes.family.size_multiple)
        canvases = inpainting.Canvases.of(
            items, shape, (d.width, d.height), multiple, self._settings.inpaint.feather
        )
        kwargs.update(canvases.call_kwargs())
        return canvases

    def _accelerated(
        self, pipe: Pipeline, kwargs: dict[str, Any], shape: BatchKey
    ) -> tuple[dict[str, Any], int]:
        """The call with the configured speed switches applied, and its real row count: cached prompt
        embeddings, tiled decoding for large pictures, and padding to the next batch-size bucket."""
        rows = len(kwargs["generator"])
        if self._prompt_cache.usable(pipe, kwargs, shape.adapter):
            kwargs = self._prompt_cache.apply(pipe, kwargs, self._device)
        acceleration.set_vae_tiling(pipe, self._settings, shape.width, shape.height)
        target = acceleration.next_bucket(rows, self._settings.batch_buckets)
        self._padded_rows += target - rows
        return acceleration.pad_call(kwargs, rows, target), rows

    @staticmethod
    def _init_image(item: BatchItem, size: tuple[int, int]) -> Image.Image:
        assert item.init_image is not None
        return item.init_image.decode(size)

    def _step_callback(
        self,
        kwargs: dict[str, Any],
        on_step: Callable[[StepUpdate], None],
        should_stop: Callable[[], bool],
        stopped: threading.Event,
        rows: int,
    ) -> Callable[..., dict[str, Any]]:
        """The per-step callback: progress, previews of the `rows` real pictures (not the padding), stop."""
        settings = self._settings
        planned = kwargs.get("num_inference_steps", 1)
        size = (kwargs.get("width", 0), kwargs.get("height", 0))
        last_preview = [-float("inf")]

        def want_preview(step: int, total: int) -> bool:
            """Previews only for batches long enough to watch, and no more often than anyone looks."""
            if total < settings.preview_min_steps or step % settings.preview_every or step >= total:
                return False
            now = time.monotonic()
            if now - last_preview[0] < settings.preview_interval_s:
                return False
            last_preview[0] = now
            return True

        def callback(pipe: Pipeline, i: int, _t: Any, tensors: dict[str, Any]) -> dict[str, Any]:
            total = getattr(pipe, "_num_timesteps", None) or planned
            step = i + 1
            previews = []
            if want_preview(step, total):
                # The instruction-editing pipeline (InstructPix2Pix) is an SD 1.5 one, whatever the main model.
                family = families.SD if pipe is self._pipes.edit else self._pipes.family
                latents = tensors.get("latents")
                previews = self._previewer(pipe, None if latents is None else latents[:rows], size, family)
            on_step(StepUpdate(step=step, total=total, previews=previews))
            if should_stop():
                stopped.set()
                pipe._interrupt = True
                if not hasattr(type(pipe), "interrupt"):
                    raise _Stopped
            return tensors

        return callback

    def _call(self, pipe: Pipeline, kwargs: dict[str, Any], rows: int) -> Any:
        """The pipeline call; its output keeps only the first `rows` pictures (the rest were padding)."""
        try:
            output = pipe(**kwargs)
            output.images = output.images[:rows]
            flags = getattr(output, "nsfw_content_detected", None)
            if flags is not None:
                output.nsfw_content_detected = flags[:rows]
            return output
        except _Stopped:
            return None
        except Exception as exc:
            if _is_oom(exc):
                if self._device.type == "cuda":
                    torch.cuda.empty_cache()
                n = len(kwargs["generator"])
                raise EngineOutOfMemory(f"out of memory running {n} images: {exc}") from exc
            raise EngineError(f"pipeline failed: {type(exc).__name__}: {exc}") from exc

    def _results(
        self,
        items: list[BatchItem],
        shape: BatchKey,
        output: Any,
        pipe: Pipeline,
        canvases: inpainting.Canvases | None = None,
    ) -> list[list[GeneratedImage]]:
        # SD3 and FLUX ran at a multiple of 16: give each job the size it asked for.
        size = (shape.width, shape.height)
        pixels = [resized(p, size) for p in to_uint8(output.images)]
        if canvases is not None:  # painted at the model's size: the original back at full resolution
            pixels = canvases.finish(pixels)
        flags = getattr(output, "nsfw_content_detected", None) or [False] * len(pixels)
        return self._package(items, shape, pixels, flags, pipe)

    def _package(
        self,
        items: list[BatchItem],
        shape: BatchKey,
        pixels: list[Any],
        flags: list[Any],
        pipe: Pipeline | None,
    ) -> list[list[GeneratedImage]]:
        """Each item's pictures with their safety flags (the classifier's too) and metadata."""
        if self._safety is not None:
            flags = [bool(a) or b for a, b in zip(flags, self._checked(pixels), strict=True)]
        results: list[list[GeneratedImage]] = []
        k = 0
        for it in items:
            mine = []
            for i in range(it.request.count):
                meta = self._metadata(it, shape, it.seed + i, pipe)
                mine.append(
                    GeneratedImage(pixels=pixels[k], meta=meta, seed=it.seed + i, nsfw=bool(flags[k]))
                )
                k += 1
            results.append(mine)
        return results

    def _checked(self, pixels: list[Any]) -> list[bool]:
        """The safety classifier's flags; a failure fails the batch (no picture goes out unchecked)."""
        assert self._safety is not None
        try:
            return self._safety.flags([Image.fromarray(p) for p in pixels])
        except Exception as exc:
            if _is_oom(exc):
                raise EngineOutOfMemory(f"out of memory checking {len(pixels)} images: {exc}") from exc
            raise EngineError(f"safety checker failed: {type(exc).__name__}: {exc}") from exc

    def _metadata(self, item: BatchItem, shape: BatchKey, seed: int, pipe: Pipeline | None) -> dict[str, str]:
        edit_model = pipe is not None and pipe is self._pipes.edit
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
        if shape.inpaint is not None:
            meta["inpaint"] = shape.inpaint.model_dump_json(exclude_none=True)
        if shape.kind is JobKind.UPSCALE:
            stage = self._pipes.upscale
            assert stage is not None  # an upscale batch ran on it
            meta["upscaler"] = stage.describe()
            if shape.creative:
                meta["strength"] = f"{shape.strength or stage.creative_strength:g}"
        elif shape.kind.needs_image and not edit_model:
            meta["strength"] = f"{shape.strength or self._settings.defaults.img2img_strength:g}"
        if shape.adapter:
            meta["adapter"] = f"{shape.adapter}:{shape.adapter_scale:g}"
        return meta


# --- Loading helpers ---
