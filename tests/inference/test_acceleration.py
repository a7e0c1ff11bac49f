"""The engine's speed switches (inference/acceleration.py) on the real tiny pipelines: batch-size buckets,
the prompt-embedding cache, tiled VAE decoding, and the compile settings' plumbing."""

from __future__ import annotations

import dataclasses
import logging
import os
from collections import Counter
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch

from inference import acceleration
from inference.acceleration import PromptCache, next_bucket, pad_call
from inference.engine import DiffusersEngine
from inference.engine_api import BatchItem, StepUpdate
from inference.metrics import render_metrics
from inference.models import ModelSet
from inference.scheduler import Scheduler
from inference.settings import EngineSettings, ModelDefaults, WorkerSettings
from tests.inference.items import make_item, progress

Pictures = list[np.ndarray]
PIXEL_TOLERANCE = 2  # of 255: batched matrix products may round differently from single ones

CPU = torch.device("cpu")


def run(engine: DiffusersEngine, items: list[BatchItem]) -> tuple[Pictures, list[StepUpdate]]:
    updates: list[StepUpdate] = []
    results = engine.run_batch(items, updates.append, lambda: False)
    assert [len(r) for r in results] == [it.request.count for it in items]
    return [np.asarray(image.pixels) for result in results for image in result], progress(results, updates)


def with_sampler(item: BatchItem, sampler: str) -> BatchItem:
    return dataclasses.replace(item, request=item.request.model_copy(update={"sampler": sampler}))


@pytest.fixture(scope="module")
def plain(tiny_model_dir: Path) -> DiffusersEngine:
    return DiffusersEngine.load(settings_for(tiny_model_dir))


def settings_for(model: Path, **switches: object) -> EngineSettings:
    return EngineSettings(
        model=str(model),
        device="cpu",
        cpu_threads=1,
        preview_interval_s=0.0,
        preview_min_steps=1,
        defaults=ModelDefaults(steps=2, guidance=5.0, width=64, height=64),
        prompt_cache_entries=0,  # each test turns on only the switch it is about
    ).model_copy(update=switches)


ITEMS = [
    make_item("a", 3),
    make_item("b", 7, prompt="a green square", negative_prompt="blurry", count=2),
]


def test_buckets_and_padding_rules() -> None:
    assert [next_bucket(n, [1, 2, 4, 8]) for n in (1, 2, 3, 5, 8, 9)] == [1, 2, 4, 8, 8, 9]
    assert next_bucket(3, []) == 3
    generators = [torch.Generator().manual_seed(s) for s in (1, 2)]
    embeds = torch.arange(6.0).reshape(2, 3)
    padded = pad_call(
        {"generator": generators, "prompt": ["x", "y"], "prompt_embeds": embeds, "width": 2}, 2, 4
    )
    assert padded["prompt"] == ["x", "y", "y", "y"] and padded["width"] == 2
    # Only per-row arguments: a list that merely has the batch's length is left alone.
    one = pad_call({"prompt": ["x"], "callback_on_step_end_tensor_inputs": ["latents"]}, 1, 2)
    assert one == {"prompt": ["x", "x"], "callback_on_step_end_tensor_inputs": ["latents"]}
    with pytest.raises(ValueError, match="rows"):
        pad_call({"prompt": ["x"], "image": ["a", "b"]}, 1, 4)
    assert torch.equal(padded["prompt_embeds"][2:], embeds[1:].expand(2, 3))
    # Added generators are clones, not the same object: drawing from them leaves the real rows' alone.
    assert padded["generator"][:2] == generators and all(
        g is not generators[1] for g in padded["generator"][2:]
    )
    first = torch.randn(4, generator=padded["generator"][3])
    assert torch.equal(first, torch.randn(4, generator=generators[1]))
    with pytest.raises(ValueError, match="ascending"):
        EngineSettings(batch_buckets=[4, 2])
    with pytest.raises(ValueError, match="multiple of 8"):
        EngineSettings(compile_warmup_sizes=[(512, 500)])


