"""Settings for the inference worker: which model to load and how, and how the worker queues and serves.

Plain pydantic models: the root settings object (built once in run.py from environment and TOML) nests
them, and tests build them directly.
"""

from __future__ import annotations

from enum import StrEnum
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator


class OutputFormat(StrEnum):
    """How finished pictures are encoded (`inference.output`); each keeps the generation metadata."""

    PNG = "png"  # lossless, text chunks, at `png_compress_level`
    WEBP = "webp"  # lossy at `webp_quality`, XMP
    WEBP_LOSSLESS = "webp-lossless"  # lossless WebP at its fastest effort, XMP
    JPEG = "jpeg"  # lossy at `jpeg_quality`, XMP


class ModelDefaults(BaseModel):
    """Per-model generation defaults; few-step models want 1-4 steps and guidance 0."""

    model_config = ConfigDict(extra="forbid")

    steps: int = Field(default=25, ge=1, le=150)
    guidance: float = Field(default=7.0, ge=0.0, le=30.0)
    width: int = Field(default=512, ge=64, le=2048, multiple_of=8)
    height: int = Field(default=512, ge=64, le=2048, multiple_of=8)
    img2img_strength: float = Field(default=0.6, gt=0.0, le=1.0)
    edit_steps: int | None = Field(default=None, ge=1, le=150)
    edit_guidance: float | None = Field(default=None, ge=0.0, le=30.0)
    edit_image_guidance: float = Field(default=1.5, ge=1.0, le=10.0)


# What jobs, /v1/info and the pictures' `model` chunk call the bundled model (`engine.model` unset).
TINY_MODEL_NAME = "brushfire/tiny"

# The bundled trained tiny model draws 64x64 pictures; its defaults apply when no model is configured and the
# settings name no defaults of their own, so the offline default is quick on a CPU.
# Its edit defaults were chosen on 400 tuning edits, apart from the evaluation's (MODEL_CARD.md, "Guidance
# tinted the shape"): with the shipped edit denoiser, guidance 3 / image guidance 2 followed 96.5 %, kept the
# shape 94 % and a background edit kept the shape's colour 94 % (90 % at guidance 6, where the amplified
# instruction pushes the shape's colour to a neighbouring hue).
BUNDLED_MODEL_DEFAULTS = ModelDefaults(
    steps=20,
    guidance=5.0,
    width=64,
    height=64,
    img2img_strength=0.6,
    edit_guidance=3.0,
    edit_image_guidance=2.0,
)


class AdapterSettings(BaseModel):
    """A LoRA adapter the worker loads once at start and switches per batch (style presets use them)."""

    model_config = ConfigDict(extra="forbid")

    name: str = Field(min_length=1, max_length=64)
    path: str  # a local .safetensors file or folder, or a Hugging Face id
    weight_name: str | None = None
    # Fused into the weights at load and always on, never switched (a few-step LoRA such as LCM-LoRA or
    # SDXL-Lightning); a fused adapter is not one a job can name.
    fuse: bool = False
    scale: float = Field(default=1.0, ge=0.0, le=2.0)  # the fused strength; per-job scale otherwise


class UpscalerSettings(BaseModel):
    """The super-resolution model behind upscale jobs (`inference.superres`), per served model.

    Any single-file model spandrel reads (ESRGAN, Real-ESRGAN and its Compact models, SPAN, ...). The
    output is the input times the model's scale; a creative upscale then redraws it with img2img under
    the job's prompt at `creative_strength` (low: it should add detail, not change the picture).
    """

    model_config = ConfigDict(extra="forbid")

    # A .pth or .safetensors file; None: the bundled tiny upscaler of `scale`
    # (inference/tiny/model/upscaler/upscaler_x2|x4.safetensors).
    path: Path | None = None
    # 2 or 4; with `path` set it must be that model's own scale (checked at load).
    scale: Literal[2, 4] = 2
    # Input pixels per tile side, the context kept on each side of a tile (cropped from its output), and
    # tiles run at once: a picture of any size upscales in the memory of `tile_batch` tiles.
    tile: int = Field(default=256, ge=32, le=2048)
    tile_overlap: int = Field(default=16, ge=0, le=256)
    tile_batch: int = Field(default=4, ge=1, le=64)
    creative_strength: float = Field(default=0.3, gt=0.0, le=1.0)


