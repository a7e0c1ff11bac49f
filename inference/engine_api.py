"""The engine boundary: what the scheduler hands an engine, what comes back, and what an engine must offer."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Protocol

import numpy as np
from PIL import Image

from inference.images import EncodedImage
from inference.output import OutputSettings, encode
from inference.protocol import InpaintSpec, JobRequest
from inference.settings import ModelDefaults
from inference.vocabulary import JobKind, WorkerJobId


@dataclass(frozen=True, slots=True, kw_only=True)
class ResolvedRequest:
    """A request with the loaded model's defaults filled in: every value one pipeline call needs.

    The server resolves a submission to this once (`inference.queue.Submission`); each batch hands the
    engine the same values per job (`BatchItem`), so the two cannot drift apart.
    """

    request: JobRequest
    seed: int
    width: int
    height: int
    steps: int
    guidance: float
    # Compressed: a queued job holds the upload's bytes, not its pixels; the engine decodes it per batch.
    init_image: EncodedImage | None = None

    @property
    def strength(self) -> float | None:
        return self.request.strength

    @property
    def key(self) -> BatchKey:
        return BatchKey.of(
            self.request, width=self.width, height=self.height, steps=self.steps, guidance=self.guidance,
            strength=self.strength,
        )  # fmt: skip


@dataclass(frozen=True, slots=True, kw_only=True)
class BatchItem(ResolvedRequest):
    """One job's share of a batch: its resolved request (count and seed cut to the share) and its id."""

    job_id: WorkerJobId


@dataclass(frozen=True, slots=True)
class BatchKey:
    """What every job of one batch must share for a single pipeline call to serve them all.

    The scheduler groups queued jobs by it and the engine checks a batch against it: one definition, so
    the two can never disagree about what is compatible.
    """

    kind: JobKind
    width: int
    height: int
    steps: int
    guidance: float
    strength: float | None
    image_guidance: float | None
    adapter: str | None
    adapter_scale: float
    sampler: str | None = None
    model: str | None = None  # the served model that runs the batch; None: the main one
    creative: bool = False  # an upscale redrawn with img2img after the upscaler
    inpaint: InpaintSpec | None = None  # inpaint jobs batch only with the same canvas and mask

    @classmethod
    def of(
        cls,
        request: JobRequest,
        *,
        width: int,
        height: int,
        steps: int,
        guidance: float,
        strength: float | None,
    ) -> BatchKey:
        """The key of a request resolved to concrete size, steps, guidance and strength."""
        return cls(
            kind=request.kind,
            width=width,
            height=height,
            steps=steps,
            guidance=guidance,
            strength=strength,
            image_guidance=request.image_guidance,
            adapter=request.adapter,
            # The scale means nothing without an adapter; it must not split batches then.
            adapter_scale=request.adapter_scale if request.adapter else 1.0,
            sampler=request.sampler,
            model=request.model,
            creative=request.creative,
            inpaint=request.inpaint,
        )

    @property
    def shape(self) -> tuple[JobKind, int, int, int]:
        """What the cost of a batch depends on (for ETAs measured per shape)."""
        return (self.kind, self.width, self.height, self.steps)


@dataclass(slots=True)
class GeneratedImage:
    """One picture as the engine made it: uint8 pixels, not yet encoded, and its generation metadata.

    The scheduler encodes it (`inference.output`) on a pool while the engine runs the next batch.
    """

    pixels: np.ndarray  # (height, width, 3) uint8
    meta: dict[str, str]  # prompt, seed, settings, model: written into every format that can hold them
    seed: int
    nsfw: bool = False

    @property
    def width(self) -> int:
        return int(self.pixels.shape[1])

    @property
    def height(self) -> int:
        return int(self.pixels.shape[0])

    @property
    def png(self) -> bytes:
        """The picture as lossless PNG with its metadata in text chunks, encoded on each call."""
        return encode(self.pixels, self.meta, OutputSettings())


@dataclass(slots=True)
class StepUpdate:
    step: int
    total: int
    # One small preview per image in the batch (items in order, each item's `count` images in order),
    # when the engine makes previews on this step; empty otherwise.
    previews: list[Image.Image] = field(default_factory=list)
    # The pipeline call has returned: the device can take the next batch while this one's pictures are
    # converted and checked on the host. Sent once, after the last step; not a progress report.
    device_free: bool = False


