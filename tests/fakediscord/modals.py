"""Filling in a modal the bot opened: the modal-submit `components` Discord sends back, and its checks."""

import logging
from collections.abc import Mapping, Sequence
from typing import Any

from tests.fakediscord.errors import FakeDiscordError

log = logging.getLogger(__name__)

TEXT_INPUT, LABEL, ROW = 4, 18, 1
SELECTS = (3, 5, 6, 7, 8)
ModalValues = Mapping[str, str | Sequence[str]]


def fill_modal(components: list[dict[str, Any]], values: ModalValues) -> list[dict[str, Any]]:
    """The modal's own rows/labels, each input carrying its value (text) or values (selects)."""
    inputs = {c["custom_id"]: c for c in _inputs(components)}
    unknown = set(values) - set(inputs)
    if unknown:
        raise FakeDiscordError(f"the modal has no inputs {sorted(unknown)}; it has {sorted(inputs)}")
    for custom_id, spec in inputs.items():
        _check(custom_id, spec, values.get(custom_id))
    return [_filled(c, values) for c in components if c.get("type") in (ROW, LABEL)]


def _inputs(components: list[dict[str, Any]]) -> list[dict[str, Any]]:
    found = []
    for c in components:
        if c.get("type") == TEXT_INPUT or c.get("type") in SELECTS:
            found.append(c)
        found.extend(_inputs(c.get("components") or []))
        if "component" in c:
            found.extend(_inputs([c["component"]]))
    return found


def _check(custom_id: str, spec: dict[str, Any], value: str | Sequence[str] | None) -> None:
    """What Discord's client would not let the user submit."""
    if spec["type"] in SELECTS:
        chosen = [value] if isinstance(value, str) else list(value or [])
        low, high = spec.get("min_values", 1), spec.get("max_values", 1)
        if spec.get("required", True) and not low <= len(chosen) <= high:
            raise FakeDiscordError(f"modal select {custom_id!r} takes {low}..{high} values, got {chosen}")
        return
    if not isinstance(value, str | None):
        raise FakeDiscordError(f"modal text input {custom_id!r} takes a str, got {value!r}")
    text = value or ""
    if spec.get("required", True) and not text:
        raise FakeDiscordError(f"modal input {custom_id!r} is required")
    low, high = spec.get("min_length", 0), spec.get("max_length", 4000)
    if text and not low <= len(text) <= high:
        raise FakeDiscordError(f"modal input {custom_id!r}: length {len(text)} outside [{low}, {high}]")


def _filled(component: dict[str, Any], values: ModalValues) -> dict[str, Any]:
    kind = component.get("type")
    if kind == LABEL:
        return {
            "type": LABEL,
            "id": component.get("id"),
            "component": _filled(component["component"], values),
        }
    if kind == ROW:
        return {"type": ROW, "components": [_filled(c, values) for c in component.get("components") or []]}
    custom_id = component.get("custom_id", "")
    value = values.get(custom_id)
    if kind in SELECTS:
        chosen = [value] if isinstance(value, str) else list(value or [])
        return {"type": kind, "custom_id": custom_id, "values": chosen}
    return {"type": kind, "custom_id": custom_id, "value": value or ""}
