"""Style challenges end to end: the real bot on the fake Discord, a real tiny worker, SQLite, and a clock the
test moves (days pass in milliseconds; APScheduler still fires every phase change)."""

from __future__ import annotations

import asyncio
import contextlib
import importlib.util
import sqlite3
import threading
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import pytest

from bot.client import ImageBot
from bot.core.challenges.rules import ChallengeSettings
from bot.core.services import open_services
from bot.core.settings import Settings
from inference.output import read_metadata
from inference.settings import AdapterSettings, EngineSettings, ModelDefaults, WorkerSettings
from tests.bot.harness import World, build_world, button, embed_of, ephemeral_reply, is_result
from tests.fakediscord import ApiError, ChannelKind, FakeChannel, FakeDiscord, FakeUser, Message
from tests.fakediscord.harness import run_bot

DAY = 24 * 3600
HOUR = 3600
WAIT = 20.0
HAVE_PEFT = importlib.util.find_spec("peft") is not None
GOOD = {"theme": "harbours at dawn", "style": "anime", "submit_for": "1d", "vote_for": "1d"}


class MovableClock:
    """Real time plus an offset the test advances: the bot's only notion of 'now' for quotas and challenges."""

    def __init__(self) -> None:
        self.offset = 0.0

    def __call__(self) -> float:
        return time.time() + self.offset


