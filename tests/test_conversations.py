"""Conversations: turns kept in the store and resumed, the history trimmed to the window (dropped or
summarised, the system prompt kept), personas grounded on knowledge files, and ``aigc chat`` in a pipe and in
a real pseudo-terminal."""

from __future__ import annotations

import io
import json
import os
import sqlite3
import sys

import pytest

import aigc
from aigc.errors import InputError
from tests.openai_server import FakeOpenAIServer
from tests.test_batch_job import KEY, run_cli, use_server

FAQ = """# Returns

You can return any item within 30 days of delivery for a full refund. Sale items can be returned within 14 days.

# Shipping

Standard shipping takes 3 to 5 working days and costs 4.95 euros. Orders over 50 euros ship free.
"""
SMALL = 700  # the context window of "small-model"


@pytest.fixture
def server(monkeypatch, tmp_path):
    models = tmp_path / "models.toml"
    models.write_text(f'[models.small-model]\ncontext_window = {SMALL}\nmax_output_tokens = 200\n'
                      'encoding = "o200k_base"\n')
    monkeypatch.setenv("AIGC_MODELS_FILE", str(models))
    with FakeOpenAIServer(context_windows={"small-model": SMALL}) as s:
        use_server(monkeypatch, s)
        yield s


@pytest.fixture
def faq(tmp_path):
    path = tmp_path / "kb" / "faq.md"
    path.parent.mkdir()
    path.write_text(FAQ)
    return path


def sent(server, i=-1) -> list[dict]:
    return [r for r in server.requests if r.path == "/v1/chat/completions"][i].body["messages"]


def test_a_conversation_is_resumed_from_the_store(server, tmp_path):
    with aigc.Client() as client:
        conv = client.conversation(system="You are terse.")
        conv.say("My name is Ada.")
        conv.say("I live in Graz.")
        first_id = conv.id
    assert [m["role"] for m in sent(server)] == ["system", "user", "assistant", "user"]

    with aigc.Client() as client:  # another process, later
        conv = client.conversation(id="last")
        result = conv.say("What do you know about me?")
    assert conv.id == first_id and result.text
    messages = sent(server)
    assert messages[0] == {"role": "system", "content": "You are terse."}
    assert [m["content"] for m in messages if m["role"] == "user"] == [
        "My name is Ada.", "I live in Graz.", "What do you know about me?"]

    # llm-style queries work on the store, with aigc's columns beside them.
    db = sqlite3.connect(tmp_path / "data" / "conversations.db")
    rows = db.execute("SELECT prompt, response, system, input_tokens, output_tokens, cost_usd, backend, persona, "
                      "json_array_length(prompt_json) FROM responses WHERE conversation_id = ? "
                      "ORDER BY datetime_utc", (first_id,)).fetchall()
    assert [r[0] for r in rows] == ["My name is Ada.", "I live in Graz.", "What do you know about me?"]
    assert rows[2][3] == server.billed["prompt_tokens"] - rows[0][3] - rows[1][3]  # the server's own count
    assert all(r[5] > 0 and r[6] == "openai" and r[7] == "assistant" for r in rows) and rows[2][8] == 6
    assert db.execute("SELECT name, model FROM conversations").fetchall() == [("My name is Ada.", "gpt-4o-mini")]


def test_the_history_is_trimmed_to_a_small_window_oldest_turns_first(server, tmp_path):
    with aigc.Client(model="small-model", max_output_tokens=100) as client:
        conv = client.conversation(system="Keep this system prompt.")
        results = [conv.say(f"Turn {i}: " + "tell me about the harbour " * 12) for i in range(8)]
    assert server.oversize_rejections == 0  # nothing was ever too long for the server
    last = sent(server)
    assert last[0] == {"role": "system", "content": "Keep this system prompt."}
    assert last[-1]["content"].startswith("Turn 7:")
    kept = [m["content"][:6] for m in last if m["role"] == "user"]
    assert "Turn 0" not in kept and kept == sorted(kept)  # the oldest went first, the order stays
    note = next(w for w in results[-1].warnings if w.startswith("trimmed"))
    assert note.startswith("trimmed: dropped the ") and "700-token window of small-model" in note
    trimmed = [t.trimmed_turns for t in conv.turns()]
    assert trimmed[0] == 0 and trimmed[-1] == 7 - (len(kept) - 1)


def test_trim_summarize_summarises_the_dropped_turns_once(server):
    with aigc.Client(model="small-model", max_output_tokens=60) as client:
        conv = client.conversation(trim="summarize")
        for i in range(6):
            result = conv.say(f"Turn {i}: my order number is {1000 + i} and " + "it is late " * 14)
    summaries = [r for r in server.requests if "Summarize" in json.dumps(r.body)]
    assert summaries, "the dropped turns were summarised"
    assert "Turn 0" in json.dumps(summaries[0].body)
    assert "Earlier in this conversation:" in sent(server)[0]["content"]
    assert any(w.startswith("trimmed: summarized the") for w in result.warnings)
    assert conv.record.summary and conv.record.summarized_turns >= 1
    with aigc.Client(model="small-model", max_output_tokens=60) as client:
        again = client.conversation(id=conv.id)
        assert again.trim == "summarize" and again.record.summary == conv.record.summary


