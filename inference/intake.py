"""Reading and checking a submitted job: its JSON or multipart body, its image, the worker's limits.

Plain functions over the scheduler's settings and engine, so that any ingress speaking the `/v1` RPC
(the aiohttp server, Ray Serve) checks a submission the same way.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import secrets

from aiohttp import BodyPartReader, web

from inference import canvas
from inference.engine_api import Engine
from inference.images import EncodedImage, ImageLimits
from inference.protocol import (
    MAX_COUNT,
    MAX_SEED,
    MAX_SIDE,
    MIN_SIDE,
    ErrorCode,
    InpaintSpec,
    JobRequest,
    ProtocolError,
    load_json,
    parse_job_request,
)
from inference.queue import Submission, job_fingerprint
from inference.settings import WorkerSettings
from inference.vocabulary import JobKind

MAX_JOB_JSON_BYTES = 64 * 1024


def read_job_json(raw: bytes) -> JobRequest:
    """Parse and validate a job's JSON body."""
    if len(raw) > MAX_JOB_JSON_BYTES:
        raise ProtocolError(ErrorCode.BAD_REQUEST, f"the job JSON is over {MAX_JOB_JSON_BYTES} bytes")
    return parse_job_request(load_json(raw))


async def prepare_submission(
    request: JobRequest,
    image: bytes | None,
    settings: WorkerSettings,
    engine: Engine,
    decode_slots: asyncio.Semaphore | None = None,
) -> Submission:
    """Check a job against the worker's limits and fill in the model's defaults.

    The input image is decoded in a thread (it may be megapixels) with the byte and pixel limits
    checked first, so decompression bombs are refused before they expand; `decode_slots` bounds how
    many are decoded at once. The job keeps the compressed bytes, not the pixels.
    """
    _check_inputs(request, image, engine)
    init = None
    if image is not None:
        limits = ImageLimits(max_bytes=settings.max_image_bytes, max_pixels=settings.max_image_pixels)
        async with decode_slots or contextlib.nullcontext():
            init = await asyncio.to_thread(EncodedImage.check, image, limits)
    d = engine.defaults(request.kind, request.model)
    steps, guidance, width, height = d.steps, d.guidance, d.width, d.height
    if request.kind is JobKind.UPSCALE:
        assert init is not None  # _check_inputs: an upscale has its image
        width, height = upscaled_size(request, init, d.scale, settings.max_upscale_pixels)
    else:
        width, height = _output_size(request, init, (width, height), settings.max_pixels)
    digest = hashlib.sha256(image).hexdigest() if image is not None else None
    return Submission(
        request=request,
        seed=request.seed if request.seed is not None else secrets.randbelow(MAX_SEED - MAX_COUNT),
        width=width,
        height=height,
        steps=request.steps or steps,
        guidance=request.guidance if request.guidance is not None else guidance,
        init_image=init,
        fingerprint=job_fingerprint(request, digest),
    )


def _check_inputs(request: JobRequest, image: bytes | None, engine: Engine) -> None:
    kind = request.kind
    if kind.needs_image and image is None:
        raise ProtocolError(ErrorCode.IMAGE_REQUIRED, f"a {kind} job needs an image part", field="image")
    if not kind.needs_image and image is not None:
        raise ProtocolError(ErrorCode.IMAGE_NOT_ALLOWED, "a generate job takes no image", field="image")
    served = engine.served_models
    if request.model is not None and request.model not in served:
        raise ProtocolError(
            ErrorCode.UNKNOWN_MODEL,
            f"unknown model {request.model[:80]!r}; this worker serves {', '.join(served)}",
            field="model",
        )
    if kind is JobKind.INPAINT and (request.model not in (None, engine.model_name) or not engine.can_inpaint):
        raise ProtocolError(
            ErrorCode.INPAINT_UNAVAILABLE,
            f"{request.model or engine.model_name} has no inpainting pipeline: zoom out, pan and vary region "
            "are not available on it",
            field="kind",
        )
    if request.adapter is not None and request.model not in (None, engine.model_name):
        raise ProtocolError(
            ErrorCode.UNKNOWN_ADAPTER, "adapters apply to the main model only", field="adapter"
        )
    if request.adapter is not None and request.adapter not in engine.adapter_names:
        raise ProtocolError(
            ErrorCode.UNKNOWN_ADAPTER,
            f"unknown adapter {request.adapter!r}; this worker has {engine.adapter_names or 'none'}",
            field="adapter",
        )


def _output_size(
    request: JobRequest, init: EncodedImage | None, default: tuple[int, int], max_pixels: int
) -> tuple[int, int]:
    """The requested size, else the input image's (fitted), else the model's; within `max_pixels`."""
    width, height = default
    if init is not None and request.inpaint is not None and request.width is None:
        return inpaint_size(request.inpaint, init.width, init.height, max_pixels)
    if init is not None and request.width is None and request.height is None:
        width, height = fit_size(init.width, init.height, max_pixels)
    width, height = request.width or width, request.height or height
    if width * height > max_pixels:
        raise ProtocolError(
            ErrorCode.BAD_SIZE,
            f"{width}x{height} is {width * height} pixels; this worker allows {max_pixels}",
            field="width",
        )
    return width, height


