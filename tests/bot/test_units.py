"""Small pure pieces: blocked words, plan round trips, upload fitting, button layout, the error text, the
worker supervisor's restarts, and the slash commands' shape."""

from __future__ import annotations

import asyncio
import io
import re
import sys
from typing import Any

import pytest
from PIL import Image

from bot.core.errors import BrushfireError, InvalidInput
from bot.core.outcomes import JobOutcome
from bot.core.plans import Action, JobPlan, find_blocked, parse_lane
from bot.core.settings import Settings
from bot.delivery import compose_result, fit_upload
from bot.errors import user_message
from bot.i18n import ENGLISH
from bot.views import result_view
from inference.vocabulary import JobId, JobKind, Lane
from run import WorkerSupervisor
from storage.generations import GenerationRecord
from storage.guilds import GuildSettings
from storage.jobs import JobRecord, JobState


@pytest.mark.parametrize(
    ("text", "blocked", "found"),
    [
        ("a Gory scene", ["gory"], "gory"),
        ("category theory", ["gory"], None),  # whole words only
        ("blood-red sky", ["blood"], "blood"),
        ("id 12345", ["re:\\d{5}"], "re:\\d{5}"),
        ("fine", ["re:(unclosed"], None),  # a broken pattern is ignored, not a crash
    ],
)
def test_find_blocked(text: str, blocked: list[str], found: str | None) -> None:
    assert find_blocked(text, blocked) == found


def test_plan_parameters_round_trip_without_the_image() -> None:
    plan = JobPlan(
        action=Action.VARY,
        kind=JobKind.IMG2IMG,
        prompt="p",
        model_prompt="styled p",
        negative="",
        model_negative="n",
        style="photo",
        width=64,
        height=64,
        count=1,
        seed=5,
        strength=0.3,
        lane=Lane.RELAX,
        parent_job_id="a" * 32,
        image=b"png bytes",
    )
    text = plan.parameters()
    assert "png bytes" not in text
    again = JobPlan.from_parameters(text, image=b"png bytes")
    assert again == plan


def test_parse_lane() -> None:
    assert parse_lane(None) is None and parse_lane("auto") is None
    assert parse_lane("relax") is Lane.RELAX
    with pytest.raises(InvalidInput, match="not a lane"):
        parse_lane("turbo")


def noisy_png(size: int) -> bytes:
    img = Image.effect_noise((size, size), 100).convert("RGB")
    buf = io.BytesIO()
    img.save(buf, format="PNG")
    return buf.getvalue()


