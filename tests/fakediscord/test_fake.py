"""End-to-end tests of the fake Discord: a real discord.py bot connects to it and is driven through it."""

import asyncio
import hashlib
import sys
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

import aiohttp
import discord.gateway
import discord.http
import pytest

from bot.endpoints import use_discord_endpoints
from tests.fakediscord import (
    ApiError,
    ChannelKind,
    EventKind,
    FakeChannel,
    FakeDiscord,
    FakeDiscordError,
    FakeGuild,
    FakeUser,
    RateLimited,
    Upload,
)
from tests.fakediscord.harness import run_bot
from tests.fakediscord.models import LOADING
from tests.fakediscord.sample_bot import PNG, Journal, SampleBot

MANAGE_GUILD = 1 << 5
ROOT = Path(__file__).resolve().parents[2]


@dataclass
class Scene:
    fake: FakeDiscord
    guild: FakeGuild
    general: FakeChannel
    alice: FakeUser
    bob: FakeUser
    boss: FakeUser
    journal: Journal
    bot: SampleBot


@pytest.fixture
async def scene(fake_discord: FakeDiscord) -> AsyncIterator[Scene]:
    fake = fake_discord
    guild = fake.add_guild("Art Club")
    general = fake.add_channel(guild, "general")
    fake.add_channel(guild, "gallery", kind=ChannelKind.FORUM)
    alice = fake.add_member(guild, "alice").user
    bob = fake.add_member(guild, fake.add_user("bob", dms_open=False)).user
    mods = fake.add_role(guild, "mods", permissions=MANAGE_GUILD)
    boss = fake.add_member(guild, "boss", roles=[mods]).user
    journal = Journal()
    bot = SampleBot(journal)
    async with run_bot(bot, fake):
        await fake.wait_commands("draw", "admin")
        yield Scene(fake, guild, general, alice, bob, boss, journal, bot)


async def test_commands_are_synced_with_typed_options(scene: Scene) -> None:
    draw = scene.fake.command("draw")
    types = {o["name"]: o["type"] for o in draw.options}
    assert types == {"prompt": 3, "count": 4, "style": 3, "scale": 10, "hd": 5}
    assert scene.fake.command("admin").default_member_permissions == str(MANAGE_GUILD)
    assert any(e.kind is EventKind.COMMANDS_SYNCED for e in scene.fake.events)


async def test_deferred_command_follows_up_with_file_embed_and_button(scene: Scene) -> None:
    ix = await scene.fake.send_slash(
        "draw",
        {"prompt": "a red fox", "count": 2, "scale": 5, "hd": True},
        user=scene.alice,
        channel=scene.general,
    )
    response = await ix.wait_response()
    assert response.type == 5
    (result,) = await ix.wait_followups(1)
    # The first follow-up to a deferred response replaces the "thinking…" message, as on Discord.
    assert result is ix.original() and not result.loading and result.edits[0].flags & LOADING
    assert result.attachments[0].filename == "result.png"
    assert result.attachments[0].data == PNG
    assert result.attachments[0].content_type == "image/png"
    assert result.embed is not None
    assert (result.embed["title"], result.embed["description"]) == (
        "a red fox",
        "2 x photo, scale 5.0, hd True",
    )
    assert result.custom_ids() == [f"sample:reroll:{ix.id}"]
    assert scene.fake.callback_latencies() and all(0 <= s < 3 for s in scene.fake.callback_latencies())


async def test_attachment_url_is_served(scene: Scene) -> None:
    ix = await scene.fake.send_slash("draw", {"prompt": "x"}, user=scene.alice, channel=scene.general)
    (result,) = await ix.wait_followups(1)
    async with aiohttp.ClientSession() as http, http.get(result.attachments[0].url) as answer:
        assert answer.status == 200
        assert answer.headers["Content-Type"] == "image/png"
        assert await answer.read() == PNG


