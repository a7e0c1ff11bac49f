"""A small real discord.py bot that uses every feature the fake serves; the fake's own tests drive it."""

import asyncio
import hashlib
import io
import logging
import sys
from dataclasses import dataclass, field
from typing import Any, Self

import discord
from discord import app_commands
from discord.ext import commands

from bot.endpoints import use_discord_endpoints

log = logging.getLogger(__name__)

PNG = (
    b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR\x00\x00\x00\x01\x00\x00\x00\x01\x08\x02\x00\x00\x00\x90wS\xde"
    b"\x00\x00\x00\x0cIDATx\x9cc\xf8\xcf\xc0\x00\x00\x03\x01\x01\x00\xc9\xfe\x92\xef\x00\x00\x00\x00IEND\xaeB`\x82"
)
STYLES = ["anime", "oil painting", "photo", "pixel art", "watercolor"]


@dataclass
class Journal:
    """What the sample bot did, for tests to assert on; shared by the bot instances of one test."""

    downloads: list[bytes] = field(default_factory=list)
    progress_stopped: list[str] = field(default_factory=list)
    progress_stop: asyncio.Event = field(default_factory=asyncio.Event)
    fallbacks: list[str] = field(default_factory=list)
    release_slow: asyncio.Event = field(default_factory=asyncio.Event)
    generation: int = 0


class Reroll(discord.ui.DynamicItem[discord.ui.Button[Any]], template=r"sample:reroll:(?P<job>[0-9]+)"):
    """A persistent button: the job id lives in the custom_id, so it works after a restart."""

    def __init__(self, job: int) -> None:
        button: discord.ui.Button[Any] = discord.ui.Button(
            label="Re-roll", style=discord.ButtonStyle.primary, custom_id=f"sample:reroll:{job}"
        )
        super().__init__(button)
        self.job = job

    @classmethod
    async def from_custom_id(
        cls, interaction: discord.Interaction, item: discord.ui.Item[Any], match: Any
    ) -> Self:
        return cls(int(match["job"]))

    async def callback(self, interaction: discord.Interaction) -> None:
        await interaction.response.send_modal(EditModal(self.job))


class EditModal(discord.ui.Modal, title="Edit the picture"):
    """Opened by the Re-roll button; its submit rewrites the message the button was on."""

    instruction: discord.ui.TextInput[Any] = discord.ui.TextInput(
        label="Instruction", custom_id="instruction"
    )

    def __init__(self, job: int) -> None:
        super().__init__(custom_id=f"sample:edit:{job}")
        self.job = job

    async def on_submit(self, interaction: discord.Interaction) -> None:
        journal: Journal = interaction.client.journal  # type: ignore[attr-defined]
        await interaction.response.edit_message(
            content=f"job {self.job} edited: {self.instruction.value} (by bot #{journal.generation})"
        )


class SampleBot(commands.Bot):
    """The sample bot; `journal` is handed in so a restarted instance shares it."""

    def __init__(self, journal: Journal) -> None:
        super().__init__(command_prefix="!", intents=discord.Intents.default(), guild_ready_timeout=0.05)
        self.journal = journal
        journal.generation += 1

    async def setup_hook(self) -> None:
        self.add_dynamic_items(Reroll)
        for command in _commands():
            self.tree.add_command(command)
        await self.tree.sync()


def _commands() -> list[app_commands.Command[Any, Any, Any] | app_commands.Group]:
    return [
        draw,
        fail,
        inspect,
        announce,
        dm,
        progress,
        slow,
        admin,
        whois,
        gallery,
        big,
        styles,
        feedback,
        oops,
    ]


async def _style_choices(interaction: discord.Interaction, current: str) -> list[app_commands.Choice[str]]:
    return [app_commands.Choice(name=s, value=s) for s in STYLES if current.lower() in s][:25]


@app_commands.command(description="Draw a picture")
@app_commands.autocomplete(style=_style_choices)
async def draw(
    interaction: discord.Interaction,
    prompt: str,
    count: app_commands.Range[int, 1, 4] = 1,
    style: str = "photo",
    scale: float = 7.5,
    hd: bool = False,
) -> None:
    """Defer, then send a follow-up with a PNG, an embed and a persistent button."""
    await interaction.response.defer()
    embed = discord.Embed(title=prompt, description=f"{count} x {style}, scale {scale}, hd {hd}")
    view = discord.ui.View(timeout=None)
    view.add_item(Reroll(interaction.id))
    await interaction.followup.send(embed=embed, file=discord.File(io.BytesIO(PNG), "result.png"), view=view)


