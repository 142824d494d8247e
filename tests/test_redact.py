"""Redaction: e-mail addresses, phone numbers, card numbers and IBANs never reach the server; the reply gets
them back where it echoes their placeholders; the ledger keeps counts only."""

from __future__ import annotations

import json
import re

import pytest

import aigc
from aigc.errors import ConfigError
from aigc.ledger import Ledger
from aigc.pii import Redactor
from tests.openai_server import FakeOpenAIServer
from tests.test_batch_job import run_cli, use_server, write_job

TICKET = ("Hello, I am Jana Novak (jana.novak@example.org, +49 30 1234567, or at home 030 7654321). "
          "Please refund card 4111 1111 1111 1111 to my account DE89 3704 0044 0532 0130 00. "
          "Write to jana.novak@example.org again if needed.")
SECRETS = ["jana.novak@example.org", "1234567", "7654321", "4111 1111 1111 1111", "4111111111111111",
           "DE89 3704 0044 0532 0130 00", "DE89370400440532013000"]


@pytest.mark.parametrize("text, region, found", [
    ("mail me: a.b+c@mail.example.co.uk.", None, ["<EMAIL_1>"]),
    ("call +1 415 555 2671 today", None, ["<PHONE_1>"]),
    ("call (415) 555-2671 today", None, []),  # a national number needs its region
    ("call (415) 555-2671 today", "US", ["<PHONE_1>"]),
    ("Ruf 030 1234567 an", "DE", ["<PHONE_1>"]),
    ("card 4111-1111-1111-1111 ok", None, ["<CARD_1>"]),
    ("card 4111 1111 1111 1112 ok", None, []),  # fails the Luhn check
    ("IBAN GB82 WEST 1234 5698 7654 32 BIC", None, ["<IBAN_1>"]),
    ("IBAN GB82 WEST 1234 5698 7654 33", None, []),  # wrong checksum
    ("order 12345, room 101, 3 items, 2024-05-01", "DE", []),
])
def test_what_is_and_is_not_detected(text, region, found):
    assert re.findall(r"<[A-Z]+_\d+>", Redactor(region).redact(text)) == found


def test_the_same_value_keeps_its_placeholder_and_comes_back_as_written():
    r = Redactor("DE")
    sent = r.redact(TICKET)
    assert not any(secret in sent for secret in SECRETS)
    assert sent.count("<EMAIL_1>") == 2 and "<PHONE_1>" in sent and "<PHONE_2>" in sent
    assert r.redact("Also +49 (30) 123-4567.") == "Also <PHONE_1>."  # the same number, written otherwise
    assert r.restore("Refund to <IBAN_1> via [CARD_1]; mail PHONE_9.") == \
        "Refund to DE89 3704 0044 0532 0130 00 via 4111 1111 1111 1111; mail PHONE_9."
    assert r.counts == {"email": 1, "phone": 2, "card": 1, "iban": 1}


def test_a_placeholder_cut_across_streamed_pieces_is_restored_whole():
    r = Redactor()
    r.redact("write to ann@example.com")
    restorer = r.stream_filter()
    pieces = ["Write to <EM", "AIL", "_1", "> or ", "ESCAPE", " now <"]
    assert "".join(restorer.feed(p) for p in pieces) + restorer.flush() == \
        "Write to ann@example.com or ESCAPE now <"


def test_a_region_must_be_one_phone_numbers_know():
    with pytest.raises(ConfigError, match="region"):
        Redactor("XX")


@pytest.fixture
def server(monkeypatch):
    with FakeOpenAIServer(reply=lambda body: "Noted: " + body["messages"][-1]["content"][-160:]) as s:
        use_server(monkeypatch, s)
        yield s


def sent_to(server) -> str:
    return json.dumps([r.body for r in server.requests])


def test_nothing_sensitive_reaches_the_server_and_the_reply_gets_it_back(server, tmp_path):
    with aigc.Client(redact=True, redact_region="DE", ledger=True) as client:
        result = client.answer("Which refund details did I give?", context=TICKET)
    body = sent_to(server)
    assert not any(secret in body for secret in SECRETS), body
    assert "<EMAIL_1>" in body and "<IBAN_1>" in body
    assert "DE89 3704 0044 0532 0130 00" in result.text  # the server echoed <IBAN_1>; the caller sees the IBAN
    assert result.redactions == {"email": 1, "phone": 2, "card": 1, "iban": 1}
    with Ledger.in_dir(tmp_path / "data") as ledger:
        ledger.flush()
        rows = ledger.db.execute("SELECT redactions, prompt FROM requests")
    assert json.loads(rows[0]["redactions"]) == {"card": 1, "email": 1, "iban": 1, "phone": 2}
    assert rows[0]["prompt"] is None  # counts only, never the values


def test_streams_and_long_documents_are_redacted_too(server, tmp_path, monkeypatch):
    models = tmp_path / "models.toml"
    models.write_text('[models.small-model]\ncontext_window = 2000\nmax_output_tokens = 500\nencoding = "o200k_base"\n')
    monkeypatch.setenv("AIGC_MODELS_FILE", str(models))
    with aigc.Client(redact=True, redact_region="DE") as client:
        stream = client.summarize(TICKET, stream=True)
        text = "".join(stream)
        long = client.summarize("\n\n".join([TICKET] * 60), model="small-model")  # split, summarized in rounds
    assert "4111 1111 1111 1111" in text and text == stream.result.text
    assert long.requests > 2 and any("split into" in w for w in long.warnings)
    assert not any(secret in sent_to(server) for secret in SECRETS)


def test_a_call_may_ask_for_redaction_and_the_command_line_has_it(server, tmp_path, capsys):
    with aigc.Client() as client:
        client.summarize("Mail ann@example.com.", redact=True)
        client.summarize("Mail bob@example.com.")
    assert "ann@example.com" not in sent_to(server) and "bob@example.com" in sent_to(server)
    ticket = tmp_path / "ticket.txt"
    ticket.write_text(TICKET)
    code, out, err = run_cli(capsys, "summarize", ticket, "--redact", "--region", "DE", "--json")
    assert code == 0, err
    assert json.loads(out)["redactions"] == {"email": 1, "phone": 2, "card": 1, "iban": 1}
    assert "jana.novak@example.org" not in json.dumps(server.requests[-1].body)


def test_a_batch_job_redacts_every_item(server, tmp_path, capsys):
    (tmp_path / "in.jsonl").write_text(json.dumps({"id": "t1", "text": TICKET}) + "\n")
    job = write_job(tmp_path, """
        task = "summarize"
        [input]
        jsonl = "in.jsonl"
        [output]
        jsonl = "out.jsonl"
        [safety]
        redact = true
        region = "DE"
    """)
    code, out, err = run_cli(capsys, "batch", "run", job)
    assert code == 0, out + err
    assert not any(secret in sent_to(server) for secret in SECRETS)
    line = json.loads((tmp_path / "out.jsonl").read_text())
    assert "jana.novak@example.org" in line["text"] or "<" not in line["text"]
