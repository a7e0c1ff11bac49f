"""Inpaint jobs below the bot: the canvas geometry and blend, the wire model's checks, and which model
families inpaint (a tiny SD pipeline with random weights does, through AutoPipelineForInpainting.from_pipe;
the LCM pipeline has no inpainting class and is refused before anything is queued)."""

from __future__ import annotations

import io

import numpy as np
import pytest
from PIL import Image

from inference import canvas
from inference.engine import DiffusersEngine
from inference.engine_api import BatchItem
from inference.images import EncodedImage, ImageLimits
from inference.intake import _check_inputs, inpaint_size
from inference.protocol import ErrorCode, InpaintSpec, JobRequest, ProtocolError, parse_job_request
from inference.settings import EngineSettings, ModelDefaults
from inference.vocabulary import JobKind, WorkerJobId
from tests.inference.family_models import build_pipeline


def test_canvas_sizes_and_placements() -> None:
    assert canvas.canvas_size("zoom", 64, 64, zoom=2.0) == (128, 128)
    assert canvas.canvas_size("zoom", 64, 64, zoom=1.5) == (96, 96)
    assert canvas.canvas_size("pan", 64, 64, direction="left") == (96, 64)
    assert canvas.canvas_size("pan", 64, 64, direction="down") == (64, 96)
    assert canvas.canvas_size("region", 64, 48) == (64, 48)
    # Shrunk to the pixel cap on multiples of 8, never over it.
    w, h = canvas.canvas_size("zoom", 1024, 1024, zoom=2.0, max_pixels=1024 * 1024)
    assert (w, h) == (1024, 1024) and w * h <= 1024 * 1024
    assert canvas.placement("zoom", (128, 128), zoom=2.0) == (32, 32, 64, 64)
    assert canvas.placement("pan", (96, 64), direction="left") == (32, 0, 64, 64)
    assert canvas.placement("pan", (96, 64), direction="right") == (0, 0, 64, 64)
    assert canvas.placement("pan", (64, 96), direction="up") == (0, 32, 64, 64)
    assert canvas.paint_size((128, 128), (64, 64), 16) == (64, 64)
    assert canvas.paint_size((96, 64), (64, 64), 16) == (80, 48)


def test_region_blend_keeps_the_original_beyond_the_soft_edge() -> None:
    mask = canvas.cells_mask((4,), 60, 60)  # the centre cell: 20..40
    assert mask[20:40, 20:40].all() and mask.sum() == 400
    weight = canvas.blend_weight(mask, 3, inside=False)
    assert (weight[mask] == 1).all()
    assert weight[17, 30] > 0 and weight[16, 30] == 0  # 3 pixels of soft edge outside the cell
    rng = np.random.default_rng(0)
    original = rng.integers(0, 256, (60, 60, 3), dtype=np.uint8)
    painted = rng.integers(0, 256, (60, 60, 3), dtype=np.uint8)
    out = canvas.composite(original, painted, weight)
    assert (out[weight == 0] == original[weight == 0]).all()
    assert (out[mask] == painted[mask]).all()


def test_zoom_blend_stays_inside_the_new_area() -> None:
    box = canvas.placement("zoom", (40, 40), zoom=2.0)
    mask = canvas.outside_mask((40, 40), box)
    weight = canvas.blend_weight(mask, 2, inside=True)
    assert (weight[~mask] == 0).all()  # the original, whole
    assert weight[0, 0] == 1 and 0 < weight[9, 20] < 1  # a soft edge just outside the picture


@pytest.mark.parametrize(
    ("spec", "field"),
    [
        ({"op": "zoom", "cells": [1]}, "inpaint"),
        ({"op": "region", "cells": [1, 1]}, "inpaint"),
        ({"op": "region", "cells": [9]}, "inpaint"),
        ({"op": "pan"}, "inpaint"),
    ],
)
def test_bad_inpaint_specs_are_refused_with_a_code(spec: dict[str, object], field: str) -> None:
    body = {"idempotency_key": "k", "user": "u", "kind": "inpaint", "prompt": "a cat", "inpaint": spec}
    with pytest.raises(ProtocolError) as caught:
        parse_job_request(body)
    assert caught.value.code is ErrorCode.INVALID_FIELD and caught.value.field == field


def test_inpaint_spec_goes_with_inpaint_jobs_only() -> None:
    with pytest.raises(ProtocolError):
        parse_job_request({"idempotency_key": "k", "user": "u", "kind": "inpaint", "prompt": "a cat"})
    with pytest.raises(ProtocolError):
        parse_job_request(
            {
                "idempotency_key": "k",
                "user": "u",
                "kind": "img2img",
                "prompt": "a",
                "inpaint": {"op": "zoom", "zoom": 2},
            }
        )


def _png(size: tuple[int, int]) -> EncodedImage:
    buf = io.BytesIO()
    rng = np.random.default_rng(1)
    Image.fromarray(rng.integers(0, 256, (size[1], size[0], 3), dtype=np.uint8)).save(buf, "PNG")
    return EncodedImage.check(buf.getvalue(), ImageLimits(max_bytes=10**6, max_pixels=10**6))


def _engine(name: str) -> DiffusersEngine:
    settings = EngineSettings(
        device="cpu", cpu_threads=1, defaults=ModelDefaults(steps=2, guidance=5.0, width=64, height=64)
    )
    return DiffusersEngine.from_pipeline(settings, build_pipeline(name), model_name=name)


def test_a_family_without_inpainting_is_refused_before_queueing() -> None:
    engine = _engine("lcm")
    assert not engine.can_inpaint
    request = JobRequest(
        idempotency_key="k",
        user="u",
        kind=JobKind.INPAINT,
        prompt="a cat",
        inpaint=InpaintSpec(op="zoom", zoom=2.0),
    )
    with pytest.raises(ProtocolError) as caught:
        _check_inputs(request, b"png", engine)
    assert caught.value.code is ErrorCode.INPAINT_UNAVAILABLE
    assert "no inpainting pipeline" in caught.value.message


def test_sd_zooms_out_on_its_own_weights_keeping_the_centre_exactly() -> None:
    engine = _engine("sd1")
    assert engine.can_inpaint
    spec = InpaintSpec(op="zoom", zoom=2.0)
    request = JobRequest(idempotency_key="k", user="u", kind=JobKind.INPAINT, prompt="a cat", inpaint=spec)
    source = _png((64, 64))
    width, height = inpaint_size(spec, 64, 64, 256 * 256)
    item = BatchItem(
        request=request, seed=3, width=width, height=height, steps=2, guidance=5.0, init_image=source,
        job_id=WorkerJobId("j"),
    )  # fmt: skip
    (result,) = engine.run_batch([item], lambda _u: None, lambda: False)[0]
    assert result.pixels.shape == (128, 128, 3)
    original = np.asarray(source.decode())
    assert (result.pixels[32:96, 32:96] == original).all()
    assert result.meta["kind"] == "inpaint" and result.meta["inpaint"] == '{"op":"zoom","zoom":2.0}'
