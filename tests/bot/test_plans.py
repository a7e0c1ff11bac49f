"""The planner: options into plans, refusals before any charge, and plans derived from earlier results."""

from __future__ import annotations

import functools
import io
from pathlib import Path

import pytest
from PIL import Image

from bot.core.errors import BadAttachment, BlockedContent, ChannelNotAllowed, InvalidInput, UnknownStyle
from bot.core.plans import Action, ImagineOptions, Planner, Requester
from bot.core.settings import Settings, load_settings
from bot.core.styles import StyleBook
from inference.protocol import MAX_COUNT, MAX_SEED, InpaintSpec, WorkerInfo
from inference.settings import BUNDLED_MODEL_DEFAULTS, ModelDefaults
from inference.vocabulary import JobKind, Lane
from storage.generations import GenerationRecord
from storage.guilds import GuildSettings

ALICE = Requester(user_id=10, guild_id=20, channel_id=30, name="alice")


def planner(**limits: object) -> Planner:
    # A configured 512x512 model, so aspect ratios have room to differ (the bundled one draws 64x64).
    engine = {"model": "some/sd-model"}
    settings = Settings(limits=limits, engine=engine) if limits else Settings(engine=engine)
    return Planner(settings, StyleBook(settings.styles, settings.aspects))


# A guild's settings with some fields set; partial keeps GuildSettings' own keyword types checked.
guild = functools.partial(GuildSettings, guild_id=20)


def png(size: tuple[int, int]) -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", size, (1, 2, 3)).save(buf, format="JPEG")
    return buf.getvalue()


def test_imagine_plan_applies_style_aspect_and_keeps_the_users_words() -> None:
    plan = planner().plan_imagine(
        ALICE, ImagineOptions(prompt="  a   fox ", style="photo", aspect="16:9", count=2, seed=5), guild()
    )
    assert plan.prompt == "a fox" and plan.model_prompt.startswith("a professional photograph of a fox")
    assert plan.kind is JobKind.GENERATE and plan.count == 2 and plan.seed == 5
    assert plan.width is not None and plan.height is not None, "an aspect ratio sets the size"
    assert plan.width > plan.height and plan.width % 8 == 0
    assert plan.width * plan.height <= Settings().worker.max_pixels
    assert plan.lane is None  # fast, falling back to relax when out of credits


def test_no_aspect_leaves_the_size_to_the_model_and_seeds_are_drawn() -> None:
    plan = planner().plan_imagine(ALICE, ImagineOptions(prompt="x"), guild(default_style="anime"))
    assert plan.width is None and plan.height is None
    assert plan.style == "anime"  # the server's default style
    assert 0 <= plan.seed <= MAX_SEED - MAX_COUNT


@pytest.mark.parametrize(
    ("options", "server", "error", "text"),
    [
        (ImagineOptions(prompt=""), guild(), InvalidInput, "empty"),
        (ImagineOptions(prompt="a" * 1001), guild(), InvalidInput, "1001 characters"),
        (ImagineOptions(prompt="a cat", negative="b" * 1100), guild(), InvalidInput, "negative prompt"),
        (ImagineOptions(prompt="a NaSty cat"), guild(blocked_words=("nasty",)), BlockedContent, "nasty"),
        (ImagineOptions(prompt="x", style="nope"), guild(), UnknownStyle, "nope"),
        (ImagineOptions(prompt="x", aspect="7:1"), guild(), InvalidInput, "7:1"),
        (ImagineOptions(prompt="x", count=3), guild(max_images_per_job=2), InvalidInput, "1 to 2"),
        (ImagineOptions(prompt="x", seed=MAX_SEED), guild(), InvalidInput, "seed"),
        (ImagineOptions(prompt="x", lane=Lane.RELAX), guild(relax_enabled=False), InvalidInput, "relax"),
        (ImagineOptions(prompt="x"), guild(allowed_channel_ids=(99,)), ChannelNotAllowed, "<#99>"),
    ],
)
def test_refusals_name_the_problem(
    options: ImagineOptions, server: GuildSettings, error: type[Exception], text: str
) -> None:
    with pytest.raises(error, match=text):
        planner().plan_imagine(ALICE, options, server)


