"""`aigc tune validate`: every kind of problem in a training file is found and named by its line."""

from __future__ import annotations

import json
from datetime import date

import pytest

import aigc.tune
from aigc.cli import main
from aigc.config import load_settings

HOSTED = "gpt-4o-mini-2024-07-18"
TODAY = date(2026, 12, 1)


def example(question: str = "What is two plus two?", answer: str = "Four.", **extra) -> dict:
    return {"messages": [{"role": "user", "content": question}, {"role": "assistant", "content": answer}], **extra}


def good_lines(n: int = 12) -> list[str]:
    return [json.dumps(example(f"Question number {i}?", f"Answer number {i}.")) for i in range(n)]


def write(tmp_path, lines: list[str], name: str = "data.jsonl"):
    path = tmp_path / name
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


def check(path, model: str = HOSTED, **kw):
    return aigc.tune.validate(path, model=model, today=TODAY, **kw)


def problems_on(report, line: int) -> list:
    return [p for p in report.problems if p.line == line]


# (kind, severity, the bad line, a phrase the message must contain)
BAD_LINES = [
    ("json", "error", '{"messages": [', "not valid JSON"),
    ("json", "error", '["a list"]', "not an object"),
    ("messages", "error", '{"prompt": "hi", "completion": "there"}', 'no "messages" list'),
    ("empty", "error", '{"messages": []}', "no messages"),
    ("role", "error", json.dumps({"messages": [{"role": "bot", "content": "x"},
                                               {"role": "assistant", "content": "y"}]}), "role 'bot'"),
    ("keys", "error", json.dumps({"messages": [{"role": "user", "content": "x", "mood": "happy"},
                                               {"role": "assistant", "content": "y"}]}), "unknown key 'mood'"),
    ("content", "error", json.dumps({"messages": [{"role": "user", "content": "x"},
                                                  {"role": "assistant", "content": ""}]}), "no content"),
    ("content", "error", json.dumps({"messages": [{"role": "user", "content": "  "},
                                                  {"role": "assistant", "content": "y"}]}), "user message is empty"),
    ("weight", "error", json.dumps({"messages": [{"role": "user", "content": "x"},
                                                 {"role": "assistant", "content": "y", "weight": 0.5}]}),
     "weight must be 0 or 1"),
    ("weight", "error", json.dumps({"messages": [{"role": "user", "content": "x", "weight": 1},
                                                 {"role": "assistant", "content": "y"}]}),
     "only on assistant messages"),
    ("special-token", "error", json.dumps(example("Complete <|fim_suffix|> this", "Done.")), "<|fim_suffix|>"),
    ("special-token", "error", json.dumps(example("Hi", "<|im_start|>assistant")), "<|im_start|>"),
    ("no-assistant", "error", json.dumps({"messages": [{"role": "user", "content": "x"}]}), "no assistant"),
    ("no-assistant", "error", json.dumps({"messages": [{"role": "user", "content": "x"},
                                                       {"role": "assistant", "content": "y", "weight": 0}]}),
     "no assistant"),
    ("order", "error", json.dumps({"messages": [{"role": "user", "content": "x"},
                                                {"role": "system", "content": "late"},
                                                {"role": "assistant", "content": "y"}]}), "may only come first"),
    ("order", "error", json.dumps({"messages": [{"role": "user", "content": "x"},
                                                {"role": "tool", "content": "42", "tool_call_id": "c1"},
                                                {"role": "assistant", "content": "y"}]}), "tool_calls"),
    ("order", "warning", json.dumps({"messages": [{"role": "user", "content": "x"},
                                                  {"role": "assistant", "content": "y"},
                                                  {"role": "user", "content": "and?"}]}), "teach nothing"),
    ("keys", "warning", json.dumps(example(source="crawl")), "unknown key 'source'"),
]


@pytest.mark.parametrize("kind,severity,line,phrase", BAD_LINES, ids=[f"{b[0]}-{i}" for i, b in enumerate(BAD_LINES)])
def test_each_problem_names_its_line(tmp_path, kind, severity, line, phrase):
    lines = good_lines()
    lines.insert(4, line)  # line 5 of the file
    report = check(write(tmp_path, lines))
    found = problems_on(report, 5)
    assert [(p.kind, p.severity) for p in found][:1] == [(kind, severity)], found
    assert phrase in found[0].message
    assert str(found[0]).startswith(f"line 5: {severity}: ")
    assert report.ok is (severity == "warning")
    assert report.usable_examples == (13 if severity == "warning" else 12)
    assert all(p.line == 5 for p in report.problems)  # the good lines are not blamed


def test_duplicates_and_blank_lines_are_warnings(tmp_path):
    lines = good_lines()
    lines.insert(6, lines[2])
    lines.insert(3, "")
    report = check(write(tmp_path, lines))
    assert report.ok
    assert [(p.line, p.kind) for p in report.problems] == [(4, "blank-line"), (8, "duplicate")]
    assert "repeats the example on line 3" in report.problems[1].message


