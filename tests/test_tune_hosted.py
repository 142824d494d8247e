"""`aigc tune openai`: hosted fine-tuning through the real SDK against tests/openai_server.py.

Upload, processing, creation (exactly once), following the status to the end, the bill, interruption and
reattachment, failures, the 403 of organisations OpenAI no longer lets fine-tune, the budget, aliases.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

import aigc
import aigc.tune
from aigc.cli import main
from aigc.errors import BudgetExceeded, ConnectionFailed, PermissionDenied
from aigc.ledger import Ledger
from tests.openai_server import FakeOpenAIServer

DATA = Path(__file__).parent / "data" / "beep.jsonl"
MODEL = "gpt-4o-mini-2024-07-18"
KEY = "sk-test-SECRET-tune0123456789"


@pytest.fixture
def server(monkeypatch):
    with FakeOpenAIServer(fine_tune_durations=(0.15, 0.15, 0.3)) as s:
        monkeypatch.setenv("OPENAI_BASE_URL", s.url)
        monkeypatch.setenv("OPENAI_API_KEY", KEY)
        monkeypatch.setenv("AIGC_MAX_ATTEMPTS", "3")
        monkeypatch.setenv("AIGC_TIMEOUT", "5")
        yield s


@pytest.fixture
def data(tmp_path):
    path = tmp_path / "beep.jsonl"
    shutil.copy(DATA, path)
    return path


def calls(server, method: str, prefix: str) -> int:
    return sum(1 for r in server.requests if r.method == method and r.path.startswith(prefix))


def run(*argv: str) -> int:
    with pytest.raises(SystemExit) as info:
        main(list(argv))
    return info.value.code


def test_upload_create_follow_and_bill(server, data):
    states, events = [], []

    def progress(job, event):
        (events.append(event.message) if event else states.append(job.state))

    job = aigc.tune.hosted(data, model=MODEL, suffix="beep", poll_interval=0.05, progress=progress)
    assert job.state == "succeeded" and not job.reattached
    assert job.fine_tuned_model == f"ft:{MODEL}:aigc-tests:beep:{job.job_id[6:]}"
    # Created once, with the supervised method (not the deprecated top-level hyperparameters) and our tag.
    [body] = server.fine_tuning.created_bodies
    assert body["method"] == {"type": "supervised", "supervised": {"hyperparameters": {"n_epochs": 3}}}
    assert "hyperparameters" not in body and body["metadata"] == {"aigc_run": job.run_id}
    assert body["training_file"] == job.file_id and body["suffix"] == "beep"
    # The upload was a fine-tune file, and processed before the job was created.
    order = [(r.method, r.path) for r in server.requests]
    assert order.index(("GET", f"/v1/files/{job.file_id}")) < order.index(("POST", "/v1/fine_tuning/jobs"))
    # It moved through every status, and its events were reported in order.
    assert [s for s in dict.fromkeys(states) if s != "uploading"][:4] == ["validating_files", "queued", "running",
                                                                          "succeeded"]
    assert events[0].startswith("Created fine-tuning job") and events[-1] == "The job has successfully completed"
    # Billed from trained_tokens, which our estimate predicted exactly; three checkpoints listed.
    report = aigc.tune.validate(data, model=MODEL)
    assert job.trained_tokens == report.training_tokens == job.estimated_tokens
    assert job.cost_usd == pytest.approx(job.trained_tokens * 3.00 / 1e6)
    assert len(job.checkpoints) == 3 and job.checkpoints[-1].endswith("ckpt-step-9")
    with Ledger(Path(os.environ["AIGC_DATA_DIR"]) / "ledger.db") as ledger:
        [row] = ledger.report(by="task")
    assert (row.key, row.prompt_tokens, row.cost_usd) == ("tune", job.trained_tokens, pytest.approx(job.cost_usd))
    # The same command again: the finished run, not a second job (or a second bill).
    again = aigc.tune.hosted(data, model=MODEL, suffix="beep", poll_interval=0.05)
    assert again.reattached and again.job_id == job.job_id and len(server.fine_tuning.jobs) == 1
    assert calls(server, "POST", "/v1/files") == 1
    with Ledger(Path(os.environ["AIGC_DATA_DIR"]) / "ledger.db") as ledger:
        assert ledger.totals().requests == 1


def test_a_creation_whose_answer_was_lost_is_found_not_repeated(server, data):
    server.fine_tuning.lost_create_answers = 1  # the job is created, then the connection is cut
    job = aigc.tune.hosted(data, model=MODEL, poll_interval=0.05)
    assert job.state == "succeeded"
    assert len(server.fine_tuning.jobs) == 1 and calls(server, "POST", "/v1/fine_tuning/jobs") == 1
    assert calls(server, "GET", "/v1/fine_tuning/jobs") >= 1  # looked up by metadata.aigc_run


def test_a_crash_after_creating_reattaches_to_the_job(server, data, monkeypatch):
    server.fine_tuning.lost_create_answers = 1
    monkeypatch.setenv("AIGC_MAX_ATTEMPTS", "1")  # no retry: the call dies like a killed process would
    with pytest.raises(ConnectionFailed):
        aigc.tune.hosted(data, model=MODEL, poll_interval=0.05)
    [run_] = aigc.tune.list_runs()
    assert run_.state == "creating" and run_.job_id is None and run_.file_id is not None
    monkeypatch.setenv("AIGC_MAX_ATTEMPTS", "3")
    job = aigc.tune.hosted(data, model=MODEL, poll_interval=0.05)
    assert job.reattached and job.state == "succeeded" and job.run_id == run_.run_id
    assert len(server.fine_tuning.jobs) == 1 and calls(server, "POST", "/v1/files") == 1


def test_an_edited_training_file_starts_a_new_run_instead_of_resuming(server, data, monkeypatch):
    server.fine_tuning.lost_create_answers = 1
    monkeypatch.setenv("AIGC_MAX_ATTEMPTS", "1")
    with pytest.raises(ConnectionFailed):
        aigc.tune.hosted(data, model=MODEL, poll_interval=0.05)
    [crashed] = aigc.tune.list_runs()
    example = json.loads(data.read_text(encoding="utf-8").splitlines()[0])
    example["messages"][-1]["content"] += " Beep beep."
    with data.open("a", encoding="utf-8") as f:
        f.write(json.dumps(example) + "\n")
    monkeypatch.setenv("AIGC_MAX_ATTEMPTS", "3")
    job = aigc.tune.hosted(data, model=MODEL, poll_interval=0.05)
    assert not job.reattached and job.run_id != crashed.run_id and job.data_sha256 != crashed.data_sha256
    assert job.state == "succeeded" and calls(server, "POST", "/v1/files") == 2  # the edited file went up


def test_kill_9_then_the_same_command_reattaches(server, data, tmp_path):
    server.fine_tuning.durations = (0.5, 0.5, 1.5)
    argv = [sys.executable, "-m", "aigc", "tune", "openai", str(data), "--model", MODEL, "--suffix", "k9",
            "--poll", "0.1"]
    first = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 60
    while not server.fine_tuning.jobs and time.monotonic() < deadline:
        time.sleep(0.05)
    assert server.fine_tuning.jobs, "the first command never created its job"
    time.sleep(0.3)
    first.send_signal(signal.SIGKILL)
    first.communicate(timeout=30)
    second = subprocess.run(argv, capture_output=True, text=True, timeout=120)
    assert second.returncode == 0, second.stderr
    assert "continued a run an earlier command began" in second.stdout
    assert "succeeded" in second.stdout and "ft:gpt-4o-mini-2024-07-18:aigc-tests:k9:" in second.stdout
    assert len(server.fine_tuning.jobs) == 1 and calls(server, "POST", "/v1/files") == 1
    assert KEY not in second.stdout + second.stderr


@pytest.mark.parametrize("stage", ["validating", "running"])
def test_failure_reasons_are_reported(server, data, capsys, stage):
    server.fine_tuning.failure = {"code": "invalid_training_file", "at": stage, "param": "training_file",
                                  "message": "The training file has examples that are too long."}
    assert run("tune", "openai", str(data), "--model", MODEL, "--poll", "0.05") == 1
    out = capsys.readouterr().out
    assert "failed" in out and "too long. (invalid_training_file)" in out
    [job] = aigc.tune.list_runs()
    assert job.state == "failed" and job.fine_tuned_model is None and job.cost_usd is None


def test_the_403_of_the_fine_tuning_wind_down_is_explained(server, data, capsys):
    server.fine_tuning.allowed = False
    with pytest.raises(PermissionDenied) as info:
        aigc.tune.hosted(data, model=MODEL, poll_interval=0.05)
    message = str(info.value)
    assert "HTTP 403" in message and "2027-01-06" in message and "aigc tune local" in message
    assert run("tune", "openai", str(data), "--model", MODEL) == 2  # refused access: fix the setup, not retry
    err = capsys.readouterr().err.strip()
    assert err.startswith("aigc: error: OpenAI refused fine-tuning") and "\n" not in err
    assert calls(server, "POST", "/v1/files") == 1  # the second try reused the upload


def test_the_budget_stops_it_before_anything_is_uploaded(server, data, capsys, tmp_path):
    assert run("tune", "openai", str(data), "--model", MODEL, "--max-cost", "0.001") == 3
    assert "over the budget of $0.001; nothing was uploaded" in capsys.readouterr().err
    assert server.requests == []
    with pytest.raises(BudgetExceeded):
        aigc.tune.hosted(data, model=MODEL, budget=aigc.Budget(max_cost_usd=0.005))
    assert server.requests == [] and aigc.tune.list_runs() == []
    budget = aigc.Budget(max_cost_usd=1.0)
    job = aigc.tune.hosted(data, model=MODEL, budget=budget, poll_interval=0.05)
    assert job.state == "succeeded" and budget.spent_usd == pytest.approx(job.cost_usd)
    assert budget.reserved_usd == 0  # the estimate was replaced by what the job cost
    assert run("tune", "openai", str(data), "--model", MODEL, "--max-cost", "1", "--poll", "0.05", "--again",
               "--json") == 0
    assert json.loads(capsys.readouterr().out)["state"] == "succeeded"
    assert len(server.fine_tuning.jobs) == 2


def test_status_list_and_cancel(server, data, capsys):
    server.fine_tuning.durations = (0.3, 0.3, 10.0)
    job = aigc.tune.hosted(data, model=MODEL, wait=False)
    assert job.state == "validating_files" and job.job_id
    assert run("tune", "status", job.job_id, "--json") == 0
    assert json.loads(capsys.readouterr().out)["job_id"] == job.job_id
    time.sleep(0.8)
    assert aigc.tune.status(job.run_id).state == "running"
    assert run("tune", "cancel", job.job_id) == 0
    assert "cancelled" in capsys.readouterr().out
    done = aigc.tune.status(job.job_id)
    assert done.state == "cancelled" and done.trained_tokens is not None
    assert done.cost_usd == pytest.approx(done.trained_tokens * 3.00 / 1e6)  # tokens trained before cancelling
    assert run("tune", "list") == 0
    assert "openai cancelled" in " ".join(capsys.readouterr().out.split())
    assert run("tune", "status", job.job_id) == 1  # a cancelled job is not a success


def test_an_alias_names_the_model_with_its_prices_everywhere(server, data, capsys, tmp_path):
    job = aigc.tune.hosted(data, model=MODEL, suffix="beep", poll_interval=0.05)
    assert run("tune", "alias", "beep", job.fine_tuned_model) == 0
    out = capsys.readouterr().out
    assert "beep" in out and "$0.3/$1.2 per 1M in/out" in out
    # The library: --model beep is the fine-tuned model, priced at the fine-tuned prices.
    with aigc.Client(model="beep") as client:
        result = client.answer("What is two plus two?")
    assert server.requests[-1].body["model"] == job.fine_tuned_model
    assert result.model == job.fine_tuned_model
    expected = (result.usage.prompt_tokens * 0.30 + result.usage.completion_tokens * 1.20) / 1e6
    assert result.cost_usd == pytest.approx(expected)
    # The CLI and a batch job.
    assert run("ask", "Who?", "--model", "beep") == 0
    assert server.requests[-1].body["model"] == job.fine_tuned_model
    records = tmp_path / "in.jsonl"
    records.write_text('{"id": "a", "text": "Rain all week."}\n', encoding="utf-8")
    (tmp_path / "job.toml").write_text('task = "summarize"\n[input]\njsonl = "in.jsonl"\n[output]\n'
                                       'jsonl = "out.jsonl"\n[model]\nmodel = "beep"\n', encoding="utf-8")
    assert run("batch", "run", str(tmp_path / "job.toml")) == 0
    assert server.requests[-1].body["model"] == job.fine_tuned_model
    # Listing, and a base model's retirement date carried by the alias.
    assert run("tune", "alias", "nano", "ft:gpt-4.1-nano-2025-04-14:acme::x1") == 0
    assert "base retires 2026-10-23" in capsys.readouterr().out
    assert [a.name for a in aigc.tune.list_aliases(data_dir=os.environ["AIGC_DATA_DIR"])] == ["beep", "nano"]
    assert run("tune", "alias", "--remove", "nano") == 0
    assert run("tune", "alias", "gpt-4o", "ft:gpt-4o-mini-2024-07-18:acme::x1") == 2  # would shadow a model


def test_an_alias_of_a_local_folder_picks_the_local_backend(tmp_path, monkeypatch):
    folder = tmp_path / "models" / "mine"
    folder.mkdir(parents=True)
    (folder / "config.json").write_text("{}", encoding="utf-8")
    (folder / "aigc-tune.json").write_text(json.dumps({"base_model": "SmolLM2-135M-Instruct"}), encoding="utf-8")
    monkeypatch.chdir(tmp_path)
    alias = aigc.tune.set_alias("mine", "models/mine", data_dir=os.environ["AIGC_DATA_DIR"])
    assert alias.backend == "local" and alias.model == str(folder) and alias.base_model == "SmolLM2-135M-Instruct"
    settings = aigc.tune.apply_alias(aigc.load_settings({"model": "mine"}))
    assert (settings.backend, settings.model) == ("local", str(folder))
    with pytest.raises(aigc.ConfigError, match="use --backend local"):
        aigc.tune.apply_alias(aigc.load_settings({"model": "mine", "backend": "openai"}))
    assert aigc.tune.apply_alias(aigc.load_settings({"model": "gpt-4o"})).model == "gpt-4o"


def test_moderation_through_the_api(server, tmp_path):
    server.flag("attack the village", violence=0.91)
    lines = DATA.read_text(encoding="utf-8").splitlines()
    lines[5] = json.dumps({"messages": [{"role": "user", "content": "How do I attack the village?"},
                                        {"role": "assistant", "content": "Beep boop! I won't help."}]})
    path = tmp_path / "data.jsonl"
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    report = aigc.tune.validate(path, model=MODEL, moderate=True)
    assert report.moderated == 48 and [(p.line, p.kind) for p in report.errors] == [(6, "moderation")]
    with pytest.raises(aigc.tune.TrainingDataInvalid, match="line 6: error: flagged by moderation"):
        aigc.tune.hosted(path, model=MODEL, moderate=True)
    assert calls(server, "POST", "/v1/files") == 0  # refused before anything was uploaded


def test_show_labels_for_a_hosted_model_shows_messages_from_the_one_reading(server, data, capsys, monkeypatch):
    import aigc.tune.data
    import aigc.tune.validation

    reads = []

    def counted(*args, **kwargs):
        reads.append(args[0])
        return read(*args, **kwargs)

    read = aigc.tune.data.read_examples
    monkeypatch.setattr(aigc.tune.data, "read_examples", counted)
    monkeypatch.setattr(aigc.tune.validation, "read_examples", counted)
    assert run("tune", "validate", str(data), "--model", MODEL, "--show-labels", "1") == 0
    out = capsys.readouterr().out
    assert "[masked ] user: What color is the sky on a clear day?" in out
    assert "[TRAINED] assistant: Beep boop! Blue." in out
    assert out.count("--- line ") == 1 and len(reads) == 1  # validation's reading is the one shown


def test_bad_data_is_listed_line_by_line_and_nothing_is_sent(server, tmp_path, capsys):
    lines = DATA.read_text(encoding="utf-8").splitlines()
    lines[2] = '{"messages": [{"role": "user", "content": "no reply"}]}'
    lines[9] = "{not json"
    path = tmp_path / "bad.jsonl"
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    assert run("tune", "openai", str(path), "--model", MODEL) == 2
    err = capsys.readouterr().err
    assert "2 problem(s) stop training" in err
    assert "line 3: error: no assistant message" in err and "line 10: error: not valid JSON" in err
    assert server.requests == []


def test_an_alias_named_per_call_is_resolved_too(server, tmp_path):
    aigc.tune.set_alias("my-news", "ft:gpt-4o-mini-2024-07-18:acme:news:abc123", data_dir=os.environ["AIGC_DATA_DIR"])
    folder = tmp_path / "mine"
    folder.mkdir()
    (folder / "config.json").write_text("{}", encoding="utf-8")
    aigc.tune.set_alias("mine", str(folder), data_dir=os.environ["AIGC_DATA_DIR"])
    with aigc.Client(base_url=server.url, api_key="sk-test-alias-123456", model="gpt-4o-mini") as client:
        client.summarize("The council met.", model="my-news")
        assert server.requests[-1].body["model"] == "ft:gpt-4o-mini-2024-07-18:acme:news:abc123"
        with pytest.raises(aigc.ConfigError, match="alias of the local model"):
            client.summarize("The council met.", model="mine")


def test_a_changed_alias_is_seen_at_once_by_a_running_process(tmp_path):
    from aigc.tune.aliases import remove_alias, resolve, set_alias

    set_alias("house", "gpt-4o-mini", data_dir=tmp_path)
    assert resolve("house", tmp_path).model == "gpt-4o-mini"
    set_alias("house", "gpt-4o", data_dir=tmp_path)  # as `aigc tune alias` run beside a server would
    assert resolve("house", tmp_path).model == "gpt-4o"
    remove_alias("house", data_dir=tmp_path)
    assert resolve("house", tmp_path) is None
