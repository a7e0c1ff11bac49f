"""Upscale jobs on the real worker: the bundled super-resolution models (2x, 4x) over HTTP, tiling, the
creative img2img pass, and the specific errors a bad upscale request gets.

The quality bar is the one the model card states: on procedural scenes drawn at twice (four times) the input
size and downscaled by area, the upscaled picture is nearer the reference than bicubic, by at least 1.5 dB
PSNR, on a held-out set (tools/tiny/train_sr.py's TEST_SEED: never drawn in training, nor used to pick
the checkpoint).
"""

from __future__ import annotations

import asyncio
import sys
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from aiohttp.test_utils import TestClient
from PIL import Image
from pytest_aiohttp import AiohttpClient

from inference.engine import DiffusersEngine
from inference.engine_api import Engine, EngineWrapper, KindDefaults, StepUpdate
from inference.protocol import WorkerInfo
from inference.server import create_app
from inference.settings import EngineSettings, UpscalerSettings, WorkerSettings
from inference.superres import TileSettings, UpscalerError, bundled_upscaler, load_upscaler, to_tensor
from inference.vocabulary import JobKind
from tests.inference.items import make_item, progress
from tests.inference.test_server import AUTH, TOKEN, fetch_png, post_image_job, wait
from tools.tiny.train_sr import TEST_SEED, bicubic, eval_pairs, psnr
from tools.tiny.train_sr import to_png as png

Client = TestClient[Any, Any]
MIN_GAIN_DB = 1.5
SCENES = 8  # of the held-out set: enough for a stable mean, seconds on a CPU


@pytest.fixture(scope="module")
def engines() -> dict[int, DiffusersEngine]:
    """The bundled model as a fresh install runs it, with its 2x upscaler, and again with the 4x one."""
    base = EngineSettings(device="cpu", cpu_threads=1)
    x4 = base.model_copy(update={"upscaler": UpscalerSettings(scale=4, tile=48, tile_overlap=8)})
    return (
        {2: DiffusersEngine.load(base)}
        if not bundled_upscaler(4).is_file()
        else {2: DiffusersEngine.load(base), 4: DiffusersEngine.load(x4)}
    )


MakeClient = Callable[..., Awaitable[Client]]


@pytest.fixture
def make_client(aiohttp_client: AiohttpClient, engines: dict[int, DiffusersEngine]) -> MakeClient:
    async def go(engine: Engine | None = None, **settings: Any) -> Client:
        settings.setdefault("token", TOKEN)
        app = create_app(WorkerSettings.model_validate(settings), engine or engines[2])
        return await aiohttp_client(app, headers=AUTH)

    return go


async def upscale_all(client: Client, inputs: list[np.ndarray], **fields: Any) -> list[np.ndarray]:
    """Submit every input at once (so the worker batches them), wait, and fetch each output's pixels."""
    responses = [
        await post_image_job(client, png(x), kind="upscale", width=None, height=None, steps=None, **fields)
        for x in inputs
    ]
    ids = []
    for resp in responses:
        assert resp.status == 201, await resp.text()
        ids.append((await resp.json())["id"])
    finals = await asyncio.gather(*[wait(client, i) for i in ids])
    assert all(f.status == "succeeded" for f in finals), [f.error for f in finals]
    return [np.asarray((await fetch_png(client, i, 0)).convert("RGB")) for i in ids]


@pytest.mark.parametrize("scale", [2, 4])
async def test_upscale_beats_bicubic_on_held_out_scenes(
    make_client: MakeClient, engines: dict[int, DiffusersEngine], scale: int
) -> None:
    client = await make_client(engines[scale], max_upscale_pixels=512 * 512)
    pairs = eval_pairs(scale, count=SCENES, seed=TEST_SEED)
    outputs = await upscale_all(client, [small for small, _ in pairs])
    for out, (small, ref) in zip(outputs, pairs, strict=True):
        assert out.shape == ref.shape == (small.shape[0] * scale, small.shape[1] * scale, 3)
    ours = np.mean([psnr(out, ref) for out, (_, ref) in zip(outputs, pairs, strict=True)])
    theirs = np.mean([psnr(bicubic(small, scale), ref) for small, ref in pairs])
    assert ours - theirs >= MIN_GAIN_DB, (ours, theirs)