@pytest.mark.parametrize("sampler", [None, "EulerAncestralDiscreteScheduler"])
def test_a_padded_batch_returns_exactly_the_real_pictures(
    plain: DiffusersEngine, tiny_model_dir: Path, sampler: str | None
) -> None:
    """3 images padded to a bucket of 8 give exactly the pictures those 3 get in an unpadded batch of 8
    (5 other images beside them), none of the padding's, and previews of the real ones only; against an
    unpadded batch of 3 they differ only by the batch size's rounding (PIXEL_TOLERANCE, as any batching).
    An ancestral sampler draws noise at every step from each row's generator, so it would show a
    generator shared with a padding row."""
    items = [with_sampler(it, sampler) for it in ITEMS] if sampler else ITEMS
    others = [make_item(f"o{i}", 100 + i, prompt="a blue triangle") for i in range(5)]
    others = [with_sampler(it, sampler) for it in others] if sampler else others
    bucketed = DiffusersEngine.load(settings_for(tiny_model_dir, batch_buckets=[1, 2, 8]))
    of_eight, _ = run(plain, items + others)
    of_three, _ = run(plain, items)
    pictures, updates = run(bucketed, items)
    assert len(pictures) == 3
    for ours, theirs, alone in zip(pictures, of_eight, of_three, strict=False):
        assert np.array_equal(ours, theirs)
        assert np.abs(ours.astype(int) - alone).max() <= PIXEL_TOLERANCE
    assert bucketed.acceleration_counters["padded_rows"] == 5
    assert {len(u.previews) for u in updates[:-1]} == {3}


def test_cached_prompt_embeddings_give_identical_pixels(plain: DiffusersEngine, tiny_model_dir: Path) -> None:
    cached = DiffusersEngine.load(settings_for(tiny_model_dir, prompt_cache_entries=8))
    reference, _ = run(plain, ITEMS[:1])
    first, _ = run(cached, ITEMS[:1])  # misses: the prompt and the empty negative
    again, _ = run(cached, ITEMS[:1])  # a re-roll: both from the cache
    assert np.array_equal(first[0], reference[0]) and np.array_equal(again[0], reference[0])
    assert cached.acceleration_counters | {"prompt_cache_bytes": 0} == {
        "prompt_cache_hits": 2,
        "prompt_cache_misses": 2,
        "prompt_cache_entries": 2,
        "prompt_cache_bytes": 0,
        "padded_rows": 0,
    }
    # A variation batch of two beside another job: the same pixels as without the cache.
    batch = [make_item("d", 9), make_item("c", 5, prompt="a green square", negative_prompt="blurry", count=2)]
    assert all(np.array_equal(a, b) for a, b in zip(run(cached, batch)[0], run(plain, batch)[0], strict=True))


def test_a_batchs_uncached_prompts_are_encoded_in_one_call(
    plain: DiffusersEngine, monkeypatch: pytest.MonkeyPatch
) -> None:
    """On a GPU a text encoder at batch one is launch-bound: a batch's misses go in one call, and a
    prompt repeated in the batch (a job's several pictures) is encoded once."""
    pipe = plain._pipes.generate
    calls: list[object] = []
    encode = pipe.encode_prompt

    def counted(prompt: object, *args: object, **kwargs: object) -> object:
        calls.append(prompt)
        return encode(prompt, *args, **kwargs)

    monkeypatch.setattr(pipe, "encode_prompt", counted)
    cache = PromptCache(max_entries=16, max_bytes=1 << 30)
    first = cache.apply(pipe, {"prompt": ["a", "b", "b", "c"], "guidance_scale": 0.0}, CPU)["prompt_embeds"]
    assert calls == [["a", "b", "c"]] and (cache.stats.misses, cache.stats.hits) == (3, 1)
    again = cache.apply(pipe, {"prompt": ["c", "d", "a"], "guidance_scale": 0.0}, CPU)["prompt_embeds"]
    assert calls[1:] == [["d"]] and (cache.stats.misses, cache.stats.hits) == (4, 3)
    assert first.shape[0] == 4 and torch.equal(first[1], first[2]) and torch.equal(again[0], first[3])


