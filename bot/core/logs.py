"""How brushfire's processes log: plain lines for a terminal, or one JSON object per line for a collector.

Standard library only (`logging` and `json`). The JSON form carries the time, level, logger and message,
the traceback when there is one, and the job id where one is known: set by `job_context` for the code
that runs one job (the command line), or passed per record as `extra={"job_id": ...}` (the worker's
scheduler does).
"""

from __future__ import annotations

import contextlib
import contextvars
import json
import logging
import sys
from collections.abc import Iterator
from datetime import UTC, datetime
from typing import Literal

LogFormat = Literal["text", "json"]
LEVELS = ("DEBUG", "INFO", "WARNING", "ERROR")
TEXT_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"

_job_id: contextvars.ContextVar[str | None] = contextvars.ContextVar("brushfire_job_id", default=None)


@contextlib.contextmanager
def job_context(job_id: str) -> Iterator[None]:
    """Records logged inside this block (in this task and the tasks it starts) name `job_id`."""
    token = _job_id.set(job_id)
    try:
        yield
    finally:
        _job_id.reset(token)


class JsonFormatter(logging.Formatter):
    """One JSON object per record: time (UTC, ISO 8601), level, logger, message, job_id, exc_info."""

    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, object] = {
            "time": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
        }
        job_id = getattr(record, "job_id", None) or _job_id.get()
        if job_id is not None:
            entry["job_id"] = str(job_id)
        if record.exc_info:
            entry["exc_info"] = self.formatException(record.exc_info)
        if record.stack_info:
            entry["stack_info"] = self.formatStack(record.stack_info)
        return json.dumps(entry, ensure_ascii=False, default=str)


def setup_logging(level: str, fmt: LogFormat = "text") -> None:
    """Configure the root logger once for this process: `level` (one of LEVELS) in the chosen format."""
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(JsonFormatter() if fmt == "json" else logging.Formatter(TEXT_FORMAT))
    logging.basicConfig(level=level.upper(), handlers=[handler])
