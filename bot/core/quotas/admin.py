"""Audited quota admin: guild defaults, role tiers, per-user overrides and blocks, bonus grants, resets."""

from __future__ import annotations

import dataclasses
import logging
import time
from collections.abc import Awaitable, Callable

from bot.core.i18n import N_
from bot.core.quotas.pricing import DAY_S, QuotaSettings
from bot.core.quotas.records import Audited, PolicyOverview, QuotaInputError, R, check_id
from storage import audit, ledger, policy
from storage.db import Database, Tx
from storage.policy import RoleTier, UserOverride

log = logging.getLogger(__name__)


class QuotaAdmin:
    """Every change an admin makes to quota policy, each in one transaction with its audit row."""

    def __init__(self, db: Database, settings: QuotaSettings, clock: Callable[[], float] = time.time) -> None:
        self._db = db
        self.settings = settings
        self._clock = clock

    def _check_limit(self, limit: int) -> int:
        if isinstance(limit, bool) or not isinstance(limit, int) or not 1 <= limit <= self.settings.max_limit:
            raise QuotaInputError(
                N_("A limit must be a whole number from 1 to {max}, not {limit}."),
                max=self.settings.max_limit,
                limit=limit,
            )
        return limit

    def _check_window(self, window_s: int) -> int:
        lo, hi = self.settings.min_window_s, self.settings.max_window_s
        if isinstance(window_s, bool) or not isinstance(window_s, int) or not lo <= window_s <= hi:
            raise QuotaInputError(
                N_("A window must be from {low} to {high} hours, not {hours}."),
                low=f"{lo / 3600:g}",
                high=f"{hi / 3600:g}",
                hours=f"{window_s / 3600:g}" if isinstance(window_s, int) else window_s,
            )
        return window_s

    async def _guild_policy(self, tx: Tx, guild_id: int) -> policy.GuildPolicy:
        s = self.settings
        return await policy.guild_policy(
            tx, guild_id, default_limit=s.default_limit, default_window=s.default_window_s
        )

    async def _admin(
        self, guild_id: int, actor_id: int, change: Callable[[Tx, float], Awaitable[Audited[R]]]
    ) -> R:
        """Run one admin change and its audit row in one transaction."""
        check_id(N_("guild id"), guild_id)
        check_id(N_("actor id"), actor_id)
        now = self._clock()

        async with self._db.transaction() as tx:
            done = await change(tx, now)
            await audit.record(
                tx,
                guild_id=guild_id,
                actor_id=actor_id,
                action=done.action,
                target_id=done.target_id,
                detail=done.detail,
                now=now,
            )
            return done.result

    async def policy_overview(self, guild_id: int) -> PolicyOverview:
        check_id(N_("guild id"), guild_id)

        async with self._db.transaction(write=False) as tx:
            gp = await self._guild_policy(tx, guild_id)
            tiers = await policy.role_tiers(tx, guild_id)
            overrides = await policy.user_overrides(tx, guild_id)
            return PolicyOverview(guild_id, gp.limit_credits, gp.window_s, gp.configured, tiers, overrides)

    async def set_guild_default(
        self, guild_id: int, actor_id: int, *, limit: int, window_s: int | None = None
    ) -> PolicyOverview:
        """Set the guild's default limit, and its window when given (else keep the current one)."""
        self._check_limit(limit)
        if window_s is not None:
            self._check_window(window_s)

        async def change(tx: Tx, now: float) -> Audited[None]:
            old = await self._guild_policy(tx, guild_id)
            window = old.window_s if window_s is None else window_s
            await policy.set_guild_policy(
                tx, guild_id, limit=limit, window_s=window, actor_id=actor_id, now=now
            )
            detail = {
                "limit": limit,
                "window_s": window,
                "old_limit": old.limit_credits,
                "old_window_s": old.window_s,
            }
            return Audited("quota.set_guild_default", None, detail, None)

        await self._admin(guild_id, actor_id, change)
        return await self.policy_overview(guild_id)

    async def set_role_tier(
        self, guild_id: int, role_id: int, name: str, limit: int, actor_id: int
    ) -> RoleTier:
        check_id(N_("role id"), role_id)
        self._check_limit(limit)
        name = (name or "").strip()
        if not 1 <= len(name) <= 100:
            raise QuotaInputError(N_("A tier needs a name of 1 to 100 characters."))

        async def change(tx: Tx, now: float) -> Audited[RoleTier]:
            await policy.set_role_tier(
                tx, guild_id, role_id, name=name, limit=limit, actor_id=actor_id, now=now
            )
            tier = RoleTier(guild_id, role_id, name, limit)
            return Audited("quota.set_role_tier", role_id, {"name": name, "limit": limit}, tier)

        return await self._admin(guild_id, actor_id, change)

    async def clear_role_tier(self, guild_id: int, role_id: int, actor_id: int) -> None:
        check_id(N_("role id"), role_id)

        async def change(tx: Tx, now: float) -> Audited[None]:
            if not await policy.delete_role_tier(tx, guild_id, role_id):
                raise QuotaInputError(N_("{role} has no quota tier in this server."), role=f"<@&{role_id}>")
            return Audited("quota.clear_role_tier", role_id, {}, None)

        await self._admin(guild_id, actor_id, change)

    async def _change_override(
        self,
        guild_id: int,
        user_id: int,
        actor_id: int,
        action: str,
        edit: Callable[[UserOverride], UserOverride],
    ) -> UserOverride:
        """Read, edit and store one user's override row, with its audit row, in one write transaction."""
        check_id(N_("user id"), user_id)

        async def change(tx: Tx, now: float) -> Audited[UserOverride]:
            old = await policy.user_override(tx, guild_id, user_id) or UserOverride(
                guild_id, user_id, None, False, False, None
            )
            new = edit(old)
            await policy.save_user_override(tx, new, actor_id, now)
            detail = {
                "limit": new.limit_credits,
                "unlimited": new.unlimited,
                "blocked": new.blocked,
                "reason": new.reason,
            }
            return Audited(action, user_id, detail, new)

        return await self._admin(guild_id, actor_id, change)

    async def set_user_override(
        self,
        guild_id: int,
        user_id: int,
        actor_id: int,
        *,
        limit: int | None = None,
        unlimited: bool = False,
        reason: str | None = None,
    ) -> UserOverride:
        """Give a user a fixed limit or make them unlimited (exactly one); a block stays as it is."""
        if (limit is None) == (not unlimited):
            raise QuotaInputError(N_("An override sets either a limit or unlimited, not both or neither."))
        if limit is not None:
            self._check_limit(limit)
        return await self._change_override(
            guild_id,
            user_id,
            actor_id,
            "quota.set_user_override",
            lambda o: dataclasses.replace(
                o, limit_credits=limit, unlimited=unlimited, reason=reason or o.reason
            ),
        )

    async def clear_user_override(self, guild_id: int, user_id: int, actor_id: int) -> UserOverride:
        """Drop a user's limit or unlimited override; a block stays (use unblock)."""

        def clear(o: UserOverride) -> UserOverride:
            if o.limit_credits is None and not o.unlimited:
                raise QuotaInputError(
                    N_("{user} has no personal limit in this server."), user=f"<@{user_id}>"
                )
            return dataclasses.replace(o, limit_credits=None, unlimited=False)

        return await self._change_override(guild_id, user_id, actor_id, "quota.clear_user_override", clear)

    async def block(
        self, guild_id: int, user_id: int, actor_id: int, reason: str | None = None
    ) -> UserOverride:
        def block(o: UserOverride) -> UserOverride:
            if o.blocked:
                raise QuotaInputError(N_("{user} is already blocked."), user=f"<@{user_id}>")
            return dataclasses.replace(o, blocked=True, reason=reason or o.reason)

        return await self._change_override(guild_id, user_id, actor_id, "quota.block", block)

    async def unblock(self, guild_id: int, user_id: int, actor_id: int) -> UserOverride:
        def unblock(o: UserOverride) -> UserOverride:
            if not o.blocked:
                raise QuotaInputError(N_("{user} is not blocked."), user=f"<@{user_id}>")
            return dataclasses.replace(o, blocked=False)

        return await self._change_override(guild_id, user_id, actor_id, "quota.unblock", unblock)

    async def grant_bonus(  # noqa: PLR0917 - the signature the admin cog codes against
        self,
        guild_id: int,
        user_id: int,
        credits: int,
        actor_id: int,
        expires_at: float | None = None,
        reason: str | None = None,
    ) -> int:
        """Add bonus credits on top of the user's limit until spent or `expires_at`; returns the grant id."""
        check_id(N_("user id"), user_id)
        if (
            isinstance(credits, bool)
            or not isinstance(credits, int)
            or not 1 <= credits <= self.settings.max_bonus
        ):
            raise QuotaInputError(
                N_("A bonus must be from 1 to {max} credits, not {credits}."),
                max=self.settings.max_bonus,
                credits=credits,
            )
        if expires_at is not None and not self._clock() < expires_at <= self._clock() + 366 * DAY_S:
            raise QuotaInputError(N_("A bonus must expire in the future and within a year."))

        async def change(tx: Tx, now: float) -> Audited[int]:
            bonus_id = await policy.add_grant(
                tx,
                guild_id,
                user_id,
                credits=credits,
                expires_at=expires_at,
                reason=reason,
                actor_id=actor_id,
                now=now,
            )
            detail = {"bonus_id": bonus_id, "credits": credits, "expires_at": expires_at, "reason": reason}
            return Audited("quota.grant_bonus", user_id, detail, bonus_id)

        return await self._admin(guild_id, actor_id, change)

    async def reset_user(self, guild_id: int, user_id: int, actor_id: int) -> ledger.Forgiven:
        """Forgive every charge counting against the user in the current window (fast and relax); bonus
        credits spent stay spent. Returns what was forgiven."""
        check_id(N_("user id"), user_id)

        async def change(tx: Tx, now: float) -> Audited[ledger.Forgiven]:
            window = (await self._guild_policy(tx, guild_id)).window_s
            done = await ledger.void_window(tx, guild_id, user_id, now - window, now)
            detail = {"voided": done.jobs, "credits": done.credits, "relax_credits": done.relax_credits}
            return Audited("quota.reset_user", user_id, detail, done)

        return await self._admin(guild_id, actor_id, change)