@app_commands.command(description="Defers publicly, then refuses privately")
async def oops(interaction: discord.Interaction) -> None:
    """Delete the public placeholder first, or the refusal would take its place publicly."""
    await interaction.response.defer(thinking=True)
    await interaction.delete_original_response()
    await interaction.followup.send("Refused after all.", ephemeral=True)


@app_commands.command(description="Always refuses")
async def fail(interaction: discord.Interaction) -> None:
    await interaction.response.send_message("That prompt is not allowed.", ephemeral=True)


@app_commands.command(description="Read an attachment")
async def inspect(interaction: discord.Interaction, image: discord.Attachment) -> None:
    data = await image.read()
    interaction.client.journal.downloads.append(data)  # type: ignore[attr-defined]
    digest = hashlib.sha256(data).hexdigest()[:12]
    await interaction.response.send_message(f"{image.filename} {image.content_type} {len(data)} {digest}")


@app_commands.command(description="Post in the channel and open a thread")
async def announce(interaction: discord.Interaction, text: str) -> None:
    await interaction.response.defer(ephemeral=True, thinking=True)
    assert isinstance(interaction.channel, discord.TextChannel)
    async with interaction.channel.typing():
        message = await interaction.channel.send(text, file=discord.File(io.BytesIO(PNG), "cover.png"))
    thread = await message.create_thread(name="gallery")
    await thread.send("first picture", file=discord.File(io.BytesIO(PNG), "one.png"))
    await interaction.followup.send(f"posted {message.id} in thread {thread.id}", ephemeral=True)


@app_commands.command(description="DM someone")
async def dm(interaction: discord.Interaction, who: discord.User, text: str) -> None:
    try:
        await who.send(text)
    except discord.Forbidden as exc:
        await interaction.response.send_message(f"cannot DM {who.name}: {exc.code}", ephemeral=True)
        return
    await interaction.response.send_message("sent", ephemeral=True)


@app_commands.command(description="A progress message that updates until deleted")
async def progress(interaction: discord.Interaction, steps: int, in_channel: bool = False) -> None:
    """Edit a progress message (a follow-up, or a channel post) until done or deleted."""
    await interaction.response.defer()
    channel = interaction.channel
    assert isinstance(channel, discord.TextChannel)
    message = await (channel.send("step 0") if in_channel else interaction.followup.send("step 0", wait=True))
    journal: Journal = interaction.client.journal  # type: ignore[attr-defined]
    for step in range(1, steps + 1):
        await asyncio.sleep(0.02)
        try:
            await message.edit(content=f"step {step}")
        except discord.NotFound as exc:
            journal.progress_stopped.append(f"{exc.code} at step {step}")
            journal.progress_stop.set()
            return
    original = await interaction.original_response()
    await original.edit(
        content=f"done after {steps}", attachments=[discord.File(io.BytesIO(PNG), "final.png")]
    )


@app_commands.command(description="Look a member up through the REST API")
async def whois(interaction: discord.Interaction, who: discord.User) -> None:
    assert interaction.guild is not None
    member = await interaction.guild.fetch_member(who.id)
    roles = await interaction.guild.fetch_roles()
    user = await interaction.client.fetch_user(who.id)
    names = sorted(r.name for r in roles if r.id in {x.id for x in member.roles} and not r.is_default())
    await interaction.response.send_message(f"{user.name}: {', '.join(names) or 'no roles'}")


@app_commands.command(description="Post a gallery in the forum")
async def gallery(interaction: discord.Interaction, title: str) -> None:
    await interaction.response.defer(thinking=True)
    assert interaction.guild is not None
    forum = next(c for c in interaction.guild.channels if isinstance(c, discord.ForumChannel))
    files = [discord.File(io.BytesIO(PNG), f"{i}.png") for i in range(3)]
    created = await forum.create_thread(name=title, content="three pictures", files=files)
    await created.thread.send("and one more", file=discord.File(io.BytesIO(PNG), "3.png"))
    await interaction.followup.send(f"gallery {created.thread.id}")


