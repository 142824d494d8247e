"""The rate gate learns what the server says: limits from its headers, a faster pace where it counts over
whole minutes, one share a second for good after a 429, and no slot given back for a 5xx."""

from __future__ import annotations

import asyncio
import json
import time

import pytest

import aigc
from aigc.backends.openai.wire import duration, rate_limits
from aigc.ratelimit import PROBE, RateGate
from aigc.ratelimit.packing import fill
from aigc.ratelimit.policy import (
    GAP_S,
    LEAD_QUANTILE,
    LEADS,
    PATIENCE,
    QUIET,
    SLOW_QUIET,
    TOKEN_GAP_S,
    TRIAL_WAIT_S,
)
from tests.openai_server import FakeOpenAIServer
from tests.openai_server import duration as server_duration
from tests.test_batch_job import FakeTime as _FakeTime
from tests.test_batch_job import make_articles, most_in_any_second, run_cli, use_server, write_job


class FakeTime(_FakeTime):
    async def sleep(self, seconds: float) -> None:
        await super().sleep(seconds)
        await asyncio.sleep(0)  # let other tasks run, as a real sleep does


HEADERS = {"limit_requests": 1200, "remaining_requests": 1190, "limit_tokens": 150_000,
           "remaining_tokens": 149_000}


def test_openai_style_headers_are_read_durations_included():
    headers = {"x-ratelimit-limit-requests": "1200", "x-ratelimit-remaining-requests": "1187",
               "x-ratelimit-reset-requests": "6m0s", "x-ratelimit-limit-tokens": "150000",
               "x-ratelimit-remaining-tokens": "149100", "x-ratelimit-reset-tokens": "20ms"}
    assert rate_limits(headers) == {"limit_requests": 1200, "remaining_requests": 1187, "reset_requests": 360.0,
                                    "limit_tokens": 150000, "remaining_tokens": 149100, "reset_tokens": 0.02}
    assert [duration(server_duration(s)) for s in (0.02, 1, 1.5, 59.25, 360)] == [0.02, 1, 1.5, 59.25, 360]
    assert duration("soon") is None and rate_limits({}) is None


async def test_limits_are_learned_after_a_cautious_start():
    t = FakeTime()
    gate = RateGate(learn=True, guard=0.0, clock=t.clock, sleep=t.sleep)
    slots = [await gate.acquire(100) for _ in range(PROBE)]  # a handful go before anything is known
    waiting = asyncio.ensure_future(gate.acquire(100))
    await asyncio.sleep(0)
    assert not waiting.done()
    for slot in slots:
        gate.finished(slot)
    gate.observe({**HEADERS, "limit_requests": 120})  # 2 a second
    await waiting
    assert (gate.rpm, gate.tpm) == (120, 150_000)
    times = []
    for _ in range(6):
        await gate.acquire(100)
        times.append(t.now)
    assert most_in_any_second(times) <= 2


async def test_a_server_that_says_nothing_is_not_limited():
    t = FakeTime()
    gate = RateGate(learn=True, guard=0.0, clock=t.clock, sleep=t.sleep)
    for _ in range(PROBE):
        gate.finished(await gate.acquire(10))
        gate.observe(None)
    before = t.now
    for _ in range(100):
        await gate.acquire(10)
    assert t.now == before and not gate.active


async def test_configured_limits_are_a_ceiling_and_the_headers_the_truth():
    gate = RateGate(rpm=600, tpm=100_000, learn=True, guard=0.0)
    gate.observe(HEADERS)  # the server allows more: the configured values stand
    assert (gate.rpm, gate.tpm) == (600, 100_000)
    gate.observe({**HEADERS, "limit_requests": 300})  # it allows less: its word wins
    assert (gate.rpm, gate.tpm) == (300, 100_000)


async def test_the_pace_rises_while_the_budget_is_large_and_falls_back_for_good_on_a_429():
    t = FakeTime()
    gate = RateGate(rpm=1200, learn=True, guard=0.0, clock=t.clock, sleep=t.sleep)

    async def second() -> int:
        start, sent = t.now, 0
        while t.now < start + 1:
            slot = await gate.acquire(1)
            gate.observe(HEADERS)  # over half of the minute's budget left, no 429
            gate.finished(slot)
            sent += 1
        return sent

    first = await second()
    later = [await second() for _ in range(3)]
    assert first <= 50 and later[-1] > 2 * first  # a minute-counting server lets a small job go faster
    gate.penalize(0.5)
    assert gate.stats()["boost"] == 1.0
    t.now += 1
    again = [await second() for _ in range(3)]
    assert max(again) <= 21  # one share a second, for good


