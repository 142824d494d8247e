"""The news fact check: numbers, dates, names and quotations in a draft that its facts do not hold are listed
in the warnings (or, strict, fail the item); numbers and dates are compared after normalising them."""

from __future__ import annotations

import json

import pytest

import aigc
from aigc.errors import FactCheckFailed
from aigc.factcheck import check
from tests.openai_server import FakeOpenAIServer
from tests.test_batch_job import run_cli, use_server, write_job

FACTS = """Harbour budget, city council meeting, 5 March 2024.
- The council approved a harbour budget of 1.5 million euros; the vote was 23 to 4.
- Mayor Anna Schmidt: "This budget secures 300 jobs for the next decade."
- Work starts in April 2024. Three ferry piers will be rebuilt."""

HONEST = """Council Approves Harbour Budget
The city council approved a harbour budget of 1,500,000 euros on March 5, 2024, by 23 votes to 4.
Mayor Anna Schmidt said: "This budget secures 300 jobs for the next decade." Work on 3 ferry piers starts in April."""

INVENTED = """Council Approves Harbour Budget
The city council approved a harbour budget of 2.3 million euros on March 5, 2024, by 23 votes to 4.
Mayor Anna Schmidt said: "This budget secures 300 jobs for the next decade." Deputy mayor Karl Weber called it
"the best day for our harbour in fifty years"."""


@pytest.mark.parametrize("draft, facts, supported", [
    ("1.5 million", "1,500,000", True),
    ("1,500,000", "1.5 million", True),
    ("1,5 Mio.", "1.500.000", True),
    ("150万", "1.5 million", True),
    ("1.5亿", "150 million", True),
    ("三百五十万", "3.5 million", True),
    ("2.3 million", "2,31 Mio.", True),  # a rounded figure matches what it rounds
    ("2.3 million", "1.5 million", False),
    ("2,000", "2,400", False),  # an exact figure must be exact
    ("3 piers", "three piers", True),
    ("40,000 visitors", "40.000 Besucher", True),
    ("12%", "12 percent", True),
])
def test_numbers_are_compared_by_value(draft, facts, supported):
    [claim] = check(draft, facts).claims
    assert claim.kind == "number" and claim.supported is supported


@pytest.mark.parametrize("draft, facts, supported", [
    ("on March 5, 2024", "5 March 2024", True),
    ("am 5. März 2024", "2024-03-05", True),
    ("2024年3月5日", "on 5 March 2024", True),
    ("on 05.03.2024", "March 5th, 2024", True),
    ("on March 6, 2024", "5 March 2024", False),
    ("in April 2024", "starts in April 2024", True),
    ("on March 5, 2025", "5 March 2024", False),
])
def test_dates_are_compared_by_their_parts(draft, facts, supported):
    [claim] = check(draft, facts).claims
    assert claim.kind == "date" and claim.supported is supported


def test_names_and_quotations_must_be_in_the_facts():
    report = check(INVENTED, FACTS)
    unsupported = {(c.kind, c.text) for c in report.unsupported}
    assert unsupported == {("number", "2.3 million"), ("name", "Karl Weber"),
                           ("quotation", "the best day for our harbour in fifty years")}
    assert ("name", "Mayor Anna Schmidt") in {(c.kind, c.text) for c in report.claims if c.supported}
    assert check(HONEST, FACTS).unsupported == []
    assert check('She said "secures 300 jobs for the next decades".', FACTS).unsupported[0].kind == "quotation"


@pytest.fixture
def server(monkeypatch):
    with FakeOpenAIServer() as s:
        use_server(monkeypatch, s)
        yield s


def test_a_fabricated_figure_is_caught_in_the_warnings(server):
    server.enqueue_replies(INVENTED, HONEST)
    with aigc.Client() as client:
        invented = client.news(FACTS)
        honest = client.news(FACTS)
    assert invented.text == INVENTED  # delivered, with what the facts do not hold listed
    assert "not in the facts: number “2.3 million”" in invented.warnings
    assert "not in the facts: name “Karl Weber”" in invented.warnings
    assert "fact check: 5 of 8 numbers, dates, names and quotations in the draft appear in the facts (62%)" \
        in invented.warnings
    assert not any(w.startswith("not in the facts") for w in honest.warnings)


def test_strict_fails_the_draft_and_keeps_it_in_the_error(server):
    server.enqueue_replies(INVENTED)
    with aigc.Client() as client, pytest.raises(FactCheckFailed) as info:
        client.news(FACTS, strict=True)
    assert info.value.text == INVENTED and "2.3 million" in info.value.unsupported
    assert "strict" in str(info.value)


def test_the_command_line_warns_or_fails_with_strict(server, tmp_path, capsys):
    facts = tmp_path / "facts.txt"
    facts.write_text(FACTS)
    server.enqueue_replies(INVENTED, INVENTED)
    code, out, err = run_cli(capsys, "news", facts)
    assert code == 0 and out.startswith("Council Approves")
    assert "aigc: note: not in the facts: number “2.3 million”" in err
    code, out, err = run_cli(capsys, "news", facts, "--strict")
    assert code == 1 and out == "" and "not in the facts: number “2.3 million”" in err


def test_a_batch_job_with_strict_fails_the_invented_draft_only(server, tmp_path, capsys):
    (tmp_path / "facts.jsonl").write_text(json.dumps({"id": "a", "facts": FACTS + "\nDesk: A"}) + "\n"
                                          + json.dumps({"id": "b", "facts": FACTS + "\nDesk: B"}) + "\n")
    server.reply = lambda body: INVENTED if "Desk: A" in body["messages"][-1]["content"] else HONEST
    job = write_job(tmp_path, """
        task = "news"
        [input]
        jsonl = "facts.jsonl"
        [output]
        jsonl = "drafts.jsonl"
        [vars]
        strict = true
    """)
    code, out, err = run_cli(capsys, "batch", "run", job, "--json")
    report = json.loads(out)
    assert code == 1 and report["done"] == 1 and report["failed"] == 1
    [failure] = report["failures"]
    assert failure["id"] == "a" and failure["error"] == "FactCheckFailed" and "2.3 million" in failure["reason"]
