"""`aigc tune data-from`: training files from input/output pairs and from a finished batch job."""

from __future__ import annotations

import json

import pytest

import aigc.tune
from aigc.cli import main
from aigc.templates import TemplateLibrary
from tests.openai_server import FakeOpenAIServer


def run(*argv: str) -> int:
    with pytest.raises(SystemExit) as info:
        main(list(argv))
    return info.value.code


def read_jsonl(path) -> list[dict]:
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()]


def test_pairs_become_examples_rendered_as_the_task_renders_them(tmp_path, capsys):
    records = [{"id": i, "article": f"Article {i}: the council met on day {i} and agreed on a budget.",
                "summary": f"The council agreed a budget on day {i}.", "length": "1 sentence"} for i in range(12)]
    records.append({"id": 99, "article": "No reference for this one."})
    pairs = tmp_path / "pairs.jsonl"
    pairs.write_text("".join(json.dumps(r) + "\n" for r in records), encoding="utf-8")
    out = tmp_path / "train.jsonl"
    assert run("tune", "data-from", str(pairs), "--task", "summarize", "--input-field", "article",
               "--output-field", "summary", "-o", str(out)) == 0
    captured = capsys.readouterr()
    assert "12 examples written" in captured.out and "line 13: no text in 'summary'" in captured.err
    examples = read_jsonl(out)
    expected = TemplateLibrary().get("summarize").render(text=records[3]["article"], length="1 sentence")
    assert examples[3]["messages"][:-1] == [{"role": m.role, "content": m.content} for m in expected]
    assert examples[3]["messages"][-1] == {"role": "assistant", "content": records[3]["summary"]}
    report = aigc.tune.validate(out, model="gpt-4o-mini-2024-07-18")
    assert report.ok and report.usable_examples == 12


def test_a_template_and_records_that_cannot_fill_it(tmp_path):
    pairs = tmp_path / "pairs.jsonl"
    pairs.write_text(json.dumps({"text": "A text.", "output": "Out."}) + "\n" + json.dumps({"output": "x"}) + "\n",
                     encoding="utf-8")
    built = aigc.tune.from_pairs(pairs, template="summarize")
    assert len(built.examples) == 1 and "'text'" in built.skipped[0]


def test_a_finished_batch_job_becomes_a_distillation_file(tmp_path, monkeypatch, capsys):
    with FakeOpenAIServer() as server:
        monkeypatch.setenv("OPENAI_BASE_URL", server.url)
        monkeypatch.setenv("OPENAI_API_KEY", "sk-test-abcdef123456")
        records = [{"id": f"n{i}", "text": f"News item {i}: rain is expected in the north on day {i}."}
                   for i in range(11)] + [{"id": "empty", "text": "   "}]
        (tmp_path / "in.jsonl").write_text("".join(json.dumps(r) + "\n" for r in records), encoding="utf-8")
        job = tmp_path / "job.toml"
        job.write_text('task = "summarize"\n[vars]\nlength = "1 sentence"\n[input]\njsonl = "in.jsonl"\n'
                       '[output]\njsonl = "out.jsonl"\n[model]\nmodel = "gpt-4o-mini"\n', encoding="utf-8")
        assert run("batch", "run", str(job)) == 1  # the empty record fails
        outputs = {r["id"]: r["text"] for r in read_jsonl(tmp_path / "out.jsonl")}
        capsys.readouterr()
        train = tmp_path / "distil.jsonl"
        assert run("tune", "data-from", str(job), "-o", str(train), "--json") == 0
        summary = json.loads(capsys.readouterr().out)
    assert summary["examples"] == 11 and len(summary["skipped"]) == 1 and "empty" in summary["skipped"][0]
    examples = read_jsonl(train)
    first = examples[0]["messages"]
    assert records[0]["text"] in first[-2]["content"] and first[-1] == {"role": "assistant",
                                                                        "content": outputs["n0"]}
    assert sorted(e["messages"][-1]["content"] for e in examples) == sorted(outputs.values())


def test_a_job_that_never_ran_is_refused(tmp_path):
    (tmp_path / "in.jsonl").write_text('{"id": 1, "text": "x"}\n', encoding="utf-8")
    job = tmp_path / "job.toml"
    job.write_text('task = "summarize"\n[input]\njsonl = "in.jsonl"\n[output]\njsonl = "out.jsonl"\n',
                   encoding="utf-8")
    assert run("tune", "data-from", str(job), "-o", str(tmp_path / "t.jsonl")) == 2
