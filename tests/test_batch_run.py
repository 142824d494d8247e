"""Batch runs as an operator sees them: the CLI against the local test server, in this process."""

from __future__ import annotations

import gc
import json
import time
from pathlib import Path

import pytest

from tests.openai_server import FakeOpenAIServer, Fault
from tests.test_batch_job import (
    SUMMARIZE,
    expected_text,
    make_articles,
    reply_for,
    run_cli,
    use_server,
    write_job,
)

REPO = Path(__file__).resolve().parent.parent


@pytest.fixture
def server(monkeypatch):
    with FakeOpenAIServer(reply=reply_for, batch_polls_to_complete=1) as s:
        use_server(monkeypatch, s)
        yield s


def outputs(tmp_path) -> dict[str, str]:
    return {p.name: p.read_text() for p in sorted((tmp_path / "out").glob("*"))}


def last_report(tmp_path) -> dict:
    reports = sorted((tmp_path / ".aigc" / "job" / "reports").glob("*.json"))
    return json.loads(reports[-1].read_text())


def test_a_run_does_every_item_once_and_a_rerun_sends_nothing(server, tmp_path, capsys):
    articles = make_articles(tmp_path / "articles", 6)
    job = write_job(tmp_path, SUMMARIZE)
    code, out, err = run_cli(capsys, "batch", "run", job)
    assert code == 0, out + err
    assert outputs(tmp_path) == {p.name: expected_text(p) for p in articles}
    assert "6 items: 6 done, 0 failed, 0 pending" in out
    assert "aigc batch: 6/6 settled" in err and "\r" not in err  # plain lines when not on a terminal
    report = last_report(tmp_path)
    assert report["exit_code"] == 0 and report["done_this_run"] == 6 and report["tokens"] > 0
    assert server.request_count == 6

    code, out, _ = run_cli(capsys, "batch", "run", job)
    assert code == 0 and "0 done" in out.splitlines()[1]
    assert server.request_count == 6

    # A changed input is a new item; the others stay done.
    articles[2].write_text(articles[2].read_text() + "Late news: MARK-002 was amended.\n")
    code, out, _ = run_cli(capsys, "batch", "run", job)
    assert code == 0 and server.request_count == 7
    assert last_report(tmp_path)["done_this_run"] == 1


def test_while_a_run_sends_what_was_loaded_before_it_is_out_of_the_collectors_way(tmp_path, capsys, monkeypatch):
    frozen = []

    def reply(body):
        frozen.append(gc.get_freeze_count())
        return reply_for(body)

    with FakeOpenAIServer(reply=reply) as s:
        use_server(monkeypatch, s)
        make_articles(tmp_path / "articles", 2)
        code, out, err = run_cli(capsys, "batch", "run", write_job(tmp_path, SUMMARIZE))
    assert code == 0, out + err
    assert len(frozen) == 2 and min(frozen) > 20_000  # the SDK's objects among them: no pause to walk them
    assert gc.get_freeze_count() == 0  # in the collector's care again after the run


def test_a_changed_template_redoes_every_item_and_other_jobs_reuse_the_cache(server, tmp_path, capsys):
    make_articles(tmp_path / "articles", 3)
    (tmp_path / "templates").mkdir()
    template = tmp_path / "templates" / "brief.j2"
    template.write_text("{% block user %}Brief of: {{ text }}{% endblock %}")
    body = SUMMARIZE.replace('task = "summarize"', 'template = "brief"\ntemplates_dir = "templates"')
    body = body.replace('length = "2 sentences"', "")
    job = write_job(tmp_path, body)
    assert run_cli(capsys, "batch", "run", job)[0] == 0
    template.write_text("{% block user %}A brief of: {{ text }}{% endblock %}")
    assert run_cli(capsys, "batch", "run", job)[0] == 0
    assert server.request_count == 6
    # Another job asking the same questions is answered from the response cache, at no cost...
    other = write_job(tmp_path, body.replace('dir = "out"', 'dir = "out2"'), name="other.toml")
    code, out, _ = run_cli(capsys, "batch", "run", other)
    assert code == 0 and server.request_count == 6 and "(3 from the cache)" in out
    assert len(list((tmp_path / "out2").iterdir())) == 3
    # ...unless told not to.
    third = write_job(tmp_path, body.replace('dir = "out"', 'dir = "out3"'), name="third.toml")
    assert run_cli(capsys, "batch", "run", third, "--no-cache")[0] == 0
    assert server.request_count == 9


