"""Documents longer than the context window: split, processed and recombined, never one oversize request."""

from __future__ import annotations

import re

import pytest

import aigc
from aigc.budget import Budget
from tests.openai_server import FakeOpenAIServer

KEY = "sk-test-longdoc"
WINDOW = 4096
WORDS = ["river", "bridge", "council", "harbour", "festival", "library", "museum", "tram", "market", "school", "budget", "winter", "summer", "station", "garden", "tower", "square", "bakery", "ferry", "island"]


def page(n: int) -> str:
    """A deterministic page of prose: ~450 words in paragraphs, numbered so order can be checked."""
    paragraphs = []
    for p in range(5):
        sentences = []
        for s in range(7):
            words = [WORDS[(n * 7 + p * 5 + s * 3 + i) % len(WORDS)] for i in range(13)]
            sentences.append(" ".join(words).capitalize() + ".")
        paragraphs.append(f"Page {n} paragraph {p}. " + " ".join(sentences))
    return "\n\n".join(paragraphs)


BOOK = "\n\n".join(f"## Chapter {n}\n\n{page(n)}" for n in range(300))  # ~300 pages, ~170k tokens


@pytest.fixture
def models_file(tmp_path):
    path = tmp_path / "models.toml"
    path.write_text(f'[models.small-model]\ncontext_window = {WINDOW}\nmax_output_tokens = 1024\n'
                    'encoding = "o200k_base"\ninput_price = 0.15\noutput_price = 0.60\n'
                    'prices_as_of = "2025-08-07"\n')
    return path


@pytest.fixture
def server():
    with FakeOpenAIServer(context_windows={"small-model": WINDOW}) as s:
        yield s


@pytest.fixture
def client(server, models_file, monkeypatch):
    monkeypatch.setenv("AIGC_MODELS_FILE", str(models_file))
    with aigc.Client(base_url=server.url, api_key=KEY, model="small-model") as c:
        yield c


def assert_no_oversize_request(server):
    assert server.oversize_rejections == 0
    for r in server.requests:
        assert r.status == 200, r


def test_a_300_page_document_is_summarized_by_map_reduce(client, server):
    assert client.count_tokens(BOOK) > 30 * WINDOW
    result = client.summarize(BOOK)
    assert_no_oversize_request(server)
    assert result.requests == server.request_count > 30
    assert result.usage.prompt_tokens == server.billed["prompt_tokens"]
    assert any("split" in w for w in result.warnings)
    final = server.requests[-1].body["messages"][-1]["content"]
    assert "Merge them into one summary" in final  # the last request merges the part summaries


def test_a_300_page_document_is_translated_in_order_with_its_structure(client, server):
    def shout(body):  # a "translation" that keeps the text checkable: upper case
        text = body["messages"][-1]["content"].rsplit("\n\nTranslate the text above", 1)[0]
        return text.upper()

    server.reply = shout
    doc = BOOK + "\n\n```python\nprint('code stays as it is')\n```\n\n- a list item\n- another one\n"
    result = client.translate(doc, to="English")
    assert_no_oversize_request(server)
    assert server.request_count > 100
    assert "print('code stays as it is')" in result.text  # code blocks are never sent
    assert not any("code stays" in r.body["messages"][-1]["content"] for r in server.requests)
    assert result.text == doc.upper().replace("PRINT('CODE STAYS AS IT IS')", "print('code stays as it is')") \
        .replace("```PYTHON", "```python")
    chapters = [int(n) for n in re.findall(r"## CHAPTER (\d+)", result.text)]
    assert chapters == list(range(300))


def test_streamed_translation_equals_the_result(client, server):
    server.reply = lambda body: body["messages"][-1]["content"].rsplit("\n\nTranslate the text above", 1)[0].upper()
    doc = BOOK[:20000] + "\n\n```\nverbatim block\n```\n"
    stream = client.translate(doc, to="English", stream=True)
    streamed = "".join(stream)
    assert streamed == stream.result.text == doc.upper().replace("VERBATIM BLOCK", "verbatim block")
    assert_no_oversize_request(server)


def test_questions_over_long_contexts_use_the_most_relevant_passages(client, server):
    needle = "The lighthouse keeper's cat is named Marmalade and sleeps on the lantern gallery."
    haystack = BOOK[:80000] + "\n\n" + needle + "\n\n" + BOOK[80000:160000]
    result = client.answer("What is the name of the lighthouse keeper's cat?", context=haystack)
    assert_no_oversize_request(server)
    assert server.request_count == 1
    assert "Marmalade" in server.requests[-1].body["messages"][-1]["content"]
    assert any("most relevant" in w for w in result.warnings)


def test_news_from_long_notes_condenses_first(client, server):
    result = client.write_news(BOOK[:50000])
    assert_no_oversize_request(server)
    assert server.request_count > 2
    assert "news article" in server.requests[-1].body["messages"][-1]["content"]
    assert result.text


def test_dry_run_estimates_without_sending(client, server):
    estimate = client.plan("summarize", BOOK)
    assert estimate.split and estimate.requests > 30 and estimate.max_cost_usd > 0
    translate = client.plan("translate", BOOK, to="German")
    assert translate.requests > 100
    assert server.request_count == 0


def test_a_budget_stops_before_spending_not_after(client, server):
    budget = Budget(max_tokens=20_000)
    with pytest.raises(aigc.BudgetExceeded):
        client.summarize(BOOK, budget=budget)
    assert budget.spent_tokens <= 20_000
    billed = server.billed["prompt_tokens"] + server.billed["completion_tokens"]
    assert billed == budget.spent_tokens <= 20_000


def test_one_request_too_big_for_the_window_is_never_sent(client, server):
    with pytest.raises(aigc.ContextLengthExceeded):
        client.generate("qa", question=BOOK[:40000])  # no splitting for a free-form template
    assert server.request_count == 0
