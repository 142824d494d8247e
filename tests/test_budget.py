"""Budgets refuse a request that could pass a cap before it is sent, even under heavy concurrency."""

from __future__ import annotations

import asyncio
import random
import sys
import threading

import pytest

from aigc.budget import Budget
from aigc.errors import BudgetExceeded
from aigc.types import Usage


def test_a_request_that_could_pass_the_token_cap_is_refused_and_nothing_is_charged():
    budget = Budget(max_tokens=1_000)
    first = budget.reserve(600, None)
    budget.commit(first, Usage(prompt_tokens=450, completion_tokens=100), None)
    assert (budget.spent_tokens, budget.remaining_tokens) == (550, 450)

    with pytest.raises(BudgetExceeded) as refused:
        budget.reserve(500, None)
    message = str(refused.value)
    assert "up to 500 tokens but only 450 of the 1,000-token cap are left" in message
    assert "nothing was sent" in message and "--max-tokens" in message and "shorten the input" in message
    assert refused.value.needed_tokens == 500
    assert (budget.spent_tokens, budget.reserved_tokens, budget.in_flight) == (550, 0, 0)

    budget.commit(budget.reserve(450, None), 450, None)  # exactly filling the cap is allowed
    assert budget.remaining_tokens == 0


def test_a_request_that_could_pass_the_money_cap_is_refused():
    budget = Budget(max_cost_usd=0.05)
    held = budget.reserve(2_000, 0.03)
    with pytest.raises(BudgetExceeded) as refused:
        budget.reserve(2_000, 0.03)
    message = str(refused.value)
    assert "could cost up to $0.03 but only $0.02 of the $0.05 cap is left" in message
    assert "$0.03 held by requests in flight" in message and "--max-cost" in message
    assert refused.value.needed_usd == 0.03

    budget.release(held)  # the first request failed without being billed
    assert budget.remaining_usd == pytest.approx(0.05)
    budget.commit(budget.reserve(2_000, 0.03), 1_200, 0.018)
    assert budget.spent_usd == pytest.approx(0.018)
    assert budget.remaining_usd == pytest.approx(0.032)


def test_requests_in_flight_hold_their_worst_case():
    budget = Budget(max_tokens=1_000)
    a = budget.reserve(400, None)
    b = budget.reserve(400, None)
    assert (budget.reserved_tokens, budget.remaining_tokens) == (800, 200)
    with pytest.raises(BudgetExceeded, match="800 held by requests in flight"):
        budget.reserve(300, None)
    budget.commit(a, 120, None)  # actual use was far below the worst case: the rest is freed
    budget.reserve(300, None)
    budget.release(b)
    assert (budget.spent_tokens, budget.reserved_tokens) == (120, 300)


def test_unknown_prices_are_refused_under_a_money_cap_unless_allowed():
    with pytest.raises(BudgetExceeded, match=r"price of this model is unknown, so the \$1.00 cap could not"):
        Budget(max_cost_usd=1.0).reserve(10, None)

    lenient = Budget(max_tokens=100, max_cost_usd=1.0, allow_unknown_prices=True)
    lenient.commit(lenient.reserve(10, None), 10, None)
    assert (lenient.spent_usd, lenient.unpriced_requests, lenient.spent_tokens) == (0.0, 1, 10)
    with pytest.raises(BudgetExceeded, match="token cap"):  # the token cap still holds
        lenient.reserve(91, None)

    tokens_only = Budget(max_tokens=100)  # no money cap: an unknown price is no problem
    tokens_only.commit(tokens_only.reserve(10, None), 10, None)


def test_an_unknown_actual_cost_is_charged_at_the_reserved_worst_case():
    budget = Budget(max_cost_usd=1.0)
    budget.commit(budget.reserve(100, 0.25), 80, None)
    assert budget.spent_usd == 0.25


def test_unlimited_counts_everything_and_refuses_nothing():
    budget = Budget.unlimited()
    budget.commit(budget.reserve(10**9, None), 10**9, 1e6)
    assert (budget.spent_tokens, budget.spent_usd) == (10**9, 1e6)
    assert (budget.remaining_tokens, budget.remaining_usd) == (None, None)