def test_bad_inputs_are_failed_items_with_reasons_and_the_rest_complete(server, tmp_path, capsys):
    make_articles(tmp_path / "articles", 3)
    (tmp_path / "articles" / "empty.md").write_bytes(b"  \n")
    (tmp_path / "articles" / "binary.md").write_bytes(b"\x89PNG\r\n\x1a\n\x00\x00")
    (tmp_path / "articles" / "latin1.md").write_bytes(b"Caf\xe9 cr\xe8me")
    job = write_job(tmp_path, SUMMARIZE)
    code, out, _ = run_cli(capsys, "batch", "run", job)
    assert code == 1
    assert sorted(outputs(tmp_path)) == ["item-000.md", "item-001.md", "item-002.md"]
    failures = {f["id"].rsplit("/", 1)[-1]: f for f in last_report(tmp_path)["failures"]}
    assert set(failures) == {"empty.md", "binary.md", "latin1.md"}
    assert "empty" in failures["empty.md"]["reason"] and "binary" in failures["binary.md"]["reason"]
    assert "not UTF-8" in failures["latin1.md"]["reason"] and failures["latin1.md"]["permanent"]
    assert "failed:" in out and "latin1.md" in out
    assert server.request_count == 3
    # Fixed, the file is a new item and completes.
    (tmp_path / "articles" / "latin1.md").write_text("Café crème MARK-099.")
    code, out, _ = run_cli(capsys, "batch", "run", job)
    assert code == 1 and "4 done" in out.splitlines()[0]


def test_jsonl_records_in_and_out(server, tmp_path, capsys):
    records = [{"id": "r1", "text": "MARK-101 first"}, {"id": 2, "text": "MARK-102 second", "url": "x"},
               {"id": "r3", "text": ""}]
    lines = [json.dumps(r) for r in records] + ["{not json", json.dumps({"text": "no id"}),
                                               json.dumps({"id": "r1", "text": "again"})]
    (tmp_path / "records.jsonl").write_text("\n".join(lines) + "\n")
    body = SUMMARIZE.replace('glob = "articles/*.md"', 'jsonl = "records.jsonl"').replace(
        'dir = "out"', 'jsonl = "out.jsonl"')
    job = write_job(tmp_path, body)
    code, _, _ = run_cli(capsys, "batch", "run", job)
    assert code == 1
    written = [json.loads(line) for line in (tmp_path / "out.jsonl").read_text().splitlines()]
    assert sorted(w["id"] for w in written) == ["2", "r1"]
    assert all(w["text"].startswith("Summary of MARK-10") for w in written)
    reasons = {f["id"]: f["reason"] for f in last_report(tmp_path)["failures"]}
    assert "empty" in reasons["r3"] and "not valid JSON" in reasons["line 4"]
    assert "no id" in reasons["line 5"] and "already used on line 1" in reasons["line 6"]
    assert run_cli(capsys, "batch", "run", job)[0] == 1
    assert len((tmp_path / "out.jsonl").read_text().splitlines()) == 2 and server.request_count == 2


def test_budget_reached_mid_job_leaves_the_rest_pending(server, tmp_path, capsys):
    make_articles(tmp_path / "articles", 8)
    # Each request reserves its prompt (~90) plus 400 output tokens; the replies use ~370.
    job = write_job(tmp_path, SUMMARIZE.replace("concurrency = 4", "concurrency = 2") + "[budget]\nmax_tokens = 1800\n")
    code, out, _ = run_cli(capsys, "batch", "run", job)
    assert code == 3, out
    report = last_report(tmp_path)
    assert report["outcome"] == "budget" and "budget reached" in report["stopped"]
    assert 0 < report["done"] < 8 and report["pending"] == 8 - report["done"] and report["failed"] == 0
    assert server.request_count == report["done"]  # nothing sent that was not finished
    assert len(outputs(tmp_path)) == report["done"]
    assert report["budget"]["spent_tokens"] <= 1800
    job.write_text(job.read_text().replace("max_tokens = 1800", "max_tokens = 100000"))
    code, out, _ = run_cli(capsys, "batch", "run", job)
    assert code == 0 and len(outputs(tmp_path)) == 8 and server.request_count == 8