async def test_button_opens_modal_whose_submit_edits_the_message(scene: Scene) -> None:
    ix = await scene.fake.send_slash("draw", {"prompt": "a cat"}, user=scene.alice, channel=scene.general)
    (result,) = await ix.wait_followups(1)
    press = await scene.fake.click(result, f"sample:reroll:{ix.id}", user=scene.alice)
    assert (await press.wait_response()).type == 9
    assert press.modal["title"] == "Edit the picture"
    submit = await scene.fake.submit_modal(press, {"instruction": "make it blue"})
    assert (await submit.wait_response()).type == 7
    assert result.content == f"job {ix.id} edited: make it blue (by bot #1)"
    before = result.edits[-1]  # the follow-up as posted, before the modal's edit
    assert before.content == "" and before.attachments == result.attachments and before.components


async def test_ephemeral_error_reply(scene: Scene) -> None:
    ix = await scene.fake.send_slash("fail", user=scene.alice, channel=scene.general)
    callback = await ix.wait_response()
    assert callback.type == 4
    assert ix.original().ephemeral and ix.original().content == "That prompt is not allowed."


async def test_attachment_option_is_downloaded_by_the_bot(scene: Scene) -> None:
    upload = Upload("photo.webp", b"RIFF0000WEBPVP8 " + bytes(range(200)))
    ix = await scene.fake.send_slash(
        "inspect", attachments={"image": upload}, user=scene.alice, channel=scene.general
    )
    await ix.wait_response()
    digest = hashlib.sha256(upload.data).hexdigest()[:12]
    assert ix.original().content == f"photo.webp image/webp {len(upload.data)} {digest}"
    assert scene.journal.downloads == [upload.data]


async def test_channel_message_and_thread(scene: Scene) -> None:
    ix = await scene.fake.send_slash(
        "announce", {"text": "contest!"}, user=scene.alice, channel=scene.general
    )
    (note,) = await ix.wait_followups(1)
    assert note.ephemeral
    posted = scene.fake.messages(scene.general)
    announcement = next(m for m in posted if m.content == "contest!")
    assert announcement.interaction_id is None and announcement.attachments[0].filename == "cover.png"
    assert announcement.thread_id is not None
    thread = scene.fake.thread_of(announcement)
    (inside,) = scene.fake.messages(thread)
    assert inside.content == "first picture" and inside.attachments[0].data == PNG


async def test_dm_and_closed_dms(scene: Scene) -> None:
    ix = await scene.fake.send_slash(
        "dm", {"who": scene.alice, "text": "hi"}, user=scene.boss, channel=scene.general
    )
    await ix.wait_response()
    assert [m.content for m in scene.fake.dms(scene.alice)] == ["hi"]
    ix = await scene.fake.send_slash(
        "dm", {"who": scene.bob, "text": "hi"}, user=scene.boss, channel=scene.general
    )
    await ix.wait_response()
    assert ix.original().content == "cannot DM bob: 50007"
    assert scene.fake.dms(scene.bob) == []


async def test_autocomplete_returns_choices(scene: Scene) -> None:
    choices = await scene.fake.autocomplete(
        "draw", {"prompt": "x", "style": "A"}, "style", user=scene.alice, channel=scene.general
    )
    assert [c.value for c in choices] == ["anime", "oil painting", "pixel art", "watercolor"]


async def test_subcommand_with_member_and_role_options_and_permissions(scene: Scene) -> None:
    mods = scene.fake.role(scene.guild, "mods")
    ix = await scene.fake.send_slash(
        "admin grant",
        {"member": scene.alice, "amount": 5, "role": mods},
        user=scene.boss,
        channel=scene.general,
    )
    await ix.wait_response()
    assert ix.original().content == "granted 5 to alice (mods)"
    with pytest.raises(FakeDiscordError, match="default_member_permissions"):
        await scene.fake.send_slash(
            "admin grant", {"member": scene.boss, "amount": 5}, user=scene.alice, channel=scene.general
        )
    ix = await scene.fake.send_slash(
        "admin grant",
        {"member": scene.boss, "amount": 5},
        user=scene.alice,
        channel=scene.general,
        validate=False,
    )
    await ix.wait_response()
    assert ix.original().content == "Manage Server needed." and ix.original().ephemeral


