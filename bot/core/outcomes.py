"""What a job hands back: the ticket for an accepted job, its outcome, and how worker events fold into progress."""

from __future__ import annotations

import dataclasses
import io
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field

from PIL import Image

from bot.core.i18n import Message
from bot.core.plans import JobPlan
from bot.core.progress import ProgressState
from inference.protocol import EventType, JobEvent, JobInfo
from inference.vocabulary import JobStatus, Lane
from storage.generations import GenerationRecord
from storage.jobs import JobRecord, JobState

ProgressCallback = Callable[[ProgressState], None]


@dataclass(frozen=True, slots=True)
class Ticket:
    """A job accepted by the worker (or recovered from the database), with what it was charged."""

    job: JobRecord
    plan: JobPlan
    cost: int
    lane: Lane
    fell_back_to_relax: bool = False


@dataclass(frozen=True, slots=True)
class JobOutcome:
    """How a job ended. `message` explains a failure to the user; images are in `generations`."""

    job: JobRecord
    state: JobState
    generations: list[GenerationRecord] = field(default_factory=list)
    info: JobInfo | None = None
    message: Message | None = None
    elapsed_s: float = 0.0

    @property
    def ok(self) -> bool:
        return self.state is JobState.SUCCEEDED


Deliver = Callable[[JobOutcome], Awaitable[None]]


def next_state(state: ProgressState, event: JobEvent) -> ProgressState:
    """Fold one worker event into the progress state; events may carry only part of it."""
    if event.type in (EventType.QUEUED, EventType.POSITION):
        return dataclasses.replace(state, status=JobStatus.QUEUED, position=event.position, eta_s=event.eta_s)
    if event.type is EventType.PREVIEW:
        return dataclasses.replace(state, status=JobStatus.RUNNING, preview_seq=state.preview_seq + 1)
    if event.type is EventType.DONE:
        total = event.job.steps if event.job else state.total
        return dataclasses.replace(state, status=JobStatus.SUCCEEDED, step=total, total=total, eta_s=None)
    if event.type in (EventType.STARTED, EventType.PROGRESS):
        return dataclasses.replace(
            state,
            status=JobStatus.RUNNING,
            step=event.step if event.step is not None else state.step,
            total=event.total if event.total is not None else state.total,
            eta_s=event.eta_s,
        )
    return state


def worker_user(job: JobRecord) -> str:
    """The fairness key the worker queues by: one per person per server."""
    return f"{job.guild_id or 0}:{job.user_id}"


def image_size(image: bytes, info: JobInfo) -> tuple[int, int]:
    try:
        with Image.open(io.BytesIO(image)) as img:
            return img.size
    except Exception:
        return info.width, info.height
