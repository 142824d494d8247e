"""SQLite files that several threads and processes use at once, with named schema migrations.

The ledger, the response cache and the batch journal each own one file and one :class:`Migrations`
registry. A migration is registered under a name and applied once, in registration order, inside its own
transaction; the names applied so far are kept in the file's ``_migrations`` table. Never rename or edit
a migration that has shipped: add a new one.

    migrations = Migrations()
    migrations.register("m001_initial", "CREATE TABLE notes (id INTEGER PRIMARY KEY, text TEXT)")

    @migrations.register("m002_add_tags")
    def _(conn):
        conn.execute("ALTER TABLE notes ADD COLUMN tags TEXT")

    with Database(path, migrations) as db:
        db.execute("INSERT INTO notes (text) VALUES (?)", ("hi",))
"""

from __future__ import annotations

import sqlite3
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Self

from .errors import ConfigError

__all__ = ["Database", "Migrations", "Store", "connect", "inspect_file"]

# Errors that say the file is not what it should be; other sqlite3 errors are bugs in aigc.
_MISUSE = (sqlite3.IntegrityError, sqlite3.ProgrammingError, sqlite3.InterfaceError)
_FRESH_START = "move it aside and aigc will start a new one"

Step = str | Callable[[sqlite3.Connection], None]


def as_utc(moment: datetime) -> datetime:
    """Aware UTC; a naive datetime is taken to be UTC already."""
    return moment.replace(tzinfo=UTC) if moment.tzinfo is None else moment.astimezone(UTC)


def utc_stamp(moment: datetime | None = None, *, seconds: bool = False) -> str:
    """A UTC time as the stores write it (default: now): fixed width, ``2026-12-02T16:05:00.123456Z`` (or
    to the second), so text order is time order and the first 10 characters are the day."""
    moment = datetime.now(UTC) if moment is None else as_utc(moment)
    return moment.replace(tzinfo=None).isoformat(timespec="seconds" if seconds else "microseconds") + "Z"


class Migrations:
    """An ordered set of named schema changes for one kind of file."""

    def __init__(self) -> None:
        self._steps: list[tuple[str, Step]] = []

    @property
    def names(self) -> list[str]:
        return [name for name, _ in self._steps]

    def register(self, name: str, step: Step | None = None) -> Any:
        """Add ``step`` (SQL text, or a function taking the connection) under ``name``.

        Without ``step`` this returns a decorator for a function. A function runs inside the migration's
        transaction, so it must not commit.
        """
        if step is None:
            def decorator(fn: Callable[[sqlite3.Connection], None]) -> Callable[[sqlite3.Connection], None]:
                self.register(name, fn)
                return fn
            return decorator
        if name in self.names:
            raise ValueError(f"migration {name!r} is registered twice")
        self._steps.append((name, step))
        return step

    def apply(self, conn: sqlite3.Connection) -> list[str]:
        """Apply the migrations this file has not seen yet; return their names.

        Each runs in its own ``BEGIN IMMEDIATE`` transaction and re-checks whether another process got
        there first, so two processes opening a new file at the same moment both end up correct.
        """
        conn.execute("CREATE TABLE IF NOT EXISTS _migrations (name TEXT PRIMARY KEY, applied_at TEXT NOT NULL)")
        if set(self.names) <= _applied(conn):
            return []
        done = []
        for name, step in self._steps:
            conn.execute("BEGIN IMMEDIATE")
            try:
                if name in _applied(conn):
                    conn.execute("ROLLBACK")
                    continue
                if callable(step):
                    step(conn)
                else:
                    for statement in _statements(step):
                        conn.execute(statement)
                conn.execute(
                    "INSERT INTO _migrations (name, applied_at) VALUES (?, ?)",
                    (name, datetime.now(UTC).isoformat(timespec="seconds")),
                )
                conn.execute("COMMIT")
            except BaseException:
                if conn.in_transaction:
                    conn.execute("ROLLBACK")
                raise
            done.append(name)
        return done


def _applied(conn: sqlite3.Connection) -> set[str]:
    return {row[0] for row in conn.execute("SELECT name FROM _migrations")}


def _statements(script: str) -> Iterator[str]:
    """Split a script into statements without ``executescript``, which would commit our transaction."""
    buffer = ""
    for piece in script.split(";"):
        buffer += piece + ";"
        if sqlite3.complete_statement(buffer):
            if buffer.strip(" \t\r\n;"):
                yield buffer.strip()
            buffer = ""
    if buffer.strip(" \t\r\n;"):
        raise ValueError(f"incomplete SQL statement in migration: {buffer.strip()[:60]!r}")