def beyond_the_plain_share(t: FakeTime) -> tuple[RateGate, object]:
    """A gate at 10 requests a second that has sent 10, raised its pace, and sent an 11th: a trial."""
    gate = RateGate(rpm=600, learn=True, guard=0.0, clock=t.clock)
    for _ in range(10):
        assert gate.reserve(1)[1] == 0
        t.now += 0.01
    gate.observe(HEADERS)  # most of the minute left: the pace rises to 12 a second
    trial, _ = gate.reserve(1)
    assert trial is not None and trial.trial
    return gate, trial


def test_beyond_the_plain_share_one_request_goes_alone_until_it_is_answered():
    t = FakeTime()
    gate, trial = beyond_the_plain_share(t)
    t.now += 0.01
    assert gate.reserve(1)[0] is None  # the 12th waits for the 11th's answer
    t.now += 1.0
    assert gate.reserve(1)[0] is None  # so does one that would fit the plain share by now
    gate.finished(trial)  # answered without a 429: the server counts over longer windows
    assert gate.reserve(1)[0] is not None


def test_the_second_trial_the_server_lets_in_confirms_the_higher_pace():
    t = FakeTime()
    gate, first = beyond_the_plain_share(t)
    gate.finished(first)  # got in, but one request that reached the server late would have let it in too
    t.now += 0.01
    second, _ = gate.reserve(1)
    assert second.trial and second.proof  # the share was exceeded without it
    gate.finished(second)
    t.now += 0.2
    gate.observe(HEADERS)  # the pace rises again
    third, _ = gate.reserve(1)
    assert third is not None and not third.trial  # and goes without trials from now on


def test_a_trial_that_gets_no_answer_holds_the_others_back_only_so_long():
    t = FakeTime()
    gate, trial = beyond_the_plain_share(t)
    t.now += TRIAL_WAIT_S - 0.1
    assert gate.reserve(1)[0] is None
    t.now += 0.1  # stalled: the others go on at the plain pace, the higher one still unconfirmed
    assert gate.reserve(1)[0] is not None


async def test_a_low_budget_slows_the_pace_down_again():
    t = FakeTime()
    gate = RateGate(rpm=1200, learn=True, guard=0.0, clock=t.clock, sleep=t.sleep)
    for _ in range(200):
        slot = await gate.acquire(1)
        gate.observe(HEADERS)
        gate.finished(slot)
    fast = gate.stats()["boost"]
    gate.observe({**HEADERS, "remaining_requests": 100})
    assert fast > 2 and gate.stats()["boost"] < fast


def test_a_small_request_takes_room_a_large_one_is_waiting_for():
    t = FakeTime()
    gate = RateGate(tpm=60_000, guard=0.0, clock=t.clock)  # 1,000 tokens a second
    start = t.now
    assert gate.reserve(700)[1] == 0
    slot, wait = gate.reserve(500)
    assert slot is None and wait == pytest.approx(1.0)  # it holds nothing while it waits
    t.now += 0.5
    assert gate.reserve(300)[1] == 0  # so a smaller one that fits goes now
    t.now = start + wait
    assert gate.reserve(500, waited=wait)[1] == 0  # and the large one when the 700 has left the window


def test_of_the_requests_waiting_those_that_fill_the_token_room_best_go_first():
    t = FakeTime()
    gate = RateGate(tpm=60_000, guard=0.0, clock=t.clock)  # 1,000 tokens a second
    assert gate.reserve(1000)[1] == 0
    waiting = {"a": (0, 450), "b": (1, 500), "c": (2, 500)}  # (ticket, tokens), in the order they came
    assert all(gate.reserve(tokens, 0.0, ticket)[0] is None for ticket, tokens in waiting.values())
    t.now += 1.0  # the room is whole again: first come, a and b would take 950 and hold c back a second
    assert gate.reserve(450, 0.0, 0) == (None, pytest.approx(1.0))  # b and c fill it: a waits for more room
    assert gate.reserve(500, 0.0, 1)[1] == 0
    assert gate.reserve(450, 0.0, 0)[0] is None  # the room is c's while it comes round
    t.now += 0.01  # (two never leave at once)
    assert gate.reserve(500, 0.0, 2)[1] == 0
    assert gate.reserve(450, 0.0, 0) == (None, pytest.approx(0.99))  # full until b's place leaves the window
    t.now += 1.0
    assert gate.reserve(450, 0.0, 0)[1] == 0
    risen = RateGate(tpm=60_000, learn=True, guard=0.0, clock=t.clock)
    risen.observe({"limit_tokens": 60_000, "remaining_tokens": 59_000})  # most of the minute left: pace 1.2x
    assert risen.reserve(1200)[1] == 0
    assert all(risen.reserve(tokens, 0.0, ticket)[0] is None for ticket, tokens in waiting.values())
    t.now += 1.0
    assert risen.reserve(450, 0.0, 0)[1] == 0  # beyond the share, whoever fits first goes first


