"""Batch outputs always match their inputs: a reverted change, an emptied or damaged journal, outputs that
cannot be written, files the job never wrote, and other processes' temporary files.

Each test is a case an operator hit with earlier versions (stale text after a revert, a re-billed job after
its journal was emptied, "internal error" on a damaged journal, money spent before a read-only folder
failed the run, another process's write deleted by the start-up clean-up).
"""

from __future__ import annotations

import json
import re
import sqlite3

import pytest

from aigc.batch import job_status, load_job
from tests.openai_server import FakeOpenAIServer
from tests.test_batch_job import SUMMARIZE, make_articles, reply_for, run_cli, use_server, write_job

_LENGTH = re.compile(r"in ([^.]+?)\.")


def reply_with_length(body: dict) -> str | None:
    """The fake model's answer names the article and the length it was asked for, so each version of a
    job's settings has its own, checkable text."""
    text = reply_for(body)
    if text is None:
        return None
    asked = _LENGTH.search(body["messages"][-1]["content"].split("\n\n")[-1])
    return f"{text} [{asked.group(1) if asked else '?'}]"


@pytest.fixture
def server(monkeypatch):
    with FakeOpenAIServer(reply=reply_with_length) as s:
        use_server(monkeypatch, s)
        yield s


def outputs(tmp_path, folder: str = "out") -> dict[str, str]:
    return {p.name: p.read_text() for p in sorted((tmp_path / folder).iterdir())}


def last_report(tmp_path) -> dict:
    reports = sorted((tmp_path / ".aigc" / "job" / "reports").glob("*.json"))
    return json.loads(reports[-1].read_text())


def set_length(job, length: str) -> None:
    job.write_text(re.sub(r'length = "[^"]*"', f'length = "{length}"', job.read_text()))


JSONL_JOB = SUMMARIZE.replace('glob = "articles/*.md"', 'jsonl = "records.jsonl"').replace(
    'dir = "out"', 'jsonl = "out.jsonl"')


def write_records(tmp_path, texts: dict[str, str]) -> None:
    (tmp_path / "records.jsonl").write_text("".join(json.dumps({"id": k, "text": v}) + "\n" for k, v in texts.items()))


def jsonl_lines(tmp_path) -> list[dict]:
    return [json.loads(line) for line in (tmp_path / "out.jsonl").read_text().splitlines()]


# ---- a change, then its revert ---------------------------------------------------------------------------

def test_after_a_reverted_change_of_vars_every_output_is_the_current_versions(server, tmp_path, capsys):
    make_articles(tmp_path / "articles", 3)
    job = write_job(tmp_path, SUMMARIZE)
    assert run_cli(capsys, "batch", "run", job)[0] == 0
    first = outputs(tmp_path)
    assert all(text.endswith("[2 sentences]\n") for text in first.values())

    set_length(job, "1 sentence")
    assert run_cli(capsys, "batch", "run", job)[0] == 0
    assert all(text.endswith("[1 sentence]\n") for text in outputs(tmp_path).values())
    assert server.request_count == 6

    set_length(job, "2 sentences")  # back to the first version: done before, but not what is on disk now
    code, out, _ = run_cli(capsys, "batch", "run", job)
    assert code == 0, out
    assert outputs(tmp_path) == first
    assert server.request_count == 6  # redone from the response cache, at no cost
    assert "(3 from the cache)" in out and "written for other inputs or settings" in out
    assert run_cli(capsys, "batch", "run", job)[0] == 0 and server.request_count == 6


def test_after_a_reverted_input_file_its_output_is_the_current_versions(server, tmp_path, capsys):
    articles = make_articles(tmp_path / "articles", 2)
    job = write_job(tmp_path, SUMMARIZE)
    assert run_cli(capsys, "batch", "run", job)[0] == 0
    original = articles[0].read_text()
    first = outputs(tmp_path)
    articles[0].write_text(original.replace("MARK-000", "MARK-900"))
    assert run_cli(capsys, "batch", "run", job)[0] == 0
    assert "MARK-900" in outputs(tmp_path)["item-000.md"]
    articles[0].write_text(original)
    assert run_cli(capsys, "batch", "run", job)[0] == 0
    assert outputs(tmp_path) == first and server.request_count == 3


def test_an_output_edited_by_hand_is_written_again_for_its_key(server, tmp_path, capsys):
    make_articles(tmp_path / "articles", 2)
    job = write_job(tmp_path, SUMMARIZE)
    assert run_cli(capsys, "batch", "run", job)[0] == 0
    first = outputs(tmp_path)
    (tmp_path / "out" / "item-001.md").write_text("my own words\n")
    assert run_cli(capsys, "batch", "run", job)[0] == 0
    assert outputs(tmp_path) == first and server.request_count == 2


