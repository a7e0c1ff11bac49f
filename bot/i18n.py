"""Localisation: message catalogues (gettext .po files read with Babel), language choice and translating.

Every text a member reads (command names and descriptions, replies, embeds, buttons, errors) is written in
English in the code and looked up here by that English text (gettext's convention), with a context that
tells apart the same words used as a command name and as a description. `bot/locales/brushfire.pot` lists
every such text; `bot/locales/<lang>.po` holds one language's translations. `tools/i18n.py` extracts the
template and merges it into the languages; tests fail when a shipped language misses a message. The core
marks its texts with `bot.core.i18n` (`N_`, `Message`) and never translates; this layer does, per reader.
"""

from __future__ import annotations

import functools
import gettext
import logging
import string
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from enum import StrEnum
from pathlib import Path
from typing import Any, Self

from babel.messages.pofile import read_po

from bot.core.i18n import Message

log = logging.getLogger(__name__)

LOCALES_DIR = Path(__file__).parent / "locales"
TEMPLATE = LOCALES_DIR / "brushfire.pot"
SOURCE_LANGUAGE = "en"
# Languages whose catalogue must be complete (tests check it); others may be added partly translated.
SHIPPED_LANGUAGES = ("fr", "de", "es")


class Context(StrEnum):
    """The gettext message context of a text: names must translate as names, so each kind has its own."""

    NAME = "command name"  # a slash command, group or option name: lowercase, no spaces, 1-32 characters
    DESCRIPTION = "command description"  # a command or option description: 1-100 characters
    CHOICE = "choice"  # a fixed choice's label: 1-100 characters
    MESSAGE = ""  # anything else a member reads (replies, embeds, buttons, errors): no context


# A message as the catalogue knows it: its English text, or (singular, plural) for one that counts something.
MessageId = str | tuple[str, str]
ENGLISH_PLURAL = "(n != 1)"


def language_of(locale: str | None) -> str | None:
    """The language part of a Discord locale ("es-ES" -> "es", "fr" -> "fr"); None for none."""
    if not locale:
        return None
    return str(locale).replace("_", "-").split("-", 1)[0].lower() or None


