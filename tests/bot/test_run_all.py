"""`python run.py` as a user runs it: a bot process and its supervised worker, against the fake Discord."""

from __future__ import annotations

import asyncio
import os
import signal
import sys
from pathlib import Path

import aiohttp
import pytest

from tests.bot.conftest import free_port
from tests.bot.harness import build_world, is_result
from tests.fakediscord import FakeDiscord

ROOT = Path(__file__).resolve().parents[2]


async def healthy(url: str) -> bool:
    try:
        async with aiohttp.ClientSession() as session, session.get(f"{url}/healthz") as resp:
            return resp.status == 200
    except aiohttp.ClientError:
        return False


async def test_python_run_py_serves_imagine_end_to_end(
    fake_discord: FakeDiscord, tiny_models: tuple[Path, Path], tmp_path: Path
) -> None:
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
        assert result.attachments[0].data.startswith(b"\xff\xd8\xff")
    finally:
        proc.send_signal(signal.SIGTERM)
        code = await asyncio.wait_for(proc.wait(), 60)
    assert code == 0
    assert not await healthy(f"http://127.0.0.1:{port}")  # the worker was stopped with the bot


def run_config(fake_discord: FakeDiscord, tmp_path: Path, port: int) -> Path:
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
device = "cpu"
cpu_threads = 1
""",
        encoding="utf-8",
    )
    return config


async def start_run_py(fake_discord: FakeDiscord, config: Path, *args: str) -> asyncio.subprocess.Process:
    env = {**os.environ, "DISCORD_TOKEN": fake_discord.token}
    return await asyncio.create_subprocess_exec(
        sys.executable, str(ROOT / "run.py"), "--config", str(config), *args,
        cwd=config.parent, env=env, stderr=asyncio.subprocess.PIPE,
    )  # fmt: skip


async def wait_healthy(url: str, seconds: float = 90) -> None:
    for _ in range(int(seconds * 10)):
        if await healthy(url):
            return
        await asyncio.sleep(0.1)
    raise AssertionError(f"{url} never answered")


async def gone(pid: int, seconds: float) -> bool:
    import psutil

    for _ in range(int(seconds * 10)):
        try:
            if not psutil.pid_exists(pid) or psutil.Process(pid).status() == psutil.STATUS_ZOMBIE:
                return True
        except psutil.NoSuchProcess:  # it went between the two questions
            return True
        await asyncio.sleep(0.1)
    return False


async def test_kill_9_of_run_py_takes_its_worker_with_it(fake_discord: FakeDiscord, tmp_path: Path) -> None:
    import psutil

    build_world(fake_discord)
    port = free_port()
    config = run_config(fake_discord, tmp_path, port)
    proc = await start_run_py(fake_discord, config)
    try:
        await wait_healthy(f"http://127.0.0.1:{port}")
        children = psutil.Process(proc.pid).children(recursive=True)
        assert children, "run.py started no worker"
        proc.kill()
        await proc.wait()
        for child in children:
            assert await gone(child.pid, 45), f"worker {child.pid} outlived its run.py"
        assert not await healthy(f"http://127.0.0.1:{port}")
    finally:
        for child in psutil.Process().children(recursive=True):
            child.kill()


async def test_a_port_served_by_something_else_is_reported_not_fought_over(
    fake_discord: FakeDiscord, tmp_path: Path
) -> None:
    from aiohttp import web

    build_world(fake_discord)
    app = web.Application()

    async def teapot(request: web.Request) -> web.Response:
        return web.Response(status=418, text="teapot")

    app.router.add_get("/{tail:.*}", teapot)
    runner = web.AppRunner(app)
    await runner.setup()
    port = free_port()
    await web.TCPSite(runner, "127.0.0.1", port).start()
    try:
        proc = await start_run_py(fake_discord, run_config(fake_discord, tmp_path, port))
        code = await asyncio.wait_for(proc.wait(), 60)
        assert proc.stderr is not None, "run.py is started with its stderr piped"
        stderr = (await proc.stderr.read()).decode()
        assert code == 2, stderr
        assert f"port {port} on 127.0.0.1 is already served by" in stderr
        assert "does not speak brushfire's RPC" in stderr and "run.py bot" in stderr
    finally:
        await runner.cleanup()


async def test_a_worker_left_by_a_dead_run_py_is_stopped_and_replaced(
    fake_discord: FakeDiscord, tmp_path: Path
) -> None:
    """A worker whose run.py died (the pidfile says so) is ours to stop: the new run.py takes the port."""
    import json

    import psutil

    build_world(fake_discord)
    port = free_port()
    config = run_config(fake_discord, tmp_path, port)
    dead_parent = await asyncio.create_subprocess_exec(sys.executable, "-c", "pass")
    await dead_parent.wait()
    orphan = await asyncio.create_subprocess_exec(
        sys.executable, str(ROOT / "run.py"), "--config", str(config), "worker", cwd=tmp_path
    )
    proc = None
    try:
        await wait_healthy(f"http://127.0.0.1:{port}")
        started = round(psutil.Process(orphan.pid).create_time(), 2)
        (tmp_path / "worker.pid").write_text(
            json.dumps({"worker": f"worker:{orphan.pid}:{started}", "parent": f"run:{dead_parent.pid}:1.00"})
        )
        proc = await start_run_py(fake_discord, config)
        assert await gone(orphan.pid, 60), "the orphaned worker was not stopped"
        await wait_healthy(f"http://127.0.0.1:{port}")
        assert [c.pid for c in psutil.Process(proc.pid).children()] != [orphan.pid]
    finally:
        for p in (proc, orphan):
            if p is not None and p.returncode is None:
                p.send_signal(signal.SIGTERM)
                await asyncio.wait_for(p.wait(), 60)


async def test_the_bot_waits_out_an_unreachable_discord_with_one_line_per_try(
    fake_discord: FakeDiscord, caplog: pytest.LogCaptureFixture
) -> None:
    import logging

    import discord

    from bot.client import start_with_backoff
    from bot.endpoints import use_discord_endpoints

    closed = free_port()
    use_discord_endpoints(f"http://127.0.0.1:{closed}/api/v10", fake_discord.gateway_url)
    client = discord.Client(intents=discord.Intents.none())
    caplog.set_level(logging.WARNING, logger="bot.client")
    task = asyncio.create_task(start_with_backoff(client, fake_discord.token, backoff_s=(0.2, 0.4)))

    def tries() -> list[logging.LogRecord]:
        return [r for r in caplog.records if r.name == "bot.client"]

    try:
        for _ in range(100):  # three refused tries: 0.2 s, then 0.4 s apart
            if len(tries()) >= 3:
                break
            await asyncio.sleep(0.05)
        seen = tries()
        assert len(seen) >= 3 and not task.done()
        for number, record in enumerate(seen[:3], 1):
            message = record.getMessage()
            assert message.startswith(
                f"cannot reach Discord at http://127.0.0.1:{closed}/api/v10 (try {number}: "
            )
            assert "\n" not in message and record.exc_info is None  # a line, not a traceback
        assert seen[0].getMessage().endswith("retrying in 0.2 s") and seen[2].getMessage().endswith(
            "in 0.4 s"
        )
        # Discord comes back (here: the fake, where the bot is now pointed): the next try logs in.
        use_discord_endpoints(fake_discord.api_base, fake_discord.gateway_url)
        await asyncio.wait_for(client.wait_until_ready(), 15)
        assert client.user is not None
    finally:
        await client.close()
        await asyncio.wait_for(task, 15)