def test_jsonl_after_a_reverted_record_the_current_keys_line_is_the_last_of_its_id(server, tmp_path, capsys):
    write_records(tmp_path, {"a": "MARK-001 first", "b": "MARK-002 second"})
    job = write_job(tmp_path, JSONL_JOB)
    assert run_cli(capsys, "batch", "run", job)[0] == 0
    write_records(tmp_path, {"a": "MARK-101 changed", "b": "MARK-002 second"})
    assert run_cli(capsys, "batch", "run", job)[0] == 0
    write_records(tmp_path, {"a": "MARK-001 first", "b": "MARK-002 second"})
    code, out, _ = run_cli(capsys, "batch", "run", job)
    assert code == 0 and server.request_count == 3

    lines = jsonl_lines(tmp_path)
    keys = [line["key"] for line in lines]
    assert len(keys) == len(set(keys)) == 3  # each key's line once; the superseded one stays, as history
    last = {line["id"]: line for line in lines}  # a reader taking the last line of each id...
    assert "MARK-001" in last["a"]["text"] and "MARK-002" in last["b"]["text"]  # ...gets the current ones
    assert [line["id"] for line in lines] == ["b", "a", "a"] and "MARK-101" in lines[1]["text"]
    assert "moved after the superseded ones" in out


# ---- the journal ----------------------------------------------------------------------------------------

@pytest.mark.parametrize("how", ["emptied", "deleted"])
def test_a_lost_journal_adopts_the_outputs_instead_of_paying_again(server, tmp_path, capsys, how):
    make_articles(tmp_path / "articles", 4)
    job = write_job(tmp_path, SUMMARIZE)
    assert run_cli(capsys, "batch", "run", job)[0] == 0
    first = outputs(tmp_path)
    journal = tmp_path / ".aigc" / "job" / "journal.db"
    for extra in (journal.with_name("journal.db-wal"), journal.with_name("journal.db-shm")):
        extra.unlink(missing_ok=True)
    if how == "emptied":
        journal.write_bytes(b"")
    else:
        journal.unlink()
    code, out, _ = run_cli(capsys, "batch", "run", job, "--no-cache")
    assert code == 0, out
    assert server.request_count == 4 and outputs(tmp_path) == first
    assert last_report(tmp_path)["adopted"] == 4
    assert job_status(load_job(job)).done == 4


def test_a_lost_journal_beside_a_jsonl_output_adopts_its_lines(server, tmp_path, capsys):
    write_records(tmp_path, {"a": "MARK-001 first", "b": "MARK-002 second"})
    job = write_job(tmp_path, JSONL_JOB)
    assert run_cli(capsys, "batch", "run", job)[0] == 0
    before = (tmp_path / "out.jsonl").read_text()
    (tmp_path / ".aigc" / "job" / "journal.db").unlink()
    assert run_cli(capsys, "batch", "run", job, "--no-cache")[0] == 0
    assert server.request_count == 2 and (tmp_path / "out.jsonl").read_text() == before
    (tmp_path / "out.jsonl").unlink()  # and the journal now knows the texts again
    assert run_cli(capsys, "batch", "run", job, "--no-cache")[0] == 0
    assert server.request_count == 2 and (tmp_path / "out.jsonl").read_text().count("\n") == 2


def damage(path, page: int) -> None:
    """Overwrite one whole page of a SQLite file with garbage, as a bad disk or a stray write would."""
    size = sqlite3.connect(path).execute("PRAGMA page_size").fetchone()[0]
    data = bytearray(path.read_bytes())
    assert len(data) >= size * (page + 1), "the file is smaller than expected"
    data[size * page:size * (page + 1)] = bytes((i * 37 + 11) % 256 for i in range(size))
    path.write_bytes(bytes(data))


@pytest.mark.parametrize("command", ["run", "status"])
def test_a_damaged_journal_is_one_clear_line_and_exit_2(server, tmp_path, capsys, command):
    make_articles(tmp_path / "articles", 30)
    job = write_job(tmp_path, SUMMARIZE)
    assert run_cli(capsys, "batch", "run", job)[0] == 0
    journal = tmp_path / ".aigc" / "job" / "journal.db"
    damage(journal, page=3)
    code, out, err = run_cli(capsys, "batch", command, job)
    assert code == 2 and out == ""
    lines = err.strip().splitlines()
    assert len(lines) == 1 and str(journal) in lines[0] and "damaged" in lines[0] and "move it aside" in lines[0]
    assert "internal error" not in err and server.request_count == 30


# ---- where outputs go -----------------------------------------------------------------------------------

@pytest.mark.parametrize("target", ['dir = "blocked/out"', 'jsonl = "blocked/out.jsonl"'])
def test_an_output_that_cannot_be_written_is_found_before_anything_is_sent(server, tmp_path, capsys, target):
    (tmp_path / "blocked").write_text("a file where the output folder should be\n")
    if "jsonl" in target:
        write_records(tmp_path, {"a": "MARK-001 first"})
        body = JSONL_JOB.replace('jsonl = "out.jsonl"', target)
    else:
        make_articles(tmp_path / "articles", 3)
        body = SUMMARIZE.replace('dir = "out"', target)
    job = write_job(tmp_path, body)
    code, out, err = run_cli(capsys, "batch", "run", job)
    assert code == 2 and out == ""
    lines = err.strip().splitlines()
    assert len(lines) == 1 and "cannot write" in lines[0] and "nothing was sent" in lines[0], err
    assert server.request_count == 0
    assert job_status(load_job(job)).in_flight == 0