def test_a_money_budget_needs_a_known_price(server, tmp_path, capsys):
    make_articles(tmp_path / "articles", 1)
    job = write_job(tmp_path, SUMMARIZE.replace("gpt-4o-mini", "my-local-model") + "[budget]\nmax_cost_usd = 1\n")
    code, _, err = run_cli(capsys, "batch", "run", job)
    assert code == 2 and "price of my-local-model is unknown" in err


def test_the_batch_api_needs_the_openai_backend(server, tmp_path, capsys):
    make_articles(tmp_path / "articles", 1)
    job = write_job(tmp_path, SUMMARIZE.replace('backend = "openai"', 'backend = "fake"'))
    code, _, err = run_cli(capsys, "batch", "run", job, "--via", "batch-api")
    assert code == 2 and "needs a backend with a Batch API" in err
    code, _, err = run_cli(capsys, "batch", "run", job, "--via", "carrier-pigeon")
    assert code == 2 and "--via must be one of direct, batch-api" in err


def test_permanent_failures_wait_for_retry_failed(server, tmp_path, capsys):
    make_articles(tmp_path / "articles", 3)
    job = write_job(tmp_path, SUMMARIZE.replace("concurrency = 4", "concurrency = 1"))
    server.enqueue_faults(Fault(status=400, message="This input is refused."))
    code, out, _ = run_cli(capsys, "batch", "run", job)
    assert code == 1 and "This input is refused" in out and "[permanent]" in out
    assert run_cli(capsys, "batch", "run", job)[0] == 1 and server.request_count == 3
    code, _, _ = run_cli(capsys, "batch", "run", job, "--retry-failed")
    assert code == 0 and server.request_count == 4 and len(outputs(tmp_path)) == 3


def test_transient_failures_that_outlast_the_retries_are_retried_by_the_next_run(server, tmp_path, capsys,
                                                                                 monkeypatch):
    monkeypatch.setenv("AIGC_MAX_ATTEMPTS", "2")
    make_articles(tmp_path / "articles", 2)
    job = write_job(tmp_path, SUMMARIZE.replace("concurrency = 4", "concurrency = 1"))
    server.fail_next(2, Fault.server_error(503))
    code, out, _ = run_cli(capsys, "batch", "run", job)
    assert code == 1 and "[retried next run]" in out
    assert run_cli(capsys, "batch", "run", job)[0] == 0 and len(outputs(tmp_path)) == 2


def test_bad_credentials_stop_the_run_and_leave_items_pending(server, tmp_path, capsys):
    make_articles(tmp_path / "articles", 4)
    job = write_job(tmp_path, SUMMARIZE.replace("concurrency = 4", "concurrency = 1"))
    server.enqueue_faults(Fault(status=401))
    code, out, _ = run_cli(capsys, "batch", "run", job)
    assert code == 2 and "rejected the API key" in out
    assert last_report(tmp_path)["pending"] == 4 and server.request_count == 1
    assert run_cli(capsys, "batch", "run", job)[0] == 0


