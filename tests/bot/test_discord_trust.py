"""Trust on the Discord side, tried as a careless or hostile member would through the real client: nobody acts
on what isn't theirs, no member's text pings anyone, and cheap refusals come before anything public."""

from __future__ import annotations

import asyncio
import io
import sqlite3
from typing import Any

import pytest
from PIL import Image

from bot.core.settings import CooldownSettings, Settings
from bot.core.styles import StylePreset
from tests.bot.harness import World, admin_do, build_world, button, ephemeral_reply, is_result, running_bot
from tests.bot.test_challenges import (
    GOOD,
    WAIT,
    MovableClock,
    advance,
    challenge_bot,
    channel_post,
    imagine,
    press,
    slash,
    vote_id,
)
from tests.fakediscord import FakeChannel, FakeDiscord, FakeGuild, FakeUser, Interaction, Message, Upload

HOSTILE = "<@{bob}> look **here** ||spoiler|| [free nitro](https://example.com) @everyone <@&{role}> ~~x~~"


def rows(settings: Settings, sql: str) -> list[tuple[Any, ...]]:
    with sqlite3.connect(settings.database.path) as conn:
        return conn.execute(sql).fetchall()


def charges(settings: Settings) -> int:
    return int(rows(settings, "SELECT COUNT(*) FROM ledger WHERE state != 'refunded'")[0][0])


def second_server(fake: FakeDiscord, world: World) -> tuple[FakeGuild, FakeUser]:
    """Another server, owned by bob, where alice is a member too."""
    guild = fake.add_guild("Rival Club", owner=world.bob)
    fake.add_member(guild, world.alice)
    fake.add_channel(guild, "lobby")
    return guild, world.bob


def job_id(result: Message) -> str:
    return button(result, "edit").split(":")[2]


async def make(
    fake: FakeDiscord, user: FakeUser, channel: FakeChannel, prompt: str = "a harbour", **options: object
) -> Message:
    ix = await fake.send_slash("imagine", {"prompt": prompt, **options}, user=user, channel=channel)
    return await ix.wait_original(is_result, timeout=60)


# --- 1: a copy of someone else's picture is not the presser's own work ---------------------------------


async def test_copies_made_from_another_members_picture_cannot_be_entered(
    fake_discord: FakeDiscord, cs: Settings, shared_worker: str, clock: MovableClock
) -> None:
    fake, w = fake_discord, build_world(fake_discord)
    async with challenge_bot(fake, cs, shared_worker, clock):
        assert "is open" in await slash(fake, w, w.admin, "challenge-admin start", GOOD)
        alices = await imagine(fake, w, w.alice, "anime")
        copies = []
        for action in ("upscale", "vary"):
            ix = await fake.click(alices, button(alices, action), user=w.bob)
            copies.append(await ix.wait_original(is_result, timeout=60))
        # A copy of a copy is still a copy: bob re-rolls his own upscale of alice's picture.
        ix = await fake.click(copies[0], button(copies[0], "reroll"), user=w.bob)
        copies.append(await ix.wait_original(is_result, timeout=60))
        for copy in copies:
            answer = await press(fake, copy, button(copy, "submit"), w.bob)
            assert "another member's picture" in answer, answer
        # Nor by command, naming the copy's job id.
        answer = await slash(fake, w, w.bob, "challenge submit", {"job": job_id(copies[1])})
        assert "another member's picture" in answer
        assert rows(cs, "SELECT COUNT(*) FROM challenge_entries") == [(0,)]
        # Upscaling your own picture is still your own work.
        ix = await fake.click(alices, button(alices, "upscale"), user=w.alice)
        own = await ix.wait_original(is_result, timeout=60)
        assert "entry #1" in await press(fake, own, button(own, "submit"), w.alice)


# --- 2: everything scoped to the server, the message and the owner it names ---------------------------


