"""What the strict fake counted: requests checked against Discord's API description, refusals, and who each
message notified, so a test run can show the bot never broke a rule or pinged anyone it did not mean to."""

from __future__ import annotations

import logging
import re
from dataclasses import dataclass, field
from typing import Any

from tests.fakediscord.errors import ApiError, invalid_form

log = logging.getLogger(__name__)

USER_MENTION = re.compile(r"<@!?(\d+)>")
ROLE_MENTION = re.compile(r"<@&(\d+)>")
EVERYONE = re.compile(r"@(everyone|here)\b")
MENTION_TYPES = ("users", "roles", "everyone")


@dataclass
class StrictStats:
    """Counters for one FakeDiscord; the pytest hooks in tests/conftest.py add them up per run."""

    requests: int = 0  # API requests whose route was found in the API description
    bodies: int = 0  # request bodies validated against their documented schema
    schema_failures: list[str] = field(default_factory=list)
    refusals: list[str] = field(default_factory=list)  # 400/413 answers: a documented limit broken
    undocumented: list[str] = field(default_factory=list)
    pings: int = 0
    stray_pings: list[str] = field(default_factory=list)  # notified someone not named by id, or not an author

    @property
    def clean(self) -> bool:
        return not (self.schema_failures or self.refusals or self.undocumented or self.stray_pings)


def check_allowed_mentions(allowed: Any) -> None:
    """Discord refuses `parse: ["users"]` together with a `users` list (and the same for roles)."""
    if not isinstance(allowed, dict):
        return
    parse = allowed.get("parse") or []
    for kind in ("users", "roles"):
        if kind in parse and allowed.get(kind):
            raise invalid_form(
                "allowed_mentions", f'parse:["{kind}"] and {kind}: [ids] are mutually exclusive.'
            )


@dataclass(frozen=True)
class Notified:
    """Who a message notifies, and which of them the bot named explicitly in `allowed_mentions.users`."""

    users: frozenset[int]
    explicit: frozenset[int]
    everyone: bool


def resolve_mentions(
    content: str,
    allowed: dict[str, Any] | None,
    members: dict[int, list[int]],
) -> Notified:
    """Discord's rules: the content's mentions, filtered by `allowed_mentions`; without `allowed_mentions`
    everything is parsed. `members` maps each user who can see the message to their role ids; nobody else
    is notified."""
    parse = set(MENTION_TYPES) if allowed is None else set(allowed.get("parse") or [])
    listed_users = {int(u) for u in (allowed or {}).get("users") or []}
    listed_roles = {int(r) for r in (allowed or {}).get("roles") or []}
    named = {int(u) for u in USER_MENTION.findall(content)}
    users = {u for u in named if "users" in parse or u in listed_users}
    roles = {int(r) for r in ROLE_MENTION.findall(content)}
    roles = {r for r in roles if "roles" in parse or r in listed_roles}
    users |= {u for u, role_ids in members.items() if roles & set(role_ids)}
    everyone = bool(EVERYONE.search(content)) and "everyone" in parse
    if everyone:
        users |= set(members)
    users &= set(members)
    return Notified(frozenset(users), frozenset(users & listed_users), everyone)


def is_refusal(error: ApiError) -> bool:
    """An answer saying the request itself was invalid (not that a message or token is gone)."""
    return error.status in (400, 413)


# Every FakeDiscord a test started, by test id (filled by the `fake_discord` fixture).
LEDGER: list[tuple[str, StrictStats]] = []
