"""Persistent result and progress buttons: `DynamicItem`s whose custom_id carries the job id.

They hold no state: each press reads the job from the database, so they keep working after restarts
and on results of any age. Each press that makes images is a new job with its own charge and a parent link.
"""

from __future__ import annotations

import logging
import re
from typing import Any, Self

import discord
from discord import ui

from bot.challenge_posts import SubmitButton
from bot.components import BUTTONS_PER_ROW, INDEX_RE, JOB_RE, PREFIX, button, guarded
from bot.core.errors import InvalidInput
from bot.core.i18n import N_
from bot.core.plans import Action
from bot.core.validation import parse_number
from bot.errors import answer_error
from bot.i18n import ENGLISH, Translate
from bot.interactions import BrushfireClient, client_of, requester_for
from bot.tool_views import TOOL_ITEMS, start_from_result, tool_items
from bot.translator import translate_for
from inference.vocabulary import JobId

log = logging.getLogger(__name__)

MODAL_TITLE_MAX = 45


def _bot(interaction: discord.Interaction) -> BrushfireClient:
    return client_of(interaction)


class RerollButton(ui.DynamicItem[ui.Button[Any]], template=rf"{PREFIX}:reroll:{JOB_RE}"):
    def __init__(self, job_id: JobId, _: Translate = ENGLISH) -> None:
        super().__init__(
            button(
                "reroll", job_id, label=_("Re-roll"), emoji="🔄", style=discord.ButtonStyle.secondary, row=0
            )
        )
        self.job_id = job_id
        self.index = 0

    @classmethod
    async def from_custom_id(
        cls, interaction: discord.Interaction, item: ui.Item[Any], match: re.Match[str]
    ) -> Self:
        return cls(JobId(match["job"]))

    async def callback(self, interaction: discord.Interaction) -> None:
        await guarded(interaction, start_from_result(interaction, Action.REROLL, self.job_id, 0))


class VaryButton(ui.DynamicItem[ui.Button[Any]], template=rf"{PREFIX}:vary:{JOB_RE}:{INDEX_RE}"):
    def __init__(self, job_id: JobId, index: int, row: int | None = None, label: str | None = None) -> None:
        super().__init__(
            button(
                "vary",
                job_id,
                index,
                label=label or f"V{index + 1}",
                style=discord.ButtonStyle.primary,
                row=row,
            )
        )
        self.job_id = job_id
        self.index = index

    @classmethod
    async def from_custom_id(
        cls, interaction: discord.Interaction, item: ui.Item[Any], match: re.Match[str]
    ) -> Self:
        return cls(JobId(match["job"]), int(match["n"]))

    async def callback(self, interaction: discord.Interaction) -> None:
        await guarded(interaction, start_from_result(interaction, Action.VARY, self.job_id, self.index or 0))


class UpscaleButton(ui.DynamicItem[ui.Button[Any]], template=rf"{PREFIX}:upscale:{JOB_RE}:{INDEX_RE}"):
    """Upscale (subtle): image n through the worker's super-resolution model alone. U1..Un on a grid."""

    action = Action.UPSCALE
    short = "U"  # the grid's label, with the image's number

    def __init__(self, job_id: JobId, index: int, row: int | None = None, label: str | None = None) -> None:
        super().__init__(
            button(
                str(self.action),
                job_id,
                index,
                label=label or f"{self.short}{index + 1}",
                style=discord.ButtonStyle.success,
                row=row,
            )
        )
        self.job_id = job_id
        self.index = index

    @classmethod
    async def from_custom_id(
        cls, interaction: discord.Interaction, item: ui.Item[Any], match: re.Match[str]
    ) -> Self:
        return cls(JobId(match["job"]), int(match["n"]))

    async def callback(self, interaction: discord.Interaction) -> None:
        await guarded(interaction, start_from_result(interaction, self.action, self.job_id, self.index or 0))


