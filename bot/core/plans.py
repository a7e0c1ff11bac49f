"""The planner: what a user typed or pressed, checked and turned into a JobPlan (bot.core.jobplan).

Every refusal here is a BrushfireError with a specific message, raised before anything is charged.

About 500 lines in one class on purpose: every action's plan (a command, each result button) goes through
the same checks (channel, prompt, limits, lanes, sizes) against the same worker defaults, and one class
keeps a new action from skipping one of them. The plan itself lives in bot.core.jobplan.
"""

from __future__ import annotations

import dataclasses
import io
import logging
import re
import secrets
from typing import Any, TypeVar

from bot.core.errors import BadAttachment, BlockedContent, ChannelNotAllowed, InvalidInput
from bot.core.i18n import N_, Message
from bot.core.jobplan import (
    INPAINT_ACTIONS,
    LOCAL_USER,
    SAMPLERS,
    Action,
    Controls,
    Delivery,
    ImagineOptions,
    JobPlan,
    Requester,
    canvas_text,
    token_expiry,
)
from bot.core.policy import JobPolicy
from bot.core.settings import Limits, Settings
from bot.core.styles import Aspect, StyleBook, size_for
from bot.core.validation import require_visible
from inference.canvas import canvas_size
from inference.images import ImageLimits, decode_image
from inference.protocol import MAX_COUNT, MAX_SEED, MAX_SIDE, InpaintSpec, ProtocolError, WorkerInfo
from inference.settings import ModelDefaults
from inference.text import MAX_PROMPT_CHARS, is_visible, normalize_prompt
from inference.vocabulary import JobKind, Lane
from storage.generations import GenerationRecord, image_format
from storage.guilds import GuildSettings

log = logging.getLogger(__name__)

# The records of a job live in bot.core.jobplan; these names are the planner's own vocabulary too.
__all__ = [
    "LOCAL_USER",
    "SAMPLERS",
    "Action",
    "Controls",
    "Delivery",
    "ImagineOptions",
    "JobPlan",
    "Planner",
    "Requester",
    "find_blocked",
    "parse_lane",
    "token_expiry",
]
T = TypeVar("T")

REGEX_PREFIX = "re:"
# The upscaler factor assumed of a worker that does not say (one older than `WorkerInfo.upscale_scales`).
DEFAULT_UPSCALE_SCALE = 2
# What check_prompt calls the text it checks, at the start of its errors (the article included, so that
# each language can agree its own words).
PROMPT = N_("The prompt")
NEGATIVE = N_("The negative prompt")
INSTRUCTION = N_("The instruction")


