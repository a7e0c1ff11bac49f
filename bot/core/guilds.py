"""The guild service: a server's settings and its own style presets, changed only through these verbs."""

from __future__ import annotations

import logging
import time
from collections import OrderedDict
from collections.abc import Callable
from typing import Any

from bot.core.errors import InvalidInput
from bot.core.i18n import N_, Message
from bot.core.styles import StyleBook, StylePreset
from storage import guilds
from storage import styles as guild_styles
from storage.db import Database
from storage.guilds import GuildSettings
from storage.styles import MAX_GUILD_STYLES, GuildStyleExists, GuildStyleRecord, TooManyGuildStyles

log = logging.getLogger(__name__)

# Guilds whose settings stay cached (each a few hundred bytes); the least recently used go past this.
SETTINGS_CACHE = 4096


class GuildService:
    """Reads and changes guild settings (audited) and the guild's style presets (`/style add`).

    Settings are read on every job and change only through `update` (this service is their one writer),
    so they are cached: a job costs no database read for them.
    """

    def __init__(
        self,
        db: Database,
        styles: StyleBook,
        switchable_adapters: frozenset[str],
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.styles = styles  # the configured presets and aspects every guild starts from
        self._switchable_adapters = switchable_adapters
        self._db = db
        self._clock = clock
        self._cache: OrderedDict[int, GuildSettings] = OrderedDict()
        self._writes = 0  # bumped by every change, so a read that overlapped one is not cached

    async def settings(self, guild_id: int) -> GuildSettings:
        if (cached := self._cache.get(guild_id)) is not None:
            self._cache.move_to_end(guild_id)
            return cached
        writes = self._writes
        async with self._db.transaction(write=False) as tx:
            found = await guilds.get(tx, guild_id)
        if writes == self._writes:
            self._remember(found)
        return found

    async def update(self, guild_id: int, actor_id: int, **changes: Any) -> GuildSettings:
        """Change some settings (names as in `GuildSettings`), audited as `actor_id`'s change."""
        self._writes += 1
        self._cache.pop(guild_id, None)
        try:
            async with self._db.transaction() as tx:
                new = await guilds.update(tx, guild_id, actor_id, self._clock(), **changes)
        except ValueError as exc:
            raise InvalidInput(N_("That setting was not changed: {reason}."), reason=str(exc)) from None
        self._writes += 1
        self._remember(new)
        return new

    def _remember(self, found: GuildSettings) -> None:
        self._cache[found.guild_id] = found
        self._cache.move_to_end(found.guild_id)
        while len(self._cache) > SETTINGS_CACHE:
            self._cache.popitem(last=False)

    async def style_book(self, guild_id: int) -> StyleBook:
        """The configured presets plus the guild's own (`/style add`); bad stored rows are skipped."""
        if not guild_id:
            return self.styles
        async with self._db.transaction(write=False) as tx:
            records = await guild_styles.list_for(tx, guild_id)
        presets = []
        for record in records:
            try:
                presets.append(StylePreset.from_record(record))
            except ValueError as exc:
                log.warning("guild %d style %r is unusable: %s", guild_id, record.name, exc)
        return self.styles.with_guild(presets)

    async def add_style(self, guild_id: int, actor_id: int, preset: StylePreset) -> StylePreset:
        """Add a preset of the guild's own: not shadowing a built-in one, with a known aspect and adapter."""
        book = await self.style_book(guild_id)
        if preset.name in {s.name for s in book.styles} and preset.name not in book.guild_names:
            raise InvalidInput(
                N_("`{name}` is one of brushfire's own styles; pick another name."), name=preset.name
            )
        if preset.aspect is not None:
            book.aspect(preset.aspect)
        known = self._switchable_adapters
        if preset.adapter is not None and preset.adapter not in known:
            listed = ", ".join(sorted(known)) or Message(N_("none are configured"))
            raise InvalidInput(
                N_("The worker has no LoRA adapter called `{name}` ({known})."),
                name=preset.adapter[:50],
                known=listed,
            )
        record = GuildStyleRecord(
            guild_id=guild_id, created_by=actor_id, **preset.model_dump(exclude={"name"}), name=preset.name
        )
        try:
            async with self._db.transaction() as tx:
                await guild_styles.add(tx, record, self._clock())
        except GuildStyleExists:
            raise InvalidInput(
                N_("This server already has a style called `{name}`; remove it first."), name=preset.name
            ) from None
        except TooManyGuildStyles:
            raise InvalidInput(
                N_("That style was not added: a server can have at most {max} styles of its own."),
                max=MAX_GUILD_STYLES,
            ) from None
        return preset

    async def remove_style(self, guild_id: int, name: str) -> str:
        """Remove one of the guild's own presets; returns the name as stored."""
        key = name.strip().lower()
        async with self._db.transaction() as tx:
            removed = await guild_styles.remove(tx, guild_id, key)
        if not removed:
            raise InvalidInput(N_("This server has no style of its own called `{name}`."), name=name[:50])
        return key
