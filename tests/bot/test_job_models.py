"""A power user's model choice: /imagine model and `run.py imagine --model` pick one of the worker's served
models (`engine.extra_models` beside `engine.model`), within the server's `/settings models`, priced by
steps x pixels at that model's own default steps and size; a model not allowed or not served is refused
before anything is charged."""

from __future__ import annotations

import dataclasses
import io
from pathlib import Path

import pytest
from PIL import Image

import run
from bot.core.errors import InvalidInput
from bot.core.plans import Controls, ImagineOptions, Planner, Requester
from bot.core.quotas.pricing import CostSpec, quote
from bot.core.settings import Settings
from bot.core.styles import StyleBook
from inference.output import read_metadata
from inference.protocol import WorkerInfo
from inference.settings import EngineSettings, ExtraModelSettings, ModelDefaults
from inference.vocabulary import JobKind, Lane
from storage.guilds import GuildSettings
from tests.bot.harness import admin_do, build_world, embed_of, ephemeral_reply, is_result, running_bot
from tests.bot.test_cli import rows, write_config
from tests.bot.test_power_controls import charged
from tests.fakediscord import FakeDiscord

ALICE = Requester(user_id=10, guild_id=20, channel_id=30, name="alice")
WIDE = ModelDefaults(steps=2, guidance=5.0, width=96, height=64)


@pytest.fixture
def engine_settings(engine_settings: EngineSettings, tiny_models: tuple[Path, Path]) -> EngineSettings:
    """The tiny pipelines as the main model, and the same weights served again as `wide` with defaults
    of its own (96x64, 2 steps), so which model ran shows in the picture's size and metadata."""
    wide = ExtraModelSettings(name="wide", model=str(tiny_models[0]), defaults=WIDE)
    return engine_settings.model_copy(update={"extra_models": [wide]})


def planner(served: bool = True) -> Planner:
    settings = Settings(engine={"model": "some/sd-model"})
    p = Planner(settings, StyleBook(settings.styles, settings.aspects))
    if served:
        main = ModelDefaults(steps=25, width=512, height=512)
        models = {"some/sd-model": main, "turbo": ModelDefaults(steps=2, guidance=0.0, width=768, height=512)}
        p.adopt_worker_defaults(
            WorkerInfo(model="some/sd-model", defaults=main, has_edit_model=False, models=models)
        )
    return p


def imagine(p: Planner, model: str | None, guild: GuildSettings | None = None, **options: object) -> object:
    return p.plan_imagine(
        ALICE,
        ImagineOptions(prompt="a fox", controls=Controls(model=model), **options),  # type: ignore[arg-type]
        guild or GuildSettings(guild_id=20),
    )


def test_a_chosen_model_is_planned_and_priced_at_its_own_defaults() -> None:
    p = planner()
    plan = p.plan_imagine(
        ALICE, ImagineOptions(prompt="a fox", controls=Controls(model="turbo")), GuildSettings(guild_id=20)
    )
    assert (plan.model, plan.steps, plan.width, plan.height) == ("turbo", 2, 768, 512)
    assert plan.request("j", "u", Lane.FAST).model == "turbo"
    wide = p.plan_imagine(
        ALICE,
        ImagineOptions(prompt="a fox", aspect="16:9", controls=Controls(model="turbo", steps=4)),
        GuildSettings(guild_id=20),
    )
    assert wide.steps == 4 and wide.width is not None and wide.width > 768  # its own size, shaped 16:9
    main = p.plan_imagine(ALICE, ImagineOptions(prompt="a fox"), GuildSettings(guild_id=20))
    assert (main.model, main.steps, main.width) == (None, None, None)  # the worker's main model decides
    named = p.plan_imagine(
        ALICE,
        ImagineOptions(prompt="a fox", controls=Controls(model="some/sd-model")),
        GuildSettings(guild_id=20),
    )
    assert named == dataclasses.replace(main, seed=named.seed)  # naming the main model is leaving it out