def test_settling_twice():
    budget = Budget(max_tokens=100)
    reservation = budget.reserve(10, None)
    budget.commit(reservation, 10, None)
    budget.release(reservation)  # a `finally: release()` after a commit is harmless
    with pytest.raises(ValueError, match="already committed or released"):
        budget.commit(reservation, 10, None)  # charging twice would be a bug
    assert budget.spent_tokens == 10


def test_negative_amounts_are_programming_errors():
    with pytest.raises(ValueError):
        Budget(max_tokens=-1)
    with pytest.raises(ValueError):
        Budget().reserve(-5, None)


def test_repr_shows_where_things_stand():
    budget = Budget(max_tokens=1_000, max_cost_usd=2.0)
    budget.reserve(300, 0.5)
    assert repr(budget) == (
        "Budget(tokens=0/1000, usd=0.000000/2.0, reserved_tokens=300, reserved_usd=0.500000, in_flight=1)"
    )


@pytest.fixture
def tight_switching():
    """Make threads switch as often as possible, so a missing lock would show."""
    old = sys.getswitchinterval()
    sys.setswitchinterval(1e-6)
    yield
    sys.setswitchinterval(old)


@pytest.mark.parametrize(
    ("budget", "admitted"),
    [
        (Budget(max_tokens=1_000), 142),  # 142 * 7 = 994 tokens
        (Budget(max_cost_usd=0.01), 142),  # 142 * $0.00007 = $0.00994
        (Budget(max_tokens=350, max_cost_usd=0.01), 50),
    ],
    ids=["tokens", "money", "both"],
)
def test_many_threads_never_get_past_the_cap(budget, admitted, tight_switching):
    granted = []
    start = threading.Barrier(32)

    def worker():
        start.wait()
        for _ in range(20):
            try:
                reservation = budget.reserve(7, 0.00007)
            except BudgetExceeded:
                continue
            granted.append(reservation.id)
            budget.commit(reservation, 7, 0.00007)

    threads = [threading.Thread(target=worker) for _ in range(32)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()

    assert len(granted) == admitted
    assert budget.spent_tokens == 7 * admitted
    assert budget.in_flight == 0 and budget.reserved_tokens == 0
    if budget.max_cost_usd is not None:
        assert budget.spent_usd <= budget.max_cost_usd


def test_threads_that_use_less_than_they_reserve_stay_under_the_cap(tight_switching):
    budget = Budget(max_tokens=5_000, max_cost_usd=0.5)

    def worker(seed):
        rng = random.Random(seed)
        for _ in range(200):
            try:
                reservation = budget.reserve(100, 0.01)
            except BudgetExceeded:
                continue
            if rng.random() < 0.2:
                budget.release(reservation)  # failed, not billed
            else:
                budget.commit(reservation, rng.randint(1, 100), rng.uniform(0, 0.01))

    threads = [threading.Thread(target=worker, args=(n,)) for n in range(24)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert budget.spent_tokens <= 5_000
    assert budget.spent_usd <= 0.5
    assert budget.remaining_tokens < 100 or budget.remaining_usd < 0.01  # ran until the cap stopped it


async def test_asyncio_tasks_share_a_budget():
    budget = Budget(max_tokens=100)
    peak = 0

    async def request():
        nonlocal peak
        reservation = budget.reserve(30, None)  # sync call: no await between check and hold
        try:
            peak = max(peak, budget.in_flight)
            await asyncio.sleep(0.001)
            budget.commit(reservation, 5, None)
        finally:
            budget.release(reservation)

    results = await asyncio.gather(*(request() for _ in range(10)), return_exceptions=True)
    refused = [r for r in results if isinstance(r, BudgetExceeded)]
    assert peak == 3  # 3 * 30 fits in 100, a fourth could not
    assert len(refused) == 7
    assert budget.spent_tokens == 15