class Planner:
    """Turns what a user typed or pressed into a JobPlan, or refuses it with a specific message."""

    def __init__(self, settings: Settings, styles: StyleBook) -> None:
        self._settings = settings
        self._limits: Limits = settings.limits
        self.policy = JobPolicy(settings)  # a power user's controls within the server's limits
        self._styles = styles
        self._defaults = settings.engine.defaults
        # Only what was written down is kept over the worker's own defaults: the rest is a guess at its model.
        engine = settings.engine
        self._by_hand = engine.defaults.model_fields_set if "defaults" in engine.model_fields_set else set()
        # Edits run on an instruction-editing model (which has no strength), as the worker last said.
        self._instruct_edits = False
        # Whether the worker's model can inpaint (zoom out, pan, vary region); None until it has said.
        self.can_inpaint: bool | None = None
        # The worker's models and their defaults, main first, once it has said (None until then).
        self._served: dict[str, ModelDefaults] | None = None
        self._main_model: str | None = None
        # Each model's upscaler factor, as the worker last said (empty: it has not, or is older: 2).
        self._upscale_scales: dict[str, int] = {}

    @property
    def defaults(self) -> ModelDefaults:
        """The model defaults plans are sized and priced by: `engine.defaults`, or the worker's own."""
        return self._defaults

    @property
    def defaults_by_hand(self) -> frozenset[str]:
        """The `engine.defaults` fields set in the settings, which the worker's own never replace."""
        return frozenset(self._by_hand)

    def adopt_worker_defaults(self, info: WorkerInfo) -> bool:
        """Plan with the defaults the worker advertises, except those `engine.defaults` sets by hand.

        True when the defaults planned with changed.
        """
        own = self._settings.engine.defaults
        self._instruct_edits = info.has_edit_model
        self.can_inpaint = info.can_inpaint
        self._served = dict(info.models) or {info.model: info.defaults}
        self._main_model = info.model
        self._upscale_scales = dict(info.upscale_scales)
        adopted = info.defaults.model_copy(update={name: getattr(own, name) for name in self._by_hand})
        if adopted == self._defaults:
            return False
        self._defaults = adopted
        return True

    @property
    def served_models(self) -> list[str] | None:
        """The models the worker serves, main first; None until it has said."""
        return None if self._served is None else list(self._served)

    def _model(self, name: str | None, guild: GuildSettings) -> ModelDefaults | None:
        """The defaults of a chosen model other than the main one (which plans use anyway); checks it."""
        if name is None:
            return None
        self.policy.check_model(name, guild, self.served_models)
        if self._served is None or name == self._main_model:
            return None
        return self._served.get(name)

    def upscale_scale(self, model: str | None) -> int:
        """The worker's upscaler factor for a model (None: the main one); 0 when it has none."""
        if not self._upscale_scales:
            return DEFAULT_UPSCALE_SCALE
        return self._upscale_scales.get(model or self._main_model or "", 0)

    def upscale_plan(self, base: JobPlan, action: Action) -> JobPlan:
        """An upscale of `base`'s image (its size in `base`): the output is the worker's factor times it,
        refused when the model has no upscaler or the output is over `worker.max_upscale_pixels` (a
        server's own cap is on what it generates; upscales run in tiles and have their own)."""
        scale = self.upscale_scale(base.model)
        if scale < 2:
            raise InvalidInput(N_("This model has no upscaler on this server's worker."))
        assert base.width is not None and base.height is not None
        width, height = base.width * scale, base.height * scale
        cap = self._settings.worker.max_upscale_pixels
        if width * height > cap:
            raise InvalidInput(
                N_(
                    "Upscaling this {size} image {scale} times makes {width}x{height}, over this server's limit of {limit} pixels."
                ),
                size=f"{base.width}x{base.height}",
                scale=scale,
                width=width,
                height=height,
                limit=cap,
            )
        creative = action is Action.UPSCALE_CREATIVE
        return dataclasses.replace(
            base,
            kind=JobKind.UPSCALE,
            width=width,
            height=height,
            creative=creative,
            strength=self._limits.upscale_strength if creative else None,
            seed=self._seed(None) if creative else base.seed,
        )

    def check_channel(self, requester: Requester, guild: GuildSettings) -> None:
        if requester.guild_id and not guild.channel_allowed(requester.channel_id):
            channels = ", ".join(f"<#{c}>" for c in guild.allowed_channel_ids[:10])
            raise ChannelNotAllowed(
                N_("brushfire is not used in this channel here. Try {channels}."), channels=channels
            )

    def check_prompt(self, prompt: str, guild: GuildSettings, what: str = PROMPT) -> str:
        """The prompt normalised as the worker will see it (`inference.text`), or a refusal saying why;
        `what` names it in errors (PROMPT, NEGATIVE, INSTRUCTION)."""
        text = require_visible(normalize_prompt(prompt), what)
        field = Message(what)
        if len(text) > self._limits.prompt_chars:
            raise InvalidInput(
                N_("{what} is {length} characters; the limit is {limit}. Shorten it."),
                what=field,
                length=len(text),
                limit=self._limits.prompt_chars,
            )
        blocked = find_blocked(text, guild.blocked_words)
        if blocked is not None:
            raise BlockedContent(
                N_("{what} contains `{blocked}`, which this server does not allow."),
                what=field,
                blocked=blocked,
            )
        return text

    @staticmethod
    def check_styled(text: str, style: str, what: str = PROMPT) -> str:
        """A style template adds words; the result must still fit the worker's limit."""
        if len(text) > MAX_PROMPT_CHARS:
            raise InvalidInput(
                N_(
                    "{what} comes to {count} characters with the style `{style}`; the limit is {limit}. Shorten it or pick another style."
                ),
                style=style,
                what=Message(what),
                count=len(text),
                limit=MAX_PROMPT_CHARS,
            )
        return text

    def native_size(self) -> tuple[int, int]:
        return self._defaults.width, self._defaults.height

    def plan_imagine(
        self,
        requester: Requester,
        options: ImagineOptions,
        guild: GuildSettings,
        styles: StyleBook | None = None,
    ) -> JobPlan:
        """Validate /imagine's options into a plan; raises a BrushfireError naming the bad option.

        `styles` is the book with the guild's own presets; without it only the configured ones count.
        """
        book = styles or self._styles
        self.check_channel(requester, guild)
        prompt = self.check_prompt(options.prompt, guild)
        negative = (
            self.check_prompt(options.negative, guild, NEGATIVE)
            if is_visible(normalize_prompt(options.negative))
            else ""
        )
        style = book.style(options.style or guild.default_style)
        aspect = book.aspect(options.aspect or (style.aspect if style else None))
        max_count = min(self._limits.max_images_per_job, guild.max_images_per_job)
        if not 1 <= options.count <= max_count:
            raise InvalidInput(
                N_("You can ask for 1 to {max} images per job here, not {count}."),
                max=max_count,
                count=options.count,
            )
        seed = self._seed(options.seed)
        lane = self._lane(options.lane, guild)
        controls = self.policy.check(options.controls, guild, aspect_given=options.aspect is not None)
        # A model other than the main one: its own size and steps where none are given, so it is priced
        # (and drawn) by what it really runs.
        own = self._model(controls.model, guild)
        width, height = (
            (controls.width, controls.height)
            if controls.width is not None
            else self._size(aspect, guild, (own.width, own.height) if own else None)
        )
        if own is not None and width is None:
            width, height = own.width, own.height
        styled = style.apply(prompt, negative) if style else None
        if style and styled:
            self.check_styled(styled.prompt, style.name)
            self.check_styled(styled.negative, style.name, NEGATIVE)
        return JobPlan(
            action=Action.IMAGINE,
            kind=JobKind.GENERATE,
            prompt=prompt,
            model_prompt=styled.prompt if styled else prompt,
            negative=negative,
            model_negative=styled.negative if styled else negative,
            style=style.name if style else None,
            width=width,
            height=height,
            count=options.count,
            seed=seed,
            steps=_first(controls.steps, style.steps if style else None, own.steps if own else None),
            guidance=_first(controls.guidance, style.guidance if style else None),
            adapter=style.adapter if style else None,
            adapter_scale=style.adapter_scale if style else 1.0,
            sampler=SAMPLERS[controls.sampler] if controls.sampler else None,
            # The main model named is the main model left out: its jobs keep batching together.
            model=None if controls.model == self._main_model else controls.model,
            lane=lane,
            output_format=guild.output_format,
        )

    def plan_edit(
        self,
        requester: Requester,
        *,
        image: bytes,
        instruction: str,
        strength: float | None,
        guild: GuildSettings,
        lane: Lane | None = None,
        seed: int | None = None,
    ) -> JobPlan:
        """Validate an edit of an uploaded image (PNG, JPEG or WebP within the size and pixel limits)."""
        self.check_channel(requester, guild)
        prompt = self.check_prompt(instruction, guild, INSTRUCTION)
        if strength is not None and not 0.05 <= strength <= 1.0:
            raise InvalidInput(
                N_("Strength must be between 0.05 and 1.0, not {strength}."), strength=strength
            )
        if strength is not None and self._instruct_edits:
            raise InvalidInput(
                N_(
                    "Strength does not apply here: edits run on an instruction-editing model, which keeps as much of the picture as the instruction allows. Leave strength out."
                )
            )
        chosen = self._seed(seed)
        png, _size = self.read_attachment(image)
        edit = _edit_fields(prompt, chosen, strength if strength is not None else self._limits.edit_strength)
        return JobPlan(
            action=Action.EDIT,
            width=None,
            height=None,
            count=1,
            lane=self._lane(lane, guild),
            image=png,
            output_format=guild.output_format,
            **edit,
        )

    def read_attachment(self, data: bytes) -> tuple[bytes, tuple[int, int]]:
        """Decode an upload within the limits; return it as PNG (the worker's safest input) and its size."""
        limits = ImageLimits(
            max_bytes=self._limits.attachment_bytes, max_pixels=self._limits.attachment_pixels
        )
        fmt = image_format(data)
        if data and fmt is None:
            raise BadAttachment(N_("That file is not a PNG, JPEG or WebP image."))
        try:
            img = decode_image(data, limits)
        except ProtocolError as exc:
            raise BadAttachment(N_("That image cannot be used: {reason}."), reason=exc.message) from None
        out = io.BytesIO()
        img.save(out, format="PNG")
        return out.getvalue(), img.size

    def reroll(
        self, parent: JobPlan, parent_job_id: str, image: bytes | None, guild: GuildSettings
    ) -> JobPlan:
        """The same job again with a new seed (an edit keeps its source image)."""
        return dataclasses.replace(
            parent,
            action=Action.REROLL,
            seed=self._seed(None),
            lane=self._lane(parent.lane, guild, quiet=True),
            parent_job_id=parent_job_id,
            image=image,
            output_format=guild.output_format,
        )

    def derive(
        self,
        action: Action,
        parent: JobPlan,
        source: GenerationRecord,
        guild: GuildSettings,
        instruction: str | None = None,
        *,
        spec: InpaintSpec | None = None,
    ) -> JobPlan:
        """Vary, upscale or edit one image of an earlier result, or zoom out, pan or repaint a region of it
        (`spec`, with `instruction` as the region's prompt); a new job whose parent is that image."""
        base = dataclasses.replace(
            parent,
            action=action,
            count=1,
            lane=self._lane(parent.lane, guild, quiet=True),
            parent_job_id=source.job_id,
            parent_generation_id=source.generation_id,
            image=source.image,
            width=source.width,
            height=source.height,
            output_format=guild.output_format,
            creative=False,
            canvas=None,  # a zoom's or pan's result is varied, upscaled or edited as a picture like any other
        )
        if action is Action.VARY:
            return dataclasses.replace(
                base, kind=JobKind.IMG2IMG, seed=self._seed(None), strength=self._limits.vary_strength
            )
        if action.is_upscale:
            return self.upscale_plan(base, action)
        if action in INPAINT_ACTIONS:
            return self._inpaint(base, parent, spec, guild, instruction)
        text = self.check_prompt(instruction or "", guild, INSTRUCTION)
        return dataclasses.replace(base, **_edit_fields(text, self._seed(None), self._limits.edit_strength))

    def _inpaint(
        self,
        base: JobPlan,
        parent: JobPlan,
        spec: InpaintSpec | None,
        guild: GuildSettings,
        prompt: str | None,
    ) -> JobPlan:
        """Zoom out, pan or vary region: an inpaint job on the main model, priced at its output canvas."""
        if spec is None:
            raise InvalidInput(N_("Choose what to repaint first."))
        if self.can_inpaint is False:
            raise InvalidInput(N_("This server's model cannot zoom out, pan or repaint a region."))
        assert base.width is not None and base.height is not None  # the source image's size
        width, height = canvas_size(
            spec.op, base.width, base.height, zoom=spec.zoom or 2.0, direction=spec.direction or "right",
            max_pixels=self.policy.max_pixels(guild), max_side=MAX_SIDE,
        )  # fmt: skip
        fields: dict[str, Any] = {}
        if prompt is not None and normalize_prompt(prompt) != normalize_prompt(parent.prompt):
            # A new prompt for the region is the whole prompt: the parent's style template is not applied.
            text = self.check_prompt(prompt, guild)
            fields = {"prompt": text, "model_prompt": text, "style": None}
        # Lossless whatever the server's format: these keep the rest of the picture pixel for pixel, and a
        # lossy re-encode would move it (JPEG q95 by up to 3/255 near the painted cells) and compound over
        # repeated zooms and region edits.
        return dataclasses.replace(
            base, **fields, kind=JobKind.INPAINT, width=width, height=height, seed=self._seed(None),
            strength=None, adapter=None, adapter_scale=1.0, model=None, canvas=canvas_text(spec),
            output_format="png",
        )  # fmt: skip

    def _seed(self, seed: int | None) -> int:
        if seed is None:
            return secrets.randbelow(MAX_SEED - MAX_COUNT)
        if not 0 <= seed <= MAX_SEED - MAX_COUNT:
            raise InvalidInput(
                N_("The seed must be between 0 and {max}, not {seed}."), max=MAX_SEED - MAX_COUNT, seed=seed
            )
        return seed

    def _lane(self, lane: Lane | None, guild: GuildSettings, quiet: bool = False) -> Lane | None:
        if lane is Lane.RELAX and not guild.relax_enabled:
            if quiet:
                return None
            raise InvalidInput(N_("This server has turned the relax lane off."))
        return lane

    def _size(
        self, aspect: Aspect | None, guild: GuildSettings, native: tuple[int, int] | None = None
    ) -> tuple[int | None, int | None]:
        """`native`: the chosen model's size; None: the main model's."""
        native = native or self.native_size()
        if aspect is None:
            if guild.max_pixels is None:
                return None, None  # the model's native size, whatever the worker has loaded
            return self._fit(*native, guild)  # named, so the server's cap holds
        base_w, base_h = native
        size = size_for(aspect, base_w, base_h)
        return self._fit(size.width, size.height, guild)

    def _fit(self, width: int, height: int, guild: GuildSettings | None = None) -> tuple[int, int]:
        """Shrink to the pixel cap (the server's within the worker's), keeping the ratio and multiples of 8."""
        cap = self.policy.max_pixels(guild)
        scale = min(1.0, (cap / (width * height)) ** 0.5)
        return max(64, int(width * scale) // 8 * 8), max(64, int(height * scale) // 8 * 8)


def _first(*values: T | None) -> T | None:
    return next((v for v in values if v is not None), None)


def _edit_fields(instruction: str, seed: int, strength: float) -> dict[str, Any]:
    """What makes a plan an instruction edit: the instruction is the whole prompt; no negative, style,
    steps, guidance or sampler (the editing model's own)."""
    return {
        "kind": JobKind.EDIT,
        "prompt": instruction,
        "model_prompt": instruction,
        "negative": "",
        "model_negative": "",
        "style": None,
        "steps": None,
        "guidance": None,
        "sampler": None,
        "model": None,  # the edit model, or img2img on the main one
        "seed": seed,
        "strength": strength,
    }


def find_blocked(text: str, blocked: tuple[str, ...] | list[str]) -> str | None:
    """The first blocked word (whole word, any case) or `re:` pattern found in the text, or None."""
    lowered = text.lower()
    for entry in blocked:
        if entry.startswith(REGEX_PREFIX):
            try:
                if re.search(entry[len(REGEX_PREFIX) :], text, re.IGNORECASE):
                    return entry
            except re.error:
                log.warning("ignoring invalid blocked pattern %r", entry)
        elif re.search(rf"(?<!\w){re.escape(entry.lower())}(?!\w)", lowered):
            return entry
    return None


def parse_lane(value: str | None) -> Lane | None:
    if value is None or value == "auto":
        return None
    try:
        return Lane(value)
    except ValueError:
        raise InvalidInput(N_("`{value}` is not a lane; use fast or relax."), value=value[:20]) from None
