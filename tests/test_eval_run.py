"""``aigc eval run|compare`` against the OpenAI-compatible test server, through the real SDK and batch engine.

The server bills and counts every request, so "nothing sent" and "never paid twice" are checked on its side.
"""

from __future__ import annotations

import json
import re
import signal
import textwrap
import time
from pathlib import Path

import pytest

pytest.importorskip("sacrebleu")
pytest.importorskip("rouge_score")

from tests.openai_server import FakeOpenAIServer, Fault  # noqa: E402
from tests.test_batch_job import KEY, aigc_process, run_cli, use_server  # noqa: E402

FACTS = [
    ("bridge", "The council voted on Monday to repair the harbour bridge for 4 million euros.",
     "The council voted to repair the harbour bridge for 4 million euros."),
    ("library", "The library will open on Sundays from March, the mayor said on Tuesday.",
     "The library will open on Sundays from March."),
    ("flood", "Rain flooded the old town overnight and firefighters pumped thirty cellars.",
     "Rain flooded the old town and firefighters pumped thirty cellars."),
    ("bus", "Bus line 12 will run every ten minutes from next month with new electric buses.",
     "Bus line 12 will run every ten minutes from next month."),
    ("wolf", "A wolf was seen near the village of Oberau for the first time in a century.",
     "A wolf was seen near Oberau for the first time in a century."),
    ("water", "Water will cost six percent more from January because energy is dearer.",
     "Water will cost six percent more from January."),
    ("cinema", "The Apollo cinema reopens on Saturday with three screens after a fire.",
     "The Apollo cinema reopens on Saturday with three screens."),
    ("park", "A park with 300 trees will replace the old bus depot, residents decided in a vote.",
     "A park with 300 trees will replace the old bus depot."),
]
REFERENCE = {key: ref for key, _, ref in FACTS}
_KEY = re.compile(r"\b(" + "|".join(re.escape(text.split()[1]) for _, text, _ in FACTS) + r")\b")


def reply_for(body: dict) -> str | None:
    """good-model answers with the reference; weak-model with the first four words of it."""
    prompt = json.dumps(body["messages"])
    key = next((k for k, text, _ in FACTS if text[:40] in prompt), None)
    if key is None:
        return None
    seed = body.get("seed")
    suffix = f" (take {seed})" if body.get("temperature") and seed is not None else ""
    if body["model"] == "good-model":
        return REFERENCE[key] + suffix
    return " ".join(REFERENCE[key].split()[:4]) + suffix


SUITE = """
    name = "news"
    task = "summarize"
    data = "data.jsonl"
    metrics = ["rouge", "chrf"]
    [vars]
    length = "1 sentence"
    [limits]
    concurrency = 2
    [[candidates]]
    name = "weak"
    backend = "openai"
    model = "weak-model"
    max_output_tokens = 40
    temperature = 0
    [[candidates]]
    name = "good"
    backend = "openai"
    model = "good-model"
    max_output_tokens = 40
    temperature = 0
"""


def write_suite(folder: Path, body: str = SUITE, facts=FACTS, name: str = "suite.toml") -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    with open(folder / "data.jsonl", "w", encoding="utf-8") as f:
        for key, text, ref in facts:
            f.write(json.dumps({"id": key, "text": text, "reference": ref}) + "\n")
    path = folder / name
    path.write_text(textwrap.dedent(body).lstrip(), encoding="utf-8")
    return path


@pytest.fixture
def server(monkeypatch, tmp_path):
    with FakeOpenAIServer(reply=reply_for) as s:
        use_server(monkeypatch, s)
        # prices for the test models, so the eval reports money
        models = tmp_path / "models.toml"
        models.write_text('[models."weak-model"]\ncontext_window = 8192\nmax_output_tokens = 4096\n'
                          'input_price = 0.15\noutput_price = 0.60\n'
                          '[models."good-model"]\ncontext_window = 8192\nmax_output_tokens = 4096\n'
                          'input_price = 2.50\noutput_price = 10.00\n')
        monkeypatch.setenv("AIGC_MODELS_FILE", str(models))
        yield s


def eval_json(capsys, *argv) -> tuple[int, dict, str]:
    code, out, err = run_cli(capsys, "eval", *argv, "--json")
    return code, (json.loads(out) if out.strip().startswith("{") else {}), err


