"""Rate limits in the library: ``Client(rpm=..., tpm=...)`` keeps to the server's limits from map, from async
code and from many threads of one process, through the same gate batch jobs use. The server runs in a process
of its own, as a real API does: in this one it would share the interpreter with the client, and how late it
took a request in would depend on the client's threads rather than on the gate."""

from __future__ import annotations

import asyncio
from concurrent.futures import ThreadPoolExecutor

import pytest

import aigc
from tests.openai_server import ServerProcess

KEY = "sk-test-limits-abcdef123456"
TEXTS = [f"Item {i}: the ferry left at {i % 24} o'clock with {i * 3} passengers." for i in range(300)]
LIMITS = dict(rpm=1200, tpm=150_000)

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def process():
    # Limits enforced over 1-second windows: 20 requests and 2,500 tokens in any second.
    with ServerProcess("--rpm", str(LIMITS["rpm"]), "--tpm", str(LIMITS["tpm"])) as server:
        yield server


@pytest.fixture
def server(process):
    process.reset(settle=1.1)
    return process


def settings(server) -> dict:
    return dict(base_url=server.url, api_key=KEY, model="gpt-4o-mini", max_output_tokens=16, concurrency=16,
                ledger=False, **LIMITS)


def check(server, results) -> None:
    assert len(results) == 300 and all(isinstance(r, aigc.Result) for r in results)
    stats = server.stats
    assert stats["ok"] == 300
    # A few at most: the first requests beyond the plain share (the pace rises until the server says no) and,
    # on a busy machine, some that reached the server late. Without the gate: about a thousand.
    assert stats["rate_limited"] <= 10, stats


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
