"""Quota policy tables: guild defaults, role tiers, user overrides (limit, unlimited, blocked), bonus grants."""

from __future__ import annotations

import json
import logging
import sqlite3
from collections.abc import Sequence
from dataclasses import dataclass

from storage.db import Tx, from_row
from storage.ledger import WindowUsage, window_usage_sql

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class GuildPolicy:
    guild_id: int
    limit_credits: int
    window_s: int
    configured: bool  # False: the configured defaults, no row yet


@dataclass(frozen=True, slots=True)
class RoleTier:
    guild_id: int
    role_id: int
    name: str
    limit_credits: int


@dataclass(frozen=True, slots=True)
class UserOverride:
    guild_id: int
    user_id: int
    limit_credits: int | None
    unlimited: bool
    blocked: bool
    reason: str | None


@dataclass(frozen=True, slots=True)
class BonusGrant:
    bonus_id: int
    guild_id: int
    user_id: int
    credits: int
    remaining: int
    expires_at: float | None
    reason: str | None
    granted_at: float
    granted_by: int


@dataclass(frozen=True, slots=True)
class UserPolicy:
    """Everything that decides one user's share, read in one query inside the reserving transaction."""

    guild_limit: int
    guild_configured: bool  # False: the guild has no row and uses the configured default
    window_s: int
    relax_enabled: bool
    tier: RoleTier | None  # the highest-limit tier among the user's roles
    override: UserOverride | None
    bonus_remaining: int  # unexpired, unspent bonus credits


_USER_POLICY_SQL = """
SELECT
    COALESCE(g.limit_credits, :default_limit) AS guild_limit, g.guild_id IS NOT NULL AS guild_configured,
    COALESCE(g.window_s, :default_window) AS window_s,
    COALESCE(s.relax_enabled, :default_relax) AS relax_enabled,
    t.role_id AS tier_role, t.name AS tier_name, t.limit_credits AS tier_limit,
    o.user_id AS o_user, o.limit_credits AS o_limit, o.unlimited AS o_unlimited, o.blocked AS o_blocked,
    o.reason AS o_reason,
    (SELECT COALESCE(SUM(b.credits - COALESCE(
         (SELECT SUM(sp.credits) FROM bonus_spend sp JOIN ledger l ON l.job_id = sp.job_id
           WHERE sp.bonus_id = b.bonus_id AND l.state != 'refunded'), 0)), 0)
       FROM quota_bonus b
      WHERE b.guild_id = :guild AND b.user_id = :user AND (b.expires_at IS NULL OR b.expires_at > :now)
    ) AS bonus_remaining
FROM (SELECT 1) AS one
LEFT JOIN quota_guild g ON g.guild_id = :guild
LEFT JOIN guild_settings s ON s.guild_id = :guild
LEFT JOIN (SELECT * FROM quota_role_tier
            WHERE guild_id = :guild AND role_id IN (SELECT value FROM json_each(:roles))
            ORDER BY limit_credits DESC, role_id LIMIT 1) t ON 1
LEFT JOIN quota_user_override o ON o.guild_id = :guild AND o.user_id = :user
"""

# The policy and the window's usage in one statement (one trip to the database thread on the hot path);
# the window is the guild's, read by the same rule as the policy's window_s.
_WINDOW_START = ":now - COALESCE((SELECT window_s FROM quota_guild WHERE guild_id = :guild), :default_window)"
USER_SHARE_SQL = f"""
SELECT pol.*, usage.* FROM ({_USER_POLICY_SQL}) AS pol, ({window_usage_sql(_WINDOW_START)}) AS usage
"""


async def user_share(
    tx: Tx,
    guild_id: int,
    user_id: int,
    role_ids: Sequence[int],
    *,
    default_limit: int,
    default_window: int,
    default_relax: bool,
    now: float,
) -> tuple[UserPolicy, WindowUsage]:
    """What decides a user's share and what of it the window ending `now` has used, read together."""
    row = await tx.fetchone(
        USER_SHARE_SQL,
        {
            "guild": guild_id,
            "user": user_id,
            "roles": json.dumps([int(r) for r in role_ids]),
            "default_limit": default_limit,
            "default_window": default_window,
            "default_relax": int(default_relax),
            "now": now,
        },
    )
    assert row is not None  # the query always yields exactly one row
    tier = (
        RoleTier(guild_id, row["tier_role"], row["tier_name"], row["tier_limit"])
        if row["tier_role"] is not None
        else None
    )
    override = (
        UserOverride(
            guild_id,
            user_id,
            row["o_limit"],
            bool(row["o_unlimited"]),
            bool(row["o_blocked"]),
            row["o_reason"],
        )
        if row["o_user"] is not None
        else None
    )
    pol = UserPolicy(
        guild_limit=row["guild_limit"],
        guild_configured=bool(row["guild_configured"]),
        window_s=row["window_s"],
        relax_enabled=bool(row["relax_enabled"]),
        tier=tier,
        override=override,
        bonus_remaining=row["bonus_remaining"],
    )
    return pol, from_row(WindowUsage, row)


async def guild_policy(tx: Tx, guild_id: int, *, default_limit: int, default_window: int) -> GuildPolicy:
    row = await tx.fetchone("SELECT limit_credits, window_s FROM quota_guild WHERE guild_id = ?", (guild_id,))
    if row is None:
        return GuildPolicy(guild_id, default_limit, default_window, configured=False)
    return GuildPolicy(guild_id, row["limit_credits"], row["window_s"], configured=True)


