"""A power user's per-job controls: steps, guidance, exact size (imagine) and seed (edit), each bounded by
the server's policy (/settings job-limits), priced by steps x pixels, refused before any charge."""

from __future__ import annotations

import io
import sqlite3
from pathlib import Path
from typing import Any

import pytest
from PIL import Image

import run
from bot.core.errors import InvalidInput
from bot.core.jobplan import JobPlan
from bot.core.plans import Controls, ImagineOptions, Planner, Requester
from bot.core.quotas.pricing import QuotaSettings, quote
from bot.core.settings import Settings
from bot.core.styles import StyleBook
from inference.vocabulary import Lane
from storage.guilds import GuildSettings
from tests.bot.harness import admin_do, build_world, embed_of, ephemeral_reply, is_result, running_bot
from tests.bot.test_cli import rows, write_config
from tests.fakediscord import FakeDiscord

ALICE = Requester(user_id=10, guild_id=20, channel_id=30, name="alice")


def planner() -> Planner:
    settings = Settings(engine={"model": "some/sd-model"})
    return Planner(settings, StyleBook(settings.styles, settings.aspects))


def imagine(controls: Controls, guild: GuildSettings | None = None, **options: object) -> JobPlan:
    return planner().plan_imagine(
        ALICE,
        ImagineOptions(prompt="a fox", controls=controls, **options),  # type: ignore[arg-type]
        guild or GuildSettings(guild_id=20),
    )


def test_controls_reach_the_plan_and_the_worker_request() -> None:
    plan = imagine(Controls(steps=12, guidance=3.5, width=256, height=128), style="photo")
    assert (plan.steps, plan.guidance, plan.width, plan.height) == (12, 3.5, 256, 128)  # over the style's
    request = plan.request("job1", "u", Lane.FAST)
    assert (request.steps, request.guidance, request.width, request.height) == (12, 3.5, 256, 128)
    assert request.prompt == plan.model_prompt and request.seed == plan.seed and request.count == plan.count
    plain = imagine(Controls(), style="photo")  # no controls: the style's own steps and guidance
    style = next(s for s in Settings().styles if s.name == "photo")
    assert (plain.steps, plain.guidance) == (style.steps, style.guidance)


@pytest.mark.parametrize(
    ("controls", "guild", "options", "expected"),
    [
        (Controls(steps=61), {}, {}, "1 to 60 steps"),  # the configured cap
        (Controls(steps=0), {}, {}, "not 0"),
        (Controls(steps=21), {"max_steps": 20}, {}, "1 to 20 steps"),  # the server's own cap
        (Controls(guidance=31.0), {}, {}, "Guidance must be between 0 and 30"),
        (Controls(width=256), {}, {}, "both a width and a height"),
        (Controls(width=250, height=256), {}, {}, "multiples of 8"),
        (Controls(width=256, height=256), {}, {"aspect": "1:1"}, "either an aspect"),
        (Controls(width=512, height=512), {"max_pixels": 128 * 128}, {}, "at most 16384"),
        (Controls(width=2048, height=2048), {}, {}, "this server allows at most"),  # the worker's cap
    ],
)
def test_out_of_bounds_controls_are_refused(
    controls: Controls, guild: dict[str, Any], options: dict[str, Any], expected: str
) -> None:
    with pytest.raises(InvalidInput) as caught:
        imagine(controls, GuildSettings(guild_id=20, **guild), **options)
    assert expected in str(caught.value)


def test_samplers_are_picked_from_the_fixed_list_within_the_servers_choice() -> None:
    plan = imagine(Controls(sampler="euler-ancestral"))
    assert plan.sampler == "EulerAncestralDiscreteScheduler"
    assert plan.request("j", "u", Lane.FAST).sampler == "EulerAncestralDiscreteScheduler"
    assert imagine(Controls()).sampler is None  # the model's own
    with pytest.raises(InvalidInput, match=r"`os\.system` is not a sampler this server allows"):
        imagine(Controls(sampler="os.system"))
    only = GuildSettings(guild_id=20, allowed_samplers=("ddim",))
    with pytest.raises(InvalidInput, match=r"not a sampler this server allows \(ddim\)"):
        imagine(Controls(sampler="euler"), only)
    assert imagine(Controls(sampler="ddim"), only).sampler == "DDIMScheduler"


def test_a_server_pixel_cap_shrinks_aspect_sizes_too() -> None:
    plan = imagine(Controls(), GuildSettings(guild_id=20, max_pixels=128 * 128), aspect="16:9")
    assert plan.width is not None and plan.height is not None
    assert plan.width * plan.height <= 128 * 128 and plan.width > plan.height


def test_edit_takes_a_seed() -> None:
    buf = io.BytesIO()
    Image.new("RGB", (64, 64)).save(buf, format="PNG")
    plan = planner().plan_edit(
        ALICE,
        image=buf.getvalue(),
        instruction="snow",
        strength=None,
        guild=GuildSettings(guild_id=20),
        seed=42,
    )
    assert plan.seed == 42
    with pytest.raises(InvalidInput, match="seed must be between 0"):
        planner().plan_edit(
            ALICE,
            image=buf.getvalue(),
            instruction="snow",
            strength=None,
            guild=GuildSettings(guild_id=20),
            seed=-1,
        )


