"""Spend caps that hold before money is spent, not after.

Before each request the caller reserves its worst case (prompt tokens plus the output limit, and that
many tokens' price). If what is already spent, plus what requests in flight have reserved, plus this
reservation could pass a cap, :class:`BudgetExceeded` is raised and the request is never sent. Afterwards
the caller commits what was actually used, or releases the reservation if nothing was billed::

    reservation = budget.reserve(worst_tokens, worst_cost)
    try:
        completion = backend.generate(request)
        budget.commit(reservation, completion.usage, cost)
    finally:
        budget.release(reservation)      # no-op once committed

Unknown prices: with a money cap set, a request whose cost cannot be priced (``cost_usd=None``) is
refused, because the cap could not be guaranteed; ``allow_unknown_prices=True`` lets such requests through
(the token cap still applies) and counts them in ``unpriced_requests``.

One Budget is shared by a client and all its workers, threads or asyncio tasks alike: every method holds
a plain lock for a few microseconds and never awaits.
"""

from __future__ import annotations

import itertools
import math
import threading
from dataclasses import dataclass

from .errors import BudgetExceeded
from .types import Usage

__all__ = ["Budget", "Reservation"]

# Float sums of many tiny prices drift by far less than this; a request that exactly fills a cap passes.
_USD_SLACK = 1e-9


@dataclass(frozen=True, slots=True)
class Reservation:
    """A request's worst case, held against the budget until committed or released."""

    id: int
    tokens: int
    cost_usd: float | None


def _usd(amount: float) -> str:
    """Dollars with cents, and more digits only where tiny per-request prices need them."""
    if amount >= 1:
        return f"${amount:,.2f}"
    whole, cents = f"{amount:.6f}".rstrip("0").split(".")
    return f"${whole}.{cents.ljust(2, '0')}"


