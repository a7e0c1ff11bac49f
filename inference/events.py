"""A job's event log: which events a late subscriber replays, live fan-out to listeners, and previews."""

from __future__ import annotations

import asyncio
import io
from collections.abc import AsyncGenerator
from typing import Any

from PIL import Image

from inference.protocol import EventType, JobEvent, JobInfo
from inference.queue import Job, Slice
from inference.vocabulary import JobStatus, WorkerJobId

# Events a late subscriber must see in full; of the others only the latest is replayed.
_DURABLE_EVENTS = frozenset(
    {EventType.QUEUED, EventType.STARTED, EventType.DONE, EventType.FAILED, EventType.CANCELLED}
)
FINAL_EVENT = {
    JobStatus.SUCCEEDED: EventType.DONE,
    JobStatus.FAILED: EventType.FAILED,
    JobStatus.CANCELLED: EventType.CANCELLED,
}
PREVIEW_SIDE = 256


def publish(job: Job, type_: EventType, final_state: JobInfo | None = None, **fields: Any) -> None:
    """Number the event, keep it for late subscribers as its kind requires, and hand it to listeners.

    A final event carries the job's full state (`final_state`) and ends every listener's stream.
    """
    job.seq += 1
    final = type_ in FINAL_EVENT.values()
    if final:
        fields |= {"job": final_state, "error": job.error}
    # Built from trusted values on the hot path (several events per step), so not re-validated.
    event = JobEvent.model_construct(type=type_, job_id=job.id, seq=job.seq, **fields)
    if type_ in _DURABLE_EVENTS:
        job.durable.append(event)
    else:
        job.latest = event
    for queue in job.listeners:
        queue.put_nowait(event)
        if final:
            queue.put_nowait(None)


async def event_batches(
    job: Job, after: int = 0, heartbeat: float | None = None
) -> AsyncGenerator[list[JobEvent], None]:
    """The job's events with `seq > after`, each item every event available at that moment (an empty
    list after `heartbeat` idle seconds): its current state first, then live ones until it ends."""
    backlog = [e for e in job.durable if e.seq > after]
    if job.latest is not None and job.latest.seq > after:
        backlog.append(job.latest)
    backlog.sort(key=lambda e: e.seq)
    if job.status.is_final:
        if backlog:
            yield backlog
        return
    last = backlog[-1].seq if backlog else after
    queue: asyncio.Queue[JobEvent | None] = asyncio.Queue()
    job.listeners.add(queue)  # before the backlog goes out, so nothing emitted meanwhile is lost
    try:
        if backlog:
            yield backlog
        while True:
            try:
                first = await asyncio.wait_for(queue.get(), heartbeat)
            except TimeoutError:
                yield []
                continue
            items = [first, *(queue.get_nowait() for _ in range(queue.qsize()))]
            fresh = [e for e in items if e is not None and e.seq > last]
            if fresh:
                last = fresh[-1].seq
                yield fresh
            if None in items:
                return
    finally:
        job.listeners.discard(queue)


def first_previews(slices: list[Slice], previews: list[Image.Image]) -> dict[WorkerJobId, Image.Image]:
    """Each job's first image's preview, picked from the batch's previews (one per image, in order)."""
    out: dict[WorkerJobId, Image.Image] = {}
    index = 0
    for s in slices:
        if s.offset == 0 and index < len(previews):
            out[s.job.id] = previews[index]
        index += s.count
    return out


def preview_jpeg(image: Image.Image) -> bytes:
    img = image.convert("RGB")
    img.thumbnail((PREVIEW_SIDE, PREVIEW_SIDE))
    buf = io.BytesIO()
    img.save(buf, format="JPEG", quality=80)
    return buf.getvalue()
