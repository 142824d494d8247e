"""The usage ledger, and the named migrations its file (like the cache and the journal) is built on."""

from __future__ import annotations

import sqlite3
import subprocess
import sys
import threading
import time
from contextlib import closing
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from aigc.db import Database, Migrations
from aigc.errors import ConfigError, InputError
from aigc.ledger import Ledger, LedgerEntry, parse_since

NOW = datetime.now(UTC)
REPO = Path(__file__).resolve().parent.parent


def entry(**kw) -> LedgerEntry:
    base = dict(backend="openai", model="gpt-4o-mini", task="summarize", prompt_tokens=100,
                completion_tokens=20, cost_usd=0.001, latency_s=0.5)
    return LedgerEntry(**{**base, **kw})


@pytest.fixture
def ledger(tmp_path):
    with Ledger.in_dir(tmp_path / "data") as ledger:
        yield ledger


def file_bytes(path: Path) -> bytes:
    return b"".join(p.read_bytes() for p in (path, Path(f"{path}-wal")) if p.exists())


# -- recording and reporting ------------------------------------------------------------------------------

def test_report_groups_by_model_task_day_and_honours_since(ledger):
    ledger.record(entry(model="gpt-4o", task="translate", cost_usd=0.05, time=NOW - timedelta(days=10)))
    ledger.record(entry(model="gpt-4o", time=NOW - timedelta(days=2)))
    ledger.record(entry(time=NOW - timedelta(hours=1)))
    ledger.record(entry(task="translate", time=NOW - timedelta(minutes=5)))

    by_model = {row.key: row for row in ledger.report(by="model")}
    assert by_model["gpt-4o"].requests == 2
    assert by_model["gpt-4o"].cost_usd == pytest.approx(0.051)
    assert by_model["gpt-4o-mini"].prompt_tokens == 200
    assert by_model["gpt-4o-mini"].total_tokens == 240

    last_week = ledger.report(since=timedelta(days=7), by="model")
    assert {row.key: row.requests for row in last_week} == {"gpt-4o": 1, "gpt-4o-mini": 2}

    by_task = ledger.report(since=parse_since("24h"), by="task")
    assert [(row.key, row.requests) for row in by_task] == [("summarize", 1), ("translate", 1)]

    days = [row.key for row in ledger.report(by="day")]
    assert days == sorted(days)
    assert days[0] == (NOW - timedelta(days=10)).strftime("%Y-%m-%d")

    assert ledger.totals().requests == 4
    assert ledger.totals(since=timedelta(hours=2)).requests == 2


def test_unknown_prices_and_failures_are_marked_not_hidden(ledger):
    ledger.record(entry(cost_usd=0.002))
    ledger.record(entry(model="my-finetune", cost_usd=None))
    ledger.record(entry(status="RateLimited", attempts=6, prompt_tokens=0, completion_tokens=0, cost_usd=0.0))

    total = ledger.totals()
    assert (total.requests, total.failures, total.unpriced_requests) == (3, 1, 1)
    assert total.cost_usd == pytest.approx(0.002)
    assert not total.cost_complete  # the sum is a lower bound
    assert ledger.report(by="model")[0].cost_complete  # gpt-4o-mini alone is fully priced


def test_backend_and_job_reports(ledger):
    ledger.record(entry(backend="local", model="SmolLM2-135M", cost_usd=0.0, job="nightly-news"))
    ledger.record(entry(job="nightly-news"))
    ledger.record(entry())

    assert [(r.key, r.requests) for r in ledger.report(by="backend")] == [("local", 1), ("openai", 2)]
    assert ledger.totals().requests == 3
    assert ledger.report(job="nightly-news")[0].requests == 2
    assert [(r.key, r.requests) for r in ledger.report(by="job")] == [(None, 1), ("nightly-news", 2)]


def test_empty_ledger_reports_zeroes(ledger):
    total = ledger.totals()
    assert (total.requests, total.total_tokens, total.cost_usd, total.failures) == (0, 0, 0.0, 0)
    assert ledger.report(by="day") == []


