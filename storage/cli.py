"""What `python run.py db migrate|backup PATH` calls: migrate a database file, or back it up while in use."""

from __future__ import annotations

import logging
from pathlib import Path

from storage.db import Database, DatabaseError, DatabaseSettings, backup_file

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
