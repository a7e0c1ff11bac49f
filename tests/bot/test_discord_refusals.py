"""Bad input, permissions and quota refusals through the fake Discord: specific ephemeral answers, no charge."""

from __future__ import annotations

import io
import sqlite3

import pytest
from PIL import Image

from bot.core.settings import Settings
from tests.bot.harness import admin_do, build_world, embed_of, ephemeral_reply, is_result, running_bot
from tests.fakediscord import FakeDiscord, Upload


def charged(settings: Settings) -> list[tuple[int, str]]:
    with sqlite3.connect(settings.database.path) as conn:
        return conn.execute(
            "SELECT user_id, lane FROM ledger WHERE state != 'refunded' ORDER BY created_at"
        ).fetchall()


async def test_bad_input_gets_specific_ephemeral_answers_and_charges_nothing(
    fake_discord: FakeDiscord, settings: Settings, worker: str
) -> None:
    world = build_world(fake_discord)
    other = fake_discord.add_channel(world.guild, "general")
    async with running_bot(fake_discord, settings, worker):
        assert "Saved" in await admin_do(fake_discord, world, "settings block-word", {"word": "gore"})
        cases: list[tuple[dict[str, object], str]] = [
            ({"prompt": "   "}, "prompt is empty"),
            ({"prompt": "x" * 1001}, "the limit is 1000"),
            ({"prompt": "lots of GORE here"}, "contains `gore`"),
            ({"prompt": "a cat", "style": "no-such-style"}, "no style called `no-such-style`"),
            ({"prompt": "a cat", "seed": -5}, "seed must be between 0"),
            ({"prompt": "a cat", "count": 9}, "1 to 4 images"),
        ]
        for options, expected in cases:
            inter = await fake_discord.send_slash(
                "imagine", options, user=world.alice, channel=world.channel, validate=False
            )
            text = await ephemeral_reply(inter)
            assert expected in text, (options, text)

        # Uploads for /edit: not an image, and too big.
        for upload, expected in [
            (Upload("notes.png", b"hello, not a picture", "image/png"), "not a PNG, JPEG or WebP"),
            (Upload("huge.png", b"\x89PNG" + b"0" * (9 * 1024 * 1024), "image/png"), "the limit is"),
        ]:
            inter = await fake_discord.send_slash(
                "edit", {"image": upload, "instruction": "snow"}, user=world.alice, channel=world.channel
            )
            assert expected in await ephemeral_reply(inter)

        # Channels: once the server limits brushfire to #studio, #general is refused.
        await admin_do(fake_discord, world, "settings channel", {"channel": world.channel, "action": "allow"})
        inter = await fake_discord.send_slash("imagine", {"prompt": "a cat"}, user=world.alice, channel=other)
        assert "not used in this channel" in await ephemeral_reply(inter)
    assert charged(settings) == []


async def test_admin_commands_are_hidden_and_checked(
    fake_discord: FakeDiscord, settings: Settings, worker: str
) -> None:
    world = build_world(fake_discord)
    async with running_bot(fake_discord, settings, worker):
        command = fake_discord.command("quota-admin")
        assert command.default_member_permissions is not None, "admin commands carry their permission"
        assert int(command.default_member_permissions) == 1 << 5  # Manage Server
        admin_commands: list[tuple[str, dict[str, object]]] = [
            ("quota-admin grant", {"user": world.alice, "credits": 100}),
            ("quota-admin report", {}),
            ("settings relax", {"enabled": False}),
        ]
        for name, options in admin_commands:
            inter = await fake_discord.send_slash(
                name, options, user=world.alice, channel=world.channel, validate=False
            )
            assert "Manage Server" in await ephemeral_reply(inter)
        # Nothing changed: alice still has the default 50 credits.
        inter = await fake_discord.send_slash("quota", {}, user=world.alice, channel=world.channel)
        message = await inter.wait_message(lambda m: m.ephemeral and m.embed)
        assert "**50** of **50**" in embed_of(message)["description"]


