"""Bot test fixtures: the tiny pipelines (built once), settings on a temp SQLite file, a live worker."""

from __future__ import annotations

import socket
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
import torch

from bot.core.settings import Settings
from inference.settings import EngineSettings, ModelDefaults, WorkerSettings
from storage.db import DatabaseSettings
from tests.fakediscord.harness import fake_discord

__all__ = ["clock", "cs", "fake_discord", "shared_worker"]

torch.set_num_threads(1)


@pytest.fixture(scope="session")
def tiny_models(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    from tools.tiny.build import build

    return build(tmp_path_factory.mktemp("tiny"))


def free_port() -> int:
    """A loopback port nothing listens on (so a probe there fails and tests never reach a stray worker)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture
def engine_settings(tiny_models: tuple[Path, Path], tmp_path: Path) -> EngineSettings:
    return EngineSettings(
        model=str(tiny_models[0]),
        edit_model=str(tiny_models[1]),
        device="cpu",
        cpu_threads=1,
        defaults=ModelDefaults(steps=3, guidance=5.0, width=64, height=64, img2img_strength=0.75),
        cache_dir=tmp_path / "cache",
    )


@pytest.fixture
def bundled_engine_settings(tmp_path: Path) -> EngineSettings:
    """The bundled trained tiny model at its own defaults (20 steps, guidance 5): slower, but it draws the
    prompt. A test module that needs it overrides `engine_settings` with this fixture."""
    return EngineSettings(device="cpu", cpu_threads=1, cache_dir=tmp_path / "cache")


@pytest.fixture
def settings(engine_settings: EngineSettings, tmp_path: Path) -> Settings:
    return Settings(
        database=DatabaseSettings(path=tmp_path / "bf.sqlite3"),
        engine=engine_settings,
        worker=WorkerSettings(port=free_port(), max_pixels=256 * 256),
        # Tests start jobs back to back; the cooldown's own test sets a strict one.
        limits={"progress_interval_s": 0.5, "job_timeout_s": 60, "job_cooldown": {"rate": 1000, "per_s": 1}},
        discord={"sync_state_file": tmp_path / "sync.sha256", "guild_ready_timeout_s": 0.1},
    )


@pytest.fixture
async def worker(settings: Settings) -> AsyncIterator[str]:
    """A real worker on the tiny model, serving on a free loopback port; yields its URL."""
    import asyncio

    from inference.models import load_engine
    from inference.server import start_worker

    engine = await asyncio.to_thread(load_engine, settings.engine)
    running = await start_worker(settings.worker.model_copy(update={"port": 0}), engine)
    try:
        yield running.url
    finally:
        await running.stop()


# The challenge tests' module-wide worker, clock and settings, shared with the trust tests.
from tests.bot.test_challenges import clock, cs, shared_worker  # noqa: E402
