"""What a hostile new user tries, everywhere but batch jobs: template names that are paths, secrets inside
URLs, errors that would carry the SDK's request (and its Authorization header), file permissions, exit
codes, broken data folders and files, and empty or meaningless options. Each case was seen to fail once.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import stat
import subprocess
import time

import pytest

import aigc
from aigc.cli import main
from tests.conftest import aim_cli
from tests.openai_server import FakeOpenAIServer, Fault

KEY = "sk-test-SECRET-hardening-1234567"
PASSWORD = "pw-Hunter2-Secret"
QUERY_SECRET = "QueryToken987654"


@pytest.fixture
def server(monkeypatch):
    with FakeOpenAIServer() as s:
        aim_cli(monkeypatch, s, KEY)
        yield s


@pytest.fixture
def cli(capsys):
    """``aigc ARGV`` in this process (with ``env`` added to the environment): its exit code and output."""

    def run(*argv, env: dict | None = None) -> subprocess.CompletedProcess:
        with pytest.MonkeyPatch.context() as m:
            for name, value in (env or {}).items():
                m.setenv(name, value)
            with pytest.raises(SystemExit) as info:
                main([str(a) for a in argv])
        out = capsys.readouterr()
        return subprocess.CompletedProcess(argv, info.value.code, out.out, out.err)

    return run


def one_error_line(proc) -> str:
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("aigc: error:"), proc.stderr
    assert "internal error" not in proc.stderr and "Traceback" not in proc.stderr
    return lines[0]


def secret_url(server, query: bool = False) -> str:
    """The server's URL with credentials in it (a query string is for doctor: the SDK cannot send to it)."""
    host = server.url.removeprefix("http://")
    return f"http://reader:{PASSWORD}@{host}" + (f"?api-key={QUERY_SECRET}" if query else "")


def no_secrets(text: str) -> bool:
    return KEY not in text and PASSWORD not in text and QUERY_SECRET not in text and "reader:" not in text


# ---- template names are names ------------------------------------------------------------------------------

def test_template_names_that_are_paths_are_refused_and_nothing_is_read_or_sent(cli, server, tmp_path, article):
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    (elsewhere / "x.j2").write_text("+++\ninput = \"text\"\n+++\n{% block user %}LEAKED {{ text }}{% endblock %}")
    relative = os.path.relpath(elsewhere / "x", os.getcwd())
    for argv in (["generate", relative, article], ["generate", str(elsewhere / "x"), "--var", "text=hi"],
                 ["templates", "show", str(elsewhere / "x")], ["templates", "show", "../../x"]):
        proc = cli(*argv)
        assert proc.returncode == 2, argv
        assert "is not a template name" in one_error_line(proc) and "LEAKED" not in proc.stdout
    assert server.request_count == 0


# ---- secrets in URLs, and errors that carry nothing of the request -----------------------------------------