async def test_the_fake_refuses_what_discords_client_would(scene: Scene) -> None:
    with pytest.raises(FakeDiscordError, match="outside"):
        await scene.fake.send_slash(
            "draw", {"prompt": "x", "count": 9}, user=scene.alice, channel=scene.general
        )
    with pytest.raises(FakeDiscordError, match="no option"):
        await scene.fake.send_slash(
            "draw", {"prompt": "x", "size": 9}, user=scene.alice, channel=scene.general
        )
    with pytest.raises(FakeDiscordError, match="needs one of"):
        await scene.fake.send_slash("admin", user=scene.boss, channel=scene.general)
    with pytest.raises(FakeDiscordError, match="missing required"):
        await scene.fake.send_slash("draw", {}, user=scene.alice, channel=scene.general)


async def test_deleted_progress_message_stops_the_updater(scene: Scene) -> None:
    ix = await scene.fake.send_slash("progress", {"steps": 200}, user=scene.alice, channel=scene.general)
    (progress,) = await ix.wait_followups(1)
    await scene.fake.wait_for(lambda e: e.kind is EventKind.MESSAGE_EDIT and e.message is progress)
    await scene.fake.delete_message(progress)
    await asyncio.wait_for(scene.journal.progress_stop.wait(), 10)
    assert len(scene.journal.progress_stopped) == 1
    assert scene.journal.progress_stopped[0].startswith("10008")
    assert progress.deleted and 1 <= len(progress.edits) < 200


async def test_expired_token_falls_back_to_a_channel_post(scene: Scene) -> None:
    ix = await scene.fake.send_slash("slow", user=scene.alice, channel=scene.general)
    await ix.wait_response()
    scene.fake.clock.advance(15 * 60 + 1)
    scene.journal.release_slow.set()
    post = await scene.fake.wait_message(lambda m: m.content.endswith("finished"), channel=scene.general)
    assert scene.journal.fallbacks == ["401 50027"]
    assert post.content == f"{scene.alice.mention} finished" and post.attachments[0].filename == "late.png"
    assert post.pings(scene.alice) and not post.pings(scene.bob)
    assert post.mentions == [scene.alice]
    assert ix.followups() == []


async def test_channel_deleted_answers_unknown_channel(scene: Scene) -> None:
    ix = await scene.fake.send_slash("slow", user=scene.alice, channel=scene.general)
    await ix.wait_response()
    await scene.fake.delete_channel(scene.general)
    scene.journal.release_slow.set()
    await scene.fake.wait_for(lambda e: e.kind is EventKind.FAULT and "10003" in e.detail)


async def test_bot_restart_keeps_old_buttons_working(scene: Scene, fake_discord: FakeDiscord) -> None:
    fake = fake_discord
    ix = await fake.send_slash("draw", {"prompt": "a boat"}, user=scene.alice, channel=scene.general)
    (result,) = await ix.wait_followups(1)
    await scene.bot.close()
    async with run_bot(SampleBot(scene.journal), fake):
        assert fake.identify_count == 2
        press = await fake.click(result, f"sample:reroll:{ix.id}", user=scene.bob)
        assert (await press.wait_response()).type == 9
        submit = await fake.submit_modal(result, {"instruction": "at night"}, user=scene.bob)
        await submit.wait_response()
        assert result.content == f"job {ix.id} edited: at night (by bot #2)"


async def test_dropped_connection_resumes(scene: Scene) -> None:
    await scene.fake.disconnect_bot()
    ix = await scene.fake.send_slash("fail", user=scene.alice, channel=scene.general)
    assert (await ix.wait_response()).type == 4
    assert any(e.kind is EventKind.RESUME for e in scene.fake.events)
    assert scene.fake.identify_count == 1


async def test_progress_in_the_channel_stops_when_deleted(scene: Scene) -> None:
    ix = await scene.fake.send_slash(
        "progress", {"steps": 200, "in_channel": True}, user=scene.alice, channel=scene.general
    )
    progress = await scene.fake.wait_message(lambda m: m.content.startswith("step") and bool(m.edits))
    assert progress.interaction_id is None
    await scene.fake.delete_message(progress)
    await asyncio.wait_for(scene.journal.progress_stop.wait(), 10)
    assert scene.journal.progress_stopped[0].startswith("10008")
    assert ix.original().loading


async def test_finished_progress_edits_the_original_with_a_file(scene: Scene) -> None:
    ix = await scene.fake.send_slash("progress", {"steps": 2}, user=scene.alice, channel=scene.general)
    done = await ix.wait_original(lambda m: m.content.startswith("done"))
    assert done.content == "done after 2" and not done.loading
    assert [a.filename for a in done.attachments] == ["final.png"]
    assert ix.followups() == [done]
    assert [v.content for v in done.edits] == ["", "step 0", "step 1", "step 2"]


