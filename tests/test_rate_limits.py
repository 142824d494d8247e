"""Rate limits in the library: ``Client(rpm=..., tpm=...)`` keeps to the server's limits from map, from async
code and from many threads of one process, through the same gate batch jobs use."""

from __future__ import annotations

import asyncio
from concurrent.futures import ThreadPoolExecutor

import pytest

import aigc
from tests.openai_server import FakeOpenAIServer

KEY = "sk-test-limits-abcdef123456"
TEXTS = [f"Item {i}: the ferry left at {i % 24} o'clock with {i * 3} passengers." for i in range(300)]
LIMITS = dict(rpm=1200, tpm=150_000)

pytestmark = pytest.mark.slow


@pytest.fixture
def server():
    # Limits enforced over 1-second windows: 20 requests and 2,500 tokens in any second.
    with FakeOpenAIServer(**LIMITS) as s:
        yield s


def settings(server) -> dict:
    return dict(base_url=server.url, api_key=KEY, model="gpt-4o-mini", max_output_tokens=16, concurrency=16,
                ledger=False, **LIMITS)


def check(server, results) -> None:
    assert len(results) == 300 and all(isinstance(r, aigc.Result) for r in results)
    assert server.stats["ok"] == 300
    assert server.stats["rate_limited"] <= 5, server.stats


def test_client_map_keeps_to_the_limits(server):
    with aigc.Client(**settings(server)) as client:
        results = client.map("summarize", TEXTS)
    check(server, results)


def test_async_client_map_keeps_to_the_limits(server):
    async def main():
        async with aigc.AsyncClient(**settings(server)) as client:
            return await client.map("summarize", TEXTS)

    check(server, asyncio.run(main()))


def test_threads_sharing_a_client_keep_to_the_limits(server):
    with aigc.Client(**settings(server)) as client, ThreadPoolExecutor(max_workers=12) as pool:
        results = list(pool.map(client.summarize, TEXTS))
    check(server, results)
