"""Zoom out, pan and vary region on a single-image result: persistent buttons, the region picker and its modal.

Rows 2-4 of a single-image result (`tool_items`): Zoom out 1.5x, Zoom out 2x and Vary region, then Pan
left, right, up and down. Each is a `DynamicItem` whose custom_id carries the job id and the image index, so
it works after restarts. Discord has no drawing surface, so Vary region asks in two steps: an ephemeral
select of the 3x3 grid's cells and a few named regions (several at once), then a modal with the prompt,
filled in with the job's own. Every press is a new inpaint job charged like a generation at its output size
(a zoom or pan's canvas is larger, which the zoom buttons' labels say).
"""

from __future__ import annotations

import re
from typing import Any, Self

import discord
from discord import ui

from bot.checks import Gate
from bot.components import INDEX_RE, JOB_RE, PREFIX, custom_id, guarded
from bot.core.i18n import N_
from bot.core.jobplan import Action, JobPlan, Requester
from bot.core.records import GuildSettings
from bot.errors import answer_error
from bot.i18n import ENGLISH, Translate
from bot.interactions import client_of, requester_for
from bot.translator import translate_for
from inference.canvas import GRID, PAN_FRACTION, REGIONS
from inference.protocol import InpaintSpec
from inference.vocabulary import JobId

MODAL_TITLE_MAX = 45
ZOOM_RE = r"(?P<z>15|20)"  # tenths: 1.5x and 2x
PAN_RE = r"(?P<d>left|right|up|down)"
PAN_EMOJI = {"left": "⬅️", "right": "➡️", "up": "⬆️", "down": "⬇️"}
PAN_COST = f"{1 + PAN_FRACTION:g}"  # the canvas's area against the picture's

# The select's options: the grid's nine cells, then named regions; each value stands for a set of cells.
CELL_NAMES = (
    N_("Top left"),
    N_("Top centre"),
    N_("Top right"),
    N_("Middle left"),
    N_("Centre"),
    N_("Middle right"),
    N_("Bottom left"),
    N_("Bottom centre"),
    N_("Bottom right"),
)
NAMED_REGIONS = {
    "left_half": N_("Left half"),
    "right_half": N_("Right half"),
    "top_half": N_("Top half"),
    "bottom_half": N_("Bottom half"),
    "border": N_("Everything but the centre"),
}


def cells_of(values: list[str]) -> tuple[int, ...]:
    """The cells a member's choices cover: `c0`..`c8` and the named regions, merged, in grid order."""
    cells: set[int] = set()
    for value in values:
        if value.startswith("c") and value[1:].isdigit() and int(value[1:]) < GRID * GRID:
            cells.add(int(value[1:]))
        elif value in NAMED_REGIONS:
            cells.update(REGIONS[value])
    return tuple(sorted(cells))


async def start_from_result(
    interaction: discord.Interaction,
    action: Action,
    job_id: JobId,
    index: int,
    prompt: str | None = None,
    *,
    spec: InpaintSpec | None = None,
) -> None:
    """A new job from a result's button on image `index` of the job: with an edit's instruction or a
    region's prompt, and what to inpaint (`spec`). bot/views.py's buttons start theirs here too."""
    bot = client_of(interaction)
    await bot.gate.admit(interaction, Gate.JOB)  # before the public "thinking…"

    async def plan_for(requester: Requester, guild: GuildSettings) -> JobPlan:
        return await bot.services.jobs.plan_from_result(action, job_id, index, requester, prompt, spec=spec)

    await bot.runner.run(interaction, plan_for)