async def test_quota_exhaustion_relax_fallback_and_refusal(
    fake_discord: FakeDiscord, settings: Settings, worker: str
) -> None:
    world = build_world(fake_discord)
    async with running_bot(fake_discord, settings, worker):
        assert "1 credit per" in await admin_do(fake_discord, world, "quota-admin set-default", {"limit": 1})
        first = await fake_discord.send_slash(
            "imagine", {"prompt": "one"}, user=world.alice, channel=world.channel
        )
        await first.wait_original(is_result, timeout=60)
        # Out of fast credits: the job falls back to the relax lane and says so.
        second = await fake_discord.send_slash(
            "imagine", {"prompt": "two"}, user=world.alice, channel=world.channel
        )
        relaxed = await second.wait_original(is_result, timeout=60)
        assert "relax" in embed_of(relaxed)["fields"][-2]["value"] or "relax" in str(relaxed.embed)
        # Asking for fast explicitly is refused with what is left, when it returns, and the relax offer.
        third = await fake_discord.send_slash(
            "imagine", {"prompt": "three", "lane": "fast"}, user=world.alice, channel=world.channel
        )
        text = await ephemeral_reply(third)
        assert "0 of your 1 credits left" in text and "<t:" in text and "relax" in text
        # With relax turned off, a plain /imagine is refused too.
        await admin_do(fake_discord, world, "settings relax", {"enabled": False})
        fourth = await fake_discord.send_slash(
            "imagine", {"prompt": "four"}, user=world.alice, channel=world.channel
        )
        assert "0 of your 1 credits left" in await ephemeral_reply(fourth)
        # /quota tells the same story; an admin grant lets alice go on.
        assert "Gave" in await admin_do(
            fake_discord, world, "quota-admin grant", {"user": world.alice, "credits": 3}
        )
        fifth = await fake_discord.send_slash(
            "imagine", {"prompt": "five"}, user=world.alice, channel=world.channel
        )
        await fifth.wait_original(is_result, timeout=60)
    assert [lane for _, lane in charged(settings)] == ["fast", "relax", "fast"]


async def test_style_autocomplete_and_quota_report(
    fake_discord: FakeDiscord, settings: Settings, worker: str
) -> None:
    world = build_world(fake_discord)
    async with running_bot(fake_discord, settings, worker):
        choices = await fake_discord.autocomplete(
            "imagine", {"prompt": "x", "style": "ph"}, "style", user=world.alice, channel=world.channel
        )
        assert [c.value for c in choices] == ["photo"]
        first = await fake_discord.send_slash(
            "imagine", {"prompt": "a lighthouse", "style": "photo"}, user=world.alice, channel=world.channel
        )
        result = await first.wait_original(is_result, timeout=60)
        assert {f["name"]: f["value"] for f in embed_of(result)["fields"]}["Style"] == "photo"
        inter = await fake_discord.send_slash(
            "quota-admin report", {"days": 7}, user=world.admin, channel=world.channel
        )
        report = await inter.wait_message(lambda m: m.attachments, timeout=15)
        assert str(world.alice.id) in report.content
        with Image.open(io.BytesIO(report.attachments[0].data)) as chart:
            assert chart.format == "PNG" and chart.size[0] > 100


@pytest.fixture
def png_bytes() -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", (80, 60), (200, 30, 30)).save(buf, format="PNG")
    return buf.getvalue()


async def test_edit_an_upload_and_a_result(
    fake_discord: FakeDiscord, settings: Settings, worker: str, png_bytes: bytes
) -> None:
    world = build_world(fake_discord)
    async with running_bot(fake_discord, settings, worker):
        inter = await fake_discord.send_slash(
            "edit",
            {"image": Upload("red.png", png_bytes, "image/png"), "instruction": "make it blue"},
            user=world.alice,
            channel=world.channel,
        )
        edited = await inter.wait_original(is_result, timeout=60)
        assert edited.attachments[0].data.startswith(b"\xff\xd8\xff")
        # The result's Edit button opens a modal; its instruction makes a new job from that image.
        edit_id = next(c for c in edited.custom_ids() if c.startswith("brushfire:edit:"))
        opener = await fake_discord.click(edited, edit_id, user=world.alice)
        assert (await opener.wait_response()).type == 9
        submitted = await fake_discord.submit_modal(opener, {"instruction": "add snow"}, user=world.alice)
        again = await submitted.wait_original(is_result, timeout=60)
        assert again.attachments
    assert len(charged(settings)) == 2