@pytest.fixture(scope="module")
def shared_worker(tiny_models: tuple[Path, Path], tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """One tiny worker for the whole module, on its own thread and event loop (it is only reached by HTTP)."""
    from inference.engine import DiffusersEngine
    from inference.server import start_worker

    adapters = []
    if HAVE_PEFT:  # a tiny random LoRA, so a style preset's adapter reaches a real engine
        from tests.inference.test_engine import write_tiny_lora

        lora = write_tiny_lora(tiny_models[0], tmp_path_factory.mktemp("lora"))
        adapters = [AdapterSettings(name="ink", path=str(lora.parent), weight_name=lora.name)]
    engine_settings = EngineSettings(
        adapters=adapters,
        model=str(tiny_models[0]),
        edit_model=str(tiny_models[1]),
        device="cpu",
        cpu_threads=1,
        defaults=ModelDefaults(steps=2, guidance=5.0, width=64, height=64, img2img_strength=0.75),
        cache_dir=tmp_path_factory.mktemp("cache"),
    )
    loop = asyncio.new_event_loop()
    thread = threading.Thread(target=loop.run_forever, name="shared-worker", daemon=True)
    thread.start()

    async def boot() -> Any:
        engine = await asyncio.to_thread(DiffusersEngine.load, engine_settings)
        return await start_worker(WorkerSettings(port=0, max_pixels=256 * 256), engine)

    running = asyncio.run_coroutine_threadsafe(boot(), loop).result(120)
    try:
        yield running.url
    finally:
        asyncio.run_coroutine_threadsafe(running.stop(), loop).result(30)
        loop.call_soon_threadsafe(loop.stop)
        thread.join(10)


@pytest.fixture
def clock() -> MovableClock:
    return MovableClock()


@pytest.fixture
def cs(settings: Settings) -> Settings:
    """Settings with small challenge numbers: 2 votes and 2 entries each, bonuses 5/3/1."""
    engine = settings.engine.model_copy(
        update={"adapters": [AdapterSettings(name="ink", path="on-the-worker")]}
    )
    return settings.model_copy(
        update={
            "challenges": ChallengeSettings(vote_budget=2, max_entries=2, bonus_credits=[5, 3, 1]),
            "engine": engine,
        }
    )


@contextlib.asynccontextmanager
async def challenge_bot(
    fake: FakeDiscord, settings: Settings, worker: str, clock: MovableClock
) -> AsyncIterator[ImageBot]:
    async with open_services(settings, worker, clock=clock) as services:
        bot = ImageBot(services)
        async with run_bot(bot, fake):
            await fake.wait_commands("imagine", "challenge", "styles", "style")
            yield bot


async def advance(bot: ImageBot, clock: MovableClock, seconds: float) -> None:
    """Move time on; rebuilding the schedule maps the new 'now' onto APScheduler's timers, which then fire."""
    clock.offset += seconds
    await bot.services.challenges.rebuild()


async def imagine(fake: FakeDiscord, world: World, user: FakeUser, style: str, count: int = 1) -> Message:
    ix = await fake.send_slash(
        "imagine", {"prompt": "a harbour", "style": style, "count": count}, user=user, channel=world.channel
    )
    return await ix.wait_original(is_result, timeout=60)


async def slash(fake: FakeDiscord, world: World, user: FakeUser, name: str, options: dict[str, Any]) -> str:
    ix = await fake.send_slash(name, options, user=user, channel=world.channel, validate=False)
    return await ephemeral_reply(ix, WAIT)


async def press(fake: FakeDiscord, message: Message, custom_id: str, user: FakeUser) -> str:
    return await ephemeral_reply(await fake.click(message, custom_id, user=user), WAIT)


def job_of(result: Message) -> str:
    return button(result, "reroll").split(":")[2]


async def channel_post(fake: FakeDiscord, channel: FakeChannel, text: str) -> Message:
    def matches(m: Message) -> bool:
        return text in m.content or any(text in (e.get("title") or "") for e in m.embeds)

    return await fake.wait_message(matches, channel=channel, timeout=WAIT)


def vote_id(entry: Message, kind: str = "vote") -> str:
    return next(c for c in entry.custom_ids() if c.startswith(f"brushfire:{kind}:"))


async def quota_description(fake: FakeDiscord, world: World, user: FakeUser) -> str:
    ix = await fake.send_slash("quota", {}, user=user, channel=world.channel)
    card = await ix.wait_message(lambda m: m.ephemeral and m.embed is not None, timeout=WAIT)
    return str(embed_of(card)["description"])


async def test_whole_lifecycle_with_every_refusal(
    fake_discord: FakeDiscord, cs: Settings, shared_worker: str, clock: MovableClock
) -> None:
    fake, w = fake_discord, build_world(fake_discord)
    async with challenge_bot(fake, cs, shared_worker, clock) as bot:
        early = await imagine(fake, w, w.alice, "anime")  # made before the challenge opens
        bad = {**GOOD, "submit_for": "0h"}
        assert "zero" in await slash(fake, w, w.admin, "challenge-admin start", bad)
        assert "negative" in await slash(
            fake, w, w.admin, "challenge-admin start", {**GOOD, "vote_for": "-2h"}
        )
        assert "Manage Server" in await slash(fake, w, w.alice, "challenge-admin start", GOOD)
        assert "is open" in await slash(fake, w, w.admin, "challenge-admin start", GOOD)
        announcement = await channel_post(fake, w.channel, "Challenge: harbours at dawn")
        gallery = fake.thread_of(announcement)
        assert "already has a challenge" in await slash(fake, w, w.admin, "challenge-admin start", GOOD)

        # Entries: by button, through a picker for a several-image result, and by command.
        a1 = await imagine(fake, w, w.alice, "anime")
        assert "entry #1" in await press(fake, a1, button(a1, "submit"), w.alice)
        entry1 = await channel_post(fake, gallery, "Entry #1")
        assert entry1.attachments[0].data.startswith(b"\xff\xd8\xff")  # the server's format: JPEG by default
        assert "alice" not in entry1.content and not entry1.mentions  # anonymous until results
        assert "images you made yourself" in await press(fake, a1, button(a1, "submit"), w.bob)
        assert "already entered" in await press(fake, a1, button(a1, "submit"), w.alice)
        photo = await imagine(fake, w, w.alice, "photo")
        assert "takes `anime`" in await press(fake, photo, button(photo, "submit"), w.alice)
        assert "before the challenge opened" in await slash(
            fake, w, w.alice, "challenge submit", {"job": job_of(early)}
        )
        b2 = await imagine(fake, w, w.bob, "anime", count=2)
        picker_ix = await fake.click(b2, button(b2, "submit"), user=w.bob)
        picker = await picker_ix.wait_message(lambda m: m.ephemeral, timeout=WAIT)
        assert "Which image" in picker.content
        second = next(c for c in picker.custom_ids() if c.endswith(":1"))
        assert "entry #2" in await press(fake, picker, second, w.bob)
        await imagine(fake, w, w.alice, "anime")
        assert "entry #3" in await slash(fake, w, w.alice, "challenge submit", {})  # newest anime image
        entry3 = await channel_post(fake, gallery, "Entry #3")
        a3 = await imagine(fake, w, w.alice, "anime")
        assert "the most images this challenge takes" in await press(fake, a3, button(a3, "submit"), w.alice)
        assert "no entry #2" in await slash(fake, w, w.alice, "challenge withdraw", {"entry": 2})  # bob's
        assert "withdrawn" in await slash(fake, w, w.alice, "challenge withdraw", {"entry": 3})
        await fake.wait_until(lambda: entry3.deleted, WAIT, "withdrawn entry's post deleted")
        assert "entry #4" in await press(fake, a3, button(a3, "submit"), w.alice)
        assert "not started yet" in await press(fake, entry1, vote_id(entry1), w.bob)

        await advance(bot, clock, DAY)
        await channel_post(fake, w.channel, "Voting is open")
        assert "until voting starts" in await slash(fake, w, w.alice, "challenge withdraw", {"entry": 4})
        late = await imagine(fake, w, w.alice, "anime")
        assert "are closed" in await press(fake, late, button(late, "submit"), w.alice)

        # Votes: a double click counts once; not your own; a budget of 2; changeable.
        entry2 = await channel_post(fake, gallery, "Entry #2")
        entry4 = await channel_post(fake, gallery, "Entry #4")
        clicks = await asyncio.gather(*(fake.click(entry1, vote_id(entry1), user=w.bob) for _ in range(2)))
        answers = [await ephemeral_reply(c, WAIT) for c in clicks]
        assert sorted("counted" in a for a in answers) == [False, True]
        assert any("already voted" in a for a in answers)
        assert "own entry" in await press(fake, entry1, vote_id(entry1), w.alice)
        assert "counted" in await press(fake, entry2, vote_id(entry2), w.alice)
        assert "counted" in await press(fake, entry4, vote_id(entry4), w.admin)
        assert "counted" in await press(fake, entry2, vote_id(entry2), w.admin)
        assert "used all 2" in await press(fake, entry1, vote_id(entry1), w.admin)
        assert "taken back" in await press(fake, entry2, vote_id(entry2, "unvote"), w.admin)
        assert "taken back" in await press(fake, entry4, vote_id(entry4, "unvote"), w.admin)
        assert "counted" in await press(fake, entry1, vote_id(entry1), w.admin)
        # Now: entry 1 (alice) 2 votes, entry 2 (bob) 1, entry 4 (alice) 0.

        await advance(bot, clock, DAY)
        results = await channel_post(fake, w.channel, "Results: harbours at dawn")
        places = [f["value"] for f in embed_of(results)["fields"]]
        assert w.alice.mention in places[0] and "+5 bonus" in places[0]
        assert w.bob.mention in places[1] and "+3 bonus" in places[1]
        assert w.alice.mention in places[2] and "bonus" not in places[2]  # no votes, no bonus
        assert results.pings(w.alice) and results.pings(w.bob)
        ranking = await channel_post(fake, gallery, "Final ranking")
        assert ranking.content.index(w.alice.mention) < ranking.content.index(w.bob.mention)
        await fake.wait_until(lambda: w.bob.mention in entry2.content, WAIT, "entry authors revealed")
        assert f"{w.alice.mention} — place 1" in entry1.content
        assert "Voting has closed" in await press(fake, entry4, vote_id(entry4), w.bob)
        assert "(+5 bonus)" in await quota_description(fake, w, w.alice)
        assert "(+3 bonus)" in await quota_description(fake, w, w.bob)

        board = await fake.send_slash("challenge leaderboard", {}, user=w.bob, channel=w.channel)
        card = await board.wait_message(lambda m: m.ephemeral and m.embed is not None, timeout=WAIT)
        lines = embed_of(card)["description"].splitlines()
        assert w.alice.mention in lines[0] and "**13**" in lines[0]  # 10 for first place + 3 for third
        assert w.bob.mention in lines[1] and "**6**" in lines[1]


def stored(settings: Settings, sql: str) -> list[tuple[Any, ...]]:
    with sqlite3.connect(settings.database.path) as conn:
        return conn.execute(sql).fetchall()


async def test_restart_in_each_phase_keeps_everything_and_fires_missed_deadlines(
    fake_discord: FakeDiscord, cs: Settings, shared_worker: str, clock: MovableClock
) -> None:
    fake, w = fake_discord, build_world(fake_discord)
    async with challenge_bot(fake, cs, shared_worker, clock):
        assert "is open" in await slash(fake, w, w.admin, "challenge-admin start", GOOD)
        announcement = await channel_post(fake, w.channel, "Challenge: harbours")
        a = await imagine(fake, w, w.alice, "anime")
        b = await imagine(fake, w, w.bob, "anime")
        assert "entry #1" in await press(fake, a, button(a, "submit"), w.alice)
    gallery = fake.thread_of(announcement)
    async with challenge_bot(fake, cs, shared_worker, clock):  # restarted during submissions
        assert "entry #2" in await press(fake, b, button(b, "submit"), w.bob)  # old result's button works
    clock.offset += DAY + 60  # submissions end while the bot is down
    async with challenge_bot(fake, cs, shared_worker, clock):
        await channel_post(fake, w.channel, "Voting is open")  # at once on start, no waiting for a timer
        entry1 = await channel_post(fake, gallery, "Entry #1")
        entry2 = await channel_post(fake, gallery, "Entry #2")
        assert "counted" in await press(fake, entry1, vote_id(entry1), w.bob)
    async with challenge_bot(fake, cs, shared_worker, clock):  # restarted during voting
        assert "already voted" in await press(fake, entry1, vote_id(entry1), w.bob)  # the vote survived
        assert "counted" in await press(fake, entry1, vote_id(entry1), w.admin)
        assert "counted" in await press(fake, entry2, vote_id(entry2), w.alice)
    clock.offset += DAY + 60  # voting ends while the bot is down
    async with challenge_bot(fake, cs, shared_worker, clock):
        results = await channel_post(fake, w.channel, "Results: harbours")
        assert w.alice.mention in embed_of(results)["fields"][0]["value"]
    async with challenge_bot(fake, cs, shared_worker, clock) as bot:  # restarted after the close
        await bot.services.challenges.rebuild()
        posts = [m for m in fake.messages(w.channel) if m.embed and "Results" in (m.embed.get("title") or "")]
        assert len(posts) == 1  # announced once, not again on each start
        assert "(+5 bonus)" in await quota_description(fake, w, w.alice)
    assert stored(cs, "SELECT COUNT(*) FROM quota_bonus") == [(2,)]  # first and second place, once each
    assert stored(cs, "SELECT COUNT(*) FROM challenge_votes") == [(3,)]
    assert stored(cs, "SELECT phase, announced FROM challenges") == [("closed", "closed")]


async def test_recurring_challenges_start_themselves_and_rotate_themes(
    fake_discord: FakeDiscord, cs: Settings, shared_worker: str, clock: MovableClock
) -> None:
    fake, w = fake_discord, build_world(fake_discord)
    recurring = {"themes": "boats; birds", "style": "anime", "rhythm": "daily", "submit_for": "12h"}
    async with challenge_bot(fake, cs, shared_worker, clock) as bot:
        overlap = await slash(fake, w, w.admin, "challenge-admin schedule", {**recurring, "vote_for": "13h"})
        assert "overlap" in overlap
        assert "will start" in await slash(
            fake, w, w.admin, "challenge-admin schedule", {**recurring, "vote_for": "12h"}
        )
        await channel_post(fake, w.channel, "Challenge: boats")
        again = await slash(fake, w, w.admin, "challenge-admin schedule", {**recurring, "vote_for": "12h"})
        assert "already has a recurring" in again
        await advance(bot, clock, 12 * HOUR)
        await channel_post(fake, w.channel, "Voting is open for **boats**")
        await advance(bot, clock, 12 * HOUR)
        await channel_post(fake, w.channel, "Results: boats")
        await channel_post(fake, w.channel, "Challenge: birds")
        assert "No more" in await slash(fake, w, w.admin, "challenge-admin unschedule", {})
        await advance(bot, clock, DAY)
        await channel_post(fake, w.channel, "Results: birds")
        await advance(bot, clock, DAY)
    themes = stored(cs, "SELECT theme, phase FROM challenges ORDER BY challenge_id")
    assert themes == [("boats", "closed"), ("birds", "closed")]  # none after the schedule stopped


async def test_admins_extend_close_early_and_cancel(
    fake_discord: FakeDiscord, cs: Settings, shared_worker: str, clock: MovableClock
) -> None:
    fake, w = fake_discord, build_world(fake_discord)
    other = fake.add_channel(w.guild, "contest")
    forum = fake.add_channel(w.guild, "gallery", kind=ChannelKind.FORUM)
    async with challenge_bot(fake, cs, shared_worker, clock) as bot:
        # Discord refuses the announcement: no half-made challenge is left behind.
        fake.inject_fault(
            "POST", f"/channels/{w.channel.id}/messages", ApiError(403, 50013, "Missing Permissions")
        )
        assert "could not post the challenge" in await slash(fake, w, w.admin, "challenge-admin start", GOOD)
        fake.inject_fault("POST", "/threads", ApiError(403, 50013, "Missing Permissions"))
        assert "could not post the challenge" in await slash(fake, w, w.admin, "challenge-admin start", GOOD)
        await fake.wait_until(
            lambda: all(m.deleted for m in fake.messages(w.channel, include_deleted=True) if m.embed),
            WAIT,
            "the announcement without a gallery is taken down",
        )
        assert stored(cs, "SELECT COUNT(*) FROM challenges") == [(0,)]
        assert "is open" in await slash(fake, w, w.admin, "challenge-admin start", GOOD)
        announcement = await channel_post(fake, w.channel, "Challenge: harbours")
        inside = await fake.send_slash(
            "challenge-admin start", GOOD, user=w.admin, channel=fake.thread_of(announcement), validate=False
        )
        assert "not a thread" in await ephemeral_reply(inside, WAIT)
        # ...nor the gallery post of an entry: the entry is not kept.
        made = await imagine(fake, w, w.alice, "anime")
        gallery = fake.thread_of(announcement)
        fake.inject_fault(
            "POST", f"/channels/{gallery.id}/messages", ApiError(403, 50013, "Missing Permissions")
        )
        assert "was not entered" in await press(fake, made, button(made, "submit"), w.alice)
        assert stored(cs, "SELECT COUNT(*) FROM challenge_entries") == [(0,)]
        choices = await fake.autocomplete(
            "challenge-admin extend",
            {"by": "1d", "challenge": 0},
            "challenge",
            user=w.admin,
            channel=w.channel,
        )
        assert [c.name for c in choices] == ["#1 harbours at dawn (open for submissions)"]
        assert "zero" in await slash(fake, w, w.admin, "challenge-admin extend", {"by": "0m"})
        assert "Submissions for “harbours at dawn” now close" in await slash(
            fake, w, w.admin, "challenge-admin extend", {"by": "1d"}
        )
        await advance(bot, clock, DAY + 60)  # the old deadline passes: still submissions
        assert not [m for m in fake.messages(w.channel) if "Voting is open" in m.content]
        assert "is now in voting" in await slash(fake, w, w.admin, "challenge-admin close", {})
        await channel_post(fake, w.channel, "Voting is open")
        assert "is now closed" in await slash(fake, w, w.admin, "challenge-admin close", {})
        await channel_post(fake, w.channel, "Results: harbours")
        ix = await fake.send_slash(
            "challenge-admin start",
            {**GOOD, "channel": other},
            user=w.admin,
            channel=w.channel,
            validate=False,
        )
        assert "is open" in await ephemeral_reply(ix, WAIT)
        assert "cancelled" in await slash(fake, w, w.admin, "challenge-admin cancel", {})
        await channel_post(fake, other, "was cancelled")
        # A forum channel: the challenge is a forum post, which is also its gallery and its news.
        ix = await fake.send_slash(
            "challenge-admin start",
            {**GOOD, "channel": forum},
            user=w.admin,
            channel=w.channel,
            validate=False,
        )
        assert "is open" in await ephemeral_reply(ix, WAIT)
        post = next(c for c in fake.channels(w.guild) if c.parent_id == forum.id)
        await channel_post(fake, post, "Challenge: harbours")
        made = await imagine(fake, w, w.bob, "anime")
        assert "entry #1" in await press(fake, made, button(made, "submit"), w.bob)
        await channel_post(fake, post, "Entry #1")
        await advance(bot, clock, DAY)
        await channel_post(fake, post, "Voting is open")
        assert "is now closed" in await slash(fake, w, w.admin, "challenge-admin close", {})
        await channel_post(fake, post, "Results: harbours")
        assert "no challenge running" in await slash(fake, w, w.alice, "challenge submit", {})


async def test_guild_style_presets_in_styles_imagine_and_challenges(
    fake_discord: FakeDiscord, cs: Settings, shared_worker: str, clock: MovableClock
) -> None:
    fake, w = fake_discord, build_world(fake_discord)
    ink = {"name": "harbour-ink", "prompt": "ink drawing of {prompt}, harbour", "description": "Harbour ink"}
    async with challenge_bot(fake, cs, shared_worker, clock):
        assert "{prompt}" in await slash(fake, w, w.admin, "style add", {**ink, "prompt": "no slot"})
        assert "own styles" in await slash(fake, w, w.admin, "style add", {**ink, "name": "anime"})
        assert "no LoRA adapter" in await slash(fake, w, w.admin, "style add", {**ink, "adapter": "nope"})
        assert "Manage Server" in await slash(fake, w, w.alice, "style add", ink)
        assert "Added" in await slash(fake, w, w.admin, "style add", {**ink, "aspect": "16:9"})
        assert "already has" in await slash(fake, w, w.admin, "style add", ink)
        shown = await fake.send_slash("styles", {}, user=w.alice, channel=w.channel)
        card = await shown.wait_message(lambda m: m.ephemeral and m.embed is not None, timeout=WAIT)
        assert "harbour-ink ★" in [f["name"] for f in embed_of(card)["fields"]]
        choices = await fake.autocomplete(
            "imagine", {"prompt": "x", "style": "harb"}, "style", user=w.alice, channel=w.channel
        )
        assert [c.value for c in choices] == ["harbour-ink"]
        assert "is open" in await slash(
            fake, w, w.admin, "challenge-admin start", {**GOOD, "style": "harbour-ink"}
        )
        made = await imagine(fake, w, w.alice, "harbour-ink")
        assert "entry #1" in await press(fake, made, button(made, "submit"), w.alice)
        assert "Removed" in await slash(fake, w, w.admin, "style remove", {"name": "harbour-ink"})
        gone = await fake.send_slash(
            "imagine", {"prompt": "x", "style": "harbour-ink"}, user=w.alice, channel=w.channel
        )
        assert "no style called" in await ephemeral_reply(gone, WAIT)
    (params,) = stored(cs, "SELECT parameters FROM jobs WHERE parameters LIKE '%harbour-ink%'")[0:1]
    assert '"model_prompt": "ink drawing of a harbour, harbour"' in params[0]


@pytest.mark.skipif(not HAVE_PEFT, reason="LoRA adapters need peft")
async def test_a_style_presets_lora_is_switched_on_by_the_worker(
    fake_discord: FakeDiscord, cs: Settings, shared_worker: str, clock: MovableClock
) -> None:
    fake, w = fake_discord, build_world(fake_discord)
    lora = {"name": "ink-lora", "prompt": "ink drawing of {prompt}", "adapter": "ink", "adapter_scale": 0.5}
    async with challenge_bot(fake, cs, shared_worker, clock):
        assert "Added" in await slash(fake, w, w.admin, "style add", lora)
        styled = await imagine(fake, w, w.alice, "ink-lora")
        plain = await imagine(fake, w, w.alice, "anime")
    assert read_metadata(styled.attachments[0].data)["adapter"] == "ink:0.5"
    assert "adapter" not in read_metadata(plain.attachments[0].data)  # switched off again for the next batch