async def test_interactions_from_another_server_act_on_nothing(
    fake_discord: FakeDiscord, cs: Settings, shared_worker: str, clock: MovableClock
) -> None:
    fake, w = fake_discord, build_world(fake_discord)
    rival, owner = second_server(fake, w)
    lobby = fake.channels(rival)[0]
    async with challenge_bot(fake, cs, shared_worker, clock) as bot:
        assert "is open" in await slash(fake, w, w.admin, "challenge-admin start", GOOD)
        alices = await imagine(fake, w, w.alice, "anime")
        assert "entry #1" in await press(fake, alices, button(alices, "submit"), w.alice)
        entry = await channel_post(
            fake, fake.thread_of(await channel_post(fake, w.channel, "Challenge: harbours")), "Entry #1"
        )
        # Bob owns the rival server and has a result there to click on.
        bobs = await make(fake, owner, lobby)
        before = charges(cs)
        target = job_id(alices)
        for action in (f"reroll:{target}", f"vary:{target}:0", f"upscale:{target}:0", f"edit:{target}"):
            ix = await fake.forge_click(bobs, f"brushfire:{action}", user=owner)
            assert "not in this server's history" in await ephemeral_reply(ix, WAIT), action
        ix = await fake.forge_click(bobs, f"brushfire:delete:{target}", user=owner)
        assert "not in this server's history" in await ephemeral_reply(ix, WAIT)
        ix = await fake.forge_click(bobs, f"brushfire:submit:{target}", user=owner)
        assert "not in this server's history" in await ephemeral_reply(ix, WAIT)
        assert not alices.deleted and not bobs.deleted
        assert rows(cs, "SELECT COUNT(*) FROM generations WHERE deleted = 1") == [(0,)]
        assert charges(cs) == before  # nothing ran in either server

        # Voting: alice's entry cannot be voted on from the rival server, even once voting opens.
        await advance(bot, clock, 25 * 3600)
        ix = await fake.forge_click(bobs, vote_id(entry), user=owner)
        assert "not in one of this server's challenges" in await ephemeral_reply(ix, WAIT)
        assert rows(cs, "SELECT COUNT(*) FROM challenge_votes") == [(0,)]
        assert "counted" in await press(fake, entry, vote_id(entry), w.bob)  # from its own server it counts
        # A blocked member takes no part: no votes (docs/quotas.md, question 13).
        await admin_do(fake, w, "quota-admin block", {"user": w.bob})
        assert "blocked" in await press(fake, entry, vote_id(entry), w.bob)


async def test_delete_only_removes_the_jobs_own_message(
    fake_discord: FakeDiscord, settings: Settings, worker: str
) -> None:
    fake, w = fake_discord, build_world(fake_discord)
    async with running_bot(fake, settings, worker):
        alices = await make(fake, w.alice, w.channel, "alice's boat")
        bobs = await make(fake, w.bob, w.channel, "bob's boat")
        # An admin's Delete naming alice's job, pressed on bob's message, deletes neither.
        ix = await fake.forge_click(bobs, f"brushfire:delete:{job_id(alices)}", user=w.admin)
        assert "not on that result's own message" in await ephemeral_reply(ix)
        assert not bobs.deleted and not alices.deleted
        assert rows(settings, "SELECT COUNT(*) FROM generations WHERE deleted = 1") == [(0,)]
        # Bob cannot delete alice's result; an admin can, from its own message.
        ix = await fake.click(alices, button(alices, "delete"), user=w.bob)
        assert "Only the person who made this image" in await ephemeral_reply(ix)
        ix = await fake.click(alices, button(alices, "delete"), user=w.admin)
        assert "Deleted" in await ephemeral_reply(ix)
        await fake.wait_until(lambda: alices.deleted, 10, "alice's result deleted")
        assert not bobs.deleted


# --- 3: member text is shown, never obeyed --------------------------------------------------------------


@pytest.fixture
def slow_settings(settings: Settings) -> Settings:
    styles = [*settings.styles, StylePreset(name="slow", description="many steps", steps=120)]
    return settings.model_copy(update={"styles": styles})


