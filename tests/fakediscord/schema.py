"""Every request body the fake receives, validated against Discord's own OpenAPI description (vendored in spec/).

Where the stable spec is stricter than Discord's documentation and live API, the docs win; every such
exception is in `DOCS_OVER_SPEC` below, and nowhere else.
"""

from __future__ import annotations

import functools
import json
import logging
import re
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import jsonschema
from referencing import Registry, Resource
from referencing.jsonschema import DRAFT202012

from tests.fakediscord.errors import ApiError

log = logging.getLogger(__name__)

SPEC_DIR = Path(__file__).parent / "spec"
SPEC_FILE = SPEC_DIR / "openapi.json"
SPEC_URI = "urn:discord-api-spec"
GUILD_MEDIA = 16


def _snowflakes_may_be_integers(schemas: dict[str, Any]) -> None:
    """The spec types every snowflake as a decimal string; Discord's docs send `"id": 0` for an upload's
    attachment id, and the API takes integer ids anywhere (discord.py sends `allowed_mentions.users` and
    attachment ids as integers)."""
    schemas["SnowflakeType"] = {"oneOf": [schemas["SnowflakeType"], {"type": "integer", "minimum": 0}]}


def _media_channels_exist(schemas: dict[str, Any]) -> None:
    """Channel type 16 (GUILD_MEDIA) is in the docs' channel types but not the stable spec's enum;
    discord.py lists it in `channel_types` for a ForumChannel option."""
    values = schemas["ChannelTypes"].get("oneOf", [])
    if not any(v.get("const") == GUILD_MEDIA for v in values):
        values.append({"title": "GUILD_MEDIA", "const": GUILD_MEDIA})


# The one place where the docs override the stable spec (see the module docstring).
DOCS_OVER_SPEC: tuple[Callable[[dict[str, Any]], None], ...] = (
    _snowflakes_may_be_integers,
    _media_channels_exist,
)


@dataclass(frozen=True)
class Operation:
    """One documented route: its method, path pattern and the JSON schema of its request body."""

    method: str
    template: str
    pattern: re.Pattern[str]
    body: dict[str, Any] | None


class SpecValidator:
    """Finds the documented operation for a request and validates its JSON body (or multipart payload_json)."""

    def __init__(self, spec: dict[str, Any]) -> None:
        for patch in DOCS_OVER_SPEC:
            patch(spec["components"]["schemas"])
        self.spec = spec
        resource = Resource.from_contents(spec, default_specification=DRAFT202012)
        self._registry = Registry().with_resource(SPEC_URI, resource)
        self._operations = list(self._read_operations())
        self._validators: dict[tuple[str, str], jsonschema.protocols.Validator] = {}

    @property
    def commit(self) -> str:
        return spec_commit()

    def _read_operations(self) -> Iterator[Operation]:
        # Literal segments (@original, @me) before parameters, so the most specific template wins.
        for template in sorted(self.spec["paths"], key=lambda t: (t.count("{"), -len(t))):
            regex = re.sub(r"\\\{[^}]+\\\}", "[^/]+", re.escape(template))
            for method, operation in self.spec["paths"][template].items():
                if not isinstance(operation, dict) or "responses" not in operation:
                    continue
                content = (operation.get("requestBody") or {}).get("content") or {}
                schema = (content.get("application/json") or {}).get("schema")
                yield Operation(method.upper(), template, re.compile(f"{regex}$"), schema)

    def operation(self, method: str, path: str) -> Operation | None:
        for op in self._operations:
            if op.method == method and op.pattern.match(path):
                return op
        return None

    def validate(self, method: str, path: str, body: Any) -> Operation:
        """Raise ApiError(400, 50035) as Discord would when the body does not fit the documented schema.

        A route the spec does not describe raises too: the fake must not serve undocumented routes.
        """
        op = self.operation(method, path)
        if op is None:
            raise ApiError(404, 0, f"{method} {path} is not in Discord's API description")
        if op.body is None:
            return op
        validator = self._validator(op)
        error = jsonschema.exceptions.best_match(validator.iter_errors(body))
        if error is not None:
            where = ".".join(str(p) for p in error.absolute_path) or "body"
            raise ApiError(400, 50035, f"Invalid Form Body ({op.template}): {where}: {error.message[:300]}")
        return op

    def _validator(self, op: Operation) -> jsonschema.protocols.Validator:
        key = (op.method, op.template)
        if key not in self._validators:
            schema = {"$schema": "https://json-schema.org/draft/2020-12/schema", **_rebase(op.body)}
            self._validators[key] = jsonschema.Draft202012Validator(schema, registry=self._registry)
        return self._validators[key]


def _rebase(schema: Any) -> Any:
    """Point the spec's local `#/components/...` references at the registered spec document."""
    if isinstance(schema, dict):
        return {
            k: (f"{SPEC_URI}{v}" if k == "$ref" and v.startswith("#") else _rebase(v))
            for k, v in schema.items()
        }
    if isinstance(schema, list):
        return [_rebase(v) for v in schema]
    return schema


@functools.cache
def validator() -> SpecValidator:
    """The validator over the vendored spec, built once per process (the spec is over a megabyte)."""
    return SpecValidator(json.loads(SPEC_FILE.read_text()))


def spec_commit() -> str:
    return (SPEC_DIR / "COMMIT").read_text().split()[0]