class ZoomButton(ui.DynamicItem[ui.Button[Any]], template=rf"{PREFIX}:zoom:{JOB_RE}:{INDEX_RE}:{ZOOM_RE}"):
    def __init__(self, job_id: JobId, index: int, tenths: int, _: Translate = ENGLISH) -> None:
        zoom = tenths / 10
        factor, cost = f"{zoom:g}", f"{zoom * zoom:g}"  # the canvas's side, and its area: the charge
        super().__init__(
            ui.Button(
                label=_("Zoom out {zoom}x ({cost}x the credits)", zoom=factor, cost=cost),
                emoji="🔍",
                style=discord.ButtonStyle.secondary,
                custom_id=f"{custom_id('zoom', job_id, index)}:{tenths}",
                row=2,
            )
        )
        self.job_id, self.index, self.tenths = job_id, index, tenths

    @classmethod
    async def from_custom_id(
        cls, interaction: discord.Interaction, item: ui.Item[Any], match: re.Match[str]
    ) -> Self:
        return cls(JobId(match["job"]), int(match["n"]), int(match["z"]))

    async def callback(self, interaction: discord.Interaction) -> None:
        spec = InpaintSpec(op="zoom", zoom=self.tenths / 10)
        await guarded(
            interaction, start_from_result(interaction, Action.ZOOM_OUT, self.job_id, self.index, spec=spec)
        )


class PanButton(ui.DynamicItem[ui.Button[Any]], template=rf"{PREFIX}:pan:{JOB_RE}:{INDEX_RE}:{PAN_RE}"):
    def __init__(self, job_id: JobId, index: int, direction: str) -> None:
        super().__init__(
            ui.Button(
                emoji=PAN_EMOJI[direction],
                style=discord.ButtonStyle.secondary,
                custom_id=f"{custom_id('pan', job_id, index)}:{direction}",
                row=3,
            )
        )
        self.job_id, self.index, self.direction = job_id, index, direction

    @classmethod
    async def from_custom_id(
        cls, interaction: discord.Interaction, item: ui.Item[Any], match: re.Match[str]
    ) -> Self:
        return cls(JobId(match["job"]), int(match["n"]), match["d"])

    async def callback(self, interaction: discord.Interaction) -> None:
        spec = InpaintSpec.model_validate({"op": "pan", "direction": self.direction})
        await guarded(
            interaction, start_from_result(interaction, Action.PAN, self.job_id, self.index, spec=spec)
        )


class PanPrice(ui.DynamicItem[ui.Button[Any]], template=rf"{PREFIX}:paninfo:{JOB_RE}:{INDEX_RE}"):
    """A pan's canvas is half as large again: its price, on the pans' row before anyone presses. Disabled:
    Discord's client cannot press it (a forged press is told the price)."""

    def __init__(self, job_id: JobId, index: int, _: Translate = ENGLISH) -> None:
        super().__init__(
            ui.Button(
                label=_("Pan ({cost}x the credits):", cost=PAN_COST),
                style=discord.ButtonStyle.secondary,
                disabled=True,
                custom_id=custom_id("paninfo", job_id, index),
                row=3,
            )
        )

    @classmethod
    async def from_custom_id(cls, _i: discord.Interaction, _item: ui.Item[Any], match: re.Match[str]) -> Self:
        return cls(JobId(match["job"]), int(match["n"]))

    async def callback(self, interaction: discord.Interaction) -> None:
        _ = translate_for(interaction)
        await interaction.response.send_message(
            _("Pan ({cost}x the credits):", cost=PAN_COST), ephemeral=True
        )


class RegionButton(ui.DynamicItem[ui.Button[Any]], template=rf"{PREFIX}:region:{JOB_RE}:{INDEX_RE}"):
    """Opens the region picker, only for the member who pressed."""

    def __init__(self, job_id: JobId, index: int, _: Translate = ENGLISH) -> None:
        super().__init__(
            ui.Button(
                label=_("Vary region"),
                emoji="🖌️",
                style=discord.ButtonStyle.secondary,
                custom_id=custom_id("region", job_id, index),
                row=2,
            )
        )
        self.job_id, self.index = job_id, index

    @classmethod
    async def from_custom_id(cls, _i: discord.Interaction, _item: ui.Item[Any], match: re.Match[str]) -> Self:
        return cls(JobId(match["job"]), int(match["n"]))

    async def callback(self, interaction: discord.Interaction) -> None:
        await guarded(interaction, self._open(interaction))

    async def _open(self, interaction: discord.Interaction) -> None:
        bot = client_of(interaction)
        await bot.services.jobs.check_admission(requester_for(interaction))
        await bot.services.jobs.job_in(self.job_id, interaction.guild_id or 0)
        _ = translate_for(interaction)
        view = ui.View(timeout=None)
        view.add_item(RegionSelect(self.job_id, self.index, _))
        await interaction.response.send_message(
            _("Choose the parts to repaint (several at once); then say what to paint there."),
            view=view,
            ephemeral=True,
        )


