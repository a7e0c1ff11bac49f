"""`python run.py` as a user runs it: a bot process and its supervised worker, against the fake Discord."""

from __future__ import annotations

import asyncio
import os
import signal
import sys
from pathlib import Path

import aiohttp

from tests.bot.conftest import free_port
from tests.bot.harness import build_world, is_result

ROOT = Path(__file__).resolve().parents[2]


async def healthy(url: str) -> bool:
    try:
        async with aiohttp.ClientSession() as session, session.get(f"{url}/healthz") as resp:
            return resp.status == 200
    except aiohttp.ClientError:
        return False


async def test_python_run_py_serves_imagine_end_to_end(fake_discord, tiny_models, tmp_path):
    world = build_world(fake_discord)
    port = free_port()
    config = tmp_path / "config.toml"
    config.write_text(
        f"""
[discord]
api_base = "{fake_discord.api_base}"
gateway_url = "{fake_discord.gateway_url}"
sync_state_file = "{tmp_path / "sync"}"
guild_ready_timeout_s = 0.1
[database]
path = "{tmp_path / "bf.sqlite3"}"
[worker]
port = {port}
[engine]
model = "{tiny_models[0]}"
device = "cpu"
cpu_threads = 1
[engine.defaults]
steps = 3
width = 64
height = 64
""",
        encoding="utf-8",
    )
    env = {**os.environ, "DISCORD_TOKEN": fake_discord.token}
    proc = await asyncio.create_subprocess_exec(
        sys.executable, str(ROOT / "run.py"), "--config", str(config), cwd=tmp_path, env=env
    )
    try:
        await fake_discord.wait_commands("imagine", timeout=60)
        url = f"http://127.0.0.1:{port}"
        for _ in range(600):
            if await healthy(url):
                break
            await asyncio.sleep(0.1)
        inter = await fake_discord.send_slash(
            "imagine", {"prompt": "a kite"}, user=world.alice, channel=world.channel
        )
        result = await inter.wait_original(is_result, timeout=60)
        assert result.attachments[0].data.startswith(b"\x89PNG")
    finally:
        proc.send_signal(signal.SIGTERM)
        code = await asyncio.wait_for(proc.wait(), 60)
    assert code == 0
    assert not await healthy(f"http://127.0.0.1:{port}")  # the worker was stopped with the bot
