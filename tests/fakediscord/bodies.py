"""Reading message bodies the way Discord does: JSON, or multipart with `payload_json` and `files[n]`."""

import json
import logging
import re
from dataclasses import dataclass, field
from typing import Any

from aiohttp import BodyPartReader, web

from tests.fakediscord.errors import invalid_form

log = logging.getLogger(__name__)

FILE_FIELD = re.compile(r"files\[(\d+)\]|file(\d*)")


@dataclass(frozen=True)
class UploadedFile:
    """A file part of a multipart request."""

    filename: str
    data: bytes
    content_type: str | None


@dataclass
class MessageBody:
    """A request's JSON payload plus its uploaded files keyed by their `files[n]` index."""

    payload: dict[str, Any]
    files: dict[int, UploadedFile] = field(default_factory=dict)


async def read_body(request: web.Request) -> MessageBody:
    """Parse a JSON or multipart/form-data request; an empty body is an empty payload."""
    if request.content_type.startswith("multipart/"):
        return await _read_multipart(request)
    raw = await request.read()
    if not raw:
        return MessageBody({})
    try:
        payload = json.loads(raw)
    except ValueError as exc:
        raise invalid_form("body", f"not JSON: {exc}") from exc
    if not isinstance(payload, dict):
        raise invalid_form("body", "expected a JSON object")
    return MessageBody(payload)


async def _read_multipart(request: web.Request) -> MessageBody:
    body = MessageBody({})
    reader = await request.multipart()
    async for part in reader:
        if not isinstance(part, BodyPartReader):
            continue
        name = part.name or ""
        if name == "payload_json":
            body.payload = json.loads(await part.text())
            continue
        match = FILE_FIELD.fullmatch(name)
        if match is None:
            raise invalid_form(name, "unexpected multipart field")
        index = int(match.group(1) or match.group(2) or 0)
        content_type = part.headers.get("Content-Type")
        body.files[index] = UploadedFile(
            part.filename or f"file{index}", bytes(await part.read()), content_type
        )
    return body