def test_dry_run_shows_the_worst_case_cost_and_sends_nothing(server, tmp_path, capsys):
    suite = write_suite(tmp_path)
    code, plan, err = eval_json(capsys, "run", suite, "--dry-run")
    assert code == 0, err
    assert server.request_count == 0
    assert [j["candidate"] for j in plan["jobs"]] == ["weak", "good"]
    assert all(j["requests"] == len(FACTS) for j in plan["jobs"])
    good = plan["jobs"][1]
    assert good["max_cost_usd"] == pytest.approx((good["prompt_tokens"] * 2.5 + good["max_output_tokens"] * 10) / 1e6,
                                                 rel=1e-3)
    assert plan["max_cost_usd"] == pytest.approx(sum(j["max_cost_usd"] for j in plan["jobs"]))
    assert not list((tmp_path / ".aigc").rglob("out.jsonl"))
    code, out, _ = run_cli(capsys, "eval", "run", suite, "--dry-run")
    assert "worst-case cost: $" in out and "nothing was sent" in out


def test_two_candidates_scored_with_intervals_tests_cost_and_latency_then_a_rerun_sends_nothing(
        server, tmp_path, capsys):
    suite = write_suite(tmp_path)
    code, report, err = eval_json(capsys, "run", suite, "-o", tmp_path / "report.html")
    assert code == 0, err
    assert server.request_count == 2 * len(FACTS)
    weak, good = report["candidates"]
    assert good["scores"]["rouge1"]["value"] == pytest.approx(1.0)  # answers with the reference
    assert weak["scores"]["rouge1"]["value"] < 0.8
    lo, hi = weak["scores"]["chrf"]["ci95"]
    assert lo <= weak["scores"]["chrf"]["value"] <= hi and hi > lo
    row = next(r for r in report["comparisons"] if r["metric"] == "rougeL")
    assert row["candidate"] == "good" and row["difference"] > 0 and row["significant"]
    assert report["best"]["rouge1"] == "good" and report["best"]["cost_usd"] == "weak"
    billed = server.billed
    assert weak["usage"]["prompt_tokens"] + good["usage"]["prompt_tokens"] == billed["prompt_tokens"]
    assert weak["usage"]["cost_usd"] > 0 and good["usage"]["cost_usd"] > weak["usage"]["cost_usd"]
    assert good["usage"]["latency_p50_s"] is not None and good["usage"]["latency_p95_s"] >= good["usage"]["latency_p50_s"]
    assert good["model_snapshot"]["served"] == ["good-model"] and good["template"] == "summarize"
    assert report["signatures"]["chrf"].startswith("chrF2|nrefs:1|bs:1000|seed:12345")
    item = next(i for i in report["items"] if i["id"] == "bridge")
    assert item["candidates"]["good"]["outputs"][0]["text"] == REFERENCE["bridge"]
    html = (tmp_path / "report.html").read_text()
    assert "data:image/png;base64," in html and REFERENCE["bridge"] in html
    assert Path(report["report_path"]).is_file()
    written = [p.read_text(errors="replace") for p in (tmp_path / ".aigc").rglob("*") if p.is_file()
               and p.suffix in (".json", ".toml", ".jsonl")]
    assert KEY not in html and not any(KEY in text for text in written)  # the API key is never written

    code, again, _ = eval_json(capsys, "run", suite)
    assert code == 0 and server.request_count == 2 * len(FACTS)  # everything came from the journal
    code, out, _ = run_cli(capsys, "eval", "run", suite)
    assert re.search(r"^good\s+100\.0 \[100\.0, 100\.0\]\*", out, re.M), out  # best per column marked

    # A changed candidate is a new system: its earlier outputs are never scored as its own.
    suite.write_text(suite.read_text().replace("max_output_tokens = 40", "max_output_tokens = 30", 1))
    server.fail_next(100, Fault(status=400, message="Rejected."))
    code, changed, _ = eval_json(capsys, "run", suite)
    assert code == 1 and changed["suite"]["scored_items"] == 0
    assert again["candidates"][1]["scores"]["rougeL"] == good["scores"]["rougeL"]


def test_samples_at_temperature_are_separate_requests_with_their_seed_and_report_spread(server, tmp_path, capsys):
    suite = write_suite(tmp_path, SUITE.replace("temperature = 0", "temperature = 0.8"))
    code, report, err = eval_json(capsys, "run", suite, "--samples", "3")
    assert code == 0, err
    assert server.request_count == 2 * 3 * len(FACTS)
    seeds = {(r.body["model"], r.body["seed"]) for r in server.requests if r.body}
    assert seeds == {(m, s) for m in ("weak-model", "good-model") for s in (1, 2, 3)}
    good = report["candidates"][1]
    assert good["samples"] == 3 and good["scores"]["rouge1"]["item_std"] > 0
    assert len(report["items"][0]["candidates"]["good"]["outputs"]) == 3
    code, _, _ = eval_json(capsys, "run", suite, "--samples", "3")
    assert code == 0 and server.request_count == 2 * 3 * len(FACTS)  # cached per sample, nothing resent

    mixed = write_suite(tmp_path / "mixed", SUITE.replace("temperature = 0\n    [[", "temperature = 0.8\n    [["))
    code, report, err = eval_json(capsys, "run", mixed, "--samples", "3")
    assert code == 0, err
    assert [c["samples"] for c in report["candidates"]] == [3, 1]  # the greedy one is asked once
    assert any("'good' samples at temperature 0" in w for w in report["warnings"])

    greedy = write_suite(tmp_path / "greedy")
    code, out, err = run_cli(capsys, "eval", "run", greedy, "--samples", "2")
    assert code == 2 and "temperature" in err and len(err.strip().splitlines()) == 1