class CreativeUpscaleButton(UpscaleButton, template=rf"{PREFIX}:upscale-creative:{JOB_RE}:{INDEX_RE}"):
    """Upscale (creative): the upscaler, then a light img2img pass under the job's prompt."""

    action = Action.UPSCALE_CREATIVE
    short = "C"


class EditButton(ui.DynamicItem[ui.Button[Any]], template=rf"{PREFIX}:edit:{JOB_RE}"):
    def __init__(self, job_id: JobId, _: Translate = ENGLISH) -> None:
        super().__init__(
            button("edit", job_id, label=_("Edit"), emoji="✏️", style=discord.ButtonStyle.secondary, row=0)
        )
        self.job_id = job_id
        self.index = 0

    @classmethod
    async def from_custom_id(
        cls, interaction: discord.Interaction, item: ui.Item[Any], match: re.Match[str]
    ) -> Self:
        return cls(JobId(match["job"]))

    async def callback(self, interaction: discord.Interaction) -> None:
        await guarded(interaction, self._open(interaction))

    async def _open(self, interaction: discord.Interaction) -> None:
        bot = _bot(interaction)
        await bot.services.jobs.check_admission(requester_for(interaction))
        count = len(await bot.services.jobs.images_in(self.job_id, interaction.guild_id or 0))
        if count == 0:
            raise InvalidInput(N_("That result has no images left to edit."))
        limit = bot.services.settings.limits.prompt_chars
        await interaction.response.send_modal(
            EditModal(self.job_id, count, limit, translate_for(interaction))
        )


class EditModal(ui.Modal):
    """Asks for the instruction (and which image, when the job made several)."""

    def __init__(self, job_id: JobId, count: int, max_chars: int, _: Translate = ENGLISH) -> None:
        super().__init__(title=_("Edit this image")[:MODAL_TITLE_MAX], timeout=600)
        self.job_id = job_id
        self.count = count
        self.instruction: ui.TextInput[EditModal] = ui.TextInput(
            label=_("Instruction"),
            custom_id="instruction",
            placeholder=_("make it snowy"),
            max_length=min(max_chars, 4000),
        )
        self.add_item(self.instruction)
        self.image: ui.TextInput[EditModal] | None = None
        if count > 1:
            self.image = ui.TextInput(
                label=_("Image number (1-{count})", count=count), custom_id="image", default="1", max_length=1
            )
            self.add_item(self.image)

    def chosen_index(self) -> int:
        if self.image is None:
            return 0
        return parse_number(self.image.value, 1, self.count, N_("The image number")) - 1

    async def on_submit(self, interaction: discord.Interaction) -> None:
        await guarded(interaction, self._submit(interaction))

    async def _submit(self, interaction: discord.Interaction) -> None:
        index = self.chosen_index()
        await start_from_result(interaction, Action.EDIT, self.job_id, index, self.instruction.value)

    async def on_error(self, interaction: discord.Interaction, error: Exception) -> None:  # type: ignore[override]
        await answer_error(interaction, error)


class DeleteButton(ui.DynamicItem[ui.Button[Any]], template=rf"{PREFIX}:delete:{JOB_RE}"):
    def __init__(self, job_id: JobId, _: Translate = ENGLISH) -> None:
        super().__init__(
            button("delete", job_id, label=_("Delete"), emoji="🗑️", style=discord.ButtonStyle.danger, row=0)
        )
        self.job_id = job_id
        self.index = 0

    @classmethod
    async def from_custom_id(
        cls, interaction: discord.Interaction, item: ui.Item[Any], match: re.Match[str]
    ) -> Self:
        return cls(JobId(match["job"]))

    async def callback(self, interaction: discord.Interaction) -> None:
        await guarded(interaction, self._delete(interaction))

    async def _delete(self, interaction: discord.Interaction) -> None:
        bot = _bot(interaction)
        message_id = interaction.message.id if interaction.message is not None else None
        await bot.services.jobs.delete_result(self.job_id, requester_for(interaction), message_id)
        _ = translate_for(interaction)
        await interaction.response.send_message(_("Deleted."), ephemeral=True)
        if interaction.message is not None:
            try:
                await interaction.message.delete()
            except discord.HTTPException as exc:  # already gone, or no permission: the images are gone anyway
                log.info("could not delete result message of job %s: %s", self.job_id, exc)


