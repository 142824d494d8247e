"""Batch jobs, the parts: job files and their mistakes, item keys, atomic outputs, the shared rate gate.

The helpers at the top are shared by the other ``test_batch_*`` files.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

import aigc.cli.batch  # noqa: F401  (registers `aigc batch`)
from aigc.batch.inputs import scan
from aigc.batch.job import load_job
from aigc.batch.outputs import JsonlOutput, write_file
from aigc.batch.plan import close_client, key_maker, open_client
from aigc.cli import main
from aigc.ratelimit import RateGate
from aigc.ratelimit.policy import GAP_S

KEY = "sk-test-batch-abcdef123456"
# `python -m aigc` with the batch commands registered, for tests that need a real process to kill.
LAUNCH = "import sys, aigc.cli.batch; from aigc.cli import main; main(sys.argv[1:])"


# ---- shared helpers -------------------------------------------------------------------------------------

def write_job(folder: Path, body: str, name: str = "job.toml") -> Path:
    path = folder / name
    path.write_text(textwrap.dedent(body).lstrip(), encoding="utf-8")
    return path


def make_articles(folder: Path, n: int, *, start: int = 0) -> list[Path]:
    """``n`` distinct small articles, each carrying a marker the fake model echoes back."""
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for i in range(start, start + n):
        path = folder / f"item-{i:03d}.md"
        path.write_text(f"MARK-{i:03d}. The council met on day {i} and approved plan {i * 7} for the harbour.\n")
        paths.append(path)
    return paths


_MARK = re.compile(r"MARK-\d{3}")


def reply_for(body: dict) -> str | None:
    """The fake model's answer: the article's marker and a long, checkable body (a torn write shows)."""
    found = _MARK.search(json.dumps(body.get("messages")))
    if not found:
        return None
    mark = found.group(0)
    return f"Summary of {mark}. " + " ".join(f"{mark}-word{i}" for i in range(60)) + " END"


def expected_text(path: Path) -> str:
    return reply_for({"messages": [path.read_text()]}) + "\n"


def run_cli(capsys, *argv: str) -> tuple[int, str, str]:
    """``aigc ARGV`` in this process: (exit code, stdout, stderr)."""
    with pytest.raises(SystemExit) as info:
        main([str(a) for a in argv])
    out = capsys.readouterr()
    return info.value.code, out.out, out.err


def aigc_process(*argv: str, **kw) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-c", LAUNCH, *map(str, argv)], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, env=dict(os.environ), **kw)


def use_server(monkeypatch, server) -> None:
    monkeypatch.setenv("OPENAI_BASE_URL", server.url)
    monkeypatch.setenv("OPENAI_API_KEY", KEY)
    monkeypatch.setenv("AIGC_TIMEOUT", "10")


SUMMARIZE = """
    task = "summarize"
    [input]
    glob = "articles/*.md"
    [output]
    dir = "out"
    [vars]
    length = "2 sentences"
    [model]
    backend = "openai"
    model = "gpt-4o-mini"
    max_output_tokens = 400
    [limits]
    concurrency = 4
