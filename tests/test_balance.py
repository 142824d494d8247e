"""One client over several aigc serve replicas: requests spread over the healthy ones, a dead one is set aside
and aigc's retry layer moves the failed request to another."""

from __future__ import annotations

import asyncio
import contextlib

import httpx2
import pytest

import aigc
from aigc.backends.fake import FakeBackend
from aigc.backends.openai import OpenAIBackend
from aigc.balance import AsyncBalancingTransport, BalancingTransport, Upstreams, balanced_clients
from aigc.config import load_settings
from tests.serving import serving


def test_requests_spread_over_replicas_and_avoid_a_dead_one():
    a, b = FakeBackend(), FakeBackend()
    with contextlib.ExitStack() as stack:
        first = stack.enter_context(serving(a))
        second = stack.enter_context(serving(b))
        urls = [first.url + "/v1", second.url + "/v1"]
        sync, asynchronous = balanced_clients(urls, "no-key", cooldown=30)
        settings = load_settings({"backend": "openai", "base_url": urls[0], "ledger": False})
        backend = OpenAIBackend(settings, client=sync, async_client=asynchronous)
        with aigc.Client(backend=backend, model="fake-model", ledger=False) as client:
            for i in range(6):
                assert client.chat([{"role": "user", "content": f"hello {i}"}]).text == f"Fake reply: hello {i}"
            assert len(a.history) == 3 and len(b.history) == 3  # taken in turn
            second.stop()
            results = [client.chat([{"role": "user", "content": f"again {i}"}]) for i in range(4)]
            assert [r.text for r in results] == [f"Fake reply: again {i}" for i in range(4)]
            assert len(a.history) == 7
            assert sum(r.attempts for r in results) == 5  # one attempt met the dead replica; then it was avoided


def test_a_server_that_failed_waits_out_its_cooldown():
    now = [0.0]
    pool = Upstreams(["http://a/v1", "http://b/v1"], cooldown=2, clock=lambda: now[0])
    server, probe = pool.pick()
    pool.done(server, ok=False)
    assert {pool.pick()[0].base_url for _ in range(3)} == {"http://b/v1"}
    now[0] = 2.5
    picked = [pool.pick() for _ in range(2)]
    back = next(p for p in picked if p[0] is server)
    assert back[1] is True  # probed before it gets traffic again
    assert pool.route("http://a/v1/chat/completions", pool.servers[1]) == "http://b/v1/chat/completions"


def test_a_client_with_several_base_urls_spreads_its_requests_and_rides_out_a_dead_one(monkeypatch):
    from tests.openai_server import FakeOpenAIServer

    with FakeOpenAIServer() as a, FakeOpenAIServer() as b:
        dead = "http://127.0.0.1:9/v1"  # nothing listens there
        monkeypatch.setenv("AIGC_BASE_URLS", f"{a.url},{b.url},{dead}")
        monkeypatch.setenv("OPENAI_API_KEY", "sk-test-balance-123456")
        with aigc.Client(ledger=False) as client:
            results = client.map("summarize", [f"Text number {i}." for i in range(12)])
        assert all(isinstance(r, aigc.Result) for r in results)
        assert a.request_count > 0 and b.request_count > 0 and a.request_count + b.request_count == 12


@pytest.mark.parametrize("twin", ["sync", "async"])
def test_both_transports_set_a_failing_server_aside_and_probe_its_health_before_it_comes_back(twin):
    seen, health = [], iter([503, 200])

    def answer(request):
        seen.append(f"{request.url.host}{request.url.path}")
        if request.url.path == "/health":
            return httpx2.Response(next(health))
        return httpx2.Response(503 if len(seen) == 2 else 200, json={"ok": True})

    urls, options = ["http://a/v1", "http://b/v1"], {"cooldown": 0, "clock": lambda: 0.0}
    if twin == "sync":
        transport = BalancingTransport(urls, transport=httpx2.MockTransport(answer), **options)
        send = httpx2.Client(transport=transport).post
    else:
        transport = AsyncBalancingTransport(urls, transport=httpx2.MockTransport(answer), **options)
        client = httpx2.AsyncClient(transport=transport)

        def send(url):
            return asyncio.run(client.post(url))

    statuses = []
    for _ in range(4):
        try:
            response = send("http://a/v1/chat/completions")
            statuses.append((response.status_code, response.headers["x-aigc-upstream"]))
        except httpx2.ConnectError as e:
            statuses.append(str(e))
    assert statuses == [(200, "http://a/v1"), (503, "http://b/v1"), (200, "http://a/v1"),
                        "http://b/health answered 503"]  # b failed: probed first, and kept out
    assert seen == ["a/v1/chat/completions", "b/v1/chat/completions", "a/v1/chat/completions", "b/health"]
    response = send("http://a/v1/chat/completions")
    assert response.headers["x-aigc-upstream"] == "http://a/v1"
    response = send("http://a/v1/chat/completions")  # b's health says 200 now: it serves again
    assert (response.status_code, response.headers["x-aigc-upstream"]) == (200, "http://b/v1")
    assert seen[-2:] == ["b/health", "b/v1/chat/completions"]