def test_the_fill_counts_the_room_that_opens_within_a_moment_not_only_the_room_now():
    t = FakeTime()
    gate = RateGate(tpm=60_000, guard=0.0, clock=t.clock)  # 1,000 tokens a second
    start = t.now
    for tokens in (400, 300, 300):  # last second's bookings leave the window 20 ms apart
        assert gate.reserve(tokens)[1] == 0
        t.now += 0.02
    waiting = {"a": (0, 390), "b": (1, 590), "c": (2, 410)}
    assert all(gate.reserve(tokens, 0.0, ticket)[0] is None for ticket, tokens in waiting.values())
    t.now = start + 1.0  # 400 of room now, 1,000 within 40 ms: a alone would fit now and leave b or c a scrap
    assert gate.reserve(390, 0.0, 0) == (None, pytest.approx(0.02))  # b and c fill the whole second: a waits
    assert gate.reserve(590, 0.0, 1) == (None, pytest.approx(0.02))  # b waits for the room to open
    t.now = start + 1.02
    assert gate.reserve(590, 0.0, 1)[1] == 0
    assert gate.reserve(390, 0.0, 0)[0] is None  # what is left is c's
    t.now = start + 1.04
    assert gate.reserve(410, 0.0, 2)[1] == 0
    assert gate.reserve(390, 0.0, 0)[0] is None  # the second is full to the token


def test_the_best_fill_is_exact_and_takes_the_oldest_among_equals():
    assert fill([("a", 450), ("b", 500), ("c", 500)], 1000) == ["b", "c"]
    assert fill([("a", 300), ("b", 200), ("c", 300), ("d", 200)], 500) == ["a", "b"]
    assert fill([("a", 700)], 600.5) == [] and fill([], 100) == []


def test_a_request_that_waited_long_books_ahead_and_the_others_keep_clear():
    t = FakeTime()
    gate = RateGate(tpm=60_000, guard=0.0, clock=t.clock)
    start = t.now
    gate.reserve(900)
    slot, wait = gate.reserve(800, waited=PATIENCE)  # waited two windows: it books the moment it fits
    assert slot is not None and wait == pytest.approx(1.0)
    t.now = start + 1.2
    assert gate.reserve(300) == (None, pytest.approx(0.8))  # 800 booked at +1 leaves no room until +2
    huge, wait = gate.reserve(5_000)  # larger than a whole second's share: booked into an empty window
    assert huge is not None and huge.at == pytest.approx(start + 2.0)


def test_429s_for_requests_sent_before_the_first_came_back_are_the_same_news():
    t = FakeTime()
    gate = RateGate(rpm=1200, guard=0.0, clock=t.clock)
    first, _ = gate.reserve(1)
    t.now += 0.02
    second, _ = gate.reserve(1)
    gate.penalize(0.005, first)  # 5 ms too early: an earlier request reached the server 5 ms later than counted
    gate.penalize(0.005, second)  # already in flight when the first 429 came: nothing more to learn
    assert gate.stats()["margin_s"] == pytest.approx(0.005) and gate.penalties == 2
    third, _ = gate.reserve(1)
    gate.penalize(0.001, third)  # too early again, if only just: the margin doubles
    assert gate.stats()["margin_s"] == pytest.approx(0.01)


