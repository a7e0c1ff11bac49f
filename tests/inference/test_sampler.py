"""A job's own sampler: the engine builds the named scheduler for that batch alone, then restores the
model's; a sampler of the wrong kind or an unknown one fails that batch with a clear error."""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from inference.engine import DiffusersEngine
from inference.engine_api import BatchItem, EngineError
from inference.protocol import JobRequest
from inference.settings import EngineSettings
from inference.vocabulary import WorkerJobId


@pytest.fixture(scope="module")
def engine(tiny_models: tuple[Path, Path], tmp_path_factory: pytest.TempPathFactory) -> DiffusersEngine:
    settings = EngineSettings(
        model=str(tiny_models[0]), device="cpu", cpu_threads=1, cache_dir=tmp_path_factory.mktemp("cache")
    )
    return DiffusersEngine.load(settings)


def item(sampler: str | None, n: int) -> BatchItem:
    request = JobRequest(idempotency_key=f"k{n}", user="u", prompt="a red circle", seed=5, sampler=sampler)
    return BatchItem(
        request=request, seed=5, width=64, height=64, steps=4, guidance=5.0, job_id=WorkerJobId(f"j{n}")
    )


def picture(engine: DiffusersEngine, it: BatchItem) -> np.ndarray:
    (images,) = engine.run_batch([it], lambda _u: None, lambda: False)
    return np.asarray(Image.open(io.BytesIO(images[0].png)).convert("RGB"), dtype=np.int16)


def test_a_jobs_sampler_changes_its_batch_only(engine: DiffusersEngine) -> None:
    own = type(engine._pipes.generate.scheduler).__name__
    first = picture(engine, item(None, 1))
    euler = picture(engine, item("EulerAncestralDiscreteScheduler", 2))
    assert np.abs(first - euler).mean() > 1.0  # another sampler draws another picture from one seed
    assert type(engine._pipes.generate.scheduler).__name__ == own  # restored after the batch
    assert np.array_equal(picture(engine, item(None, 3)), first)
    assert np.array_equal(picture(engine, item(own, 4)), first)  # naming the model's own is the same


def test_unknown_or_unfitting_samplers_fail_the_batch(engine: DiffusersEngine) -> None:
    with pytest.raises(EngineError, match="unknown sampler"):
        picture(engine, item("NoSuchScheduler", 5))
    with pytest.raises(EngineError, match="does not fit"):
        picture(engine, item("FlowMatchEulerDiscreteScheduler", 6))
    with pytest.raises(ValueError, match="sampler"):
        JobRequest(idempotency_key="k", user="u", prompt="x", sampler="os.system")
