"""Every supported model family through the engine and the RPC, on tiny local pipelines of its real classes.

Each setup is a real diffusers pipeline (SD 1.x, SD 2.x, SDXL and its Turbo, Lightning and LCM-LoRA
setups, SD3, FLUX.1 [schnell] and [dev]) built at a tiny random size by `family_models`, saved, and loaded
by the worker by local path with the preset's scheduler and fused LoRA, exactly as a deployment loads the
published model. Every engine here also runs the independent safety classifier (a tiny local one that
flags everything), so every family's flags are shown to come from it.
"""

from __future__ import annotations

import io
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar, cast

import numpy as np
import pytest
import torch
from PIL import Image

from inference import families
from inference.client import WorkerClient
from inference.engine import DiffusersEngine
from inference.engine_api import (
    BatchItem,
    BatchKey,
    EngineError,
    EngineOutOfMemory,
    GeneratedImage,
    StepUpdate,
)
from inference.presets import get_preset
from inference.protocol import EventType
from inference.server import start_worker
from inference.settings import AdapterSettings, EngineSettings, ModelDefaults, SafetySettings, WorkerSettings
from inference.vocabulary import JobKind, JobStatus
from tests.inference.family_models import save_classifier, save_clip_checker, save_family, save_lora
from tests.inference.fixtures_worker import InstrumentedEngine, job, png_bytes
from tests.inference.items import make_item, open_png, progress

T = TypeVar("T")
TINY = {"width": 64, "height": 64}


@dataclass(frozen=True)
class Setup:
    """A family as a server owner would configure it: a tiny model, and a preset or plain defaults."""

    name: str
    model: str  # a FAMILY_MODELS name
    family: families.Family
    preset: str | None = None
    steps: int = 2
    guidance: float = 0.0


SETUPS = [
    Setup("sd1", "sd1", families.SD, guidance=5.0),
    Setup("sd2-turbo", "sd2", families.SD, preset="sd-turbo", steps=1),
    Setup("sd1-lcm", "lcm", families.SD, steps=4, guidance=8.0),
    Setup("sdxl", "sdxl", families.SDXL, guidance=5.0),
    Setup("sdxl-turbo", "sdxl-turbo", families.SDXL, preset="sdxl-turbo", steps=1),
    Setup("sdxl-lightning", "sdxl", families.SDXL, preset="sdxl-lightning", steps=4),
    Setup("sdxl-lcm-lora", "sdxl", families.SDXL, preset="sdxl-lcm-lora", steps=4, guidance=1.0),
    Setup("sd3", "sd3", families.SD3, guidance=5.0),
    Setup("flux-schnell", "flux-schnell", families.FLUX, preset="flux-schnell", steps=4),
    Setup("flux-dev", "flux-dev", families.FLUX, guidance=3.5),
]
IDS = [s.name for s in SETUPS]


