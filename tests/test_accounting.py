"""Honest about tokens and money: the ledger, `aigc usage`, `aigc tokens`, --dry-run and spend caps."""

from __future__ import annotations

import json

import pytest

import aigc
from aigc.budget import Budget
from aigc.cli import main
from aigc.ledger import Ledger
from tests.openai_server import FakeOpenAIServer, Fault

KEY = "sk-test-SECRET-accounting1234"
SECRET_PROMPT = "Zanzibar-umbrella-4471 is a phrase only this prompt contains."


@pytest.fixture
def server(monkeypatch):
    with FakeOpenAIServer() as s:
        monkeypatch.setenv("OPENAI_BASE_URL", s.url)
        monkeypatch.setenv("OPENAI_API_KEY", KEY)
        yield s


@pytest.fixture
def article(tmp_path):
    path = tmp_path / "article.txt"
    path.write_text("The ferry service to the island resumes on Friday after a month of repairs. " * 20)
    return path


def run(*argv: str) -> int:
    with pytest.raises(SystemExit) as info:
        main(list(argv))
    return info.value.code


def test_the_ledger_matches_what_the_server_billed(server, isolated_env):
    with aigc.Client(retry=aigc.RetryPolicy(sleep=lambda s: None)) as client:
        server.enqueue_faults(Fault.server_error(500))
        client.summarize(SECRET_PROMPT)
        server.enqueue_faults(Fault(status=400))
        with pytest.raises(aigc.BadRequest):
            client.answer("Why?")
        client.translate("Bonjour tout le monde", to="English")
        assert client.write_news("Facts: the bridge is open.", stream=True).result.text
    with Ledger(isolated_env / "data" / "ledger.db") as ledger:
        total = ledger.totals()
        by_task = {r.key: r for r in ledger.report(by="task")}
    assert total.prompt_tokens == server.billed["prompt_tokens"]
    assert total.completion_tokens == server.billed["completion_tokens"]
    assert total.requests == 4 and total.failures == 1  # one row per request: retries are attempts, not rows
    assert set(by_task) == {"summarize", "answer", "translate", "news"}
    assert by_task["summarize"].cost_usd > 0
    stored = (isolated_env / "data" / "ledger.db").read_bytes()
    assert b"Zanzibar" not in stored and KEY.encode() not in stored


def test_prompts_are_stored_only_when_the_user_opts_in(server, isolated_env, monkeypatch):
    monkeypatch.setenv("AIGC_LEDGER_PROMPTS", "true")
    with aigc.Client() as client:
        client.summarize(SECRET_PROMPT)
    assert b"Zanzibar" in (isolated_env / "data" / "ledger.db").read_bytes()


def test_usage_command_reports_by_model_task_and_day(server, article, capsys):
    assert run("summarize", str(article)) == 0
    assert run("translate", str(article), "--to", "fr", "--model", "gpt-4.1-mini") == 0
    capsys.readouterr()
    assert run("usage", "--by", "model", "--json") == 0
    rows = {r["key"]: r for r in json.loads(capsys.readouterr().out)}
    assert set(rows) == {"gpt-4o-mini", "gpt-4.1-mini"}
    assert sum(r["prompt_tokens"] for r in rows.values()) == server.billed["prompt_tokens"]
    assert run("usage", "--since", "1h", "--by", "task") == 0
    out = capsys.readouterr().out
    assert "summarize" in out and "translate" in out
    assert run("usage", "--since", "yesterday-ish") == 2


def test_tokens_command_counts_and_prices_each_task(server, article, capsys):
    assert run("tokens", str(article), "--model", "gpt-4o", "--json") == 0
    estimates = json.loads(capsys.readouterr().out)
    assert set(estimates) == {"summarize", "translate", "answer", "news"}
    summarize = estimates["summarize"]
    assert summarize["input_tokens"] == aigc.Client(model="gpt-4o").count_tokens(article.read_text())
    assert summarize["context_window"] == 128000 and summarize["max_cost_usd"] > 0
    assert server.request_count == 0


@pytest.mark.parametrize("command", [["summarize"], ["translate", "--to", "de"], ["news"]])
def test_dry_run_sends_nothing(server, article, capsys, command):
    assert run(command[0], str(article), *command[1:], "--dry-run") == 0
    out = capsys.readouterr().out
    assert "1 request(s)" in out and "nothing was sent" in out
    assert server.request_count == 0


def test_a_cap_that_the_next_request_could_exceed_stops_it_before_sending(server, article, capsys):
    assert run("summarize", str(article), "--max-total-tokens", "100") == 3
    err = capsys.readouterr().err
    assert "token budget" in err and "nothing was sent" in err
    assert server.request_count == 0


def test_money_caps_account_across_calls_of_a_client(server):
    budget = Budget(max_cost_usd=0.01)
    with aigc.Client(model="gpt-4o", budget=budget, max_tokens=200) as client:
        done = 0
        with pytest.raises(aigc.BudgetExceeded):
            for _ in range(100):
                client.answer("What is the tallest mountain in Europe?")
                done += 1
    assert 0 < done < 100
    assert budget.spent_usd <= 0.01
    assert server.request_count == done