def test_compare_refuses_other_data_or_a_changed_template_and_rescores_comparable_runs(server, tmp_path, capsys):
    first = write_suite(tmp_path / "a")
    assert eval_json(capsys, "run", first)[0] == 0
    report_a = tmp_path / "a" / "A.json"
    report_a.write_text((tmp_path / "a/.aigc/eval/news/reports/latest.json").read_text())

    changed = SUITE.replace('name = "good"', 'name = "good"\n    template = "short"').replace(
        "[vars]", 'templates_dir = "templates"\n    [vars]')
    second = write_suite(tmp_path / "b", changed)
    (tmp_path / "b/templates").mkdir()
    (tmp_path / "b/templates/short.j2").write_text("{% block user %}{{ text }}\n\nSummarize briefly.{% endblock %}")
    assert eval_json(capsys, "run", second)[0] == 0
    code, out, err = run_cli(capsys, "eval", "compare", report_a, tmp_path / "b/.aigc/eval/news/reports/latest.json")
    assert code == 2 and "candidate 'good' used a different template" in err

    other = write_suite(tmp_path / "c", facts=FACTS[:5])
    assert eval_json(capsys, "run", other)[0] == 0
    code, _, err = run_cli(capsys, "eval", "compare", report_a, tmp_path / "c/.aigc/eval/news/reports/latest.json")
    assert code == 2 and "different data" in err

    from aigc.eval import compare_reports, load_report
    from aigc.eval.compare import NotComparable

    drifted = load_report(report_a)
    drifted["candidates"][1]["model_snapshot"]["served"] = ["good-model-2025-01-01"]
    with pytest.raises(NotComparable, match="different model snapshot"):
        compare_reports(load_report(report_a), drifted)
    resigned = load_report(report_a)
    resigned["signatures"]["chrf"] = resigned["signatures"]["chrf"].replace("version:", "version:0")
    with pytest.raises(NotComparable, match="chrf signatures differ"):
        compare_reports(load_report(report_a), resigned)

    again = write_suite(tmp_path / "d")
    assert eval_json(capsys, "run", again)[0] == 0
    code, merged, err = eval_json(capsys, "compare", report_a, tmp_path / "d/.aigc/eval/news/reports/latest.json")
    assert code == 0, err
    assert [c["name"] for c in merged["candidates"]] == ["weak@A", "good@A", "weak@latest", "good@latest"]
    assert merged["suite"]["baseline"] == "weak@A"
    good_a, good_d = merged["candidates"][1], merged["candidates"][3]
    assert good_a["scores"]["rougeL"]["value"] == good_d["scores"]["rougeL"]["value"]


