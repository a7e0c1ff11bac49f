"""Several models in one worker: `engine.extra_models` beside `engine.model`, each picked per job by name.

Two real pipelines on disk, no download: the session's tiny test pipeline as the main model and the
bundled trained model as the extra one. A job naming a model runs on that model's pipelines with its
defaults, and its pictures say which model drew them; an unknown model is refused before it queues.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest
from aiohttp.test_utils import TestClient
from PIL import Image
from pydantic import ValidationError
from pytest_aiohttp import AiohttpClient

from inference.engine_api import BatchKey, Engine
from inference.loading import BUNDLED_MODEL_ROOT
from inference.models import ModelSet, load_engine
from inference.protocol import JobRequest, WorkerInfo
from inference.server import create_app
from inference.settings import EngineSettings, ExtraModelSettings, ModelDefaults, WorkerSettings
from tests.inference.test_server import AUTH, TOKEN, fetch_png, post_job, wait

Client = TestClient[Any, Any]
MAIN = ModelDefaults(steps=2, guidance=0.0, width=64, height=64)
SHAPES = ModelDefaults(steps=3, guidance=5.0, width=96, height=64)


@pytest.fixture(scope="module")
def two_models(tiny_model_dir: Path) -> Engine:
    settings = EngineSettings(
        model=str(tiny_model_dir),
        device="cpu",
        cpu_threads=1,
        defaults=MAIN,
        extra_models=[
            ExtraModelSettings(name="shapes", model=str(BUNDLED_MODEL_ROOT / "generate"), defaults=SHAPES)
        ],
    )
    return load_engine(settings)


@pytest.fixture
async def client(aiohttp_client: AiohttpClient, two_models: Engine) -> Client:
    app = create_app(WorkerSettings(token=TOKEN, progress_interval_s=0), two_models)
    return await aiohttp_client(app, headers=AUTH)


def pixels(img: Image.Image) -> np.ndarray:
    return np.asarray(img.convert("RGB"), dtype=np.int16)


async def test_info_lists_every_served_model_with_its_defaults(
    client: Client, two_models: Engine, tiny_model_dir: Path
) -> None:
    assert isinstance(two_models, ModelSet)
    info = WorkerInfo.model_validate(await (await client.get("/v1/info")).json())
    assert info.model == str(tiny_model_dir) and info.defaults == MAIN
    assert info.models == {str(tiny_model_dir): MAIN, "shapes": SHAPES}
    assert list(info.models) == [str(tiny_model_dir), "shapes"]  # the main one first


async def test_a_job_runs_on_the_model_it_names(client: Client, tiny_model_dir: Path) -> None:
    # Unset fields take the named model's defaults; the picture's metadata names the model that drew it.
    shapes = await post_job(client, model="shapes", steps=None, width=None, height=None, guidance=None)
    assert (shapes.steps, shapes.guidance, shapes.width, shapes.height) == (3, 5.0, 96, 64)
    assert shapes.model == "shapes"
    main = await post_job(client, steps=None, width=None, height=None, guidance=None)
    assert (main.steps, main.guidance, main.width, main.height) == (2, 0.0, 64, 64)
    assert main.model == str(tiny_model_dir)
    await wait(client, shapes.id)
    await wait(client, main.id)
    drawn = await fetch_png(client, shapes.id, 0)
    assert drawn.size == (96, 64) and drawn.info["model"] == "shapes"
    assert (await fetch_png(client, main.id, 0)).info["model"] == str(tiny_model_dir)
    # One prompt, seed and size on each model: two different pipelines draw two different pictures.
    same = {"prompt": "a red circle", "seed": 11, "steps": 2, "guidance": 0.0, "width": 64, "height": 64}
    jobs = [await post_job(client, model=m, **same) for m in ("shapes", str(tiny_model_dir), None)]
    for job in jobs:
        await wait(client, job.id)
    on_shapes, named_main, unnamed = [pixels(await fetch_png(client, j.id, 0)) for j in jobs]
    assert np.abs(on_shapes - unnamed).mean() > 1.0
    assert np.array_equal(named_main, unnamed)  # naming the main model is leaving it out


@pytest.mark.parametrize(
    ("fields", "code", "message"),
    [
        ({"model": "nope"}, "unknown_model", "unknown model 'nope'; this worker serves"),
        ({"model": ""}, "invalid_field", "model"),
        ({"model": "shapes", "adapter": "style"}, "unknown_adapter", "adapters apply to the main model"),
    ],
)
async def test_a_model_the_worker_does_not_serve_is_refused(
    client: Client, fields: dict[str, Any], code: str, message: str
) -> None:
    resp = await client.post("/v1/jobs", json={"idempotency_key": "k1", "user": "u", "prompt": "x", **fields})
    assert resp.status == 400
    error = await resp.json()
    assert error["code"] == code and message in error["message"]


def test_jobs_for_different_models_never_share_a_batch() -> None:
    def key(model: str | None) -> BatchKey:
        request = JobRequest(idempotency_key="k", user="u", prompt="x", model=model)
        return BatchKey.of(request, width=64, height=64, steps=2, guidance=0.0, strength=None)

    assert key("shapes") != key(None)
    assert key("shapes") == key("shapes")


def test_model_names_must_differ(tiny_model_dir: Path) -> None:
    extra = {"name": "shapes", "model": "x"}
    with pytest.raises(ValidationError, match="given twice: shapes"):
        EngineSettings.model_validate({"extra_models": [extra, extra]})
    with pytest.raises(ValidationError, match="given twice: shapes"):
        EngineSettings.model_validate({"model": "shapes", "extra_models": [extra]})
    with pytest.raises(ValidationError, match="name"):
        ExtraModelSettings(name="has space", model="x")
