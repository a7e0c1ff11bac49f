"""ImageBot: the discord.py Bot with its services as typed attributes, plus starting it from settings."""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import json
import logging
import signal
from collections.abc import Coroutine
from typing import Any

import aiohttp
import discord
import discord.http
import discord.utils
from apscheduler.schedulers.asyncio import AsyncIOScheduler
from discord.ext import commands

from bot.core.lifecycle import CrashPoint, ProcessOwner
from bot.core.services import Services, open_services
from bot.core.settings import Settings, SettingsError
from bot.delivery import JobRunner
from bot.endpoints import MetricsServer, start_metrics_server, use_discord_endpoints
from bot.errors import BrushfireTree
from bot.gate import JobGate
from bot.i18n import Catalogues, Translate
from bot.translator import CatalogueTranslator, translate_for, translated_payload
from bot.views import DYNAMIC_ITEMS

log = logging.getLogger(__name__)

# Pauses between tries to reach Discord at start, in seconds (the last one repeats).
CONNECT_BACKOFF_S = (1.0, 2.0, 5.0, 10.0, 30.0, 60.0)
EXTENSIONS = (
    "cogs.imagine",
    "cogs.edit",
    "cogs.quota",
    "cogs.settings",
    "cogs.styles",
    "cogs.challenges",
    "cogs.help",
)


class ImageBot(commands.Bot):
    """The bot. Services are built in run.py (or a test) and passed in; nothing here is global."""

    def __init__(self, services: Services, catalogues: Catalogues | None = None) -> None:
        settings = services.settings
        intents = discord.Intents.none()
        intents.guilds = True  # slash commands need no privileged intents
        super().__init__(
            command_prefix=commands.when_mentioned,
            intents=intents,
            tree_cls=BrushfireTree,
            help_command=None,
            guild_ready_timeout=settings.discord.guild_ready_timeout_s,
            # Nothing pings unless a message names whom it means to: user text never carries a live mention.
            allowed_mentions=discord.AllowedMentions.none(),
        )
        self.settings = settings
        self.services = services
        self.catalogues = catalogues or Catalogues.load()
        # Interaction tokens expire on Discord's clock (their creation time + 15 min), so the runner keeps
        # the wall clock rather than the services' (which tests may move).
        self.runner = JobRunner(self, services, track_job=self.track_job)
        self.gate = JobGate(services.jobs, settings.limits.job_cooldown, clock=services.clock)
        self.scheduler = AsyncIOScheduler()
        self.metrics_server: MetricsServer | None = None
        self._tasks: set[asyncio.Task[Any]] = set()
        self._job_tasks: set[asyncio.Task[Any]] = set()

    def i18n_for(self, interaction: discord.Interaction) -> Translate:
        """`_ = self.bot.i18n_for(interaction)`: texts in the member's language (else the server's, else English)."""
        return translate_for(interaction)

    def create_task(self, coro: Coroutine[Any, Any, Any], *, name: str) -> asyncio.Task[Any]:
        """Start a background task, keep a reference (so it is not collected) and log how it failed."""
        task = asyncio.create_task(coro, name=name)
        self._tasks.add(task)
        task.add_done_callback(self._task_done)
        return task

    def track_job(self) -> None:
        """Remember the current task as one following a job, so closing stops it before the database.

        A follower cancelled at shutdown leaves its job unfinished in the database, where the next start's
        reconciliation picks it up; one left running would fail against the closed client and refund it.
        """
        task = asyncio.current_task()
        if task is not None:
            self._job_tasks.add(task)
            task.add_done_callback(self._job_tasks.discard)

    def _task_done(self, task: asyncio.Task[Any]) -> None:
        self._tasks.discard(task)
        if not task.cancelled() and task.exception() is not None:
            log.error("background task %s failed", task.get_name(), exc_info=task.exception())

    async def setup_hook(self) -> None:
        for extension in EXTENSIONS:
            await self.load_extension(extension)
        self.add_dynamic_items(*DYNAMIC_ITEMS)
        await self.tree.set_translator(CatalogueTranslator(self.catalogues))
        self.services.maintenance.register(self.scheduler)
        self.services.retention.register(self.scheduler)
        self.scheduler.start()
        port = self.settings.discord.metrics_port
        if port is not None:
            self.metrics_server = await start_metrics_server(
                self.services.metrics, self.settings.discord.metrics_host, port
            )
        health = self.services.jobs.worker.watch(self.settings.limits.health_interval_s)
        self.create_task(health, name="worker-health")
        await self.sync_commands()
        self.create_task(self.reconcile(), name="reconcile")
        self.create_task(self.rebuild_challenges(), name="challenges")

    async def rebuild_challenges(self) -> None:
        """Once connected: post what a previous run missed and schedule every challenge deadline."""
        await self.wait_until_ready()
        await self.services.challenges.rebuild()

    async def reconcile(self) -> int:
        """Finish, resubmit or refund the jobs a previous run left unfinished, and tell their users."""
        await self.wait_until_ready()
        return await self.services.jobs.reconcile(self.runner.deliver)

    async def close(self) -> None:
        await self.services.challenges.drain()
        current = asyncio.current_task()
        tasks = [t for t in (*self._job_tasks, *self._tasks) if t is not current]
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        if self.scheduler.running:
            self.scheduler.shutdown(wait=False)
        if self.metrics_server is not None:
            await self.metrics_server.stop()
            self.metrics_server = None
        await super().close()

    async def command_fingerprint(self, guild: discord.abc.Snowflake | None) -> str:
        """A hash of the commands as a sync would send them, translations included."""
        translator = self.tree.translator or CatalogueTranslator(self.catalogues)
        payload = await translated_payload(self.tree, translator, self.tree.get_commands(guild=guild))
        return hashlib.sha256(json.dumps(payload, sort_keys=True).encode()).hexdigest()

    async def sync_commands(self) -> bool:
        """Sync slash commands when their definitions changed (Discord rate-limits global syncs)."""
        mode = self.settings.discord.sync
        if mode == "never":
            return False
        guild = (
            discord.Object(self.settings.discord.dev_guild_id) if self.settings.discord.dev_guild_id else None
        )
        if guild is not None:
            self.tree.copy_global_to(guild=guild)
        fingerprint = f"{guild.id if guild else 'global'}:{await self.command_fingerprint(guild)}"
        state = self.settings.discord.sync_state_file
        if mode == "on_change" and state.exists() and state.read_text().strip() == fingerprint:
            log.info("slash commands unchanged since the last sync")
            return False
        synced = await self.tree.sync(guild=guild)
        state.parent.mkdir(parents=True, exist_ok=True)
        state.write_text(fingerprint)
        log.info(
            "synced %d slash commands to %s", len(synced), f"guild {guild.id}" if guild else "all servers"
        )
        return True