class CancelButton(ui.DynamicItem[ui.Button[Any]], template=rf"{PREFIX}:cancel:{JOB_RE}"):
    def __init__(self, job_id: JobId, _: Translate = ENGLISH) -> None:
        super().__init__(
            button("cancel", job_id, label=_("Cancel"), emoji="✖️", style=discord.ButtonStyle.danger)
        )
        self.job_id = job_id
        self.index = 0

    @classmethod
    async def from_custom_id(
        cls, interaction: discord.Interaction, item: ui.Item[Any], match: re.Match[str]
    ) -> Self:
        return cls(JobId(match["job"]))

    async def callback(self, interaction: discord.Interaction) -> None:
        await guarded(interaction, self._cancel(interaction))

    async def _cancel(self, interaction: discord.Interaction) -> None:
        bot = _bot(interaction)
        await bot.services.jobs.cancel(self.job_id, requester_for(interaction))
        _ = translate_for(interaction)
        await interaction.response.send_message(_("Cancelling; you will not be charged."), ephemeral=True)


DYNAMIC_ITEMS: tuple[type[ui.DynamicItem[Any]], ...] = (
    SubmitButton,
    RerollButton,
    VaryButton,
    UpscaleButton,
    CreativeUpscaleButton,
    EditButton,
    DeleteButton,
    CancelButton,
    *TOOL_ITEMS,
)


def progress_view(job_id: JobId, _: Translate = ENGLISH) -> ui.View:
    view = ui.View(timeout=None)
    view.add_item(CancelButton(job_id, _))
    return view


def single_image_rows(job_id: JobId, index: int, _: Translate = ENGLISH) -> list[ui.Item[Any]]:
    """The buttons below row 0 of a single-image result: Vary, Upscale (subtle), Upscale (creative) on
    row 1; zoom out, vary region and pan on rows 2 and 3 (bot/tool_views.py). Row 4 is free: a feature
    with more buttons for one image appends them here (each item with its own `row`, at most five to a row)."""
    return [
        VaryButton(job_id, index, row=1, label=_("Vary")),
        UpscaleButton(job_id, index, row=1, label=_("Upscale (subtle)")),
        CreativeUpscaleButton(job_id, index, row=1, label=_("Upscale (creative)")),
        *tool_items(job_id, index, _),
    ]


def result_view(
    job_id: JobId,
    indexes: list[int],
    _: Translate = ENGLISH,
    *,
    from_upload: bool = False,
    single: bool = False,
) -> ui.View:
    """Re-roll, Edit, Delete, Submit; then, for a grid, V1..Vn and U1..Un (Upscale subtle of image n),
    five to a row (8 images fit in 5 rows); for a `single` image (a job of one, an upscale among them),
    `single_image_rows`.

    A result made from an upload gets neither Re-roll nor Submit: the upload is not kept, and challenges
    take only brushfire's own images, so both buttons could only refuse. Labels are in the language of
    the member who made the result; V/U numbers are the same everywhere.
    """
    view = ui.View(timeout=None)
    items: list[ui.Item[Any]] = [EditButton(job_id, _), DeleteButton(job_id, _)]
    if not from_upload:
        items = [RerollButton(job_id, _), *items, SubmitButton(job_id, _=_)]
    if single and indexes:
        items += single_image_rows(job_id, indexes[0], _)
    for item in items:
        view.add_item(item)
    if single:
        return view
    row = 1
    for kind in (VaryButton, UpscaleButton):
        for start in range(0, len(indexes), BUTTONS_PER_ROW):
            for n in indexes[start : start + BUTTONS_PER_ROW]:
                view.add_item(kind(job_id, n, row=row))
            row += 1
    return view
