"""Style presets as data: guild presets beside configured ones, a preset's default shape, and its LoRA."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from bot.core.plans import ImagineOptions, Planner, Requester
from bot.core.settings import Settings
from bot.core.styles import StyleBook, StylePreset
from inference.settings import AdapterSettings, EngineSettings, ModelDefaults
from inference.vocabulary import Lane
from storage.guilds import GuildSettings

ALICE = Requester(user_id=10, guild_id=20, channel_id=30, name="alice")
INK = AdapterSettings(name="ink", path="/srv/lora/ink.safetensors")


def test_a_configured_style_may_only_name_a_switchable_adapter() -> None:
    with pytest.raises(ValidationError, match=r"engine\.adapters"):
        Settings(styles=[StylePreset(name="ink", adapter="ink")])
    fused = INK.model_copy(update={"fuse": True})
    with pytest.raises(ValidationError, match="not fused"):
        Settings(engine=EngineSettings(adapters=[fused]), styles=[StylePreset(name="ink", adapter="ink")])
    ok = Settings(engine=EngineSettings(adapters=[INK]), styles=[StylePreset(name="ink", adapter="ink")])
    assert ok.switchable_adapters == {"ink"}


def test_guild_presets_join_the_book_without_shadowing_configured_ones() -> None:
    settings = Settings()
    book = StyleBook(settings.styles, settings.aspects)
    mine = [
        StylePreset(name="harbour", prompt="harbour, {prompt}"),
        StylePreset(name="anime", prompt="x {prompt}"),
    ]
    guild_book = book.with_guild(mine)
    assert guild_book.guild_names == {"harbour"}
    assert guild_book.style("anime") == book.style("anime")  # the configured preset wins its name
    harbour = guild_book.style("harbour")
    assert harbour is not None and harbour.prompt == "harbour, {prompt}"
    assert [s.name for s in guild_book.search("harb")] == ["harbour"]
    assert "harbour" not in [s.name for s in book.styles]  # the shared book is untouched


def test_a_presets_shape_and_lora_reach_the_worker_request() -> None:
    settings = Settings(
        engine=EngineSettings(model="a/model", adapters=[INK], defaults=ModelDefaults(width=512, height=512))
    )
    book = StyleBook(settings.styles, settings.aspects).with_guild(
        [StylePreset(name="inked", prompt="ink of {prompt}", aspect="16:9", adapter="ink", adapter_scale=0.7)]
    )
    planner = Planner(settings, StyleBook(settings.styles, settings.aspects))
    plan = planner.plan_imagine(ALICE, ImagineOptions(prompt="a fox", style="inked"), GuildSettings(20), book)
    wide = planner.plan_imagine(ALICE, ImagineOptions(prompt="a fox", aspect="16:9"), GuildSettings(20), book)
    assert (plan.width, plan.height) == (wide.width, wide.height)  # the preset's default shape
    assert plan.width is not None and plan.height is not None and plan.width > plan.height
    request = plan.request("ab" * 16, "20:10", Lane.FAST)
    assert (request.adapter, request.adapter_scale, request.prompt) == ("ink", 0.7, "ink of a fox")
    square = planner.plan_imagine(
        ALICE, ImagineOptions(prompt="a fox", style="inked", aspect="1:1"), GuildSettings(20), book
    )
    assert square.width == square.height  # the member's own choice wins


def test_a_preset_shape_must_look_like_an_aspect() -> None:
    with pytest.raises(ValidationError, match="aspect"):
        StylePreset(name="odd", aspect="wide")
