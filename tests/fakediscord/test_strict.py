"""The strict fake's own checks: Discord's API description, the documented limits, and mention resolution."""

from __future__ import annotations

from typing import Any

import pytest

from tests.fakediscord import limits
from tests.fakediscord.errors import ApiError
from tests.fakediscord.schema import spec_commit, validator
from tests.fakediscord.strict import resolve_mentions

ROW = {"type": 1, "components": [{"type": 2, "style": 1, "label": "ok", "custom_id": "a"}]}


def button(custom_id: str) -> dict[str, Any]:
    return {"type": 2, "style": 1, "label": "x", "custom_id": custom_id}


def test_the_vendored_spec_names_its_commit() -> None:
    assert len(spec_commit()) == 40


@pytest.mark.parametrize(
    ("method", "path", "body"),
    [
        ("POST", "/channels/1/messages", {"content": 5}),
        ("POST", "/channels/1/messages", {"embeds": [{"title": "x"}] * 11}),
        ("POST", "/channels/1/messages", {"components": [{"type": 1, "components": "nope"}]}),
        ("POST", "/channels/1/messages", {"allowed_mentions": {"parse": ["people"]}}),
        ("POST", "/interactions/1/tok/callback", {"type": "deferred"}),
        ("PATCH", "/webhooks/1/tok/messages/@original", {"embeds": {"title": "not a list"}}),
        ("PUT", "/applications/1/commands", [{"name": "x", "type": 1, "options": "none"}]),
    ],
)
def test_bodies_that_do_not_fit_the_spec_are_refused(method: str, path: str, body: object) -> None:
    with pytest.raises(ApiError) as refused:
        validator().validate(method, path, body)
    assert (refused.value.status, refused.value.code) == (400, 50035)


def test_what_discord_docs_allow_passes_where_the_stable_spec_is_stricter() -> None:
    body = {
        "content": "hi",
        "attachments": [{"id": 0, "filename": "a.png"}],  # the docs' own upload example: an integer id
        "allowed_mentions": {"parse": [], "users": [123456789012345678]},
        "components": [ROW],
    }
    validator().validate("POST", "/channels/1/messages", body)
    option = {"type": 7, "name": "where", "description": "d", "channel_types": [0, 15, 16]}
    validator().validate(
        "PUT", "/applications/1/commands", [{"name": "x", "description": "d", "options": [option]}]
    )
    assert validator().operation("GET", "/not/a/route") is None


@pytest.mark.parametrize(
    ("payload", "field"),
    [
        ({"content": "x" * 2001}, "content"),
        ({"embeds": [{"description": "x" * 4000}, {"description": "x" * 2001}]}, "embeds"),
        ({"components": [ROW] * 6}, "components"),
        ({"components": [{"type": 1, "components": [button(str(n)) for n in range(6)]}]}, "components"),
        ({"components": [{"type": 1, "components": [button("x" * 101)]}]}, "custom_id"),
        ({"components": [{"type": 1, "components": [button("a"), button("a")]}]}, "custom_id"),
        (
            {
                "components": [
                    {
                        "type": 1,
                        "components": [
                            {
                                "type": 3,
                                "custom_id": "s",
                                "options": [{"label": str(n), "value": str(n)} for n in range(26)],
                            }
                        ],
                    }
                ]
            },
            "options",
        ),
        ({"content": "<@1>", "allowed_mentions": {"parse": ["users"], "users": ["1"]}}, "allowed_mentions"),
        ({"content": "<@&1>", "allowed_mentions": {"parse": ["roles"], "roles": ["1"]}}, "allowed_mentions"),
    ],
)
def test_documented_limits_are_enforced(payload: dict[str, Any], field: str) -> None:
    with pytest.raises(ApiError) as refused:
        limits.check_message(payload, [], 10 * 1024 * 1024)
    assert refused.value.status == 400 and field in str(refused.value)


def test_choices_over_25_are_refused() -> None:
    with pytest.raises(ApiError):
        limits.check_choices({"choices": [{"name": str(n), "value": n} for n in range(26)]})


AUDIENCE: dict[int, list[int]] = {1: [], 2: [50], 3: [50, 60], 4: []}


@pytest.mark.parametrize(
    ("content", "allowed", "notified", "explicit"),
    [
        ("<@1> <@!2> <@9>", None, {1, 2}, set()),  # no allowed_mentions: all parsed; 9 cannot see it
        ("<@1> <@2>", {"parse": []}, set(), set()),
        ("<@1> <@2>", {"parse": ["users"]}, {1, 2}, set()),
        ("<@1> <@2>", {"users": ["2"]}, {2}, {2}),
        ("<@&50> hi", {"parse": ["roles"]}, {2, 3}, set()),
        ("<@&60>", {"roles": [60]}, {3}, set()),
        ("@everyone look", None, {1, 2, 3, 4}, set()),
        ("@here look", {"parse": ["users"]}, set(), set()),
    ],
)
def test_mentions_resolve_as_discord_documents(
    content: str, allowed: dict[str, Any] | None, notified: set[int], explicit: set[int]
) -> None:
    found = resolve_mentions(content, allowed, AUDIENCE)
    assert (set(found.users), set(found.explicit)) == (notified, explicit)
