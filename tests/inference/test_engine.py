"""The diffusers engine on the real tiny pipelines: outputs, determinism, cancel, faults and adapters."""

from __future__ import annotations

import importlib.util
import io
import json
import re
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from PIL import Image

from inference import loading as loading_module
from inference.engine import DiffusersEngine
from inference.engine_api import (
    BatchItem,
    DeviceMemory,
    EngineError,
    EngineOutOfMemory,
    GeneratedImage,
    KindDefaults,
    StepUpdate,
)
from inference.loading import model_sources
from inference.settings import AdapterSettings, EngineSettings, ModelDefaults
from inference.text import normalize_prompt
from inference.vocabulary import JobKind
from tests.inference.items import make_item, open_png, progress
from tools.tiny.make_tokenizer import DEFAULT_DIR, WORDS, build_vocab

PIXEL_TOLERANCE = 2  # of 255: batched matrix products may round differently from single ones


@pytest.fixture(scope="module")
def engine(tiny_model_dir: Path, tiny_edit_model_dir: Path) -> DiffusersEngine:
    """One engine for the tests that leave it as they found it (loading costs more than most tests)."""
    settings = EngineSettings(
        model=str(tiny_model_dir),
        edit_model=str(tiny_edit_model_dir),
        device="cpu",
        cpu_threads=1,
        preview_interval_s=0.0,  # a preview at every step of these 4-step runs (the defaults make none)
        preview_min_steps=1,
        defaults=ModelDefaults(steps=4, guidance=5.0, width=64, height=64, img2img_strength=0.75),
    )
    return DiffusersEngine.load(settings)


def run(
    engine: DiffusersEngine,
    items: list[BatchItem],
    should_stop: Callable[[], bool] = lambda: False,
) -> tuple[list[list[GeneratedImage]], list[StepUpdate]]:
    updates: list[StepUpdate] = []
    results = engine.run_batch(items, updates.append, should_stop)
    return results, progress(results, updates)


def pixels(image: GeneratedImage) -> np.ndarray:
    return np.asarray(Image.open(io.BytesIO(image.png)).convert("RGB"), dtype=np.int16)


def max_diff(a: GeneratedImage, b: GeneratedImage) -> int:
    return int(np.abs(pixels(a) - pixels(b)).max())


@pytest.fixture
def photo() -> Image.Image:
    """An input image with structure, not a flat colour, at a size other than the output's."""
    y, x = np.mgrid[0:96, 0:80]
    rgb = np.stack([x * 3 % 256, y * 2 % 256, (x + y) % 256], axis=-1).astype(np.uint8)
    return Image.fromarray(rgb)


def test_loads_through_from_pretrained_and_reports_itself(
    engine: DiffusersEngine, tiny_model_dir: Path
) -> None:
    assert engine.model_name == str(tiny_model_dir)
    assert engine.device_name == "cpu"
    assert engine.defaults(JobKind.GENERATE) == KindDefaults(steps=4, guidance=5.0, width=64, height=64)
    assert engine.memory() == DeviceMemory(used=None, total=None)
    assert engine.has_edit_model
    assert engine.adapter_names == []


def test_generate_returns_pngs_with_metadata(engine: DiffusersEngine) -> None:
    results, updates = run(engine, [make_item("a", 7, count=2)])
    assert [img.seed for img in results[0]] == [7, 8]
    png = open_png(results[0][0])
    assert png.format == "PNG"
    assert png.size == (64, 64)
    assert png.text["prompt"] == "a red circle on a blue background"
    assert png.text["seed"] == "7"
    assert png.text["steps"] == "4"
    assert png.text["guidance"] == "5"
    assert png.text["kind"] == "generate"
    assert png.text["model"] == engine.model_name
    assert not results[0][0].nsfw
    assert [(u.step, u.total) for u in updates] == [(1, 4), (2, 4), (3, 4), (4, 4)]
    # One preview per image on every step but the last, whose full image follows anyway.
    assert [len(u.previews) for u in updates] == [2, 2, 2, 0]
    assert updates[0].previews[0].size == (128, 128)