@dataclass(frozen=True)
class Catalogues:
    """Translations by language, then by (context, English text). Built once at start and passed down."""

    by_language: Mapping[str, Mapping[tuple[str, str], str]] = field(default_factory=dict)
    # Messages that count something: their forms by (context, English singular), and each language's
    # gettext plural rule (a C expression of n, e.g. "(n > 1)" in French) that picks the form.
    plurals: Mapping[str, Mapping[tuple[str, str], tuple[str, ...]]] = field(default_factory=dict)
    plural_rules: Mapping[str, str] = field(default_factory=dict)

    @classmethod
    def load(cls, folder: Path = LOCALES_DIR) -> Catalogues:
        """Read every `<lang>.po` in the folder; entries without a translation (or fuzzy ones) are skipped."""
        by_language: dict[str, dict[tuple[str, str], str]] = {}
        plurals: dict[str, dict[tuple[str, str], tuple[str, ...]]] = {}
        rules: dict[str, str] = {}
        for path in sorted(folder.glob("*.po")):
            with path.open("rb") as f:
                catalog = read_po(f, locale=path.stem)
            entries: dict[tuple[str, str], str] = {}
            forms: dict[tuple[str, str], tuple[str, ...]] = {}
            for message in catalog:
                if not message.id or message.fuzzy:
                    continue
                key_id = message.id if isinstance(message.id, str) else message.id[0]
                if isinstance(message.string, str):
                    if message.string:
                        entries[(message.context or "", key_id)] = message.string
                elif message.string and all(message.string):
                    forms[(message.context or "", key_id)] = tuple(message.string)
            by_language[path.stem] = entries
            plurals[path.stem] = forms
            rules[path.stem] = catalog.plural_expr
            log.debug("loaded %d %s translations", len(entries) + len(forms), path.stem)
        return cls(by_language, plurals, rules)

    @property
    def languages(self) -> tuple[str, ...]:
        return (SOURCE_LANGUAGE, *sorted(self.by_language))

    def choose(self, *locales: str | None) -> str:
        """The first of `locales` (e.g. the member's, then the server's) that has a catalogue; else English."""
        for locale in locales:
            language = language_of(locale)
            if language is not None and (language == SOURCE_LANGUAGE or language in self.by_language):
                return language
        return SOURCE_LANGUAGE

    def lookup(self, language: str, text: MessageId, context: Context = Context.MESSAGE) -> str | None:
        """The translation of `text` (a counting message's first form), or None where this language has
        none (the caller keeps English)."""
        if language == SOURCE_LANGUAGE:
            return None
        if isinstance(text, tuple):
            forms = self.forms(language, text[0], context)
            return forms[0] if forms else None
        return self.by_language.get(language, {}).get((str(context), text))

    def forms(
        self, language: str, singular: str, context: Context = Context.MESSAGE
    ) -> tuple[str, ...] | None:
        """Every form of a counting message in `language`, in the order its plural rule numbers them."""
        return self.plurals.get(language, {}).get((str(context), singular))

    @staticmethod
    def plural_index(rule: str, n: int) -> int:
        """Which form gettext's plural `rule` (a C expression of n) picks for `n`."""
        return int(_plural_index(rule)(n))

    def count_text(self, language: str, singular: str, plural: str, n: int, /, **params: Any) -> str:
        """The form of a counting message that suits `n` in `language`, with its fields filled."""
        forms = self.forms(language, singular) if language != SOURCE_LANGUAGE else None
        english = singular if _plural_index(ENGLISH_PLURAL)(n) == 0 else plural
        chosen = english
        if forms:
            index = _plural_index(self.plural_rules.get(language, ENGLISH_PLURAL))(n)
            chosen = forms[min(index, len(forms) - 1)]
        return _fill(chosen, english, language, params)

    def text(self, language: str, text: str, /, **params: Any) -> str:
        """`text` in `language` (English where untranslated), with `{name}` fields filled from `params`."""
        translated = self.lookup(language, text) or text
        if not params:
            return translated
        return _fill(translated, text, language, params)


def _fill(translated: str, english: str, language: str, params: Mapping[str, Any]) -> str:
    try:
        return translated.format(**params)
    except (KeyError, IndexError, ValueError):
        # A broken translation must never cost a member their reply: fall back to the English text.
        log.warning("translation of %r into %s has bad fields; using English", english, language)
        return english.format(**params)


@functools.cache
def _plural_index(rule: str) -> Callable[[int], int]:
    """gettext's plural rule (from a .po header) as a function of n; the stdlib compiles it safely."""
    return gettext.c2py(rule)


@dataclass(frozen=True, slots=True)
class Translate:
    """Texts in one reader's language: `_(english, **fields)` at a call site, `_.message(m)` for the core's."""

    catalogues: Catalogues
    language: str = SOURCE_LANGUAGE

    def __call__(self, text: str, /, **params: object) -> str:
        fields = {k: self.message(v) if isinstance(v, Message) else v for k, v in params.items()}
        return self.catalogues.text(self.language, text, **fields)

    def ngettext(self, singular: str, plural: str, n: int, /, **params: object) -> str:
        """A text that counts something: `_.ngettext("{count} vote", "{count} votes", n, count=n)`."""
        fields = {k: self.message(v) if isinstance(v, Message) else v for k, v in params.items()}
        return self.catalogues.count_text(self.language, singular, plural, n, **fields)

    def message(self, message: Message) -> str:
        return self(message.template, **message.params)

    def to(self, language: str) -> Self:
        """The same catalogues in another language (e.g. a server's, for a post everyone reads)."""
        return type(self)(self.catalogues, language)


ENGLISH = Translate(Catalogues())


def placeholders(text: str) -> set[str]:
    """The `{name}` fields a text uses (a translation must use the same ones)."""
    return {name for _, name, _, _ in string.Formatter().parse(text) if name}


def missing(
    catalogues: Catalogues, messages: Iterable[tuple[Context, MessageId]], language: str
) -> list[MessageId]:
    """The messages `language` has no translation for."""
    return [text for context, text in messages if catalogues.lookup(language, text, context) is None]