def test_cost_scales_with_steps_and_pixels() -> None:
    from bot.core.quotas.pricing import CostSpec
    from inference.vocabulary import JobKind

    qs = QuotaSettings()
    base = quote(qs, CostSpec(JobKind.GENERATE, 512, 512, 30))
    assert quote(qs, CostSpec(JobKind.GENERATE, 512, 512, 60)) == 2 * base
    assert quote(qs, CostSpec(JobKind.GENERATE, 1024, 512, 60)) == 4 * base


def charged(settings: Settings) -> list[tuple[int, str]]:
    with sqlite3.connect(settings.database.path) as conn:
        return conn.execute("SELECT cost, state FROM ledger ORDER BY created_at").fetchall()


async def test_imagine_controls_on_discord_are_bounded_by_the_server_and_priced(
    fake_discord: FakeDiscord, settings: Settings, worker: str
) -> None:
    world = build_world(fake_discord)
    async with running_bot(fake_discord, settings, worker) as bot:
        options = {
            "prompt": "a red fox",
            "seed": 1,
            "steps": 8,
            "width": 128,
            "height": 64,
            "sampler": "euler",
        }
        inter = await fake_discord.send_slash("imagine", options, user=world.alice, channel=world.channel)
        result = await inter.wait_original(is_result, timeout=60)
        with Image.open(io.BytesIO(result.attachments[0].data)) as img:
            assert img.size == (128, 64)
        fields = {f["name"]: f["value"] for f in embed_of(result)["fields"]}
        assert fields["Size"] == "128x64"
        qs = bot.services.quotas.settings
        from bot.core.quotas.pricing import CostSpec
        from inference.vocabulary import JobKind

        assert charged(settings) == [(quote(qs, CostSpec(JobKind.GENERATE, 128, 64, 8)), "committed")]

        text = await admin_do(
            fake_discord, world, "settings job-limits", {"max_steps": 4, "max_megapixels": 0.01}
        )
        assert "Saved" in text
        # The server's output format: the worker encodes WebP, and the bot stores and posts those bytes.
        assert "Saved" in await admin_do(fake_discord, world, "settings output-format", {"format": "webp"})
        inter = await fake_discord.send_slash(
            "imagine", {"prompt": "a fox"}, user=world.alice, channel=world.channel
        )
        webp = await inter.wait_original(is_result, timeout=60)
        attachment = webp.attachments[0]
        assert attachment.data[:4] == b"RIFF" and attachment.data[8:12] == b"WEBP"
        with sqlite3.connect(settings.database.path) as conn:
            stored = conn.execute(
                "SELECT image FROM generations ORDER BY created_at DESC LIMIT 1"
            ).fetchone()[0]
        assert stored == attachment.data
        assert "Saved" in await admin_do(fake_discord, world, "settings samplers", {"names": "ddim, unipc"})
        assert "not a sampler" in await admin_do(fake_discord, world, "settings samplers", {"names": "warp"})
        refused: list[tuple[dict[str, Any], str]] = [
            ({"steps": 5}, "1 to 4 steps"),
            ({"width": 128, "height": 128}, "at most 10000"),
            ({"guidance": 31.0}, "Guidance must be between"),
            ({"sampler": "euler"}, "not a sampler this server allows (ddim, unipc)"),
        ]
        for bad, expected in refused:
            inter = await fake_discord.send_slash(
                "imagine", {"prompt": "a cat", **bad}, user=world.alice, channel=world.channel, validate=False
            )
            assert expected in await ephemeral_reply(inter), bad
    assert len(charged(settings)) == 2  # the refused jobs charged nothing


def test_cli_imagine_and_edit_take_the_controls(
    tiny_models: tuple[Path, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    config = write_config(tmp_path, tiny_models)
    out = tmp_path / "fox.png"
    argv = ["--config", str(config), "imagine", "a fox", "-o", str(out), "--steps", "2", "--width", "96"]
    argv += ["--sampler", "ddim"]
    assert run.main([*argv, "--height", "64"]) == 0
    with Image.open(out) as img:
        assert img.size == (96, 64)
    # A bad argument ends the command at once with the usage status, 2 (as run.py says), charging nothing.
    assert run.main([*argv, "--height", "64", "--steps", "999"]) == 2
    assert "1 to 60 steps here, not 999" in capsys.readouterr().err
    edited = tmp_path / "snowy.png"
    edit = ["--config", str(config), "edit", str(out), "snow", "-o", str(edited), "--seed", "4242"]
    assert run.main(edit) == 0
    db = tmp_path / "cli.sqlite3"
    assert rows(db, "SELECT kind, steps, width, height FROM generations ORDER BY created_at")[0] == (
        "generate",
        2,
        96,
        64,
    )
    assert rows(db, "SELECT seed FROM generations WHERE kind = 'edit'") == [(4242,)]
    (parameters,) = rows(db, "SELECT parameters FROM jobs ORDER BY created_at LIMIT 1")[0]
    assert '"sampler": "DDIMScheduler"' in parameters
    assert len(rows(db, "SELECT * FROM ledger")) == 2  # the refused job charged nothing
