"""The command line as a writer or operator uses it: files, pipes, -o, --json, --stream, errors."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from aigc.cli import main
from tests.conftest import aim_cli
from tests.openai_server import FakeOpenAIServer, Fault

KEY = "sk-test-SECRET-abcdef123456"


@pytest.fixture
def server(monkeypatch):
    with FakeOpenAIServer() as s:
        aim_cli(monkeypatch, s, KEY)
        yield s


def run(*argv: str) -> int:
    with pytest.raises(SystemExit) as info:
        main(list(argv))
    return info.value.code


def aigc_process(*argv: str, stdin: str | None = None, env: dict | None = None) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "aigc", *argv], input=stdin, capture_output=True, text=True,
                          env={**os.environ, **(env or {})}, timeout=60)


def test_summarize_a_file(server, article, capsys):
    assert run("summarize", str(article)) == 0
    out = capsys.readouterr().out
    assert out.startswith("Reply:") and out.endswith("\n")


def test_pipes_and_output_files(server, tmp_path):
    target = tmp_path / "out" / "summary.txt"
    target.parent.mkdir()
    proc = aigc_process("summarize", "-", "-o", str(target), stdin="Rain is expected all week in the north.")
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout == "" and target.read_text().startswith("Reply:")
    assert [p.name for p in target.parent.iterdir()] == ["summary.txt"]  # no temp files left


def test_json_prints_the_whole_result(server, article, capsys):
    assert run("translate", str(article), "--to", "de", "--json") == 0
    data = json.loads(capsys.readouterr().out)
    assert data["task"] == "translate" and data["backend"] == "openai"
    assert data["usage"]["prompt_tokens"] > 0 and data["attempts"] == 1
    assert KEY not in json.dumps(data)


def test_streaming_prints_as_it_arrives(server, article, capsys):
    assert run("news", str(article), "--stream", "--style", "feature") == 0
    assert capsys.readouterr().out.startswith("Reply:")
    assert server.requests[-1].body["stream"] is True


def test_ask_with_a_context_file(server, article, capsys):
    assert run("ask", "How many visitors came?", "--context", str(article)) == 0
    assert "40,000" in server.requests[-1].body["messages"][-1]["content"]


def test_generate_with_variables(server, capsys):
    assert run("generate", "translate", "--var", "text=Hola", "--var", "to=English") == 0
    assert "Hola" in server.requests[-1].body["messages"][-1]["content"]


def test_options_reach_the_request(server, article, capsys):
    assert run("summarize", str(article), "--model", "gpt-4.1-mini", "--temperature", "0.9",
               "--max-tokens", "40") == 0
    body = server.requests[-1].body
    assert (body["model"], body["temperature"], body["max_tokens"]) == ("gpt-4.1-mini", 0.9, 40)


def test_templates_list_and_show(capsys):
    assert run("templates", "list") == 0
    listing = capsys.readouterr().out
    for name in ("news", "answer", "summarize", "translate"):
        assert name in listing
    assert run("templates", "show", "qa") == 0  # the template's old name still works
    assert "{% block user %}" in capsys.readouterr().out


@pytest.mark.parametrize("argv, code, fragment", [
    (["summarize", "missing.txt"], 2, "no such file"),
    (["translate", "ARTICLE"], 2, "--to"),
    (["generate", "nosuch"], 2, "no template named"),
    (["generate", "translate", "--var", "text=hi"], 2, "'to'"),
    (["summarize", "ARTICLE", "--temperature", "7"], 2, "temperature"),
])
def test_bad_input_is_one_line_and_exit_2(server, article, argv, code, fragment):
    proc = aigc_process(*[str(article) if a == "ARTICLE" else a for a in argv])
    assert proc.returncode == code
    assert fragment in proc.stderr
    assert "Traceback" not in proc.stderr
    assert server.request_count == 0


@pytest.mark.parametrize("content, fragment", [
    (b"\x00\x01\x02binary", "binary"),
    (b"caf\xe9 au lait", "not UTF-8"),
    (b"", "empty"),
])
def test_unusable_files_are_refused(server, tmp_path, content, fragment):
    path = tmp_path / "input.txt"
    path.write_bytes(content)
    proc = aigc_process("summarize", str(path))
    assert proc.returncode == 2 and fragment in proc.stderr and len(proc.stderr.strip().splitlines()) == 1


@pytest.mark.parametrize("fault, code, fragment", [
    (Fault(status=401), 2, "rejected the API key"),  # the user must fix the key, as with any setting
    (Fault.quota(), 1, "quota"),
    (Fault(status=400), 1, "rejected the request"),
])
def test_api_failures_are_one_line_without_the_key(server, article, fault, code, fragment):
    server.enqueue_faults(fault)
    proc = aigc_process("summarize", str(article))
    assert proc.returncode == code
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("aigc: error:") and fragment in lines[0]
    assert KEY not in proc.stderr and "SECRET" not in proc.stderr
    assert proc.stdout == ""


def test_persistent_server_errors_exit_1_after_the_retries(server, article):
    server.fail_next(5, Fault.server_error(503))
    proc = aigc_process("summarize", str(article), env={"AIGC_MAX_ATTEMPTS": "3"})
    assert proc.returncode == 1 and "HTTP 503" in proc.stderr
    assert server.request_count == 3


def test_a_failed_run_leaves_the_output_file_untouched(server, article, tmp_path):
    target = tmp_path / "summary.txt"
    target.write_text("previous summary")
    server.enqueue_faults(Fault(status=400))
    proc = aigc_process("summarize", str(article), "-o", str(target))
    assert proc.returncode == 1 and target.read_text() == "previous summary"


def test_debug_mode_shows_the_traceback(server, article):
    server.enqueue_faults(Fault(status=400))
    proc = aigc_process("summarize", str(article), env={"AIGC_DEBUG": "1"})
    assert proc.returncode != 0 and "Traceback" in proc.stderr


def test_help_is_fast_and_does_not_import_heavy_modules():
    code = "import sys; from aigc.cli import main\ntry:\n    main(['--help'])\nexcept SystemExit: pass\n" \
           "print(sorted(m for m in ('torch', 'transformers', 'openai') if m in sys.modules))"
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert proc.stdout.strip().endswith("[]"), proc.stdout + proc.stderr
    assert "summarize" in proc.stdout