@app_commands.command(description="Upload a big file")
async def big(interaction: discord.Interaction, mib: int) -> None:
    await interaction.response.defer()
    data = PNG + bytes(mib * 1024 * 1024)
    try:
        await interaction.followup.send(file=discord.File(io.BytesIO(data), "big.png"))
    except discord.HTTPException as exc:
        await interaction.followup.send(f"too big: {exc.status} {exc.code}", ephemeral=True)


class Picker(discord.ui.View):
    """A select menu; the choice is written back into the message."""

    def __init__(self) -> None:
        super().__init__(timeout=None)

    @discord.ui.select(custom_id="sample:pick", options=[discord.SelectOption(label=s) for s in STYLES])
    async def pick(self, interaction: discord.Interaction, select: discord.ui.Select[Any]) -> None:
        await interaction.response.defer()
        assert interaction.message is not None
        await interaction.message.edit(content=f"picked {', '.join(select.values)}")


@app_commands.command(description="Choose a style from a menu")
async def styles(interaction: discord.Interaction) -> None:
    await interaction.response.send_message("pick one", view=Picker())


@app_commands.command(description="Finishes after the token has expired")
async def slow(interaction: discord.Interaction) -> None:
    await interaction.response.defer()
    journal: Journal = interaction.client.journal  # type: ignore[attr-defined]
    await journal.release_slow.wait()
    try:
        await interaction.followup.send("finished", file=discord.File(io.BytesIO(PNG), "late.png"))
    except discord.HTTPException as exc:
        journal.fallbacks.append(f"{exc.status} {exc.code}")
        assert interaction.channel is not None and hasattr(interaction.channel, "send")
        await interaction.channel.send(
            f"{interaction.user.mention} finished", file=discord.File(io.BytesIO(PNG), "late.png")
        )


admin = app_commands.Group(
    name="admin", description="Admin tools", default_permissions=discord.Permissions(manage_guild=True)
)


@admin.command(name="grant", description="Grant credits")
async def grant(
    interaction: discord.Interaction, member: discord.Member, amount: int, role: discord.Role | None = None
) -> None:
    if not interaction.permissions.manage_guild:
        await interaction.response.send_message("Manage Server needed.", ephemeral=True)
        return
    where = f" ({role.name})" if role else ""
    await interaction.response.send_message(f"granted {amount} to {member.display_name}{where}")


quota = app_commands.Group(name="quota", description="Quota tools", parent=admin)


@quota.command(name="reset", description="Reset a member's quota in a channel")
async def reset(
    interaction: discord.Interaction, member: discord.Member, channel: discord.TextChannel
) -> None:
    await interaction.response.send_message(f"reset {member.name} in #{channel.name} ({channel.id})")


class FeedbackModal(discord.ui.Modal, title="Feedback"):
    """A modal with labelled inputs (discord.py 2.6+): a text input and a select."""

    comment: discord.ui.Label[Any] = discord.ui.Label(
        text="Comment", component=discord.ui.TextInput(custom_id="comment", max_length=50)
    )
    mood: discord.ui.Label[Any] = discord.ui.Label(
        text="Mood",
        component=discord.ui.Select(
            custom_id="mood", options=[discord.SelectOption(label=m) for m in ("happy", "sad")]
        ),
    )

    async def on_submit(self, interaction: discord.Interaction) -> None:
        text = self.comment.component
        select = self.mood.component
        assert isinstance(text, discord.ui.TextInput) and isinstance(select, discord.ui.Select)
        await interaction.response.send_message(f"{text.value} / {', '.join(select.values)}", ephemeral=True)


@app_commands.command(description="Open a feedback form")
async def feedback(interaction: discord.Interaction) -> None:
    await interaction.response.send_modal(FeedbackModal())


def main() -> None:
    """Run the sample bot in its own process: ``python -m tests.fakediscord.sample_bot API_BASE GATEWAY TOKEN``."""
    api_base, gateway_url, token = sys.argv[1:4]
    logging.basicConfig(level=logging.WARNING)
    use_discord_endpoints(api_base, gateway_url)
    SampleBot(Journal()).run(token, log_handler=None)


if __name__ == "__main__":
    main()