async def set_guild_policy(
    tx: Tx, guild_id: int, *, limit: int, window_s: int, actor_id: int, now: float
) -> None:
    await tx.execute(
        """INSERT INTO quota_guild (guild_id, limit_credits, window_s, updated_at, updated_by)
           VALUES (?, ?, ?, ?, ?)
           ON CONFLICT (guild_id) DO UPDATE SET limit_credits = excluded.limit_credits,
               window_s = excluded.window_s, updated_at = excluded.updated_at, updated_by = excluded.updated_by""",
        (guild_id, limit, window_s, now, actor_id),
    )


async def max_window(tx: Tx, default_window: int) -> int:
    """The longest window any guild uses, so pruning never drops a row that still counts."""
    row = await tx.fetchone("SELECT MAX(window_s) FROM quota_guild")
    return max(default_window, int(row[0]) if row and row[0] is not None else 0)


async def role_tiers(tx: Tx, guild_id: int) -> list[RoleTier]:
    rows = await tx.fetchall(
        "SELECT * FROM quota_role_tier WHERE guild_id = ? ORDER BY limit_credits DESC, role_id", (guild_id,)
    )
    return [from_row(RoleTier, r) for r in rows]


async def set_role_tier(
    tx: Tx, guild_id: int, role_id: int, *, name: str, limit: int, actor_id: int, now: float
) -> None:
    await tx.execute(
        """INSERT INTO quota_role_tier (guild_id, role_id, name, limit_credits, updated_at, updated_by)
           VALUES (?, ?, ?, ?, ?, ?)
           ON CONFLICT (guild_id, role_id) DO UPDATE SET name = excluded.name,
               limit_credits = excluded.limit_credits, updated_at = excluded.updated_at,
               updated_by = excluded.updated_by""",
        (guild_id, role_id, name, limit, now, actor_id),
    )


async def delete_role_tier(tx: Tx, guild_id: int, role_id: int) -> bool:
    changed = await tx.execute(
        "DELETE FROM quota_role_tier WHERE guild_id = ? AND role_id = ?", (guild_id, role_id)
    )
    return changed > 0


def _override(row: sqlite3.Row) -> UserOverride:
    return from_row(UserOverride, row)


async def user_override(tx: Tx, guild_id: int, user_id: int) -> UserOverride | None:
    row = await tx.fetchone(
        "SELECT * FROM quota_user_override WHERE guild_id = ? AND user_id = ?", (guild_id, user_id)
    )
    return _override(row) if row else None


async def user_overrides(tx: Tx, guild_id: int) -> list[UserOverride]:
    rows = await tx.fetchall(
        "SELECT * FROM quota_user_override WHERE guild_id = ? ORDER BY user_id", (guild_id,)
    )
    return [_override(r) for r in rows]


async def save_user_override(tx: Tx, override: UserOverride, actor_id: int, now: float) -> None:
    """Store the override, or delete its row when it no longer overrides anything."""
    if override.limit_credits is None and not override.unlimited and not override.blocked:
        await tx.execute(
            "DELETE FROM quota_user_override WHERE guild_id = ? AND user_id = ?",
            (override.guild_id, override.user_id),
        )
        return
    await tx.execute(
        """INSERT INTO quota_user_override
               (guild_id, user_id, limit_credits, unlimited, blocked, reason, updated_at, updated_by)
           VALUES (?, ?, ?, ?, ?, ?, ?, ?)
           ON CONFLICT (guild_id, user_id) DO UPDATE SET limit_credits = excluded.limit_credits,
               unlimited = excluded.unlimited, blocked = excluded.blocked, reason = excluded.reason,
               updated_at = excluded.updated_at, updated_by = excluded.updated_by""",
        (
            override.guild_id,
            override.user_id,
            override.limit_credits,
            int(override.unlimited),
            int(override.blocked),
            override.reason,
            now,
            actor_id,
        ),
    )


_GRANTS_SQL = """
SELECT b.*, b.credits - COALESCE(
         (SELECT SUM(sp.credits) FROM bonus_spend sp JOIN ledger l ON l.job_id = sp.job_id
           WHERE sp.bonus_id = b.bonus_id AND l.state != 'refunded'), 0) AS remaining
  FROM quota_bonus b
 WHERE b.guild_id = ? AND b.user_id = ? AND (b.expires_at IS NULL OR b.expires_at > ?)
 ORDER BY b.expires_at IS NULL, b.expires_at, b.bonus_id
"""


async def active_grants(tx: Tx, guild_id: int, user_id: int, now: float) -> list[BonusGrant]:
    """Unexpired grants with credits left, soonest-expiring first (the order they are spent in)."""
    rows = await tx.fetchall(_GRANTS_SQL, (guild_id, user_id, now))
    return [from_row(BonusGrant, r) for r in rows if r["remaining"] > 0]


async def add_grant(
    tx: Tx,
    guild_id: int,
    user_id: int,
    *,
    credits: int,
    expires_at: float | None,
    reason: str | None,
    actor_id: int,
    now: float,
) -> int:
    return await tx.insert(
        """INSERT INTO quota_bonus (guild_id, user_id, credits, expires_at, reason, granted_at, granted_by)
           VALUES (?, ?, ?, ?, ?, ?, ?)""",
        (guild_id, user_id, credits, expires_at, reason, now, actor_id),
    )


async def prune_grants(tx: Tx, before: float) -> int:
    """Drop grants that expired before `before` and whose spends no ledger row still references."""
    return await tx.execute(
        """DELETE FROM quota_bonus WHERE expires_at IS NOT NULL AND expires_at < ?
              AND NOT EXISTS (SELECT 1 FROM bonus_spend sp WHERE sp.bonus_id = quota_bonus.bonus_id)""",
        (before,),
    )
