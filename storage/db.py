"""The SQLite database: one connection on its own thread in WAL mode, numbered migrations, grouped transactions."""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import os
import sqlite3
from collections.abc import AsyncIterator, Callable, Iterable, Sequence
from concurrent.futures import ThreadPoolExecutor
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

from pydantic import BaseModel, ConfigDict, Field

log = logging.getLogger(__name__)

MIGRATIONS_DIR = Path(__file__).parent / "migrations"

Params = Sequence[Any] | dict[str, Any]
T = TypeVar("T")


class DatabaseSettings(BaseModel):
    """Where the database lives, how long writers wait for each other, and the nightly backup."""

    model_config = ConfigDict(extra="forbid")

    path: Path = Path("data/brushfire.sqlite3")
    busy_timeout_ms: int = Field(default=10_000, ge=0, le=600_000)
    backup_dir: Path | None = None
    backup_hour: int | None = Field(default=4, ge=0, le=23)  # UTC; None: no nightly backup even with a dir
    retention_days: int = Field(default=30, ge=1, le=3650)
    backups_kept: int = Field(default=7, ge=1, le=365)


class DatabaseError(Exception):
    """The database file cannot be used as it is (too new, corrupt, unreadable)."""


@dataclass(frozen=True, slots=True)
class Migration:
    """One numbered SQL file under storage/migrations."""

    version: int
    name: str
    sql: str


def load_migrations(directory: Path = MIGRATIONS_DIR) -> list[Migration]:
    """The migration files in order; their numbers must run 1, 2, 3... without gaps."""
    found: list[Migration] = []
    for path in sorted(directory.glob("[0-9][0-9][0-9][0-9]_*.sql")):
        version = int(path.name[:4])
        found.append(Migration(version, path.stem, path.read_text(encoding="utf-8")))
    for expected, migration in enumerate(found, start=1):
        if migration.version != expected:
            raise DatabaseError(
                f"migration {migration.name} is out of sequence; expected number {expected:04d}"
            )
    return found


def split_statements(script: str) -> list[str]:
    """Split a SQL script into statements, because executescript() would commit our transaction."""
    statements: list[str] = []
    buffer = ""
    for line in script.splitlines(keepends=True):
        buffer += line
        if sqlite3.complete_statement(buffer):
            if buffer.strip():
                statements.append(buffer.strip())
            buffer = ""
    if buffer.strip() and not all(part.strip().startswith("--") for part in buffer.strip().splitlines()):
        raise DatabaseError(f"incomplete SQL statement at the end of a migration: {buffer.strip()[:80]!r}")
    return statements


class SyncTx:
    """Statements inside one open transaction, run synchronously on the connection's own thread.

    Used through `Database.run`: a whole transaction costs one hop between the event loop and the
    database thread instead of one per statement, which is what lets reserve() keep up under load.
    """

    def __init__(self, conn: sqlite3.Connection) -> None:
        self._conn = conn

    def fetchall(self, sql: str, params: Params = ()) -> list[sqlite3.Row]:
        return self._conn.execute(sql, params).fetchall()

    def fetchone(self, sql: str, params: Params = ()) -> sqlite3.Row | None:
        row: sqlite3.Row | None = self._conn.execute(sql, params).fetchone()
        return row

    def execute(self, sql: str, params: Params = ()) -> int:
        """Run one statement and return how many rows it changed."""
        return self._conn.execute(sql, params).rowcount

    def executemany(self, sql: str, rows: Iterable[Params]) -> int:
        return self._conn.executemany(sql, rows).rowcount

    def insert(self, sql: str, params: Params = ()) -> int:
        """Run one INSERT and return the new rowid."""
        rowid = self._conn.execute(sql, params).lastrowid
        if rowid is None:
            raise DatabaseError("insert returned no rowid")
        return rowid


MAX_BATCH = 16


@dataclass(slots=True)
class _Call:
    body: Callable[[SyncTx], Any]
    write: bool
    future: asyncio.Future[Any]