class Built:
    """Tiny models, LoRAs, classifiers and loaded engines, each made once per module on first use."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self._cache: dict[str, Any] = {}

    def once(self, key: str, make: Callable[[], T]) -> T:
        if key not in self._cache:
            self._cache[key] = make()
        return cast(T, self._cache[key])

    def model(self, name: str) -> Path:
        return self.once(f"model:{name}", lambda: save_family(name, self.root / name))

    def lora(self, name: str) -> Path:
        return self.once(f"lora:{name}", lambda: save_lora(self.model(name), self.root / f"{name}-lora"))

    def classifier(self, unsafe: bool) -> Path:
        out = self.root / f"classifier-{unsafe}"
        return self.once(f"classifier:{unsafe}", lambda: save_classifier(out, unsafe=unsafe))

    def settings(self, setup: Setup, **update: object) -> EngineSettings:
        return settings_for(self, setup).model_copy(update=update)

    def engine(self, setup: Setup) -> DiffusersEngine:
        return self.once(f"engine:{setup.name}", lambda: DiffusersEngine.load(self.settings(setup)))


def settings_for(built: Built, setup: Setup) -> EngineSettings:
    """The setup's settings as a deployment would write them, with the model and LoRAs as local paths:
    the preset's, with a tiny local LoRA standing in for its published few-step LoRA, plus a switchable
    `style` LoRA and the safety classifier (one that flags everything)."""
    lora = built.lora(setup.model)
    local = {"path": str(lora.parent), "weight_name": lora.name}
    base = EngineSettings(
        device="cpu", cpu_threads=1, preview_every=1, preview_interval_s=0.0, preview_min_steps=1
    )
    if setup.preset is not None:
        preset = get_preset(setup.preset)
        base = preset.apply(base)
        fused = [a.model_copy(update=local) for a in preset.fused_adapters]
        defaults = preset.defaults.model_copy(update=TINY)
    else:
        fused = []
        defaults = ModelDefaults(steps=setup.steps, guidance=setup.guidance, img2img_strength=0.6, **TINY)
    style = AdapterSettings(name="style", **local)
    safety = SafetySettings(kind="classifier", model=str(built.classifier(unsafe=True)))
    update = {"adapters": [*fused, style], "defaults": defaults, "safety": safety}
    return base.model_copy(update={"model": str(built.model(setup.model)), **update})


@pytest.fixture(scope="module")
def built(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Built]:
    yield Built(tmp_path_factory.mktemp("families"))


def item(setup: Setup, job_id: str, seed: int, **fields: object) -> BatchItem:
    fields.setdefault("steps", setup.steps)
    fields.setdefault("guidance", setup.guidance)
    return make_item(job_id, seed, **fields)  # type: ignore[arg-type]


def run(
    engine: DiffusersEngine, items: list[BatchItem]
) -> tuple[list[list[GeneratedImage]], list[StepUpdate]]:
    updates: list[StepUpdate] = []
    results = engine.run_batch(items, updates.append, lambda: False)
    return results, progress(results, updates)


def pixels(image: GeneratedImage) -> np.ndarray:
    return np.asarray(Image.open(io.BytesIO(image.png)).convert("RGB"), dtype=np.int16)


def diff(a: GeneratedImage, b: GeneratedImage) -> int:
    return int(np.abs(pixels(a) - pixels(b)).max())


def _photo() -> Image.Image:
    """An input picture with structure, at a size other than the output's."""
    y, x = np.mgrid[0:96, 0:80]
    return Image.fromarray(np.stack([x * 3 % 256, y * 2 % 256, (x + y) % 256], axis=-1).astype(np.uint8))


PHOTO = _photo()
TOLERANCE = 2  # of 255: batched matrix products may round differently from single ones


@pytest.mark.parametrize("setup", SETUPS, ids=IDS)
def test_families_load_by_path_with_the_preset(built: Built, setup: Setup) -> None:
    engine = built.engine(setup)
    assert engine._pipes.family is setup.family
    assert engine.model_name == str(built.model(setup.model))
    assert engine.adapter_names == ["style"]  # fused few-step LoRAs are not switchable
    scheduler = engine._pipes.generate.scheduler
    if setup.preset is not None:
        preset = get_preset(setup.preset)
        assert type(scheduler).__name__ == (preset.scheduler or type(scheduler).__name__)
        if preset.timestep_spacing:
            assert scheduler.config.timestep_spacing == preset.timestep_spacing
    assert engine._pipes.img2img.scheduler is scheduler


@pytest.mark.parametrize("setup", SETUPS, ids=IDS)
def test_families_generate_batches_with_one_seed_per_picture(built: Built, setup: Setup) -> None:
    engine = built.engine(setup)
    alone, updates = run(engine, [item(setup, "mine", 7, count=2)])
    batch, _ = run(engine, [item(setup, "other", 7, prompt="a green star"), item(setup, "mine", 7, count=2)])
    again, _ = run(engine, [item(setup, "again", 7, count=2)])
    assert [img.seed for img in alone[0]] == [7, 8]
    assert all((img.width, img.height) == (64, 64) for img in alone[0])
    assert diff(alone[0][0], alone[0][1]) > 10  # seeds 7 and 8 differ
    for i in range(2):  # a job's pictures do not depend on its batch
        assert diff(alone[0][i], batch[1][i]) <= TOLERANCE
    assert diff(alone[0][0], again[0][0]) == diff(alone[0][1], again[0][1]) == 0  # the same job repeats
    assert diff(batch[0][0], batch[1][0]) > 0  # same seed, other prompt
    # Every step but the last makes one RGB preview per picture, in every family.
    assert [u.step for u in updates] == list(range(1, setup.steps + 1))
    assert [len(u.previews) for u in updates] == [2] * (setup.steps - 1) + [0]
    assert all(p.mode == "RGB" and max(p.size) == 128 for u in updates for p in u.previews)
    png = open_png(alone[0][0])
    assert (png.text["seed"], png.text["steps"], png.text["kind"]) == ("7", str(setup.steps), "generate")


