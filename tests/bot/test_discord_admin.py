"""Admin commands end to end: blocks, overrides, tiers, resets, server settings, and syncing only on change."""

from __future__ import annotations

from bot.core.settings import Settings
from tests.bot.harness import World, admin_do, build_world, embed_of, ephemeral_reply, is_result, running_bot
from tests.fakediscord import EventKind, FakeDiscord, FakeUser, Interaction


async def imagine(fake: FakeDiscord, world: World, user: FakeUser, **options: object) -> Interaction:
    return await fake.send_slash("imagine", {"prompt": "a tree", **options}, user=user, channel=world.channel)


async def test_quota_admin_policies_change_what_members_may_do(
    fake_discord: FakeDiscord, settings: Settings, worker: str
) -> None:
    world = build_world(fake_discord)
    artists = fake_discord.add_role(world.guild, "artists")
    fake_discord.add_member(world.guild, world.bob, roles=[artists])
    async with running_bot(fake_discord, settings, worker):
        for bad in ({"limit": 0}, {"limit": 5, "window_hours": 100000}):
            text = await admin_do(fake_discord, world, "quota-admin set-default", bad)
            assert "went wrong" not in text and ("limit" in text or "window" in text), text
        await admin_do(fake_discord, world, "quota-admin set-default", {"limit": 1, "window_hours": 2})
        assert "blocked" in await admin_do(fake_discord, world, "quota-admin block", {"user": world.alice})
        refused = await imagine(fake_discord, world, world.alice)
        assert "blocked" in await ephemeral_reply(refused)
        await admin_do(fake_discord, world, "quota-admin unblock", {"user": world.alice})
        assert "unlimited" in await admin_do(
            fake_discord, world, "quota-admin set-user", {"user": world.alice, "limit": 0, "unlimited": True}
        )
        for _ in range(2):  # more than the default limit of 1
            await (await imagine(fake_discord, world, world.alice)).wait_original(is_result, timeout=60)

        assert "10 credits" in await admin_do(
            fake_discord, world, "quota-admin set-tier", {"role": artists, "limit": 10}
        )
        quota = await fake_discord.send_slash("quota", {}, user=world.bob, channel=world.channel)
        card = await quota.wait_message(lambda m: m.ephemeral and m.embed)
        fields = {f["name"]: f["value"] for f in embed_of(card)["fields"]}
        assert "**10** of **10**" in embed_of(card)["description"] and fields["Tier"] == "artists"
        assert fields["Window"] == "rolling 2 hours"

        await (await imagine(fake_discord, world, world.bob)).wait_original(is_result, timeout=60)
        assert "forgiven" in await admin_do(fake_discord, world, "quota-admin reset", {"user": world.bob})
        quota = await fake_discord.send_slash("quota", {}, user=world.bob, channel=world.channel)
        card = await quota.wait_message(lambda m: m.ephemeral and m.embed)
        assert "**10** of **10**" in embed_of(card)["description"]


async def test_server_settings_and_command_sync_on_change(
    fake_discord: FakeDiscord, settings: Settings, worker: str
) -> None:
    world = build_world(fake_discord)
    async with running_bot(fake_discord, settings, worker):
        await admin_do(fake_discord, world, "settings default-style", {"style": "anime"})
        await admin_do(fake_discord, world, "settings max-images", {"count": 1})
        shown = await admin_do(fake_discord, world, "settings nsfw", {"mode": "refuse"})
        assert shown == "Saved."
        result = await (await imagine(fake_discord, world, world.alice)).wait_original(is_result, timeout=60)
        assert {f["name"]: f["value"] for f in embed_of(result)["fields"]}["Style"] == "anime"
        too_many = await imagine(fake_discord, world, world.alice, count=2)
        assert "1 to 1 images" in await ephemeral_reply(too_many)
        bad = await fake_discord.send_slash(
            "settings block-word", {"word": "re:(oops"}, user=world.admin, channel=world.channel
        )
        assert "not a valid pattern" in await ephemeral_reply(bad)
    syncs = [e for e in fake_discord.events if e.kind is EventKind.COMMANDS_SYNCED]
    assert syncs
    async with running_bot(fake_discord, settings, worker):
        pass  # same commands: no second sync
    assert [e for e in fake_discord.events if e.kind is EventKind.COMMANDS_SYNCED] == syncs