def test_the_support_persona_answers_from_its_knowledge_and_refuses_the_rest(faq):
    fake = aigc.FakeBackend()
    with aigc.Client(backend=fake) as client:
        conv = client.conversation("support", knowledge=[faq.parent])
        grounded = conv.say("How long do I have to return an item?")
        assert len(fake.history) == 1
        system = fake.history[0].messages[0].content
        assert "Answer only from the numbered passages" in system and "[1] (faq.md#1)" in system
        assert "30 days" in system and grounded.warnings[-1] == "knowledge passages given: [1] faq.md#1"
        refused = conv.say("What is the capital of France?")
        follow_up = conv.say("Why?")  # no words of its own: about the question before
    assert len(fake.history) == 1  # neither was sent to the model
    assert refused.text.startswith("I'm sorry, I don't have information about that.") and refused.requests == 0
    assert follow_up.text == refused.text
    assert [t.passages != [] for t in conv.turns()] == [True, False, False]
    with aigc.Client(backend=fake) as client, pytest.raises(InputError, match="answers only from knowledge"):
        client.conversation("support")


def test_knowledge_finds_a_passage_whose_word_the_question_inflects_the_same_way():
    from aigc.knowledge import Knowledge, Passage

    library = Knowledge([Passage("faq.md#1", "Our team meetings happen every Monday."),
                         Passage("faq.md#2", "The office closes at six.")], [])
    assert [p.source for p in library.select("When are the meetings?", 500, len)] == ["faq.md#1"]


@pytest.mark.local
def test_the_support_persona_on_the_local_model(faq):
    with aigc.Client(backend="local", temperature=0, max_output_tokens=24, ledger=False) as client:
        conv = client.conversation("support", knowledge=[faq])
        grounded = conv.say("How many days do I have to return an item?")
        refused = conv.say("Who won the football world cup?")
    assert "30" in grounded.text and grounded.backend == "local" and grounded.usage.completion_tokens > 0
    assert refused.text.startswith("I'm sorry") and refused.usage.total_tokens == 0


def test_stream_and_async_turns_are_recorded_like_plain_ones(server):
    with aigc.Client() as client:
        conv = client.conversation()
        stream = conv.say("Hello there", stream=True)
        assert "".join(stream) == stream.result.text
        assert [t.response for t in conv.turns()] == [stream.result.text]


async def test_the_async_conversation(server):
    async with aigc.AsyncClient() as client:
        conv = client.conversation(system="Be brief.")
        await conv.say("First question?")
        stream = await conv.say("Second question?", stream=True)
        text = "".join([piece async for piece in stream])
    assert [t.response for t in conv.turns()][-1] == text
    assert [m["content"] for m in sent(server) if m["role"] == "user"] == ["First question?", "Second question?"]


def test_chat_in_a_pipe_continue_list_show_and_delete(server, faq, monkeypatch, capsys):
    monkeypatch.setattr(sys, "stdin", io.StringIO("How long do I have to return an item?\n"))
    code, out, err = run_cli(capsys, "chat", "--persona", "support", "--knowledge", faq)
    assert code == 0, err
    assert out.startswith("Reply:") and "knowledge passages given: [1] faq.md#1" in err
    monkeypatch.setattr(sys, "stdin", io.StringIO("And for sale items?"))
    code, out, err = run_cli(capsys, "chat", "-c", "--json")
    answer = json.loads(out)
    assert code == 0 and answer["task"] == "chat" and answer["conversation_id"]
    assert "Sale items can be returned within 14 days." in sent(server)[0]["content"]  # -c kept the knowledge

    code, out, _ = run_cli(capsys, "chat", "list", "--json")
    [listed] = json.loads(out)
    assert listed["id"] == answer["conversation_id"] and listed["turns"] == 2 and listed["persona"] == "support"
    code, out, _ = run_cli(capsys, "chat", "show", listed["id"][:8])
    assert code == 0 and "> And for sale items?" in out
    code, out, _ = run_cli(capsys, "chat", "delete", listed["id"], "--yes")
    assert code == 0 and json.loads(run_cli(capsys, "chat", "list", "--json")[1]) == []
    code, _, err = run_cli(capsys, "chat", "show", "nope")
    assert code == 2 and "no conversation 'nope'" in err


def test_chat_in_a_terminal(server, faq, tmp_path):
    pexpect = pytest.importorskip("pexpect")
    env = {**os.environ, "PYTHONPATH": os.getcwd(), "TERM": "xterm", "OPENAI_API_KEY": KEY}
    child = pexpect.spawn(sys.executable, ["-m", "aigc", "chat", "--persona", "support", "--knowledge", str(faq)],
                          env=env, encoding="utf-8", timeout=90, dimensions=(40, 200))
    try:
        child.expect(r"Chatting with openai/gpt-4o-mini as support \(conversation (\w+)\)")
        child.expect("> ")
        child.send("How long do I retrn an item?")  # a typo, mended with readline's editing keys:
        child.send("\x1b[D" * 11)  # eleven steps left: to just after "retrn"'s "ret"
        child.send("u")
        child.sendline("")
        child.expect(r"Reply: How long do I return an item\?")
        child.expect("> ")
        child.sendline("/system Answer in one sentence.")
        child.expect("System prompt set.")
        child.sendline("What does shipping cost?")
        child.expect(r"Reply: What does shipping cost\?")
        child.sendline("/reset")
        child.expect(r"New conversation (\w+)")
        child.sendline("/exit")
        child.expect(pexpect.EOF)
    finally:
        child.close()
    assert child.exitstatus == 0
    chats = [r.body["messages"] for r in server.requests]
    assert chats[0][-1]["content"] == "How long do I return an item?"
    assert chats[1][0]["content"].startswith("Answer in one sentence.")
    with aigc.Client() as client:
        conv = client.conversation(id="last")
        assert [t.prompt for t in conv.turns()] == ["How long do I return an item?", "What does shipping cost?"]