def _wal(conn: sqlite3.Connection, timeout: float) -> None:
    """Put the file in WAL mode. While another connection writes to a file not yet in WAL mode (a new file
    that several processes open at once), SQLite answers "locked" at once instead of waiting out the busy
    timeout, since waiting could deadlock: this waits instead, up to ``timeout``."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            conn.execute("PRAGMA journal_mode = WAL")
            return
        except sqlite3.OperationalError as e:
            if "locked" not in str(e) or time.monotonic() >= deadline:
                raise
            time.sleep(0.01)


def connect(path: Path | str, *, timeout: float = 30.0) -> sqlite3.Connection:
    """Open ``path`` for shared use: WAL journal, a busy timeout, foreign keys on, parent dirs created.

    The connection is in autocommit mode (each statement commits on its own) and may be used from any
    thread, so callers must serialise access themselves (:class:`Database` does). ``synchronous=NORMAL``
    in WAL mode keeps every commit safe from application crashes and costs no fsync per write; a power
    cut can lose the last few writes, which is the right trade for a usage log and a cache.
    """
    if str(path) != ":memory:":
        folder = Path(path).parent
        try:
            folder.mkdir(parents=True, exist_ok=True)
        except OSError as e:
            raise ConfigError(f"cannot create the folder {folder} for {Path(path).name} ({e.strerror}); "
                              "make it writable or choose another folder (data_dir, AIGC_DATA_DIR)") from None
    conn = sqlite3.connect(str(path), timeout=timeout, isolation_level=None, check_same_thread=False)
    try:
        conn.execute(f"PRAGMA busy_timeout = {int(timeout * 1000)}")
        _wal(conn, timeout)
        conn.execute("PRAGMA synchronous = NORMAL")
        conn.execute("PRAGMA foreign_keys = ON")
    except BaseException:
        conn.close()
        raise
    return conn


class Database:
    """One SQLite file, migrated on open, shared safely by this process's threads.

    A lock serialises use of the single connection; other processes are kept consistent by SQLite's own
    locking (WAL lets readers run while one process writes). A file that cannot be opened or turns out
    damaged — on open or at any later read or write — is a :class:`ConfigError` of one line naming the file
    and what to do (``advice``), never a bare ``sqlite3`` error.
    """

    def __init__(self, path: Path | str, migrations: Migrations | None = None, *, timeout: float = 30.0,
                 advice: str = _FRESH_START) -> None:
        self.path = Path(path)
        self.advice = advice
        self.lock = threading.RLock()
        conn = None
        try:
            conn = connect(path, timeout=timeout)
            if migrations is not None:
                migrations.apply(conn)
        except (sqlite3.DatabaseError, OSError) as e:
            if conn is not None:
                conn.close()
            error = self.unusable(e)
        except BaseException:
            if conn is not None:
                conn.close()
            raise
        else:
            error = None
        if error is not None:
            raise error  # after the except block: one line, with no sqlite3 error behind it
        assert conn is not None
        conn.row_factory = sqlite3.Row
        self.conn = conn

    def unusable(self, e: BaseException) -> ConfigError:
        """The error to raise for a sqlite3 (or OS) failure on this file."""
        if isinstance(e, sqlite3.OperationalError | OSError):
            reason = e.strerror if isinstance(e, OSError) and e.strerror else str(e)
            return ConfigError(f"cannot use {self.path}: {reason}; check that it and its folder are writable")
        return ConfigError(f"{self.path} is damaged or not an aigc database ({e}); {self.advice}")

    def execute(self, sql: str, params: Any = ()) -> list[sqlite3.Row]:
        """Run one statement (atomic on its own) and return all its rows."""
        with self.lock:
            try:
                return self.conn.execute(sql, params).fetchall()
            except _MISUSE:
                raise
            except sqlite3.DatabaseError as e:
                error = self.unusable(e)
            raise error

    @contextmanager
    def transaction(self) -> Iterator[sqlite3.Connection]:
        """Several statements as one atomic write: committed together, or rolled back on any error."""
        with self.lock:
            error = None
            try:
                self.conn.execute("BEGIN IMMEDIATE")
                try:
                    yield self.conn
                except BaseException:
                    if self.conn.in_transaction:
                        self.conn.execute("ROLLBACK")
                    raise
                self.conn.execute("COMMIT")
            except _MISUSE:
                raise
            except sqlite3.DatabaseError as e:
                error = self.unusable(e)
            if error is not None:
                raise error

    def check(self) -> None:
        """Read the whole file once (``PRAGMA quick_check``): ConfigError if any page is damaged, so damage
        is found before work starts rather than halfway through it."""
        rows = self.execute("PRAGMA quick_check")
        problems = [str(r[0]) for r in rows if str(r[0]) != "ok"]
        if problems:
            raise self.unusable(sqlite3.DatabaseError(problems[0]))

    def applied_migrations(self) -> list[str]:
        return [row[0] for row in self.execute("SELECT name FROM _migrations ORDER BY rowid")]

    def close(self) -> None:
        with self.lock:
            self.conn.close()

    def __enter__(self) -> Database:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"Database({str(self.path)!r})"


def inspect_file(path: Path | str) -> str | None:
    """What is wrong with an aigc SQLite file, read without changing it; None if it is fine or absent."""
    path = Path(path)
    if not path.exists():
        return None
    try:
        conn = sqlite3.connect(f"{path.resolve().as_uri()}?mode=ro", uri=True, timeout=5)
    except sqlite3.Error as e:
        return f"cannot be opened ({e})"
    try:
        problems = [str(r[0]) for r in conn.execute("PRAGMA quick_check") if str(r[0]) != "ok"]
        if problems:
            return f"damaged ({problems[0]})"
        if not conn.execute("SELECT 1 FROM sqlite_master WHERE name = '_migrations'").fetchall():
            return "not an aigc database"
    except sqlite3.OperationalError as e:
        return f"cannot be read ({e})"
    except sqlite3.DatabaseError as e:
        return f"damaged ({e})"
    finally:
        conn.close()
    return None


class Store:
    """What keeps its data in one :class:`Database` (``self.db``): ``close()`` closes the file, and a ``with``
    block closes it at the end."""

    db: Database

    def close(self) -> None:
        self.db.close()

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
