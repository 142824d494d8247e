"""Batch runs under fire: kill -9 at any moment, two runs at once, a run killed while a batch is pending.

Real processes, killed for real, against the local test server (which counts duplicated requests).
"""

from __future__ import annotations

import json
import signal
import time

import pytest

from aigc.batch import job_status, load_job
from tests.openai_server import FakeOpenAIServer
from tests.test_batch_job import (
    SUMMARIZE,
    aigc_process,
    expected_text,
    make_articles,
    reply_for,
    use_server,
    write_job,
)

pytestmark = pytest.mark.slow

CONCURRENCY = 4


def wait_until(condition, timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.005)


def kill_when(server, proc, requests: int, delay: float) -> None:
    """kill -9 the run once the server has seen ``requests`` chat requests (then ``delay`` seconds)."""
    wait_until(lambda: server.request_count >= requests or proc.poll() is not None)
    time.sleep(delay)
    kill(proc)


def kill(proc) -> None:
    proc.send_signal(signal.SIGKILL)
    proc.communicate(timeout=30)  # reaps it and closes its pipes


def finish(job) -> tuple[int, str, str]:
    proc = aigc_process("batch", "run", job)
    out, err = proc.communicate(timeout=120)
    return proc.returncode, out, err


@pytest.fixture
def server(monkeypatch):
    with FakeOpenAIServer(reply=reply_for, latency=0.15, batch_polls_to_complete=1) as s:
        use_server(monkeypatch, s)
        yield s


@pytest.mark.parametrize("output, kills", [
    ("dir", [(1, 0.0), (9, 0.16), (17, 0.08)]),
    ("jsonl", [(5, 0.15), (14, 0.02)]),
])
def test_kill_9_at_any_moment_then_a_rerun_completes_every_item_once(server, tmp_path, output, kills):
    articles = make_articles(tmp_path / "articles", 24)
    body = SUMMARIZE.replace("concurrency = 4", f"concurrency = {CONCURRENCY}")
    if output == "jsonl":
        body = body.replace('dir = "out"', 'jsonl = "out.jsonl"')
    job = write_job(tmp_path, body)
    for requests, delay in kills:
        proc = aigc_process("batch", "run", job)
        kill_when(server, proc, requests, delay)
        assert proc.returncode == -signal.SIGKILL
    status = job_status(load_job(job))
    assert status.last_run["finished"] is None and not status.running

    code, out, err = finish(job)
    assert code == 0, out + err
    expected = {p.name: expected_text(p) for p in articles}
    if output == "dir":
        files = sorted((tmp_path / "out").iterdir())
        assert [p.name for p in files] == sorted(expected)  # no temporary files left either
        assert {p.name: p.read_text() for p in files} == expected
    else:
        lines = (tmp_path / "out.jsonl").read_text().splitlines()
        records = [json.loads(line) for line in lines]  # every line whole
        assert sorted(r["id"] for r in records) == sorted(f"articles/{name}" for name in expected)
        assert {r["id"].split("/")[1]: r["text"] + "\n" for r in records} == expected
    # Only requests in flight when a run died may have been paid twice.
    stats = server.stats
    assert stats["duplicates"] <= CONCURRENCY * len(kills)
    assert stats["ok"] - stats["duplicates"] == 24
    assert job_status(load_job(job)).done == 24


def test_a_second_run_of_the_same_job_exits_75_at_once(server, tmp_path):
    server.latency = 1.0  # the first run lasts longer than the second takes to start
    make_articles(tmp_path / "articles", 6)
    job = write_job(tmp_path, SUMMARIZE.replace("concurrency = 4", "concurrency = 2"))
    first = aigc_process("batch", "run", job)
    wait_until(lambda: server.request_count >= 1)
    started = time.monotonic()
    second = aigc_process("batch", "run", job)
    out, err = second.communicate(timeout=60)
    assert second.returncode == 75
    assert "another run of job 'job' is in progress" in err and f"pid {first.pid}" in err
    assert time.monotonic() - started < 10 and first.poll() is None
    out, err = first.communicate(timeout=60)
    assert first.returncode == 0, out + err
    assert server.stats["requests"] == 6 and server.stats["duplicates"] == 0


def test_a_run_killed_while_its_batch_is_pending_resumes_polling_instead_of_submitting_again(server, tmp_path):
    server.batch_polls_to_complete = 10**6  # the batch stays in progress until we say so
    articles = make_articles(tmp_path / "articles", 6)
    job = write_job(tmp_path, SUMMARIZE + "[batch_api]\npoll_interval_s = 0.05\n")
    proc = aigc_process("batch", "run", job, "--via", "batch-api")
    wait_until(lambda: server.stats["batches_created"] == 1)
    time.sleep(0.3)  # a few polls
    kill(proc)
    assert job_status(load_job(job)).open_batches

    server.batch_polls_to_complete = 1
    proc = aigc_process("batch", "run", job, "--via", "batch-api")
    out, err = proc.communicate(timeout=120)
    assert proc.returncode == 0, out + err
    assert server.stats["batches_created"] == 1 and server.stats["requests"] == 0
    assert {p.name: p.read_text() for p in (tmp_path / "out").iterdir()} == \
        {p.name: expected_text(p) for p in articles}
    assert not job_status(load_job(job)).open_batches
