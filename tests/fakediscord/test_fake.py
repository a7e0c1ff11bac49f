"""End-to-end tests of the fake Discord: a real discord.py bot connects to it and is driven through it."""

import asyncio
import hashlib
from collections.abc import AsyncIterator
from dataclasses import dataclass

import aiohttp
import pytest

from tests.fakediscord import (
    ChannelKind,
    EventKind,
    FakeChannel,
    FakeDiscord,
    FakeDiscordError,
    FakeGuild,
    FakeUser,
    Upload,
)
from tests.fakediscord.harness import run_bot
from tests.fakediscord.sample_bot import PNG, Journal, SampleBot

MANAGE_GUILD = 1 << 5


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
    assert ix.original() is not None and ix.original().loading
    (result,) = await ix.wait_followups(1)
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
    assert result.edits[0].content == "" and result.edits[0].attachments == result.attachments


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
    thread = scene.fake.world.channels[announcement.thread_id]
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
    mods = next(r for r in scene.fake.world.guild_roles(scene.guild.id) if r.name == "mods")
    ix = await scene.fake.send_slash(
        "admin grant",
        {"member": scene.alice, "amount": 5, "role": mods},
        user=scene.boss,
        channel=scene.general,
    )
    await ix.wait_response()
    assert ix.original().content == "granted 5 to alice (mods)"
    ix = await scene.fake.send_slash(
        "admin grant", {"member": scene.boss, "amount": 5}, user=scene.alice, channel=scene.general
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
    with pytest.raises(FakeDiscordError, match="missing required"):
        await scene.fake.send_slash("draw", {}, user=scene.alice, channel=scene.general)


async def test_deleted_progress_message_stops_the_updater(scene: Scene) -> None:
    ix = await scene.fake.send_slash("progress", {"steps": 200}, user=scene.alice, channel=scene.general)
    (progress,) = await ix.wait_followups(1)
    await scene.fake.wait_for(lambda e: e.kind is EventKind.MESSAGE_EDIT and e.message is progress)
    await scene.fake.delete_message(progress)
    await scene.fake.wait_for(lambda e: e.kind is EventKind.FAULT and "10008" in e.detail)
    await asyncio.sleep(0.05)
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
