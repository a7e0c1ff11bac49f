"""Quota settings and pricing: what a job costs in credits, from its size, steps, count and kind."""

from __future__ import annotations

import math
from dataclasses import dataclass

from pydantic import BaseModel, ConfigDict, Field, model_validator

from bot.core.i18n import N_
from bot.core.quotas.records import QuotaInputError
from inference.vocabulary import JobKind

DAY_S = 86_400


class CostSettings(BaseModel):
    """Credits per job: `credits_per_base_image` for one base-size image at base steps, scaled linearly."""

    model_config = ConfigDict(extra="forbid")

    base_pixels: int = Field(default=512 * 512, ge=64 * 64)
    base_steps: int = Field(default=30, ge=1)
    credits_per_base_image: float = Field(default=1.0, gt=0)
    img2img_multiplier: float = Field(default=1.0, gt=0)
    edit_multiplier: float = Field(default=1.5, gt=0)
    # An upscale: the upscaler's pass costs this share of a base image per base image of output pixels
    # (steps do not apply); a creative one adds its img2img pass at the output size, priced as img2img.
    upscale_multiplier: float = Field(default=0.25, gt=0)
    min_cost: int = Field(default=1, ge=1)


class RelaxSettings(BaseModel):
    """The slower lane users fall back to when their fast credits run out."""

    model_config = ConfigDict(extra="forbid")

    enabled_by_default: bool = True  # for guilds that never set relax_enabled in their settings
    limit: int | None = Field(default=None, ge=1)  # relax credits per window; None: no cap


class QuotaSettings(BaseModel):
    """Default shares, the bounds admins may set, pricing, the relax lane and maintenance timing."""

    model_config = ConfigDict(extra="forbid")

    default_limit: int = Field(default=50, ge=1)
    default_window_s: int = Field(default=DAY_S, ge=60)
    min_window_s: int = Field(default=60, ge=1)
    max_window_s: int = Field(default=30 * DAY_S, ge=60)
    max_limit: int = Field(default=1_000_000, ge=1)
    max_bonus: int = Field(default=100_000, ge=1)
    cost: CostSettings = CostSettings()
    relax: RelaxSettings = RelaxSettings()
    stale_reservation_s: float = Field(default=2 * 3600, gt=0)
    sweep_interval_s: float = Field(default=300, gt=0)
    prune_interval_s: float = Field(default=6 * 3600, gt=0)

    @model_validator(mode="after")
    def _windows(self) -> QuotaSettings:
        if not self.min_window_s <= self.default_window_s <= self.max_window_s:
            raise ValueError("default_window_s must lie between min_window_s and max_window_s")
        if self.default_limit > self.max_limit:
            raise ValueError("default_limit must not exceed max_limit")
        return self


@dataclass(frozen=True, slots=True)
class CostSpec:
    """What a job asks for, as far as pricing goes."""

    kind: JobKind
    width: int  # the output's
    height: int
    steps: int
    count: int = 1
    # A creative upscale's img2img pass: it runs steps x strength steps at the output size.
    redraw_strength: float | None = None


def quote(settings: QuotaSettings, spec: CostSpec) -> int:
    """Credits a job costs: pixels x steps x images x the pipeline's multiplier, at least min_cost.

    An upscale is priced by its output pixels (the upscaler's pass has no steps), plus, when creative, its
    img2img pass over those pixels for the steps it runs."""
    if min(spec.width, spec.height, spec.steps, spec.count) <= 0:
        raise QuotaInputError(N_("Width, height, steps and count must all be positive."))
    c = settings.cost
    multiplier = {
        JobKind.GENERATE: 1.0,
        JobKind.IMG2IMG: c.img2img_multiplier,
        JobKind.EDIT: c.edit_multiplier,
        JobKind.UPSCALE: c.upscale_multiplier,
        JobKind.INPAINT: 1.0,  # zoom out, pan, vary region: a generation at the output canvas's size
    }.get(spec.kind)
    if multiplier is None:
        raise QuotaInputError(N_("This is an unknown job kind: {kind}."), kind=repr(spec.kind))
    images = c.credits_per_base_image * (spec.width * spec.height / c.base_pixels) * spec.count
    if spec.kind is JobKind.UPSCALE:
        raw = images * multiplier
        if spec.redraw_strength is not None:
            raw += images * (spec.steps * spec.redraw_strength / c.base_steps) * c.img2img_multiplier
    else:
        raw = images * (spec.steps / c.base_steps) * multiplier
    # Rounding first keeps float noise (1.0000000001) from costing a whole extra credit.
    return max(c.min_cost, math.ceil(round(raw, 6)))
