"""The SQLite database over aiosqlite: WAL mode, numbered migrations, and the one way to run SQL.

The storage style, the same for every table:

- `storage/migrations/NNNN_name.sql` creates or changes the tables (numbered, applied in order, once).
- `storage/<table>.py` holds the table's records (frozen dataclasses) and its SQL as async functions whose
  first argument is the open transaction, `tx: Tx`, and which take the time as `now`:

      async def get(tx: Tx, job_id: str) -> JobRecord | None:
          row = await tx.fetchone("SELECT * FROM jobs WHERE job_id = ?", (job_id,))
          return _record(row) if row else None

- A service (bot/core) opens the transaction and calls as many of those functions as one atomic step
  needs; they commit together or not at all:

      async with self._db.transaction() as tx:         # write=False for a read-only step
          job = await jobs.get(tx, job_id)
          await ledger.commit(tx, job_id, now)

SQL appears nowhere outside storage/, and no storage function opens a transaction of its own.

What it costs: every statement is one trip to aiosqlite's connection thread, and on a busy machine each
trip (a thread wake-up each way) costs more than the SQL. So write transactions are committed in groups
(one BEGIN IMMEDIATE and one COMMIT for the bodies queued together, each in a savepoint of its own),
the BEGIN and a body's savepoint ride on the same trip as the statement after them, and reads have a
connection of their own. A hot path that needs more batches at its own level (bot/core/quotas/batching.py)
and reads what it can in one statement.

Longer than ~450 lines on purpose: the connections, the transaction block and its group commit are one
mechanism, whose rules (the write lock held from BEGIN to the savepoint's undo or COMMIT, calls queued
in order on aiosqlite's thread) are easier to check in one file.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
import os
import sqlite3
from collections.abc import AsyncIterator, Awaitable, Coroutine, Iterable, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import aiosqlite
from pydantic import BaseModel, ConfigDict, Field

log = logging.getLogger(__name__)

MIGRATIONS_DIR = Path(__file__).parent / "migrations"

Params = Sequence[Any] | dict[str, Any]
R = TypeVar("R")
W = TypeVar("W")


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


def from_row(cls: type[R], row: sqlite3.Row, **converted: Any) -> R:
    """A record (a dataclass) from a row: each field from the column of its name (SQLite's 0/1 becomes
    a `bool` field's False/True), except those given in `converted` (a renamed column, JSON text).
    Columns no field names are ignored, so one SELECT may carry extra ones."""
    names = set(row.keys())
    values = {
        f.name: bool(row[f.name]) if f.type in ("bool", bool) else row[f.name]
        for f in dataclasses.fields(cls)  # type: ignore[arg-type]
        if f.name in names
    }
    values.update(converted)
    return cls(**values)


class Tx:
    """The statements of one open transaction; every SQL statement brushfire runs goes through one.

    Get one from `Database.transaction()`; it works only inside that block. Each method is one call to
    aiosqlite's connection thread. `fetchall`/`fetchone` only read; `execute`, `executemany`, `insert`
    and `execute_returning` write (in a write transaction the first of them also marks the transaction's
    savepoint, queued on the same trip).
    """

    __slots__ = ("_live_conn", "_member")

    def __init__(self, conn: aiosqlite.Connection, member: _Member | None = None) -> None:
        self._live_conn: aiosqlite.Connection | None = conn
        self._member = member

    @property
    def _conn(self) -> aiosqlite.Connection:
        if self._live_conn is None:
            raise RuntimeError("this transaction has ended: run the statement inside its block")
        return self._live_conn

    def _end(self) -> None:
        self._live_conn = None

    async def fetchall(self, sql: str, params: Params = ()) -> list[sqlite3.Row]:
        return list(await self._conn.execute_fetchall(sql, params))

    async def fetchone(self, sql: str, params: Params = ()) -> sqlite3.Row | None:
        """The first row, or None. Meant for lookups by key and aggregates: it reads every row the
        query yields (one hop to the database thread instead of three), so bound the query."""
        rows = await self._conn.execute_fetchall(sql, params)
        for row in rows:
            return row
        return None

    async def execute(self, sql: str, params: Params = ()) -> int:
        """Run one statement and return how many rows it changed."""
        cursor = await self._written(self._conn.execute(sql, params))
        return cursor.rowcount

    async def executemany(self, sql: str, rows: Iterable[Params]) -> int:
        cursor = await self._written(self._conn.executemany(sql, rows))
        return cursor.rowcount

    async def insert(self, sql: str, params: Params = ()) -> int:
        """Run one INSERT and return the new rowid."""
        cursor = await self._written(self._conn.execute(sql, params))
        rowid = cursor.lastrowid
        if rowid is None:
            raise DatabaseError("insert returned no rowid")
        return rowid

    async def execute_returning(self, sql: str, params: Params = ()) -> list[sqlite3.Row]:
        """Run one writing statement with a RETURNING clause and return its rows."""
        return list(await self._written(self._conn.execute_fetchall(sql, params)))

    async def _written(self, statement: Awaitable[W]) -> W:
        """Run a writing statement; the transaction's first one goes with its savepoint, in one trip.

        gather() starts its tasks in order, so aiosqlite queues SAVEPOINT before the statement and runs
        them back to back. If the savepoint failed, the member cannot be undone alone: the batch aborts.
        """
        member = self._member
        if member is None or member.savepoint:
            return await statement
        member.savepoint = True  # set first: if this is cancelled, the undo still rolls back to it
        marked, result = await asyncio.gather(
            self._conn.execute(f"SAVEPOINT {member.name}"), statement, return_exceptions=True
        )
        if isinstance(result, BaseException):
            raise result
        if isinstance(marked, BaseException):
            raise DatabaseError(f"could not mark the transaction's savepoint: {marked}") from marked
        return result


@dataclass(eq=False, slots=True)
class _Member:
    """One write transaction inside a batch; its savepoint is taken with its first write."""

    name: str
    changes_at_start: int
    savepoint: bool = False


@dataclass(eq=False, slots=True)
class _Batch:
    """Write transactions sharing one BEGIN IMMEDIATE ... COMMIT; `done` settles when that COMMIT has."""

    begun: asyncio.Future[Any]  # the BEGIN IMMEDIATE, queued on the same trip as the first statement
    done: asyncio.Future[None]
    members: int = 0  # bodies that ended well and wait for the COMMIT


@dataclass(frozen=True, slots=True)
class WriteStats:
    """What group commit has done since the database was opened: COMMITs and the transactions in them."""

    batches: int
    transactions: int


MAX_BATCH = 32  # write transactions committed together at most


class Database:
    """The brushfire database in one process: a writing aiosqlite connection and a read-only one.

    The only way to run SQL is a transaction:

        async with db.transaction() as tx:           # a write transaction; write=False: read-only
            row = await tx.fetchone("SELECT ...", (key,))
            await tx.execute("UPDATE ...", (...))
        # committed here; an exception inside rolled everything back and propagates

    Write transactions run one at a time (an asyncio.Lock), so a body never interleaves with another's
    and may await between statements; it must not await anything but its own statements (no network, no
    sleeping), because every other writer waits for it. They are committed in groups: the bodies queued
    while one runs join its `BEGIN IMMEDIATE`, each inside a SAVEPOINT of its own, and one COMMIT ends them
    all (at most MAX_BATCH). A body that raises is rolled back to its savepoint alone; the block returns
    only once the COMMIT holding it has succeeded, so nothing acknowledged can be lost, and if that
    COMMIT fails every transaction in it raises. Read-only transactions use the second connection
    (`PRAGMA query_only`), one at a time, and see what was committed when they began: reports never
    queue behind writes. Across processes `BEGIN IMMEDIATE` and the busy timeout serialise writers.
    """

    def __init__(
        self, conn: aiosqlite.Connection, reader: aiosqlite.Connection, settings: DatabaseSettings
    ) -> None:
        self._conn = conn
        self._reader = reader
        self.settings = settings
        self._write_lock = asyncio.Lock()
        self._read_lock = asyncio.Lock()
        self._in_body: set[asyncio.Task[Any]] = set()
        self._batch: _Batch | None = None
        self._flushers: set[asyncio.Task[None]] = set()
        self._serial = 0
        self._batches = 0
        self._committed = 0
        self.schema_version = 0

    @property
    def path(self) -> Path:
        return self.settings.path

    @property
    def write_stats(self) -> WriteStats:
        return WriteStats(self._batches, self._committed)

    @classmethod
    @asynccontextmanager
    async def open(
        cls, settings: DatabaseSettings | Path | str, *, migrate_to: int | None = None
    ) -> AsyncIterator[Database]:
        """Open (creating if needed) and migrate the database; `migrate_to` stops early, for tests."""
        if not isinstance(settings, DatabaseSettings):
            settings = DatabaseSettings(path=Path(settings))
        settings.path.parent.mkdir(parents=True, exist_ok=True)
        async with _connect(settings) as conn:
            await _configure(conn, settings)
            async with _connect(settings) as reader:
                await _configure(reader, settings, read_only=True)
                db = cls(conn, reader, settings)
                try:
                    await db.migrate(migrate_to)
                    yield db
                finally:
                    await db._settle()

    @asynccontextmanager
    async def transaction(self, *, write: bool = True) -> AsyncIterator[Tx]:
        """One transaction: commits when the block ends, rolls back when it raises (or is cancelled).

        A write transaction holds SQLite's write lock from its start (`BEGIN IMMEDIATE`, shared with the
        batch), so a read-then-write body never fails half way on a lock upgrade.
        """
        self.refuse_inside_transaction()
        task = asyncio.current_task()
        body = self._write_transaction() if write else self._read_transaction()
        async with body as tx:
            if task is not None:
                self._in_body.add(task)
            try:
                yield tx
            finally:
                tx._end()  # the handle dies with its block
                if task is not None:
                    self._in_body.discard(task)

    def refuse_inside_transaction(self) -> None:
        """Raise if the calling task is inside a transaction's body: one never opens (or waits on)
        another; pass its Tx down instead."""
        if asyncio.current_task() in self._in_body:
            raise RuntimeError("a transaction cannot open another one: pass its Tx down instead")

    @asynccontextmanager
    async def _write_transaction(self) -> AsyncIterator[Tx]:
        async with self._write_lock:
            batch = self._batch if self._batch is not None else await _complete(self._begin())
            self._serial += 1
            member = _Member(f"tx{self._serial}", self._conn.total_changes)
            try:
                yield Tx(self._conn, member)
            except BaseException:
                await _complete(self._undo(batch, member))
                raise
            batch.members += 1
            if batch.members >= MAX_BATCH:
                await _complete(self._commit(batch))
        await asyncio.shield(batch.done)  # a cancelled caller's transaction still commits with the rest

    async def _begin(self) -> _Batch:
        """Open a batch, and queue its COMMIT behind the writers waiting now: they join it.

        BEGIN IMMEDIATE is queued, not awaited: aiosqlite runs calls in order, so it runs before the
        first member's statements, on the same trip. Should it fail, those statements ran outside the
        batch, which is why nothing is committed before it has been checked (`_commit`).
        """
        begun = asyncio.ensure_future(self._conn.execute("BEGIN IMMEDIATE"))
        await asyncio.sleep(0)  # the task above runs first (callbacks run in order) and queues the BEGIN
        batch = _Batch(begun, asyncio.get_running_loop().create_future())
        batch.done.add_done_callback(_retrieved)
        self._batch = batch
        flusher = asyncio.create_task(self._flush(batch), name="brushfire-db-commit")
        self._flushers.add(flusher)
        flusher.add_done_callback(self._flushers.discard)
        return batch

    async def _flush(self, batch: _Batch) -> None:
        async with self._write_lock:
            if self._batch is batch:
                await self._commit(batch)

    async def _commit(self, batch: _Batch) -> None:
        self._batch = None
        try:
            await batch.begun
            # COMMIT, not sqlite3's commit(): if SQLite ended the transaction on its own, this fails.
            await self._conn.execute("COMMIT")
        except Exception as exc:
            await self._abort(batch, exc)
            return
        self._batches += 1
        self._committed += batch.members
        batch.done.set_result(None)

    async def _undo(self, batch: _Batch, member: _Member) -> None:
        """Roll a failed body back to its savepoint; if that cannot be done, the whole batch goes."""
        if batch is not self._batch:
            return  # already aborted
        try:
            if member.savepoint:
                await self._conn.execute(f"ROLLBACK TO {member.name}")
            elif self._conn.total_changes != member.changes_at_start:
                raise DatabaseError("a transaction changed rows without a savepoint")
            if not self._conn.in_transaction:
                raise DatabaseError("SQLite rolled the transaction back on its own")
        except Exception as exc:
            await self._abort(batch, exc)

    async def _abort(self, batch: _Batch, cause: BaseException) -> None:
        """Roll back everything in the batch; its waiting members raise (none was acknowledged)."""
        if self._batch is batch:
            self._batch = None
        log.error("a batch of %d write transaction(s) was rolled back: %s", batch.members, cause)
        with contextlib.suppress(Exception):
            await batch.begun  # it is queued before anything this rolls back, and its failure is told here
        await self._rollback(self._conn)
        error = DatabaseError(f"the transaction was rolled back with the others committed with it: {cause}")
        error.__cause__ = cause
        batch.done.set_exception(error)

    async def _settle(self) -> None:
        """Wait for the last batch's COMMIT (at close)."""
        while self._flushers:
            await asyncio.gather(*self._flushers, return_exceptions=True)

    @asynccontextmanager
    async def _read_transaction(self) -> AsyncIterator[Tx]:
        async with self._read_lock:
            try:
                await self._reader.execute("BEGIN")
                yield Tx(self._reader)
            finally:
                # Shielded, so a second cancellation cannot skip it. aiosqlite runs calls in order and
                # rollback() checks for an open transaction when it runs, so it lands after a BEGIN still
                # in flight and before the next read's BEGIN. A read-only transaction has nothing to commit.
                await asyncio.shield(self._rollback(self._reader))

    @staticmethod
    async def _rollback(conn: aiosqlite.Connection) -> None:
        try:
            await conn.rollback()
        except Exception:
            log.exception("rolling back a transaction failed")

    async def migrate(self, target: int | None = None) -> int:
        """Apply every migration above the file's `user_version`, each in its own transaction."""
        migrations = load_migrations()
        latest = len(migrations) if target is None else target
        async with self.transaction(write=False) as tx:
            current = await _user_version(tx)
        if current > len(migrations):
            raise DatabaseError(
                f"{self.path} has schema version {current} but this brushfire knows only {len(migrations)}; "
                "upgrade brushfire or restore a backup"
            )
        for migration in migrations[current:latest]:
            async with self.transaction() as tx:
                applied = await _apply(tx, migration)
            if applied:
                log.info(
                    "database %s migrated to version %d (%s)", self.path, migration.version, migration.name
                )
        async with self.transaction(write=False) as tx:
            self.schema_version = await _user_version(tx)
        return self.schema_version

    async def backup_to(self, target: Path) -> None:
        """Copy the live database to `target` through a separate read connection: this one stays free."""
        await backup_file(self.path, target, busy_timeout_ms=self.settings.busy_timeout_ms)