def test_unknown_grouping_is_an_input_error(ledger):
    with pytest.raises(InputError, match="choose one of model, task, backend, job, key, day"):
        ledger.report(by="colour")


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("30m", NOW - timedelta(minutes=30)),
        ("24h", NOW - timedelta(hours=24)),
        ("7d", NOW - timedelta(days=7)),
        (" 2W ", NOW - timedelta(weeks=2)),
        ("45s", NOW - timedelta(seconds=45)),
        ("2026-11-01", datetime(2026, 11, 1, tzinfo=UTC)),
        ("2026-11-01T08:30", datetime(2026, 11, 1, 8, 30, tzinfo=UTC)),
        ("2026-11-01T08:30+02:00", datetime(2026, 11, 1, 6, 30, tzinfo=UTC)),
    ],
)
def test_parse_since(text, expected):
    assert parse_since(text, now=NOW) == expected


@pytest.mark.parametrize("text", ["", "yesterday", "7", "-3d", "7 days", "2026-13-01", "3y"])
def test_parse_since_rejects_with_a_hint(text):
    with pytest.raises(InputError, match=r"use a duration such as 30m, 24h, 7d .* or a date such as 2026-11-01"):
        parse_since(text)


# -- privacy -----------------------------------------------------------------------------------------------

SECRET_PROMPT = "Summarise the merger memo for Project Bluefinch"


def test_prompts_are_not_stored_by_default(tmp_path):
    path = tmp_path / "ledger.db"
    with Ledger(path) as ledger:
        ledger.record(entry(prompt=SECRET_PROMPT, response="Bluefinch merges in May"))
        assert SECRET_PROMPT.encode() not in file_bytes(path)
    assert b"Bluefinch" not in file_bytes(path)
    assert ledger.path == path


def test_prompts_are_stored_when_opted_in(tmp_path):
    path = tmp_path / "ledger.db"
    with Ledger(path, store_prompts=True) as ledger:
        ledger.record(entry(prompt=SECRET_PROMPT, response="Bluefinch merges in May"))
    assert SECRET_PROMPT.encode() in file_bytes(path)
    with closing(sqlite3.connect(path)) as conn:
        assert conn.execute("SELECT response FROM requests").fetchone() == ("Bluefinch merges in May",)


# -- concurrency and speed --------------------------------------------------------------------------------