def test_prompt_cache_bounds_and_refusals(plain: DiffusersEngine) -> None:
    pipe = plain._pipes.generate
    one = pipe.encode_prompt("x", pipe._execution_device, 1, False)[0]
    size = one.element_size() * one.nelement()
    cache = PromptCache(max_entries=3, max_bytes=2 * size)
    cache.apply(
        pipe, {"prompt": ["a", "b", "c"], "negative_prompt": ["", "", ""], "guidance_scale": 0.0}, CPU
    )
    assert (cache.stats.entries, cache.stats.bytes, cache.stats.misses) == (2, 2 * size, 3)  # bytes bound
    cache.apply(pipe, {"prompt": ["c"], "guidance_scale": 0.0}, CPU)
    assert cache.stats.hits == 1  # the most recent stayed
    cache.apply(pipe, {"prompt": ["a"], "guidance_scale": 0.0}, CPU)
    assert cache.stats.misses == 4  # the oldest went
    entries = PromptCache(max_entries=1, max_bytes=10 * size)
    entries.apply(pipe, {"prompt": ["a", "b"], "guidance_scale": 0.0}, CPU)
    assert entries.stats.entries == 1
    kwargs = {"prompt": ["a"]}
    assert cache.usable(pipe, kwargs, None)
    assert not cache.usable(pipe, kwargs, "style")  # a switchable LoRA may change the text encoder
    assert not PromptCache(0, size).usable(pipe, kwargs, None)
    assert not cache.usable(plain._pipes.edit, kwargs, None)  # InstructPix2Pix: its own embedding rows


def test_tiled_decoding_only_at_or_over_its_size(plain: DiffusersEngine, tiny_model_dir: Path) -> None:
    """128x128 pictures decoded in 96-pixel tiles (blended where they overlap) stay close to whole ones; a
    size under the threshold is decoded whole, pixel for pixel as before. (The bundled decoder's attention
    sees the whole picture, so small tiles are a hard case: 2-3/255 apart on average when measured.)"""
    items = [make_item("a", 3, size=(128, 128)), make_item("b", 7, prompt="a green square", size=(128, 128))]
    tiled = DiffusersEngine.load(
        settings_for(tiny_model_dir, vae_tiling_min_pixels=128 * 128, vae_tile_size=96)
    )
    whole = DiffusersEngine.load(
        settings_for(tiny_model_dir, vae_tiling_min_pixels=256 * 256, vae_tile_size=96)
    )
    reference, _ = run(plain, items)
    pictures, _ = run(tiled, items)
    assert tiled._pipes.generate.vae.use_tiling
    diffs = [np.abs(a.astype(int) - b) for a, b in zip(pictures, reference, strict=True)]
    assert all(0 < d.mean() <= 5 for d in diffs), [d.mean() for d in diffs]  # close, and it did tile
    untouched, _ = run(whole, items)
    assert not whole._pipes.generate.vae.use_tiling
    assert all(np.array_equal(a, b) for a, b in zip(untouched, reference, strict=True))
    # Back under the threshold, a tiling engine decodes whole again.
    small, _ = run(tiled, ITEMS[:1])
    assert not tiled._pipes.generate.vae.use_tiling and np.array_equal(small[0], run(plain, ITEMS[:1])[0][0])