async def test_prompts_and_themes_never_ping_and_render_as_text(
    fake_discord: FakeDiscord, slow_settings: Settings, worker: str
) -> None:
    fake, w = fake_discord, build_world(fake_discord)
    role = fake.add_role(w.guild, "artists")
    carol = fake.add_user("carol")
    fake.add_member(w.guild, carol, roles=[role])
    prompt = HOSTILE.format(bob=w.bob.id, role=role.id)
    async with running_bot(fake, slow_settings, worker):
        result = await make(fake, w.alice, w.channel, prompt)
        assert result.notified == set() and all(not m.notified for m in fake.messages())
        # Shown as typed: the mention is broken, the markdown escaped, the link not a link.
        assert "<@\u200b" in result.content and f"<@{w.bob.id}>" not in result.content
        assert "\\*\\*here\\*\\*" in result.content and "\\|\\|spoiler\\|\\|" in result.content
        assert "\\[free nitro](" in result.content and "@\u200beveryone" in result.content

        # After the token expires the result is posted in the channel: it pings alice, and only alice.
        ix = await fake.send_slash(
            "imagine", {"prompt": prompt, "style": "slow"}, user=w.alice, channel=w.channel
        )
        await ix.wait_original(lambda m: "Drawing" in m.content or "Queued" in m.content, timeout=30)
        fake.expire_tokens()
        late = await fake.wait_message(lambda m: is_result(m) and m.interaction_id is None, timeout=60)
        assert late.notified == {w.alice.id}
        assert late.pings(w.alice) and not late.pings(w.bob) and not late.pings(carol)

        # A theme with mentions pings nobody: announcement, gallery post, the cancel notice.
        theme = {**GOOD, "theme": f"<@{w.bob.id}> harbours <@&{role.id}> @here"}
        assert "is open" in await admin_do(fake, w, "challenge-admin start", theme)
        made = await make(fake, w.alice, w.channel, "a harbour", style="anime")
        assert "entry #1" in await ephemeral_reply(
            await fake.click(made, button(made, "submit"), user=w.alice)
        )
        assert "cancelled" in await admin_do(fake, w, "challenge-admin cancel", {})
        notice = await fake.wait_message(lambda m: "was cancelled" in m.content and not m.ephemeral)
        assert "<@\u200b" in notice.content
    assert all(not m.notified for m in fake.messages() if m.id != late.id)
    assert fake.world.strict.stray_pings == []


# --- 4: modal input and buttons that can work -----------------------------------------------------------


async def test_modal_input_and_invisible_text_are_refused_without_charge(
    fake_discord: FakeDiscord, settings: Settings, worker: str
) -> None:
    fake, w = fake_discord, build_world(fake_discord)
    async with running_bot(fake, settings, worker):
        two = await make(fake, w.alice, w.channel, "two boats", count=2)
        charged = charges(settings)
        for number, instruction, expected in [
            ("²", "add snow", "whole number between 1 and 2"),
            ("٣", "add snow", "whole number between 1 and 2"),
            ("3", "add snow", "whole number between 1 and 2"),
            ("1", "\u200b\u200d\u2060", "is empty"),
            ("1", "\u3164 \u2800", "is empty"),
        ]:
            opener = await fake.click(two, button(two, "edit"), user=w.alice)
            assert (await opener.wait_response()).type == 9
            ix = await fake.submit_modal(opener, {"instruction": instruction, "image": number}, user=w.alice)
            assert expected in await ephemeral_reply(ix), (number, instruction)
        for prompt in ("\u200b", "\ufeff\u200c", "\u0301\u0301"):
            ix = await fake.send_slash("imagine", {"prompt": prompt}, user=w.alice, channel=w.channel)
            assert "is empty" in await ephemeral_reply(ix)
        assert charges(settings) == charged


