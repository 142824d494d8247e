"""``aigc serve --backend openai``: a gateway in front of an OpenAI-compatible server (our fake one, with faults
and its own billing). One retry layer, per-key budgets and a ledger that matches the upstream's bill."""

from __future__ import annotations

import asyncio

import openai
import pytest

from aigc.config import load_settings
from aigc.ledger import Ledger
from tests.openai_server import FakeOpenAIServer, Fault
from tests.serving import KeyStore, ServeOptions, ask, async_sdk, sdk, serving


@pytest.fixture
def upstream():
    with FakeOpenAIServer(api_key="sk-upstream-secret") as server:
        yield server


def gateway(upstream: FakeOpenAIServer, **kw):
    return serving(None, backend="openai", base_url=upstream.url, api_key="sk-upstream-secret", max_attempts=3,
                   **kw)


def test_an_upstream_failure_is_retried_once_by_the_gateway_only(upstream):
    upstream.enqueue_faults(Fault.server_error(503, retry_after=0))
    with gateway(upstream) as server:
        raw = sdk(server).chat.completions.with_raw_response.create(model="gpt-4o-mini", messages=ask("hello"))
        assert raw.parse().choices[0].message.content == "Reply: hello"
        assert raw.headers["x-aigc-backend"] == "openai"
        assert upstream.request_count == 2  # the failure and the one retry
        upstream.reset()
        upstream.fail_next(10, Fault.server_error(500, retry_after=0))
        with pytest.raises(openai.APIStatusError) as caught:  # the SDK would retry twice more on its own...
            sdk(server).chat.completions.create(model="gpt-4o-mini", messages=ask("hello"))
        assert caught.value.status_code == 502
        assert caught.value.response.headers["x-should-retry"] == "false"  # ...but is told not to
        assert upstream.request_count == 3  # max_attempts, not 3 x 3
        assert "sk-upstream-secret" not in caught.value.message


def test_quota_and_context_errors_pass_through_with_their_codes(upstream):
    upstream.context_windows["gpt-4o-mini"] = 100
    with gateway(upstream) as server:
        with pytest.raises(openai.BadRequestError) as caught:
            sdk(server).chat.completions.create(model="gpt-4o-mini", messages=ask("word " * 200), max_tokens=5)
        assert caught.value.code == "context_length_exceeded"
        upstream.enqueue_faults(Fault.quota())
        with pytest.raises(openai.RateLimitError) as caught:
            sdk(server).chat.completions.create(model="gpt-4o-mini", messages=ask("hi"))
        assert caught.value.code == "insufficient_quota"
        assert caught.value.response.headers["x-should-retry"] == "false"


async def test_the_ledger_per_key_equals_the_upstreams_bill(upstream, isolated_env):
    keys = KeyStore(isolated_env / "data" / "serve-keys.db")
    _, alpha = keys.add("alpha")
    _, beta = keys.add("beta")
    with gateway(upstream, keys=keys) as server:
        async with async_sdk(server, alpha) as a, async_sdk(server, beta) as b:
            calls = [a.chat.completions.create(model="gpt-4o-mini", messages=ask(f"question {i} " * (i + 1)))
                     for i in range(5)]
            calls += [b.chat.completions.create(model="gpt-4o-mini", messages=ask(f"other {i}"), max_tokens=3)
                      for i in range(3)]
            await asyncio.gather(*calls)
            stream = await b.chat.completions.create(model="gpt-4o-mini", messages=ask("stream me please"),
                                                     stream=True)
            async for _ in stream:
                pass
    with Ledger(load_settings().data_dir / "ledger.db") as ledger:
        rows = {r.key: r for r in ledger.report(by="key")}
    assert rows["alpha"].requests == 5 and rows["beta"].requests == 4
    billed = upstream.billed
    assert sum(r.prompt_tokens for r in rows.values()) == billed["prompt_tokens"]
    assert sum(r.completion_tokens for r in rows.values()) == billed["completion_tokens"]
    assert all(r.cost_usd > 0 for r in rows.values())  # priced from the model table
    keys.close()


def test_a_money_budget_refuses_before_the_upstream_is_asked(upstream, isolated_env):
    keys = KeyStore(isolated_env / "data" / "serve-keys.db")
    _, secret = keys.add("tiny", max_cost_usd=0.0001)
    with gateway(upstream, keys=keys, options=ServeOptions()) as server:
        with pytest.raises(openai.RateLimitError) as caught:
            sdk(server, secret).chat.completions.create(model="gpt-4o-mini", messages=ask("hi"), max_tokens=2000)
        assert caught.value.code == "insufficient_quota"
        assert upstream.request_count == 0
        ok = sdk(server, secret).chat.completions.create(model="gpt-4o-mini", messages=ask("hi"), max_tokens=20)
        assert ok.choices[0].message.content
    keys.close()


def test_logprobs_pass_through_and_are_refused_when_malformed(upstream):
    upstream.logprob = lambda token: -0.25
    with gateway(upstream) as server:
        reply = sdk(server).chat.completions.create(model="gpt-4o-mini", messages=ask("hello"), logprobs=True,
                                                    top_logprobs=2)
        tokens = reply.choices[0].logprobs.content
        assert "".join(t.token for t in tokens) == reply.choices[0].message.content == "Reply: hello"
        assert all(t.logprob == -0.25 and len(t.top_logprobs) == 2 for t in tokens)
        assert upstream.requests[-1].body["top_logprobs"] == 2
        plain = sdk(server).chat.completions.create(model="gpt-4o-mini", messages=ask("hello again"))
        assert plain.choices[0].logprobs is None and "logprobs" not in upstream.requests[-1].body
        with pytest.raises(openai.BadRequestError) as caught:
            sdk(server).chat.completions.create(model="gpt-4o-mini", messages=ask("hi"), top_logprobs=3)
        assert caught.value.param == "top_logprobs"
