"""The root settings: built once in run.py from a TOML file and `BRUSHFIRE_*` environment variables."""

from __future__ import annotations

import logging
import os
import tomllib
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Literal

from pydantic import (
    AliasChoices,
    BaseModel,
    ConfigDict,
    Field,
    SecretStr,
    ValidationError,
    field_validator,
    model_validator,
)
from pydantic_settings import BaseSettings, PydanticBaseSettingsSource, SettingsConfigDict

from bot.core.challenges.rules import ChallengeSettings
from bot.core.quotas.pricing import QuotaSettings
from bot.core.styles import DEFAULT_ASPECTS, DEFAULT_STYLES, Aspect, StylePreset
from inference.presets import get_preset
from inference.protocol import MAX_COUNT, MAX_STEPS
from inference.settings import EngineSettings, WorkerSettings
from inference.text import MAX_PROMPT_CHARS
from storage.db import DatabaseSettings

log = logging.getLogger(__name__)

CONFIG_ENV = "BRUSHFIRE_CONFIG"
TOKEN_ENV = "DISCORD_TOKEN"
_TOKEN_KEYS = {"discord_token", "token", TOKEN_ENV.lower()}


class SettingsError(Exception):
    """The configuration cannot be used; the message names the file, key and problem."""


class DiscordSettings(BaseModel):
    """How the bot talks to Discord. The token is not here: it comes from `DISCORD_TOKEN` only."""

    model_config = ConfigDict(extra="forbid")

    # Override Discord's REST base (e.g. "http://127.0.0.1:8080/api/v10") and gateway URL, for proxies/tests.
    api_base: str | None = None
    gateway_url: str | None = None
    # Commands are synced to this guild instantly (global sync takes up to an hour and is rate limited).
    dev_guild_id: int | None = None
    # on_change: sync when the command definitions differ from the last sync; always; never.
    sync: Literal["on_change", "always", "never"] = "on_change"
    sync_state_file: Path = Path("data/command-sync.sha256")
    # Seconds to wait after the last GUILD_CREATE before the bot counts as ready.
    guild_ready_timeout_s: float = Field(default=2.0, ge=0.0, le=60.0)
    # The bot's Prometheus `/metrics` (latency histograms); None: not served. 0 picks a free port.
    metrics_host: str = "127.0.0.1"
    metrics_port: int | None = Field(default=None, ge=0, le=65535)


class CooldownSettings(BaseModel):
    """How many jobs one member may start per `per_s` seconds in a server, by command or button."""

    model_config = ConfigDict(extra="forbid")

    rate: int = Field(default=4, ge=1)
    per_s: float = Field(default=60.0, gt=0)


class Limits(BaseModel):
    """Bounds on what users may ask for, checked before anything is charged."""

    model_config = ConfigDict(extra="forbid")

    # What /imagine, /edit and the Edit button advertise to Discord and the planner enforces; the worker's
    # own limit (MAX_PROMPT_CHARS) is the most it may be.
    prompt_chars: int = Field(default=MAX_PROMPT_CHARS, ge=1, le=MAX_PROMPT_CHARS)
    attachment_bytes: int = Field(default=8 * 1024 * 1024, ge=1024)
    attachment_pixels: int = Field(default=2048 * 2048, ge=64 * 64)
    max_images_per_job: int = Field(default=4, ge=1, le=MAX_COUNT)
    # The most denoising steps a job may ask for (/imagine steps, --steps); a server may set a lower cap.
    max_steps: int = Field(default=60, ge=1, le=MAX_STEPS)
    # Discord's upload limit on unboosted servers; bigger results are re-encoded as WebP/JPEG.
    upload_bytes: int = Field(default=10 * 1024 * 1024, ge=64 * 1024)
    progress_interval_s: float = Field(default=2.0, ge=0.5, le=60.0)
    edit_strength: float = Field(default=0.6, gt=0.0, le=1.0)
    vary_strength: float = Field(default=0.35, gt=0.0, le=1.0)
    upscale_strength: float = Field(default=0.3, gt=0.0, le=1.0)
    job_timeout_s: float = Field(default=900.0, gt=0)
    health_interval_s: float = Field(default=15.0, gt=0)
    # How long a job waits for a vanished worker to come back (run.py restarts it) before it is refunded.
    worker_grace_s: float = Field(default=180.0, ge=0)
    # Per-member pace for /imagine, /edit and the buttons that start jobs (answered before any defer).
    job_cooldown: CooldownSettings = Field(default_factory=CooldownSettings)