async def test_results_of_an_upload_offer_only_buttons_that_work(
    fake_discord: FakeDiscord, settings: Settings, worker: str
) -> None:
    fake, w = fake_discord, build_world(fake_discord)
    out = io.BytesIO()
    Image.new("RGB", (64, 64), (200, 30, 30)).save(out, format="PNG")
    async with running_bot(fake, settings, worker):
        ix = await fake.send_slash(
            "edit",
            {"image": Upload("red.png", out.getvalue(), "image/png"), "instruction": "make it blue"},
            user=w.alice,
            channel=w.channel,
        )
        edited = await ix.wait_original(is_result, timeout=60)
        actions = {c.split(":")[1] for c in edited.custom_ids()}
        assert "reroll" not in actions and "submit" not in actions
        assert {"edit", "delete", "vary", "upscale"} <= actions
        # A result made from that result keeps its picture: it can be re-rolled.
        ix = await fake.click(edited, button(edited, "vary"), user=w.alice)
        varied = await ix.wait_original(is_result, timeout=60)
        assert "reroll" in {c.split(":")[1] for c in varied.custom_ids()}


# --- 6: refusals before anything public; cooldowns; admin verbs hidden --------------------------------


def no_public_placeholder(fake: FakeDiscord, ix: Interaction) -> bool:
    return (
        ix.response is not None
        and ix.response.type == 4
        and all(not m.loading for m in fake.messages(include_deleted=True))
    )


async def test_cheap_rules_answer_before_any_public_thinking(
    fake_discord: FakeDiscord, settings: Settings, worker: str
) -> None:
    fake, w = fake_discord, build_world(fake_discord)
    other = fake.add_channel(w.guild, "general")
    async with running_bot(fake, settings, worker):
        result = await make(fake, w.alice, w.channel)
        await admin_do(fake, w, "settings channel", {"channel": w.channel, "action": "allow"})
        ix = await fake.send_slash("imagine", {"prompt": "a cat"}, user=w.alice, channel=other)
        assert "not used in this channel" in await ephemeral_reply(ix)
        assert (
            no_public_placeholder(fake, ix)
            and ix.response is not None
            and ix.response.data is not None
            and ix.response.data["flags"] & 64
        )
        await admin_do(fake, w, "quota-admin block", {"user": w.bob})
        for send in (
            fake.send_slash("imagine", {"prompt": "a cat"}, user=w.bob, channel=w.channel),
            fake.click(result, button(result, "reroll"), user=w.bob),
            fake.click(result, button(result, "edit"), user=w.bob),
        ):
            ix = await send
            assert "blocked" in await ephemeral_reply(ix)
            assert no_public_placeholder(fake, ix)
        assert not [m for m in fake.messages(include_deleted=True) if m.deleted]


@pytest.fixture
def paced(settings: Settings) -> Settings:
    limits = settings.limits.model_copy(update={"job_cooldown": CooldownSettings(rate=2, per_s=600)})
    return settings.model_copy(update={"limits": limits})


async def test_per_member_cooldown_names_when_to_retry(
    fake_discord: FakeDiscord, paced: Settings, worker: str
) -> None:
    fake, w = fake_discord, build_world(fake_discord)
    async with running_bot(fake, paced, worker):
        first = await make(fake, w.alice, w.channel)
        ix = await fake.click(first, button(first, "reroll"), user=w.alice)
        await ix.wait_original(is_result, timeout=60)
        for send in (
            fake.send_slash("imagine", {"prompt": "a third"}, user=w.alice, channel=w.channel),
            fake.click(first, button(first, "vary"), user=w.alice),
        ):
            ix = await send
            text = await ephemeral_reply(ix)
            assert "Slow down" in text and "<t:" in text and ":R>" in text
            assert ix.response is not None and ix.response.type == 4
        # Per member: bob is not slowed by alice.
        await make(fake, w.bob, w.channel)
    assert charges(paced) == 3


