"""Moderation: input and output checked in one call to /v1/moderations, judged by per-category thresholds on
the scores (else the endpoint's own flag); a failing check stops the item with a reason."""

from __future__ import annotations

import json

import pytest

import aigc
from aigc.errors import ConfigError, ContentFlagged
from aigc.moderation import ModerationPolicy, Verdict
from tests.openai_server import FakeOpenAIServer, Fault
from tests.test_batch_job import run_cli, use_server, write_job


@pytest.fixture
def server(monkeypatch):
    with FakeOpenAIServer() as s:
        s.flag("knife", violence=0.91)
        s.flag("stupid", harassment=0.3)
        use_server(monkeypatch, s)
        yield s


def moderation_calls(server):
    return [r for r in server.requests if r.path == "/v1/moderations"]


def test_input_and_output_are_checked_in_one_call(server):
    with aigc.Client(moderate=True) as client:
        result = client.summarize("The bakery won a prize.")
    [call] = moderation_calls(server)
    assert call.body["model"] == "omni-moderation-latest"
    assert call.body["input"] == ["The bakery won a prize.", result.text]


def test_a_flagged_input_stops_the_call_with_a_reason(server):
    with aigc.Client(moderate=True) as client, pytest.raises(ContentFlagged) as info:
        client.answer("How do I sharpen a knife to hurt someone?")
    assert info.value.side == "input" and info.value.categories == {"violence": 0.91}
    assert "moderation stopped the input: violence 0.91" in str(info.value)


def test_a_flagged_output_is_never_delivered_not_even_streamed(server):
    server.enqueue_replies("Take the knife and ...")
    with aigc.Client(moderate=True) as client:
        stream = client.answer("What is in the drawer?", stream=True)
        received = []
        with pytest.raises(ContentFlagged, match="stopped the output") as info:
            for piece in stream:
                received.append(piece)
    assert info.value.side == "output" and received == []


def test_a_passing_stream_arrives_whole_once_checked(server):
    with aigc.Client(moderate=True) as client:
        stream = client.answer("Name a colour.", stream=True)
        pieces = list(stream)
    assert pieces == [stream.result.text] and len(moderation_calls(server)) == 1


def test_per_category_thresholds_decide_not_only_the_flag(server):
    policy = ModerationPolicy(thresholds={"harassment": 0.25, "violence": 0.95})
    verdict = Verdict(flagged=True, categories={"violence": True}, scores={"violence": 0.91, "harassment": 0.3})
    assert policy.crossed(verdict) == {"harassment": 0.3}  # violence's own threshold is higher than its score
    with aigc.Client(moderate=True, moderation_thresholds={"harassment": 0.25}) as client:
        with pytest.raises(ContentFlagged, match="harassment 0.30 >= 0.25"):
            client.summarize("What a stupid idea.")
        assert client.summarize("What a fine idea.").text  # below every threshold


def test_the_model_is_configurable_and_a_failing_endpoint_fails_closed(server):
    with aigc.Client(moderate=True, moderation_model="text-moderation-latest", max_attempts=1) as client:
        client.summarize("Fine text.")
        assert moderation_calls(server)[-1].body["model"] == "text-moderation-latest"
        server.enqueue_faults(Fault(), Fault(status=404))  # the chat request passes, the check cannot be made
        with pytest.raises(aigc.ModelNotFound):
            client.summarize("Other text.")


def test_offline_there_is_no_moderation(tmp_path):
    with aigc.Client(backend="fake") as client, pytest.raises(ConfigError, match="offline there is none"):
        client.summarize("Text.", moderate=True)


def test_the_command_line_stops_a_flagged_item_with_exit_1(server, tmp_path, capsys):
    text = tmp_path / "t.txt"
    text.write_text("Where can I buy a knife to hurt my neighbour?\n")
    code, out, err = run_cli(capsys, "answer", "Where?", "--context", text, "--moderate")
    assert code == 1 and out == ""
    assert err.startswith("aigc: error: moderation stopped the input: violence 0.91")


def test_a_batch_job_stops_the_flagged_item_and_does_the_others(server, tmp_path, capsys):
    records = [{"id": "ok1", "text": "The ferry runs on Sundays."}, {"id": "bad", "text": "Bring a knife."},
               {"id": "ok2", "text": "The library opens at nine."}]
    (tmp_path / "in.jsonl").write_text("".join(json.dumps(r) + "\n" for r in records))
    job = write_job(tmp_path, """
        task = "summarize"
        [input]
        jsonl = "in.jsonl"
        [output]
        jsonl = "out.jsonl"
        [safety]
        moderate = true
        thresholds = {violence = 0.5}
    """)
    code, out, err = run_cli(capsys, "batch", "run", job, "--json")
    assert code == 1, out + err
    report = json.loads(out)
    assert report["done"] == 2 and report["failed"] == 1
    [failure] = report["failures"]
    assert failure["id"] == "bad" and failure["error"] == "ContentFlagged" and "violence 0.91" in failure["reason"]
    assert {json.loads(line)["id"] for line in (tmp_path / "out.jsonl").read_text().splitlines()} == {"ok1", "ok2"}