async def _complete(step: Coroutine[Any, Any, R]) -> R:
    """Run `step` to its end even if the caller is cancelled meanwhile (then re-raise that), so the
    write lock is never let go with a BEGIN, ROLLBACK TO or COMMIT still in flight."""
    task = asyncio.ensure_future(step)
    cancelled = False
    while True:
        try:
            result = await asyncio.shield(task)
            break
        except asyncio.CancelledError:
            if task.done():
                raise
            cancelled = True
    if cancelled:
        raise asyncio.CancelledError
    return result


def _retrieved(done: asyncio.Future[None]) -> None:
    """Mark a batch's failure seen, so a batch whose callers were all cancelled logs no warning."""
    if not done.cancelled():
        done.exception()


def _connect(settings: DatabaseSettings) -> aiosqlite.Connection:
    # isolation_level=None: the sqlite3 module never opens transactions itself; ours are explicit.
    return aiosqlite.connect(settings.path, isolation_level=None, timeout=settings.busy_timeout_ms / 1000)


async def _configure(
    conn: aiosqlite.Connection, settings: DatabaseSettings, *, read_only: bool = False
) -> None:
    """Rows by name, WAL, the busy timeout, foreign keys on; a file that is not SQLite is refused.
    The read-only connection refuses writes (`query_only`)."""
    conn.row_factory = sqlite3.Row
    try:
        await conn.execute(f"PRAGMA busy_timeout = {int(settings.busy_timeout_ms)}")
        mode = await conn.execute_fetchall("PRAGMA journal_mode = WAL")
    except sqlite3.DatabaseError as exc:
        raise DatabaseError(f"{settings.path} is not a usable SQLite database: {exc}") from exc
    if next(iter(mode))[0].lower() != "wal":
        raise DatabaseError(f"{settings.path} could not switch to WAL journaling")
    # In WAL mode NORMAL keeps every commit across a process crash; only power loss can drop the last ones.
    await conn.execute("PRAGMA synchronous = NORMAL")
    await conn.execute("PRAGMA foreign_keys = ON")
    if read_only:
        await conn.execute("PRAGMA query_only = ON")


async def _user_version(tx: Tx) -> int:
    row = await tx.fetchone("PRAGMA user_version")
    return int(row[0]) if row else 0


async def _apply(tx: Tx, migration: Migration) -> bool:
    """Apply one migration unless another process already has (re-read inside the write lock)."""
    if await _user_version(tx) >= migration.version:
        return False
    for statement in split_statements(migration.sql):
        await tx.execute(statement)
    await tx.execute(f"PRAGMA user_version = {migration.version}")
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
