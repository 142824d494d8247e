"""One rate gate shared by every worker of a run: requests and tokens per minute, and a common cooldown.

OpenAI states limits per minute but enforces them over short windows: 1,200 requests per minute means at
most 20 in any one second, and a token limit counts each request's prompt tokens plus its maximum output
tokens when it is admitted. The gate keeps the same books as the server, a sliding one-second window
(or one request per ``60/rpm`` seconds for limits under 60 a minute), so a request is only sent when the
server will accept it. A leaky bucket sized to the per-minute rate would let a full second's share through
at once and then keep leaking, which a one-second window on the server answers with 429s.

Within those windows, requests are also paced, one every ``window / n`` seconds where ``n`` requests of
this size fit in a window (1/20 s for 20 a second; 1/19 s for 128-token requests under 2,500 tokens a
second), so they leave one by one rather than in bursts: a burst leaves the event loop sending many
requests at once, the later ones reach the server late enough to be counted in the next window, and a
full window answers them with a 429. Requests wait their turn in order (first come, first served), so a large request is not starved by
small ones. After a 429 every worker waits out the server's Retry-After together, instead of each one
discovering the limit on its own. The engine calls :meth:`RateGate.acquire` before every attempt,
retries included, and :meth:`RateGate.penalize` after every 429.
"""

from __future__ import annotations

import asyncio
import time
from collections import deque
from collections.abc import Awaitable, Callable
from contextvars import ContextVar
from typing import Any

__all__ = ["RateGate", "Window"]

# The places the current task's last attempt took in the windows, so that attempt can give them back.
_TICKET: ContextVar[tuple[Any, list[tuple[Window, tuple[float, float]]]] | None] = \
    ContextVar("aigc_rate_ticket", default=None)

# Margin for the time between our clock and the server's: a request admitted here at t reaches the
# server's books a few milliseconds later, and those delays vary.
GUARD_S = 0.02
# Pacing runs a little faster than the windows allow, so in steady state the windows decide (a place
# given back by a failed attempt is reused at once) and pacing only spreads requests out.
PACE = 0.8
# How many paced slots a late wake-up may make up for, back to back (the windows still apply).
CATCH_UP = 4
# After a 429 without a Retry-After, everyone waits this long.
DEFAULT_COOLDOWN_S = 1.0
MAX_COOLDOWN_S = 60.0


def share(per_minute: float) -> tuple[float, float]:
    """(window seconds, capacity) enforcing a per-minute limit the way the server does."""
    return (1.0, per_minute / 60) if per_minute >= 60 else (60 / per_minute, 1.0)


class Window:
    """A sliding window: at most ``capacity`` units admitted in any ``seconds``."""

    def __init__(self, capacity: float, seconds: float) -> None:
        self.capacity = capacity
        self.seconds = seconds
        self._admitted: deque[tuple[float, float]] = deque()
        self._used = 0.0

    def wait(self, now: float, amount: float) -> float:
        """Seconds until ``amount`` fits (0 if it fits now). A request larger than the whole capacity fits
        into an empty window, as the server allows."""
        while self._admitted and self._admitted[0][0] <= now - self.seconds:
            self._used -= self._admitted.popleft()[1]
        if not self._admitted or self._used + amount <= self.capacity:
            return 0.0
        used = self._used
        for t, n in self._admitted:  # oldest first: when will enough have left the window?
            used -= n
            if used + amount <= self.capacity:
                return t + self.seconds - now
        return self._admitted[-1][0] + self.seconds - now

    def add(self, now: float, amount: float) -> tuple[float, float]:
        entry = (now, amount)
        self._admitted.append(entry)
        self._used += amount
        return entry

    def remove(self, entry: tuple[float, float]) -> None:
        """Give back a place taken by :meth:`add` (if it has not left the window already)."""
        try:
            self._admitted.remove(entry)
        except ValueError:
            return
        self._used -= entry[1]


class RateGate:
    """The ``engine.gate`` of a batch run: ``await acquire(tokens)`` before each attempt."""

    def __init__(self, rpm: float | None = None, tpm: float | None = None, *, guard: float = GUARD_S,
                 clock: Callable[[], float] = time.monotonic,
                 sleep: Callable[[float], Awaitable[None]] = asyncio.sleep) -> None:
        self.rpm, self.tpm = rpm, tpm
        self._windows: list[tuple[Window, bool]] = []  # (window, counts tokens)
        for limit, tokens in ((rpm, False), (tpm, True)):
            if limit:
                seconds, capacity = share(limit)
                self._windows.append((Window(capacity, seconds + guard), tokens))
        self._next = 0.0  # pacing: when the next request may leave
        self._clock, self._sleep = clock, sleep
        self._lock: asyncio.Lock | None = None
        self._cool_until = 0.0
        self.acquired = 0
        self.refunds = 0
        self.penalties = 0
        self.waited_s = 0.0

    async def acquire(self, tokens: int) -> None:
        """Wait until a request of ``tokens`` (prompt + max output) may be sent, and count it."""
        if self._lock is None:
            self._lock = asyncio.Lock()
        async with self._lock:
            while True:
                now = self._clock()
                full = max((w.wait(now, tokens if t else 1) for w, t in self._windows), default=0.0)
                wait = max(self._cool_until - now, full, self._next - now)
                if wait <= 0:
                    break
                self.waited_s += wait
                await self._sleep(wait)
            spacing, taken = 0.0, []
            for window, counts_tokens in self._windows:
                amount = tokens if counts_tokens else 1
                taken.append((window, window.add(now, amount)))
                spacing = max(spacing, PACE * window.seconds / max(1, int(window.capacity // amount)))
            # Keep to the schedule: a late wake-up (a busy event loop) does not push every later request
            # back; after a real pause the schedule restarts from now rather than allowing a burst.
            self._next = (self._next if now - self._next < CATCH_UP * spacing else now) + spacing
            self.acquired += 1
            _TICKET.set((self, taken))

    def refund(self) -> None:
        """The current task's last attempt never counted at the server (a 5xx answer, a connection
        dropped before any answer): give its places in the windows back."""
        ticket = _TICKET.get()
        if ticket is None or ticket[0] is not self:
            return
        _TICKET.set(None)
        for window, entry in ticket[1]:
            window.remove(entry)
        self.refunds += 1

    def penalize(self, retry_after: float | None) -> None:
        """A 429 came back: nobody sends again before the server's Retry-After has passed."""
        self.penalties += 1
        pause = DEFAULT_COOLDOWN_S if retry_after is None else min(max(retry_after, 0.0), MAX_COOLDOWN_S)
        self._cool_until = max(self._cool_until, self._clock() + pause)

    @property
    def cooling(self) -> bool:
        return self._clock() < self._cool_until