def test_the_margin_narrows_while_no_429_comes_and_widens_again_at_the_next():
    t = FakeTime()
    gate = RateGate(rpm=60_000, guard=0.005, clock=t.clock)  # 1,000 a second, a 5 ms margin

    def margins(n: int) -> list[float]:
        seen = []
        while len(seen) < n:
            slot, wait = gate.reserve(1)
            t.now += wait if slot is None else 0.002
            if slot is not None:
                seen.append(gate.stats()["margin_s"])
        return seen

    quiet = margins(4 * QUIET)
    assert quiet[0] == 0.005 and quiet[QUIET] == 0.004 and quiet[-1] == 0.002  # 1 ms less each time
    gate.penalize(0.003)  # a request the server counted 3 ms later than the gate did
    assert gate.stats()["margin_s"] == pytest.approx(0.005)
    assert margins(QUIET)[-1] == pytest.approx(0.004)  # one late request is one stall: back to narrowing
    gate.penalize(0.02)  # far later, and soon after the last: a busier machine; what it added goes half at a time,
    assert gate.stats()["margin_s"] == pytest.approx(0.024)  # and every SLOW_QUIET requests from now on
    after = margins(SLOW_QUIET)
    assert after[-2] == pytest.approx(0.024) and after[-1] == pytest.approx(0.005 + 0.019 / 2)


def test_requests_leave_apart_the_more_so_where_many_a_second_go():
    t = FakeTime()
    gate = RateGate(rpm=1200, tpm=150_000, guard=0.0, clock=t.clock)  # 20 requests and 2,500 tokens a second
    assert gate.reserve(300)[1] == 0
    assert gate.reserve(300) == (None, pytest.approx(TOKEN_GAP_S))  # more of the tokens: 8 such a second
    t.now += 1.0
    assert gate.reserve(50)[1] == 0
    assert gate.reserve(50) == (None, pytest.approx(GAP_S))  # more of the requests: 20 a second, spaced wider
    assert TOKEN_GAP_S < GAP_S


def test_a_request_held_up_after_it_was_counted_counts_from_when_it_leaves():
    t = FakeTime()
    gate = RateGate(rpm=120, guard=0.0, clock=t.clock)  # 2 a second
    first, _ = gate.reserve(1)
    t.now += 0.1
    second, _ = gate.reserve(1)
    t.now += 0.2  # a busy interpreter: the first request leaves 0.3 s after its slot
    gate.left_late(first)
    t.now += 0.2
    gate.left_late(first)  # its SDK's next request: no news
    t.now += 0.6
    assert gate.reserve(1)[0] is not None  # the second's place has gone
    assert gate.reserve(1) == (None, pytest.approx(0.2))  # the first's counts from 0.3


def test_a_request_counts_from_when_it_goes_on_the_wire_sooner_or_later_than_its_moment():
    t = FakeTime()
    gate = RateGate(rpm=120, guard=0.0, clock=t.clock)  # 2 a second
    first, _ = gate.reserve(1)
    gate.left_late(first)
    t.now += 0.05  # waiting for a connection, a handshake: its headers go out 50 ms after the hook
    gate.sent(first)
    t.now += 0.05
    second, _ = gate.reserve(1)
    t.now -= 0.002
    gate.sent(second)  # on the wire 2 ms before its moment
    t.now += 0.002
    assert gate.reserve(1) == (None, pytest.approx(0.95))  # the first counts from 0.05, not 0
    t.now += 0.95
    assert gate.reserve(1)[0] is not None
    assert gate.reserve(1) == (None, pytest.approx(0.048))  # the second counts from 0.098, not 0.1