def test_limits_hold_and_a_429_pauses_every_worker(tmp_path, capsys, monkeypatch):
    with FakeOpenAIServer(reply=reply_for, rpm=600, tpm=120_000, latency=0.05) as server:
        use_server(monkeypatch, server)
        make_articles(tmp_path / "articles", 16)
        body = SUMMARIZE.replace("concurrency = 4", "concurrency = 8\nrpm = 600\ntpm = 120000")
        job = write_job(tmp_path, body)
        server.enqueue_faults(Fault.rate_limit(retry_after=0.6))
        started = time.monotonic()
        code, out, err = run_cli(capsys, "batch", "run", job)
        assert code == 0, out + err
        stats = server.stats
        # The scripted 429, and at most one more from timing noise (this server shares our process).
        assert stats["rate_limited"] in (1, 2) and stats["resent_early"] == 0 and stats["duplicates"] == 0
        assert len(outputs(tmp_path)) == 16
        # 16 requests of ~490 tokens (prompt + max output) at 2,000 tokens a second: the limit binds.
        assert time.monotonic() - started >= 3
        first = next(r.time for r in server.requests if r.fault is not None)
        sent_meanwhile = [r.time for r in server.requests if first + 0.05 < r.time < first + 0.6]
        assert not sent_meanwhile  # after the 429, nobody sent until its Retry-After had passed
        assert last_report(tmp_path)["rate"]["rate_limited"] == stats["rate_limited"]


def test_status_and_dry_run_send_nothing(server, tmp_path, capsys):
    make_articles(tmp_path / "articles", 4)
    job = write_job(tmp_path, SUMMARIZE + "[budget]\nmax_cost_usd = 0.00035\n")
    code, out, _ = run_cli(capsys, "batch", "status", job)
    assert code == 0 and "items: 4: 0 done, 0 failed (0 permanently), 4 pending" in out
    assert "last run: none yet" in out
    code, out, _ = run_cli(capsys, "batch", "run", job, "--dry-run")
    assert code == 0 and "4 to do" in out and "max cost:" in out and "budget covers:      1 of 4" in out
    code, out, _ = run_cli(capsys, "batch", "run", job, "--dry-run", "--via", "batch-api", "--json")
    plan = json.loads(out)
    assert plan["requests"] == 4 and plan["max_cost_usd"] > 0 and plan["fits_budget"] == 2
    assert server.request_count == 0 and not (tmp_path / ".aigc").exists()

    assert run_cli(capsys, "batch", "run", job)[0] == 3
    code, out, _ = run_cli(capsys, "batch", "status", job, "--json")
    status = json.loads(out)
    assert status["done"] + status["pending"] == 4 and status["runs"] == 1
    assert status["last_run"]["exit_code"] == 3 and status["spent_usd"] > 0


def test_the_batch_api_path_submits_once_and_writes_through_the_same_outputs(server, tmp_path, capsys):
    articles = make_articles(tmp_path / "articles", 5)
    job = write_job(tmp_path, SUMMARIZE + "[batch_api]\npoll_interval_s = 0.05\n")
    code, out, err = run_cli(capsys, "batch", "run", job, "--via", "batch-api")
    assert code == 0, out + err
    assert outputs(tmp_path) == {p.name: expected_text(p) for p in articles}
    stats = server.stats
    assert stats["batches_created"] == 1 and stats["requests"] == 0  # no direct chat requests
    report = last_report(tmp_path)
    assert report["mode"] == "batch-api" and report["done_this_run"] == 5
    # Batch prices are half the standard ones.
    direct = (report["prompt_tokens"] * 0.15 + report["completion_tokens"] * 0.60) / 1e6
    assert report["cost_usd"] == pytest.approx(direct / 2, rel=1e-4)
    # Done is done, whichever way it was done: nothing is submitted again.
    assert run_cli(capsys, "batch", "run", job, "--via", "batch-api")[0] == 0
    assert run_cli(capsys, "batch", "run", job)[0] == 0
    assert server.stats["batches_created"] == 1 and server.request_count == 0


@pytest.mark.parametrize("name", ["nightly-summaries", "translate-pages", "news-drafts", "teasers", "local-vllm"])
def test_the_example_jobs_are_valid_and_plan_without_sending(server, capsys, name):
    job = REPO / "examples" / "jobs" / f"{name}.toml"
    code, out, err = run_cli(capsys, "batch", "run", job, "--dry-run", "--via", "direct")
    assert code == 0, out + err
    assert "nothing was sent" in out and server.request_count == 0
    assert not (job.parent / ".aigc").exists()