@pytest.mark.parametrize("setup", SETUPS, ids=IDS)
def test_families_img2img_follows_its_input_and_batches(built: Built, setup: Setup) -> None:
    engine = built.engine(setup)
    mine = item(setup, "mine", 5, kind=JobKind.IMG2IMG, image=PHOTO, strength=0.5)
    alone, updates = run(engine, [mine])
    other = item(
        setup, "other", 6, kind=JobKind.IMG2IMG, image=Image.new("RGB", (64, 64), "red"), strength=0.5
    )
    batch, _ = run(engine, [other, mine])
    assert diff(alone[0][0], batch[1][0]) <= TOLERANCE
    assert diff(batch[0][0], batch[1][0]) > 10  # another input image gives another picture
    assert updates and updates[-1].total >= 1
    png = open_png(alone[0][0])
    assert (png.size, png.text["kind"], png.text["strength"]) == ((64, 64), "img2img", "0.5")


@pytest.mark.parametrize("setup", SETUPS, ids=IDS)
def test_families_lora_switches_per_batch(built: Built, setup: Setup) -> None:
    engine = built.engine(setup)
    plain, _ = run(engine, [item(setup, "a", 3)])
    styled, _ = run(engine, [item(setup, "b", 3, adapter="style")])
    plain_again, _ = run(engine, [item(setup, "c", 3)])
    assert diff(plain[0][0], styled[0][0]) > 2
    assert diff(plain[0][0], plain_again[0][0]) == 0  # the adapter left nothing behind
    assert open_png(styled[0][0]).text["adapter"] == "style:1"


@pytest.mark.parametrize("setup", SETUPS, ids=IDS)
def test_families_every_picture_goes_through_the_safety_classifier(built: Built, setup: Setup) -> None:
    flagged, _ = run(built.engine(setup), [item(setup, "a", 1, count=2)])
    assert [img.nsfw for img in flagged[0]] == [True, True]
    assert all(pixels(img).max() > 0 for img in flagged[0])  # flagged, not blacked out: the policy decides
    safe = SafetySettings(kind="classifier", model=str(built.classifier(unsafe=False)))
    engine = DiffusersEngine.load(built.settings(setup, safety=safe, adapters=[]))
    passed, _ = run(engine, [item(setup, "b", 1, count=2)])
    assert [img.nsfw for img in passed[0]] == [False, False]


@pytest.mark.parametrize("setup", SETUPS, ids=IDS)
async def test_families_through_the_rpc(built: Built, setup: Setup) -> None:
    # The engine thread waits after the first preview until the test has fetched it: a job's preview is
    # served while it runs and dropped when it ends.
    previewed = threading.Event()

    def hold_at_first_preview(update: StepUpdate) -> None:
        if update.previews and not previewed.is_set():
            previewed.wait(60)

    engine = InstrumentedEngine(built.engine(setup), step_hook=hold_at_first_preview)
    running = await start_worker(WorkerSettings(port=0, max_pixels=128 * 128, progress_interval_s=0), engine)
    try:
        async with WorkerClient(running.url, timeout=60, backoff=0.01) as client:
            await check_rpc(client, setup, previewed)
    finally:
        previewed.set()
        await running.stop()


async def check_rpc(client: WorkerClient, setup: Setup, previewed: threading.Event) -> None:
    info = await client.info()
    assert info is not None and info.defaults.steps == setup.steps
    first = await client.submit(job(count=2, seed=40, steps=None, guidance=None, adapter="style"))
    if setup.steps > 1:
        async for event in client.events(first.id):
            if event.type is EventType.PREVIEW:
                break
        preview = await client.preview(first.id)
        assert preview is not None and preview[:2] == b"\xff\xd8"
    previewed.set()
    final = await client.wait(first.id)
    assert final.status is JobStatus.SUCCEEDED and final.images == 2 and final.nsfw == [True, True]
    pictures = [await client.image(first.id, n) for n in range(2)]
    assert all(Image.open(io.BytesIO(p)).size == (64, 64) for p in pictures) and pictures[0] != pictures[1]
    again = job(count=2, seed=40, steps=None, guidance=None, adapter="style")
    repeat = await client.wait((await client.submit(again)).id)
    assert [await client.image(repeat.id, n) for n in range(2)] == pictures  # same seeds, same pictures
    assert await client.preview(first.id) is None  # dropped with the job's other transient state
    varied = await client.submit(
        job(kind=JobKind.IMG2IMG, strength=0.6, width=None, height=None, steps=None, guidance=None),
        png_bytes(80, 64),
    )
    done = await client.wait(varied.id)
    assert (
        done.status is JobStatus.SUCCEEDED and (done.width, done.height) == (80, 64) and done.nsfw == [True]
    )
    assert Image.open(io.BytesIO(await client.image(varied.id, 0))).size == (80, 64)


