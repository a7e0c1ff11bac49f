"""Ray test fixtures: a local Ray cluster per test module running the brushfire app on 2 tiny replicas.

The app is the real one (`inference.ray_app.build_app`): an ingress serving the `/v1` RPC on its own
port and two CPU replicas of the tiny model with half a CPU each. `RayEngine` over the same replicas lets
a test run the worker's app in-process against them. Ray is imported only when a fixture needs it, so
modules that merely import these fixtures still run without the `ray` extra (the Ray cases skip).
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import pytest

from inference.engine_api import Engine
from inference.settings import EngineSettings, ModelDefaults, WorkerSettings

if TYPE_CHECKING:
    from inference.ray_app import RayEngine

REPLICAS = 2
RAY_TOKEN = "ray-s3cret"


@dataclass(frozen=True, slots=True)
class RayApp:
    """The deployed application: the ingress's base URL and an in-process engine over its replicas."""

    url: str
    engine: RayEngine


def tiny_replica_settings(model_dir: Path, edit_model_dir: Path) -> EngineSettings:
    """The same tiny engine settings as the standalone worker's tests: 2 steps, no guidance, one thread."""
    return EngineSettings(
        model=str(model_dir),
        edit_model=str(edit_model_dir),
        device="cpu",
        cpu_threads=1,
        defaults=ModelDefaults(steps=2, guidance=0.0, width=64, height=64, img2img_strength=0.75),
    )


@contextmanager
def ray_cluster_app(model_dir: Path, edit_model_dir: Path) -> Iterator[RayApp]:
    """A local 2-CPU Ray cluster with the app deployed on 2 tiny replicas; torn down at exit."""
    pytest.importorskip("ray", reason="the optional `ray` extra is not installed")
    from ray import serve

    from inference.ray_app import APP_NAME, MODEL_NAME, RayEngine, RayScaleSettings, connect_cluster, deploy

    connect_cluster(None, num_cpus=2)
    try:
        url = deploy(
            tiny_replica_settings(model_dir, edit_model_dir),
            WorkerSettings(port=0, token=RAY_TOKEN, progress_interval_s=0),
            RayScaleSettings.fixed(REPLICAS, num_gpus=0, num_cpus=0.5),
        )
        yield RayApp(url, RayEngine.connect_sync(serve.get_deployment_handle(MODEL_NAME, APP_NAME)))
    finally:
        import ray

        serve.shutdown()  # type: ignore[no-untyped-call]  # Ray leaves it untyped
        ray.shutdown()


@pytest.fixture(scope="module")
def ray_app(tiny_model_dir: Path, tiny_edit_model_dir: Path) -> Iterator[RayApp]:
    """The cluster and app for the whole test module."""
    with ray_cluster_app(tiny_model_dir, tiny_edit_model_dir) as app:
        yield app


@pytest.fixture(scope="module", params=["standalone", "ray"])
def tiny_engine_on_each_server(
    request: pytest.FixtureRequest, tiny_model_dir: Path, tiny_edit_model_dir: Path
) -> Iterator[Engine]:
    """The real tiny engine in-process, then the same engine code on 2 Ray Serve replicas.

    A test module that names this fixture `tiny_engine` runs every test once against the standalone
    worker and once against the Ray path (the worker's app over a `RayEngine`).
    """
    if request.param == "standalone":
        from inference.engine import DiffusersEngine

        yield DiffusersEngine.load(tiny_replica_settings(tiny_model_dir, tiny_edit_model_dir))
        return
    with ray_cluster_app(tiny_model_dir, tiny_edit_model_dir) as app:
        yield app.engine