@dataclass(frozen=True, slots=True)
class KindDefaults:
    """What an unset job field takes for one kind of job on the loaded model."""

    steps: int
    guidance: float
    width: int
    height: int
    scale: int = 1  # upscale jobs: the upscaler's factor (1: this engine has no upscaler)


def kind_defaults(d: ModelDefaults, kind: JobKind) -> KindDefaults:
    """What unset fields of this kind of job take on a model with defaults `d`."""
    if kind is JobKind.EDIT:
        steps = d.edit_steps if d.edit_steps is not None else d.steps
        guidance = d.edit_guidance if d.edit_guidance is not None else d.guidance
        return KindDefaults(steps, guidance, d.width, d.height)
    return KindDefaults(d.steps, d.guidance, d.width, d.height)


@dataclass(frozen=True, slots=True)
class DeviceMemory:
    """Device memory in bytes, each None when the device does not report it (CPU)."""

    used: int | None = None
    total: int | None = None


class Engine(Protocol):
    """What the scheduler needs from an engine. `inference.engine.DiffusersEngine` is the real one."""

    @property
    def model_name(self) -> str: ...

    @property
    def device_name(self) -> str: ...

    @property
    def adapter_names(self) -> list[str]:
        """The LoRA adapters a job may name in `adapter`."""
        ...

    @property
    def model_defaults(self) -> ModelDefaults:
        """The loaded model's generation defaults, as configured for it."""
        ...

    @property
    def has_edit_model(self) -> bool:
        """Whether edit jobs run on an instruction-editing pipeline (else img2img on the main weights)."""
        ...

    @property
    def can_inpaint(self) -> bool:
        """Whether the main model runs inpaint jobs (zoom out, pan, vary region)."""
        ...

    @property
    def served_models(self) -> dict[str, ModelDefaults]:
        """Every model a job may name in `model`, the main one (`model_name`) first, with its defaults."""
        ...

    def defaults(self, kind: JobKind, model: str | None = None) -> KindDefaults:
        """What unset fields of this kind of job take on the named served model (None: the main one)."""
        ...

    def run_batch(
        self,
        items: list[BatchItem],
        on_step: Callable[[StepUpdate], None],
        should_stop: Callable[[], bool],
    ) -> list[list[GeneratedImage]]:
        """Run one pipeline call for compatible items; return each item's images, in order.

        Called from a worker thread. `on_step` is called after each denoising step. When `should_stop`
        turns true the pipeline is interrupted at the next step and the call returns what it has
        (possibly nothing). Raises `torch.cuda.OutOfMemoryError`-like errors as `EngineOutOfMemory`.
        """
        ...

    def memory(self) -> DeviceMemory:
        """How much device memory is used, when the device reports it."""
        ...


@dataclass
class EngineWrapper:
    """An engine that hands everything to `inner`: subclass it to observe batches or inject faults."""

    inner: Engine

    @property
    def model_name(self) -> str:
        return self.inner.model_name

    @property
    def device_name(self) -> str:
        return self.inner.device_name

    @property
    def adapter_names(self) -> list[str]:
        return self.inner.adapter_names

    @property
    def model_defaults(self) -> ModelDefaults:
        return self.inner.model_defaults

    @property
    def has_edit_model(self) -> bool:
        return self.inner.has_edit_model

    @property
    def can_inpaint(self) -> bool:
        return self.inner.can_inpaint

    @property
    def served_models(self) -> dict[str, ModelDefaults]:
        return self.inner.served_models

    def defaults(self, kind: JobKind, model: str | None = None) -> KindDefaults:
        return self.inner.defaults(kind, model)

    def memory(self) -> DeviceMemory:
        return self.inner.memory()

    def run_batch(
        self,
        items: list[BatchItem],
        on_step: Callable[[StepUpdate], None],
        should_stop: Callable[[], bool],
    ) -> list[list[GeneratedImage]]:
        return self.inner.run_batch(items, on_step, should_stop)


class EngineOutOfMemory(RuntimeError):
    """The device ran out of memory during a batch; the scheduler splits the batch and retries."""


class EngineError(RuntimeError):
    """The pipeline failed for a reason other than memory."""