async def test_member_role_and_user_lookups(scene: Scene) -> None:
    ix = await scene.fake.send_slash("whois", {"who": scene.boss}, user=scene.alice, channel=scene.general)
    await ix.wait_response()
    assert ix.original().content == "boss: mods"


async def test_forum_gallery_thread(scene: Scene) -> None:
    ix = await scene.fake.send_slash("gallery", {"title": "Week 1"}, user=scene.alice, channel=scene.general)
    (note,) = await ix.wait_followups(1)
    thread = scene.fake.channel(int(note.content.split()[1]))
    assert thread.kind is ChannelKind.PUBLIC_THREAD and thread.name == "Week 1"
    starter, extra = scene.fake.messages(thread)
    assert starter.id == thread.id and [a.filename for a in starter.attachments] == [
        "0.png",
        "1.png",
        "2.png",
    ]
    assert extra.content == "and one more"


async def test_uploads_over_one_mib_and_over_the_limit(scene: Scene) -> None:
    ix = await scene.fake.send_slash("big", {"mib": 3}, user=scene.alice, channel=scene.general)
    (ok,) = await ix.wait_followups(1)
    assert ok.attachments[0].size == len(PNG) + 3 * 1024 * 1024
    ix = await scene.fake.send_slash("big", {"mib": 11}, user=scene.alice, channel=scene.general)
    (refused,) = await ix.wait_followups(1)
    # ephemeral=True is ignored: this first follow-up completes the public deferred response.
    assert refused.content == "too big: 413 40005" and not refused.ephemeral


async def test_select_menu_values(scene: Scene) -> None:
    ix = await scene.fake.send_slash("styles", user=scene.alice, channel=scene.general)
    await ix.wait_response()
    menu = ix.original()
    pick = await scene.fake.click(menu, "sample:pick", user=scene.bob, values=["anime"])
    assert (await pick.wait_response()).type == 6
    await scene.fake.wait_for(lambda e: e.kind is EventKind.MESSAGE_EDIT and e.message is menu)
    assert menu.content == "picked anime"


async def test_slash_command_in_a_dm(scene: Scene) -> None:
    ix = await scene.fake.send_slash("fail", user=scene.alice)
    await ix.wait_response()
    assert ix.original().channel_id == scene.fake.dm_channel(scene.alice).id


async def test_injected_fault_and_late_acknowledgement(scene: Scene) -> None:
    scene.fake.inject_fault("POST", "/callback", ApiError(403, 50013, "Missing Permissions"))
    ix = await scene.fake.send_slash("fail", user=scene.alice, channel=scene.general)
    await scene.fake.wait_for(lambda e: e.kind is EventKind.FAULT and "50013" in e.detail)
    assert ix.response is None
    scene.fake.ack_deadline = 0.0
    ix = await scene.fake.send_slash("fail", user=scene.alice, channel=scene.general)
    await scene.fake.wait_for(lambda e: e.kind is EventKind.FAULT and "10062" in e.detail)
    assert ix.response is None


async def test_unknown_routes_and_bad_tokens_are_reported() -> None:
    async with FakeDiscord() as fake, aiohttp.ClientSession() as http:
        auth = {"Authorization": f"Bot {fake.token}"}
        async with http.get(f"{fake.api_base}/guilds/1/bans", headers=auth) as answer:
            assert answer.status == 404
            assert answer.headers["Content-Type"] == "application/json"
        async with http.get(f"{fake.api_base}/users/@me", headers={"Authorization": "Bot nope"}) as answer:
            assert answer.status == 401
        async with http.get(f"{fake.api_base}/users/@me", headers=auth) as answer:
            assert (await answer.json())["id"] == str(fake.bot_user.id)
        assert fake.unexpected_routes == ["GET /api/v10/guilds/1/bans"]
        with pytest.raises(AssertionError, match="bans"):
            fake.assert_no_unexpected_routes()