BY_NAME = {s.name: s for s in SETUPS}


@pytest.mark.parametrize("name", ["sd3", "flux-schnell"])
def test_families_sizes_off_the_16_grid_come_back_as_asked(built: Built, name: str) -> None:
    """SD3 and FLUX need multiples of 16; a 72x56 request runs at 80x64 and is resized back."""
    setup = BY_NAME[name]
    results, updates = run(built.engine(setup), [item(setup, "odd", 2, size=(72, 56))])
    assert (results[0][0].width, results[0][0].height) == (72, 56)
    assert Image.open(io.BytesIO(results[0][0].png)).size == (72, 56)
    assert updates[0].previews[0].size == (128, 102)  # the preview of the 80x64 run
    photo = item(setup, "odd-i2i", 2, kind=JobKind.IMG2IMG, image=PHOTO, strength=0.5, size=(72, 56))
    assert Image.open(io.BytesIO(run(built.engine(setup), [photo])[0][0][0].png)).size == (72, 56)


def test_families_flux_guidance_and_text_length(built: Built) -> None:
    """[schnell] has no guidance input and reads 256 T5 tokens; [dev] takes guidance and reads 512."""
    schnell, dev = BY_NAME["flux-schnell"], BY_NAME["flux-dev"]
    s_engine, d_engine = built.engine(schnell), built.engine(dev)
    s_kwargs = s_engine._call_kwargs(s_engine._pipes.generate, [item(schnell, "a", 1)], key(schnell))
    d_kwargs = d_engine._call_kwargs(d_engine._pipes.generate, [item(dev, "a", 1)], key(dev))
    assert s_kwargs["max_sequence_length"] == 256 and "guidance_scale" not in s_kwargs
    assert d_kwargs["max_sequence_length"] == 512 and d_kwargs["guidance_scale"] == 3.5
    assert "negative_prompt" not in s_kwargs and "negative_prompt" not in d_kwargs
    low, _ = run(d_engine, [item(dev, "low", 1, guidance=1.0)])
    high, _ = run(d_engine, [item(dev, "high", 1, guidance=6.0)])
    assert diff(low[0][0], high[0][0]) > 0


def key(setup: Setup) -> BatchKey:
    it = item(setup, "k", 1)
    return BatchKey.of(
        it.request,
        width=it.width,
        height=it.height,
        steps=it.steps,
        guidance=it.guidance,
        strength=it.strength,
    )


@pytest.mark.parametrize("name", ["sd1", "sdxl", "sd3"])
def test_families_negative_prompts_steer_classifier_free_guidance(built: Built, name: str) -> None:
    setup = BY_NAME[name]
    engine = built.engine(setup)
    plain, _ = run(engine, [item(setup, "plain", 4)])
    steered, _ = run(engine, [item(setup, "steered", 4, negative_prompt="blue background")])
    assert diff(plain[0][0], steered[0][0]) > 0


def test_families_flux_has_no_negative_branch(built: Built) -> None:
    setup = BY_NAME["flux-dev"]
    plain, _ = run(built.engine(setup), [item(setup, "plain", 4)])
    steered, _ = run(built.engine(setup), [item(setup, "steered", 4, negative_prompt="blue background")])
    assert diff(plain[0][0], steered[0][0]) == 0


def test_families_sdxl_jobs_without_a_negative_prompt_get_zeros_in_any_batch(built: Built) -> None:
    """SDXL's unconditional input for an empty negative prompt is zeros (as the pipeline does for a call
    with none), also when a batch mixes jobs with and without one."""
    setup = BY_NAME["sdxl"]
    engine = built.engine(setup)
    alone, _ = run(engine, [item(setup, "mine", 4)])
    mixed, _ = run(engine, [item(setup, "other", 9, negative_prompt="blue"), item(setup, "mine", 4)])
    reference = engine._pipes.generate(
        prompt=["a red circle on a blue background"],
        negative_prompt=None,
        generator=[torch.Generator("cpu").manual_seed(4)],
        num_inference_steps=setup.steps,
        guidance_scale=setup.guidance,
        width=64,
        height=64,
    ).images[0]
    expected = np.asarray(reference, dtype=np.int16)
    assert int(np.abs(pixels(alone[0][0]) - expected).max()) == 0
    assert int(np.abs(pixels(mixed[1][0]) - expected).max()) <= TOLERANCE