def test_same_seed_repeats_and_different_seeds_differ(engine: DiffusersEngine) -> None:
    first, _ = run(engine, [make_item("a", 11)])
    again, _ = run(engine, [make_item("b", 11)])
    other, _ = run(engine, [make_item("c", 12)])
    assert max_diff(first[0][0], again[0][0]) == 0
    assert max_diff(first[0][0], other[0][0]) > 20


def test_generate_alone_equals_generate_inside_a_batch(engine: DiffusersEngine) -> None:
    alone, _ = run(engine, [make_item("mine", 42, count=2)])
    batch, _ = run(
        engine,
        [
            make_item("before", 1, prompt="a green star", count=3),
            make_item("mine", 42, count=2),
            make_item("after", 99, prompt="a cat"),
        ],
    )
    assert [len(r) for r in batch] == [3, 2, 1]
    for i in range(2):
        assert max_diff(alone[0][i], batch[1][i]) <= PIXEL_TOLERANCE
    assert max_diff(alone[0][0], batch[0][0]) > 20


def test_img2img_alone_equals_img2img_inside_a_batch(engine: DiffusersEngine, photo: Image.Image) -> None:
    mine = make_item("mine", 5, kind=JobKind.IMG2IMG, image=photo, strength=0.75)
    alone, updates = run(engine, [mine])
    other_photo = Image.new("RGB", (64, 64), (250, 20, 20))
    other = make_item("other", 6, kind=JobKind.IMG2IMG, image=other_photo, strength=0.75, prompt="a dog")
    batch, _ = run(engine, [other, mine])
    assert max_diff(alone[0][0], batch[1][0]) <= PIXEL_TOLERANCE
    assert [u.total for u in updates] == [3, 3, 3]  # int(4 steps * 0.75 strength)
    png = open_png(alone[0][0])
    assert (png.text["kind"], png.text["strength"]) == ("img2img", "0.75")


def test_img2img_runs_at_least_one_step_at_low_strength(engine: DiffusersEngine, photo: Image.Image) -> None:
    item = make_item("low", 5, kind=JobKind.IMG2IMG, image=photo, strength=0.1, steps=2)
    results, updates = run(engine, [item])
    assert len(results[0]) == 1
    assert [u.total for u in updates] == [1]
    hopeless = make_item("lower", 5, kind=JobKind.IMG2IMG, image=photo, strength=0.001, steps=2)
    with pytest.raises(EngineError, match="too low"):
        run(engine, [hopeless])


def test_edit_uses_the_instruction_pipeline(engine: DiffusersEngine, photo: Image.Image) -> None:
    mine = make_item("mine", 3, kind=JobKind.EDIT, image=photo, prompt="make it blue")
    alone, updates = run(engine, [mine])
    other = make_item("other", 4, kind=JobKind.EDIT, image=photo, prompt="turn the sky pink")
    batch, _ = run(engine, [mine, other])
    assert max_diff(alone[0][0], batch[0][0]) <= PIXEL_TOLERANCE
    assert len(updates) == 4
    png = open_png(alone[0][0])
    assert png.text["kind"] == "edit"
    assert png.text["model"].endswith("edit")
    assert "strength" not in png.text


def test_edit_pipeline_shares_identical_modules(engine: DiffusersEngine) -> None:
    edit, generate = engine._pipes.edit, engine._pipes.generate
    assert edit is not None
    assert edit.vae is generate.vae
    assert edit.text_encoder is generate.text_encoder
    assert edit.unet is not generate.unet


def test_edit_without_an_edit_model_is_img2img(engine_settings: EngineSettings, photo: Image.Image) -> None:
    engine = DiffusersEngine.load(engine_settings.model_copy(update={"edit_model": None}))
    assert not engine.has_edit_model
    results, updates = run(engine, [make_item("e", 3, kind=JobKind.EDIT, image=photo, strength=0.5)])
    assert [u.total for u in updates] == [2, 2]
    png = open_png(results[0][0])
    assert (png.text["kind"], png.text["strength"]) == ("edit", "0.5")