class Settings(BaseSettings):
    """Every setting brushfire has. Environment variables win over the TOML file, which wins over defaults.

    Nested keys use `__` in the environment: `BRUSHFIRE_DATABASE__PATH=/srv/bf.sqlite3`.
    """

    model_config = SettingsConfigDict(
        env_prefix="BRUSHFIRE_",
        env_nested_delimiter="__",
        extra="forbid",
        populate_by_name=True,
    )

    discord: DiscordSettings = Field(default_factory=DiscordSettings)
    database: DatabaseSettings = Field(default_factory=DatabaseSettings)
    quota: QuotaSettings = Field(default_factory=QuotaSettings)
    challenges: ChallengeSettings = Field(default_factory=ChallengeSettings)
    worker: WorkerSettings = Field(default_factory=WorkerSettings)
    engine: EngineSettings = Field(default_factory=EngineSettings)
    # Where the bot finds the worker; None means the worker this process starts (worker.host:port).
    worker_url: str | None = None
    worker_token: SecretStr | None = None
    limits: Limits = Field(default_factory=Limits)
    styles: list[StylePreset] = Field(default_factory=lambda: list(DEFAULT_STYLES), min_length=1)
    aspects: list[Aspect] = Field(default_factory=lambda: list(DEFAULT_ASPECTS), min_length=1, max_length=25)
    log_level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = "INFO"
    # "text": one readable line per record; "json": one JSON object per line (level, logger, message, job_id).
    log_format: Literal["text", "json"] = "text"
    discord_token: SecretStr | None = Field(
        default=None, validation_alias=AliasChoices(TOKEN_ENV), exclude=True, repr=False
    )

    @field_validator("engine", mode="before")
    @classmethod
    def _apply_preset(cls, value: object) -> object:
        """`[engine] preset = "sdxl-turbo"`: the preset's model, scheduler, timestep spacing, defaults and
        fused adapters, under whatever the engine section sets itself (those keys win)."""
        if not isinstance(value, dict) or not value.get("preset"):
            return value
        preset = get_preset(str(value["preset"]))
        own_defaults = value.get("defaults") or {}
        if isinstance(own_defaults, BaseModel):
            own_defaults = own_defaults.model_dump(exclude_unset=True)
        filled: dict[str, object] = {
            "model": preset.model,
            "scheduler": preset.scheduler,
            "timestep_spacing": preset.timestep_spacing,
        }
        return {
            **{k: v for k, v in filled.items() if v is not None},
            **value,
            "defaults": {**preset.defaults.model_dump(exclude_none=True), **dict(own_defaults)},
            "adapters": [*(a.model_dump() for a in preset.fused_adapters), *(value.get("adapters") or [])],
        }

    @model_validator(mode="after")
    def _unique_names(self) -> Settings:
        for kind, names in (
            ("style", [s.name for s in self.styles]),
            ("aspect", [a.name for a in self.aspects]),
        ):
            dupes = sorted({n for n in names if names.count(n) > 1})
            if dupes:
                raise ValueError(f"{kind} names must be unique; repeated: {', '.join(dupes)}")
        switchable = self.switchable_adapters
        for style in self.styles:
            if style.adapter is not None and style.adapter not in switchable:
                raise ValueError(
                    f"style {style.name!r} uses adapter {style.adapter!r}, which engine.adapters does not list "
                    f"as a switchable (not fused) adapter; listed: {sorted(switchable) or 'none'}"
                )
        return self

    @property
    def switchable_adapters(self) -> frozenset[str]:
        """The LoRA adapters a style may name: those the worker loads and switches per batch."""
        return frozenset(a.name for a in self.engine.adapters if not a.fuse)

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        # The environment first: `load_settings` passes the TOML file's contents as init values,
        # and an operator's environment variable should override the shared file.
        return (env_settings, init_settings)

    @property
    def resolved_worker_url(self) -> str:
        if self.worker_url:
            return self.worker_url.rstrip("/")
        host = "127.0.0.1" if self.worker.host in ("0.0.0.0", "::") else self.worker.host
        return f"http://{host}:{self.worker.port}"

    @property
    def resolved_worker_token(self) -> str | None:
        if self.worker_token is not None:
            return self.worker_token.get_secret_value()
        return self.worker.token


def read_config_file(path: Path) -> dict[str, Any]:
    """Read a TOML config file, refusing a Discord token in it (tokens in files end up in git)."""
    try:
        data = tomllib.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise SettingsError(f"config file {path} does not exist") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise SettingsError(f"cannot read config file {path}: {exc}") from None
    except tomllib.TOMLDecodeError as exc:
        raise SettingsError(f"config file {path} is not valid TOML: {exc}") from None
    found = _TOKEN_KEYS & {k.lower() for k in data} | _TOKEN_KEYS & {
        k.lower() for k in data.get("discord", {}) if isinstance(data.get("discord"), dict)
    }
    if found:
        raise SettingsError(
            f"config file {path} sets {sorted(found)[0]!r}: put the bot token in the {TOKEN_ENV} "
            "environment variable instead, never in a file"
        )
    return data


def load_settings(config: Path | None = None, environ: Mapping[str, str] | None = None) -> Settings:
    """Build the settings once: the file from `config` or `$BRUSHFIRE_CONFIG`, then the environment."""
    env = os.environ if environ is None else environ
    path = config or (Path(env[CONFIG_ENV]) if env.get(CONFIG_ENV) else None)
    data = read_config_file(path) if path else {}
    try:
        return Settings(**data)
    except ValidationError as exc:
        where = f"config file {path} / environment" if path else "environment"
        raise SettingsError(f"invalid settings ({where}):\n{_describe(exc)}") from None


def anchor_paths(settings: Settings, base: Path) -> Settings:
    """The settings with every relative file path read from `base` (the config file's folder, or a data
    folder), so the same settings name the same files whatever folder a process is started in."""

    def under(path: Path | None) -> Path | None:
        return base / path if path is not None and not path.is_absolute() else path

    db, discord, engine = settings.database, settings.discord, settings.engine
    return settings.model_copy(
        update={
            "database": db.model_copy(update={"path": under(db.path), "backup_dir": under(db.backup_dir)}),
            "discord": discord.model_copy(update={"sync_state_file": under(discord.sync_state_file)}),
            "engine": engine.model_copy(update={"cache_dir": under(engine.cache_dir)}),
        }
    )


def _describe(exc: ValidationError) -> str:
    lines = []
    for err in exc.errors(include_url=False):
        loc = ".".join(str(p) for p in err["loc"]) or "(root)"
        lines.append(f"  {loc}: {err['msg']}")
    return "\n".join(lines)