def tiny_preview_decoder(out_dir: Path, latent_channels: int) -> Path:
    from diffusers import AutoencoderTiny

    torch.manual_seed(0)
    # mypy sees diffusers' dummy placeholder class for AutoencoderTiny, which has no save_pretrained.
    decoder: Any = AutoencoderTiny(  # type: ignore[no-untyped-call]
        latent_channels=latent_channels,
        encoder_block_out_channels=(8, 8, 8, 8),
        decoder_block_out_channels=(8, 8, 8, 8),
        num_encoder_blocks=(1, 1, 1, 1),
        num_decoder_blocks=(1, 1, 1, 1),
    )
    decoder.save_pretrained(out_dir)
    return out_dir


@pytest.mark.parametrize("name", ["sd3", "flux-dev"])
def test_families_16_channel_preview_decoder(built: Built, name: str) -> None:
    """A TAESD3/TAEF1-style decoder (16 latent channels) gives the previews of SD3 and FLUX."""
    setup = BY_NAME[name]
    decoder = tiny_preview_decoder(built.root / f"taesd16-{name}", 16)
    engine = DiffusersEngine.load(
        built.settings(setup, preview_decoder=str(decoder), adapters=[], safety=None)
    )
    _, updates = run(engine, [item(setup, "a", 1, count=2)])
    assert [len(u.previews) for u in updates] == [2] * (setup.steps - 1) + [0]
    assert updates[0].previews[0].size == (128, 128)


def test_families_refuse_at_start_what_they_cannot_do(built: Built, tiny_edit_model_dir: Path) -> None:
    flux, sd1, sd3 = BY_NAME["flux-schnell"], BY_NAME["sd1"], BY_NAME["sd3"]
    cases: list[tuple[EngineSettings, str]] = [
        (built.settings(flux, scheduler="LCMScheduler"), "'LCMScheduler' does not fit FLUX.1"),
        (
            built.settings(sd1, scheduler="FlowMatchEulerDiscreteScheduler"),
            "takes noise-prediction schedulers",
        ),
        (
            built.settings(sd3, timestep_spacing="trailing"),
            "timestep_spacing does not apply to Stable Diffusion 3",
        ),
        (
            built.settings(sd3, preview_decoder=str(tiny_preview_decoder(built.root / "taesd4", 4))),
            "reads 4-channel latents but Stable Diffusion 3/3.5 makes 16-channel ones",
        ),
        (  # an SD 1.x LoRA on FLUX: keys that match none of its layers
            built.settings(flux, adapters=[AdapterSettings(name="sd", path=str(built.lora("sd1")))]),
            "adapter 'sd' from .* matched no layer of this FLUX.1 model",
        ),
        (  # an instruction-editing pipeline is no main model
            built.settings(sd1, model=str(tiny_edit_model_dir)),
            "StableDiffusionInstructPix2PixPipeline is not a supported model family \\(an instruction-editing "
            "pipeline goes in edit_model\\); brushfire runs Stable Diffusion 1.x/2.x",
        ),
        (
            built.settings(
                sd1, safety=SafetySettings(model=str(built.classifier(True)), unsafe_labels=["porn"])
            ),
            "has no label 'porn'; its labels are \\['normal', 'nsfw'\\]",
        ),
        (
            built.settings(sd1, safety=SafetySettings(model=str(built.root / "nothing"))),
            "cannot load the classifier safety checker",
        ),
    ]
    for settings, message in cases:
        with pytest.raises(EngineError, match=message):
            DiffusersEngine.load(settings)


def test_families_unknown_pipeline_families_are_named(tiny_edit_model_dir: Path) -> None:
    from diffusers import StableDiffusionInstructPix2PixPipeline

    pipe = StableDiffusionInstructPix2PixPipeline.from_pretrained(tiny_edit_model_dir)  # type: ignore[no-untyped-call]  # untyped in diffusers
    with pytest.raises(
        EngineError, match="StableDiffusionInstructPix2PixPipeline is not a supported model family"
    ):
        DiffusersEngine.from_pipeline(EngineSettings(device="cpu"), pipe, model_name="ip2p")