async def test_worker_advertises_each_models_upscale_factor(
    make_client: MakeClient, engines: dict[int, DiffusersEngine]
) -> None:
    for scale, engine in engines.items():
        client = await make_client(engine)
        info = WorkerInfo.model_validate(await (await client.get("/v1/info")).json())
        assert info.upscale_scales == {info.model: scale}


async def test_creative_upscale_redraws_the_upscaled_picture(make_client: MakeClient) -> None:
    client = await make_client(max_upscale_pixels=512 * 512)
    small, _ = eval_pairs(2, count=1)[0]
    # The picture's own prompt, as a creative upscale of a generation carries (the scene of eval_pairs'
    # first pair); a prompt for another picture would pull a redraw as far as the model follows prompts.
    prompt = {"prompt": "a small purple triangle in the centre of a brown background", "seed": 7}
    [subtle] = await upscale_all(client, [small], **prompt)
    resp = await post_image_job(
        client, png(small), kind="upscale", width=None, height=None, steps=None, creative=True, **prompt
    )
    assert resp.status == 201, await resp.text()
    job = (await resp.json())["id"]
    final = await wait(client, job)
    assert final.status == "succeeded", final.error
    image = await fetch_png(client, job, 0)
    creative = np.asarray(image.convert("RGB"))
    assert creative.shape == subtle.shape == (128, 128, 3)
    # The img2img pass ran (its strength is in the picture's metadata) and changed the picture, lightly.
    assert image.info["kind"] == "upscale" and image.info["strength"] == "0.3"
    assert "Compact 2x" in image.info["upscaler"]
    distance = np.abs(creative.astype(int) - subtle.astype(int)).mean()
    assert 1.0 < distance < 40.0, distance


@pytest.mark.parametrize(
    ("fields", "image_side", "code"),
    [
        ({}, 400, "bad_size"),  # 800x800 out is over the worker's 512x512 pixels
        ({"width": 64, "height": 64}, 64, "bad_size"),  # an upscale of 64 by 2 is 128, not 64
        ({"count": 2}, 64, "invalid_field"),
        ({"strength": 0.5}, 64, "invalid_field"),  # strength without creative
        ({"creative": True}, 61, "bad_size"),  # 122 is no multiple of 8 for the img2img pass
    ],
)
async def test_bad_upscale_requests_get_their_specific_error(
    make_client: MakeClient, fields: dict[str, Any], image_side: int, code: str
) -> None:
    client = await make_client(max_upscale_pixels=512 * 512)
    image = png(np.full((image_side, image_side, 3), 200, np.uint8))
    job = {"kind": "upscale", "width": None, "height": None, "steps": None, **fields}
    resp = await post_image_job(client, image, **job)
    assert resp.status == 400
    assert (await resp.json())["code"] == code


async def test_creative_on_another_kind_and_upscale_without_image_are_refused(
    make_client: MakeClient,
) -> None:
    client = await make_client()
    resp = await client.post(
        "/v1/jobs", json={"idempotency_key": "c1", "user": "a", "prompt": "x", "creative": True}
    )
    assert (await resp.json())["code"] == "invalid_field"
    resp = await client.post(
        "/v1/jobs", json={"idempotency_key": "c2", "user": "a", "prompt": "x", "kind": "upscale"}
    )
    assert (await resp.json())["code"] == "image_required"


class NoUpscaler(EngineWrapper):
    """A double for an engine whose model has no upscaler (every real engine loads one)."""

    def defaults(self, kind: JobKind, model: str | None = None) -> KindDefaults:
        d = self.inner.defaults(kind, model)
        return KindDefaults(d.steps, d.guidance, d.width, d.height)


