"""What a job is before it runs: who asks, where the answer goes, the options typed, and the plan.

Plain records (no checks): `bot.core.plans.Planner` validates options into a `JobPlan`.
"""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any

from inference.protocol import InpaintSpec, JobRequest
from inference.vocabulary import JobKind, Lane

# The samplers a member may pick (the name shown -> the diffusers scheduler the worker builds for the
# job); a server may allow fewer (/settings samplers). Flow-matching models take only the last one.
SAMPLERS: dict[str, str] = {
    "euler": "EulerDiscreteScheduler",
    "euler-ancestral": "EulerAncestralDiscreteScheduler",
    "dpm++-2m": "DPMSolverMultistepScheduler",
    "ddim": "DDIMScheduler",
    "unipc": "UniPCMultistepScheduler",
    "heun": "HeunDiscreteScheduler",
    "flow-euler": "FlowMatchEulerDiscreteScheduler",
}
TOKEN_LIFETIME_S = 15 * 60
TOKEN_MARGIN_S = 30  # stop trusting a token a little early: a slow upload must not straddle expiry


class Action(StrEnum):
    """What made a job: a command, or a button on an earlier result."""

    IMAGINE = "imagine"
    EDIT = "edit"
    REROLL = "reroll"
    VARY = "vary"
    UPSCALE = "upscale"  # the upscaler alone ("Upscale (subtle)")
    UPSCALE_CREATIVE = "upscale-creative"  # the upscaler, then a light img2img pass under the prompt
    # Inpaint jobs on one image of a result (inference/canvas.py): the picture on a larger canvas, or a region.
    ZOOM_OUT = "zoom_out"
    PAN = "pan"
    VARY_REGION = "vary_region"

    @property
    def is_upscale(self) -> bool:
        return self in (Action.UPSCALE, Action.UPSCALE_CREATIVE)


INPAINT_ACTIONS = frozenset({Action.ZOOM_OUT, Action.PAN, Action.VARY_REGION})


@dataclass(frozen=True, slots=True)
class Requester:
    """Who asks, and where. The command line uses guild 0, channel 0, user 0 named `local`."""

    user_id: int
    guild_id: int
    channel_id: int
    name: str
    role_ids: tuple[int, ...] = ()
    is_admin: bool = False


@dataclass(frozen=True, slots=True)
class Delivery:
    """The interaction a job answers; the token may edit the original response for 15 minutes. `language`
    is the member's (e.g. "fr"): the result, even one posted in the channel or after a restart, uses it."""

    application_id: int | None = None
    interaction_token: str | None = None
    token_expires_at: float | None = None
    language: str | None = None


@dataclass(frozen=True, slots=True)
class Controls:
    """A power user's per-job controls; None: the style's, else the model's. The planner bounds each by
    the server's policy (`max_steps`, `max_pixels`) and the ledger prices steps x pixels."""

    steps: int | None = None
    guidance: float | None = None
    width: int | None = None  # with height: an exact size instead of an aspect
    height: int | None = None
    sampler: str | None = None  # a name of SAMPLERS
    model: str | None = None  # one of the worker's models (WorkerInfo.models); None: its main one


@dataclass(frozen=True, slots=True)
class ImagineOptions:
    prompt: str
    style: str | None = None
    negative: str = ""
    aspect: str | None = None
    count: int = 1
    seed: int | None = None
    lane: Lane | None = None  # None: fast, falling back to relax when out of credits
    controls: Controls = Controls()


@dataclass(frozen=True, slots=True)
class JobPlan:
    """A validated job, ready to price and reserve. Everything but `image` is stored as the job's parameters."""

    action: Action
    kind: JobKind
    prompt: str  # the user's words
    model_prompt: str  # after the style template
    negative: str
    model_negative: str
    style: str | None
    width: int | None  # None: the worker's choice (the model's native size, or the input image's)
    height: int | None
    count: int
    seed: int
    steps: int | None = None
    guidance: float | None = None
    strength: float | None = None
    adapter: str | None = None
    adapter_scale: float = 1.0
    sampler: str | None = None  # a diffusers scheduler class (SAMPLERS' values); None: the model's
    model: str | None = None  # the worker's model that runs it; None: the main one
    lane: Lane | None = None
    # How the worker encodes the pictures (the server's setting when planned): png, webp or jpeg; None
    # (a job planned before formats were chosen per server): the worker's own `output_format`.
    output_format: str | None = None
    creative: bool = False  # an upscale redrawn with img2img after the upscaler
    parent_job_id: str | None = None
    parent_generation_id: str | None = None
    # An inpaint job's canvas as text (`canvas_text`): "zoom:2", "pan:left" or "region:0.1.2".
    canvas: str | None = None
    image: bytes | None = field(default=None, repr=False)

    @property
    def from_upload(self) -> bool:
        """Made from an uploaded image, which is not kept: it cannot be re-rolled or entered in a challenge."""
        return self.kind is not JobKind.GENERATE and self.parent_generation_id is None

    def parameters(self) -> str:
        data = {k: v for k, v in dataclasses.asdict(self).items() if k != "image"}
        return json.dumps(data, sort_keys=True)

    @classmethod
    def from_parameters(cls, text: str, image: bytes | None = None) -> JobPlan:
        data: dict[str, Any] = json.loads(text)
        data["action"] = Action(data["action"])
        data["kind"] = JobKind(data["kind"])
        data["lane"] = Lane(data["lane"]) if data.get("lane") else None
        return cls(**data, image=image)

    def request(self, job_id: str, user: str, lane: Lane) -> JobRequest:
        """The worker's request: every generation parameter the plan and the request share, by name."""
        shared = {name: getattr(self, name) for name in _REQUEST_FIELDS}
        if self.canvas is not None:
            shared["inpaint"] = inpaint_spec(self.canvas)
        return JobRequest(
            idempotency_key=job_id,
            user=user,
            lane=lane,
            prompt=self.model_prompt,
            negative_prompt=self.model_negative,
            **shared,
        )


# The generation parameters a plan hands the worker as they are (kind, size, steps, guidance, strength,
# count, seed, adapter...): named once, by the wire model, so a new request field needs no copying here.
# Not `prompt` (the member's words; the worker gets the styled `model_prompt`) nor `lane` (the charged one).
_REQUEST_FIELDS = tuple(
    f.name
    for f in dataclasses.fields(JobPlan)
    if f.name in JobRequest.model_fields and f.name not in ("prompt", "lane")
)


def canvas_text(spec: InpaintSpec) -> str:
    """An inpaint spec as the short text a plan stores (and a custom_id could carry)."""
    if spec.op == "zoom":
        return f"zoom:{spec.zoom:g}"
    if spec.op == "pan":
        return f"pan:{spec.direction}"
    return "region:" + ".".join(str(c) for c in spec.cells or ())


def inpaint_spec(text: str) -> InpaintSpec:
    """The spec a plan's `canvas` text stands for (the worker's wire model checks it)."""
    op, _, arg = text.partition(":")
    if op == "zoom":
        return InpaintSpec(op="zoom", zoom=float(arg))
    if op == "pan":
        return InpaintSpec.model_validate({"op": "pan", "direction": arg})
    return InpaintSpec(op="region", cells=tuple(int(c) for c in arg.split(".")))


def token_expiry(now: float) -> float:
    """When an interaction token made now stops being usable for edits and follow-ups."""
    return now + TOKEN_LIFETIME_S - TOKEN_MARGIN_S


LOCAL_USER = Requester(user_id=1, guild_id=1, channel_id=1, name="local", is_admin=True)
"""The command line's identity: a Discord user named `local` in a server of its own (ids must be > 0)."""
