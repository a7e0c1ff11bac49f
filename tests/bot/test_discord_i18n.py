"""Replies in the member's own language, end to end: the real bot on the fake Discord, the real tiny worker.

Members and servers carry Discord locales (`interaction.locale`, `guild_locale`): a French member gets French
refusals, /quota, result embeds and buttons; a German member German; a member whose language brushfire does
not ship gets the server's, else English. What members typed (prompts) is never translated.
"""

from __future__ import annotations

import sqlite3
from typing import Any

import pytest

from bot.core.settings import Settings
from bot.core.styles import StylePreset
from tests.bot.harness import admin_do, build_world, embed_of, ephemeral_reply, is_result, running_bot
from tests.fakediscord import FakeChannel, FakeDiscord, FakeUser, Message

SLOW = {"prompt": "un phare lent", "style": "slow"}


@pytest.fixture
def slow_settings(settings: Settings) -> Settings:
    styles = [*settings.styles, StylePreset(name="slow", description="many steps", steps=120)]
    limits = settings.limits.model_copy(update={"worker_grace_s": 1.0, "progress_interval_s": 0.3})
    return settings.model_copy(update={"styles": styles, "limits": limits})


def fields(message: Message) -> dict[str, str]:
    assert message.embed is not None
    return {f["name"]: f["value"] for f in embed_of(message)["fields"]}


def labels(message: Message) -> dict[str, str]:
    """Button labels by action (`brushfire:<action>:...`)."""
    found: dict[str, str] = {}
    for component in message.walk_components():
        if "custom_id" in component:
            found.setdefault(component["custom_id"].split(":")[1], component.get("label", ""))
    return found


async def refusal(fake: FakeDiscord, user: FakeUser, channel: FakeChannel, options: dict[str, Any]) -> str:
    inter = await fake.send_slash("imagine", options, user=user, channel=channel, validate=False)
    return await ephemeral_reply(inter)


async def test_a_french_member_gets_french_replies_in_an_english_server(
    fake_discord: FakeDiscord, settings: Settings, worker: str
) -> None:
    world = build_world(fake_discord)
    marie = fake_discord.add_user("marie", locale="fr")
    fake_discord.add_member(world.guild, marie)
    async with running_bot(fake_discord, settings, worker):
        # Refusals from the core, in French, with the member's own words left as typed.
        assert await refusal(fake_discord, marie, world.channel, {"prompt": "   "}) == (
            "Le prompt est vide (rien de visible) : décrivez ce que vous voulez voir."
        )
        assert "Saved" in await admin_do(fake_discord, world, "settings block-word", {"word": "gore"})
        assert await refusal(fake_discord, marie, world.channel, {"prompt": "du GORE ici"}) == (
            "Le prompt contient `gore`, ce que ce serveur n'autorise pas."
        )
        no_style = await refusal(fake_discord, marie, world.channel, {"prompt": "x", "style": "néant"})
        assert no_style.startswith("Il n'y a pas de style nommé `néant`. Essayez l'un de ceux-ci : ")
        # An admin-only command refused by the Discord layer's own check.
        denied = await fake_discord.send_slash(
            "quota-admin grant",
            {"user": marie, "credits": 5},
            user=marie,
            channel=world.channel,
            validate=False,
        )
        assert await ephemeral_reply(denied) == (
            "Seuls les membres avec « Gérer le serveur » peuvent modifier les crédits."
        )

        # /quota: title, description and field names in French.
        inter = await fake_discord.send_slash("quota", {}, user=marie, channel=world.channel)
        quota = await inter.wait_message(lambda m: m.ephemeral and m.embed)
        assert embed_of(quota)["title"] == "Crédits de marie"
        assert embed_of(quota)["description"] == "**50** sur **50** crédits restants"
        assert {"Période", "Prochain crédit de retour", "Palier", "File relax"} <= set(fields(quota))
        assert fields(quota)["Période"] == "glissante de 1 jour"

        # A result: the embed's field names and values, the footer and the buttons are French; the prompt
        # (the embed's title) is what marie typed.
        inter = await fake_discord.send_slash(
            "imagine", {"prompt": "un renard roux", "seed": 7}, user=marie, channel=world.channel
        )
        result = await inter.wait_original(is_result, timeout=60)
        assert embed_of(result)["title"] == "un renard roux"
        shown = fields(result)
        assert {"Style", "Graine", "Taille", "Modèle", "Étapes", "Coût", "Durée"} <= set(shown)
        assert shown["Style"] == "aucun" and shown["Graine"] == "7"
        assert shown["Coût"] == "1 crédit, file rapide"  # singular: French plural rules, not English
        assert embed_of(result)["footer"]["text"].endswith(" · imaginer")
        assert embed_of(result)["footer"]["text"].startswith("tâche ")
        # A single picture: Vary and both Upscales have words for labels, in French too.
        assert labels(result) == {
            "reroll": "Relancer",
            "edit": "Modifier",
            "delete": "Supprimer",
            "submit": "Participer au défi",
            "vary": "Varier",
            "upscale": "Agrandir (subtil)",
            "upscale-creative": "Agrandir (créatif)",
            "zoom": "Dézoomer 1.5x (2.25x les crédits)",
            "region": "Varier une zone",
            "paninfo": "Étendre (1.5x les crédits) :",
            "pan": "",  # arrows only
        }
        # The Edit button's modal is French too.
        edit_id = next(c for c in result.custom_ids() if c.startswith("brushfire:edit:"))
        opener = await fake_discord.click(result, edit_id, user=marie)
        assert (await opener.wait_response()).type == 9
        assert opener.modal["title"] == "Modifier cette image"
        # An error raised by the core for a button press: bob may not delete marie's image (in English, his).
        delete_id = next(c for c in result.custom_ids() if c.startswith("brushfire:delete:"))
        bob_press = await fake_discord.click(result, delete_id, user=world.bob)
        assert await ephemeral_reply(bob_press) == (
            "Only the person who made this image, or an admin, can delete it."
        )
        gael = fake_discord.add_user("gael", locale="fr")
        fake_discord.add_member(world.guild, gael)
        gael_press = await fake_discord.click(result, delete_id, user=gael)
        assert await ephemeral_reply(gael_press) == (
            "Seul l'auteur de cette image, ou un administrateur, peut la supprimer."
        )

        # The same server in English for alice.
        inter = await fake_discord.send_slash("quota", {}, user=world.alice, channel=world.channel)
        english = await inter.wait_message(lambda m: m.ephemeral and m.embed)
        assert embed_of(english)["title"] == "Credits for alice" and "Window" in fields(english)