def test_compile_settings(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """Compiling on a CPU takes minutes, so this checks what `compile_denoiser` sets up; the compiled
    graph itself is compiled lazily on the first call, which bench/gpu.py and bench/accel.py make."""
    monkeypatch.setenv("TORCHINDUCTOR_CACHE_DIR", "/nowhere")
    monkeypatch.setattr(torch._dynamo.config, "recompile_limit", 8)
    calls: list[dict[str, object]] = []
    module = torch.nn.Linear(2, 2)
    monkeypatch.setattr(module, "compile", lambda **kw: calls.append(kw))
    settings = EngineSettings(
        compile=True,
        compile_mode="reduce-overhead",
        batch_buckets=[1, 2, 4, 8, 16],
        compile_warmup_sizes=[(512, 512), (768, 512)],
        compile_cache_dir=tmp_path / "inductor",
    )
    with caplog.at_level(logging.WARNING):
        acceleration.compile_denoiser(module, settings, torch.device("cpu"))
    assert calls == [{"mode": "default", "dynamic": False}]  # CUDA graphs only on CUDA
    assert "needs a CUDA device" in caplog.text
    assert torch._dynamo.config.recompile_limit >= 2 * 5 * 2
    assert os.environ["TORCHINDUCTOR_CACHE_DIR"] == str(tmp_path / "inductor")
    assert (tmp_path / "inductor").is_dir()
    seen: list[tuple[int, int, int]] = []

    def record(items: list[BatchItem], *_: object) -> None:
        seen.append((sum(it.request.count for it in items), items[0].width, items[0].height))

    acceleration.warm_up(settings, record)
    assert seen == [(b, *s) for s in [(512, 512), (768, 512)] for b in [1, 2, 4, 8, 16]]
    seen.clear()
    acceleration.warm_up(settings.model_copy(update={"compile": False}), record)
    assert seen == []


def test_warm_up_runs_the_engine_before_it_is_ready(
    tiny_model_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """With compile on, loading runs one batch per bucket per warm-up size through the engine's own path
    before it returns (the worker serves only once loading is done). Compilation itself is left out here:
    on a CPU it takes minutes."""
    monkeypatch.setattr("inference.loading.compile_denoiser", lambda *a: None)
    seen: list[tuple[int, int, int]] = []
    original = DiffusersEngine.run_batch

    def recording(self: DiffusersEngine, items: list[BatchItem], *args: Any) -> Any:
        seen.append((sum(it.request.count for it in items), items[0].width, items[0].height))
        return original(self, items, *args)

    monkeypatch.setattr(DiffusersEngine, "run_batch", recording)
    DiffusersEngine.load(
        settings_for(
            tiny_model_dir, compile=True, batch_buckets=[1, 2], compile_warmup_sizes=[(64, 64), (64, 32)]
        )
    )
    assert seen == [(1, 64, 64), (2, 64, 64), (1, 64, 32), (2, 64, 32)]


async def test_counters_in_the_metrics(tiny_model_dir: Path) -> None:
    engine = DiffusersEngine.load(settings_for(tiny_model_dir, prompt_cache_entries=4, batch_buckets=[4]))
    run(engine, ITEMS)
    run(engine, ITEMS)
    scheduler = Scheduler(ModelSet(engine, {}), WorkerSettings())
    text = render_metrics(scheduler, Counter())
    assert "brushfire_prompt_cache_hits_total 8" in text
    assert "brushfire_prompt_cache_misses_total 4" in text
    assert "brushfire_padded_rows_total 2" in text


def test_attention_runs_on_pytorch_sdpa(plain: DiffusersEngine) -> None:
    """SDPA (flash / memory-efficient kernels on a GPU) is diffusers' default attention; nothing to set,
    and nothing the engine's loading undoes."""
    for pipe in (plain._pipes.generate, plain._pipes.img2img):
        processors = {type(p).__name__ for p in pipe.unet.attn_processors.values()}
        assert processors == {"AttnProcessor2_0"}
    vae_processors = {type(p).__name__ for p in plain._pipes.generate.vae.attn_processors.values()}
    assert vae_processors == {"AttnProcessor2_0"}
