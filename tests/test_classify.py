"""Classification and sentiment: a label from the given set (validated, re-asked), a short reason, and a
confidence from log-probabilities (hosted) or from scoring each label directly (local model)."""

from __future__ import annotations

import json
import math

import pytest

import aigc
from aigc.errors import InputError, OutputInvalid
from tests.openai_server import FakeOpenAIServer
from tests.test_batch_job import run_cli, use_server, write_job

LABELS = ["billing", "shipping", "returns", "other"]
TICKETS = {
    "t01": "I was charged twice for my order.", "t02": "My parcel has not arrived after two weeks.",
    "t03": "How do I send back a jacket that does not fit?", "t04": "Do you have a shop in Vienna?",
    "t05": "The invoice shows the wrong VAT number.", "t06": "The courier left the box in the rain.",
    "t07": "I want a refund for the broken lamp, can I return it?", "t08": "Are you hiring?",
}
KEYWORDS = {"charged": "billing", "invoice": "billing", "parcel": "shipping", "courier": "shipping",
            "send back": "returns", "return": "returns"}


def answer_for(body: dict) -> str | None:
    """A model that knows its keywords: the label, and a reason naming it."""
    text = body["messages"][-1]["content"].split('"""')[1]  # the text, not the question listing the labels
    label = next((v for k, v in KEYWORDS.items() if k in text), "other")
    return json.dumps({"label": label, "reason": f"It is about {label}."})


@pytest.fixture
def server(monkeypatch):
    with FakeOpenAIServer(reply=answer_for, logprob=lambda token: math.log(0.8) if "ship" in token else 0.0) as s:
        use_server(monkeypatch, s)
        yield s


def test_a_label_from_the_set_with_a_reason_and_a_confidence_from_logprobs(server):
    with aigc.Client() as client:
        result = client.classify("My parcel is lost.", labels=LABELS)
    assert result.text == "shipping" and result.parsed.label == "shipping"
    assert result.parsed.reason == "It is about shipping."
    assert result.parsed.confidence == pytest.approx(0.8)  # the label's tokens' probability
    body = server.requests[0].body
    assert body["logprobs"] is True and body["top_logprobs"] == 5
    schema = body["response_format"]["json_schema"]["schema"]
    assert schema["properties"]["label"]["enum"] == LABELS


def test_a_label_outside_the_set_is_asked_again_and_case_does_not_matter(server):
    server.enqueue_replies('{"label": "complaint", "reason": "x"}', '{"label": "Billing", "reason": "A charge."}')
    with aigc.Client() as client:
        result = client.classify("I was charged twice.", labels=LABELS)
    assert result.text == "billing" and result.reasks == 1
    reask = server.requests[1].body["messages"]
    assert "complaint" in reask[-2]["content"] and "'billing', 'shipping', 'returns' or 'other'" in reask[-1]["content"]
    server.enqueue_replies(*['{"label": "complaint", "reason": "x"}'] * 3)
    with aigc.Client() as client, pytest.raises(OutputInvalid):
        client.classify("I was charged twice.", labels=LABELS)


def test_several_labels_with_multi(server):
    server.enqueue_replies('{"labels": ["returns", "billing"], "reason": "A refund for a return."}')
    with aigc.Client() as client:
        result = client.classify("Refund my return.", labels=LABELS, multi=True)
    assert result.parsed.labels == ["billing", "returns"] and result.text == "billing, returns"
    assert server.requests[0].body["response_format"]["json_schema"]["schema"]["properties"]["labels"]["type"] \
        == "array"


def test_a_compatible_server_without_logprobs_is_asked_again_without_them(server):
    server.supports_logprobs = False
    with aigc.Client() as client:
        first = client.classify("The courier lost my parcel.", labels=LABELS)
        second = client.classify("I was charged twice.", labels=LABELS)
    assert (first.text, second.text) == ("shipping", "billing")
    assert first.parsed.confidence is None and first.parsed.reason == "It is about shipping."
    assert [r.status for r in server.requests] == [400, 200, 200]  # the server's answer was learnt once
    assert "logprobs" not in server.requests[2].body


