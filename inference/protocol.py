"""The worker's RPC wire models: requests, job state, events, stats and error codes, with input validation.

This module is shared by the standalone worker, any other ingress that speaks the same `/v1` RPC, the
client and the bot. It imports neither torch nor diffusers.
"""

from __future__ import annotations

import json
import math
import re
from enum import StrEnum
from typing import Annotated, Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from inference.canvas import CELLS, Direction, Op
from inference.settings import ModelDefaults, OutputFormat
from inference.text import MAX_PROMPT_CHARS, is_visible, normalize_prompt
from inference.vocabulary import JobKind, JobStatus, Lane, WorkerJobId

API_PREFIX = "/v1"

MIN_SIDE = 64
MAX_SIDE = 2048
MAX_STEPS = 150
MAX_COUNT = 8
MAX_SEED = 2**32 - 1
IDEMPOTENCY_KEY_RE = re.compile(r"^[A-Za-z0-9_.:\-]{1,128}$")


class ErrorCode(StrEnum):
    """Machine-readable error codes; every error body is `{"code": ..., "message": ...}`."""

    BAD_REQUEST = "bad_request"  # malformed body, not JSON, wrong multipart
    BODY_TOO_LARGE = "body_too_large"  # declared or actual body over the worker's limit (413)
    REQUEST_TIMEOUT = "request_timeout"  # the body did not arrive in time (408)
    UNKNOWN_FIELD = "unknown_field"
    INVALID_FIELD = "invalid_field"  # a field with a wrong type or out of range
    PROMPT_EMPTY = "prompt_empty"
    PROMPT_TOO_LONG = "prompt_too_long"
    BAD_SIZE = "bad_size"  # width/height off the multiple of 8, out of range, or over max pixels
    IMAGE_REQUIRED = "image_required"
    IMAGE_NOT_ALLOWED = "image_not_allowed"
    BAD_IMAGE = "bad_image"  # not an image, or truncated
    IMAGE_TOO_LARGE = "image_too_large"  # over the byte limit
    IMAGE_TOO_MANY_PIXELS = "image_too_many_pixels"  # over the pixel limit, decompression bombs
    UNKNOWN_ADAPTER = "unknown_adapter"
    UNKNOWN_MODEL = "unknown_model"  # `model` names none the worker serves
    UPSCALE_UNAVAILABLE = "upscale_unavailable"  # an upscale job on a model with no upscaler
    INPAINT_UNAVAILABLE = "inpaint_unavailable"  # the model has no inpainting pipeline (zoom, pan, region)
    UNAUTHORIZED = "unauthorized"
    NOT_FOUND = "not_found"
    CONFLICT = "conflict"  # idempotency key reused with different parameters
    QUEUE_FULL = "queue_full"  # lane cap reached (429, Retry-After)
    USER_QUEUE_FULL = "user_queue_full"  # per-user cap reached (429, Retry-After)
    NOT_READY = "not_ready"  # job has no images (yet)
    GONE = "gone"  # the image was fetched and its grace passed, or evicted from the result budget (410)
    SHUTTING_DOWN = "shutting_down"
    OUT_OF_MEMORY = "out_of_memory"
    PIPELINE_ERROR = "pipeline_error"
    CANCELLED = "cancelled"
    WORKER_LOST = "worker_lost"
    INTERNAL = "internal"


class ErrorBody(BaseModel):
    code: ErrorCode
    message: str
    field: str | None = None
    retry_after: float | None = None


class ProtocolError(Exception):
    """A request that is refused, with the HTTP status and the error body to send back."""

    def __init__(
        self,
        code: ErrorCode,
        message: str,
        *,
        status: int = 400,
        field: str | None = None,
        retry_after: float | None = None,
    ) -> None:
        super().__init__(message)
        self.code = code
        self.message = message
        self.status = status
        self.field = field
        self.retry_after = retry_after

    def body(self) -> ErrorBody:
        return ErrorBody(code=self.code, message=self.message, field=self.field, retry_after=self.retry_after)


