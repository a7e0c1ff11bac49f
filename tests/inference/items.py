"""Building engine batch items in tests: one request, one seed, the sampling settings spelled out."""

from __future__ import annotations

import io

from PIL import Image, PngImagePlugin

from inference.engine_api import BatchItem, GeneratedImage, StepUpdate
from inference.images import EncodedImage
from inference.protocol import JobRequest
from inference.vocabulary import JobKind, WorkerJobId


def make_item(
    job_id: str,
    seed: int,
    *,
    prompt: str = "a red circle on a blue background",
    negative_prompt: str = "",
    count: int = 1,
    kind: JobKind = JobKind.GENERATE,
    image: Image.Image | None = None,
    strength: float | None = None,
    adapter: str | None = None,
    adapter_scale: float = 1.0,
    steps: int = 4,
    guidance: float = 5.0,
    size: tuple[int, int] = (64, 64),
    creative: bool = False,
) -> BatchItem:
    request = JobRequest(
        idempotency_key=job_id,
        user="ana",
        prompt=prompt,
        negative_prompt=negative_prompt,
        count=count,
        kind=kind,
        strength=strength,
        adapter=adapter,
        adapter_scale=adapter_scale,
        creative=creative,
    )
    return BatchItem(
        job_id=WorkerJobId(job_id),
        request=request,
        seed=seed,
        width=size[0],
        height=size[1],
        steps=steps,
        guidance=guidance,
        init_image=EncodedImage.of(image) if image is not None else None,
    )


def open_png(image: GeneratedImage) -> PngImagePlugin.PngImageFile:
    """The result's PNG, whose `text` holds the metadata the engine wrote."""
    png = Image.open(io.BytesIO(image.png))
    assert isinstance(png, PngImagePlugin.PngImageFile), f"a result is a PNG, not {png.format}"
    return png


def progress(results: list[list[GeneratedImage]], updates: list[StepUpdate]) -> list[StepUpdate]:
    """An engine call's step updates without its one `device_free` signal, checked on the way: it comes
    exactly once, last, when the call made pictures (never for a stopped or empty batch)."""
    freed = [u for u in updates if u.device_free]
    made = any(results)
    assert freed == ([updates[-1]] if made else []), updates
    return [u for u in updates if not u.device_free]
