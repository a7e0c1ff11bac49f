"""The audit trail: who changed which policy or setting, when, and to what.

Only written here (inside each change's own transaction); nothing in the bot reads it back yet, so there is
no reader: the tests read the table themselves (tests/storage/helpers.py `audit_entries`).
"""

from __future__ import annotations

import json
import logging
from collections.abc import Mapping
from typing import Any

from storage.db import Tx

log = logging.getLogger(__name__)


async def record(
    tx: Tx,
    *,
    guild_id: int | None,
    actor_id: int,
    action: str,
    target_id: int | None,
    detail: Mapping[str, Any],
    now: float,
) -> int:
    """Write one audit row inside the caller's transaction, so the change and its record commit together."""
    return await tx.insert(
        "INSERT INTO audit (guild_id, actor_id, action, target_id, detail, created_at) VALUES (?, ?, ?, ?, ?, ?)",
        (guild_id, actor_id, action, target_id, json.dumps(dict(detail), sort_keys=True, default=str), now),
    )
