"""The retry rules, proven from the server's side: the real openai SDK over real HTTP to our test server."""

from __future__ import annotations

import asyncio

import pytest

import aigc
from aigc import RetryPolicy
from tests.openai_server import FakeOpenAIServer, Fault

KEY = "sk-test-SECRET-abcdef123456"


class FakeClock:
    """Sleeps advance a virtual clock, so waits are measured without waiting."""

    def __init__(self) -> None:
        self.now = 0.0
        self.sleeps: list[float] = []

    def sleep(self, seconds: float) -> None:
        self.sleeps.append(seconds)
        self.now += seconds

    async def async_sleep(self, seconds: float) -> None:
        self.sleep(seconds)

    def clock(self) -> float:
        return self.now


@pytest.fixture
def server():
    with FakeOpenAIServer() as s:
        yield s


@pytest.fixture
def clock():
    return FakeClock()


def make_client(server, clock, cls=aigc.Client, **policy):
    retry = RetryPolicy(sleep=clock.sleep, async_sleep=clock.async_sleep, clock=clock.clock,
                        **{"max_attempts": 6, "deadline": 300.0, **policy})
    return cls(base_url=server.url, api_key=KEY, model="gpt-4o-mini", retry=retry, timeout=5)


def test_three_failures_then_success_is_four_requests(server, clock):
    server.fail_next(3, Fault.server_error(500))
    with make_client(server, clock) as client:
        result = client.summarize("The council approved the new budget on Monday.")
    assert server.request_count == 4
    assert result.attempts == 4
    assert len(clock.sleeps) == 3
    assert result.text.startswith("Reply:")


@pytest.mark.parametrize("fault", [
    Fault.rate_limit(),
    Fault.server_error(500),
    Fault.server_error(502),
    Fault.server_error(503),
    Fault(status=408),
    Fault(status=409),
    Fault.dropped(),
], ids=["429", "500", "502", "503", "408", "409", "dropped"])
def test_transient_faults_are_retried_once(server, clock, fault):
    server.enqueue_faults(fault)
    with make_client(server, clock) as client:
        result = client.answer("What is the capital of France?")
    assert server.request_count == 2
    assert result.attempts == 2


def test_a_stall_past_the_timeout_is_retried(server):
    server.enqueue_faults(Fault.stalled(3))
    with aigc.Client(base_url=server.url, api_key=KEY, timeout=0.3,
                     retry=RetryPolicy(initial_backoff=0.01, max_backoff=0.02)) as client:
        result = client.answer("Still there?")
    assert server.request_count == 2
    assert result.attempts == 2


@pytest.mark.parametrize("fault, error", [
    (Fault(status=400), aigc.BadRequest),
    (Fault(status=401), aigc.AuthenticationFailed),
    (Fault(status=403), aigc.PermissionDenied),
    (Fault(status=404), aigc.ModelNotFound),
    (Fault(status=422), aigc.BadRequest),
    (Fault.quota(), aigc.QuotaExhausted),
], ids=["400", "401", "403", "404", "422", "insufficient_quota"])
def test_permanent_errors_are_never_retried(server, clock, fault, error):
    server.enqueue_faults(fault)
    with make_client(server, clock) as client, pytest.raises(error) as info:
        client.answer("Anything?")
    assert server.request_count == 1
    assert clock.sleeps == []
    assert info.value.status_code == fault.status
    assert KEY not in str(info.value) and "SECRET" not in str(info.value)


def test_a_page_instead_of_json_is_one_clear_error_not_retried(server, clock):
    server.enqueue_faults(Fault.html_page())
    with make_client(server, clock) as client, pytest.raises(aigc.BackendError, match="not JSON.*base_url"):
        client.answer("Anything?")
    assert server.request_count == 1


def test_retry_after_is_waited(server, clock):
    server.enqueue_faults(Fault.rate_limit(retry_after=1.5))
    with make_client(server, clock) as client:
        client.answer("Hello?")
    assert server.request_count == 2
    assert 1.5 <= clock.sleeps[0] <= 1.5 * 1.1