@pytest.mark.parametrize("name", ["sd1", "sdxl-turbo", "flux-schnell"])
def test_families_clip_safety_checker(built: Built, name: str) -> None:
    """Stable Diffusion's CLIP concept checker as the independent checker, on families that ship none."""
    setup = BY_NAME[name]
    verdicts = []
    for unsafe in (True, False):
        checker = save_clip_checker(built.root / f"clip-{name}-{unsafe}", unsafe=unsafe)
        safety = SafetySettings(kind="clip", model=str(checker))
        engine = DiffusersEngine.load(built.settings(setup, safety=safety, adapters=[]))
        results, _ = run(engine, [item(setup, "a", 1, count=2)])
        verdicts.append([img.nsfw for img in results[0]])
        assert all(pixels(img).max() > 0 for img in results[0])
    assert verdicts == [[True, True], [False, False]]


def test_families_the_pipelines_own_checker_is_off_when_an_independent_one_runs(built: Built) -> None:
    """An SD 1.x folder with its own checker: not loaded (so not run twice) when `safety` is set."""
    from diffusers import StableDiffusionPipeline
    from transformers import CLIPImageProcessor

    model = built.model("sd1")
    pipe = StableDiffusionPipeline.from_pretrained(model)  # type: ignore[no-untyped-call]  # untyped in diffusers
    checker_dir = save_clip_checker(built.root / "own-checker", unsafe=True)
    from diffusers.pipelines.stable_diffusion.safety_checker import StableDiffusionSafetyChecker

    pipe.register_modules(
        safety_checker=StableDiffusionSafetyChecker.from_pretrained(checker_dir),
        feature_extractor=CLIPImageProcessor.from_pretrained(checker_dir),
    )
    pipe.register_to_config(requires_safety_checker=True)
    pipe.save_pretrained(built.root / "sd1-checked")
    setup = BY_NAME["sd1"]
    own = DiffusersEngine.load(
        built.settings(setup, model=str(built.root / "sd1-checked"), safety=None, adapters=[])
    )
    assert own._pipes.generate.safety_checker is not None
    blacked, _ = run(own, [item(setup, "a", 1)])
    assert blacked[0][0].nsfw and pixels(blacked[0][0]).max() == 0  # the pipeline's checker blacks out
    safe = SafetySettings(model=str(built.classifier(unsafe=False)))
    independent = DiffusersEngine.load(
        built.settings(setup, model=str(built.root / "sd1-checked"), safety=safe, adapters=[])
    )
    assert independent._pipes.generate.safety_checker is None
    passed, _ = run(independent, [item(setup, "b", 1)])
    assert not passed[0][0].nsfw and pixels(passed[0][0]).max() > 0


@pytest.mark.parametrize("name", ["sdxl", "flux-schnell"])
def test_families_instruction_edits_beside_any_family(
    built: Built, name: str, tiny_edit_model_dir: Path
) -> None:
    """An InstructPix2Pix edit model (SD 1.5-based) runs beside a main model of another family, previews
    included (its 4-channel latents get the SD projection, not the main model's)."""
    setup = BY_NAME[name]
    settings = built.settings(setup, edit_model=str(tiny_edit_model_dir), adapters=[])
    engine = DiffusersEngine.load(settings)
    assert engine.has_edit_model
    edit = make_item("e", 3, kind=JobKind.EDIT, image=PHOTO, prompt="make it blue", steps=3, guidance=5.0)
    results, updates = run(engine, [edit])
    assert Image.open(io.BytesIO(results[0][0].png)).size == (64, 64) and results[0][0].nsfw
    assert [len(u.previews) for u in updates] == [1, 1, 0]


@pytest.mark.parametrize(
    ("fault", "expected"),
    [
        (torch.cuda.OutOfMemoryError("CUDA out of memory"), EngineOutOfMemory),
        (ValueError("bad"), EngineError),
    ],
)
def test_families_a_failing_safety_checker_fails_the_batch(
    built: Built, monkeypatch: pytest.MonkeyPatch, fault: BaseException, expected: type
) -> None:
    """No picture goes out unchecked: a checker fault fails the batch (out of memory: split and retried)."""
    setup = BY_NAME["sd1"]
    engine = built.engine(setup)
    assert engine._safety is not None

    def broken(images: list[Image.Image]) -> list[bool]:
        raise fault

    monkeypatch.setattr(engine._safety, "flags", broken)
    with pytest.raises(expected):
        run(engine, [item(setup, "a", 1)])
    monkeypatch.undo()
    assert run(engine, [item(setup, "b", 1)])[0][0][0].nsfw
