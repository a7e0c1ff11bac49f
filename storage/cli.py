"""What `python run.py db migrate|backup PATH|restore PATH` calls: migrate a database file, back it up while
in use, or put a backup back in place of a stopped bot's database."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import sqlite3
from dataclasses import dataclass
from pathlib import Path

from storage.db import Database, DatabaseError, DatabaseSettings, _read_only_uri, backup_file, load_migrations

log = logging.getLogger(__name__)


async def migrate(path: Path) -> int:
    """Create or upgrade the database at `path`; returns its schema version."""
    async with Database.open(DatabaseSettings(path=Path(path))) as db:
        return db.schema_version


async def backup(src: Path, dst: Path) -> None:
    """Copy the database at `src` to `dst` with the online backup API; safe while the bot writes to `src`.

    It opens its own read connection, so it neither migrates nor locks out the running bot.
    """
    src, dst = Path(src), Path(dst)
    if not src.is_file():
        raise DatabaseError(f"no database at {src}")
    if dst.resolve() == src.resolve():
        raise DatabaseError("the backup must go to a different file than the database")
    if dst.is_dir():
        dst = dst / src.name
    await backup_file(src, dst)
    log.debug("backed up %s to %s", src, dst)  # run.py prints the one line a person reads


@dataclass(frozen=True, slots=True)
class Restored:
    """What `restore` did: the backup's schema version, and where the replaced database was kept."""

    schema_version: int
    previous: Path | None


async def restore(backup: Path, live: Path) -> Restored:
    """Replace the database at `live` with the backup at `backup`, after checking the backup.

    The backup must pass `PRAGMA integrity_check` and carry a schema version this brushfire knows (an
    older one is migrated at the next start). The bot and worker must be stopped: while any process has
    the live file open, the restore refuses. The database it replaces is kept as `<live>.bak`.
    """
    return await asyncio.to_thread(_restore, Path(backup), Path(live))


def _restore(backup: Path, live: Path) -> Restored:
    if not backup.is_file():
        raise DatabaseError(f"no backup at {backup}")
    if live.exists() and backup.resolve() == live.resolve():
        raise DatabaseError("the backup to restore must be another file than the database")
    known = len(load_migrations())
    with contextlib.closing(sqlite3.connect(_read_only_uri(backup), uri=True, isolation_level=None)) as src:
        try:
            verdict = src.execute("PRAGMA integrity_check").fetchone()[0]
            version = int(src.execute("PRAGMA user_version").fetchone()[0])
        except sqlite3.DatabaseError as exc:
            raise DatabaseError(f"{backup} is not a SQLite database: {exc}") from None
        if verdict != "ok":
            raise DatabaseError(f"{backup} failed its integrity check: {verdict}")
        if version < 1:
            raise DatabaseError(f"{backup} is not a brushfire database (schema version 0)")
        if version > known:
            raise DatabaseError(
                f"{backup} has schema version {version} but this brushfire knows only {known}; upgrade first"
            )
        live.parent.mkdir(parents=True, exist_ok=True)
        previous = live.with_name(live.name + ".bak") if live.exists() else None
        with contextlib.closing(sqlite3.connect(live, isolation_level=None, timeout=0.5)) as dest:
            # An exclusive lock held to the end: refused while any other process has the file open.
            dest.execute("PRAGMA locking_mode = EXCLUSIVE")
            try:
                dest.execute("BEGIN EXCLUSIVE")
                dest.execute("COMMIT")
            except sqlite3.OperationalError:
                raise DatabaseError(
                    f"{live} is in use; stop the bot and the worker before restoring a backup"
                ) from None
            if previous is not None:
                with contextlib.closing(sqlite3.connect(previous, isolation_level=None)) as keep:
                    dest.backup(keep)
                    keep.execute("PRAGMA journal_mode = DELETE")
            src.backup(dest)  # page by page under the lock: the live file is never half replaced
            if dest.execute("PRAGMA integrity_check").fetchone()[0] != "ok":
                raise DatabaseError(f"{live} failed its integrity check after the restore; see {previous}")
    log.info(
        "restored %s from %s (schema version %d); the previous file is %s", live, backup, version, previous
    )
    return Restored(schema_version=version, previous=previous)