class ExtraModelSettings(BaseModel):
    """Another text-to-image model the worker serves beside `engine.model`, loaded at start the same way
    (a Hugging Face id, a local folder or a single-file checkpoint). A job picks it by `name` (`model` in
    the request); it runs on its own pipelines with its own defaults, no adapters and no edit model, and
    shares the worker's device, dtype and safety classifier."""

    model_config = ConfigDict(extra="forbid")

    name: str = Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9._-]{0,39}$")  # what jobs and members call it
    model: str = Field(min_length=1)
    scheduler: str | None = Field(default=None, pattern=r"^[A-Za-z0-9]+Scheduler$")
    timestep_spacing: Literal["leading", "linspace", "trailing"] | None = None
    defaults: ModelDefaults = Field(default_factory=ModelDefaults)
    # This model's upscaler; None: the main model's (`engine.upscaler`).
    upscaler: UpscalerSettings | None = None


class SafetySettings(BaseModel):
    """An image safety classifier run on every output, whatever the model family; it sets each image's
    `nsfw` flag, which the bot's per-server NSFW policy (spoiler or refuse) acts on."""

    model_config = ConfigDict(extra="forbid")

    # "clip": a Stable Diffusion-style CLIP concept checker (StableDiffusionSafetyChecker and its image
    # processor, e.g. "CompVis/stable-diffusion-safety-checker"); "classifier": an image-classification
    # model loaded with transformers' AutoModelForImageClassification (e.g. "Falconsai/nsfw_image_detection").
    kind: Literal["clip", "classifier"] = "classifier"
    model: str = Field(min_length=1)  # a Hugging Face id or a local folder
    # For "classifier": the labels that mean unsafe, and the summed probability of them that flags an image.
    unsafe_labels: list[str] = Field(default_factory=lambda: ["nsfw"], min_length=1)
    threshold: float = Field(default=0.5, gt=0.0, le=1.0)


class InpaintSettings(BaseModel):
    """Zoom out, pan and vary region (`inpaint` jobs) on the main model (docs/models.md, "Inpainting")."""

    model_config = ConfigDict(extra="forbid")

    # Off: inpaint jobs are refused with `inpaint_unavailable`, and the bot hides the buttons.
    enabled: bool = True
    # A dedicated inpainting pipeline (a Hub id, a local folder or a single-file checkpoint, e.g.
    # "stable-diffusion-v1-5/stable-diffusion-inpainting"); None: built on the main model's weights.
    model: str | None = None
    # An inpainting UNet (9 input channels) swapped into the main pipeline, a folder or Hub id; None with no
    # `model`: the family's inpainting pipeline over the main weights (AutoPipelineForInpainting.from_pipe),
    # or on the bundled tiny model its own inpainting UNet (inference/tiny/model/inpaint/unet).
    unet: str | None = None
    # How far the painted area is re-noised: 1.0 paints it afresh (the mask's content is not kept).
    strength: float = Field(default=1.0, gt=0.0, le=1.0)
    # The soft edge, as a fraction of the canvas's shorter side: pixels further than this outside the
    # painted area are the original's exactly; nearer, the two blend linearly.
    feather: float = Field(default=0.04, ge=0.0, le=0.25)