def test_a_model_not_allowed_or_not_served_is_refused() -> None:
    p = planner()
    with pytest.raises(
        InvalidInput, match=r"`nope` is not a model this server allows \(some/sd-model, turbo\)"
    ):
        imagine(p, "nope")
    only_main = GuildSettings(guild_id=20, allowed_models=("some/sd-model",))
    with pytest.raises(InvalidInput, match=r"`turbo` is not a model this server allows \(some/sd-model\)"):
        imagine(p, "turbo", only_main)
    assert p.policy.models(only_main, p.served_models or []) == ["some/sd-model"]
    # Before the worker has said what it serves, only the server's own list can refuse (the worker
    # refuses an unknown model itself, before anything is charged).
    unknown = planner(served=False)
    assert unknown.served_models is None
    imagine(unknown, "turbo")
    with pytest.raises(InvalidInput, match="not a model this server allows"):
        imagine(unknown, "turbo", only_main)


async def test_imagine_model_on_discord_within_the_servers_models(
    fake_discord: FakeDiscord, settings: Settings, worker: str, tiny_models: tuple[Path, Path]
) -> None:
    world = build_world(fake_discord)
    main = str(tiny_models[0])
    async with running_bot(fake_discord, settings, worker) as bot:
        choices = await fake_discord.autocomplete(
            "imagine", {"prompt": "x", "model": "wi"}, "model", user=world.alice, channel=world.channel
        )
        assert [c.value for c in choices] == ["wide"]
        inter = await fake_discord.send_slash(
            "imagine",
            {"prompt": "a red fox", "seed": 1, "model": "wide"},
            user=world.alice,
            channel=world.channel,
        )
        result = await inter.wait_original(is_result, timeout=60)
        with Image.open(io.BytesIO(result.attachments[0].data)) as img:
            assert img.size == (96, 64) and read_metadata(result.attachments[0].data)["model"] == "wide"
        fields = {f["name"]: f["value"] for f in embed_of(result)["fields"]}
        assert (fields["Size"], fields["Model"]) == ("96x64", "wide")
        qs = bot.services.quotas.settings
        assert charged(settings) == [(quote(qs, CostSpec(JobKind.GENERATE, 96, 64, 2)), "committed")]

        refused = await admin_do(fake_discord, world, "settings models", {"names": "wide, nope"})
        assert "`nope` is not a model the worker serves" in refused
        assert "Saved" in await admin_do(fake_discord, world, "settings models", {"names": main})
        choices = await fake_discord.autocomplete(
            "imagine", {"prompt": "x", "model": ""}, "model", user=world.alice, channel=world.channel
        )
        assert [c.value for c in choices] == [main]
        for model, expected in [("wide", f"not a model this server allows ({main})"), ("ghost", "`ghost`")]:
            inter = await fake_discord.send_slash(
                "imagine", {"prompt": "a cat", "model": model}, user=world.alice, channel=world.channel
            )
            assert expected in await ephemeral_reply(inter)
    assert len(charged(settings)) == 1  # the refused jobs charged nothing


def test_cli_imagine_model(
    tiny_models: tuple[Path, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    config = write_config(tmp_path, tiny_models)
    with config.open("a", encoding="utf-8") as f:
        f.write(
            f'[[engine.extra_models]]\nname = "wide"\nmodel = "{tiny_models[0]}"\n'
            "[engine.extra_models.defaults]\nsteps = 2\nwidth = 96\nheight = 64\n"
        )
    out = tmp_path / "fox.png"
    argv = ["--config", str(config), "imagine", "a fox", "-o", str(out)]
    assert run.main([*argv, "--model", "nope"]) == 2
    assert "`nope` is not a model this server allows" in capsys.readouterr().err
    assert run.main([*argv, "--model", "wide"]) == 0
    with Image.open(out) as img:
        assert img.size == (96, 64) and img.info["model"] == "wide"
    db = tmp_path / "cli.sqlite3"
    assert rows(db, "SELECT steps, width, height FROM generations") == [(2, 96, 64)]
    (parameters,) = rows(db, "SELECT parameters FROM jobs")[0]
    assert '"model": "wide"' in parameters
    assert len(rows(db, "SELECT * FROM ledger")) == 1  # the refused job charged nothing
