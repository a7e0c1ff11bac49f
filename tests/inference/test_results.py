"""What the worker keeps of finished jobs: the result budget, its eviction order, and the output formats."""

from __future__ import annotations

import io

import numpy as np
import pytest
from PIL import Image

from inference.output import OUTPUT_FORMATS, OutputSettings, ServedImage, encode, pool_size, read_xmp
from inference.results import ResultStore
from inference.settings import OutputFormat, WorkerSettings
from inference.vocabulary import WorkerJobId

META = {"prompt": "un phare au coucher du soleil, «huile» & <ombres>", "seed": "7", "model": "m"}


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def served(size: int) -> ServedImage:
    return ServedImage(b"x" * size, "image/png")


def job_id(n: int) -> WorkerJobId:
    return WorkerJobId(f"job{n}")


def test_the_budget_holds_whatever_is_put_in_oldest_unfetched_dropped_first() -> None:
    store = ResultStore(budget_bytes=1000, grace_s=60, monotonic=Clock())
    for n in range(50):
        store.put(job_id(n), [served(100), served(100)])
        assert store.bytes <= 1000
    assert store.bytes == 1000 and len(store) == 10
    assert [n for n in range(50) if job_id(n) in store] == list(range(45, 50))  # the newest five jobs
    assert store.dropped_unfetched == 90
    assert store.get(job_id(0), 0) is None  # answered `gone` by the scheduler


def test_fetched_pictures_go_first_under_pressure_and_after_their_grace() -> None:
    clock = Clock()
    store = ResultStore(budget_bytes=300, grace_s=10, monotonic=clock)
    store.put(job_id(1), [served(100)])
    store.put(job_id(2), [served(100)])
    store.put(job_id(3), [served(100)])
    assert store.get(job_id(3), 0) is not None  # the newest, fetched: first to go when room is needed
    store.put(job_id(4), [served(100)])
    assert [n for n in (1, 2, 3, 4) if job_id(n) in store] == [1, 2, 4]
    assert store.dropped_unfetched == 0
    first = store.get(job_id(1), 0)
    clock.now = 9.9
    assert store.get(job_id(1), 0) == first  # a retry within the grace finds it
    clock.now = 10.0
    store.expire()
    assert job_id(1) not in store and store.bytes == 200


def test_a_job_is_dropped_whole_with_its_pictures() -> None:
    store = ResultStore(budget_bytes=10_000, grace_s=0, monotonic=Clock())
    store.put(job_id(1), [served(100), served(200)])
    store.drop(job_id(1))
    assert store.bytes == 0 and len(store) == 0
    store.drop(job_id(1))  # twice is harmless


def picture() -> np.ndarray:
    y, x = np.mgrid[0:96, 0:128]
    return np.stack([x * 2, y * 2, (x + y) % 256], axis=-1).astype(np.uint8)


@pytest.mark.parametrize("fmt", OUTPUT_FORMATS)
def test_every_format_keeps_the_metadata_and_the_size(fmt: OutputFormat) -> None:
    data = encode(picture(), META, OutputSettings().with_format(fmt))
    with Image.open(io.BytesIO(data)) as img:
        assert img.size == (128, 96)
        assert img.format == {"png": "PNG", "webp": "WEBP", "webp-lossless": "WEBP", "jpeg": "JPEG"}[fmt]
        text = dict(img.text) if fmt is OutputFormat.PNG else read_xmp(data)  # type: ignore[attr-defined]
        lossless = fmt in (OutputFormat.PNG, OutputFormat.WEBP_LOSSLESS)
        if lossless:
            assert np.array_equal(np.asarray(img.convert("RGB")), picture())
    assert text == META


def test_a_lossy_format_is_much_smaller_and_close() -> None:
    png = encode(picture(), META, OutputSettings())
    webp = encode(picture(), META, OutputSettings(webp_quality=90).with_format("webp"))
    assert len(webp) < len(png) / 3
    back = np.asarray(Image.open(io.BytesIO(webp)).convert("RGB"), dtype=np.int16)
    assert np.abs(back - picture()).mean() < 4


def test_the_worker_settings_choose_the_default_and_a_job_may_choose_another() -> None:
    settings = OutputSettings.of(WorkerSettings(output_format="jpeg", jpeg_quality=80))
    assert settings.format is OutputFormat.JPEG and settings.media_type == "image/jpeg"
    assert settings.with_format(None) is settings
    assert settings.with_format("png").media_type == "image/png"


def test_the_encoder_pool_is_sized_from_the_machine() -> None:
    assert pool_size(3) == 3
    assert pool_size() >= 1