async def test_a_german_member_gets_german_replies(
    fake_discord: FakeDiscord, settings: Settings, worker: str
) -> None:
    world = build_world(fake_discord)
    jonas = fake_discord.add_user("jonas", locale="de")
    fake_discord.add_member(world.guild, jonas)
    async with running_bot(fake_discord, settings, worker):
        assert await refusal(fake_discord, jonas, world.channel, {"prompt": "x", "seed": -5}) == (
            "Der Seed muss zwischen 0 und 4294967287 liegen, nicht -5."
        )
        inter = await fake_discord.send_slash("quota", {}, user=jonas, channel=world.channel)
        quota = await inter.wait_message(lambda m: m.ephemeral and m.embed)
        assert embed_of(quota)["title"] == "Credits von jonas"
        assert embed_of(quota)["description"] == "**50** von **50** Credits übrig"
        assert fields(quota)["Relax-Warteschlange"].startswith("offen (0")
        # A quota refusal from the core's ledger, with its fields, in German.
        await admin_do(fake_discord, world, "quota-admin set-default", {"limit": 1})
        await admin_do(fake_discord, world, "settings relax", {"enabled": False})
        first = await fake_discord.send_slash(
            "imagine", {"prompt": "eins"}, user=jonas, channel=world.channel
        )
        await first.wait_original(is_result, timeout=60)
        text = await refusal(fake_discord, jonas, world.channel, {"prompt": "zwei"})
        assert text.startswith("Dieser Auftrag kostet 1, aber du hast nur noch 0 von deinen 1 Credits.")
        assert "Der nächste Credit kommt <t:" in text


async def test_an_unshipped_language_falls_back_to_the_server_then_english(
    fake_discord: FakeDiscord, settings: Settings, worker: str
) -> None:
    world = build_world(fake_discord)
    french_server = fake_discord.add_guild("Club d'art", owner=world.admin, preferred_locale="fr")
    atelier = fake_discord.add_channel(french_server, "atelier")
    japanese_server = fake_discord.add_guild("Art Club JP", owner=world.admin, preferred_locale="ja")
    studio = fake_discord.add_channel(japanese_server, "studio")
    joao = fake_discord.add_user("joao", locale="pt-BR")  # brushfire ships no Portuguese
    for guild in (french_server, japanese_server):
        fake_discord.add_member(guild, joao)
    async with running_bot(fake_discord, settings, worker):
        assert await refusal(fake_discord, joao, atelier, {"prompt": ""}) == (
            "Le prompt est vide (rien de visible) : décrivez ce que vous voulez voir."
        )
        assert await refusal(fake_discord, joao, studio, {"prompt": ""}) == (
            "The prompt is empty (nothing visible in it): describe what you want to see."
        )


async def test_a_result_after_a_restart_keeps_its_members_language(
    fake_discord: FakeDiscord, slow_settings: Settings, worker: str
) -> None:
    """The bot restarts mid-job: the new one has no interaction, only the job's row, and still answers in
    the language of the member who asked (kept with the job), not the server's English."""
    world = build_world(fake_discord)
    lucia = fake_discord.add_user("lucia", locale="es-ES")
    fake_discord.add_member(world.guild, lucia)
    async with running_bot(fake_discord, slow_settings, worker):
        inter = await fake_discord.send_slash("imagine", SLOW, user=lucia, channel=world.channel)
        progress = await inter.wait_original(lambda m: "Dibujando: paso" in m.content, timeout=30)
        assert labels(progress) == {"cancel": "Cancelar"}
    with sqlite3.connect(slow_settings.database.path) as conn:
        assert conn.execute("SELECT language FROM jobs").fetchall() == [("es",)]
    async with running_bot(fake_discord, slow_settings, worker):
        result = await inter.wait_original(is_result, timeout=60)
        assert {"Semilla", "Coste"} <= set(fields(result))
        assert labels(result)["reroll"] == "Repetir"