class InpaintSpec(BaseModel):
    """What an `inpaint` job paints (`inference.canvas`): a zoom out (`zoom` 1.1-3), a pan (`direction`),
    or a region (`cells` of the 3x3 grid, 0-8 row by row)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    op: Op
    zoom: float | None = Field(default=None, ge=1.1, le=3.0)
    direction: Direction | None = None
    cells: tuple[int, ...] | None = Field(default=None, min_length=1, max_length=CELLS)

    @model_validator(mode="after")
    def _op_fields(self) -> InpaintSpec:
        wanted = {"zoom": "zoom", "pan": "direction", "region": "cells"}[self.op]
        given = [name for name in ("zoom", "direction", "cells") if getattr(self, name) is not None]
        if given != [wanted]:
            raise ProtocolError(
                ErrorCode.INVALID_FIELD,
                f"an inpaint {self.op} takes `{wanted}` and nothing else",
                field="inpaint",
            )
        if self.cells is not None and (
            len(set(self.cells)) != len(self.cells) or not all(0 <= c < CELLS for c in self.cells)
        ):
            raise ProtocolError(
                ErrorCode.INVALID_FIELD,
                f"cells must be distinct numbers from 0 to {CELLS - 1}",
                field="inpaint",
            )
        return self


# The length is checked after normalisation, in JobRequest's validators, with its own error code; the
# bound here is what the OpenAPI document advertises.
Prompt = Annotated[str, Field(max_length=MAX_PROMPT_CHARS)]


class JobRequest(BaseModel):
    """A job as submitted to the worker. Unknown fields are refused.

    `steps`, `guidance`, `width` and `height` left unset take the loaded model's defaults. Each of the
    job's `count` images is drawn from its own generator seeded `seed + i`, so a job's images depend only
    on its own parameters, alone or inside a batch.
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    idempotency_key: str
    user: str = Field(min_length=1, max_length=64)
    lane: Lane = Lane.FAST
    kind: JobKind = JobKind.GENERATE
    prompt: Prompt
    negative_prompt: Prompt = ""
    width: int | None = None
    height: int | None = None
    steps: int | None = Field(default=None, ge=1, le=MAX_STEPS)
    guidance: float | None = Field(default=None, ge=0.0, le=30.0)
    strength: float | None = Field(default=None, gt=0.0, le=1.0)
    image_guidance: float | None = Field(default=None, ge=1.0, le=10.0)
    count: int = Field(default=1, ge=1, le=MAX_COUNT)
    seed: int | None = Field(default=None, ge=0, le=MAX_SEED)
    adapter: str | None = Field(default=None, max_length=64)
    adapter_scale: float = Field(default=1.0, ge=0.0, le=2.0)
    # This job's sampler: a diffusers scheduler class (e.g. "EulerDiscreteScheduler") built from the
    # model's own scheduler config for the batch; unset: the model's (or engine.scheduler).
    sampler: str | None = Field(default=None, pattern=r"^[A-Za-z0-9]{1,60}Scheduler$")
    # Which of the worker's text-to-image models runs the job (`WorkerInfo.models`); unset: the main one.
    model: str | None = Field(default=None, min_length=1, max_length=300)
    # png (lossless), webp or jpeg; None: the worker's `output_format`. Each keeps the metadata.
    output_format: OutputFormat | None = None
    # Upscale jobs only: after the upscaler, redraw the picture with img2img under the prompt at `strength`
    # (unset: the upscaler's `creative_strength`). False: the upscaler alone ("subtle").
    creative: bool = False
    # What an `inpaint` job paints; only for that kind. Its output size follows from the image and this.
    inpaint: InpaintSpec | None = None

    @field_validator("idempotency_key")
    @classmethod
    def _key(cls, v: str) -> str:
        if not IDEMPOTENCY_KEY_RE.match(v):
            raise ValueError("must be 1-128 characters of letters, digits, '_', '.', ':' or '-'")
        return v

    @field_validator("prompt", mode="before")
    @classmethod
    def _prompt(cls, v: Any) -> Any:
        v = _checked_prompt(v, "prompt")
        if isinstance(v, str) and not is_visible(v):
            raise ProtocolError(ErrorCode.PROMPT_EMPTY, "prompt has nothing visible in it", field="prompt")
        return v

    @field_validator("negative_prompt", mode="before")
    @classmethod
    def _negative(cls, v: Any) -> Any:
        v = _checked_prompt(v, "negative_prompt")
        return v if not isinstance(v, str) or is_visible(v) else ""

    @field_validator("width", "height")
    @classmethod
    def _side(cls, v: int | None, info: Any) -> int | None:
        if v is None:
            return v
        if v % 8 or not MIN_SIDE <= v <= MAX_SIDE:
            raise ProtocolError(
                ErrorCode.BAD_SIZE,
                f"{info.field_name} must be a multiple of 8 between {MIN_SIDE} and {MAX_SIDE}, got {v}",
                field=info.field_name,
            )
        return v

    @model_validator(mode="after")
    def _kind_fields(self) -> JobRequest:
        if self.kind is JobKind.GENERATE and self.strength is not None:
            raise ProtocolError(
                ErrorCode.INVALID_FIELD, "strength applies only to img2img and edit jobs", field="strength"
            )
        if self.creative and self.kind is not JobKind.UPSCALE:
            raise ProtocolError(
                ErrorCode.INVALID_FIELD, "creative applies only to upscale jobs", field="creative"
            )
        if self.kind is JobKind.UPSCALE:
            _check_upscale(self)
        if (self.kind is JobKind.INPAINT) != (self.inpaint is not None):
            raise ProtocolError(
                ErrorCode.INVALID_FIELD,
                "`inpaint` is required by inpaint jobs and only by them",
                field="inpaint",
            )
        if self.kind is JobKind.INPAINT and (self.width is None) != (self.height is None):
            raise ProtocolError(
                ErrorCode.BAD_SIZE,
                "an inpaint job's canvas takes both width and height, or neither",
                field="width",
            )
        return self