def test_credentials_in_the_base_url_never_show(cli, server, article, tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("OPENAI_BASE_URL", secret_url(server))
    server.enqueue_faults(Fault(status=400, message="Bad input."))
    proc = cli("summarize", article)
    assert proc.returncode == 1 and "***@" in proc.stderr and no_secrets(proc.stderr + proc.stdout)

    server.enqueue_faults(Fault(status=401))
    job = tmp_path / "job.toml"
    (tmp_path / "in").mkdir()
    (tmp_path / "in" / "a.md").write_text("Some text to summarize.\n")
    job.write_text('task = "summarize"\n[input]\nglob = "in/*.md"\n[output]\ndir = "out"\n')
    proc = cli("batch", "run", job, "--json")
    assert proc.returncode == 2
    report = json.loads(proc.stdout)
    written = (tmp_path / ".aigc" / "job" / "reports" / f"{report['run_id']}.json").read_text()
    assert "rejected the API key" in report["stopped"] and no_secrets(proc.stdout + proc.stderr + written)

    monkeypatch.setenv("OPENAI_BASE_URL", secret_url(server, query=True))
    with pytest.raises(SystemExit):
        main(["doctor", "--json"])
    doctor = capsys.readouterr().out
    notes = [b["note"] for b in json.loads(doctor)["backends"]]
    assert json.loads(doctor)["base_url"].startswith("http://***@127.0.0.1") and "api-key=***" in doctor
    assert any("http://***@127.0.0.1" in note for note in notes) and no_secrets(doctor)
    assert no_secrets(repr(aigc.load_settings()) + str(aigc.load_settings()))


def test_a_refused_connection_names_the_server_without_its_credentials():
    with socket_that_refuses() as port, aigc.Client(
            base_url=f"http://reader:{PASSWORD}@127.0.0.1:{port}/v1", api_key=KEY, max_attempts=1,
            ledger=False) as client, pytest.raises(aigc.ConnectionFailed) as info:
        client.summarize("Some text.")
    assert "127.0.0.1" in str(info.value) and no_secrets(str(info.value))


class socket_that_refuses:
    """A port with nothing listening on it."""

    def __enter__(self) -> int:
        import socket

        s = socket.socket()
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
        s.close()
        return port

    def __exit__(self, *exc) -> None:
        pass


def test_retry_logs_never_carry_the_credentials(server, caplog):
    server.enqueue_faults(Fault.server_error(503))
    with caplog.at_level(logging.INFO, logger="aigc"), aigc.Client(
            base_url=secret_url(server), api_key=KEY, max_attempts=3, ledger=False) as client:
        assert client.summarize("Some text worth summarizing.").text
    assert "retrying" in caplog.text and no_secrets(caplog.text)


def reachable(error: BaseException) -> list[BaseException]:
    """Every exception reachable from ``error`` through __cause__ and __context__."""
    seen, todo = [], [error]
    while todo:
        e = todo.pop()
        if e is None or any(e is s for s in seen):
            continue
        seen.append(e)
        todo += [e.__cause__, e.__context__]
    return seen


FAILURES = {
    "401": [Fault(status=401)],
    "400": [Fault(status=400)],
    "500 after the retries": [Fault.server_error(500)] * 2,
    "dropped connection": [Fault.dropped()] * 2,
    "stall past the timeout": [Fault.stalled(3)] * 2,
}


@pytest.mark.parametrize("how", ["sync", "async", "stream"])
@pytest.mark.parametrize("name", list(FAILURES))
def test_errors_never_keep_the_sdk_exception_and_its_request_reachable(server, name, how):
    server.enqueue_faults(*FAILURES[name])
    kw = dict(base_url=server.url, api_key=KEY, max_attempts=2, timeout=1, ledger=False)
    with pytest.raises(aigc.AigcError) as info:
        if how == "async":
            async def go():
                async with aigc.AsyncClient(**kw) as client:
                    await client.summarize("Some text.")
            asyncio.run(go())
        else:
            with aigc.Client(**kw) as client:
                result = client.summarize("Some text.", stream=how == "stream")
                list(result) if how == "stream" else None
    chain = reachable(info.value)
    assert all(type(e).__module__.split(".")[0] not in ("openai", "httpx", "httpcore") for e in chain), chain
    assert all(KEY not in repr(vars(e)) for e in chain)


def test_a_stream_cut_midway_keeps_nothing_of_the_sdk_either(server):
    server.enqueue_faults(Fault.stream_cut(after_chunks=2))
    with aigc.Client(base_url=server.url, api_key=KEY, ledger=False) as client, \
            pytest.raises(aigc.AigcError) as info:
        list(client.summarize("Some text that is long enough to stream in pieces.", stream=True))
    assert all(type(e).__module__.split(".")[0] not in ("openai", "httpx", "httpcore") for e in reachable(info.value))


def test_batch_api_errors_keep_nothing_of_the_sdk(server):
    server.enqueue_faults(Fault(status=401))

    async def go():
        async with aigc.AsyncClient(base_url=server.url, api_key=KEY, ledger=False) as client:
            return await client.backend.batch_api().retrieve("batch_nope")

    with pytest.raises(aigc.AuthenticationFailed) as info:
        asyncio.run(go())
    assert all(isinstance(e, aigc.AigcError) for e in reachable(info.value))


# ---- files as a plain open() would make them ----------------------------------------------------------------

def test_output_files_honour_the_umask_and_keep_an_existing_files_mode(cli, server, article, tmp_path):
    target = tmp_path / "summary.txt"
    old = os.umask(0o027)
    try:
        assert cli("summarize", article, "-o", target).returncode == 0
        assert stat.S_IMODE(target.stat().st_mode) == 0o640  # as open() makes it: 0666 less the umask
        target.chmod(0o604)
        assert cli("summarize", article, "-o", target).returncode == 0
        assert stat.S_IMODE(target.stat().st_mode) == 0o604  # a replaced file keeps its mode
    finally:
        os.umask(old)


# ---- exit codes -------------------------------------------------------------------------------------------

@pytest.mark.parametrize("argv", [
    ["summarize", "ARTICLE"], ["translate", "ARTICLE", "--to", "de"], ["answer", "Who came?", "--context", "ARTICLE"],
    ["news", "ARTICLE"], ["generate", "summarize", "--var-file", "text=ARTICLE"],
    ["summarize", "ARTICLE", "--stream"],
])
def test_a_rejected_key_exits_2_from_every_command(cli, server, article, argv):
    server.enqueue_faults(Fault(status=401))
    proc = cli(*[article if a == "ARTICLE" else f"text={article}" if a == "text=ARTICLE" else a for a in argv])
    assert proc.returncode == 2 and "rejected the API key" in one_error_line(proc)
    assert server.request_count == 1


def test_a_data_folder_that_cannot_be_created_is_one_line_and_exit_2(cli, server, article, tmp_path):
    blocker = tmp_path / "not-a-folder"
    blocker.write_text("x")
    proc = cli("summarize", article, env={"AIGC_DATA_DIR": str(blocker / "data")})
    assert proc.returncode == 2, proc.stderr
    assert "cannot create the folder" in one_error_line(proc) and str(blocker) in proc.stderr
    assert server.request_count == 0


def garbage_page(path, page: int = 2) -> None:
    import sqlite3

    size = sqlite3.connect(path).execute("PRAGMA page_size").fetchone()[0]
    data = bytearray(path.read_bytes())
    data[size * page:size * (page + 1)] = bytes((i * 31 + 7) % 256 for i in range(size))
    path.write_bytes(bytes(data))


def test_a_damaged_ledger_is_one_line_and_exit_2_and_doctor_says_so(cli, server, article, tmp_path, capsys):
    data = tmp_path / "data"
    assert cli("summarize", article, env={"AIGC_DATA_DIR": str(data)}).returncode == 0
    ledger = data / "ledger.db"
    ledger.write_bytes(b"not a database at all " * 200)
    proc = cli("summarize", article, env={"AIGC_DATA_DIR": str(data)})
    assert proc.returncode == 2
    line = one_error_line(proc)
    assert str(ledger) in line and "move it aside" in line and server.request_count == 1
    proc = cli("doctor", env={"AIGC_DATA_DIR": str(data)})
    assert proc.returncode == 0 and f"ledger {ledger}: damaged" in proc.stdout.replace("problem: ", "")


def test_a_ledger_damaged_in_a_later_page_is_one_line_too(cli, server, article, tmp_path):
    data = tmp_path / "data"
    for _ in range(3):
        assert cli("summarize", article, env={"AIGC_DATA_DIR": str(data)}).returncode == 0
    from aigc.ledger import Ledger, LedgerEntry

    with Ledger(data / "ledger.db") as ledger:  # enough rows for several pages
        for _ in range(300):
            ledger.record(LedgerEntry(backend="openai", model="m", task="t", prompt_tokens=1))
    garbage_page(data / "ledger.db", page=3)
    proc = cli("usage", env={"AIGC_DATA_DIR": str(data)})
    assert proc.returncode == 2 and "ledger.db" in one_error_line(proc) and "damaged" in proc.stderr
    proc = cli("doctor", "--json", env={"AIGC_DATA_DIR": str(data)})
    files = {f["name"]: f for f in json.loads(proc.stdout)["data_files"]}
    assert files["ledger"]["problem"].startswith("damaged") and files["cache"]["problem"] is None


def test_a_damaged_cache_stops_a_batch_run_with_one_line(cli, server, tmp_path, capsys):
    from tests.test_batch_job import SUMMARIZE, make_articles, run_cli, write_job

    make_articles(tmp_path / "articles", 2)
    (tmp_path / "data").mkdir()
    (tmp_path / "data" / "cache.db").write_bytes(b"\x00garbage" * 512)
    code, out, err = run_cli(capsys, "batch", "run", write_job(tmp_path, SUMMARIZE))
    assert code == 2 and "cache.db" in err and "delete it" in err and len(err.strip().splitlines()) == 1
    assert server.request_count == 0


# ---- options that mean nothing ------------------------------------------------------------------------------

@pytest.mark.parametrize("argv, fragment", [
    (["translate", "ARTICLE", "--to", ""], "to is empty"),
    (["translate", "ARTICLE", "--to", "   "], "to is empty"),
    (["summarize", "ARTICLE", "--length", " "], "length is empty"),
    (["answer", "  ", "--context", "ARTICLE"], "question"),
    (["generate", "translate", "--var", "text=Hola", "--var", "to= "], "to is empty"),
    (["generate", "summarize", "--var-file", "text=ARTICLE", "--var", "length="], "length is empty"),
    (["summarize", "ARTICLE", "--model", ""], "model"),
    (["summarize", "ARTICLE", "--backend", " "], "backend"),
    (["summarize", "ARTICLE", "--dry-run", "-o", "OUT"], "--dry-run sends nothing"),
    (["summarize", "ARTICLE", "--dry-run", "--stream"], "--dry-run sends nothing"),
    (["summarize", "ARTICLE", "-o", "BLOCKED/summary.txt"], "cannot write"),
])
def test_empty_or_meaningless_options_are_refused_before_sending(cli, server, article, tmp_path, argv, fragment):
    (tmp_path / "blocked").write_text("a file, not a folder")
    values = {"ARTICLE": str(article), "OUT": str(tmp_path / "o.txt"), "BLOCKED/summary.txt":
              str(tmp_path / "blocked" / "summary.txt"), "text=ARTICLE": f"text={article}"}
    proc = cli(*[values.get(a, a) for a in argv])
    assert proc.returncode == 2 and fragment in one_error_line(proc)
    assert server.request_count == 0 and not (tmp_path / "o.txt").exists()


def test_an_answer_whose_output_cannot_be_written_is_printed_not_lost(cli, article, tmp_path, monkeypatch):
    target = tmp_path / "summary.txt"

    def reply(body: dict) -> str:
        target.mkdir()  # a folder appears where the output goes, after the checks, before the answer
        return "The festival had 40,000 visitors."

    with FakeOpenAIServer(reply=reply) as server:
        monkeypatch.setenv("OPENAI_BASE_URL", server.url)
        monkeypatch.setenv("OPENAI_API_KEY", KEY)
        proc = cli("summarize", article, "-o", target)
    assert proc.returncode == 2 and "the text was printed instead" in one_error_line(proc)
    assert proc.stdout == "The festival had 40,000 visitors.\n"


def test_deadline_bounds_the_whole_call_retries_included(cli, server, article):
    server.enqueue_faults(*[Fault.stalled(5)] * 20)
    started = time.monotonic()
    proc = cli("summarize", article, "--timeout", "0.5", "--deadline", "1.5",
                        env={"AIGC_MAX_ATTEMPTS": "50"})
    assert proc.returncode == 1 and "in time" in one_error_line(proc)
    assert time.monotonic() - started < 15 and server.request_count <= 3