class EngineSettings(BaseModel):
    """What the engine loads and how it runs it."""

    model_config = ConfigDict(extra="forbid")

    # A few-step model preset by name (inference/presets.py: sd-turbo, sdxl-turbo, sdxl-lightning,
    # sdxl-lcm-lora, flux-schnell): it fills in model, scheduler, timestep_spacing, defaults and its fused
    # adapters; keys set beside it win. Applied by the root settings (bot.core.settings), not here.
    preset: str | None = None
    # A Hugging Face id, a local folder, or a local single-file checkpoint (.safetensors or .ckpt);
    # None means the bundled trained tiny model (inference/tiny/model/generate).
    model: str | None = None
    # An instruction-editing pipeline (e.g. InstructPix2Pix); None means img2img on the main weights, or
    # the bundled tiny edit model (inference/tiny/model/edit) when `model` is None too.
    edit_model: str | None = None
    # A tiny preview decoder (TAESD-style AutoencoderTiny); None means a cheap latent-to-RGB projection
    # (or, on the bundled model, its own distilled tiny decoder).
    preview_decoder: str | None = None
    # Opt-in: a tiny autoencoder (TAESD-style AutoencoderTiny, id or folder) that decodes the final
    # pictures in place of the model's VAE; faster, slightly less faithful; for few-step (turbo) models.
    final_decoder: str | None = None
    device: Literal["auto", "cuda", "mps", "cpu"] = "auto"
    dtype: Literal["auto", "float32", "float16", "bfloat16"] = "auto"
    # torch.compile the UNet/transformer in place at load (inference/acceleration.py). Off: no GPU figure
    # has been measured yet (bench/gpu.py measures it when a GPU is lent; on a CPU it costs minutes).
    compile: bool = False
    # "default", "reduce-overhead" (CUDA graphs; only on CUDA, "default" elsewhere), "max-autotune" or
    # "max-autotune-no-cudagraphs".
    compile_mode: Literal["default", "reduce-overhead", "max-autotune", "max-autotune-no-cudagraphs"] = (
        "default"
    )
    # Batch sizes (in images) a batch is padded up to with copies of its last row, whose pictures are
    # dropped, so a compiled model sees only these shapes (static, each compiled once). Empty: no padding.
    # A batch larger than the largest runs as it is; worker.max_batch stays the cap.
    batch_buckets: list[int] = Field(default_factory=list, max_length=16)
    # With `compile`: (width, height) sizes warmed up at start, one batch per bucket each, before the
    # worker serves. Empty: the model's default size.
    compile_warmup_sizes: list[tuple[int, int]] = Field(default_factory=list, max_length=8)
    # Where inductor keeps compiled graphs across restarts (its default is under /tmp); unset: torch's own.
    compile_cache_dir: Path | None = None
    channels_last: bool = False
    # Encoded prompts kept for re-rolls and variations (SD 1.x/2.x pipelines; SDXL, SD3 and FLUX encode
    # every call), on the device, least recently used dropped first past either bound; 0 entries: no cache.
    # On by default: identical pictures, and a measured gain (bench/accel.py, docs/performance.md).
    prompt_cache_entries: int = Field(default=256, ge=0, le=100_000)
    prompt_cache_bytes: int = Field(default=64 * 1024 * 1024, ge=0)
    # Decode pictures of at least this many pixels in tiles of `vae_tile_size` (and one at a time), which
    # bounds the decoder's memory; tiles are blended, so pictures differ slightly. Unset: never tiled.
    vae_tiling_min_pixels: int | None = Field(default=None, ge=64 * 64)
    vae_tile_size: int = Field(default=512, ge=32, le=4096, multiple_of=8)
    # Run the pipeline's own safety checker (SD 1.x folders ship one); off whenever `safety` is set.
    safety_checker: bool = True
    # An independent image safety classifier run on every output of every family; None runs none.
    safety: SafetySettings | None = None
    # Replace the model's scheduler: a diffusers scheduler class name (e.g. "LCMScheduler") and/or the
    # timestep spacing few-step models want ("trailing"); None keeps what the model ships with.
    scheduler: str | None = Field(default=None, pattern=r"^[A-Za-z0-9]+Scheduler$")
    timestep_spacing: Literal["leading", "linspace", "trailing"] | None = None
    preview_every: int = Field(default=1, ge=1, le=100)  # make a preview every N steps
    # Least seconds between two previews of a batch: a progress message is edited at most every 2 s, so
    # a preview made sooner is never seen and only costs the GPU's thread a decode.
    preview_interval_s: float = Field(default=2.0, ge=0.0, le=3600.0)
    # Previews only for batches of at least this many steps: a 1-4 step model is done before anyone
    # could look at one. 1 makes them for every model.
    preview_min_steps: int = Field(default=5, ge=1, le=150)
    defaults: ModelDefaults = Field(default_factory=ModelDefaults)
    inpaint: InpaintSettings = Field(default_factory=InpaintSettings)
    adapters: list[AdapterSettings] = Field(default_factory=list)
    # More text-to-image models served beside `model`, each picked per job by its name; none by default.
    extra_models: list[ExtraModelSettings] = Field(default_factory=list)
    # The super-resolution model behind upscale jobs on the main model.
    upscaler: UpscalerSettings = Field(default_factory=UpscalerSettings)
    cache_dir: Path | None = None
    # CPU threads torch may use (None leaves torch's default); tests and CPU benches pin it to one.
    cpu_threads: int | None = Field(default=None, ge=1, le=256)

    @model_validator(mode="after")
    def _bundled_defaults(self) -> EngineSettings:
        # Generic defaults on the bundled model (none given, or an empty [engine.defaults] table) mean
        # "the model's own"; any value set by hand is kept.
        if self.model is None and self.defaults == ModelDefaults():
            self.defaults = BUNDLED_MODEL_DEFAULTS.model_copy()
            # Still "not set by hand": settings rebuilt with a model (`run.py worker --model`) must get
            # that model's defaults, not the bundled one's.
            self.__pydantic_fields_set__.discard("defaults")
        return self

    @model_validator(mode="after")
    def _buckets_ascend(self) -> EngineSettings:
        if self.batch_buckets != sorted(set(self.batch_buckets)) or any(b < 1 for b in self.batch_buckets):
            raise ValueError(
                f"batch_buckets must be distinct positive sizes in ascending order: {self.batch_buckets}"
            )
        for width, height in self.compile_warmup_sizes:
            if not (64 <= width <= 2048 and 64 <= height <= 2048 and width % 8 == 0 and height % 8 == 0):
                raise ValueError(
                    f"compile_warmup_sizes: {width}x{height} is not 64-2048 a side, a multiple of 8"
                )
        return self

    @property
    def served_models(self) -> dict[str, ModelDefaults]:
        """The models a worker with these settings serves, main first, with their defaults."""
        extras = {m.name: m.defaults for m in self.extra_models}
        return {self.model or TINY_MODEL_NAME: self.defaults, **extras}

    @model_validator(mode="after")
    def _distinct_model_names(self) -> EngineSettings:
        names = [self.model or TINY_MODEL_NAME] + [m.name for m in self.extra_models]
        twice = sorted({n for n in names if names.count(n) > 1})
        if twice:
            raise ValueError(
                f"model names must differ (extra_models and model); given twice: {', '.join(twice)}"
            )
        return self


