"""Every task on the local backend, with no change to task or template code (real SmolLM2-135M on CPU)."""

from __future__ import annotations

import asyncio
import subprocess
import sys

import pytest
from pydantic import BaseModel

import aigc

pytestmark = pytest.mark.local

ARTICLE = ("The town of Millbrook opened a community solar garden on Saturday. It has 4,800 panels and will "
           "supply about 420 homes. A cooperative of 610 residents paid for it together with a bank loan.")


@pytest.fixture(scope="module")
def client():
    with aigc.Client(backend="local", temperature=0, max_tokens=32) as c:
        yield c


def test_every_task_runs_locally(client):
    results = [
        client.summarize(ARTICLE, length="1 sentence"),
        client.translate("Good morning, how are you?", to="French"),
        client.answer("How many panels does it have?", context=ARTICLE),
        client.write_news(ARTICLE, length="two short paragraphs"),
        client.generate("summarize", text=ARTICLE),
    ]
    for r in results:
        assert r.backend == "local" and r.model == "SmolLM2-135M-Instruct"
        assert r.text.strip() and r.usage.prompt_tokens > 0 and 0 < r.usage.completion_tokens <= 32
        assert r.cost_usd == 0 and r.finish_reason in ("stop", "length")


def test_usage_is_counted_with_the_models_own_tokenizer(client):
    result = client.summarize(ARTICLE)
    request = client.build_request("summarize", {"text": ARTICLE}, {})
    assert result.usage.prompt_tokens == client.backend.count_tokens(request.messages, request.model)


def test_streaming_gives_the_same_text_as_a_plain_call(client):
    plain = client.answer("Name a primary colour.")
    stream = client.answer("Name a primary colour.", stream=True)
    assert "".join(stream) == stream.result.text == plain.text


def test_map_batches_and_matches_one_by_one(client):
    texts = ["The bakery on Main Street won a national prize.", "Heavy rain closed two roads on Monday.",
             "The school choir will sing at the cathedral.", "A new ferry links the two islands."]
    batched = client.map("summarize", texts)
    single = [client.summarize(t) for t in texts]
    assert [r.text for r in batched] == [r.text for r in single]


def test_structured_output_is_asked_for_in_the_prompt(client):
    class Answer(BaseModel):
        answer: str

    try:
        result = client.answer("What colour is the sky?", schema=Answer, max_tokens=40)
    except aigc.OutputInvalid as e:  # a 135M model may never produce valid JSON; the re-asks must be bounded
        assert e.text is not None
        return
    assert isinstance(result.parsed, Answer) and result.response_format == "prompt"


def test_long_documents_are_split_for_the_local_context_window(client):
    long_text = " ".join([ARTICLE] * 500)  # ~25k tokens, far beyond the model's window
    assert client.count_tokens(long_text) > client.context_window()
    estimate = client.plan("summarize", long_text)
    assert estimate.split and estimate.requests > 3 and estimate.max_cost_usd == 0


def test_the_cli_runs_on_the_local_backend(tmp_path):
    article = tmp_path / "article.txt"
    article.write_text(ARTICLE)
    proc = subprocess.run([sys.executable, "-m", "aigc", "summarize", str(article), "--backend", "local",
                           "--max-tokens", "30", "--temperature", "0", "--json"],
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    assert '"backend": "local"' in proc.stdout


async def test_concurrent_async_calls_are_generated_in_batches():
    texts = ["The harbour reopened.", "A storm is expected tonight.", "Tickets go on sale Friday.",
             "The mayor visited the new school."]
    client = aigc.AsyncClient(backend="local", temperature=0, max_tokens=24)
    try:
        together = await asyncio.gather(*(client.summarize(t) for t in texts))
        one_by_one = [await client.summarize(t) for t in texts]
        sizes = client.backend.batcher.batch_sizes
    finally:
        await client.aclose()
    assert max(sizes) > 1  # the gathered calls shared a batch
    assert [r.text for r in together] == [r.text for r in one_by_one]
