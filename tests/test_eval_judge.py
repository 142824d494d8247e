"""The judge: verdicts that flip with the order are ties, bias is reported, unparseable output is an error.

The judge is :class:`aigc.FakeBackend`, registered as a backend, scripted to prefer whatever it is shown
first; the candidates answer from the OpenAI-compatible test server.
"""

from __future__ import annotations

import json

import pytest

pytest.importorskip("sacrebleu")

import aigc  # noqa: E402
from aigc.eval.judge import (  # noqa: E402
    JudgeError,
    PairOutcome,
    combine,
    model_family,
    parse_grade,
    parse_verdict,
    same_family_warnings,
)
from tests.openai_server import FakeOpenAIServer  # noqa: E402
from tests.test_batch_job import run_cli, use_server  # noqa: E402
from tests.test_eval_run import SUITE, reply_for, write_suite  # noqa: E402


def prefers_first(request: aigc.ChatRequest) -> str:
    return '{"reason": "Output A reads better.", "winner": "A"}'


def grades_by_length(request: aigc.ChatRequest) -> str:
    """A judge that likes long outputs, and cannot answer about the library item."""
    prompt = request.messages[-1].content
    if "library" in prompt.lower():
        return "Both are fine, I suppose."
    output = prompt.split("[The assistant's output]")[1].split("[End of the assistant's output]")[0]
    return json.dumps({"reason": "long enough", "score": 5 if len(output.split()) > 6 else 2})


@pytest.fixture
def server(monkeypatch):
    with FakeOpenAIServer(reply=reply_for) as s:
        use_server(monkeypatch, s)
        yield s


def judged_suite(tmp_path, mode: str, backend: str, **extra) -> object:
    body = SUITE + f"""
    [judge]
    mode = "{mode}"
    backend = "{backend}"
    model = "judge-1"
    """ + "".join(f"{k} = {json.dumps(v)}\n    " for k, v in extra.items())
    return write_suite(tmp_path, body)


def test_a_judge_that_always_prefers_position_a_gives_only_ties(server, tmp_path, capsys):
    fakes = []

    def factory(settings):
        fake = aigc.FakeBackend(settings).enqueue(*[prefers_first] * 100)
        fakes.append(fake)
        return fake

    aigc.register_backend("judge-prefers-a", factory)
    suite = judged_suite(tmp_path, "pairwise", "judge-prefers-a")
    code, out, err = run_cli(capsys, "eval", "run", suite, "--json")
    assert code == 0, err
    report = json.loads(out)
    pair = report["judge"]["pairs"][0]
    assert (pair["a"], pair["b"]) == ("weak", "good")
    n = len(report["items"])
    assert pair["ties"] == pair["flipped"] == n and pair["wins"] == pair["losses"] == 0
    assert pair["swap_consistency"] == 0.0 and pair["first_position_rate"] == 1.0
    assert pair["p_value"] == 1.0
    assert set(report["judge"]["per_item"]["weak vs good"].values()) == {"flip"}
    asked = [r for fake in fakes for r in fake.history]
    assert len(asked) == 2 * n  # each item judged in both orders
    firsts = [r.messages[-1].content.split("[Output A]")[1].split("[End of output A]")[0].strip() for r in asked]
    weak_first = sum(1 for text in firsts if len(text.split()) <= 4)
    assert weak_first == n  # the weak answer was shown first exactly once per item
    code, out, _ = run_cli(capsys, "eval", "run", suite)
    assert f"0 wins, 0 losses, {n} ties ({n} flipped with the order)" in out
    assert "first position chosen 100%" in out


def test_pointwise_grades_with_length_check_and_an_unparseable_verdict_is_an_error(server, tmp_path, capsys):
    aigc.register_backend("judge-likes-length",
                          lambda settings: aigc.FakeBackend(settings).enqueue(*[grades_by_length] * 100))
    suite = judged_suite(tmp_path, "pointwise", "judge-likes-length", reference=True)
    code, out, err = run_cli(capsys, "eval", "run", suite, "--json")
    assert code == 1, err  # a judge output could not be parsed
    assert out, err
    report = json.loads(out)
    errors = report["judge"]["errors"]
    assert {e["item"] for e in errors} == {"library"} and len(errors) == 2  # one per candidate
    weak, good = report["candidates"]
    assert good["scores"]["judge"]["value"] == 5.0 and weak["scores"]["judge"]["value"] == 2.0
    assert good["scores"]["judge"]["n"] == len(report["items"]) - 1  # the error is not a score
    assert report["judge"]["length_correlation"] > 0.9
    assert report["judge"]["reference_guided"] is True
    item = next(i for i in report["items"] if i["id"] == "library")
    assert item["candidates"]["good"]["scores"]["judge"] is None


def test_verdict_parsing_and_combining_orders():
    assert parse_grade('{"reason": "clear", "score": 4}') == (4, "clear")
    assert parse_grade("Reason: fine. Score: 3")[0] == 3
    assert parse_verdict('{"reason": "x", "winner": "tie"}')[0] == "tie"
    assert parse_verdict("My verdict: [[B]]")[0] == "second"
    for bad in ("", "score: 7", "great answer", '{"score": 4.5}', "winner: A ... winner: B"):
        with pytest.raises(JudgeError):
            parse_grade(bad) if "winner" not in bad else parse_verdict(bad)
    pair = PairOutcome("base", "new")
    combine(pair, "1", "second", "first", 10, 20)  # new shown second, then first: new won both times
    combine(pair, "2", "first", "first", 10, 20)  # first position both times: a flip, so a tie
    combine(pair, "3", "tie", "tie", 10, 10)
    combine(pair, "4", None, "first", 10, 10)
    result = pair.to_dict()
    assert (result["wins"], result["losses"], result["ties"], result["flipped"], result["errors"]) == (0, 1, 2, 1, 1)
    assert result["swap_consistency"] == pytest.approx(2 / 3)
    assert result["first_position_rate"] == pytest.approx(3 / 4)
    assert result["longer_won_rate"] == 1.0


def test_a_judge_of_a_candidates_family_is_flagged():
    assert model_family("gpt-4o") == model_family("gpt-4o-mini") == "OpenAI GPT"
    assert model_family("Qwen/Qwen2.5-7B-Instruct") == "Qwen" and model_family("my-model") is None
    warnings = same_family_warnings("gpt-4o", {"hosted": "gpt-4o-mini", "local": "SmolLM2-135M-Instruct"})
    assert len(warnings) == 1 and "'hosted'" in warnings[0] and "same family" in warnings[0]
