"""/imagine and /edit end to end on the bundled trained tiny model: what users ask for is what they get.

The worker here loads the default (no model configured) at its own defaults, and the delivered PNGs are
read with the pixel judge. Prompts, uploads and seeds are fixed; each is one the model is expected to get
right (large shapes, strong contrast).
"""

from __future__ import annotations

import io
from types import SimpleNamespace

import pytest
from PIL import Image

import bot.core.plans
from bot.core.settings import Settings
from inference.settings import EngineSettings
from tests.bot.harness import build_world, embed_of, is_result, running_bot
from tests.fakediscord import FakeDiscord, Message, Upload
from tests.judge import Judge
from tools.tiny import data

PROMPT = "a large yellow star in the centre of a blue background"
EDIT_SEED = 6


@pytest.fixture
def engine_settings(bundled_engine_settings: EngineSettings) -> EngineSettings:
    return bundled_engine_settings


def delivered(message: Message) -> list[Image.Image]:
    return [Image.open(io.BytesIO(a.data)).convert("RGB") for a in message.attachments]


async def test_imagine_draws_the_prompt(fake_discord: FakeDiscord, settings: Settings, worker: str) -> None:
    wanted = data.parse_caption(PROMPT)
    world = build_world(fake_discord)
    async with running_bot(fake_discord, settings, worker):
        inter = await fake_discord.send_slash(
            "imagine", {"prompt": PROMPT, "count": 2, "seed": 1}, user=world.alice, channel=world.channel
        )
        result = await inter.wait_original(is_result, timeout=60)
    fields = {f["name"]: f["value"] for f in embed_of(result)["fields"]}
    assert fields["Seed"] == "1, 2" and fields["Size"] == "64x64"
    images = delivered(result)
    assert len(images) == 2
    judge = Judge()
    for image in images:
        verdict = judge.judge(image)
        assert (verdict.background, verdict.colour, verdict.shape) == (
            wanted.background,
            wanted.groups[0].colour,
            wanted.groups[0].kind,
        ), verdict


async def test_edit_changes_the_background_of_an_upload(
    fake_discord: FakeDiscord, settings: Settings, worker: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    # /edit takes no seed: pin the one the planner draws so the picture is repeatable.
    monkeypatch.setattr(bot.core.plans, "secrets", SimpleNamespace(randbelow=lambda _n: EDIT_SEED))
    before = data.Scene("blue", (data.Shape("circle", "yellow", "large", 0.5, 0.5, 0.26),), "centre")
    instruction = "make the background black"
    buf = io.BytesIO()
    data.render(before).save(buf, format="PNG")
    world = build_world(fake_discord)
    async with running_bot(fake_discord, settings, worker):
        inter = await fake_discord.send_slash(
            "edit",
            {"image": Upload("scene.png", buf.getvalue(), "image/png"), "instruction": instruction},
            user=world.alice,
            channel=world.channel,
        )
        edited = await inter.wait_original(is_result, timeout=60)
    (image,) = delivered(edited)
    verdict = Judge().judge(image)
    assert verdict.background == data.parse_instruction(instruction).value, verdict
    assert verdict.shape == before.shapes[0].kind, verdict