def _check_upscale(request: JobRequest) -> None:
    """An upscale makes one picture at the input's size times the upscaler's; strength only when creative."""
    if request.count != 1:
        raise ProtocolError(
            ErrorCode.INVALID_FIELD, "an upscale job makes one image (count 1)", field="count"
        )
    if request.strength is not None and not request.creative:
        raise ProtocolError(
            ErrorCode.INVALID_FIELD,
            "strength applies to creative upscales only (the upscaler alone redraws nothing)",
            field="strength",
        )


def _checked_prompt(v: Any, name: str) -> Any:
    """A prompt field normalised (`inference.text`) and checked against the one length limit."""
    if not isinstance(v, str):
        return v  # the type check that follows refuses it
    v = normalize_prompt(v)
    if len(v) > MAX_PROMPT_CHARS:
        raise ProtocolError(
            ErrorCode.PROMPT_TOO_LONG,
            f"{name} is {len(v)} characters; the limit is {MAX_PROMPT_CHARS}",
            field=name,
        )
    return v


MAX_JSON_DEPTH = 16  # a job is a flat object; anything nested deeper is an attack, not a job
MAX_JSON_NUMBER_CHARS = 40  # longer than any float or int a field accepts
_JSON_STRINGS = re.compile(rb'"(?:[^"\\]|\\.)*"')
_JSON_BRACKETS = re.compile(rb"[\[\]{}]")


def load_json(raw: bytes, max_depth: int = MAX_JSON_DEPTH) -> Any:
    """Decode a JSON body, refusing what would exhaust the decoder: deep nesting, huge or non-finite
    numbers, lone surrogates. Every refusal is a `bad_request` ProtocolError."""
    depth = json_depth(raw)
    if depth > max_depth:
        raise ProtocolError(
            ErrorCode.BAD_REQUEST, f"the JSON is nested {depth} deep; the limit is {max_depth}"
        )
    try:
        return json.loads(raw, parse_int=_json_int, parse_float=_json_float, parse_constant=_json_constant)
    except ProtocolError:
        raise
    except (ValueError, UnicodeDecodeError, RecursionError) as exc:
        raise ProtocolError(ErrorCode.BAD_REQUEST, f"not valid JSON: {str(exc)[:200]}") from None


def json_depth(raw: bytes) -> int:
    """How deeply arrays and objects nest in a JSON text, brackets inside strings not counted.

    A linear scan with no recursion, run before the (recursive) decoder ever sees the text.
    """
    depth = deepest = 0
    for match in _JSON_BRACKETS.finditer(_JSON_STRINGS.sub(b'""', raw)):
        depth += 1 if match[0] in b"[{" else -1
        deepest = max(deepest, depth)
    return deepest


def _json_int(text: str) -> int:
    if len(text) > MAX_JSON_NUMBER_CHARS:
        raise ProtocolError(ErrorCode.BAD_REQUEST, f"a number of {len(text)} digits; the limit is {MAX_JSON_NUMBER_CHARS}")  # fmt: skip
    return int(text)


def _json_float(text: str) -> float:
    value = float(_json_int(text) if len(text) > MAX_JSON_NUMBER_CHARS else text)
    if not math.isfinite(value):
        raise ProtocolError(ErrorCode.BAD_REQUEST, f"the number {text[:20]} is out of range")
    return value