def test_endpoints_point_discord_py_at_other_urls() -> None:
    use_discord_endpoints("http://127.0.0.1:9/api/v10/", "ws://127.0.0.1:9/gateway")
    try:
        assert discord.http.Route("GET", "/users/@me").url == "http://127.0.0.1:9/api/v10/users/@me"
        assert str(discord.gateway.DiscordWebSocket.DEFAULT_GATEWAY) == "ws://127.0.0.1:9/gateway"
        with pytest.raises(ValueError, match="ws"):
            use_discord_endpoints(None, "http://127.0.0.1:9/gateway")
    finally:
        use_discord_endpoints(None, None)
    assert discord.http.Route.BASE == "https://discord.com/api/v10"


async def test_subcommand_group_with_a_channel_option(scene: Scene) -> None:
    assert [o["type"] for o in scene.fake.command("admin").options] == [1, 2]
    ix = await scene.fake.send_slash(
        "admin quota reset",
        {"member": scene.alice, "channel": scene.general},
        user=scene.boss,
        channel=scene.general,
    )
    await ix.wait_response()
    assert ix.original().content == f"reset alice in #general ({scene.general.id})"
    options = ix.record.payload["data"]["options"]
    assert (options[0]["type"], options[0]["name"], options[0]["options"][0]["type"]) == (2, "quota", 1)


async def test_invalidated_session_identifies_again(scene: Scene) -> None:
    async def no_identify_pause(shard_id: int | None, *, initial: bool = False) -> None:
        return None  # discord.py sleeps 5 s before re-identifying, to respect Discord's identify limit

    scene.bot.before_identify_hook = no_identify_pause  # type: ignore[method-assign]
    await scene.fake.invalidate_session()
    await scene.fake.wait_connected(identifies=2)
    ix = await scene.fake.send_slash("fail", user=scene.alice, channel=scene.general)
    assert (await ix.wait_response()).type == 4


async def test_members_intent_gets_the_member_list(fake_discord: FakeDiscord) -> None:
    guild = fake_discord.add_guild("Big")
    for name in ("ann", "ben", "cy"):
        fake_discord.add_member(guild, name)
    intents = discord.Intents.default()
    intents.members = True
    client = discord.Client(intents=intents, guild_ready_timeout=0.05)
    async with run_bot(client, fake_discord):
        found = client.get_guild(guild.id)
        assert found is not None
        members = found.members
        assert {m.name for m in members} == {"big-owner", "brushfire", "ann", "ben", "cy"}


async def test_messages_carry_who_invoked_them(scene: Scene) -> None:
    ix = await scene.fake.send_slash("draw", {"prompt": "x"}, user=scene.alice, channel=scene.general)
    (result,) = await ix.wait_followups(1)
    press = await scene.fake.click(result, result.custom_ids()[0], user=scene.bob)
    await press.wait_response()
    submit = await scene.fake.submit_modal(result, {"instruction": "y"})
    await submit.wait_response()
    assert result.interaction_user == scene.alice and result.interaction_id == ix.id


async def test_a_hundred_interactions_at_once(scene: Scene) -> None:
    users = [scene.fake.add_member(scene.guild, f"user{i}").user for i in range(50)]
    sends = [scene.fake.send_slash("fail", user=users[i % 50], channel=scene.general) for i in range(100)]
    interactions = await asyncio.gather(*sends)
    callbacks = await asyncio.gather(*(ix.wait_response() for ix in interactions))
    assert [c.type for c in callbacks] == [4] * 100
    assert len({ix.original().id for ix in interactions}) == 100
    assert len(scene.fake.callback_latencies()) == 100


async def test_channels_added_later_reach_the_bot_on_refresh(scene: Scene) -> None:
    late = scene.fake.add_channel(scene.guild, "late")
    assert scene.bot.get_channel(late.id) is None
    available = asyncio.ensure_future(scene.bot.wait_for("guild_available", timeout=5))
    await scene.fake.refresh_guild(scene.guild)
    await available
    channel = scene.bot.get_channel(late.id)
    assert isinstance(channel, discord.TextChannel) and channel.name == "late"


async def _bot_process(fake: FakeDiscord) -> asyncio.subprocess.Process:
    args = ["-m", "tests.fakediscord.sample_bot", fake.api_base, fake.gateway_url, fake.token]
    return await asyncio.create_subprocess_exec(sys.executable, *args, cwd=ROOT)


