"""``aigc serve`` over the real SmolLM2-135M on CPU: continuous batching, streams, constrained JSON, context
errors, and cancelling one stream without disturbing the rest of the batch."""

from __future__ import annotations

import asyncio
import json

import httpx2
import openai
import pytest
from pydantic import BaseModel

from tests.conftest import MODEL_CACHE
from tests.serving import KeyStore, ServeOptions, ask, async_sdk, metric, sdk, serving

pytestmark = pytest.mark.local

MODEL = "SmolLM2-135M-Instruct"
PROMPTS = ["Hi", "Name a color.", "What is the capital of France?", "Write a short poem about the sea.",
           "Explain why the sky is blue.", "List three fruits.", "Tell me about dragons.", "What is 2+2?"]


@pytest.fixture(scope="module")
def local(tmp_path_factory):
    """One server (and one loaded model) for the module, with two keys: "open" and "tight" (100 tokens)."""
    data = tmp_path_factory.mktemp("serve-local")
    keys = KeyStore(data / "serve-keys.db")
    _, open_key = keys.add("open")
    _, tight_key = keys.add("tight", max_total_tokens=100)
    with serving(None, ServeOptions(max_tokens=256, default_max_tokens=48), keys=keys, backend="local",
                 data_dir=data, cache_dir=MODEL_CACHE) as server:
        yield server, open_key, tight_key


def test_plain_and_streamed_replies_are_the_same_text(local):
    server, key, _ = local
    client = sdk(server, key)
    plain = client.chat.completions.create(model=MODEL, messages=ask("What is the capital of France?"),
                                           temperature=0, max_tokens=24)
    chunks = list(client.chat.completions.create(model=MODEL, messages=ask("What is the capital of France?"),
                                                 temperature=0, max_tokens=24, stream=True,
                                                 stream_options={"include_usage": True}))
    assert "Paris" in plain.choices[0].message.content
    assert "".join(c.choices[0].delta.content or "" for c in chunks if c.choices) == \
        plain.choices[0].message.content
    assert chunks[-1].usage.completion_tokens == plain.usage.completion_tokens
    assert plain.usage.prompt_tokens > 10  # the chat template counts
    unbounded = client.chat.completions.create(model=MODEL, messages=ask("Tell me a long story."), temperature=0)
    assert unbounded.usage.completion_tokens <= 48  # the server's default when a request names none


class Capital(BaseModel):
    country: str
    capital: str


def test_json_schema_output_is_constrained_while_decoding(local):
    server, key, _ = local
    reply = sdk(server, key).chat.completions.parse(model=MODEL, messages=ask("What is the capital of France?"),
                                                    response_format=Capital, temperature=0, max_tokens=60)
    assert isinstance(reply.choices[0].message.parsed, Capital)
    anything = sdk(server, key).chat.completions.create(
        model=MODEL, messages=ask("Describe a cat as JSON."), response_format={"type": "json_object"},
        temperature=0, max_tokens=80)
    if anything.choices[0].finish_reason == "stop":
        assert isinstance(json.loads(anything.choices[0].message.content), dict)


def test_a_prompt_longer_than_the_window_is_a_400(local):
    server, key, _ = local
    with pytest.raises(openai.BadRequestError) as caught:
        sdk(server, key).chat.completions.create(model=MODEL, messages=ask("word " * 9000), max_tokens=10)
    assert caught.value.code == "context_length_exceeded" and caught.value.param == "messages"
    assert "maximum context length is 8192 tokens" in caught.value.message
    with pytest.raises(openai.NotFoundError):
        sdk(server, key).chat.completions.create(model="gpt-4o", messages=ask("hi"))


def test_a_key_over_its_budget_gets_429_and_no_key_401(local):
    server, _, tight = local
    with pytest.raises(openai.AuthenticationError):
        sdk(server, "sk-aigc-made-up").chat.completions.create(model=MODEL, messages=ask("hi"))
    with pytest.raises(openai.RateLimitError) as caught:
        sdk(server, tight, max_retries=0).chat.completions.create(model=MODEL, messages=ask("hi"), max_tokens=200)
    assert caught.value.code == "insufficient_quota"


