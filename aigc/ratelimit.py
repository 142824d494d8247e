"""One rate gate per client (and per batch run): requests and tokens per minute, and a common cooldown.

OpenAI states limits per minute but enforces them over short windows: 1,200 requests per minute means at
most 20 in any one second, and a token limit counts each request's prompt tokens plus its maximum output
tokens when it is admitted. The gate keeps the same books as the server, a sliding one-second window
(or one request per ``60/rpm`` seconds for limits under 60 a minute), so a request is only sent when the
server will accept it.

Within those windows, requests are also paced, one every ``window / n`` seconds where ``n`` requests of
this size fit in a window, so they leave one by one rather than in bursts (a burst reaches the server late
enough for its tail to be counted in the next window). Requests take their turn in order (first come,
first served), so a large request is not starved by small ones. After a 429 every caller waits out the
server's Retry-After together, instead of each one discovering the limit on its own.

The gate schedules rather than polls: under a plain lock, :meth:`RateGate.reserve` finds the earliest moment
the request fits, books it there, and returns how long to wait. The caller then sleeps — ``time.sleep`` in
threads, ``asyncio.sleep`` in tasks — so one gate serves sync code, async code and threads alike.
"""

from __future__ import annotations

import asyncio
import threading
import time
from collections import deque
from collections.abc import Awaitable, Callable
from contextvars import ContextVar
from dataclasses import dataclass, field

__all__ = ["RateGate", "Window", "Slot"]

# Margin for the time between our clock and the server's: a request admitted here at t reaches the
# server's books a few milliseconds later, and those delays vary.
GUARD_S = 0.02
# Pacing runs a little faster than the windows allow, so in steady state the windows decide and pacing
# only spreads requests out.
PACE = 0.8
# How many paced slots a late arrival may make up for, back to back (the windows still apply).
CATCH_UP = 4
# After a 429 without a Retry-After, everyone waits this long.
DEFAULT_COOLDOWN_S = 1.0
MAX_COOLDOWN_S = 60.0

# The slot the current thread or task took last, so a rejected attempt can give it back.
_LAST: ContextVar[Slot | None] = ContextVar("aigc_rate_slot", default=None)


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
        """Seconds after ``now`` until ``amount`` fits (0 if it fits then). A request larger than the whole
        capacity fits into an empty window, as the server allows."""
        while self._admitted and self._admitted[0][0] <= now - self.seconds:
            self._used -= self._admitted.popleft()[1]
        if not self._admitted or self._used + amount <= self.capacity:
            return 0.0
        used = self._used
        for t, n in self._admitted:  # oldest first: when will enough have left the window?
            used -= n
            if used + amount <= self.capacity:
                return max(0.0, t + self.seconds - now)
        return max(0.0, self._admitted[-1][0] + self.seconds - now)

    def add(self, when: float, amount: float) -> tuple[float, float]:
        entry = (when, amount)
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


@dataclass
class Slot:
    """A booked moment to send one attempt, and its places in the windows."""

    gate: RateGate
    at: float
    places: list[tuple[Window, tuple[float, float]]] = field(default_factory=list)
    epoch: int = 0  # the gate's cooldown count when it was booked: a later 429 voids it