def test_requests_are_let_go_as_much_sooner_as_they_usually_take_to_reach_the_wire():
    t = FakeTime()
    gate = RateGate(rpm=60, guard=0.0, clock=t.clock)  # one a second
    took = [0.002, 0.003, 0.004, 0.005] * (LEADS // 4)  # from its moment to the wire: 2-5 ms
    for delay in took:
        t.now += 1.0
        slot, wait = gate.reserve(1)
        assert slot is not None and wait == 0
        t.now += delay
        gate.sent(slot)
    lead = sorted(took)[int(LEAD_QUANTILE * len(took))]
    assert lead == 0.003 and gate.stats()["lead_s"] == pytest.approx(lead)
    assert gate.reserve(1) == (None, pytest.approx(1.0 - lead))  # let go 3 ms before the window has room
    t.now += 1.0 - lead
    slot, wait = gate.reserve(1)
    assert wait == 0 and slot.at == pytest.approx(t.now + lead)  # and counted from when it will be sent


def test_the_hosted_client_tells_the_gate_when_each_request_leaves_and_goes_on_the_wire(monkeypatch):
    left, sent = [], []
    monkeypatch.setattr(RateGate, "left_late", lambda self, slot: left.append(slot))
    monkeypatch.setattr(RateGate, "sent", lambda self, slot: sent.append(slot))
    options = dict(api_key="sk-test", model="gpt-4o-mini", rpm=600, ledger=False)

    async def from_async_code(url):
        async with aigc.AsyncClient(base_url=url, **options) as client:
            return await client.summarize("The ferry left at noon.")

    with FakeOpenAIServer() as server, FakeOpenAIServer() as other:
        with aigc.Client(base_url=server.url, **options) as client:
            client.summarize("The ferry left at noon.")
        asyncio.run(from_async_code(server.url))
        monkeypatch.setenv("AIGC_BASE_URLS", f"{server.url},{other.url}")  # spread over two servers
        with aigc.Client(**options) as client:
            client.summarize("The ferry left at noon.")
    assert len(left) == 3 and len({id(slot) for slot in left}) == 3
    assert [id(slot) for slot in sent] == [id(slot) for slot in left]  # each one's headers, once each


async def test_what_was_sent_while_learning_counts_once_the_limits_are_known():
    t = FakeTime()
    gate = RateGate(learn=True, guard=0.0, clock=t.clock, sleep=t.sleep)
    times = []
    for _ in range(PROBE):
        gate.finished(await gate.acquire(100))
        times.append(t.now)
    gate.observe({**HEADERS, "limit_requests": 300, "remaining_requests": 120})  # 5 a second, 40 % left
    for _ in range(6):
        await gate.acquire(100)
        times.append(t.now)
    assert most_in_any_second(times) <= 5  # the probes are in the books the server keeps


def test_a_5xx_keeps_its_place_and_a_429_gives_it_back():
    with FakeOpenAIServer() as server:
        client = aigc.Client(base_url=server.url, api_key="sk-test-gate-123456", rpm=6000, ledger=False,
                             max_attempts=3)
        gate = client.accounting.gate
        from tests.openai_server import Fault

        server.enqueue_faults(Fault.server_error(503))
        client.summarize("A text.")
        assert gate.refunds == 0 and gate.acquired == 2
        server.enqueue_faults(Fault.rate_limit(retry_after=0.01))
        client.summarize("Another text.")
        assert gate.refunds == 1 and gate.penalties == 1
        client.close()


def test_a_job_without_limits_learns_them_from_the_server(tmp_path, capsys, monkeypatch):
    with FakeOpenAIServer(rpm=600, tpm=60_000) as server:  # 10 requests, 1,000 tokens a second
        use_server(monkeypatch, server)
        make_articles(tmp_path / "articles", 40)
        job = write_job(tmp_path, """
            task = "summarize"
            [input]
            glob = "articles/*.md"
            [output]
            dir = "out"
            [limits]
            concurrency = 16
            [model]
            model = "gpt-4o-mini"
            max_output_tokens = 20
        """)
        started = time.monotonic()
        code, out, err = run_cli(capsys, "batch", "run", job, "--json")
        report = json.loads(out)
        assert code == 0, err
        assert report["done"] == 40 and server.stats["rate_limited"] <= 2, server.stats
        assert report["rate"]["rpm"] == 600 and report["rate"]["learned"]
        assert time.monotonic() - started >= 3  # it kept to 10 a second


@pytest.mark.slow
def test_a_server_counting_whole_minutes_lets_a_small_job_finish_fast(tmp_path, capsys, monkeypatch):
    with FakeOpenAIServer(rpm=1200, tpm=1_000_000, rate_window=60) as server:
        use_server(monkeypatch, server)
        make_articles(tmp_path / "articles", 200)
        job = write_job(tmp_path, """
            task = "summarize"
            [input]
            glob = "articles/*.md"
            [output]
            dir = "out"
            [limits]
            concurrency = 32
            rpm = 1200
            [model]
            model = "gpt-4o-mini"
            max_output_tokens = 20
        """)
        started = time.monotonic()
        code, _, err = run_cli(capsys, "batch", "run", job)
        wall = time.monotonic() - started
        assert code == 0, err
        # One share a second (20) would take 10 s; the pace rose with the budget the server said was left.
        assert wall < 7 and server.stats["rate_limited"] == 0, (wall, server.stats)