@pytest.mark.slow
async def test_killing_one_of_eight_streams_leaves_the_others_byte_for_byte(local):
    server, key, _ = local
    async with async_sdk(server, key) as client:
        solo = []
        for prompt in PROMPTS:  # one at a time: each alone on the model
            r = await client.chat.completions.create(model=MODEL, messages=ask(prompt), temperature=0, max_tokens=24)
            solo.append(r.choices[0].message.content)

        async def stream(i: int) -> str:
            s = await client.chat.completions.create(model=MODEL, messages=ask(PROMPTS[i]), temperature=0,
                                                     max_tokens=24, stream=True)
            text, pieces = "", 0
            async for c in s:
                text += c.choices[0].delta.content or "" if c.choices else ""
                pieces += 1
                if i == 3 and pieces == 3:
                    await s.close()  # this client walks away mid-stream
                    return "closed"
            return text

        cancelled = metric(server, "aigc:requests_cancelled_total")
        together = await asyncio.gather(*(stream(i) for i in range(8)))
    assert together[3] == "closed"
    assert [t for i, t in enumerate(together) if i != 3] == [t for i, t in enumerate(solo) if i != 3]
    await asyncio.sleep(0.5)
    assert metric(server, "aigc:requests_cancelled_total") == cancelled + 1
    assert metric(server, "aigc:num_requests_running") == 0
    batched = metric(server, "aigc:batch_size_bucket", 'le="8.0"') - metric(server, "aigc:batch_size_bucket",
                                                                            'le="4.0"')
    assert batched > 0  # decode steps ran with more than four rows together


@pytest.mark.slow
async def test_sixteen_concurrent_streams_share_the_model(local):
    server, key, _ = local
    async with async_sdk(server, key) as client:
        async def one(i: int) -> tuple[str, int]:
            s = await client.chat.completions.create(model=MODEL, messages=ask(f"Say a word about the number {i}."),
                                                     temperature=0.7, seed=i, max_tokens=8, stream=True,
                                                     stream_options={"include_usage": True})
            text, used = "", 0
            async for c in s:
                text += c.choices[0].delta.content or "" if c.choices else ""
                used = c.usage.completion_tokens if c.usage else used
            return text, used

        results = await asyncio.gather(*(one(i) for i in range(16)))
    assert all(text and 0 < used <= 8 for text, used in results)
    wide = metric(server, "aigc:batch_size_count") - metric(server, "aigc:batch_size_bucket", 'le="8.0"')
    assert wide > 0  # more than eight at once


def test_a_client_going_away_stops_its_generation(local):
    server, key, _ = local
    before = metric(server, "aigc:generation_tokens_total")
    body = {"model": MODEL, "messages": ask("Write a very long story about a lighthouse keeper."),
            "max_tokens": 256, "temperature": 0, "stream": True}
    with httpx2.stream("POST", server.url + "/v1/chat/completions", json=body, timeout=60,
                       headers={"authorization": f"Bearer {key}"}) as response:
        for n, _ in enumerate(response.iter_lines()):
            if n >= 6:
                break
    import time

    time.sleep(1.0)
    made = metric(server, "aigc:generation_tokens_total") - before
    time.sleep(1.0)
    assert metric(server, "aigc:generation_tokens_total") - before == made < 100
    assert metric(server, "aigc:num_requests_running") == 0


def test_logprobs_are_the_models_own_for_each_token(local):
    server, key, _ = local
    client = sdk(server, key)
    reply = client.chat.completions.create(model=MODEL, messages=ask("Name a color."), temperature=0,
                                           max_tokens=12, logprobs=True, top_logprobs=3)
    tokens = reply.choices[0].logprobs.content
    assert "".join(t.token for t in tokens) == reply.choices[0].message.content
    assert len(tokens) <= reply.usage.completion_tokens
    for t in tokens:  # greedy decoding picked each token: it is the likeliest of its alternatives
        assert t.logprob <= 0 and len(t.top_logprobs) == 3
        assert t.top_logprobs[0].token == t.token and t.top_logprobs[0].logprob == pytest.approx(t.logprob)
        assert t.top_logprobs[0].logprob >= t.top_logprobs[1].logprob >= t.top_logprobs[2].logprob
    chunks = list(client.chat.completions.create(model=MODEL, messages=ask("Name a color."), temperature=0,
                                                 max_tokens=12, logprobs=True, stream=True))
    streamed = [t for c in chunks if c.choices and c.choices[0].logprobs for t in c.choices[0].logprobs.content]
    assert [t.token for t in streamed] == [t.token for t in tokens]
    assert [t.logprob for t in streamed] == pytest.approx([t.logprob for t in tokens], abs=1e-4)