class RateGate:
    """Requests and tokens per minute for everything one client sends: ``await gate.acquire(tokens)`` in
    async code, ``gate.acquire_blocking(tokens)`` in threads, before every attempt (retries included)."""

    def __init__(self, rpm: float | None = None, tpm: float | None = None, *, guard: float = GUARD_S,
                 clock: Callable[[], float] = time.monotonic,
                 sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
                 sleep_blocking: Callable[[float], None] = time.sleep) -> None:
        self.rpm, self.tpm = rpm, tpm
        self._windows: list[tuple[Window, bool]] = []  # (window, counts tokens)
        for limit, tokens in ((rpm, False), (tpm, True)):
            if limit:
                seconds, capacity = share(limit)
                self._windows.append((Window(capacity, seconds + guard), tokens))
        self._clock, self._sleep, self._sleep_blocking = clock, sleep, sleep_blocking
        self._lock = threading.Lock()
        self._next = 0.0  # pacing: when the next request may leave
        self._last = 0.0  # the latest booked moment: turns are taken in order
        self._cool_until = 0.0
        self._epoch = 0
        self.acquired = 0
        self.refunds = 0
        self.penalties = 0
        self.waited_s = 0.0

    # -- booking --------------------------------------------------------------------------------------
    def reserve(self, tokens: int) -> tuple[Slot, float]:
        """Book the earliest moment a request of ``tokens`` (prompt + max output) may be sent; the slot and
        the seconds to wait for it."""
        with self._lock:
            now = self._clock()
            at = max(now, self._cool_until, self._next, self._last)
            for _ in range(8):  # a fit in one window can push past another's; settles in a step or two
                later = max((w.wait(at, tokens if t else 1) for w, t in self._windows), default=0.0)
                if later <= 0:
                    break
                at += later
            slot = Slot(self, at, epoch=self._epoch)
            spacing = 0.0
            for window, counts_tokens in self._windows:
                amount = tokens if counts_tokens else 1
                slot.places.append((window, window.add(at, amount)))
                spacing = max(spacing, PACE * window.seconds / max(1, int(window.capacity // amount)))
            # Keep to the schedule: a late arrival does not push every later request back; after a real
            # pause the schedule restarts from now rather than allowing a burst.
            self._next = (self._next if at - self._next < CATCH_UP * spacing else at) + spacing
            self._last = at
            self.acquired += 1
            self.waited_s += at - now
            return slot, at - now

    def _check(self, slot: Slot, tokens: int) -> tuple[Slot, float]:
        """After a wait: the slot, or a new one if a 429 voided it (everyone is paced again after the
        cooldown rather than all going at once), and the seconds still to wait."""
        if slot.epoch != self._epoch:
            self._release(slot)
            return self.reserve(tokens)
        return slot, slot.at - self._clock()

    async def acquire(self, tokens: int) -> Slot:
        """Wait (asyncio) until a request of ``tokens`` may be sent, and count it."""
        slot, wait = self.reserve(tokens)
        while wait > 0:
            await self._sleep(wait)
            slot, wait = self._check(slot, tokens)
        _LAST.set(slot)
        return slot

    def acquire_blocking(self, tokens: int) -> Slot:
        """Wait (this thread) until a request of ``tokens`` may be sent, and count it."""
        slot, wait = self.reserve(tokens)
        while wait > 0:
            self._sleep_blocking(wait)
            slot, wait = self._check(slot, tokens)
        _LAST.set(slot)
        return slot

    def _release(self, slot: Slot) -> None:
        with self._lock:
            for window, entry in slot.places:
                window.remove(entry)
            slot.places = []

    # -- what the server said -------------------------------------------------------------------------
    def refund(self, slot: Slot | None = None) -> None:
        """The attempt never counted at the server (it was refused before being admitted, e.g. a 429 for
        the request itself): give its places back. Without a slot, the caller's last one."""
        if slot is None:
            slot = _LAST.get()
            _LAST.set(None)
        if slot is None or slot.gate is not self or not slot.places:
            return
        self._release(slot)
        with self._lock:
            self.refunds += 1

    def penalize(self, retry_after: float | None) -> None:
        """A 429 came back: nobody sends again before the server's Retry-After has passed."""
        pause = DEFAULT_COOLDOWN_S if retry_after is None else min(max(retry_after, 0.0), MAX_COOLDOWN_S)
        with self._lock:
            self.penalties += 1
            self._cool_until = max(self._cool_until, self._clock() + pause)
            # Slots booked before now are void: their holders book again, paced from the cooldown's end.
            self._epoch += 1
            self._next = self._last = self._cool_until

    @property
    def cooling(self) -> bool:
        return self._clock() < self._cool_until

    def stats(self) -> dict[str, float | int | None]:
        return {"rpm": self.rpm, "tpm": self.tpm, "waited_s": round(self.waited_s, 3),
                "rate_limited": self.penalties, "refunded": self.refunds}
