"""The usage ledger: one row per request in ``<data_dir>/ledger.db``, and reports over it.

Every request is recorded, failed ones included, with its tokens, its cost (NULL when the model's price
is unknown), latency, status and attempts. Prompts and responses are stored only when the ledger was
opened with ``store_prompts=True``; API keys never are. Of values redacted before sending, only their
counts are kept (``{"email": 1, "phone": 2}``). Times are UTC, and so are report days.
"""

from __future__ import annotations

import atexit
import logging
import queue
import re
import sqlite3
import threading
import weakref
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Literal

from .db import Database, Migrations, Store, as_utc, utc_stamp
from .errors import ConfigError, InputError

__all__ = ["Ledger", "LedgerEntry", "ReportRow", "GroupBy", "parse_since", "LEDGER_FILE"]

log = logging.getLogger("aigc.ledger")
_STOP, _HURRY = object(), object()
LINGER_S = 0.2
_INSERT = (
    "INSERT INTO requests (time, backend, model, task, prompt_tokens, completion_tokens, cost_usd,"
    " latency_s, status, attempts, request_id, job, client_key, prompt, response, redactions)"
    " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)"
)
_open_ledgers: weakref.WeakSet = weakref.WeakSet()


@atexit.register
def _flush_open_ledgers() -> None:
    for ledger in list(_open_ledgers):
        ledger.flush(timeout=5)

LEDGER_FILE = "ledger.db"

GroupBy = Literal["model", "task", "day", "backend", "job", "key"]

MIGRATIONS = Migrations()

MIGRATIONS.register(
    "m001_initial",
    """
    CREATE TABLE requests (
        id INTEGER PRIMARY KEY,
        time TEXT NOT NULL,
        backend TEXT NOT NULL,
        model TEXT NOT NULL,
        task TEXT NOT NULL,
        prompt_tokens INTEGER NOT NULL DEFAULT 0,
        completion_tokens INTEGER NOT NULL DEFAULT 0,
        cost_usd REAL,
        latency_s REAL NOT NULL DEFAULT 0,
        status TEXT NOT NULL DEFAULT 'ok',
        attempts INTEGER NOT NULL DEFAULT 1,
        request_id TEXT,
        prompt TEXT,
        response TEXT
    );
    CREATE INDEX requests_time ON requests (time);
    """,
)

# Batch runs from cron wanted their spend reported per job.
MIGRATIONS.register(
    "m002_add_job",
    """
    ALTER TABLE requests ADD COLUMN job TEXT;
    CREATE INDEX requests_job ON requests (job, time);
    """,
)

# `aigc serve` records which of its API keys (by name, never the key) each request came in with.
MIGRATIONS.register(
    "m003_add_client_key",
    """
    ALTER TABLE requests ADD COLUMN client_key TEXT;
    CREATE INDEX requests_client_key ON requests (client_key, time);
    """,
)

# `--redact` keeps sensitive values away from the server; the ledger says how many, never which.
MIGRATIONS.register("m004_add_redactions", "ALTER TABLE requests ADD COLUMN redactions TEXT")

_GROUP_EXPR: dict[str, str] = {
    "model": "model",
    "task": "task",
    "backend": "backend",
    "job": "job",
    "key": "client_key",
    "day": "substr(time, 1, 10)",
}


@dataclass(frozen=True, slots=True)
class LedgerEntry:
    """One request as the ledger records it.

    ``status`` is "ok" or the class name of the error that ended the request (e.g. "RateLimited").
    ``prompt`` and ``response`` are kept only by a ledger opened with ``store_prompts=True``.
    ``client_key`` is the name of the ``aigc serve`` API key a request came in with.
    """

    backend: str
    model: str
    task: str
    prompt_tokens: int = 0
    completion_tokens: int = 0
    cost_usd: float | None = None
    latency_s: float = 0.0
    status: str = "ok"
    attempts: int = 1
    request_id: str | None = None
    job: str | None = None
    client_key: str | None = None
    prompt: str | None = field(default=None, repr=False)
    response: str | None = field(default=None, repr=False)
    redactions: str | None = None  # JSON counts by kind of the values replaced before sending
    time: datetime = field(default_factory=lambda: datetime.now(UTC))


@dataclass(frozen=True, slots=True)
class ReportRow:
    """Totals for one group (``key`` is None for an ungrouped report)."""

    key: str | None
    requests: int
    prompt_tokens: int
    completion_tokens: int
    cost_usd: float
    unpriced_requests: int
    failures: int

    @property
    def total_tokens(self) -> int:
        return self.prompt_tokens + self.completion_tokens

    @property
    def cost_complete(self) -> bool:
        """False when some requests had no known price, so ``cost_usd`` is a lower bound."""
        return self.unpriced_requests == 0


_DURATION = re.compile(r"(\d+)\s*([smhdw])")
_UNITS = {"s": "seconds", "m": "minutes", "h": "hours", "d": "days", "w": "weeks"}


def parse_duration(text: str) -> timedelta | None:
    """``30m``, ``24h``, ``7d``, ``2w`` (also ``45s``) as a timedelta; None for text that is not one."""
    match = _DURATION.fullmatch(text.strip().lower())
    return timedelta(**{_UNITS[match[2]]: int(match[1])}) if match else None


