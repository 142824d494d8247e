"""The books a rate gate keeps: sliding windows that take bookings in any order, and one limit's windows."""

from __future__ import annotations

import bisect
from collections.abc import Iterable
from dataclasses import InitVar, dataclass, field

__all__ = ["Window", "Limit", "share"]

EPS = 1e-9


def share(per_minute: float) -> tuple[float, float]:
    """(window seconds, capacity) enforcing a per-minute limit the way the server does."""
    return (1.0, per_minute / 60) if per_minute >= 60 else (60 / per_minute, 1.0)


class Window:
    """A sliding window: at most ``capacity`` units admitted in any ``seconds``. Bookings may lie in the
    future and need not come in order: a small request can take a gap before a large one booked later."""

    def __init__(self, capacity: float, seconds: float, *, exact: bool = True) -> None:
        self.capacity = capacity
        self.seconds = seconds
        self.exact = exact  # False: a cheaper, stricter check (all bookings after t - seconds count)
        self._times: list[float] = []  # sorted
        self._amounts: list[float] = []

    def prune(self, now: float) -> None:
        """Forget bookings that no window from ``now`` on can contain."""
        cut = bisect.bisect_right(self._times, now - self.seconds)
        if cut:
            del self._times[:cut], self._amounts[:cut]

    def load(self, x: float, seconds: float | None = None) -> float:
        """Units booked in (x - seconds, x] (by default the window's own seconds)."""
        lo = bisect.bisect_right(self._times, x - (self.seconds if seconds is None else seconds) + EPS)
        return sum(self._amounts[lo:bisect.bisect_right(self._times, x + EPS)])

    def peak(self, t: float) -> float:
        """The most booked in any window that a booking at ``t`` would fall in."""
        if not self.exact:
            return sum(self._amounts[bisect.bisect_right(self._times, t - self.seconds + EPS):])
        lo = bisect.bisect_right(self._times, t + EPS)  # the load can only peak at t or where a later booking enters
        hi = bisect.bisect_left(self._times, t + self.seconds - EPS)
        return max([self.load(t), *(self.load(x) for x in self._times[lo:hi])])

    def fits(self, t: float, amount: float, capacity: float | None = None) -> bool:
        """Whether ``amount`` booked at ``t`` keeps every window within capacity (or ``capacity``). A request
        larger than the whole capacity fits into an empty window, as the server allows."""
        peak = self.peak(t)
        return peak + amount <= (self.capacity if capacity is None else capacity) + EPS or peak == 0

    def room(self, t: float) -> float:
        """How much more a booking at ``t`` may take."""
        return max(0.0, self.capacity - self.peak(t))

    def grows(self, t: float) -> float:
        """The next moment after ``t`` at which a booking leaves the window (``t`` + its length if none)."""
        i = bisect.bisect_right(self._times, t - self.seconds + EPS)
        return self._times[i] + self.seconds if i < len(self._times) else t + self.seconds

    def earliest(self, t0: float, amount: float) -> float:
        """The earliest moment from ``t0`` on at which ``amount`` fits."""
        if self.fits(t0, amount):
            return t0
        for t in sorted({b + self.seconds for b in self._times if b + self.seconds > t0}):
            if self.fits(t, amount):
                return t
        return max(t0, self._times[-1] + self.seconds)

    def wait(self, now: float, amount: float) -> float:
        """Seconds after ``now`` until ``amount`` fits (0 if it fits then)."""
        return self.earliest(now, amount) - now

    def add(self, when: float, amount: float) -> tuple[float, float]:
        i = bisect.bisect_right(self._times, when)
        self._times.insert(i, when)
        self._amounts.insert(i, amount)
        return (when, amount)

    def remove(self, entry: tuple[float, float]) -> None:
        """Give back a place taken by :meth:`add` (if it has not left the window already)."""
        lo = bisect.bisect_left(self._times, entry[0])
        for i in range(lo, len(self._times)):
            if self._times[i] != entry[0]:
                return
            if self._amounts[i] == entry[1]:
                del self._times[i], self._amounts[i]
                return



@dataclass
class Limit:
    """One limit (requests or tokens): its one-second share and its whole minute."""

    per_minute: float
    tokens: bool
    sent: InitVar[Iterable[tuple[float, int]]] = ()  # (time, tokens) of requests already sent: counted
    share: Window = field(init=False)
    minute: Window = field(init=False)
    span: float = field(init=False)
    base: float = field(init=False)

    def __post_init__(self, sent: Iterable[tuple[float, int]]) -> None:
        self.span, self.base = share(self.per_minute)
        self.share = Window(self.base, self.span)
        self.minute = Window(self.per_minute, 60.0)
        for when, tokens in sent:
            self.share.add(when, tokens if self.tokens else 1)
            self.minute.add(when, tokens if self.tokens else 1)

    def fit(self, guard: float, boost: float) -> None:
        self.share.seconds, self.share.capacity = self.span + guard, self.base * boost
        self.minute.seconds = 60.0 + guard


