"""The SQLite database: one aiosqlite connection in WAL mode, numbered migrations and serialised transactions."""

from __future__ import annotations

import asyncio
import logging
import os
import sqlite3
from collections.abc import AsyncIterator, Callable, Iterable, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import aiosqlite
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


class Tx:
    """Statements inside one open transaction; each call is one hop to the connection's thread."""

    def __init__(self, conn: aiosqlite.Connection) -> None:
        self._conn = conn

    async def fetchall(self, sql: str, params: Params = ()) -> list[sqlite3.Row]:
        return list(await self._conn.execute_fetchall(sql, params))

    async def fetchone(self, sql: str, params: Params = ()) -> sqlite3.Row | None:
        rows = await self._conn.execute_fetchall(sql, params)
        return next(iter(rows), None)

    async def execute(self, sql: str, params: Params = ()) -> int:
        """Run one statement and return how many rows it changed."""
        cursor = await self._conn.execute(sql, params)
        return cursor.rowcount

    async def executemany(self, sql: str, rows: Iterable[Params]) -> int:
        cursor = await self._conn.executemany(sql, rows)
        return cursor.rowcount

    async def insert(self, sql: str, params: Params = ()) -> int:
        """Run one INSERT and return the new rowid."""
        row = await self._conn.execute_insert(sql, params)
        if row is None:
            raise DatabaseError("insert returned no rowid")
        return int(row[0])


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

    aiosqlite runs a single sqlite3 connection on its own thread, so two coroutines interleaving
    statements would share one transaction. Every way in therefore holds an asyncio lock: `run()` (what
    the repositories use: a synchronous body, one hop, grouped with concurrent calls), and the
    statement-at-a-time `transaction()` and `read()` context managers. Within the process transactions
    run one at a time; across processes `BEGIN IMMEDIATE` and the busy timeout serialise writers.
    """

    def __init__(self, conn: aiosqlite.Connection, settings: DatabaseSettings) -> None:
        self._conn = conn
        self.settings = settings
        self._lock = asyncio.Lock()
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
        conn = await aiosqlite.connect(
            settings.path, isolation_level=None, timeout=settings.busy_timeout_ms / 1000
        )
        try:
            conn.row_factory = sqlite3.Row
            db = cls(conn, settings)
            await db._configure()
            await db.migrate(migrate_to)
            yield db
            if db._drainer is not None:
                await db._drainer
        finally:
            await conn.close()

    async def _configure(self) -> None:
        try:
            await self._conn.execute(f"PRAGMA busy_timeout = {int(self.settings.busy_timeout_ms)}")
            mode = await self._conn.execute_fetchall("PRAGMA journal_mode = WAL")
        except sqlite3.DatabaseError as exc:
            raise DatabaseError(f"{self.path} is not a usable SQLite database: {exc}") from exc
        if next(iter(mode))[0].lower() != "wal":
            raise DatabaseError(f"{self.path} could not switch to WAL journaling")
        # In WAL mode NORMAL keeps every commit across a process crash; only power loss can drop the last ones.
        await self._conn.execute("PRAGMA synchronous = NORMAL")
        await self._conn.execute("PRAGMA foreign_keys = ON")

    async def migrate(self, target: int | None = None) -> int:
        """Apply every migration above the file's `user_version`, each in its own transaction."""
        migrations = load_migrations()
        latest = len(migrations) if target is None else target
        async with self.transaction() as tx:
            current = await self._user_version(tx)
        if current > len(migrations):
            raise DatabaseError(
                f"{self.path} has schema version {current} but this brushfire knows only {len(migrations)}; "
                "upgrade brushfire or restore a backup"
            )
        for migration in migrations[current:latest]:
            async with self.transaction() as tx:
                # Re-read inside the write lock: another process may have migrated meanwhile.
                if await self._user_version(tx) >= migration.version:
                    continue
                for statement in split_statements(migration.sql):
                    await tx.execute(statement)
                await tx.execute(f"PRAGMA user_version = {migration.version}")
            log.info("database %s migrated to version %d (%s)", self.path, migration.version, migration.name)
        async with self.read() as tx:
            self.schema_version = await self._user_version(tx)
        return self.schema_version

    @staticmethod
    async def _user_version(tx: Tx) -> int:
        row = await tx.fetchone("PRAGMA user_version")
        return int(row[0]) if row else 0

    @asynccontextmanager
    async def transaction(self) -> AsyncIterator[Tx]:
        """A write transaction: BEGIN IMMEDIATE takes the file's write lock up front, so no upgrade fails."""
        async with self._lock:
            await self._conn.execute("BEGIN IMMEDIATE")
            try:
                yield Tx(self._conn)
            except BaseException:
                await self._rollback()
                raise
            await self._conn.execute("COMMIT")

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
        return await call.future  # type: ignore[no-any-return]

    async def _drain(self) -> None:
        while self._pending:
            batch = [c for c in self._pending[:MAX_BATCH] if not c.future.cancelled()]
            del self._pending[:MAX_BATCH]
            if not batch:
                continue
            try:
                async with self._lock:
                    # aiosqlite has no public call to run a function on its thread; `_execute` is the one
                    # private use, and every quota test goes through it.
                    outcomes = await self._conn._execute(_run_batch, self._conn._conn, batch)
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

    @asynccontextmanager
    async def read(self) -> AsyncIterator[Tx]:
        """A read transaction: one consistent snapshot for several SELECTs."""
        async with self._lock:
            await self._conn.execute("BEGIN")
            try:
                yield Tx(self._conn)
            finally:
                await self._rollback()

    async def _rollback(self) -> None:
        try:
            await self._conn.execute("ROLLBACK")
        except sqlite3.OperationalError:
            # SQLite already rolled back (some errors end the transaction themselves).
            log.debug("no transaction to roll back")

    async def backup_to(self, target: Path) -> None:
        """Copy the live database to `target` through a separate read connection: this one stays free."""
        await backup_file(self.path, target, busy_timeout_ms=self.settings.busy_timeout_ms)


def _read_only_uri(path: Path) -> str:
    """A percent-encoded `file:` URI, so paths with spaces, '?' or '#' open as themselves."""
    return Path(os.path.abspath(path)).as_uri() + "?mode=ro"


async def backup_file(source: Path, target: Path, *, busy_timeout_ms: int = 10_000) -> None:
    """Back up the database file at `source` with the online backup API, while others may write to it."""
    async with aiosqlite.connect(_read_only_uri(source), uri=True, isolation_level=None) as conn:
        await conn.execute(f"PRAGMA busy_timeout = {int(busy_timeout_ms)}")
        await write_backup(conn, target)


async def write_backup(source: aiosqlite.Connection, target: Path) -> None:
    """Back up into a temporary file beside `target`, check it, then rename it into place."""
    target.parent.mkdir(parents=True, exist_ok=True)
    partial = target.with_name(target.name + ".partial")
    partial.unlink(missing_ok=True)
    async with aiosqlite.connect(partial, isolation_level=None) as dest:
        # pages=-1 copies everything in one step under one read snapshot, so concurrent writers never
        # restart the copy; in WAL mode that snapshot does not block them.
        await source.backup(dest, pages=-1)
        check = await dest.execute_fetchall("PRAGMA integrity_check")
        await dest.execute("PRAGMA journal_mode = DELETE")
    verdict = next(iter(check))[0]
    if verdict != "ok":
        partial.unlink(missing_ok=True)
        raise DatabaseError(f"backup of the database failed its integrity check: {verdict}")
    partial.replace(target)
