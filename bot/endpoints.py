"""The bot's network ends: discord.py's REST and gateway base URLs (a proxy, or the fake Discord in tests),
and the bot's own HTTP endpoint, `/metrics` for Prometheus."""

from __future__ import annotations

import logging
from dataclasses import dataclass

import discord.gateway
import discord.http
import yarl
from aiohttp import web

from bot.core.metrics import CONTENT_TYPE, BotMetrics

log = logging.getLogger(__name__)

DISCORD_API_BASE = "https://discord.com/api/v10"
DISCORD_GATEWAY_URL = "wss://gateway.discord.gg/"


def use_discord_endpoints(api_base: str | None, gateway_url: str | None) -> None:
    """Send discord.py's REST calls to `api_base` and open its gateway at `gateway_url`.

    `None` restores Discord's own endpoint for that half. This mutates discord.py class attributes
    (`discord.http.Route.BASE`, `discord.gateway.DiscordWebSocket.DEFAULT_GATEWAY`), so it is
    process-wide: call it once at start, before the client logs in. `api_base` must include the
    API version, e.g. ``http://127.0.0.1:8080/api/v10``; nothing may call
    `discord.http._set_api_version` afterwards, because that resets the REST base.

    A plain `discord.Client` never asks Discord for the gateway URL (only `AutoShardedClient` calls
    `GET /gateway/bot`, which goes to `api_base` anyway), and resumes use the `resume_gateway_url`
    from READY, so these two attributes are all it takes.
    """
    base = _checked_api_base(api_base) if api_base is not None else DISCORD_API_BASE
    gateway = _checked_gateway(gateway_url) if gateway_url is not None else yarl.URL(DISCORD_GATEWAY_URL)
    discord.http.Route.BASE = base
    discord.gateway.DiscordWebSocket.DEFAULT_GATEWAY = gateway
    log.info("discord endpoints: REST %s, gateway %s", base, gateway)


def _checked_api_base(api_base: str) -> str:
    url = yarl.URL(api_base)
    if url.scheme not in ("http", "https") or not url.host:
        raise ValueError(f"Discord API base must be an http(s) URL with a host, got {api_base!r}")
    return api_base.rstrip("/")


def _checked_gateway(gateway_url: str) -> yarl.URL:
    url = yarl.URL(gateway_url)
    if url.scheme not in ("ws", "wss") or not url.host:
        raise ValueError(f"Discord gateway URL must be a ws(s) URL with a host, got {gateway_url!r}")
    return url


METRICS = web.AppKey("metrics", BotMetrics)


async def _metrics(request: web.Request) -> web.Response:
    body = request.app[METRICS].render()
    return web.Response(body=body, headers={"Content-Type": CONTENT_TYPE})


def metrics_app(metrics: BotMetrics) -> web.Application:
    """An aiohttp application serving `GET /metrics` from the bot's own registry."""
    app = web.Application()
    app[METRICS] = metrics
    app.router.add_get("/metrics", _metrics)
    return app


@dataclass(slots=True)
class MetricsServer:
    """A running `/metrics` endpoint; `url` is where it listens."""

    runner: web.AppRunner
    url: str

    async def stop(self) -> None:
        await self.runner.cleanup()


async def start_metrics_server(metrics: BotMetrics, host: str, port: int) -> MetricsServer:
    """Serve `/metrics` on host:port (0: a free port)."""
    runner = web.AppRunner(metrics_app(metrics), access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, host, port)
    await site.start()
    bound = runner.addresses[0][1] if runner.addresses else port
    url = f"http://{host}:{bound}/metrics"
    log.info("bot metrics at %s", url)
    return MetricsServer(runner, url)