class Budget:
    """A token cap and/or a money cap for one run. ``None`` means no cap of that kind."""

    def __init__(
        self,
        max_total_tokens: int | None = None,
        max_cost_usd: float | None = None,
        *,
        allow_unknown_prices: bool = False,
        max_tokens: int | None = None,
    ) -> None:
        if max_total_tokens is None:
            max_total_tokens = max_tokens  # its earlier name
        if max_total_tokens is not None and max_total_tokens < 0:
            raise ValueError("max_total_tokens must be zero or more")
        if max_cost_usd is not None and max_cost_usd < 0:
            raise ValueError("max_cost_usd must be zero or more")
        self.max_total_tokens = max_total_tokens
        self.max_cost_usd = max_cost_usd
        self.allow_unknown_prices = allow_unknown_prices
        self._lock = threading.Lock()
        self._ids = itertools.count(1)
        self._open: dict[int, Reservation] = {}
        self._spent_tokens = 0
        self._spent_usd = 0.0
        self._unpriced = 0

    @classmethod
    def unlimited(cls) -> Budget:
        """No caps: everything is allowed and still counted."""
        return cls(allow_unknown_prices=True)

    # -- the three operations -------------------------------------------------------------------------

    def reserve(self, tokens: int, cost_usd: float | None) -> Reservation:
        """Hold ``tokens`` and ``cost_usd`` (the request's worst case) or raise :class:`BudgetExceeded`."""
        if tokens < 0 or (cost_usd is not None and cost_usd < 0):
            raise ValueError("a reservation cannot be negative")
        with self._lock:
            if self.max_total_tokens is not None:
                left = self.max_total_tokens - self._spent_tokens - self._reserved_tokens()
                if tokens > left:
                    raise BudgetExceeded(
                        f"this request could use up to {tokens:,} tokens but only {max(left, 0):,} of the "
                        f"{self.max_total_tokens:,}-token cap are left ({self._spent_tokens:,} spent, "
                        f"{self._reserved_tokens():,} held by requests in flight); nothing was sent. "
                        "Raise the token budget (--max-total-tokens, or Budget(max_total_tokens=...)), or "
                        "shorten the input or lower --max-tokens",
                        needed_tokens=tokens,
                        needed_usd=cost_usd,
                    )
            if self.max_cost_usd is not None:
                if cost_usd is None and not self.allow_unknown_prices:
                    raise BudgetExceeded(
                        f"the price of this model is unknown, so the {_usd(self.max_cost_usd)} cap could "
                        "not be guaranteed; nothing was sent. Add the model's price to the models file, "
                        "or drop --max-cost and cap tokens with --max-total-tokens instead",
                        needed_tokens=tokens,
                        needed_usd=None,
                    )
                if cost_usd is not None:
                    left_usd = self.max_cost_usd - self._spent_usd - self._reserved_usd()
                    if cost_usd > left_usd + _USD_SLACK:
                        raise BudgetExceeded(
                            f"this request could cost up to {_usd(cost_usd)} but only "
                            f"{_usd(max(left_usd, 0.0))} of the {_usd(self.max_cost_usd)} cap is left "
                            f"({_usd(self._spent_usd)} spent, {_usd(self._reserved_usd())} held by requests "
                            "in flight); nothing was sent. Raise the cap with --max-cost, or shorten the "
                            "input or the output limit",
                            needed_tokens=tokens,
                            needed_usd=cost_usd,
                        )
            reservation = Reservation(next(self._ids), tokens, cost_usd)
            self._open[reservation.id] = reservation
            return reservation

    def commit(self, reservation: Reservation, usage_tokens: int | Usage, cost_usd: float | None) -> None:
        """Charge what the request actually used and free its reservation.

        The actual amount is charged even when it is above the reservation (an estimate was low); later
        reservations then see less left. An unknown actual cost (``None``) is charged at the reserved
        worst case, so the money cap stays honest.
        """
        tokens = usage_tokens.total_tokens if isinstance(usage_tokens, Usage) else usage_tokens
        with self._lock:
            if self._open.pop(reservation.id, None) is None:
                raise ValueError(f"reservation {reservation.id} was already committed or released")
            self._spent_tokens += tokens
            charged = cost_usd if cost_usd is not None else reservation.cost_usd
            if charged is None:
                self._unpriced += 1
            else:
                self._spent_usd += charged

    def release(self, reservation: Reservation) -> None:
        """Free a reservation whose request was not billed. Releasing a settled one does nothing."""
        with self._lock:
            self._open.pop(reservation.id, None)

    # -- where things stand ---------------------------------------------------------------------------

    def _reserved_tokens(self) -> int:
        return sum(r.tokens for r in self._open.values())

    def _reserved_usd(self) -> float:
        return math.fsum(r.cost_usd for r in self._open.values() if r.cost_usd is not None)

    @property
    def max_tokens(self) -> int | None:
        """The token cap under its earlier name."""
        return self.max_total_tokens

    @property
    def spent_tokens(self) -> int:
        return self._spent_tokens

    @property
    def spent_usd(self) -> float:
        """Money charged so far; excludes requests whose price was unknown (see ``unpriced_requests``)."""
        return self._spent_usd

    @property
    def unpriced_requests(self) -> int:
        return self._unpriced

    @property
    def reserved_tokens(self) -> int:
        with self._lock:
            return self._reserved_tokens()

    @property
    def reserved_usd(self) -> float:
        with self._lock:
            return self._reserved_usd()

    @property
    def in_flight(self) -> int:
        """Reservations not yet committed or released."""
        return len(self._open)

    @property
    def remaining_tokens(self) -> int | None:
        """Tokens a new reservation could still take; None without a token cap."""
        if self.max_total_tokens is None:
            return None
        with self._lock:
            return max(self.max_total_tokens - self._spent_tokens - self._reserved_tokens(), 0)

    @property
    def remaining_usd(self) -> float | None:
        """Money a new reservation could still take; None without a money cap."""
        if self.max_cost_usd is None:
            return None
        with self._lock:
            return max(self.max_cost_usd - self._spent_usd - self._reserved_usd(), 0.0)

    def __repr__(self) -> str:
        with self._lock:
            tokens = f"{self._spent_tokens}" + (f"/{self.max_total_tokens}" if self.max_total_tokens is not None else "")
            usd = f"{self._spent_usd:.6f}" + (f"/{self.max_cost_usd}" if self.max_cost_usd is not None else "")
            return (
                f"Budget(tokens={tokens}, usd={usd}, reserved_tokens={self._reserved_tokens()}, "
                f"reserved_usd={self._reserved_usd():.6f}, in_flight={len(self._open)})"
            )