def test_edit_plan_reencodes_the_upload_as_png() -> None:
    plan = planner().plan_edit(ALICE, image=png((80, 60)), instruction="snow", strength=None, guild=guild())
    assert plan.kind is JobKind.EDIT and plan.image is not None and plan.image.startswith(b"\x89PNG")
    assert plan.strength == Settings().limits.edit_strength


@pytest.mark.parametrize(
    ("data", "text"),
    [
        (b"GIF89a....", "not a PNG, JPEG or WebP"),
        (png((80, 60))[:200], "cannot be used"),  # truncated
        (png((3000, 3000)), "pixels"),
    ],
)
def test_bad_uploads(data: bytes, text: str) -> None:
    with pytest.raises(BadAttachment, match=text):
        planner().plan_edit(ALICE, image=data, instruction="snow", strength=None, guild=guild())


def test_strength_out_of_range() -> None:
    with pytest.raises(InvalidInput, match="Strength"):
        planner().plan_edit(ALICE, image=png((64, 64)), instruction="snow", strength=1.5, guild=guild())


def source(width: int = 512, height: int = 512) -> GenerationRecord:
    return GenerationRecord(
        generation_id="g" * 32,
        job_id="a" * 32,
        index=1,
        prompt="a fox",
        seed=3,
        width=width,
        height=height,
        steps=20,
        guidance=7.0,
        model="m",
        kind="generate",
        image=b"\x89PNG...",
    )


def test_derived_plans_link_to_their_parent() -> None:
    p = planner()
    parent = p.plan_imagine(ALICE, ImagineOptions(prompt="a fox", count=4, lane=Lane.RELAX), guild())
    vary = p.derive(Action.VARY, parent, source(), guild())
    assert (vary.kind, vary.count, vary.parent_generation_id) == (JobKind.IMG2IMG, 1, "g" * 32)
    assert vary.strength == Settings().limits.vary_strength and vary.lane is Lane.RELAX
    up = p.derive(Action.UPSCALE, parent, source(), guild())
    assert (up.kind, up.width, up.height, up.creative, up.strength) == (
        JobKind.UPSCALE,
        1024,
        1024,
        False,
        None,
    )
    assert up.seed == parent.seed  # the upscaler alone draws no noise
    creative = p.derive(Action.UPSCALE_CREATIVE, parent, source(), guild())
    assert (creative.kind, creative.creative) == (JobKind.UPSCALE, True)
    assert creative.strength == Settings().limits.upscale_strength
    with pytest.raises(
        InvalidInput, match="over this server's limit"
    ):  # 4096x3072 is over the 4 MP for upscales
        p.derive(Action.UPSCALE, parent, source(2048, 1536), guild())
    assert not p.derive(Action.VARY, creative, source(), guild()).creative
    edit = p.derive(Action.EDIT, parent, source(), guild(relax_enabled=False), "add snow")
    assert edit.kind is JobKind.EDIT and edit.prompt == "add snow" and edit.lane is None
    reroll = p.reroll(parent, "a" * 32, None, guild())
    assert reroll.action is Action.REROLL and reroll.parent_job_id == "a" * 32 and reroll.count == 4
    seeds = {p.reroll(parent, "a" * 32, None, guild()).seed for _ in range(5)}
    assert len(seeds) > 1  # each re-roll draws a fresh seed