async def test_admin_verbs_are_hidden_from_members_and_checked(
    fake_discord: FakeDiscord, settings: Settings, worker: str
) -> None:
    fake, w = fake_discord, build_world(fake_discord)
    async with running_bot(fake, settings, worker):
        await fake.wait_commands("challenge", "challenge-admin", "style")
        assert fake.command("challenge").default_member_permissions is None
        for name in ("challenge-admin", "quota-admin", "settings", "style"):
            permissions = fake.command(name).default_member_permissions
            assert permissions is not None and int(permissions) == 1 << 5, name
        members = {o["name"] for o in fake.command("challenge").options}
        assert members == {"submit", "withdraw", "leaderboard"}
        with pytest.raises(Exception, match="hidden from alice"):
            await fake.send_slash("challenge-admin start", GOOD, user=w.alice, channel=w.channel)
        # A server owner may show the command to everyone; the runtime check still refuses.
        for name, options in [
            ("challenge-admin start", GOOD),
            ("style add", {"name": "x", "prompt": "{prompt}"}),
        ]:
            ix = await fake.send_slash(name, options, user=w.alice, channel=w.channel, validate=False)
            assert "Manage Server" in await ephemeral_reply(ix)


# --- 7: a busy afternoon in two servers, every request checked by the strict fake ------------------------


async def test_two_busy_servers_keep_every_rule(
    fake_discord: FakeDiscord, settings: Settings, worker: str
) -> None:
    """Members of two servers (two of them in both) make, vary and upscale images at once with prompts full
    of mentions and markdown: every request fits Discord's API description and limits, and nobody is pinged."""
    fake, w = fake_discord, build_world(fake_discord)
    rival, _ = second_server(fake, w)
    carol, dave = fake.add_user("carol"), fake.add_user("dave")
    for guild in (rival, w.guild):  # carol and dave are members of both servers too
        fake.add_member(guild, carol)
        fake.add_member(guild, dave)
    lobby = fake.channels(rival)[0]
    role = fake.add_role(w.guild, "artists")
    makers = [(w.alice, w.channel), (w.bob, w.channel), (w.admin, w.channel)]
    makers += [(carol, w.channel), (dave, w.channel)]
    makers += [(w.alice, lobby), (w.bob, lobby), (carol, lobby), (dave, lobby)]
    async with running_bot(fake, settings, worker):
        results = await asyncio.gather(
            *(
                make(fake, user, where, HOSTILE.format(bob=w.bob.id, role=role.id) + f" #{n}", count=4)
                for n, (user, where) in enumerate(makers)
            )
        )

        async def press_all(result: Message, user: FakeUser) -> list[Message]:
            made = []
            for custom_id in [c for c in result.custom_ids() if c.split(":")[1] in ("vary", "upscale")]:
                ix = await fake.click(result, custom_id, user=user)
                made.append(await ix.wait_original(is_result, timeout=90))
            return made

        derived = await asyncio.gather(
            *(press_all(r, user) for r, (user, _) in zip(results, makers, strict=True))
        )
        assert [len(d) for d in derived] == [8] * len(makers)
        # Everyone tidies up their upscales and variations: Delete removes exactly those messages, in both
        # servers, and leaves each first result.
        upscales = [(m, user) for d, (user, _) in zip(derived, makers, strict=True) for m in d]
        for message, user in upscales:
            ix = await fake.click(message, button(message, "delete"), user=user)
            assert "Deleted" in await ephemeral_reply(ix)
        await fake.wait_until(lambda: all(m.deleted for m, _ in upscales), 30, "upscales deleted")
        assert sum(m.deleted for m in fake.messages(include_deleted=True)) == len(upscales) == 8 * len(makers)
    made_in = {m.guild_id for d in derived for m in d}
    assert made_in == {w.guild.id, rival.id}
    assert all(not m.notified for m in fake.messages())
    stats = fake.world.strict
    # What must be sent whatever the timing: each of the 63 jobs answers its interaction and posts its
    # result, each Delete answers and deletes. Progress edits come on top, fewer on a loaded machine.
    jobs = len(makers) + sum(len(d) for d in derived)
    assert stats.requests >= 2 * jobs + 2 * len(upscales) and stats.clean, stats
