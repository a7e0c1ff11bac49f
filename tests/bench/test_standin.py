"""The GPU-rate stand-in of bench/gpu_rate.py: its calibration table, and that it replaces only the model
call (a calibrated wait) while the real engine wraps it and encodes real-size, realistic pictures."""

from __future__ import annotations

import io
import time

import numpy as np
import pytest
from PIL import Image

from bench.standin import ARCH_FOR_SIZE, CALIBRATION, Calibration, picture, standin_pipeline
from inference.engine import DiffusersEngine
from inference.engine_api import StepUpdate
from inference.settings import EngineSettings, ModelDefaults
from tests.inference.items import make_item


def test_the_sd_turbo_row_is_issue_23s_h100_figure() -> None:
    sd = CALIBRATION["sd-turbo"]
    assert (sd.size, sd.steps) == (512, 1)
    assert sd.batch_s(16) == pytest.approx(0.100, abs=0.001)  # ~100 ms a batch of 16: ~160 images/s
    assert sd.images_per_s(16) == pytest.approx(160, rel=0.01)


@pytest.mark.parametrize("arch", sorted(CALIBRATION))
def test_batching_pays_and_every_row_names_its_source(arch: str) -> None:
    row = CALIBRATION[arch]
    per_image = [row.batch_s(b) / b for b in (1, 2, 4, 8, 16)]
    assert per_image == sorted(per_image, reverse=True)  # each larger batch is cheaper per picture
    assert all(row.batch_s(b) < row.batch_s(b + 1) for b in range(1, 16))  # and longer as a whole
    assert row.source
    assert ARCH_FOR_SIZE[row.size] == arch


def test_sdxl_turbo_at_1024_is_a_few_times_slower_per_image() -> None:
    ratio = CALIBRATION["sd-turbo"].images_per_s(16) / CALIBRATION["sdxl-turbo"].images_per_s(16)
    assert 2.5 <= ratio <= 8


def test_a_table_scales_to_a_rate_and_keeps_its_shape() -> None:
    sd = CALIBRATION["sd-turbo"]
    scaled = sd.scaled_to(100.0, 16)
    assert scaled.images_per_s(16) == pytest.approx(100.0)
    assert scaled.batch_s(1) / scaled.batch_s(16) == pytest.approx(sd.batch_s(1) / sd.batch_s(16))
    assert "scaled to 100 images/s" in scaled.source
    with pytest.raises(ValueError, match="positive"):
        sd.scaled_to(0, 16)
    with pytest.raises(ValueError, match="at least one image"):
        sd.batch_s(0)


def test_pictures_are_realistic_not_noise() -> None:
    pixels = (picture(np.random.default_rng(1), 128) * 255).round().astype(np.uint8)
    raw = pixels.size
    png = io.BytesIO()
    Image.fromarray(pixels).save(png, format="PNG")
    noise = io.BytesIO()
    Image.fromarray(np.random.default_rng(2).integers(0, 256, pixels.shape, dtype=np.uint8)).save(
        noise, format="PNG"
    )
    assert len(png.getvalue()) < 0.8 * len(noise.getvalue())  # white noise does not compress; this does
    assert len(png.getvalue()) > 0.1 * raw  # and it is not a flat picture either: texture costs bytes
    assert pixels.std() > 10


def test_the_real_engine_wraps_the_stand_in_and_waits_the_calibrated_time() -> None:
    calibration = Calibration("test", 64, 2, fixed_s=0.05, per_image_s=0.02, source="test")
    pipe = standin_pipeline(calibration, pool=3)
    defaults = ModelDefaults(steps=2, guidance=0.0, width=64, height=64)
    engine = DiffusersEngine.from_pipeline(
        EngineSettings(
            device="cpu",
            cpu_threads=1,
            defaults=defaults,
            preview_min_steps=1,  # a 2-step job makes previews only when asked (1-4 step models: none)
            preview_interval_s=0.0,
        ),
        pipe,
        model_name="standin:test",
    )
    updates: list[StepUpdate] = []
    item = make_item("a", 5, count=4, steps=2, guidance=0.0)
    started = time.perf_counter()
    results = engine.run_batch([item], updates.append, lambda: False)
    assert time.perf_counter() - started >= calibration.batch_s(4)
    assert [(img.width, img.height) for img in results[0]] == [(64, 64)] * 4
    assert [u.step for u in updates] == [1, 2, 2] and updates[-1].device_free
    assert len(updates[0].previews) == 4  # the engine's previews ran on the stand-in's latents
    assert 0 < pipe.own_cpu_s < calibration.batch_s(4)
    # Several jobs in one batch, with the engine's prompt cache on (the default): the stand-in counts the
    # rows of the cached embeddings, and its text-encoder stand-in costs no host CPU to speak of.
    jobs = [make_item(n, 5, steps=2, guidance=0.0) for n in "cde"]
    assert [len(r) for r in engine.run_batch(jobs, updates.append, lambda: False)] == [1, 1, 1]
    assert engine.acceleration_counters["prompt_cache_misses"] >= 1
    with pytest.raises(Exception, match="draws 64x64 pictures"):
        engine.run_batch(
            [make_item("b", 5, size=(128, 128), steps=2, guidance=0.0)], updates.append, lambda: False
        )
