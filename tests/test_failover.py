"""Failover: when the first backend's retries run out on transient failures, or its quota is exhausted, the
call runs on the next backend of the fallback list; never after a 400 or 401. The result says who answered
and why; the ledger has both attempts. Hosted side: the real SDK against tests/openai_server.py."""

from __future__ import annotations

import json

import pytest

import aigc
from aigc.backends import base as backends
from aigc.errors import AuthenticationFailed, BadRequest, ConfigError, QuotaExhausted
from aigc.ledger import Ledger
from tests.openai_server import FakeOpenAIServer, Fault
from tests.test_batch_job import run_cli, use_server, write_job


@pytest.fixture
def server(monkeypatch):
    with FakeOpenAIServer() as s:
        use_server(monkeypatch, s)
        yield s


@pytest.fixture
def standby():
    """A second backend, registered under a name the fallback list can use."""
    fake = aigc.FakeBackend()
    fake.name = "standby"  # as it will be called in results and the ledger
    backends.register_backend("standby", lambda settings: fake)
    yield fake
    backends._registry.pop("standby", None)


def fast(**kw):
    return aigc.Client(max_attempts=2, retry=aigc.RetryPolicy(max_attempts=2, initial_backoff=0.01, jitter=0),
                       **kw)


def test_an_exhausted_quota_fails_over_at_once(server, standby):
    server.enqueue_faults(Fault.quota())
    standby.enqueue("Answer from the standby backend.")
    with fast(fallback=["standby"]) as client:
        result = client.summarize("The council met on Tuesday.")
    assert result.text == "Answer from the standby backend."
    assert result.backend == "standby" and result.model == "fake-model"
    assert result.failover.startswith("openai failed (QuotaExhausted: quota exhausted")
    assert result.failover.endswith("standby answered") and result.failover in result.warnings
    assert server.stats["errors_by_status"] == {429: 1}  # a quota error is not retried: one request
    assert "The council met on Tuesday." in standby.history[0].messages[-1].content


def test_an_outage_fails_over_after_the_retries_and_the_dead_backend_cools_down(server, standby, tmp_path):
    server.fail_next(2, Fault.server_error(503))
    with fast(fallback=["standby"]) as client:
        first = client.answer("Is the harbour open?")
        second = client.answer("And tomorrow?")
        assert server.request_count == 2  # the second call skipped the backend that just failed
        client.engine.health.cooldown = 0  # once the cool-down has passed it is tried again
        third = client.answer("And on Sunday?")
    assert first.backend == second.backend == "standby" and third.backend == "openai"
    assert "ServerError" in first.failover and "503" in first.failover
    assert second.failover.startswith("openai skipped: it failed") and third.failover is None
    with Ledger.in_dir(tmp_path / "data") as ledger:
        rows = {(r.key, r.requests, r.failures) for r in ledger.report(by="backend")}
    assert rows == {("openai", 2, 1), ("standby", 2, 0)}


@pytest.mark.parametrize("fault, error", [(Fault(status=400), BadRequest), (Fault(status=401), AuthenticationFailed)])
def test_a_400_or_401_is_the_callers_to_fix_and_never_fails_over(server, standby, fault, error):
    server.enqueue_faults(fault)
    with fast(fallback=["standby"]) as client, pytest.raises(error):
        client.summarize("Text.")
    assert standby.history == []


def test_a_stream_fails_over_before_its_first_word(server, standby):
    server.enqueue_faults(Fault.quota())
    standby.enqueue("Streamed by the standby.")
    with fast(fallback=["standby"]) as client:
        stream = client.answer("Why?", stream=True)
        assert "".join(stream) == "Streamed by the standby."
    assert stream.result.backend == "standby" and "QuotaExhausted" in stream.result.failover


async def test_the_async_client_fails_over_the_same_way(server, standby):
    server.enqueue_faults(Fault.quota(), Fault.quota())
    standby.enqueue("One.", "Two.")
    async with aigc.AsyncClient(fallback="standby", max_attempts=2) as client:
        results = await client.map("summarize", ["First text.", "Second text."])
    assert sorted(r.text for r in results) == ["One.", "Two."] and {r.backend for r in results} == {"standby"}


def test_without_a_fallback_the_error_surfaces(server):
    server.enqueue_faults(Fault.quota())
    with fast() as client, pytest.raises(QuotaExhausted):
        client.summarize("Text.")


def test_the_setting_comes_from_the_environment_the_config_file_and_the_command_line(
        server, standby, monkeypatch, tmp_path, capsys):
    monkeypatch.setenv("AIGC_FALLBACK", "standby")
    assert aigc.load_settings().fallback == ["standby"]
    (tmp_path / "config").mkdir()
    (tmp_path / "config" / "config.toml").write_text('fallback = ["standby", "openai/gpt-4o"]\n')
    assert aigc.load_settings().fallback == ["standby", "openai/gpt-4o"]
    with pytest.raises(ConfigError, match="unknown backend 'nope'"):
        aigc.Client(fallback=["nope"])
    monkeypatch.delenv("AIGC_FALLBACK")
    (tmp_path / "config" / "config.toml").unlink()

    server.enqueue_faults(Fault.quota())
    standby.enqueue("From the command line's fallback.")
    article = tmp_path / "a.txt"
    article.write_text("The ferry runs again.\n")
    code, out, err = run_cli(capsys, "summarize", article, "--fallback", "standby", "--json")
    assert code == 0, err
    result = json.loads(out)
    assert result["backend"] == "standby" and "QuotaExhausted" in result["failover"]
    assert "aigc: note: openai failed (QuotaExhausted" in err


def test_a_backend_model_pair_names_the_model_to_use(server):
    server.enqueue_faults(Fault.quota())
    with fast(model="gpt-4o-mini", fallback=["openai/gpt-4o"]) as client:
        result = client.summarize("Text.")
    assert [r.body["model"] for r in server.requests] == ["gpt-4o-mini", "gpt-4o"]
    assert result.model == "gpt-4o" and result.backend == "openai" and "QuotaExhausted" in result.failover


def test_a_batch_job_fails_over_item_by_item(server, standby, tmp_path, capsys):
    (tmp_path / "in.jsonl").write_text("".join(json.dumps({"id": f"r{i}", "text": f"Review {i}."}) + "\n"
                                               for i in range(3)))
    server.enqueue_faults(Fault.quota())
    job = write_job(tmp_path, """
        task = "summarize"
        [input]
        jsonl = "in.jsonl"
        [output]
        jsonl = "out.jsonl"
        [model]
        max_attempts = 1
        fallback = ["standby"]
    """)
    code, out, err = run_cli(capsys, "batch", "run", job)
    assert code == 0, out + err
    lines = [json.loads(line) for line in (tmp_path / "out.jsonl").read_text().splitlines()]
    assert len(lines) == 3
    answered = [line for line in lines if line.get("backend") == "standby"]
    assert len(answered) >= 1 and all("QuotaExhausted" in line["failover"] for line in answered)


@pytest.mark.local
def test_the_local_model_takes_over_when_the_hosted_quota_is_gone(server):
    server.enqueue_faults(Fault.quota())
    with fast(fallback=["local"], temperature=0, max_output_tokens=16) as client:
        result = client.answer("Name a primary colour.")
    assert result.backend == "local" and result.model == "SmolLM2-135M-Instruct"
    assert result.text.strip() and result.cost_usd == 0 and "QuotaExhausted" in result.failover
