"""Keep the message catalogues in step with the code: extract the template, merge it into each language.

    python -m tools.i18n extract     # bot/locales/brushfire.pot from the commands and the marked messages,
                                     # then add new texts (untranslated) to every bot/locales/<lang>.po
    python -m tools.i18n check       # list what each shipped language has not translated (exit 1 if any)

Two sources make the template: every name, description and choice that a command sync sends to Discord
(read from the real command tree through a recording translator, so nothing the sync sends is missed), and
every text in bot/ and cogs/ marked for translation with `_("...")`, `N_("...")` or, for a text that counts
something, `_.ngettext("{count} vote", "{count} votes", n, count=n)` (Babel's extractor).
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from babel.messages.catalog import Catalog
from babel.messages.extract import extract_from_dir
from babel.messages.pofile import read_po, write_po

from bot.i18n import LOCALES_DIR, SHIPPED_LANGUAGES, TEMPLATE, Catalogues, Context, MessageId, missing

ROOT = Path(__file__).resolve().parents[1]
# _(text, **fields), the no-op marker N_(text), and _.ngettext(singular, plural, n, **fields)
KEYWORDS: dict[str, Any] = {"_": None, "N_": None, "ngettext": (1, 2)}
SOURCE_DIRS = ("bot", "cogs")


async def command_messages() -> list[tuple[Context, str]]:
    """The command tree's texts, from a real ImageBot with every cog loaded (nothing connects)."""
    from bot.client import EXTENSIONS, ImageBot
    from bot.core.services import open_services
    from bot.core.settings import Settings
    from bot.translator import command_texts
    from storage.db import DatabaseSettings

    with tempfile.TemporaryDirectory() as tmp:
        settings = Settings(database=DatabaseSettings(path=Path(tmp) / "extract.sqlite3"))
        async with open_services(settings, "http://127.0.0.1:9") as services:
            bot = ImageBot(services, catalogues=Catalogues())
            for extension in EXTENSIONS:
                await bot.load_extension(extension)
            try:
                return await command_texts(bot.tree)
            finally:
                await bot.close()


def code_messages() -> list[tuple[Context, MessageId, str]]:
    """(context, text or (singular, plural), "file:line") of every marked text in the code."""
    found: list[tuple[Context, MessageId, str]] = []
    for folder in SOURCE_DIRS:
        for filename, lineno, message, _comments, _context in extract_from_dir(
            ROOT / folder, method_map=[("**.py", "python")], keywords=KEYWORDS
        ):
            text: MessageId = message if isinstance(message, str) else (str(message[0]), str(message[1]))
            found.append((Context.MESSAGE, text, f"{folder}/{filename}:{lineno}"))
    return found


def template(
    commands: Sequence[tuple[Context, str]], marked: Sequence[tuple[Context, MessageId, str]]
) -> Catalog:
    catalog = Catalog(project="brushfire", fuzzy=False)
    for context, text in commands:
        catalog.add(text, context=str(context), auto_comments=[f"Discord: {context.value}"])
    for context, message, where in marked:
        existing = catalog.get(message, context=str(context) or None)
        if existing is not None:
            existing.locations.append((where.rsplit(":", 1)[0], int(where.rsplit(":", 1)[1])))
        else:
            catalog.add(message, locations=[(where.rsplit(":", 1)[0], int(where.rsplit(":", 1)[1]))])
    return catalog


def all_messages(catalog: Catalog) -> list[tuple[Context, MessageId]]:
    return [
        (Context(m.context or ""), m.id if isinstance(m.id, str) else (str(m.id[0]), str(m.id[1])))
        for m in catalog
        if m.id
    ]


def extract() -> int:
    catalog = template(asyncio.run(command_messages()), code_messages())
    LOCALES_DIR.mkdir(parents=True, exist_ok=True)
    with TEMPLATE.open("wb") as f:
        write_po(f, catalog, width=110, omit_header=True)  # no header: no date churn
    for language in SHIPPED_LANGUAGES:
        path = LOCALES_DIR / f"{language}.po"
        if path.exists():
            with path.open("rb") as f:
                translations = read_po(f, locale=language)
        else:
            translations = Catalog(locale=language, project="brushfire")
        translations.update(catalog, no_fuzzy_matching=True)
        with path.open("wb") as f:
            write_po(f, translations, width=110, ignore_obsolete=True)
    print(f"{TEMPLATE.relative_to(ROOT)}: {len(catalog)} messages")
    return 0


def check() -> int:
    with TEMPLATE.open("rb") as f:
        messages = all_messages(read_po(f))
    catalogues = Catalogues.load()
    status = 0
    for language in SHIPPED_LANGUAGES:
        gaps = missing(catalogues, messages, language)
        print(f"{language}: {len(messages) - len(gaps)}/{len(messages)} translated")
        for text in gaps:
            print(f"  missing: {text!r}")
        status = status or int(bool(gaps))
    return status


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m tools.i18n", description=__doc__.splitlines()[0])
    parser.add_argument("action", choices=["extract", "check"])
    args = parser.parse_args(argv)
    return extract() if args.action == "extract" else check()


if __name__ == "__main__":
    sys.exit(main())