def _json_constant(name: str) -> float:
    raise ProtocolError(ErrorCode.BAD_REQUEST, f"{name} is not a JSON number")


def parse_job_request(data: Any) -> JobRequest:
    """Validate a decoded JSON body into a JobRequest, turning every failure into a ProtocolError."""
    if not isinstance(data, dict):
        raise ProtocolError(ErrorCode.BAD_REQUEST, "the job must be a JSON object")
    try:
        return JobRequest.model_validate(data)
    except ProtocolError:
        raise
    except ValidationError as exc:
        raise _from_validation_error(exc) from None


def _from_validation_error(exc: ValidationError) -> ProtocolError:
    err = exc.errors(include_url=False)[0]
    loc = ".".join(str(p) for p in err["loc"]) or None
    ctx_error = (err.get("ctx") or {}).get("error")
    if isinstance(ctx_error, ProtocolError):
        return ctx_error
    if err["type"] == "extra_forbidden":
        return ProtocolError(ErrorCode.UNKNOWN_FIELD, f"unknown field {loc!r}", field=loc)
    if err["type"] == "missing":
        return ProtocolError(ErrorCode.INVALID_FIELD, f"field {loc!r} is required", field=loc)
    return ProtocolError(ErrorCode.INVALID_FIELD, f"{loc}: {err['msg']}", field=loc)


class JobInfo(BaseModel):
    """A job's state as the worker reports it (`GET /v1/jobs/{id}` and the submit response)."""

    id: WorkerJobId
    idempotency_key: str
    user: str
    lane: Lane
    kind: JobKind
    status: JobStatus
    position: int | None = None  # 0-based place in the fair order while queued
    step: int = 0
    total_steps: int = 0
    seed: int
    width: int
    height: int
    steps: int
    guidance: float
    count: int
    model: str
    images: int = 0  # how many images are ready to fetch
    nsfw: list[bool] = Field(default_factory=list)
    eta_s: float | None = None
    error: ErrorBody | None = None
    created_at: float
    started_at: float | None = None
    finished_at: float | None = None


class EventType(StrEnum):
    QUEUED = "queued"
    POSITION = "position"
    STARTED = "started"
    PROGRESS = "progress"
    PREVIEW = "preview"
    DONE = "done"
    FAILED = "failed"
    CANCELLED = "cancelled"


class JobEvent(BaseModel):
    """One line of `GET /v1/jobs/{id}/events` (NDJSON). Preview bytes are fetched from `/preview`."""

    type: EventType
    job_id: WorkerJobId
    seq: int
    position: int | None = None
    step: int | None = None
    total: int | None = None
    eta_s: float | None = None
    error: ErrorBody | None = None
    job: JobInfo | None = None  # the full state, on done/failed/cancelled


class LaneStats(BaseModel):
    queued: int
    users: int


class ReplicaStats(BaseModel):
    """One model replica behind a scaled-out ingress (Ray Serve): its load and throughput."""

    id: str
    alive: bool = True
    in_flight: int  # batches it is running now
    batches: int
    images: int
    busy_seconds: float
    images_per_s_1m: float
    failures: int = 0


class WorkerStats(BaseModel):
    model: str
    device: str
    lanes: dict[Lane, LaneStats]
    running: int  # jobs in the batch in flight
    batch_size: int  # images in the batch in flight
    images_per_s_1m: float
    jobs_done: int
    jobs_failed: int
    device_memory_bytes: int | None = None
    device_memory_total_bytes: int | None = None
    accepting: bool = True
    replicas: list[ReplicaStats] = Field(default_factory=list)  # empty on a standalone worker


class WorkerInfo(BaseModel):
    """What a worker serves (`GET /v1/info`): its model, and the defaults that unset job fields take.

    A bot that talks to a separately started worker plans sizes and prices steps from these, so it need
    not be told by hand what the worker's model draws best.
    """

    model: str
    defaults: ModelDefaults
    has_edit_model: bool  # edit jobs run on an instruction-editing pipeline, not img2img on the main weights
    can_inpaint: bool = False  # inpaint jobs (zoom out, pan, vary region) run; False from older workers
    # Every text-to-image model a job may name in `model`, the main one first, with its defaults; empty
    # from a worker older than the field (then only `model` is served).
    models: dict[str, ModelDefaults] = Field(default_factory=dict)
    # Each served model's upscaler factor (2 or 4); a model missing here has none (a worker older than
    # the field: the bot assumes 2).
    upscale_scales: dict[str, int] = Field(default_factory=dict)
