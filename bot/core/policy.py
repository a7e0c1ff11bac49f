"""A power user's per-job controls (steps, guidance, sampler, exact size, model) within the server's policy.

The limits: the configured `limits.max_steps` and the worker's `max_pixels`, each of which a server may
lower (`/settings job-limits`), the fixed list of samplers and the worker's served models, each of which
a server may narrow (`/settings samplers`, `/settings models`). The ledger prices what passes by steps x
pixels (`quotas.pricing`), a chosen model's own default steps and size standing in for those left out.
"""

from __future__ import annotations

from bot.core.errors import InvalidInput
from bot.core.i18n import N_, Message
from bot.core.jobplan import SAMPLERS, Controls
from bot.core.settings import Settings
from inference.protocol import MAX_SIDE, MIN_SIDE
from storage.guilds import GuildSettings

MAX_GUIDANCE = 30.0  # the worker's bound (inference.protocol.JobRequest)


class JobPolicy:
    """Checks a job's controls against the configured limits and a server's own."""

    def __init__(self, settings: Settings) -> None:
        self._settings = settings

    def max_steps(self, guild: GuildSettings) -> int:
        """The most steps a job may ask for here: the server's cap within the configured one."""
        return min(self._settings.limits.max_steps, guild.max_steps or self._settings.limits.max_steps)

    def max_pixels(self, guild: GuildSettings | None = None) -> int:
        """The most pixels an image may have here: the server's cap within the worker's."""
        cap = self._settings.worker.max_pixels
        return min(cap, guild.max_pixels or cap) if guild is not None else cap

    @staticmethod
    def samplers(guild: GuildSettings) -> list[str]:
        """The sampler names members may pick here."""
        allowed = guild.allowed_samplers
        return [name for name in SAMPLERS if allowed is None or name in allowed]

    def check_sampler(self, name: str, guild: GuildSettings) -> None:
        if name not in self.samplers(guild):
            offered = ", ".join(self.samplers(guild)) or Message(N_("none"))
            raise InvalidInput(
                N_("`{name}` is not a sampler this server allows ({allowed})."),
                name=name[:40],
                allowed=offered,
            )

    @staticmethod
    def models(guild: GuildSettings, served: list[str]) -> list[str]:
        """The worker's models members may pick here."""
        allowed = guild.allowed_models
        return [name for name in served if allowed is None or name in allowed]

    def check_model(self, name: str, guild: GuildSettings, served: list[str] | None) -> None:
        """Refuse a model the server does not allow or the worker does not serve. `served` None: the
        worker has not said yet (it refuses an unknown model itself, before anything is charged)."""
        if served is None:
            if guild.allowed_models is None or name in guild.allowed_models:
                return
            served = list(guild.allowed_models)
        if name not in self.models(guild, served):
            offered = ", ".join(self.models(guild, served)) or Message(N_("none"))
            raise InvalidInput(
                N_("`{name}` is not a model this server allows ({allowed})."), name=name[:80], allowed=offered
            )

    def check(self, controls: Controls, guild: GuildSettings, *, aspect_given: bool) -> Controls:
        """A power user's steps, guidance and size, each within this server's policy."""
        most = self.max_steps(guild)
        if controls.steps is not None and not 1 <= controls.steps <= most:
            raise InvalidInput(
                N_("You can ask for 1 to {max} steps here, not {steps}."), max=most, steps=controls.steps
            )
        if controls.guidance is not None and not 0.0 <= controls.guidance <= MAX_GUIDANCE:
            raise InvalidInput(
                N_("Guidance must be between 0 and {max}, not {guidance}."),
                max=MAX_GUIDANCE,
                guidance=controls.guidance,
            )
        if controls.sampler is not None:
            self.check_sampler(controls.sampler, guild)
        if (controls.width is None) != (controls.height is None):
            raise InvalidInput(N_("Give both a width and a height, or neither."))
        if controls.width is None or controls.height is None:
            return controls
        if aspect_given:
            raise InvalidInput(N_("Give either an aspect or a width and height, not both."))
        for side in (controls.width, controls.height):
            if side % 8 or not MIN_SIDE <= side <= MAX_SIDE:
                raise InvalidInput(
                    N_("Width and height must be multiples of 8 between {min} and {max}, not {side}."),
                    min=MIN_SIDE,
                    max=MAX_SIDE,
                    side=side,
                )
        cap = self.max_pixels(guild)
        if controls.width * controls.height > cap:
            raise InvalidInput(
                N_("{width}x{height} is {pixels} pixels; this server allows at most {max}."),
                width=controls.width,
                height=controls.height,
                pixels=controls.width * controls.height,
                max=cap,
            )
        return controls