def test_a_suite_with_mistakes_is_one_line_and_exit_2(tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("OPENAI_API_KEY", "sk-test")
    bad = write_suite(tmp_path, SUITE.replace('["rouge", "chrf"]', '["rouge", "meteor"]'))
    code, _, err = run_cli(capsys, "eval", "run", bad)
    assert code == 2 and "unknown metric 'meteor'" in err and len(err.strip().splitlines()) == 1
    twice = write_suite(tmp_path, SUITE.replace('name = "good"', 'name = "weak"'))
    code, _, err = run_cli(capsys, "eval", "run", twice)
    assert code == 2 and "used twice" in err


@pytest.mark.slow
def test_kill_9_mid_run_then_resume_sends_nothing_twice_except_what_was_in_flight(monkeypatch, tmp_path):
    with FakeOpenAIServer(reply=reply_for, latency=0.15) as server:
        use_server(monkeypatch, server)
        facts = [(f"{k}{i}", f"{t} (item {i})", r) for i in range(3) for k, t, r in FACTS]
        suite = write_suite(tmp_path, SUITE, facts=facts)
        for seen in (5, 30):
            proc = aigc_process("eval", "run", suite)
            deadline = time.monotonic() + 60
            while server.request_count < seen and proc.poll() is None:
                assert time.monotonic() < deadline
                time.sleep(0.005)
            proc.send_signal(signal.SIGKILL)
            proc.communicate(timeout=30)
            assert proc.returncode == -signal.SIGKILL
        before = server.stats["duplicates"]
        proc = aigc_process("eval", "run", suite, "--json")
        out, err = proc.communicate(timeout=120)
        assert proc.returncode == 0, err
        report = json.loads(out)
        assert report["suite"]["scored_items"] == len(facts)
        stats = server.stats
        assert stats["ok"] - stats["duplicates"] == 2 * len(facts)  # every answer paid for once...
        assert stats["duplicates"] <= 2 * 2  # ...except at most `concurrency` in flight at each kill
        assert before <= 2 * 2


def test_eval_help_shows_an_example(capsys):
    code, out, _ = run_cli(capsys, "eval", "run", "--help")
    assert code == 0 and "Example: aigc eval run" in out


def test_the_budget_stops_the_eval_and_a_rerun_finishes_without_paying_twice(server, tmp_path, capsys):
    capped = SUITE.replace("[limits]", "[budget]\n    max_cost_usd = 0.0012\n    [limits]")
    suite = write_suite(tmp_path, capped)
    code, report, err = eval_json(capsys, "run", suite)
    assert code == 3, err
    sent = server.request_count
    assert 0 < sent < 2 * len(FACTS)
    assert report["spent"]["cost_usd"] <= 0.0012
    assert any("not answered by every candidate" in w for w in report["warnings"])
    suite.write_text(suite.read_text().replace("max_cost_usd = 0.0012", "max_cost_usd = 1.0"))
    code, report, err = eval_json(capsys, "run", suite)
    assert code == 0, err
    assert server.request_count == 2 * len(FACTS)  # what was done stayed done
    assert server.stats["duplicates"] == 0
    assert report["suite"]["scored_items"] == len(FACTS)


def test_an_item_that_fails_is_reported_and_left_out_of_the_paired_scores(server, tmp_path, capsys):

    suite = write_suite(tmp_path)
    server.enqueue_faults(Fault(status=400, message="This item is rejected."))
    code, report, err = eval_json(capsys, "run", suite)
    assert code == 1, err
    assert report["suite"]["scored_items"] == len(FACTS) - 1
    failed = [r for r in report["runs"] if r["failed"]]
    assert len(failed) == 1 and "rejected" in failed[0]["failures"][0]["reason"]
    assert all(c["scores"]["rouge1"]["n"] == len(FACTS) - 1 for c in report["candidates"])


LABELLED = [("r1", "I love this phone, the battery lasts for days.", "positive"),
            ("r2", "The screen cracked after a week.", "negative"),
            ("r3", "It arrived on Tuesday.", "neutral"),
            ("r4", "Terrible support, never again.", "negative"),
            ("r5", "Works fine, as described.", "positive"),
            ("r6", "The box was blue.", "neutral")]


def label_reply(body: dict) -> str | None:
    prompt = json.dumps(body["messages"])
    gold = next((label for _, text, label in LABELLED if text[:20] in prompt), None)
    if gold is None:
        return None
    return f"Label: {gold}." if body["model"] == "good-model" else "positive"


def test_labels_are_scored_with_accuracy_macro_f1_and_mcnemar(monkeypatch, tmp_path, capsys):
    with FakeOpenAIServer(reply=label_reply) as server:
        use_server(monkeypatch, server)
        body = SUITE.replace('task = "summarize"', 'template = "classify"\n    templates_dir = "templates"').replace(
            '["rouge", "chrf"]', '["accuracy", "macro_f1"]').replace(
            '[vars]\n    length = "1 sentence"', '[checks]\n    labels = ["positive", "negative", "neutral"]')
        suite = write_suite(tmp_path, body, facts=LABELLED)
        (tmp_path / "templates").mkdir()
        (tmp_path / "templates/classify.j2").write_text(
            "{% block user %}{{ text }}\n\nIs this review positive, negative or neutral?{% endblock %}")
        code, report, err = eval_json(capsys, "run", suite)
        assert code == 0, err
        weak, good = report["candidates"]
        assert good["scores"]["accuracy"]["value"] == 1.0 and good["scores"]["macro_f1"]["value"] == 1.0
        assert weak["scores"]["accuracy"]["value"] == pytest.approx(2 / 6)
        assert weak["scores"]["macro_f1"]["value"] == pytest.approx((2 * 2 / (2 * 2 + 4 + 0)) / 3)  # positive only
        row = next(r for r in report["comparisons"] if r["metric"] == "accuracy")
        assert row["test"] == "McNemar (exact)" and row["only_candidate_right"] == 4 and row["only_baseline_right"] == 0
        assert row["p_value"] == pytest.approx(2 / 16)