@pytest.mark.parametrize("kind", [JobKind.GENERATE, JobKind.EDIT])
def test_should_stop_interrupts_at_the_next_step(
    engine: DiffusersEngine, photo: Image.Image, kind: JobKind
) -> None:
    calls = 0

    def on_step(update: StepUpdate) -> None:
        nonlocal calls
        calls += 1

    image = photo if kind.needs_image else None
    results = engine.run_batch(
        [make_item("a", 1, kind=kind, image=image), make_item("b", 2, kind=kind, image=image)],
        on_step,
        lambda: calls >= 2,
    )
    assert results == [[], []]
    assert calls == 2
    again, _ = run(engine, [make_item("c", 1)])  # the next batch is not interrupted
    assert len(again[0]) == 1


def _raise(exc: BaseException) -> Callable[..., None]:
    def forward(*args: object, **kwargs: object) -> None:
        raise exc

    return forward


@pytest.mark.parametrize(
    ("fault", "expected"),
    [
        (torch.cuda.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB"), EngineOutOfMemory),
        (RuntimeError("MPS backend out of memory (MPS allocated: 1 GB)"), EngineOutOfMemory),
        (RuntimeError("cuDNN error: CUDNN_STATUS_EXECUTION_FAILED"), EngineError),
        (ValueError("bad shapes"), EngineError),
    ],
)
def test_pipeline_faults_map_to_engine_errors(
    engine: DiffusersEngine, monkeypatch: pytest.MonkeyPatch, fault: BaseException, expected: type
) -> None:
    unet = engine._pipes.generate.unet
    monkeypatch.setattr(unet, "forward", _raise(fault))
    with pytest.raises(expected) as info:
        run(engine, [make_item("a", 1, count=2)])
    assert expected is EngineError or not isinstance(info.value, EngineError)
    monkeypatch.undo()
    results, _ = run(engine, [make_item("b", 1)])
    assert len(results[0]) == 1


def test_incompatible_batch_and_unknown_adapter_are_refused(
    engine: DiffusersEngine, photo: Image.Image
) -> None:
    with pytest.raises(EngineError, match="incompatible"):
        run(engine, [make_item("a", 1), make_item("b", 2, steps=2)])
    with pytest.raises(EngineError, match="need an input image"):
        run(engine, [make_item("c", 1, kind=JobKind.IMG2IMG, strength=0.5)])
    with pytest.raises(EngineError, match="unknown adapter"):
        run(engine, [make_item("d", 1, adapter="ghibli")])
    assert run(engine, []) == ([], [])


def test_tiny_build_is_reproducible(tiny_model_dir: Path, tmp_path: Path) -> None:
    from tools.tiny.build import build

    generate, _ = build(tmp_path)
    for part in ("unet/diffusion_pytorch_model.safetensors", "text_encoder/model.safetensors"):
        assert (generate / part).read_bytes() == (tiny_model_dir / part).read_bytes()


def test_tokenizer_files_match_the_word_list(engine: DiffusersEngine) -> None:
    vocab, merges = build_vocab()
    assert json.loads((DEFAULT_DIR / "vocab.json").read_text()) == vocab
    lines = (DEFAULT_DIR / "merges.txt").read_text().splitlines()
    assert lines[1:] == [f"{a} {b}" for a, b in merges]
    tokenizer = engine._pipes.generate.tokenizer
    for word in WORDS:
        assert tokenizer.tokenize(word) == [word + "</w>"], word
    # Any other word still tokenizes, from smaller pieces, without unknown tokens.
    pieces = tokenizer.tokenize("Zebra!")
    assert "".join(pieces) == "zebra</w>!</w>"
    assert all(piece in vocab for piece in pieces)


@pytest.mark.skipif(importlib.util.find_spec("peft") is None, reason="LoRA switching needs peft")
def test_adapters_switch_per_batch(engine_settings: EngineSettings, tmp_path: Path) -> None:
    lora = write_tiny_lora(Path(engine_settings.model or ""), tmp_path / "lora")
    adapter = AdapterSettings(name="style", path=str(lora.parent), weight_name=lora.name)
    settings = engine_settings.model_copy(update={"adapters": [adapter]})
    engine = DiffusersEngine.load(settings)
    assert engine.adapter_names == ["style"]
    plain, _ = run(engine, [make_item("a", 1)])
    styled, _ = run(engine, [make_item("b", 1, adapter="style")])
    plain_again, _ = run(engine, [make_item("c", 1)])
    half, _ = run(engine, [make_item("d", 1, adapter="style", adapter_scale=0.5)])
    assert max_diff(plain[0][0], styled[0][0]) > 5
    assert max_diff(plain[0][0], plain_again[0][0]) == 0  # the adapter left nothing behind
    assert max_diff(styled[0][0], half[0][0]) > 0
    assert open_png(styled[0][0]).text["adapter"] == "style:1"


def write_tiny_lora(model_dir: Path, out_dir: Path) -> Path:
    """Save a random rank-4 LoRA for the tiny UNet's attention layers; return the weights file."""
    from diffusers import StableDiffusionPipeline, UNet2DConditionModel
    from diffusers.utils.state_dict_utils import convert_state_dict_to_diffusers
    from peft import LoraConfig
    from peft.utils import get_peft_model_state_dict

    torch.manual_seed(0)
    unet = UNet2DConditionModel.from_pretrained(model_dir / "unet")  # type: ignore[no-untyped-call]  # untyped in diffusers
    targets = ["to_q", "to_k", "to_v", "to_out.0"]
    unet.add_adapter(LoraConfig(r=4, lora_alpha=4, target_modules=targets, init_lora_weights=False))
    layers = convert_state_dict_to_diffusers(get_peft_model_state_dict(unet))  # type: ignore[no-untyped-call]  # as above
    StableDiffusionPipeline.save_lora_weights(out_dir, unet_lora_layers=layers, safe_serialization=True)
    return out_dir / "pytorch_lora_weights.safetensors"


@pytest.mark.skipif(importlib.util.find_spec("peft") is None, reason="LoRA fusing needs peft")
def test_fused_adapter_is_always_on_and_not_switchable(
    engine_settings: EngineSettings, tmp_path: Path
) -> None:
    lora = write_tiny_lora(Path(engine_settings.model or ""), tmp_path / "lora")
    switchable = AdapterSettings(name="style", path=str(lora.parent), weight_name=lora.name)
    fused = switchable.model_copy(update={"name": "few-step", "fuse": True, "scale": 0.5})
    engine = DiffusersEngine.load(engine_settings.model_copy(update={"adapters": [fused, switchable]}))
    assert engine.adapter_names == ["style"]
    reference = DiffusersEngine.load(engine_settings.model_copy(update={"adapters": [switchable]}))
    with_fused, _ = run(engine, [make_item("a", 1)])
    half, _ = run(reference, [make_item("b", 1, adapter="style", adapter_scale=0.5)])
    assert max_diff(with_fused[0][0], half[0][0]) <= PIXEL_TOLERANCE


def test_scheduler_can_be_replaced(engine_settings: EngineSettings) -> None:
    settings = engine_settings.model_copy(
        update={"scheduler": "DPMSolverMultistepScheduler", "timestep_spacing": "leading"}
    )
    engine = DiffusersEngine.load(settings)
    scheduler = engine._pipes.generate.scheduler
    assert type(scheduler).__name__ == "DPMSolverMultistepScheduler"
    assert scheduler.config.timestep_spacing == "leading"
    assert engine._pipes.img2img.scheduler is scheduler
    results, _ = run(engine, [make_item("a", 1)])
    assert len(results[0]) == 1
    with pytest.raises(EngineError, match="unknown scheduler 'NoSuchScheduler'"):
        DiffusersEngine.load(engine_settings.model_copy(update={"scheduler": "NoSuchScheduler"}))


def test_a_missing_model_is_a_clear_error(engine_settings: EngineSettings, tmp_path: Path) -> None:
    missing = str(tmp_path / "nothing")
    with pytest.raises(EngineError, match=f"cannot load model '{missing}'"):
        DiffusersEngine.load(engine_settings.model_copy(update={"model": missing}))
    with pytest.raises(EngineError, match=f"cannot load model '{missing}'"):
        DiffusersEngine.load(engine_settings.model_copy(update={"edit_model": missing}))
    with pytest.raises(EngineError, match=f"cannot load model '{missing}'"):
        DiffusersEngine.load(engine_settings.model_copy(update={"preview_decoder": missing}))


def test_no_model_means_the_bundled_trained_one(tmp_path: Path) -> None:
    settings = EngineSettings(device="cpu", cpu_threads=1, cache_dir=tmp_path)
    engine = DiffusersEngine.load(settings)
    assert engine.model_name == "brushfire/tiny"
    assert engine.has_edit_model  # the bundled edit pipeline, not img2img
    # Stored as float16, run as float32 on a CPU; nothing is built or copied into the cache.
    for pipe in (engine._pipes.generate, engine._pipes.edit):
        assert pipe is not None and pipe.unet.dtype == pipe.vae.dtype == torch.float32
    assert not (tmp_path / "tiny").exists()
    results, _ = run(engine, [make_item("a", 1, steps=1)])
    assert len(results[0]) == 1


def test_a_configured_model_without_an_edit_model_edits_by_img2img(engine_settings: EngineSettings) -> None:
    assert model_sources(engine_settings.model_copy(update={"edit_model": None})) == (
        engine_settings.model,
        None,
    )


def test_a_missing_bundled_model_is_a_clear_error(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setattr(loading_module, "BUNDLED_MODEL_ROOT", tmp_path / "model")
    missing = re.escape(f"no generate pipeline at {tmp_path / 'model' / 'generate'}")
    with pytest.raises(EngineError, match=missing):
        DiffusersEngine.load(EngineSettings(device="cpu", cpu_threads=1))


def with_safety_checker(model_dir: Path, out_dir: Path, threshold: float) -> Path:
    """A copy of the tiny model with a tiny real safety checker; `threshold` sets how much it flags.

    The checker flags an image when its embedding's cosine with a concept exceeds that concept's
    threshold: 1 flags nothing, -1 flags everything.
    """
    from diffusers import StableDiffusionPipeline
    from diffusers.pipelines.stable_diffusion.safety_checker import StableDiffusionSafetyChecker
    from transformers import CLIPConfig, CLIPImageProcessor

    torch.manual_seed(0)
    small = {"hidden_size": 32, "intermediate_size": 37, "num_hidden_layers": 1, "num_attention_heads": 4}
    config = CLIPConfig(
        text_config=small, vision_config={**small, "image_size": 32, "patch_size": 8}, projection_dim=16
    )
    checker = StableDiffusionSafetyChecker(config)
    checker.concept_embeds_weights.data.fill_(threshold)
    features = CLIPImageProcessor(size={"shortest_edge": 32}, crop_size={"height": 32, "width": 32})
    pipe = StableDiffusionPipeline.from_pretrained(model_dir)  # type: ignore[no-untyped-call]  # untyped in diffusers
    pipe.register_modules(safety_checker=checker, feature_extractor=features)
    pipe.register_to_config(requires_safety_checker=True)
    pipe.save_pretrained(out_dir, safe_serialization=True)
    return out_dir


@pytest.mark.parametrize(("threshold", "flagged"), [(1.0, False), (-1.0, True)])
def test_each_image_carries_its_safety_flag(
    engine_settings: EngineSettings, tiny_model_dir: Path, tmp_path: Path, threshold: float, flagged: bool
) -> None:
    model = with_safety_checker(tiny_model_dir, tmp_path / "checked", threshold)
    engine = DiffusersEngine.load(engine_settings.model_copy(update={"model": str(model)}))
    results, _ = run(engine, [make_item("a", 100, count=4), make_item("b", 200, count=4)])
    images = [img for r in results for img in r]
    assert [img.nsfw for img in images] == [flagged] * 8
    for img in images:  # the pipeline blacks out exactly the flagged images
        assert img.nsfw == (pixels(img).max() == 0)
    unchecked = DiffusersEngine.load(
        engine_settings.model_copy(update={"model": str(model), "safety_checker": False})
    )
    assert not any(img.nsfw for r in run(unchecked, [make_item("c", 100, count=4)])[0] for img in r)


def test_previews_from_a_tiny_preview_decoder(engine_settings: EngineSettings, tmp_path: Path) -> None:
    from diffusers import AutoencoderTiny

    torch.manual_seed(0)
    # mypy sees diffusers' dummy placeholder class for AutoencoderTiny, which has no save_pretrained.
    decoder: Any = AutoencoderTiny(  # type: ignore[no-untyped-call]
        encoder_block_out_channels=(8, 8, 8, 8),
        decoder_block_out_channels=(8, 8, 8, 8),
        num_encoder_blocks=(1, 1, 1, 1),
        num_decoder_blocks=(1, 1, 1, 1),
    )
    decoder.save_pretrained(tmp_path / "taesd")
    engine = DiffusersEngine.load(
        engine_settings.model_copy(update={"preview_decoder": str(tmp_path / "taesd")})
    )
    _, updates = run(engine, [make_item("a", 1, count=2)])
    assert [len(u.previews) for u in updates] == [2, 2, 2, 0]
    assert updates[0].previews[0].size == (128, 128)
    assert updates[0].previews[0].mode == "RGB"


def test_channels_last_gives_the_same_images(
    engine: DiffusersEngine, engine_settings: EngineSettings
) -> None:
    fast = DiffusersEngine.load(engine_settings.model_copy(update={"channels_last": True}))
    assert fast._pipes.generate.unet.conv_in.weight.is_contiguous(memory_format=torch.channels_last)
    reference, _ = run(engine, [make_item("a", 9)])
    results, _ = run(fast, [make_item("a", 9)])
    assert max_diff(reference[0][0], results[0][0]) <= PIXEL_TOLERANCE


@pytest.mark.parametrize(
    "prompt",
    # Control characters around visible text are dropped by the request's normalisation (a prompt of only
    # control or zero-width characters is refused before it reaches an engine: tests/hostile).
    ["🎨 日本語の猫, ümlaut", "x" * 1000, "a " * 500, "<|endoftext|> <|startoftext|>", "\x00 a cat\t\n"],
)
def test_any_valid_prompt_gives_an_image(engine: DiffusersEngine, prompt: str) -> None:
    """Characters outside the vocabulary, over-long prompts and special-token text are not errors."""
    results, _ = run(engine, [make_item("a", 1, prompt=prompt, steps=1)])
    png = open_png(results[0][0])
    assert png.size == (64, 64)
    assert png.text["prompt"] == normalize_prompt(prompt)


def test_previews_only_for_long_batches_and_no_more_often_than_the_interval(engine: DiffusersEngine) -> None:
    defaults = EngineSettings()  # preview_min_steps 5, preview_interval_s 2
    engine._settings = engine._settings.model_copy(
        update={"preview_min_steps": defaults.preview_min_steps, "preview_interval_s": 3600.0}
    )
    try:
        _, short = run(engine, [make_item("a", 1, steps=4)])
        _, long = run(engine, [make_item("a", 1, steps=6)])
    finally:
        engine._settings = engine._settings.model_copy(
            update={"preview_min_steps": 1, "preview_interval_s": 0}
        )
    assert [len(u.previews) for u in short] == [0, 0, 0, 0]  # a 1-4 step model: none
    assert [len(u.previews) for u in long] == [1, 0, 0, 0, 0, 0]  # the first, then none within the hour


def test_pictures_leave_the_pipeline_as_uint8_pixels(engine: DiffusersEngine) -> None:
    results, _ = run(engine, [make_item("a", 3, count=2)])
    img = results[0][0]
    assert img.pixels.dtype == np.uint8 and img.pixels.shape == (64, 64, 3)
    assert (img.width, img.height) == (64, 64) and img.meta["seed"] == "3"
    assert np.array_equal(np.asarray(Image.open(io.BytesIO(img.png)).convert("RGB")), img.pixels)