def _run_batch(conn: sqlite3.Connection, batch: list[_Call]) -> list[tuple[bool, Any]]:
    """On the database thread: one transaction for the batch, one savepoint per call (group commit).

    A call that raises is rolled back to its savepoint alone and its error returned, not raised; the
    others still commit together. If the transaction itself cannot begin or commit, every call fails.
    """
    outcomes: list[tuple[bool, Any]] = []
    tx = SyncTx(conn)
    try:
        conn.execute("BEGIN IMMEDIATE" if any(c.write for c in batch) else "BEGIN")
        for call in batch:
            conn.execute("SAVEPOINT call")
            try:
                result = call.body(tx)
            except Exception as exc:
                conn.execute("ROLLBACK TO call")
                outcomes.append((False, exc))
            else:
                outcomes.append((True, result))
            conn.execute("RELEASE call")
        conn.execute("COMMIT")
    except Exception as exc:
        if conn.in_transaction:
            conn.execute("ROLLBACK")
        return [(False, exc)] * len(batch)
    return outcomes


class Database:
    """One connection to the brushfire database, shared by every repository in the process.

    The sqlite3 connection lives on one thread of its own (a single-worker executor), so the event loop
    never blocks on the disk and every statement runs where the connection was made. The only way in is
    `run()`: a synchronous body run as one transaction on that thread, grouped with concurrent calls.
    Within the process transactions therefore run one at a time; across processes `BEGIN IMMEDIATE` and
    the busy timeout serialise writers.
    """

    def __init__(
        self, conn: sqlite3.Connection, settings: DatabaseSettings, thread: ThreadPoolExecutor
    ) -> None:
        self._conn = conn
        self._thread = thread
        self.settings = settings
        self._pending: list[_Call] = []
        self._drainer: asyncio.Task[None] | None = None
        self.schema_version = 0

    @property
    def path(self) -> Path:
        return self.settings.path

    @classmethod
    @asynccontextmanager
    async def open(
        cls, settings: DatabaseSettings | Path | str, *, migrate_to: int | None = None
    ) -> AsyncIterator[Database]:
        """Open (creating if needed) and migrate the database; `migrate_to` stops early, for tests."""
        if not isinstance(settings, DatabaseSettings):
            settings = DatabaseSettings(path=Path(settings))
        settings.path.parent.mkdir(parents=True, exist_ok=True)
        thread = ThreadPoolExecutor(max_workers=1, thread_name_prefix="brushfire-db")
        loop = asyncio.get_running_loop()
        try:
            conn = await loop.run_in_executor(thread, _connect, settings)
            try:
                db = cls(conn, settings, thread)
                await db.migrate(migrate_to)
                yield db
                if db._drainer is not None:
                    await db._drainer
            finally:
                await loop.run_in_executor(thread, conn.close)
        finally:
            thread.shutdown(wait=True)

    async def migrate(self, target: int | None = None) -> int:
        """Apply every migration above the file's `user_version`, each in its own transaction."""
        migrations = load_migrations()
        latest = len(migrations) if target is None else target
        current = await self.run(_user_version, write=False)
        if current > len(migrations):
            raise DatabaseError(
                f"{self.path} has schema version {current} but this brushfire knows only {len(migrations)}; "
                "upgrade brushfire or restore a backup"
            )
        for migration in migrations[current:latest]:
            if await self.run(functools.partial(_apply, migration=migration)):
                log.info(
                    "database %s migrated to version %d (%s)", self.path, migration.version, migration.name
                )
        self.schema_version = await self.run(_user_version, write=False)
        return self.schema_version

    async def run(self, body: Callable[[SyncTx], T], *, write: bool = True) -> T:
        """Run `body` inside one transaction (BEGIN IMMEDIATE when `write`) on the database thread.

        The body must do nothing but SQLite work; its changes commit when it returns and roll back when
        it raises. Calls that arrive while the thread is busy run together in one hop and one
        transaction, each in its own savepoint (group commit), so many concurrent users cost few thread
        switches and few WAL commits; each caller still sees its own all-or-nothing result.
        """
        call = _Call(body, write, asyncio.get_running_loop().create_future())
        self._pending.append(call)
        if self._drainer is None or self._drainer.done():
            self._drainer = asyncio.create_task(self._drain(), name="brushfire-db-drain")
        result: T = await call.future
        return result

    async def _drain(self) -> None:
        loop = asyncio.get_running_loop()
        while self._pending:
            batch = [c for c in self._pending[:MAX_BATCH] if not c.future.cancelled()]
            del self._pending[:MAX_BATCH]
            if not batch:
                continue
            try:
                outcomes = await loop.run_in_executor(self._thread, _run_batch, self._conn, batch)
            except Exception as exc:  # the connection itself failed (closed, thread gone)
                outcomes = [(False, exc)] * len(batch)
            for c, (ok, value) in zip(batch, outcomes, strict=True):
                if c.future.cancelled():
                    continue
                if ok:
                    c.future.set_result(value)
                else:
                    c.future.set_exception(value)

    async def write(self, sql: str, params: Params = ()) -> int:
        """One statement in its own write transaction; returns how many rows it changed."""
        return await self.run(lambda tx: tx.execute(sql, params))

    async def backup_to(self, target: Path) -> None:
        """Copy the live database to `target` through a separate read connection: this one stays free."""
        await backup_file(self.path, target, busy_timeout_ms=self.settings.busy_timeout_ms)