def test_a_read_only_output_folder_is_found_before_anything_is_sent(server, tmp_path, capsys):
    import os

    if os.geteuid() == 0:
        pytest.skip("root writes into read-only folders")
    make_articles(tmp_path / "articles", 2)
    (tmp_path / "out").mkdir()
    (tmp_path / "out").chmod(0o555)
    try:
        code, _, err = run_cli(capsys, "batch", "run", write_job(tmp_path, SUMMARIZE))
    finally:
        (tmp_path / "out").chmod(0o755)
    assert code == 2 and "cannot write" in err and server.request_count == 0


def test_a_write_failing_mid_run_fails_the_item_keeps_the_answer_and_writes_the_report(tmp_path, capsys,
                                                                                     monkeypatch):
    make_articles(tmp_path / "articles", 4)
    blocked = tmp_path / "out" / "item-002.md"

    def reply(body: dict) -> str | None:
        text = reply_with_length(body)
        if text and "MARK-002" in text:
            blocked.mkdir(parents=True)  # a folder appears where the output goes, before the answer does
        return text

    with FakeOpenAIServer(reply=reply) as server:
        use_server(monkeypatch, server)
        job = write_job(tmp_path, SUMMARIZE)
        code, out, err = run_cli(capsys, "batch", "run", job)
        assert code == 1, out + err
        report = last_report(tmp_path)
        assert report["done"] == 3 and report["failed"] == 1 and report["pending"] == 0
        failure = report["failures"][0]
        assert failure["id"] == "articles/item-002.md" and failure["error"] == "OutputError"
        assert "cannot write" in failure["reason"] and "response cache" in failure["reason"]
        assert not failure["permanent"]
        assert job_status(load_job(job)).in_flight == 0

        blocked.rmdir()
        assert run_cli(capsys, "batch", "run", job)[0] == 0
        assert server.request_count == 4  # the answer came from the cache
        assert "MARK-002" in (tmp_path / "out" / "item-002.md").read_text()


def test_a_file_this_job_never_wrote_is_not_overwritten(server, tmp_path, capsys):
    make_articles(tmp_path / "articles", 3)
    (tmp_path / "out").mkdir()
    mine = tmp_path / "out" / "item-001.md"
    mine.write_text("notes I keep here\n")
    job = write_job(tmp_path, SUMMARIZE)
    code, out, err = run_cli(capsys, "batch", "run", job)
    assert code == 2 and str(mine) in err and "no record of writing" in err
    assert mine.read_text() == "notes I keep here\n" and server.request_count == 0
    code, out, _ = run_cli(capsys, "batch", "run", job, "--dry-run")
    assert code == 0 and "no record of writing it" in out
    mine.unlink()
    assert run_cli(capsys, "batch", "run", job)[0] == 0 and len(outputs(tmp_path)) == 3


def test_start_up_clean_up_removes_only_this_jobs_temporary_files(server, tmp_path, capsys):
    make_articles(tmp_path / "articles", 2)
    job = write_job(tmp_path, SUMMARIZE)
    assert run_cli(capsys, "batch", "run", job)[0] == 0
    ours = tmp_path / "out" / f".aigc-{load_job(job).id}-item-000.md.1a2b3c4d.tmp"
    theirs = [tmp_path / "out" / ".aigc-w-summary.md.9f8e7d6c.tmp",  # `aigc summarize -o` writing here now
              tmp_path / "out" / ".aigc-job0123456789ab-x.md.00000000.tmp"]  # another job's
    for path in [ours, *theirs]:
        path.write_text("half a text")
    assert run_cli(capsys, "batch", "run", job)[0] == 0
    assert not ours.exists() and all(p.exists() for p in theirs)


def test_outputs_are_created_as_a_plain_open_would_create_them(server, tmp_path, capsys):
    import os
    import stat

    make_articles(tmp_path / "articles", 1)
    job = write_job(tmp_path, SUMMARIZE)
    old = os.umask(0o027)
    try:
        assert run_cli(capsys, "batch", "run", job)[0] == 0
        plain = tmp_path / "plain.txt"
        plain.write_text("x")
    finally:
        os.umask(old)
    mode = stat.S_IMODE((tmp_path / "out" / "item-000.md").stat().st_mode)
    assert mode == stat.S_IMODE(plain.stat().st_mode) == 0o640
    report = next((tmp_path / ".aigc" / "job" / "reports").iterdir())
    assert stat.S_IMODE(report.stat().st_mode) == 0o640
