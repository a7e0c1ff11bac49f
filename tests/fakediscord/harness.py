"""Test helpers around FakeDiscord: a pytest fixture and a context manager that runs a real bot against it."""

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator

import discord
import pytest

from bot.endpoints import use_discord_endpoints
from tests.fakediscord.errors import FakeDiscordError
from tests.fakediscord.server import FakeDiscord
from tests.fakediscord.strict import LEDGER

log = logging.getLogger(__name__)


@pytest.fixture
async def fake_discord(request: pytest.FixtureRequest) -> AsyncIterator[FakeDiscord]:
    """A started FakeDiscord; the test fails at teardown if the bot called a route the fake lacks.

    Use it from another test package with ``from tests.fakediscord.harness import fake_discord`` in
    that package's conftest.py. What the strict fake counted is kept for the end-of-run report
    (tests/conftest.py).
    """
    try:
        async with FakeDiscord() as fake:
            LEDGER.append((request.node.nodeid, fake.world.strict))
            yield fake
            fake.assert_no_unexpected_routes()
    finally:
        use_discord_endpoints(None, None)


@contextlib.asynccontextmanager
async def run_bot(
    client: discord.Client,
    fake: FakeDiscord,
    *,
    timeout: float = 15.0,  # noqa: ASYNC109 - a test-facing deadline
    wait_ready: bool = True,
) -> AsyncIterator[None]:
    """Run `client` (in this event loop) against `fake` until the block ends, then close it.

    Returns once the client has IDENTIFYed and, with `wait_ready`, is ready (`on_ready` fired). Pass
    ``guild_ready_timeout=0.1`` (or similar) to the client, or readiness takes discord.py's default 2 s;
    a bot that cannot take it can use ``wait_ready=False``: interactions are handled before on_ready.
    """
    use_discord_endpoints(fake.api_base, fake.gateway_url)
    identifies = fake.identify_count + 1
    task = asyncio.create_task(client.start(fake.token), name="fake-discord-bot")
    try:
        await _until_ready(client, fake, task, identifies, timeout, wait_ready)
        yield
    finally:
        await client.close()
        with contextlib.suppress(asyncio.CancelledError):
            await asyncio.wait_for(task, timeout)


async def _until_ready(
    client: discord.Client,
    fake: FakeDiscord,
    task: asyncio.Task[None],
    identifies: int,
    timeout: float,  # noqa: ASYNC109 - a test-facing deadline
    wait_ready: bool,
) -> None:
    waiter = asyncio.ensure_future(_connected_and_ready(client, fake, identifies, timeout, wait_ready))
    done, _ = await asyncio.wait({waiter, task}, timeout=timeout, return_when=asyncio.FIRST_COMPLETED)
    if task in done:
        waiter.cancel()
        task.result()
        raise FakeDiscordError("the bot stopped before it was ready")
    if waiter not in done:
        waiter.cancel()
        raise FakeDiscordError(f"the bot was not ready after {timeout}s")
    waiter.result()


async def _connected_and_ready(
    client: discord.Client,
    fake: FakeDiscord,
    identifies: int,
    timeout: float,  # noqa: ASYNC109 - a test-facing deadline
    wait_ready: bool,
) -> None:
    await fake.wait_connected(timeout, identifies=identifies)
    if wait_ready:
        await client.wait_until_ready()
