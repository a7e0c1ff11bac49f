"""Ray test fixtures: one local Ray cluster per test module with the brushfire app on 2 tiny replicas.

The app is the real one (`inference.ray_app.build_app`): an ingress serving the `/v1` RPC on its own
port and two CPU replicas of the tiny model with half a CPU each. Tests that run the worker's app
in-process use `ray_engine`, a `RayEngine` over the same two replicas.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

ray = pytest.importorskip("ray", reason="the optional `ray` extra is not installed")
serve = pytest.importorskip("ray.serve")

from inference.ray_app import (  # noqa: E402 (after the skip: the module needs ray)
    APP_NAME,
    MODEL_NAME,
    RayEngine,
    RayScaleSettings,
    connect_cluster,
    deploy,
)
from inference.settings import EngineSettings, ModelDefaults, WorkerSettings  # noqa: E402

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


@pytest.fixture(scope="module")
def ray_app(tiny_model_dir: Path, tiny_edit_model_dir: Path) -> Iterator[RayApp]:
    """A local 2-CPU Ray cluster running the app with 2 tiny replicas, for the whole test module."""
    connect_cluster(None, num_cpus=2)
    try:
        url = deploy(
            tiny_replica_settings(tiny_model_dir, tiny_edit_model_dir),
            WorkerSettings(port=0, token=RAY_TOKEN, progress_interval_s=0),
            RayScaleSettings.fixed(REPLICAS, num_gpus=0, num_cpus=0.5),
        )
        engine = RayEngine.connect_sync(serve.get_deployment_handle(MODEL_NAME, APP_NAME))
        yield RayApp(url, engine)
    finally:
        serve.shutdown()
        ray.shutdown()