def test_fit_upload_falls_back_to_lossy_formats() -> None:
    png = noisy_png(256)
    assert fit_upload(png, len(png)) == (png, "png")
    data, ext = fit_upload(png, len(png) // 2)
    assert ext in ("webp", "jpg") and len(data) <= len(png) // 2


@pytest.mark.parametrize("count", [0, 1, 4, 8])
async def test_result_buttons_fit_discord_limits(count: int) -> None:
    """A grid of `count` images, or (count 0) a single image with its tools."""
    single = count == 0
    view = result_view(JobId("f" * 32), list(range(count or 1)), single=single)
    rows = view.to_components()
    assert len(rows) <= 5 and all(len(r["components"]) <= 5 for r in rows)
    ids = [c["custom_id"] for r in rows for c in r["components"]]
    # re-roll, edit, delete, submit; a grid: V and U per image; a single image: vary, upscale subtle and
    # creative, then zoom out 1.5x/2x, vary region, the pan price and four pans
    assert len(ids) == 4 + (3 + 8 if single else 2 * count) and all(len(i) <= 100 for i in ids)
    assert len(set(ids)) == len(ids)
    assert view.timeout is None


def test_user_message_hides_unexpected_errors_behind_a_reference(caplog: pytest.LogCaptureFixture) -> None:
    assert user_message(BrushfireError("plain words")) == ("plain words", True)
    text, expected = user_message(RuntimeError("database exploded"))
    assert not expected and "reference" in text and "exploded" not in text
    ref = text.split("`")[1]
    assert any(ref in r.getMessage() for r in caplog.records)


async def test_supervisor_restarts_a_crashing_worker_with_backoff() -> None:
    supervisor = WorkerSupervisor([sys.executable, "-c", "import sys; sys.exit(3)"], backoff_s=(0.05, 0.1))
    task = asyncio.create_task(supervisor.run())
    for _ in range(200):  # three starts take well under a second on an idle machine; allow a loaded one
        if supervisor.starts >= 3:
            break
        await asyncio.sleep(0.1)
    await supervisor.stop(grace_s=1)
    task.cancel()
    await asyncio.gather(task, return_exceptions=True)
    assert supervisor.starts >= 3


async def test_supervisor_stops_a_running_worker() -> None:
    supervisor = WorkerSupervisor([sys.executable, "-c", "import time; time.sleep(60)"])
    task = asyncio.create_task(supervisor.run())
    await asyncio.sleep(0.5)
    await supervisor.stop(grace_s=5)
    await asyncio.wait_for(task, 5)
    assert supervisor.starts == 1


async def test_commands_have_unique_names_within_discord_limits(settings: Settings) -> None:
    from bot.client import EXTENSIONS, ImageBot
    from bot.core.services import open_services

    async with open_services(settings) as services:
        bot = ImageBot(services)
        for ext in EXTENSIONS:
            await bot.load_extension(ext)
        payloads = [c.to_dict(bot.tree) for c in bot.tree.get_commands()]
        await bot.close()
    names = [p["name"] for p in payloads]
    assert sorted(names) == [
        "challenge",
        "challenge-admin",
        "edit",
        "help",
        "imagine",
        "quota",
        "quota-admin",
        "settings",
        "style",
        "styles",
    ]

    def check(command: dict[str, Any], depth: int = 0) -> None:
        assert re.fullmatch(r"[a-z0-9_-]{1,32}", command["name"]), command["name"]
        assert 1 <= len(command["description"]) <= 100, command["name"]
        options = command.get("options", [])
        assert len(options) <= 25 and len({o["name"] for o in options}) == len(options)
        for option in options:
            assert len(option.get("choices", [])) <= 25
            if option["type"] in (1, 2):  # subcommands and groups
                check(option, depth + 1)
            else:
                check({"name": option["name"], "description": option["description"]}, depth + 1)

    for payload in payloads:
        check(payload)
    admin = next(p for p in payloads if p["name"] == "quota-admin")
    settings_cmd = next(p for p in payloads if p["name"] == "settings")
    for hidden in (admin, settings_cmd):
        assert int(hidden["default_member_permissions"]) == 1 << 5


def outcome_with(nsfw: list[bool]) -> JobOutcome:
    plan = JobPlan(
        action=Action.IMAGINE,
        kind=JobKind.GENERATE,
        prompt="a beach",
        model_prompt="a beach",
        negative="",
        model_negative="",
        style=None,
        width=64,
        height=64,
        count=len(nsfw),
        seed=1,
    )
    job = JobRecord(
        job_id=JobId("a" * 32),
        channel_id=1,
        user_id=2,
        kind=JobKind.GENERATE,
        parameters=plan.parameters(),
        cost=3,
    )
    gens = [
        GenerationRecord(
            generation_id=f"g{i}",
            job_id=job.job_id,
            index=i,
            prompt="a beach",
            seed=1 + i,
            width=64,
            height=64,
            steps=3,
            guidance=5.0,
            model="tiny",
            kind="generate",
            image=noisy_png(64),
            nsfw=flag,
        )
        for i, flag in enumerate(nsfw)
    ]
    return JobOutcome(job=job, state=JobState.SUCCEEDED, generations=gens)


async def test_flagged_images_are_spoilered_or_withheld_per_server() -> None:
    outcome = outcome_with([False, True])
    spoiler = compose_result(
        outcome, GuildSettings(guild_id=1, nsfw_mode="spoiler"), 10 * 1024 * 1024, ENGLISH
    )
    assert [f.filename.startswith("SPOILER_") for f in spoiler.files] == [False, True]
    refuse = compose_result(outcome, GuildSettings(guild_id=1, nsfw_mode="refuse"), 10 * 1024 * 1024, ENGLISH)
    assert len(refuse.files) == 1 and "1 image withheld" in refuse.content
    ids = [c["custom_id"] for r in refuse.view.to_components() for c in r["components"]]
    assert not any(i.endswith(":1") for i in ids)  # no Vary/Upscale for the withheld image
    fields = {f.name: f.value for f in refuse.embed.fields}
    cost = fields["Cost"]
    assert fields["Seed"] == "1, 2" and cost is not None and cost.startswith("3 credit")


def test_fit_upload_posts_each_stored_format_as_it_is() -> None:
    img = Image.new("RGB", (32, 32), (200, 40, 40))
    for fmt, ext in (("PNG", "png"), ("WEBP", "webp"), ("JPEG", "jpg")):
        buf = io.BytesIO()
        img.save(buf, format=fmt)
        data = buf.getvalue()
        assert fit_upload(data, len(data)) == (data, ext), fmt