def _connect(settings: DatabaseSettings) -> sqlite3.Connection:
    """On the database thread: connect in autocommit mode (transactions are ours), WAL, foreign keys on."""
    conn = sqlite3.connect(settings.path, isolation_level=None, timeout=settings.busy_timeout_ms / 1000)
    try:
        conn.row_factory = sqlite3.Row
        conn.execute(f"PRAGMA busy_timeout = {int(settings.busy_timeout_ms)}")
        mode = conn.execute("PRAGMA journal_mode = WAL").fetchone()
    except sqlite3.DatabaseError as exc:
        conn.close()
        raise DatabaseError(f"{settings.path} is not a usable SQLite database: {exc}") from exc
    if mode[0].lower() != "wal":
        conn.close()
        raise DatabaseError(f"{settings.path} could not switch to WAL journaling")
    # In WAL mode NORMAL keeps every commit across a process crash; only power loss can drop the last ones.
    conn.execute("PRAGMA synchronous = NORMAL")
    conn.execute("PRAGMA foreign_keys = ON")
    return conn


def _user_version(tx: SyncTx) -> int:
    row = tx.fetchone("PRAGMA user_version")
    return int(row[0]) if row else 0


def _apply(tx: SyncTx, migration: Migration) -> bool:
    """Apply one migration unless another process already has (re-read inside the write lock)."""
    if _user_version(tx) >= migration.version:
        return False
    for statement in split_statements(migration.sql):
        tx.execute(statement)
    tx.execute(f"PRAGMA user_version = {migration.version}")
    return True


def _read_only_uri(path: Path) -> str:
    """A percent-encoded `file:` URI, so paths with spaces, '?' or '#' open as themselves."""
    return Path(os.path.abspath(path)).as_uri() + "?mode=ro"


async def backup_file(source: Path, target: Path, *, busy_timeout_ms: int = 10_000) -> None:
    """Back up the database file at `source` with the online backup API, while others may write to it."""
    await asyncio.to_thread(_backup, source, target, busy_timeout_ms)


def _backup(source: Path, target: Path, busy_timeout_ms: int) -> None:
    """Back up into a temporary file beside `target`, check it, then rename it into place."""
    target.parent.mkdir(parents=True, exist_ok=True)
    partial = target.with_name(target.name + ".partial")
    partial.unlink(missing_ok=True)
    with contextlib.closing(sqlite3.connect(_read_only_uri(source), uri=True, isolation_level=None)) as src:
        src.execute(f"PRAGMA busy_timeout = {int(busy_timeout_ms)}")
        with contextlib.closing(sqlite3.connect(partial, isolation_level=None)) as dest:
            # pages=-1 copies everything in one step under one read snapshot, so concurrent writers never
            # restart the copy; in WAL mode that snapshot does not block them.
            src.backup(dest, pages=-1)
            verdict = dest.execute("PRAGMA integrity_check").fetchone()[0]
            dest.execute("PRAGMA journal_mode = DELETE")
    if verdict != "ok":
        partial.unlink(missing_ok=True)
        raise DatabaseError(f"backup of the database failed its integrity check: {verdict}")
    partial.replace(target)