def test_threads_can_share_one_ledger(ledger):
    def work(n):
        for i in range(50):
            ledger.record(entry(task=f"t{n}", request_id=f"req-{n}-{i}"))

    threads = [threading.Thread(target=work, args=(n,)) for n in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert ledger.totals().requests == 400
    assert all(row.requests == 50 for row in ledger.report(by="task"))


def test_processes_can_append_to_the_same_file(tmp_path):
    path = tmp_path / "ledger.db"
    script = (
        "import sys; from aigc.ledger import Ledger, LedgerEntry\n"
        "with Ledger(sys.argv[1]) as l:\n"
        "    for _ in range(100): l.record(LedgerEntry(backend='fake', model='m', task=sys.argv[2]))\n"
    )
    procs = [subprocess.Popen([sys.executable, "-c", script, str(path), f"p{n}"], cwd=REPO) for n in range(4)]
    assert [p.wait(timeout=30) for p in procs] == [0, 0, 0, 0]
    with Ledger(path) as ledger:
        assert [(r.key, r.requests) for r in ledger.report(by="task")] == [(f"p{n}", 100) for n in range(4)]


def test_a_new_file_opens_while_another_process_is_still_writing_to_it(tmp_path):
    # Two processes opening a new ledger at once: one may switch the file to WAL mode while the other still
    # writes to it in the old mode, where SQLite answers "locked" at once rather than waiting. Opening waits.
    path = tmp_path / "ledger.db"
    other = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
    other.execute("CREATE TABLE t (x)")
    other.execute("BEGIN")
    other.execute("INSERT INTO t VALUES (1)")
    threading.Timer(0.3, other.execute, ["COMMIT"]).start()
    started = time.perf_counter()
    with Ledger(path) as ledger:
        ledger.record(entry())
        assert ledger.totals().requests == 1
    assert time.perf_counter() - started >= 0.3
    other.close()


def test_recording_is_cheap_enough_for_every_request(ledger):
    e = entry()
    batches = []
    for _ in range(5):  # the best batch, so a busy machine does not fail the test
        start = time.perf_counter()
        for _ in range(100):
            ledger.record(e)
        batches.append((time.perf_counter() - start) / 100)
    assert min(batches) < 0.001, f"record() took {min(batches) * 1e6:.0f} µs"


# -- migrations ---------------------------------------------------------------------------------------------

def test_an_old_ledger_file_is_upgraded_and_keeps_its_rows(tmp_path):
    # A ledger.db as the first release wrote it: no job column.
    path = tmp_path / "ledger.db"
    conn = sqlite3.connect(path)
    conn.executescript(
        """
        CREATE TABLE _migrations (name TEXT PRIMARY KEY, applied_at TEXT NOT NULL);
        INSERT INTO _migrations VALUES ('m001_initial', '2026-01-01T00:00:00+00:00');
        CREATE TABLE requests (
            id INTEGER PRIMARY KEY, time TEXT NOT NULL, backend TEXT NOT NULL, model TEXT NOT NULL,
            task TEXT NOT NULL, prompt_tokens INTEGER NOT NULL DEFAULT 0,
            completion_tokens INTEGER NOT NULL DEFAULT 0, cost_usd REAL, latency_s REAL NOT NULL DEFAULT 0,
            status TEXT NOT NULL DEFAULT 'ok', attempts INTEGER NOT NULL DEFAULT 1, request_id TEXT,
            prompt TEXT, response TEXT);
        CREATE INDEX requests_time ON requests (time);
        INSERT INTO requests (time, backend, model, task, prompt_tokens, completion_tokens, cost_usd)
            VALUES ('2026-01-02T10:00:00.000000Z', 'openai', 'gpt-4o-mini', 'answer', 10, 5, 0.0001);
        """
    )
    conn.close()

    with Ledger(path) as ledger:
        ledger.record(entry(job="cron"))
        assert [(r.key, r.requests) for r in ledger.report(by="job")] == [(None, 1), ("cron", 1)]
        assert ledger.report(by="day")[0].key == "2026-01-02"
        assert ledger.db.applied_migrations() == ["m001_initial", "m002_add_job", "m003_add_client_key",
                                                      "m004_add_redactions"]
        ledger.record(entry(client_key="team-web"))
        assert [(r.key, r.requests) for r in ledger.report(by="key")] == [(None, 2), ("team-web", 1)]


def test_reopening_applies_nothing_twice(tmp_path):
    path = tmp_path / "ledger.db"
    for _ in range(3):
        with Ledger(path) as ledger:
            ledger.record(entry())
    with Ledger(path) as ledger:
        assert ledger.totals().requests == 3
        assert ledger.db.applied_migrations() == ["m001_initial", "m002_add_job", "m003_add_client_key",
                                                      "m004_add_redactions"]


def test_only_new_migrations_run_each_in_its_own_transaction(tmp_path):
    path = tmp_path / "notes.db"
    calls = []
    migrations = Migrations()
    migrations.register("m001_notes", "CREATE TABLE notes (id INTEGER PRIMARY KEY, text TEXT);")

    @migrations.register("m002_seed")
    def _(conn):
        calls.append("m002")
        conn.execute("INSERT INTO notes (text) VALUES ('hello; world')")

    with Database(path, migrations) as db:
        assert db.applied_migrations() == ["m001_notes", "m002_seed"]
    with Database(path, migrations) as db:
        assert calls == ["m002"]
        assert db.execute("SELECT text FROM notes")[0]["text"] == "hello; world"

    @migrations.register("m003_broken")
    def _(conn):
        conn.execute("ALTER TABLE notes ADD COLUMN tags TEXT")
        raise RuntimeError("bug in the middle of a migration")

    with pytest.raises(RuntimeError, match="bug in the middle"):
        Database(path, migrations)
    with Database(path) as db:  # nothing of m003 stuck: no column, not recorded
        assert "tags" not in [row["name"] for row in db.execute("PRAGMA table_info(notes)")]
        assert db.applied_migrations() == ["m001_notes", "m002_seed"]


def test_a_migration_name_cannot_be_registered_twice():
    migrations = Migrations()
    migrations.register("m001", "SELECT 1")
    with pytest.raises(ValueError, match="registered twice"):
        migrations.register("m001", "SELECT 2")


def test_files_are_opened_for_sharing(tmp_path):
    with Database(tmp_path / "deep" / "er" / "x.db") as db:
        assert db.execute("PRAGMA journal_mode")[0][0] == "wal"
        assert db.execute("PRAGMA foreign_keys")[0][0] == 1
        assert db.execute("PRAGMA busy_timeout")[0][0] == 30_000


def test_a_file_that_is_not_a_database_is_a_config_error(tmp_path):
    path = tmp_path / "ledger.db"
    path.write_bytes(b"this is a text file, not SQLite\n" * 100)
    with pytest.raises(ConfigError, match="damaged or not an aigc database.*move it aside"):
        Ledger(path)
