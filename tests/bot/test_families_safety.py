"""The independent safety classifier end to end: a FLUX worker (a family with no checker of its own) flags
every picture, and the server's NSFW policy spoilers or withholds them on Discord."""

from __future__ import annotations

from pathlib import Path

import pytest

from bot.core.settings import Settings
from inference.settings import EngineSettings, ModelDefaults, SafetySettings
from tests.bot.harness import admin_do, build_world, is_result, running_bot
from tests.fakediscord import FakeDiscord
from tests.inference.family_models import save_classifier, save_family


@pytest.fixture(scope="module")
def flux_with_checker(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    root = tmp_path_factory.mktemp("flux-safety")
    return save_family("flux-schnell", root / "flux"), save_classifier(root / "classifier", unsafe=True)


@pytest.fixture
def engine_settings(flux_with_checker: tuple[Path, Path], tmp_path: Path) -> EngineSettings:
    model, classifier = flux_with_checker
    return EngineSettings(
        model=str(model),
        device="cpu",
        cpu_threads=1,
        defaults=ModelDefaults(steps=2, guidance=0.0, width=64, height=64, img2img_strength=0.6),
        safety=SafetySettings(kind="classifier", model=str(classifier)),
        cache_dir=tmp_path / "cache",
    )


async def test_families_flagged_pictures_follow_the_server_policy(
    fake_discord: FakeDiscord, settings: Settings, worker: str
) -> None:
    world = build_world(fake_discord)
    async with running_bot(fake_discord, settings, worker):
        spoiler = await fake_discord.send_slash(
            "imagine", {"prompt": "a red circle", "count": 2}, user=world.alice, channel=world.channel
        )
        shown = await spoiler.wait_original(is_result, timeout=60)
        assert [a.filename.startswith("SPOILER_") for a in shown.attachments] == [True, True]
        assert "withheld" not in shown.content

        assert await admin_do(fake_discord, world, "settings nsfw", {"mode": "refuse"}) == "Saved."
        refused = await fake_discord.send_slash(
            "imagine", {"prompt": "a red circle", "count": 2}, user=world.alice, channel=world.channel
        )
        withheld = await refused.wait_original(lambda m: "withheld" in m.content, timeout=60)
        assert withheld.attachments == [] and "2 images withheld" in withheld.content