class RegionSelect(ui.DynamicItem[ui.Select[Any]], template=rf"{PREFIX}:regionpick:{JOB_RE}:{INDEX_RE}"):
    def __init__(self, job_id: JobId, index: int, _: Translate = ENGLISH) -> None:
        options = [discord.SelectOption(label=_(name), value=f"c{i}") for i, name in enumerate(CELL_NAMES)]
        options += [discord.SelectOption(label=_(name), value=key) for key, name in NAMED_REGIONS.items()]
        super().__init__(
            ui.Select(
                custom_id=custom_id("regionpick", job_id, index),
                placeholder=_("Parts of the picture to repaint"),
                min_values=1,
                max_values=len(options),
                options=options,
            )
        )
        self.job_id, self.index = job_id, index

    @classmethod
    async def from_custom_id(cls, _i: discord.Interaction, _item: ui.Item[Any], match: re.Match[str]) -> Self:
        return cls(JobId(match["job"]), int(match["n"]))

    async def callback(self, interaction: discord.Interaction) -> None:
        await guarded(interaction, self._ask(interaction))

    async def _ask(self, interaction: discord.Interaction) -> None:
        bot = client_of(interaction)
        cells = cells_of(list(self.item.values))
        job = await bot.services.jobs.job_in(self.job_id, interaction.guild_id or 0)
        prompt = JobPlan.from_parameters(job.parameters).prompt
        limit = min(bot.services.settings.limits.prompt_chars, 4000)
        modal = RegionModal(self.job_id, self.index, cells, prompt[:limit], limit, translate_for(interaction))
        await interaction.response.send_modal(modal)


class RegionModal(ui.Modal):
    """The prompt for the chosen region, filled in with the job's own."""

    def __init__(
        self, job_id: JobId, index: int, cells: tuple[int, ...], prompt: str, max_chars: int, _: Translate
    ) -> None:
        super().__init__(title=_("Repaint a region")[:MODAL_TITLE_MAX], timeout=600)
        self.job_id, self.index, self.cells = job_id, index, cells
        self.prompt: ui.TextInput[RegionModal] = ui.TextInput(
            label=_("Prompt"),
            custom_id="prompt",
            style=discord.TextStyle.paragraph,
            default=prompt or None,
            max_length=max_chars,
        )
        self.add_item(self.prompt)

    async def on_submit(self, interaction: discord.Interaction) -> None:
        spec = InpaintSpec(op="region", cells=self.cells)
        await guarded(
            interaction,
            start_from_result(
                interaction, Action.VARY_REGION, self.job_id, self.index, self.prompt.value, spec=spec
            ),
        )

    async def on_error(self, interaction: discord.Interaction, error: Exception) -> None:  # type: ignore[override]
        await answer_error(interaction, error)


TOOL_ITEMS: tuple[type[ui.DynamicItem[Any]], ...] = (
    ZoomButton,
    PanButton,
    PanPrice,
    RegionButton,
    RegionSelect,
)


def tool_items(job_id: JobId, index: int, _: Translate = ENGLISH) -> list[ui.Item[Any]]:
    """The tools' buttons for image `index` of a single-image result: rows 2 and 3."""
    return [
        ZoomButton(job_id, index, 15, _),
        ZoomButton(job_id, index, 20, _),
        RegionButton(job_id, index, _),
        PanPrice(job_id, index, _),
        *(PanButton(job_id, index, d) for d in PAN_EMOJI),
    ]