def test_too_few_examples_and_wrong_file_type(tmp_path):
    report = check(write(tmp_path, good_lines(9), name="data.json"))
    kinds = {(p.kind, p.severity, p.line) for p in report.problems}
    assert ("too-few", "error", None) in kinds and ("file-type", "error", None) in kinds
    assert "at least 10" in next(p.message for p in report.problems if p.kind == "too-few")
    assert not report.ok


@pytest.mark.slow
def test_a_file_over_512_mb_is_refused_for_hosted_training(tmp_path):
    path = write(tmp_path, good_lines())
    with path.open("r+b") as f:
        f.truncate(513 * 1024 * 1024)  # sparse: no disk is used
    report = check(path)
    assert any(p.kind == "file-size" and p.severity == "error" and "512 MiB" in p.message for p in report.problems)


def test_tokens_epochs_and_cost_follow_the_hosted_rules(tmp_path):
    report = check(write(tmp_path, good_lines(12)))
    assert report.target == "openai" and report.usable_examples == 12
    assert report.epochs == 9  # 12 examples x 3 epochs < 100: raised to ceil(100 / 12)
    assert report.training_tokens == report.tokens * 9
    assert report.estimated_cost_usd == pytest.approx(report.training_tokens * 3.00 / 1e6)
    assert report.training_price == 3.00 and report.prices_as_of is not None
    assert report.trained_tokens < report.tokens
    assert aigc.tune.default_epochs(50) == 3
    assert aigc.tune.default_epochs(20_000) == 1
    assert aigc.tune.default_epochs(3) == 25
    assert check(write(tmp_path, good_lines(12)), epochs=2).epochs == 2


def test_examples_over_the_models_limit_are_flagged(tmp_path):
    models = tmp_path / "models.toml"
    models.write_text('[models."tiny-tune"]\ncontext_window = 1000\nmax_output_tokens = 100\n'
                      'training_max_tokens = 40\ntraining_price = 1.0\n', encoding="utf-8")
    lines = good_lines()
    lines[7] = json.dumps(example("word " * 60, "Short."))
    report = check(write(tmp_path, lines), model="tiny-tune", settings=load_settings({"models_file": models}))
    assert [(p.line, p.kind) for p in report.problems] == [(8, "too-long")]
    assert "40-token limit" in report.problems[0].message
    assert report.max_example_tokens == 40  # billed as cut


def test_a_retired_base_model_and_an_unpriced_one(tmp_path):
    path = write(tmp_path, good_lines())
    retired = check(path, model="gpt-3.5-turbo-0125")
    assert not retired.ok
    assert "shut down on 2026-10-23" in retired.errors[0].message
    unpriced = check(path, model="gpt-5")
    assert unpriced.ok and unpriced.estimated_cost_usd is None
    assert any(p.kind == "price" for p in unpriced.warnings)
    assert any("2027-01-06" in note for note in check(path).notes)


def test_moderation_flags_lines(tmp_path):
    lines = good_lines()
    lines[2] = json.dumps(example("How do I attack the village?", "I can't help with that."))
    seen = []

    def moderation(texts):
        seen.extend(texts)
        return [["violence"] if "attack the village" in t else [] for t in texts]

    report = check(write(tmp_path, lines), moderate=True, moderation=moderation)
    assert len(seen) == 12 and report.moderated == 12
    assert [(p.line, p.kind) for p in report.errors] == [(3, "moderation")]
    assert "violence" in report.errors[0].message


def run(*argv: str) -> int:
    with pytest.raises(SystemExit) as info:
        main(list(argv))
    return info.value.code


def test_cli_lists_problems_and_exits_2(tmp_path, capsys):
    lines = good_lines()
    lines[3] = '{"messages": [{"role": "user", "content": "x"}]}'
    path = write(tmp_path, lines)
    assert run("tune", "validate", str(path), "--model", HOSTED) == 2
    captured = capsys.readouterr()
    assert "line 4: error: no assistant message" in captured.err
    assert "estimated cost:" in captured.out and "1 error(s)" in captured.out
    assert run("tune", "validate", str(path), "--model", HOSTED, "--json") == 2
    data = json.loads(capsys.readouterr().out)
    assert data["problems"][0]["line"] == 4 and data["target"] == "openai"
    lines[3] = lines[4]
    assert run("tune", "validate", str(write(tmp_path, lines)), "--model", HOSTED) == 0


def test_a_missing_eval_suite_is_refused_before_training(tmp_path, capsys):
    data = write(tmp_path, good_lines())
    assert run("tune", "local", str(data), "-o", str(tmp_path / "out"), "--eval", str(tmp_path / "no.toml")) == 2
    assert "no such eval suite file" in capsys.readouterr().err
