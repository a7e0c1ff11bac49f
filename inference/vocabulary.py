"""The words the bot and the worker share: lanes, job kinds, job states and the two kinds of job id.

Defined once, below everything else, so storage, the core, the client and the worker all spell them the
same way. Imports nothing of brushfire's.
"""

from __future__ import annotations

from enum import StrEnum
from typing import NewType

JobId = NewType("JobId", str)
"""The bot's id for a job: the key of the jobs table, and the idempotency key the worker is sent."""

WorkerJobId = NewType("WorkerJobId", str)
"""The worker's id for a job it accepted; a restarted worker gives a resubmitted job a new one."""


class Lane(StrEnum):
    """Queue lanes: `fast` runs first; `relax` runs when fast is empty (plus a small reserved share)."""

    FAST = "fast"
    RELAX = "relax"


class JobKind(StrEnum):
    """What a job asks the engine to do.

    `generate` is text-to-image; `img2img` redraws an input image under a prompt at a strength (used for
    variations and upscales); `edit` follows an instruction on an input image (an instruction-editing
    pipeline when one is configured, else img2img with the instruction as prompt); `upscale` enlarges an
    input image with a super-resolution model (`inference.superres`), then, for a creative upscale, redraws
    it lightly with img2img under the prompt; `inpaint` paints part of a canvas made from an input image
    (zoom out, pan, vary region: `inference.canvas`) and keeps the rest.
    """

    GENERATE = "generate"
    IMG2IMG = "img2img"
    EDIT = "edit"
    UPSCALE = "upscale"
    INPAINT = "inpaint"

    @property
    def needs_image(self) -> bool:
        return self is not JobKind.GENERATE


class JobStatus(StrEnum):
    QUEUED = "queued"
    RUNNING = "running"
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    CANCELLED = "cancelled"

    @property
    def is_final(self) -> bool:
        return self in (JobStatus.SUCCEEDED, JobStatus.FAILED, JobStatus.CANCELLED)