class WorkerSettings(BaseModel):
    """How the worker serves: bind address, auth, queue caps and batching."""

    model_config = ConfigDict(extra="forbid")

    host: str = "127.0.0.1"
    port: int = Field(default=8765, ge=0, le=65535)
    token: str | None = None  # required for a non-loopback bind
    max_batch: int = Field(default=8, ge=1, le=64)
    relax_share: float = Field(
        default=0.1, ge=0.0, le=0.5
    )  # share of batches relax may take while fast waits
    max_queue_per_lane: int = Field(default=200, ge=1)
    max_queue_per_user: int = Field(default=20, ge=1)
    max_pixels: int = Field(default=1024 * 1024, ge=64 * 64)  # per output image
    # Per upscaled image: the upscaler runs in tiles, so its output may be larger than a generation's.
    max_upscale_pixels: int = Field(default=2048 * 2048, ge=64 * 64)
    max_image_bytes: int = Field(default=10 * 1024 * 1024, ge=1024)  # per uploaded edit image
    max_image_pixels: int = Field(default=2048 * 2048, ge=64 * 64)  # per uploaded edit image
    # Bytes of client input held at once: request bodies being read (by their declared size) plus the
    # compressed input images of queued jobs. Past it the worker answers 429 with Retry-After, so its
    # memory does not grow with what clients send. At least one largest upload must fit.
    input_budget_bytes: int = Field(default=32 * 1024 * 1024, ge=1024 * 1024)
    # Slow clients: the longest a connection may take to send a request's head (and the longest an
    # idle keep-alive connection stays open), and the longest a request's body may take to arrive.
    keepalive_timeout_s: float = Field(default=15.0, gt=0, le=3600)
    body_timeout_s: float = Field(default=30.0, gt=0, le=3600)
    job_ttl_s: float = Field(default=3600.0, gt=0)  # how long finished jobs' small records are kept
    # At most this many finished jobs' records are kept, oldest dropped first: each a ~0.6 KB tombstone
    # (`inference.queue.FinishedJob`: key, fingerprint, status, final event as JSON).
    max_finished_jobs: int = Field(default=10_000, ge=100)
    # Bytes of finished pictures held for clients to fetch. Past it the oldest already fetched pictures go
    # first, then the oldest unfetched ones (a fetch of those answers 410 `gone`).
    result_budget_bytes: int = Field(default=64 * 1024 * 1024, ge=16 * 1024 * 1024)
    # A fetched picture is kept this long for a retried fetch, then dropped.
    fetched_result_grace_s: float = Field(default=5.0, ge=0.0, le=3600.0)
    # How finished pictures are encoded, unless a job asks for another format (`output_format` in it).
    output_format: OutputFormat = OutputFormat.PNG
    png_compress_level: int = Field(default=1, ge=0, le=9)
    webp_quality: int = Field(default=90, ge=1, le=100)
    jpeg_quality: int = Field(default=95, ge=1, le=100)
    # Threads encoding pictures beside the GPU; None: one per core less one.
    encode_threads: int | None = Field(default=None, ge=1, le=256)
    shutdown_grace_s: float = Field(default=30.0, ge=0)  # how long the running batch may finish at shutdown
    batch_timeout_s: float = Field(default=600.0, gt=0)
    # Batches run at once, each on its own engine replica (Ray Serve); 1 for a single GPU.
    batches_in_flight: int = Field(default=1, ge=1, le=512)
    # Least time between progress events of a running batch (so a batch shorter than this reports none):
    # every event costs the event loop a wake-up and a send per subscriber, and a chat message cannot
    # show more than a few updates a second anyway. 0 reports every step.
    progress_interval_s: float = Field(default=0.2, ge=0)

    @model_validator(mode="after")
    def _budget_fits_an_upload(self) -> WorkerSettings:
        if self.input_budget_bytes < self.max_image_bytes:
            raise ValueError(
                f"input_budget_bytes ({self.input_budget_bytes}) must be at least max_image_bytes "
                f"({self.max_image_bytes}), or no upload of the largest allowed size could ever be taken"
            )
        return self
