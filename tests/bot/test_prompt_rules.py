"""One prompt rule on every path: what Discord's client is told, what the bot enforces, what the worker takes."""

from __future__ import annotations

import sqlite3
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from bot.core.errors import InvalidInput
from bot.core.plans import ImagineOptions, Planner, Requester
from bot.core.settings import Settings
from bot.core.styles import StyleBook, StylePreset
from inference.protocol import JobRequest
from inference.text import MAX_PROMPT_CHARS, _normalize_any, is_visible, normalize_prompt
from inference.vocabulary import Lane
from storage.guilds import GuildSettings
from tests.bot.harness import build_world, ephemeral_reply, running_bot
from tests.fakediscord import FakeDiscord
from tests.fakediscord.models import RegisteredCommand

ZERO_WIDTH = "\u200b\u200c\u200d\u2060\ufeff"
ALICE = Requester(user_id=10, guild_id=20, channel_id=30, name="alice")


def option(command: RegisteredCommand, name: str) -> dict[str, Any]:
    return next(o for o in command.options if o["name"] == name)


@pytest.mark.parametrize("text", [ZERO_WIDTH, " \u200b\n\u2060 ", "\u3164", "\u202e\u2800", "\ud800"])
def test_invisible_text_is_empty_for_the_bot_and_the_worker(text: str) -> None:
    assert not is_visible(normalize_prompt(text))
    planner = Planner(Settings(), StyleBook(Settings().styles, Settings().aspects))
    with pytest.raises(InvalidInput, match="nothing visible"):
        planner.plan_imagine(ALICE, ImagineOptions(prompt=text), GuildSettings(guild_id=20))


def test_the_bot_sends_the_worker_what_it_checked() -> None:
    settings = Settings()
    planner = Planner(settings, StyleBook(settings.styles, settings.aspects))
    plan = planner.plan_imagine(
        ALICE,
        ImagineOptions(prompt="a\u200b red \t\u2060 fox", negative=ZERO_WIDTH),
        GuildSettings(guild_id=20),
    )
    assert (plan.prompt, plan.negative) == ("a red fox", "")
    sent = plan.request("k1", "20:10", Lane.FAST)
    assert JobRequest.model_validate(sent.model_dump()).prompt == plan.model_prompt


def test_a_style_cannot_push_a_prompt_over_the_workers_limit() -> None:
    settings = Settings()
    wordy = StylePreset(name="wordy", prompt="{prompt}, " + "very detailed " * 30)
    planner = Planner(settings, StyleBook([wordy], settings.aspects))
    with pytest.raises(InvalidInput, match="style `wordy`"):
        planner.plan_imagine(
            ALICE,
            ImagineOptions(prompt="x" * (MAX_PROMPT_CHARS - 20), style="wordy"),
            GuildSettings(guild_id=20),
        )


async def test_discord_is_told_the_limit_the_bot_enforces(
    fake_discord: FakeDiscord, settings: Settings, worker: str
) -> None:
    world = build_world(fake_discord)
    async with running_bot(fake_discord, settings, worker):
        limit = settings.limits.prompt_chars
        assert limit == MAX_PROMPT_CHARS
        assert option(fake_discord.command("imagine"), "prompt")["max_length"] == limit
        assert option(fake_discord.command("imagine"), "negative")["max_length"] == limit
        assert option(fake_discord.command("edit"), "instruction")["max_length"] == limit
        for prompt, expected in [
            (ZERO_WIDTH, "nothing visible"),
            ("\u200b" * 40 + " \u2060", "nothing visible"),
            ("x" * (limit + 1), f"the limit is {limit}"),
        ]:
            inter = await fake_discord.send_slash(
                "imagine", {"prompt": prompt}, user=world.alice, channel=world.channel, validate=False
            )
            assert expected in await ephemeral_reply(inter), prompt
    with sqlite3.connect(settings.database.path) as conn:
        assert conn.execute("SELECT COUNT(*) FROM ledger").fetchone() == (0,)
        assert conn.execute("SELECT COUNT(*) FROM jobs").fetchone() == (0,)


@given(st.text(alphabet=st.characters(min_codepoint=0, max_codepoint=127), max_size=200))
def test_the_ascii_fast_path_normalises_as_the_general_rules_do(text: str) -> None:
    assert normalize_prompt(text) == _normalize_any(text)
