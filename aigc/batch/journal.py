"""The job journal: one SQLite file per job recording every item's state, every run and every batch.

An item moves ``pending → in_flight → done`` (or ``failed``). It is marked in flight before its request is
sent and done only after its output is durably in place, so after a crash the journal never claims more
than is true: items left in flight are redone by the next run (the response cache answers those whose
reply had already arrived). ``failed`` items carry their reason and whether retrying could help
(``permanent``); plain reruns retry the others, ``--retry-failed`` retries all.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..db import Database, Migrations, Store, utc_stamp

__all__ = ["Journal", "ItemRow", "RunRow", "BatchRow"]

MIGRATIONS = Migrations()
MIGRATIONS.register(
    "m001_initial",
    """
    CREATE TABLE items (
        key TEXT PRIMARY KEY,
        item_id TEXT NOT NULL,
        state TEXT NOT NULL CHECK (state IN ('pending', 'in_flight', 'done', 'failed')),
        permanent INTEGER NOT NULL DEFAULT 0,
        tries INTEGER NOT NULL DEFAULT 0,
        error TEXT,
        error_type TEXT,
        output TEXT,
        text TEXT,
        prompt_tokens INTEGER NOT NULL DEFAULT 0,
        completion_tokens INTEGER NOT NULL DEFAULT 0,
        cost_usd REAL,
        cached INTEGER NOT NULL DEFAULT 0,
        batch TEXT,
        run_id TEXT,
        updated TEXT NOT NULL
    ) WITHOUT ROWID;
    CREATE INDEX items_item_id ON items (item_id);
    CREATE INDEX items_batch ON items (batch);
    CREATE TABLE runs (
        id TEXT PRIMARY KEY,
        started TEXT NOT NULL,
        finished TEXT,
        mode TEXT NOT NULL,
        pid INTEGER,
        exit_code INTEGER,
        outcome TEXT,
        done INTEGER,
        failed INTEGER,
        pending INTEGER,
        tokens INTEGER NOT NULL DEFAULT 0,
        cost_usd REAL,
        report TEXT
    );
    CREATE TABLE batches (
        submission TEXT PRIMARY KEY,
        batch_id TEXT UNIQUE,
        input_file_id TEXT,
        status TEXT NOT NULL,
        items INTEGER NOT NULL DEFAULT 0,
        created TEXT NOT NULL,
        closed TEXT,
        run_id TEXT
    );
    """,
)


@dataclass(frozen=True)
class ItemRow:
    key: str
    item_id: str
    state: str
    permanent: bool
    tries: int
    error: str | None
    error_type: str | None
    output: str | None
    text: str | None
    prompt_tokens: int
    completion_tokens: int
    cost_usd: float | None
    cached: bool
    batch: str | None
    run_id: str | None
    updated: str


@dataclass(frozen=True)
class RunRow:
    id: str
    started: str
    finished: str | None
    mode: str
    pid: int | None
    exit_code: int | None
    outcome: str | None
    done: int | None
    failed: int | None
    pending: int | None
    tokens: int
    cost_usd: float | None
    report: str | None


@dataclass(frozen=True)
class BatchRow:
    submission: str
    batch_id: str | None
    input_file_id: str | None
    status: str
    items: int
    created: str
    closed: str | None
    run_id: str | None


def _item(row: Any) -> ItemRow:
    d = dict(row)
    d["permanent"], d["cached"] = bool(d["permanent"]), bool(d["cached"])
    return ItemRow(**d)


class Journal(Store):
    """The journal of one job. Every method is one atomic write or read."""

    def __init__(self, path: Path | str, *, outputs_record: str = "written.jsonl") -> None:
        advice = (f"move it aside (mv {path} {path}.damaged) and run again: outputs recorded in "
                  f"{outputs_record} are kept as done, the others are done again (free from the response cache)")
        self.db = Database(path, MIGRATIONS, advice=advice)
        self.path = self.db.path
        try:
            self.db.check()  # damage anywhere is found now, not halfway through a run
        except BaseException:
            self.db.close()
            raise

    # -- items ------------------------------------------------------------------------------------------
    def register(self, items: Iterable[tuple[str, str]]) -> None:
        """Record (key, item id) pairs not seen before as pending."""
        stamp = utc_stamp()
        with self.db.transaction() as conn:
            conn.executemany(
                "INSERT INTO items (key, item_id, state, updated) VALUES (?, ?, 'pending', ?) "
                "ON CONFLICT (key) DO NOTHING",
                [(key, item_id, stamp) for key, item_id in items])

    def rows(self, keys: Iterable[str] | None = None) -> dict[str, ItemRow]:
        """Rows by key: the given keys (those known), or all."""
        if keys is None:
            return {r["key"]: _item(r) for r in self.db.execute("SELECT * FROM items")}
        wanted = list(keys)
        out: dict[str, ItemRow] = {}
        for start in range(0, len(wanted), 500):
            chunk = wanted[start:start + 500]
            marks = ",".join("?" * len(chunk))
            for r in self.db.execute(f"SELECT * FROM items WHERE key IN ({marks})", chunk):
                out[r["key"]] = _item(r)
        return out

    def start(self, key: str, run_id: str, batch: str | None = None) -> None:
        """In flight: about to be sent (or submitted in ``batch``)."""
        self.db.execute(
            "UPDATE items SET state = 'in_flight', tries = tries + 1, run_id = ?, batch = ?, updated = ? "
            "WHERE key = ?", (run_id, batch, utc_stamp(), key))

    def start_many(self, keys: list[str], run_id: str, batch: str) -> None:
        stamp = utc_stamp()
        with self.db.transaction() as conn:
            conn.executemany(
                "UPDATE items SET state = 'in_flight', tries = tries + 1, run_id = ?, batch = ?, updated = ? "
                "WHERE key = ?", [(run_id, batch, stamp, k) for k in keys])

    def done(self, key: str, *, run_id: str, output: str | None, text: str | None, prompt_tokens: int,
             completion_tokens: int, cost_usd: float | None, cached: bool) -> None:
        self.db.execute(
            "UPDATE items SET state = 'done', permanent = 0, error = NULL, error_type = NULL, output = ?, "
            "text = ?, prompt_tokens = ?, completion_tokens = ?, cost_usd = ?, cached = ?, run_id = ?, "
            "batch = NULL, updated = ? WHERE key = ?",
            (output, text, prompt_tokens, completion_tokens, cost_usd, int(cached), run_id, utc_stamp(), key))

    def fail(self, key: str, *, run_id: str, error: str, error_type: str, permanent: bool) -> None:
        self.db.execute(
            "UPDATE items SET state = 'failed', error = ?, error_type = ?, permanent = ?, run_id = ?, "
            "batch = NULL, updated = ? WHERE key = ?",
            (error, error_type, int(permanent), run_id, utc_stamp(), key))

    def release(self, key: str) -> None:
        """Back to pending: it was not sent (budget reached, run stopped), so nothing is lost."""
        self.db.execute("UPDATE items SET state = 'pending', batch = NULL, updated = ? WHERE key = ?",
                        (utc_stamp(), key))

    def release_in_flight(self, run_id: str) -> int:
        """Back to pending: every item this run had in flight outside a Batch API batch (the run was
        stopped before their answers came); returns how many."""
        return len(self.db.execute(
            "UPDATE items SET state = 'pending', updated = ? WHERE state = 'in_flight' AND run_id = ? "
            "AND batch IS NULL RETURNING 1", (utc_stamp(), run_id)))

    def legacy_outputs(self) -> dict[str, str]:
        """Output path -> key of the latest done item written there (the journal's word on outputs that
        have no record of their own: written before aigc recorded outputs)."""
        rows = self.db.execute("SELECT output, key FROM items WHERE state = 'done' AND output IS NOT NULL "
                               "ORDER BY updated")
        return {r[0]: r[1] for r in rows}

    # -- runs -------------------------------------------------------------------------------------------
    def begin_run(self, run_id: str, mode: str, pid: int) -> None:
        self.db.execute("INSERT INTO runs (id, started, mode, pid) VALUES (?, ?, ?, ?)",
                        (run_id, utc_stamp(), mode, pid))

    def end_run(self, run_id: str, *, exit_code: int, outcome: str, done: int, failed: int, pending: int,
                tokens: int, cost_usd: float | None, report: str | None) -> None:
        self.db.execute(
            "UPDATE runs SET finished = ?, exit_code = ?, outcome = ?, done = ?, failed = ?, pending = ?, "
            "tokens = ?, cost_usd = ?, report = ? WHERE id = ?",
            (utc_stamp(), exit_code, outcome, done, failed, pending, tokens, cost_usd, report, run_id))

    def last_run(self) -> RunRow | None:
        rows = self.db.execute("SELECT * FROM runs ORDER BY started DESC, rowid DESC LIMIT 1")
        return RunRow(**dict(rows[0])) if rows else None

    def totals(self) -> tuple[int, int, float, int]:
        """(runs, tokens, cost in USD, runs whose cost is unknown) over every finished run."""
        (runs, tokens, cost, unknown), = self.db.execute(
            "SELECT count(*), coalesce(sum(tokens), 0), coalesce(sum(cost_usd), 0), "
            "sum(CASE WHEN cost_usd IS NULL AND finished IS NOT NULL THEN 1 ELSE 0 END) FROM runs")
        return runs, tokens, cost, unknown or 0

    # -- Batch API submissions --------------------------------------------------------------------------
    def add_batch(self, submission: str, *, input_file_id: str, items: int, run_id: str) -> None:
        self.db.execute(
            "INSERT INTO batches (submission, input_file_id, status, items, created, run_id) "
            "VALUES (?, ?, 'submitting', ?, ?, ?)", (submission, input_file_id, items, utc_stamp(), run_id))

    def set_batch(self, submission: str, *, batch_id: str | None = None, status: str | None = None,
                  closed: bool = False) -> None:
        self.db.execute(
            "UPDATE batches SET batch_id = coalesce(?, batch_id), status = coalesce(?, status), "
            "closed = CASE WHEN ? THEN ? ELSE closed END WHERE submission = ?",
            (batch_id, status, int(closed), utc_stamp(), submission))

    def open_batches(self) -> list[BatchRow]:
        rows = self.db.execute("SELECT * FROM batches WHERE closed IS NULL ORDER BY created")
        return [BatchRow(**dict(r)) for r in rows]

    def batch_keys(self, submission: str) -> list[str]:
        return [r[0] for r in self.db.execute("SELECT key FROM items WHERE batch = ?", (submission,))]