def test_a_backend_without_logprobs_gives_no_confidence(server):
    fake = aigc.FakeBackend()
    fake.enqueue('{"label": "negative", "reason": "It broke."}')
    with aigc.Client(backend=fake) as client:
        result = client.sentiment("It broke after a day.")
    assert result.text == "negative" and result.parsed.confidence is None
    assert "positive, negative, neutral" in fake.history[0].messages[-1].content


@pytest.mark.parametrize("labels", [["only"], ["a", "A"], ["a", " "]])
def test_a_label_set_needs_two_different_labels(labels):
    with aigc.Client(backend="fake") as client, pytest.raises(InputError):
        client.classify("Text.", labels=labels)


def test_the_command_line_shows_the_label_confidence_and_reason(server, tmp_path, capsys):
    ticket = tmp_path / "t.txt"
    ticket.write_text("The courier lost my parcel.\n")
    code, out, err = run_cli(capsys, "classify", ticket, "--labels", ",".join(LABELS))
    assert code == 0, err
    assert out.strip() == "shipping (confidence 0.80): It is about shipping."
    server.enqueue_replies('{"label": "positive", "reason": "Delighted."}')
    code, out, _ = run_cli(capsys, "sentiment", ticket, "--json")
    assert code == 0 and json.loads(out)["parsed"]["label"] == "positive"
    code, out, _ = run_cli(capsys, "classify", "--help")
    assert "aigc classify ticket.txt --labels billing,shipping,returns,other" in out and "--multi" in out


def test_a_batch_job_labels_every_record_from_the_set(server, tmp_path, capsys):
    (tmp_path / "tickets.jsonl").write_text("".join(json.dumps({"id": k, "text": v}) + "\n"
                                                    for k, v in TICKETS.items()))
    job = write_job(tmp_path, """
        task = "classify"
        [input]
        jsonl = "tickets.jsonl"
        [output]
        jsonl = "labels.jsonl"
        [vars]
        labels = ["billing", "shipping", "returns", "other"]
        [limits]
        concurrency = 4
    """)
    code, out, err = run_cli(capsys, "batch", "run", job)
    assert code == 0, out + err
    lines = {line["id"]: line for line in map(json.loads, (tmp_path / "labels.jsonl").read_text().splitlines())}
    assert set(lines) == set(TICKETS)
    assert all(line["text"] in LABELS and line["parsed"]["label"] == line["text"] for line in lines.values())
    assert {line["text"] for line in lines.values()} == set(LABELS)  # every label of the set was used
    assert lines["t02"]["parsed"]["confidence"] == pytest.approx(0.8)
    assert lines["t01"]["text"] == "billing" and lines["t07"]["text"] == "returns"


@pytest.fixture(scope="module")
def local():
    with aigc.Client(backend="local", temperature=0, ledger=False) as client:
        yield client


@pytest.mark.local
def test_the_local_model_scores_each_label_without_generating(local):
    result = local.sentiment("I love this phone, the battery lasts for days!", reason=False)
    scores = result.parsed.scores
    assert set(scores) == {"positive", "negative", "neutral"} and sum(scores.values()) == pytest.approx(1.0, abs=1e-5)
    assert result.text == max(scores, key=scores.get) and result.parsed.confidence == scores[result.text]
    assert result.usage.completion_tokens == 0 and result.usage.prompt_tokens > 0  # nothing was generated
    assert result.backend == "local" and result.requests == 1


@pytest.mark.local
def test_the_local_model_gives_a_short_reason_and_handles_multi(local):
    result = local.classify("My card was charged twice for one parcel.", labels=LABELS)
    assert result.text in LABELS and result.parsed.reason and 0 < result.usage.completion_tokens <= 48
    multi = local.classify("My card was charged twice.", labels=LABELS[:2], multi=True, reason=False)
    assert set(multi.parsed.labels) <= set(LABELS[:2]) and set(multi.parsed.scores) == set(LABELS[:2])
    assert multi.requests == 2  # one yes-or-no scoring per label