def parse_since(text: str, *, now: datetime | None = None) -> datetime:
    """Read a ``--since`` value: a duration back from now ("30m", "24h", "7d", "2w") or a date/time.

    A date ("2026-11-01") means its midnight UTC; a date-time without a zone is taken as UTC.
    """
    duration = parse_duration(text)
    if duration is not None:
        return as_utc(now or datetime.now(UTC)) - duration
    try:
        return as_utc(datetime.fromisoformat(text.strip()))
    except ValueError:
        pass
    raise InputError(
        f"cannot read the time {text!r}: use a duration such as 30m, 24h, 7d or 2w, "
        "or a date such as 2026-11-01"
    )


class Ledger(Store):
    """Append-only record of requests, safe to share between threads and processes.

    ``record`` hands the row to a writer thread and returns at once, so accounting adds next to nothing to a
    call; the writer inserts whatever has queued in one transaction. ``report``, ``totals`` and ``close``
    flush first, and an exiting interpreter flushes open ledgers. A process killed outright loses only
    rows still queued (at most a fifth of a second's worth).
    """

    def __init__(self, path: Path | str, *, store_prompts: bool = False) -> None:
        self.store_prompts = store_prompts
        self.db = Database(path, MIGRATIONS, advice="move it aside (it keeps your usage history) and aigc will "
                            "start a new ledger, or set ledger = false")
        self.path = self.db.path
        self._queue: queue.SimpleQueue = queue.SimpleQueue()
        self._pending = 0
        self._idle = threading.Condition()
        self._hurry = threading.Event()
        self._writer: threading.Thread | None = None
        _open_ledgers.add(self)

    @classmethod
    def in_dir(cls, data_dir: Path | str, *, store_prompts: bool = False) -> Ledger:
        """The ledger at ``<data_dir>/ledger.db``."""
        return cls(Path(data_dir) / LEDGER_FILE, store_prompts=store_prompts)

    def record(self, entry: LedgerEntry) -> None:
        """Append one request (written by the writer thread; see the class docstring)."""
        keep = self.store_prompts
        row = (
            utc_stamp(entry.time), entry.backend, entry.model, entry.task,
            entry.prompt_tokens, entry.completion_tokens, entry.cost_usd, entry.latency_s,
            entry.status, entry.attempts, entry.request_id, entry.job, entry.client_key,
            entry.prompt if keep else None, entry.response if keep else None, entry.redactions,
        )
        with self._idle:
            self._pending += 1
            if self._writer is None:
                self._writer = threading.Thread(target=self._write, name="aigc-ledger", daemon=True)
                self._writer.start()
        self._queue.put(row)

    def _write(self) -> None:
        stop = False
        while not stop:
            first = self._queue.get()
            if first is _STOP:
                break
            # Linger so a busy client's rows go in together: one transaction, one thread switch. Rows put
            # meanwhile wake nobody; a flush cuts the wait short.
            self._hurry.wait(LINGER_S)
            self._hurry.clear()
            rows = [] if first is _HURRY else [first]
            while True:
                try:
                    row = self._queue.get_nowait()
                except queue.Empty:
                    break
                if row is _STOP:
                    stop = True
                elif row is not _HURRY:
                    rows.append(row)
            if rows:
                try:
                    with self.db.transaction():
                        self.db.conn.executemany(_INSERT, rows)
                except (sqlite3.Error, ConfigError) as e:  # accounting must never break the caller's work
                    log.warning("could not write %d usage row(s) to %s: %s", len(rows), self.path, e)
            with self._idle:
                self._pending -= len(rows)
                self._idle.notify_all()

    def flush(self, timeout: float = 30.0) -> None:
        """Wait until every recorded row is written."""
        if self._pending:
            self._hurry.set()
            self._queue.put(_HURRY)
        with self._idle:
            self._idle.wait_for(lambda: self._pending == 0, timeout=timeout)

    def report(
        self,
        since: timedelta | datetime | None = None,
        by: GroupBy | None = None,
        *,
        job: str | None = None,
    ) -> list[ReportRow]:
        """Totals since a moment (or over ``timedelta`` back from now), one row per group, ordered by key.

        Without ``by`` the result is a single row (with ``requests == 0`` on an empty ledger).
        """
        if by is not None and by not in _GROUP_EXPR:
            raise InputError(f"cannot group usage by {by!r}: choose one of {', '.join(_GROUP_EXPR)}")
        where, params = [], []
        if since is not None:
            start = datetime.now(UTC) - since if isinstance(since, timedelta) else since
            where.append("time >= ?")
            params.append(utc_stamp(start))
        if job is not None:
            where.append("job = ?")
            params.append(job)
        key = _GROUP_EXPR[by] if by else "NULL"
        sql = (
            f"SELECT {key} AS key, count(*), coalesce(sum(prompt_tokens), 0), coalesce(sum(completion_tokens), 0),"
            " coalesce(sum(cost_usd), 0.0), count(*) - count(cost_usd), coalesce(sum(status != 'ok'), 0)"
            " FROM requests"
            + (f" WHERE {' AND '.join(where)}" if where else "")
            + (" GROUP BY key ORDER BY key" if by else "")
        )
        self.flush()
        return [ReportRow(*row) for row in self.db.execute(sql, params)]

    def totals(self, since: timedelta | datetime | None = None) -> ReportRow:
        """Everything recorded (since a moment, if given) as one row."""
        return self.report(since)[0]

    def close(self) -> None:
        self.flush()
        with self._idle:
            writer, self._writer = self._writer, None
        if writer is not None:
            self._queue.put(_STOP)
            writer.join(timeout=30)
        _open_ledgers.discard(self)
        self.db.close()

    def __repr__(self) -> str:
        return f"Ledger({str(self.path)!r}, store_prompts={self.store_prompts})"