async def run_bot(settings: Settings, worker_url: str | None = None, crash: CrashPoint | None = None) -> int:
    """Connect to Discord and serve until stopped. Needs DISCORD_TOKEN. `crash` is a test-only hook."""
    if settings.discord_token is None:
        raise SettingsError("set the DISCORD_TOKEN environment variable to the bot's token")
    use_discord_endpoints(settings.discord.api_base, settings.discord.gateway_url)
    owner = ProcessOwner.current("bot")
    async with open_services(settings, worker_url, owner=owner, crash=crash) as services:
        bot = ImageBot(services)
        _close_on_signals(bot)
        async with bot:
            try:
                await start_with_backoff(bot, settings.discord_token.get_secret_value())
            except discord.LoginFailure:
                log.error("Discord refused the token: check DISCORD_TOKEN")
                return 2
    return 0


async def start_with_backoff(
    client: discord.Client, token: str, backoff_s: tuple[float, ...] = CONNECT_BACKOFF_S
) -> None:
    """Log in and connect, like `client.start`, but wait out a Discord that cannot be reached at start
    (no network yet, DNS, a proxy, a 5xx): one log line per try, the pause growing up to a minute.

    A refused token (`discord.LoginFailure`) is not retried. Closing the client stops the waiting. Once
    logged in, discord.py's own reconnect logic keeps the gateway up.
    """
    failures = 0
    while True:
        try:
            await client.login(token)
            break
        except (aiohttp.ClientError, OSError, TimeoutError, discord.DiscordServerError) as exc:
            delay = backoff_s[min(failures, len(backoff_s) - 1)]
            failures += 1
            log.warning(
                "cannot reach Discord at %s (try %d: %s); retrying in %g s",
                discord.http.Route.BASE, failures, _reason(exc), delay,
            )  # fmt: skip
            # The failed login's HTTP session is spent: drop it, and its connector, for a fresh one.
            await client.http.close()
            client.http.connector = discord.utils.MISSING
            for _ in range(max(1, round(delay / 0.1))):
                if client.is_closed():
                    return
                await asyncio.sleep(0.1)
    await client.connect()


def _reason(exc: BaseException) -> str:
    """One line on why a connection failed: `ClientConnectorError: Cannot connect to host …`."""
    text = str(exc).splitlines()[0] if str(exc) else ""
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__


def _close_on_signals(bot: ImageBot) -> None:
    """SIGINT/SIGTERM/SIGHUP close the bot cleanly, so run.py can stop its worker instead of orphaning it."""
    loop = asyncio.get_running_loop()
    closing: set[asyncio.Task[None]] = set()

    def close() -> None:
        log.info("stopping")
        task = loop.create_task(bot.close())
        closing.add(task)
        task.add_done_callback(closing.discard)

    for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
        with contextlib.suppress(NotImplementedError, RuntimeError):
            loop.add_signal_handler(sig, close)