def test_inpaint_plans_price_their_canvas_and_results_derive_as_pictures() -> None:
    p = planner()
    parent = p.plan_imagine(ALICE, ImagineOptions(prompt="a fox"), guild())
    zoom = p.derive(Action.ZOOM_OUT, parent, source(), guild(), spec=InpaintSpec(op="zoom", zoom=2.0))
    assert (zoom.kind, zoom.width, zoom.height, zoom.canvas) == (JobKind.INPAINT, 1024, 1024, "zoom:2")
    request = zoom.request("j" * 32, "1", Lane.FAST)
    assert request.inpaint == InpaintSpec(op="zoom", zoom=2.0) and (request.width, request.height) == (
        1024,
        1024,
    )
    region = p.derive(
        Action.VARY_REGION,
        parent,
        source(),
        guild(),
        "a red fox",
        spec=InpaintSpec(op="region", cells=(0, 3)),
    )
    assert (region.prompt, region.model_prompt, region.canvas) == ("a red fox", "a red fox", "region:0.3")
    assert (region.width, region.height) == (512, 512)
    same = p.derive(
        Action.VARY_REGION, parent, source(), guild(), "a fox", spec=InpaintSpec(op="region", cells=(4,))
    )
    assert same.model_prompt == parent.model_prompt  # the job's own prompt keeps its style
    # A zoomed result is varied like any picture: no canvas rides along into an img2img job.
    vary = p.derive(Action.VARY, zoom, source(1024, 1024), guild())
    assert vary.canvas is None and vary.request("k" * 32, "1", Lane.FAST).inpaint is None
    p.can_inpaint = False
    with pytest.raises(InvalidInput, match="cannot zoom out"):
        p.derive(Action.PAN, parent, source(), guild(), spec=InpaintSpec(op="pan", direction="left"))


# A worker elsewhere serving a wide few-step model.
WIDE = WorkerInfo(
    model="some/wide-turbo",
    defaults=ModelDefaults(steps=4, guidance=0.0, width=768, height=512, img2img_strength=0.5),
    has_edit_model=False,
)


def configured(tmp_path: Path, text: str) -> Planner:
    path = tmp_path / "config.toml"
    path.write_text(text, encoding="utf-8")
    settings = load_settings(path, {})
    return Planner(settings, StyleBook(settings.styles, settings.aspects))


@pytest.mark.parametrize(
    "config",
    [
        "",  # the bundled model's defaults, which the settings fill in themselves
        '[engine]\nmodel = "some/sd-model"\n',  # the generic defaults of a configured model
        '[engine]\nmodel = "some/sd-model"\n[engine.defaults]\n',  # an empty table, as the example has
    ],
)
def test_defaults_nobody_set_give_way_to_the_workers(tmp_path: Path, config: str) -> None:
    p = configured(tmp_path, config)
    before = p.defaults
    assert p.adopt_worker_defaults(WIDE)
    assert p.defaults == WIDE.defaults and p.defaults != before
    assert p.native_size() == (768, 512)
    square = p.plan_imagine(ALICE, ImagineOptions(prompt="x", aspect="1:1"), guild())
    assert (square.width, square.height) == (640, 640)  # about the worker's model's pixel count
    assert not p.adopt_worker_defaults(WIDE)  # nothing new the second time


def test_defaults_set_by_hand_are_kept_over_the_workers(tmp_path: Path) -> None:
    p = configured(tmp_path, "[engine.defaults]\nsteps = 30\nwidth = 512\n")
    assert p.defaults_by_hand == {"steps", "width"}
    assert p.adopt_worker_defaults(WIDE)
    assert (p.defaults.steps, p.defaults.width) == (30, 512)  # as set
    assert (p.defaults.height, p.defaults.guidance, p.defaults.img2img_strength) == (
        512,
        0.0,
        0.5,
    )  # the worker's


def test_defaults_set_in_the_environment_count_as_set_by_hand(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("BRUSHFIRE_ENGINE__DEFAULTS__WIDTH", "64")
    monkeypatch.setenv("BRUSHFIRE_ENGINE__DEFAULTS__HEIGHT", "64")
    p = configured(tmp_path, "")
    p.adopt_worker_defaults(WIDE)
    assert p.native_size() == (64, 64) and p.defaults.steps == 4


def test_all_defaults_set_by_hand_keep_the_planner_as_it_was(tmp_path: Path) -> None:
    table = "".join(f"{k} = {v}\n" for k, v in BUNDLED_MODEL_DEFAULTS.model_dump(exclude_none=True).items())
    p = configured(tmp_path, f'[engine]\nmodel = "some/sd-model"\n[engine.defaults]\n{table}')
    assert not p.adopt_worker_defaults(WIDE)
    assert p.defaults == BUNDLED_MODEL_DEFAULTS
