"""Localisation: complete catalogues for the shipped languages, valid for Discord, and carried by the sync."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest
from babel.messages.pofile import read_po

from bot.core.i18n import Message
from bot.core.settings import Settings
from bot.i18n import (
    LOCALES_DIR,
    SHIPPED_LANGUAGES,
    TEMPLATE,
    Catalogues,
    Context,
    MessageId,
    Translate,
    language_of,
    placeholders,
)
from tests.bot.conftest import free_port
from tests.bot.harness import running_bot
from tests.fakediscord import FakeDiscord
from tools.i18n import all_messages, code_messages, command_messages

# Discord's rule for command and option names (its docs: CHAT_INPUT names), lowercase where a case exists.
NAME = re.compile(r"^[-_\w\u0900-\u097F\u0E00-\u0E7F]{1,32}$")
DESCRIPTION_MAX = 100
DISCORD_LOCALES = {"fr": ("fr",), "de": ("de",), "es": ("es-ES", "es-419")}


@pytest.fixture(scope="module")
def catalogues() -> Catalogues:
    return Catalogues.load()


@pytest.fixture(scope="module")
def template() -> list[tuple[Context, MessageId]]:
    with TEMPLATE.open("rb") as f:
        return all_messages(read_po(f))


async def test_the_template_holds_every_text_the_code_and_the_commands_have(
    template: list[tuple[Context, MessageId]],
) -> None:
    current = set(await command_messages()) | {(c, t) for c, t, _ in code_messages()}
    stale, new = set(template) - current, current - set(template)
    assert not new, f"run `python -m tools.i18n extract`: new texts {sorted(new)[:5]}"
    assert not stale, f"run `python -m tools.i18n extract`: texts no longer used {sorted(stale)[:5]}"


@pytest.mark.parametrize("language", SHIPPED_LANGUAGES)
def test_every_shipped_language_translates_every_message(
    catalogues: Catalogues, template: list[tuple[Context, MessageId]], language: str
) -> None:
    untranslated = [t for c, t in template if catalogues.lookup(language, t, c) is None]
    assert untranslated == [], f"{language} misses {len(untranslated)}: {untranslated[:5]}"


@pytest.mark.parametrize("language", SHIPPED_LANGUAGES)
def test_counting_messages_have_every_form_their_language_needs(
    catalogues: Catalogues, template: list[tuple[Context, MessageId]], language: str
) -> None:
    counting = [text for _, text in template if isinstance(text, tuple)]
    assert counting, "no counting messages: plural support is not exercised"
    rule = catalogues.plural_rules[language]
    needed = 1 + max(Catalogues.plural_index(rule, n) for n in (*range(200), 1_000_000))
    for singular, plural in counting:
        forms = catalogues.forms(language, singular)
        assert forms is not None and len(forms) >= needed, (language, singular, forms)
        for form in forms:
            # Every form says the count where the English plural does; the one-form may leave it out.
            assert placeholders(form) <= placeholders(plural), (language, singular, form)
        assert placeholders(forms[-1]) == placeholders(plural), (language, singular, forms[-1])


@pytest.mark.parametrize("language", SHIPPED_LANGUAGES)
def test_translations_are_valid_where_discord_shows_them(
    catalogues: Catalogues, template: list[tuple[Context, MessageId]], language: str
) -> None:
    for context, text in template:
        if isinstance(text, tuple):
            continue  # counting messages: checked form by form above
        translated = catalogues.lookup(language, text, context)
        if translated is None:
            continue
        if context is Context.NAME:
            assert NAME.match(translated) and translated == translated.lower(), (language, text, translated)
        elif context in (Context.DESCRIPTION, Context.CHOICE):
            assert 1 <= len(translated) <= DESCRIPTION_MAX, (language, text, translated)
        assert placeholders(translated) == placeholders(text), (language, text, translated)


def test_the_catalogue_files_are_the_shipped_languages() -> None:
    assert sorted(p.stem for p in LOCALES_DIR.glob("*.po")) == sorted(SHIPPED_LANGUAGES)


def test_languages_fall_back_from_member_to_server_to_english() -> None:
    catalogues = Catalogues({"fr": {("", "Hello"): "Bonjour {name}"}})
    assert catalogues.choose("fr", "de") == "fr"
    assert catalogues.choose("pt-BR", "fr") == "fr"  # no Portuguese: the server's French
    assert catalogues.choose("ja", None) == "en"
    assert catalogues.choose("en-GB", "fr") == "en"  # English is a language too, not a gap
    assert language_of("es-419") == "es"
    assert catalogues.text("fr", "Hello", name="Ada") == "Bonjour Ada"
    assert catalogues.text("de", "Hello {name}", name="Ada") == "Hello Ada"


def test_plural_forms_follow_each_language_rule() -> None:
    catalogues = Catalogues(
        plurals={"fr": {("", "{count} vote"): ("{count} vote", "{count} de votes", "{count} votes")}},
        plural_rules={"fr": "(n == 0 || n == 1) ? 0 : n != 0 && n % 1000000 == 0 ? 1 : 2"},
    )
    _ = Translate(catalogues, "fr")
    assert [_.ngettext("{count} vote", "{count} votes", n, count=n) for n in (0, 1, 2, 1_000_000)] == [
        "0 vote",  # French counts zero as singular, English does not
        "1 vote",
        "2 votes",
        "1000000 de votes",
    ]
    english = Translate(catalogues, "en")
    assert [english.ngettext("{count} vote", "{count} votes", n, count=n) for n in (0, 1, 2)] == [
        "0 votes",
        "1 vote",
        "2 votes",
    ]


def test_messages_from_the_core_are_translated_with_their_fields() -> None:
    catalogues = Catalogues(
        {"fr": {("", "{what} is empty."): "{what} est vide.", ("", "The instruction"): "La consigne"}}
    )
    message = Message("{what} is empty.", {"what": Message("The instruction")})
    assert Translate(catalogues, "fr").message(message) == "La consigne est vide."
    assert str(message) == "The instruction is empty."  # English, for logs
    # Text a member typed goes in as it is, braces and all: only the template is formatted.
    typed = Message("{what} is empty.", {"what": "a {prompt} of mine"})
    assert Translate(catalogues, "fr").message(typed) == "a {prompt} of mine est vide."


def test_a_broken_translation_falls_back_to_english() -> None:
    catalogues = Catalogues({"fr": {("", "{n} left"): "{m} restants"}})
    assert catalogues.text("fr", "{n} left", n=3) == "3 left"


def localisations(command: dict[str, Any]) -> list[tuple[str, dict[str, str]]]:
    """Every (what, localisations) pair of a synced command payload, options and choices included."""
    found = [
        (f"name {command['name']}", command.get("name_localizations") or {}),
        (f"description of {command['name']}", command.get("description_localizations") or {}),
    ]
    for option in command.get("options", []):
        found += localisations(option)
        for choice in option.get("choices", []):
            found.append((f"choice {choice['name']}", choice.get("name_localizations") or {}))
    return found


async def test_the_synced_commands_carry_french_german_and_spanish(
    fake_discord: FakeDiscord, tmp_path: Path
) -> None:
    settings = Settings(
        database={"path": tmp_path / "bf.sqlite3"},
        discord={"sync_state_file": tmp_path / "sync.sha256", "guild_ready_timeout_s": 0.1},
    )
    async with running_bot(fake_discord, settings, f"http://127.0.0.1:{free_port()}"):
        synced = [c.raw for c in fake_discord.commands()]
    assert {c["name"] for c in synced} >= {"imagine", "edit", "quota"}
    for command in synced:
        for what, localised in localisations(command):
            for language, discord_locales in DISCORD_LOCALES.items():
                for locale in discord_locales:
                    assert localised.get(locale), f"{what}: no {language} ({locale})"
    imagine = next(c for c in synced if c["name"] == "imagine")
    assert imagine["description_localizations"]["fr"] != imagine["description"]
