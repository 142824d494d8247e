"""An OpenAI Batch API request file runs as it is, as a ``task = "chat"`` job: the same outputs as the same
requests sent one by one, directly or through the Batch API."""

from __future__ import annotations

import json

import openai
import pytest

from tests.openai_server import FakeOpenAIServer
from tests.test_batch_job import KEY, run_cli, use_server, write_job

QUESTIONS = ["What is the capital of Norway?", "Name three rivers in France.", "Why is the sky blue?",
             "Give a synonym for quick.", "Translate 'good morning' into Spanish."]

JOB = """
    task = "chat"
    [input]
    jsonl = "requests.jsonl"
    [output]
    jsonl = "answers.jsonl"
    [model]
    model = "gpt-4o-mini"
"""


@pytest.fixture
def server(monkeypatch):
    with FakeOpenAIServer(batch_polls_to_complete=1) as s:
        use_server(monkeypatch, s)
        yield s


def request_file(path) -> list[dict]:
    lines = [{"custom_id": f"q-{i}", "method": "POST", "url": "/v1/chat/completions",
              "body": {"model": "gpt-4o-mini", "max_tokens": 40, "temperature": 0,
                       "messages": [{"role": "system", "content": "Answer in one line."},
                                    {"role": "user", "content": q}]}}
             for i, q in enumerate(QUESTIONS)]
    path.write_text("".join(json.dumps(line) + "\n" for line in lines))
    return lines


def one_by_one(server, lines: list[dict]) -> dict[str, str]:
    sdk = openai.OpenAI(base_url=server.url, api_key=KEY, max_retries=0)
    return {line["custom_id"]: sdk.chat.completions.create(**line["body"]).choices[0].message.content
            for line in lines}


def answers(path) -> dict[str, str]:
    return {row["id"]: row["text"] for row in map(json.loads, path.read_text().splitlines())}


@pytest.mark.parametrize("via", ["direct", "batch-api"])
def test_a_batch_api_request_file_runs_as_a_chat_job(server, tmp_path, capsys, via):
    lines = request_file(tmp_path / "requests.jsonl")
    job = write_job(tmp_path, JOB)
    code, out, err = run_cli(capsys, "batch", "run", job, "--via", via)
    assert code == 0, out + err
    sent = [r.body for r in server.requests if r.path.endswith("/chat/completions")]
    got = answers(tmp_path / "answers.jsonl")
    assert got == one_by_one(server, lines) and len(got) == len(QUESTIONS)
    if via == "direct":  # the bodies went out as they were written (the cap under the name the server knows)
        key = json.dumps
        assert sorted(map(key, (b["messages"] for b in sent))) == sorted(key(line["body"]["messages"]) for line in lines)
        assert all(b["max_tokens"] == 40 and b["temperature"] == 0 for b in sent)
    row = json.loads((tmp_path / "answers.jsonl").read_text().splitlines()[0])
    assert row["prompt_tokens"] > 0 and row["finish_reason"] == "stop" and row["model"] == "gpt-4o-mini"


def test_a_chat_job_checks_its_records(server, tmp_path, capsys):
    (tmp_path / "requests.jsonl").write_text(
        json.dumps({"custom_id": "ok", "body": {"messages": [{"role": "user", "content": "Hi"}]}}) + "\n"
        + json.dumps({"custom_id": "no-messages", "body": {"model": "gpt-4o-mini"}}) + "\n"
        + json.dumps({"id": "text", "messages": "not a list"}) + "\n")
    job = write_job(tmp_path, JOB)
    code, out, _ = run_cli(capsys, "batch", "run", job)
    assert code == 1
    assert "no-messages: InputError: record 'no-messages' has no 'messages'" in out
    assert "'messages' must be a list" in out
    assert list(answers(tmp_path / "answers.jsonl")) == ["ok"]
