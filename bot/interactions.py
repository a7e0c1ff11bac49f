"""What the Discord layer reads off an interaction: who asked, how to answer later, and the core's services."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Protocol, cast

import discord

from bot.checks import Gate, is_admin
from bot.core.plans import Delivery, JobPlan, Requester, token_expiry
from bot.core.records import GuildSettings
from bot.core.services import Services
from bot.i18n import Translate

# Validates an interaction's input into a plan; its BrushfireError reaches the user ephemerally.
PlanFactory = Callable[[Requester, GuildSettings], Awaitable[JobPlan]]


class Runner(Protocol):
    """Drives a job from an interaction to its posted result (`bot.delivery.JobRunner`)."""

    async def run(self, interaction: discord.Interaction, plan_for: PlanFactory) -> None: ...


class Admission(Protocol):
    """The cheap rules checked before any defer (`bot.gate.JobGate`): channel, block, cooldown."""

    async def admit(self, interaction: discord.Interaction, gate: Gate = ...) -> None: ...


class BrushfireClient(Protocol):
    """What buttons and modals need from the bot (`bot.client.ImageBot`), without importing it."""

    @property
    def services(self) -> Services: ...

    @property
    def runner(self) -> Runner: ...

    @property
    def gate(self) -> Admission: ...


def client_of(interaction: discord.Interaction) -> BrushfireClient:
    """The bot that received the interaction; every brushfire interaction arrives at an ImageBot."""
    return cast(BrushfireClient, interaction.client)


def requester_for(interaction: discord.Interaction) -> Requester:
    """Who pressed or typed, with their roles and whether they may manage the server."""
    roles = tuple(r.id for r in getattr(interaction.user, "roles", ()) if not r.is_default())
    return Requester(
        user_id=interaction.user.id,
        guild_id=interaction.guild_id or 0,
        channel_id=interaction.channel_id or 0,
        name=interaction.user.name,
        role_ids=roles,
        is_admin=is_admin(interaction),
    )


def delivery_for(interaction: discord.Interaction, _: Translate) -> Delivery:
    """How to answer later: the interaction's webhook token (while it lives) and the member's language,
    which the result keeps even when it is posted in the channel or after a restart."""
    return Delivery(
        application_id=interaction.application_id,
        interaction_token=interaction.token,
        token_expires_at=token_expiry(interaction.created_at.timestamp()),
        language=_.language,
    )