def upscaled_size(request: JobRequest, init: EncodedImage, scale: int, max_pixels: int) -> tuple[int, int]:
    """An upscale's output: the input's size times the model's upscaler factor, within `max_pixels`.

    A width and height in the request must be that size (the bot prices by them); a creative upscale is
    redrawn by a diffusion pipeline, which wants sides on multiples of 8.
    """
    if scale < 2:
        name = request.model or "the main model"
        raise ProtocolError(
            ErrorCode.UPSCALE_UNAVAILABLE, f"{name} has no upscaler on this worker", field="kind"
        )
    width, height = init.width * scale, init.height * scale
    if (request.width, request.height) not in ((None, None), (width, height)):
        raise ProtocolError(
            ErrorCode.BAD_SIZE,
            f"this worker upscales {init.width}x{init.height} by {scale} to {width}x{height}, "
            f"not {request.width}x{request.height}",
            field="width",
        )
    if width * height > max_pixels:
        raise ProtocolError(
            ErrorCode.BAD_SIZE,
            f"upscaling {init.width}x{init.height} by {scale} gives {width}x{height} = {width * height} pixels; "
            f"this worker allows {max_pixels}",
            field="image",
        )
    if request.creative and (width % 8 or height % 8):
        raise ProtocolError(
            ErrorCode.BAD_SIZE,
            f"a creative upscale needs sides on multiples of 8; {width}x{height} is not",
            field="image",
        )
    return width, height


def fit_size(width: int, height: int, max_pixels: int) -> tuple[int, int]:
    """An input image's size scaled down to `max_pixels`, on multiples of 8 within the side limits."""
    scale = min(1.0, (max_pixels / (width * height)) ** 0.5)

    def side(v: int) -> int:
        return min(max(int(v * scale) // 8 * 8, MIN_SIDE), MAX_SIDE)

    return side(width), side(height)


def inpaint_size(spec: InpaintSpec, width: int, height: int, max_pixels: int) -> tuple[int, int]:
    """An inpaint job's output: the canvas made from a `width` x `height` picture, within the limits."""
    return canvas.canvas_size(
        spec.op, width, height, zoom=spec.zoom or 2.0, direction=spec.direction or "right",
        max_pixels=max_pixels, max_side=MAX_SIDE,
    )  # fmt: skip


async def read_submission(request: web.Request, settings: WorkerSettings) -> tuple[JobRequest, bytes | None]:
    """Read POST /v1/jobs: a JSON body, or multipart with a `job` JSON part and a binary `image` part."""
    if request.content_type == "application/json":
        return read_job_json(await request.read()), None
    if request.content_type != "multipart/form-data":
        raise ProtocolError(
            ErrorCode.BAD_REQUEST,
            f"expected application/json or multipart/form-data, got {request.content_type}",
            status=415,
        )
    try:
        return await _read_multipart(request, settings)
    except ProtocolError:
        raise
    except (ValueError, LookupError, RuntimeError) as exc:  # aiohttp's multipart parser on a broken body
        raise ProtocolError(ErrorCode.BAD_REQUEST, f"malformed multipart body: {exc}") from None


async def _read_multipart(request: web.Request, settings: WorkerSettings) -> tuple[JobRequest, bytes | None]:
    job: JobRequest | None = None
    image: bytes | None = None
    reader = await request.multipart()
    while (part := await reader.next()) is not None:
        if not isinstance(part, BodyPartReader) or part.name not in ("job", "image"):
            raise ProtocolError(ErrorCode.BAD_REQUEST, "multipart parts must be `job` and `image`")
        if part.name == "job":
            job = read_job_json(await _read_part(part, MAX_JOB_JSON_BYTES, "job"))
        else:
            image = await _read_part(part, settings.max_image_bytes, "image")
    if job is None:
        raise ProtocolError(ErrorCode.BAD_REQUEST, "the multipart body has no `job` part", field="job")
    return job, image


async def _read_part(part: BodyPartReader, limit: int, name: str) -> bytes:
    # Chunks joined once at the end: a growing bytearray would over-allocate and then be copied again.
    chunks: list[bytes] = []
    size = 0
    while chunk := await part.read_chunk(256 * 1024):
        chunks.append(chunk)
        size += len(chunk)
        if size > limit:
            raise ProtocolError(
                ErrorCode.IMAGE_TOO_LARGE if name == "image" else ErrorCode.BAD_REQUEST,
                f"the {name} part is over {limit} bytes",
                status=413,
                field=name,
            )
    return b"".join(chunks)