"""


# ---- job files ------------------------------------------------------------------------------------------

@pytest.mark.parametrize("body, fragment", [
    ('task = "summarize"\n[input\nglob = "a/*.md"\n', "not valid TOML"),
    (SUMMARIZE.replace('"summarize"', '"summarise"'), "unknown task 'summarise'"),
    (SUMMARIZE.replace('"articles/*.md"', '"missing/*.md"'), "does not exist"),
    (SUMMARIZE.replace("concurrency = 4", "concurency = 4"), "[limits] concurency: unknown key"),
    (SUMMARIZE.replace("concurrency = 4", "concurrency = 0"), "[limits] concurrency"),
    (SUMMARIZE.replace('dir = "out"', 'dir = "out"\njsonl = "out.jsonl"'), "exactly one of dir or jsonl"),
    (SUMMARIZE.replace('length = "2 sentences"', 'tone = "dry"'), "not a summarize variable"),
    (SUMMARIZE.replace('"summarize"', '"translate"').replace('length = "2 sentences"', ''),
     "[vars] to: translate needs it"),
    (SUMMARIZE.replace('dir = "out"', 'dir = "articles"'), "outputs would replace the inputs"),
    (SUMMARIZE.replace('task = "summarize"', 'template = "no_such_template"'), "no template named"),
])
def test_a_job_file_with_mistakes_is_one_line_and_exit_2(tmp_path, capsys, monkeypatch, body, fragment):
    monkeypatch.setenv("OPENAI_API_KEY", KEY)
    make_articles(tmp_path / "articles", 1)
    job = write_job(tmp_path, body)
    code, out, err = run_cli(capsys, "batch", "run", job)
    assert code == 2
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("aigc: error:") and fragment in lines[0], err
    assert "Traceback" not in err and out == ""
    assert not (tmp_path / ".aigc").exists()  # nothing was started


def test_a_missing_job_file_is_exit_2(tmp_path, capsys):
    code, _, err = run_cli(capsys, "batch", "status", tmp_path / "nope.toml")
    assert code == 2 and "no such job file" in err


def test_paths_are_relative_to_the_job_file(tmp_path, monkeypatch):
    make_articles(tmp_path / "jobs" / "articles", 2)
    job = load_job(write_job(tmp_path / "jobs", SUMMARIZE))
    monkeypatch.chdir(tmp_path)
    assert job.input_root == (tmp_path / "jobs" / "articles").resolve()
    assert job.output_dir == (tmp_path / "jobs" / "out").resolve()
    assert job.state_dir == (tmp_path / "jobs" / ".aigc" / "job").resolve()
    assert job.name == "job" and job.input_var == "text"


# ---- item keys ------------------------------------------------------------------------------------------

def _keys(job_path: Path) -> dict[str, str]:
    job = load_job(job_path)
    client = open_client(job, use_cache=False)
    try:
        return {item.id: item.key for item in scan(job, key_maker(job, client))}
    finally:
        close_client(client)


def test_a_key_changes_with_the_input_the_template_the_variables_and_the_model(tmp_path, monkeypatch):
    monkeypatch.setenv("OPENAI_API_KEY", KEY)
    paths = make_articles(tmp_path / "articles", 2)
    (tmp_path / "templates").mkdir()
    template = tmp_path / "templates" / "brief.j2"
    template.write_text("{% block user %}Brief: {{ text }}{% endblock %}")
    body = SUMMARIZE.replace('task = "summarize"', 'template = "brief"\ntemplates_dir = "templates"')
    body = body.replace('length = "2 sentences"', 'tone = "dry"')
    job = write_job(tmp_path, body)
    first = _keys(job)
    assert _keys(job) == first  # stable
    paths[0].write_text(paths[0].read_text() + "More.\n")
    second = _keys(job)
    assert second["articles/item-000.md"] != first["articles/item-000.md"]
    assert second["articles/item-001.md"] == first["articles/item-001.md"]
    template.write_text("{% block user %}Very brief: {{ text }}{% endblock %}")
    third = _keys(job)
    assert not set(third.values()) & set(second.values())
    write_job(tmp_path, body.replace('"dry"', '"warm"'))
    assert not set(_keys(job).values()) & set(third.values())
    write_job(tmp_path, body.replace('"dry"', '"warm"').replace("gpt-4o-mini", "gpt-4.1-mini"))
    assert len(set(_keys(job).values()) | set(third.values())) == 4


def test_unusable_inputs_become_items_with_a_reason(tmp_path, monkeypatch):
    monkeypatch.setenv("OPENAI_API_KEY", KEY)
    make_articles(tmp_path / "articles", 1)
    (tmp_path / "articles" / "empty.md").write_bytes(b"")
    (tmp_path / "articles" / "binary.md").write_bytes(b"\x00\x01\x02\x03")
    (tmp_path / "articles" / "latin1.md").write_bytes(b"caf\xe9 au lait")
    job = load_job(write_job(tmp_path, SUMMARIZE))
    client = open_client(job, use_cache=False)
    try:
        items = {i.id.rsplit("/", 1)[-1]: i for i in scan(job, key_maker(job, client))}
    finally:
        close_client(client)
    assert items["item-000.md"].error is None
    assert "empty" in items["empty.md"].error
    assert "binary" in items["binary.md"].error
    assert "not UTF-8" in items["latin1.md"].error
    assert items["item-000.md"].output == job.output_dir / "item-000.md"


# ---- outputs --------------------------------------------------------------------------------------------

def test_a_file_is_written_whole_with_no_temporary_left(tmp_path):
    target = tmp_path / "deep" / "out.md"
    write_file(target, "one\n")
    write_file(target, "two\n")
    assert target.read_text() == "two\n"
    assert [p.name for p in target.parent.iterdir()] == ["out.md"]


def test_a_torn_jsonl_line_is_cut_and_lines_are_never_written_twice(tmp_path):
    path = tmp_path / "out.jsonl"
    path.write_text('{"id": "a", "key": "k1", "text": "x"}\n{"id": "b", "key": "k2", "te')
    out = JsonlOutput(path)
    assert out.recover() is True
    assert out.keys == {"k1"}
    assert out.append({"id": "b", "key": "k2", "text": "y"}) is True
    assert out.append({"id": "b", "key": "k2", "text": "y"}) is False
    out.close()
    lines = [json.loads(line) for line in path.read_text().splitlines()]
    assert [line["key"] for line in lines] == ["k1", "k2"]
    assert JsonlOutput(path).recover() is False


# ---- the rate gate --------------------------------------------------------------------------------------

class FakeTime:
    def __init__(self) -> None:
        self.now = 100.0
        self.slept: list[float] = []

    def clock(self) -> float:
        return self.now

    async def sleep(self, seconds: float) -> None:
        self.slept.append(seconds)
        self.now += seconds


def most_in_any_second(times: list[float], amounts: list[int] | None = None) -> int:
    """The largest total admitted in any window (t - 1, t], as the server counts."""
    amounts = amounts or [1] * len(times)
    return max(sum(a for s, a in zip(times, amounts, strict=True) if t - 1 < s <= t) for t in times)


async def test_the_gate_keeps_to_a_one_second_share_of_rpm_and_never_sends_two_at_once():
    t = FakeTime()
    gate = RateGate(rpm=1200, guard=0.0, clock=t.clock, sleep=t.sleep)
    times = []
    for _ in range(60):
        await gate.acquire(10)
        times.append(t.now)
    assert most_in_any_second(times) == 20  # 20 a second, never 21
    assert times[-1] - times[0] < 3.0  # and no slower than that
    assert min(b - a for a, b in zip(times, times[1:], strict=False)) >= GAP_S - 1e-9  # one by one
    assert gate.acquired == 60


async def test_the_gate_counts_prompt_plus_max_output_tokens():
    t = FakeTime()
    gate = RateGate(tpm=60_000, guard=0.0, clock=t.clock, sleep=t.sleep)  # 1,000 tokens a second
    amounts = [300, 450, 200, 350, 300] * 6
    times = []
    for amount in amounts:
        await gate.acquire(amount)
        times.append(t.now)
    assert most_in_any_second(times, amounts) <= 1000
    assert times[-1] - times[0] < 1.25 * sum(amounts) / 1000  # whole requests only: some room is left
    start = t.now + 5
    t.now = start
    await gate.acquire(5_000)  # bigger than a whole share: admitted into an empty window
    assert t.now == start


async def test_a_refunded_attempt_gives_its_place_back():
    t = FakeTime()
    gate = RateGate(rpm=120, guard=0.0, clock=t.clock, sleep=t.sleep)  # 2 a second
    await gate.acquire(1)
    await gate.acquire(1)
    gate.refund()  # the second never reached the server's books
    before = t.now
    await gate.acquire(1)
    assert t.now - before < 1.0  # did not wait for the first to leave the window
    assert gate.refunds == 1


async def test_a_slow_limit_allows_one_request_per_interval():
    t = FakeTime()
    gate = RateGate(rpm=30, guard=0.0, clock=t.clock, sleep=t.sleep)
    await gate.acquire(1)
    await gate.acquire(1)
    assert t.now == pytest.approx(102.0)


async def test_after_a_429_everyone_waits_out_the_retry_after():
    t = FakeTime()
    gate = RateGate(rpm=6000, guard=0.0, clock=t.clock, sleep=t.sleep)
    await gate.acquire(1)
    gate.penalize(2.5)
    assert gate.cooling
    await gate.acquire(1)
    assert t.now == pytest.approx(102.5)
    gate.penalize(None)  # no Retry-After: a default pause
    await gate.acquire(1)
    assert t.now == pytest.approx(103.5)
    assert gate.penalties == 2


def test_progress_is_a_bar_on_a_terminal_and_plain_lines_elsewhere():
    import io

    from aigc.batch.report import Progress
    from aigc.cli.batch import ProgressPrinter

    def step(i: int) -> Progress:
        return Progress(total=20, done=i, failed=0, pending=20 - i, todo=20, finished=i, cost_usd=0.001 * i,
                        tokens=100 * i, elapsed_s=i)

    tty, plain = io.StringIO(), io.StringIO()
    bar, lines = ProgressPrinter(tty, tty=True), ProgressPrinter(plain, tty=False)
    for i in range(21):
        bar(step(i))
        lines(step(i))
    bar.close()
    assert tty.getvalue().startswith("\r[") and "20/20" in tty.getvalue() and tty.getvalue().endswith("\n")
    out = plain.getvalue().splitlines()
    assert "\r" not in plain.getvalue() and len(out) == 11  # one line per tenth of the work
    assert out[-1].startswith("aigc batch: 20/20 settled (20 of 20 items done, 0 failed)")
