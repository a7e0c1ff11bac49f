"""Discord's size limits on messages, components and modals, enforced so a bot that breaks them fails here."""

import logging
from typing import Any

from tests.fakediscord.errors import ApiError, invalid_form, too_large
from tests.fakediscord.models import walk_components
from tests.fakediscord.strict import check_allowed_mentions

log = logging.getLogger(__name__)

MAX_CONTENT = 2000
MAX_EMBEDS = 10
MAX_EMBED_TOTAL = 6000
MAX_ATTACHMENTS = 10
MAX_ROWS = 5
MAX_CUSTOM_ID = 100
MAX_OPTIONS = 25
STRING_SELECT = 3
COMPONENTS_V2 = 1 << 15  # layout components have their own limits, not checked here


def check_message(payload: dict[str, Any], file_sizes: list[int], upload_limit: int) -> None:
    """Raise the ApiError Discord would answer for this message body, if any."""
    content = payload.get("content") or ""
    if len(content) > MAX_CONTENT:
        raise invalid_form("content", f"Must be {MAX_CONTENT} or fewer in length.")
    _check_embeds(payload.get("embeds") or [])
    if not int(payload.get("flags") or 0) & COMPONENTS_V2:
        _check_components(payload.get("components") or [])
    check_allowed_mentions(payload.get("allowed_mentions"))
    if len(file_sizes) > MAX_ATTACHMENTS or len(payload.get("attachments") or []) > MAX_ATTACHMENTS:
        raise invalid_form("attachments", f"Must be {MAX_ATTACHMENTS} or fewer in length.")
    if any(size > upload_limit for size in file_sizes):
        raise too_large()


def _check_embeds(embeds: list[dict[str, Any]]) -> None:
    if len(embeds) > MAX_EMBEDS:
        raise invalid_form("embeds", f"Must be {MAX_EMBEDS} or fewer in length.")
    total = 0
    for index, embed in enumerate(embeds):
        title, description = embed.get("title") or "", embed.get("description") or ""
        fields = embed.get("fields") or []
        if len(title) > 256:
            raise invalid_form(f"embeds.{index}.title", "Must be 256 or fewer in length.")
        if len(description) > 4096:
            raise invalid_form(f"embeds.{index}.description", "Must be 4096 or fewer in length.")
        if len(fields) > 25:
            raise invalid_form(f"embeds.{index}.fields", "Must be 25 or fewer in length.")
        total += len(title) + len(description)
        total += sum(len(f.get("name") or "") + len(f.get("value") or "") for f in fields)
        total += len((embed.get("footer") or {}).get("text") or "")
        total += len((embed.get("author") or {}).get("name") or "")
    if total > MAX_EMBED_TOTAL:
        raise invalid_form("embeds", f"Embed size exceeds maximum size of {MAX_EMBED_TOTAL}")


def _check_components(components: list[dict[str, Any]]) -> None:
    rows = [c for c in components if c.get("type") == 1]
    if len(rows) > MAX_ROWS:
        raise invalid_form("components", f"Must be {MAX_ROWS} or fewer in length.")
    for row in rows:
        if len(row.get("components") or []) > 5:
            raise invalid_form("components.components", "Must be 5 or fewer in length.")
    seen: set[str] = set()
    for component in walk_components(components):
        if component.get("type") == STRING_SELECT and len(component.get("options") or []) > MAX_OPTIONS:
            raise invalid_form("components.options", f"Must be {MAX_OPTIONS} or fewer in length.")
        custom_id = component.get("custom_id")
        if custom_id is None:
            continue
        if len(custom_id) > MAX_CUSTOM_ID:
            raise invalid_form("components.custom_id", f"Must be {MAX_CUSTOM_ID} or fewer in length.")
        if custom_id in seen:
            raise invalid_form("components.custom_id", "Component custom id cannot be duplicated")
        seen.add(custom_id)


def check_modal(data: dict[str, Any]) -> None:
    if len(data.get("title") or "") > 45:
        raise invalid_form("data.title", "Must be 45 or fewer in length.")
    if not data.get("custom_id"):
        raise invalid_form("data.custom_id", "This field is required")
    inputs = [c for c in walk_components(data.get("components") or []) if c.get("type") == 4]
    if not 1 <= len(inputs) <= 5:
        raise invalid_form("data.components", "Must be between 1 and 5 in length.")


def check_choices(data: dict[str, Any]) -> None:
    if len(data.get("choices") or []) > 25:
        raise invalid_form("data.choices", "Must be 25 or fewer in length.")


def check_command(command: dict[str, Any]) -> ApiError | None:
    """The error for one command definition in a sync, or None when Discord would accept it."""
    name = command.get("name") or ""
    if command.get("type", 1) == 1 and not (1 <= len(name) <= 32 and name == name.lower()):
        return invalid_form("name", "Command name is invalid")
    if len(command.get("description") or "") > 100:
        return invalid_form("description", "Must be 100 or fewer in length.")
    if len(command.get("options") or []) > 25:
        return invalid_form("options", "Must be 25 or fewer in length.")
    return None