def test_retry_after_ms_is_waited(server, clock):
    server.enqueue_faults(Fault.rate_limit(retry_after_ms=250))
    with make_client(server, clock) as client:
        client.answer("Hello?")
    assert 0.25 <= clock.sleeps[0] <= 0.25 * 1.1


def test_a_retry_after_beyond_the_cap_gives_up_at_once(server, clock):
    server.enqueue_faults(Fault.rate_limit(retry_after=600))
    with make_client(server, clock, max_retry_after=60) as client, pytest.raises(aigc.RateLimited) as info:
        client.answer("Hello?")
    assert server.request_count == 1
    assert clock.sleeps == []
    assert info.value.retry_after == pytest.approx(600)


def test_attempts_are_capped(server, clock):
    server.fail_next(10, Fault.server_error(503))
    with make_client(server, clock, max_attempts=3) as client, pytest.raises(aigc.ServerError):
        client.answer("Hello?")
    assert server.request_count == 3


def test_the_overall_deadline_stops_retrying(server, clock):
    server.fail_next(50, Fault.rate_limit(retry_after=4))
    with make_client(server, clock, max_attempts=50, deadline=10) as client, pytest.raises(aigc.RateLimited):
        client.answer("Hello?")
    # 0s, ~4s, ~8s: a fourth attempt could not start before the 10 s deadline.
    assert server.request_count == 3
    assert sum(clock.sleeps) <= 10


def test_the_sdk_does_not_retry_on_its_own(server, clock):
    server.fail_next(5, Fault.server_error(500))
    with make_client(server, clock, max_attempts=1) as client, pytest.raises(aigc.ServerError):
        client.answer("Hello?")
    assert server.request_count == 1
    assert client.backend.client.max_retries == 0


async def test_async_client_follows_the_same_rules(server, clock):
    server.fail_next(3, Fault.server_error(502))
    client = make_client(server, clock, cls=aigc.AsyncClient)
    try:
        result = await client.summarize("The bridge reopened after repairs.")
        server.enqueue_faults(Fault(status=400))
        with pytest.raises(aigc.BadRequest):
            await client.answer("Hm?")
    finally:
        await client.aclose()
    assert server.request_count == 5
    assert result.attempts == 4


async def test_async_calls_run_concurrently(server):
    server.latency = 0.3
    client = aigc.AsyncClient(base_url=server.url, api_key=KEY)
    try:
        loop = asyncio.get_running_loop()
        started = loop.time()
        results = await asyncio.gather(*(client.answer(f"Question {i}?") for i in range(8)))
        elapsed = loop.time() - started
    finally:
        await client.aclose()
    assert len(results) == 8
    assert elapsed < 0.3 * 4  # not one after another


def test_a_failure_before_the_stream_starts_is_retried(server, clock):
    server.enqueue_faults(Fault.server_error(500))
    with make_client(server, clock) as client:
        stream = client.summarize("A short text about rivers and bridges.", stream=True)
        text = "".join(stream)
    assert server.request_count == 2
    assert text == stream.result.text
    assert stream.result.attempts == 2


def test_a_stream_cut_midway_is_not_repeated(server, clock):
    server.enqueue_faults(Fault.stream_cut(after_chunks=2))
    with make_client(server, clock) as client, pytest.raises(aigc.ConnectionFailed):
        "".join(client.summarize("A short text about rivers and bridges and more words.", stream=True))
    assert server.request_count == 1


def test_behind_a_rate_gate_the_first_retry_comes_sooner_and_the_later_ones_grow_faster(server):
    server.fail_next(2, Fault.server_error(500))
    with aigc.Client(base_url=server.url, api_key=KEY, model="gpt-4o-mini", rpm=6000, ledger=False) as client:
        assert client.answer("Hello?").attempts == 3
    first, second, third = (r.time for r in server.requests)
    assert 0.1 <= second - first < 0.25  # 0.1 s and up to 0.1 s of jitter (0.5-1 s without a gate)
    assert 0.3 <= third - second < 0.45  # three times longer, where doubling would give 0.2