async def test_a_model_without_upscaler_refuses_upscales(
    make_client: MakeClient, engines: dict[int, DiffusersEngine]
) -> None:
    client = await make_client(NoUpscaler(engines[2]))
    resp = await post_image_job(
        client, png(np.zeros((64, 64, 3), np.uint8)), kind="upscale", width=None, height=None
    )
    assert resp.status == 400 and (await resp.json())["code"] == "upscale_unavailable"


def test_tiles_join_without_seams() -> None:
    """Small tiles whose overlap covers the network's reach (10 convolutions: 10 pixels) give the picture
    one whole-image pass gives, to float rounding: no seams."""
    upscaler = load_upscaler(bundled_upscaler(2))
    small, _ = eval_pairs(2, count=1, side=72)[0]
    batch = to_tensor(np.stack([small, small[::-1].copy()]))
    whole = upscaler.upscale(batch, TileSettings(tile=1024, overlap=12))
    tiled = upscaler.upscale(batch, TileSettings(tile=20, overlap=12, batch=3))
    assert whole.shape == tiled.shape == (2, 3, 144, 144)
    assert torch.max(torch.abs(whole - tiled)).item() * 255 < 0.01


def test_loading_refuses_what_is_not_an_upscaler(tmp_path: Path) -> None:
    with pytest.raises(UpscalerError, match="not found"):
        load_upscaler(tmp_path / "missing.pth")
    junk = tmp_path / "junk.pth"
    junk.write_bytes(b"not a model")
    with pytest.raises(UpscalerError, match="not a model spandrel can read"):
        load_upscaler(junk)
    settings = EngineSettings(device="cpu", upscaler=UpscalerSettings(path=bundled_upscaler(2), scale=4))
    from inference.superres import UpscaleStage

    with pytest.raises(UpscalerError, match="upscales by 2, not by the configured 4"):
        UpscaleStage.load(settings.upscaler, torch.device("cpu"), torch.float32)


def test_without_spandrel_the_bundled_upscaler_is_absent_but_a_named_one_is_an_error(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A worker installed without the `upscale` extra runs (and refuses upscales); one told to load a
    model file it cannot read does not start."""
    from inference.superres import UpscaleStage

    monkeypatch.setitem(sys.modules, "spandrel", None)  # import spandrel: ModuleNotFoundError
    cpu, f32 = torch.device("cpu"), torch.float32
    assert UpscaleStage.load_or_none(UpscalerSettings(), cpu, f32) is None
    with pytest.raises(ModuleNotFoundError):
        UpscaleStage.load_or_none(UpscalerSettings(path=bundled_upscaler(2)), cpu, f32)


@pytest.mark.parametrize("creative", [False, True])
def test_an_upscale_batch_frees_the_device_before_its_pictures_are_packaged(
    engines: dict[int, DiffusersEngine], creative: bool
) -> None:
    """Like every batch, an upscale says `device_free` once, last, after the upscaler (and the redraw) ran:
    the scheduler starts the next batch while these pictures are converted and encoded."""
    small, _ = eval_pairs(2, count=1)[0]
    prompt = "a small purple triangle in the centre of a brown background"
    items = [
        make_item(f"up-{i}", 7 + i, prompt=prompt, kind=JobKind.UPSCALE, image=Image.fromarray(small),
                  creative=creative, steps=4, size=(128, 128))
        for i in range(2)
    ]  # fmt: skip
    updates: list[StepUpdate] = []
    results = engines[2].run_batch(items, updates.append, lambda: False)
    assert [len(r) for r in results] == [1, 1]
    steps = progress(results, updates)
    # The upscaler is one step; a creative redraw reports its own steps first.
    assert bool(steps) is creative and updates[-1].step == updates[-1].total
