"""Batch runs under fire: kill -9 at any moment, two runs at once, a run killed while a batch is pending.

Real processes, killed for real, against the local test server (which counts duplicated requests).
"""

from __future__ import annotations

import json
import random
import signal
import time

import pytest

from aigc.batch import job_status, load_job
from tests.openai_server import FakeOpenAIServer, Fault
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
    server.latency = 2.5  # the first run lasts longer than the second takes to start, even on a busy machine
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


# ---- signals: stop in order -------------------------------------------------------------------------------

def in_flight(job) -> int:
    return job_status(load_job(job)).in_flight


@pytest.mark.parametrize("signum, code", [(signal.SIGTERM, 143), (signal.SIGINT, 130)])
def test_a_signal_stops_sending_lets_requests_in_flight_finish_and_writes_the_report(server, tmp_path, signum,
                                                                                     code):
    server.latency = 1.0
    articles = make_articles(tmp_path / "articles", 12)
    job = write_job(tmp_path, SUMMARIZE)  # concurrency 4
    proc = aigc_process("batch", "run", job, "--json")
    wait_until(lambda: server.request_count >= 4)
    proc.send_signal(signum)  # as cron's timeout (SIGTERM) or Ctrl-C (SIGINT) would
    out, err = proc.communicate(timeout=60)
    assert proc.returncode == code, err
    report = json.loads(out)
    assert report["outcome"] == "interrupted" and report["exit_code"] == code
    assert "interrupted by SIG" in report["stopped"]
    # The four requests in flight finished and were written; nothing more was sent.
    assert server.request_count == 4 and report["done"] == 4 and report["pending"] == 8
    assert len(list((tmp_path / "out").iterdir())) == 4 and in_flight(job) == 0
    assert (tmp_path / ".aigc" / "job" / "reports" / f"{report['run_id']}.json").exists()

    server.latency = 0.0
    code, out, err = finish(job)
    assert code == 0, out + err
    assert {p.name: p.read_text() for p in (tmp_path / "out").iterdir()} == \
        {p.name: expected_text(p) for p in articles}
    assert server.stats["duplicates"] == 0 and server.stats["ok"] == 12


def test_a_second_signal_stops_waiting_and_leaves_every_unanswered_item_pending(server, tmp_path):
    server.latency = 60.0
    make_articles(tmp_path / "articles", 6)
    job = write_job(tmp_path, SUMMARIZE)
    proc = aigc_process("batch", "run", job, "--json")
    wait_until(lambda: server.request_count >= 4)
    proc.send_signal(signal.SIGTERM)
    time.sleep(0.5)
    started = time.monotonic()
    proc.send_signal(signal.SIGTERM)
    out, err = proc.communicate(timeout=60)
    assert proc.returncode == 143, err
    assert time.monotonic() - started < 10  # it did not wait for the 60 s answers
    report = json.loads(out)
    assert report["done"] == 0 and report["pending"] == 6 and in_flight(job) == 0


# ---- the Batch API: polling has a deadline --------------------------------------------------------------

def test_polling_a_batch_through_server_errors_gives_up_at_the_deadline_and_keeps_the_batch(server, tmp_path,
                                                                                            monkeypatch):
    server.batch_polls_to_complete = 10**6
    make_articles(tmp_path / "articles", 3)
    job = write_job(tmp_path, SUMMARIZE + "[batch_api]\npoll_interval_s = 0.05\n")
    monkeypatch.setenv("AIGC_DEADLINE", "2")
    monkeypatch.setenv("AIGC_MAX_ATTEMPTS", "1000")
    proc = aigc_process("batch", "run", job, "--via", "batch-api")
    wait_until(lambda: server.stats["batches_created"] == 1)
    server.enqueue_faults(*[Fault.server_error(503)] * 10_000)  # every poll from now on fails
    started = time.monotonic()
    out, err = proc.communicate(timeout=60)
    assert proc.returncode == 1, out + err
    assert time.monotonic() - started < 20
    assert "HTTP 503" in out and job_status(load_job(job)).open_batches  # the next run polls it again

    server.clear_faults()
    server.batch_polls_to_complete = 1
    monkeypatch.delenv("AIGC_DEADLINE")
    code, out, err = finish_via(job, "batch-api")
    assert code == 0, out + err
    assert server.stats["batches_created"] == 1


def finish_via(job, via: str) -> tuple[int, str, str]:
    proc = aigc_process("batch", "run", job, "--via", via)
    out, err = proc.communicate(timeout=120)
    return proc.returncode, out, err


# ---- kill -9, again and again, under faults -----------------------------------------------------------------

def test_150_items_killed_10_times_under_faults_end_with_every_output_once_complete_and_current(tmp_path,
                                                                                           monkeypatch):
    """kill -9 at random moments while 5% of requests fail with a 5xx and 2% lose their connection, and
    the inputs of a few items change in between: the run that finishes leaves every output once, whole,
    and written for the inputs as they are now, and each kill cost at most `concurrency` requests paid
    twice. (JSONL outputs under kill -9: test_kill_9_at_any_moment_then_a_rerun_completes_every_item_once.)"""
    rng = random.Random(9)
    concurrency, kills = 8, 10
    with FakeOpenAIServer(reply=reply_for, latency=0.05, error_rate=0.05, drop_rate=0.02, seed=rng.random()) as server:
        use_server(monkeypatch, server)
        articles = make_articles(tmp_path / "articles", 150)
        job = write_job(tmp_path, SUMMARIZE.replace("concurrency = 4", f"concurrency = {concurrency}"))
        changed = []
        for k in range(kills):
            if k == kills // 2:  # some inputs change between two kills: their outputs must follow
                for path in rng.sample(articles, 5):  # MARK-0xx -> MARK-8xx, MARK-1xx -> MARK-9xx
                    path.write_text(path.read_text().replace("MARK-0", "MARK-8").replace("MARK-1", "MARK-9"))
                    changed.append(path)
            proc = aigc_process("batch", "run", job)
            target = server.request_count + rng.randint(3, 20)
            wait_until(lambda proc=proc, target=target: server.request_count >= target or proc.poll() is not None)
            time.sleep(rng.uniform(0, 0.08))
            kill(proc)
            assert proc.returncode == -signal.SIGKILL, "the run ended before it could be killed"

        code, out, err = finish(job)
        assert code == 0, out + err

    expected = {p.name: expected_text(p) for p in articles}
    files = {p.name: p.read_text() for p in (tmp_path / "out").iterdir()}
    assert files == expected  # each output once, whole and current; no temporary file left
    stats = server.stats
    assert stats["duplicates"] <= concurrency * kills
    assert 150 <= stats["ok"] - stats["duplicates"] <= 150 + len(changed)
    status = job_status(load_job(job))
    assert status.done == 150 and status.in_flight == 0