async def test_bot_process_killed_and_restarted(fake_discord: FakeDiscord) -> None:
    fake = fake_discord
    guild = fake.add_guild()
    general = fake.add_channel(guild, "general")
    alice = fake.add_member(guild, "alice").user
    first = await _bot_process(fake)
    try:
        await fake.wait_connected(30)
        await fake.wait_commands("draw")
        ix = await fake.send_slash("draw", {"prompt": "x"}, user=alice, channel=general)
        (result,) = await ix.wait_followups(1)
    finally:
        first.kill()
        await first.wait()
    second = await _bot_process(fake)
    try:
        await fake.wait_connected(30, identifies=2)
        press = await fake.click(result, f"sample:reroll:{ix.id}", user=alice)
        await press.wait_response()
        await (await fake.submit_modal(press, {"instruction": "again"})).wait_response()
        assert result.content.startswith(f"job {ix.id} edited: again")
    finally:
        second.terminate()
        await second.wait()


async def test_modal_with_labelled_text_input_and_select(scene: Scene) -> None:
    ix = await scene.fake.send_slash("feedback", user=scene.alice, channel=scene.general)
    await ix.wait_response()
    with pytest.raises(FakeDiscordError, match="length 60"):
        await scene.fake.submit_modal(ix, {"comment": "x" * 60, "mood": ["sad"]})
    submit = await scene.fake.submit_modal(ix, {"comment": "lovely", "mood": ["happy"]})
    await submit.wait_response()
    assert submit.original().content == "lovely / happy" and submit.original().ephemeral


async def test_a_timeout_names_what_it_waited_for_and_what_happened(scene: Scene) -> None:
    ix = await scene.fake.send_slash("fail", user=scene.alice, channel=scene.general)
    await ix.wait_response()
    with pytest.raises(FakeDiscordError, match=r"a follow-up that never comes.*callback"):
        await scene.fake.wait_until(ix.followups, 0.1, "a follow-up that never comes")


async def test_channel_options_respect_channel_types(scene: Scene) -> None:
    forum = next(c for c in scene.fake.channels(scene.guild) if c.kind is ChannelKind.FORUM)
    with pytest.raises(FakeDiscordError, match="channel types"):
        await scene.fake.send_slash(
            "admin quota reset",
            {"member": scene.alice, "channel": forum},
            user=scene.boss,
            channel=scene.general,
        )


async def test_rate_limited_requests_are_retried(scene: Scene) -> None:
    scene.fake.inject_fault("POST", "/webhooks/", RateLimited(0.05), times=2)
    ix = await scene.fake.send_slash("draw", {"prompt": "x"}, user=scene.alice, channel=scene.general)
    (result,) = await ix.wait_followups(1)
    assert result.attachments[0].data == PNG
    assert sum(e.kind is EventKind.FAULT and "429" in e.detail for e in scene.fake.events) == 2


async def test_wait_message_skips_the_thinking_placeholder(scene: Scene) -> None:
    ix = await scene.fake.send_slash("announce", {"text": "hello"}, user=scene.alice, channel=scene.general)
    note = await ix.wait_message(lambda m: m.ephemeral)
    assert note.content.startswith("posted ")
    assert note is ix.original() and note.edits[0].flags & LOADING and note.edits[0].content == ""


async def test_deleting_the_placeholder_lets_a_refusal_be_ephemeral(scene: Scene) -> None:
    ix = await scene.fake.send_slash("oops", user=scene.alice, channel=scene.general)
    refusal = await ix.wait_message(lambda m: m.content == "Refused after all.")
    assert refusal.ephemeral and refusal.id != ix.record.original_id
    assert scene.fake.message(ix.record.original_id or 0).deleted


async def test_commands_in_a_thread(scene: Scene) -> None:
    ix = await scene.fake.send_slash(
        "announce", {"text": "thread please"}, user=scene.alice, channel=scene.general
    )
    await ix.wait_message(lambda m: m.content.startswith("posted"))
    announcement = await scene.fake.wait_message(lambda m: m.content == "thread please")
    thread = scene.fake.thread_of(announcement)
    ix = await scene.fake.send_slash("fail", user=scene.bob, channel=thread)
    await ix.wait_response()
    assert ix.original().channel_id == thread.id
