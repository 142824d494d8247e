"""The rate gate itself: booking, learning the limits from the server, the pace, reporting (see the package)."""

from __future__ import annotations

import asyncio
import bisect
import threading
import time
from collections import Counter, deque
from collections.abc import Awaitable, Callable
from contextvars import ContextVar
from dataclasses import dataclass, field
from typing import Any

from .packing import Waiting
from .policy import (
    DEFAULT_COOLDOWN_S,
    GAP_S,
    GUARD_S,
    HIGH,
    LEAD_QUANTILE,
    LEADS,
    LOW,
    LOWER,
    MAX_BOOST,
    MAX_COOLDOWN_S,
    MAX_GUARD_S,
    MAX_LEAD_S,
    MAX_RAISE,
    MIN_GUARD_S,
    NARROW_S,
    PATIENCE,
    POLL_S,
    PROBE,
    QUIET,
    RAISE,
    RAISE_EVERY,
    RECENT_S,
    SLOW_QUIET,
    STEP,
    TOKEN_GAP_S,
    TRIAL_WAIT_S,
    WIDEN,
)
from .windows import EPS, Limit, Window

__all__ = ["RateGate", "Slot", "PROBE", "LAST_SLOT"]


# The slot the current thread or task took last, so a rejected attempt can give it back.
LAST_SLOT: ContextVar[Slot | None] = ContextVar("aigc_rate_slot", default=None)


@dataclass
class Slot:
    """A booked moment to send one attempt, and its places in the windows."""

    gate: RateGate
    at: float
    places: list[tuple[Window, tuple[float, float]]] = field(default_factory=list)
    epoch: int = 0  # the gate's cooldown count when it was booked: a later 429 voids a slot ahead
    probe: bool = False  # sent before the limits were known: counts against the handful allowed in flight
    trial: bool = False  # a request beyond the plain share: nothing else leaves before its answer
    proof: bool = False  # a trial after one that got in: its answer settles it
    left: bool = False  # its request has left (see :func:`.hooks.leaving`)
    sent: float | None = None  # when its places say it leaves: ``at`` until the HTTP client says otherwise
    let_go: float | None = None  # when its caller was to go on: ``at`` less the gate's lead

    def __post_init__(self) -> None:
        self.sent = self.at if self.sent is None else self.sent
        self.let_go = self.at if self.let_go is None else self.let_go


class RateGate:
    """Requests and tokens per minute for everything one client sends: ``await gate.acquire(tokens)`` in
    async code, ``gate.acquire_blocking(tokens)`` in threads, before every attempt (retries included);
    ``gate.observe(limits)`` with what each answer's headers said."""

    def __init__(self, rpm: float | None = None, tpm: float | None = None, *, learn: bool = False,
                 guard: float = GUARD_S, clock: Callable[[], float] = time.monotonic,
                 sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
                 sleep_blocking: Callable[[float], None] = time.sleep) -> None:
        self.ceiling = (rpm, tpm)
        self.learn = learn
        self._clock, self._sleep, self._sleep_blocking = clock, sleep, sleep_blocking
        self._lock = threading.Lock()
        self._base_guard = self._guard = guard
        self._floor = min(guard, MIN_GUARD_S)
        self._limits: dict[str, Limit] = {}
        self._boost, self._raise = 1.0, RAISE
        # Until a request beyond the plain share has been answered without a 429, it goes alone (TRIAL_WAIT_S).
        self._confirmed = False
        self._trial: Slot | None = None
        self._recent: deque[tuple[float, int]] = deque()  # (time, tokens) of the requests counted
        self._held: deque[tuple[float, str, float]] = deque()  # (time, reason, seconds) of the waits asked
        self._booked: list[float] = []  # moments booked in the last second and ahead, sorted
        self._waiting = Waiting()  # the requests waiting in acquire: who goes first
        self.rpm: float | None = None
        self.tpm: float | None = None
        self._set_limits(rpm, tpm)
        self._raised = float("-inf")
        self._probing, self._silent, self._heard = 0, 0, False
        self._rtt = 0.0  # a moving average of how long an attempt takes, from its slot to its answer
        self._leads: deque[float] = deque(maxlen=LEADS)  # how long the last requests took to reach the wire
        self._lead = 0.0  # the LEAD_QUANTILE of those: how much sooner than its moment a request is let go
        self._cool_until = 0.0
        self._epoch = 0
        self._quiet = 0
        self._step = QUIET  # admissions between narrowings: SLOW_QUIET once late 429s come close together
        self._late_at: int | None = None  # self.acquired at the last 429 at the plain pace
        self.acquired = self.refunds = self.penalties = 0
        self.waited_s = 0.0
        self.waits: Counter[str] = Counter()  # seconds waited, by what held the request back

    # -- the limits in force ----------------------------------------------------------------------------
    def _set_limits(self, rpm: float | None, tpm: float | None) -> None:
        for name, value, tokens in (("requests", rpm, False), ("tokens", tpm, True)):
            current = self._limits.get(name)
            if not value:
                self._limits.pop(name, None)
            elif current is None or current.per_minute != value:
                # a new limit starts from what was already sent: the server counted it
                self._limits[name] = Limit(value, tokens, sent=self._recent)
        self.rpm, self.tpm = rpm, tpm
        for limit in self._limits.values():
            limit.fit(self._guard, self._boost)

    @property
    def active(self) -> bool:
        """False for a gate that holds nothing back (no limits known, none to learn)."""
        return bool(self._limits) or (self.learn and not self._heard and self._silent < PROBE)

    # -- booking --------------------------------------------------------------------------------------
    def reserve(self, tokens: int, waited: float = 0.0, ticket: int | None = None) -> tuple[Slot | None, float]:
        """Count a request of ``tokens`` (prompt + max output) if it fits now: the slot and 0. If not, None
        and the seconds until it would fit; nothing is held meanwhile. Of the requests waiting in
        :meth:`acquire` (``ticket``), those that fill the token window's room best go first. A request that
        has ``waited`` too long (or is larger than a whole share) is booked at the earliest moment it fits
        instead: the slot and the seconds to wait for it."""
        with self._lock:
            now = self._clock()
            if ticket is not None:
                self._waiting.wait(ticket, tokens)
            if not self._limits:
                probe = self.learn and not self._heard and self._silent < PROBE
                if probe and self._probing >= PROBE:
                    return None, POLL_S
                self._probing += probe
                self.acquired += 1
                self._recent.append((now, tokens))
                self._forget(now)
                return Slot(self, now, epoch=self._epoch, probe=probe), 0.0
            if self._trial is not None:  # a request beyond the plain share is out: its answer settles the pace
                if now - self._trial.at < max(TRIAL_WAIT_S, 3 * self._rtt):
                    self._hold(now, "requests", POLL_S)
                    return None, POLL_S
                self._trial = None  # no answer yet (a stalled request): the pace goes on unconfirmed
            soon = now + self._lead  # a request let go now is on the wire this much later: booked for then
            at = max(soon, self._cool_until)
            reason = "429s" if at > soon else ""
            for limit in self._limits.values():
                limit.share.prune(now)
                limit.minute.prune(now)
            ahead, spacing = False, {}  # of each limit: how far apart requests like this one go at its pace
            for name, limit in self._limits.items():
                amount = tokens if limit.tokens else 1
                ahead = ahead or waited >= PATIENCE * limit.share.seconds or amount > limit.share.capacity
                spacing[name] = limit.share.seconds * amount / limit.share.capacity
            bound = max(spacing, key=spacing.__getitem__)  # the limit this request takes the most of
            gap = min(GAP_S if bound == "requests" else TOKEN_GAP_S, min(spacing.values()) / 4)
            for _ in range(16):  # a fit in one window can push past another's; settles in a step or two
                before = at
                for name, limit in self._limits.items():
                    amount = tokens if limit.tokens else 1
                    fit = max(limit.share.earliest(at, amount), limit.minute.earliest(at, amount))
                    if fit > at:
                        at, reason = fit, name
                if (spaced := self._spaced(at, gap)) > at:
                    at = spaced
                if at == before:
                    break
            trial = not self._confirmed and self._boost > 1 and not all(
                limit.share.fits(at, tokens if limit.tokens else 1, limit.base) for limit in self._limits.values())
            # of several waiting, those that fill the token room best go first while the pace is one share a
            # second (risen beyond it, the share is no longer where the server stops us)
            if at <= soon and not ahead and ticket is not None and self._boost == 1:
                at = self._waiting.turn(soon, ticket, self._limits)
                reason = "tokens" if at > soon else reason
            if at > soon and not ahead:
                self._hold(now, reason, at - soon)
                return None, at - soon
            if ticket is not None:
                self._waiting.leave(ticket)
            # A trial proves the server counts over longer windows only if the share was already exceeded
            # without it (an earlier trial got in) within 0.9 of the window: one request that reached the
            # server late, after the trial, can let one trial in, not two, and the clocks differ by a little.
            proof = trial and any(limit.share.load(at, 0.9 * limit.span) > limit.base + EPS
                                  for limit in self._limits.values())
            slot = Slot(self, at, epoch=self._epoch, trial=trial, proof=proof, let_go=at - self._lead)
            if trial:
                self._trial = slot
            for limit in self._limits.values():
                amount = tokens if limit.tokens else 1
                slot.places += [(window, window.add(at, amount)) for window in (limit.share, limit.minute)]
            bisect.insort(self._booked, at)
            del self._booked[:bisect.bisect_left(self._booked, now - 1.0)]
            self.acquired += 1
            self._narrow()
            if at > soon:
                self._hold(now, reason, at - soon)
            self._recent.append((at, tokens))
            self._forget(now)
            return slot, at - soon

    def _spaced(self, t: float, gap: float) -> float:
        """The first moment from ``t`` on that is at least ``gap`` away from every other booking."""
        i = bisect.bisect_left(self._booked, t - gap + EPS)
        while i < len(self._booked) and self._booked[i] < t + gap - EPS:
            t = self._booked[i] + gap
            i += 1
        return t

    def _hold(self, now: float, reason: str, wait: float) -> None:
        """Note that a request was told to wait ``wait`` seconds because of ``reason``."""
        self.waited_s += wait
        self.waits[reason or "requests"] += wait
        self._held.append((now, reason or "requests", wait))
        self._forget(now)

    def _forget(self, now: float) -> None:
        for recent in (self._recent, self._held):
            while recent and recent[0][0] < now - RECENT_S:
                recent.popleft()

    def _ready(self, slot: Slot | None, wait: float) -> bool:
        """Whether a slot from :meth:`reserve` may be used after waiting ``wait``: a slot booked ahead is void
        if a 429 came meanwhile (its holder queues again, paced from the cooldown's end)."""
        if slot is None:
            return False
        if wait > 0 and slot.epoch != self._epoch:
            self._release(slot)
            return False
        return True

    async def acquire(self, tokens: int) -> Slot:
        """Wait (asyncio) until a request of ``tokens`` may be sent, and count it."""
        started, ticket = self._clock(), next(self._waiting.tickets)
        try:
            while True:
                slot, wait = self.reserve(tokens, self._clock() - started, ticket)
                if wait > 0:
                    await self._sleep(wait)
                if self._ready(slot, wait):
                    break
        finally:
            self._leave(ticket)
        LAST_SLOT.set(slot)
        return slot

    def acquire_blocking(self, tokens: int) -> Slot:
        """Wait (this thread) until a request of ``tokens`` may be sent, and count it."""
        started, ticket = self._clock(), next(self._waiting.tickets)
        try:
            while True:
                slot, wait = self.reserve(tokens, self._clock() - started, ticket)
                if wait > 0:
                    self._sleep_blocking(wait)
                if self._ready(slot, wait):
                    break
        finally:
            self._leave(ticket)
        LAST_SLOT.set(slot)
        return slot

    def _leave(self, ticket: int) -> None:
        with self._lock:
            self._waiting.leave(ticket)

    def finished(self, slot: Slot | None) -> None:
        """The attempt of ``slot`` has its answer (or its error): a probe makes room for the next, and a trial
        beyond the plain share answered without a 429 lets the raised pace go."""
        if slot is None:
            return
        with self._lock:
            self._rtt = 0.8 * self._rtt + 0.2 * max(0.0, self._clock() - slot.at)
            if slot.probe:
                slot.probe = False
                self._probing -= 1
            if slot is self._trial:  # answered (or failed after the server counted it) without a 429 since
                self._trial = None
                self._confirmed = self._confirmed or (slot.proof and slot.epoch == self._epoch)

    def left_late(self, slot: Slot) -> None:
        """``slot``'s request leaves now (the HTTP client's request hook). A busy interpreter (many threads,
        one lock) can hold it back for tens of milliseconds after it was counted; the server counts it from
        when it arrives, so its places move as late as it is. Only its first leaving counts (the SDK's other
        requests go by too)."""
        with self._lock:
            if slot.left:
                return
            slot.left = True
            self._move(slot, self._clock())

    def sent(self, slot: Slot) -> None:
        """``slot``'s request is on the wire now, after any wait for a connection and its handshakes (the
        HTTP client's trace): its places count from here, and the next requests are let go as much sooner
        than their moments as requests usually take to get there."""
        with self._lock:
            now = self._clock()
            self._move(slot, now)
            self._leads.append(now - slot.let_go)
            if len(self._leads) >= LEADS // 4:
                self._lead = min(MAX_LEAD_S, sorted(self._leads)[int(LEAD_QUANTILE * len(self._leads))])

    def _move(self, slot: Slot, now: float) -> None:
        """Move ``slot``'s places as much later (or sooner) as it leaves than they said (called holding the
        lock)."""
        late = now - slot.sent
        if late == 0:
            return
        slot.sent = now
        moved = []
        for window, (when, amount) in slot.places:
            window.remove((when, amount))
            moved.append((window, window.add(when + late, amount)))
        slot.places = moved

    def _release(self, slot: Slot) -> None:
        with self._lock:
            for window, entry in slot.places:
                window.remove(entry)
            if slot.places and (i := bisect.bisect_left(self._booked, slot.at)) < len(self._booked) \
                    and self._booked[i] == slot.at:
                del self._booked[i]
            slot.places = []

    # -- what the server said -------------------------------------------------------------------------
    def observe(self, limits: dict[str, float] | None) -> None:
        """An answer came back; ``limits`` is what its ``x-ratelimit-*`` headers said (None: nothing)."""
        with self._lock:
            if not limits or not ("limit_requests" in limits or "limit_tokens" in limits):
                self._silent += 1
                return
            self._heard = True
            if self.learn or self._limits:
                rpm, tpm = (_lower(ceiling, limits.get(f"limit_{unit}"))
                            for ceiling, unit in zip(self.ceiling, ("requests", "tokens"), strict=True))
                if (rpm, tpm) != (self.rpm, self.tpm):
                    self._set_limits(rpm, tpm)
            self._adapt(limits)

    def _adapt(self, limits: dict[str, float]) -> None:
        """Raise or lower the pace from how much of the minute's budget is left (called holding the lock)."""
        left = [limits[f"remaining_{u}"] / limits[f"limit_{u}"] for u in ("requests", "tokens")
                if limits.get(f"limit_{u}") and f"remaining_{u}" in limits]
        if not left or not self._limits:
            return
        now = self._clock()
        if min(left) < LOW and self._boost > 1:
            self._boost = max(1.0, self._boost * LOWER)
        elif min(left) > HIGH and not self.penalties and now - self._raised >= max(RAISE_EVERY, 1.5 * self._rtt):
            # (after any 429 the pace stays at one share: the server counts over short windows)
            self._boost, self._raised = min(MAX_BOOST, self._boost * self._raise), now
            self._raise = min(MAX_RAISE, self._raise + STEP)
        else:
            return
        for limit in self._limits.values():
            limit.fit(self._guard, self._boost)

    def rate_limited(self, retry_after: float | None) -> None:
        """The caller's last attempt was answered 429: it was not counted (its places go back), and everyone
        cools down (:meth:`penalize`)."""
        slot = LAST_SLOT.get()
        self.penalize(retry_after, slot)
        self.refund(slot)
        LAST_SLOT.set(None)

    def refund(self, slot: Slot | None = None) -> None:
        """The attempt never counted at the server (it was refused before being admitted, e.g. a 429 for
        the request itself): give its places back. Without a slot, the caller's last one."""
        if slot is None:
            slot = LAST_SLOT.get()
            LAST_SLOT.set(None)
        if slot is None or slot.gate is not self or not slot.places:
            return
        self._release(slot)
        with self._lock:
            self.refunds += 1

    def penalize(self, retry_after: float | None, slot: Slot | None = None) -> None:
        """A 429 came back for ``slot`` (default: the caller's last): nobody sends again before the server's
        Retry-After has passed, and the pace goes back to one share a second for good. A 429 for a request
        sent before the last one came back is the same news, not a new one."""
        pause = DEFAULT_COOLDOWN_S if retry_after is None else min(max(retry_after, 0.0), MAX_COOLDOWN_S)
        slot = slot or LAST_SLOT.get()
        with self._lock:
            now = self._clock()
            self.penalties += 1
            self._cool_until = max(self._cool_until, now + pause)
            if slot is not None and slot.gate is self and slot.epoch < self._epoch:
                return
            self._epoch += 1  # slots booked ahead before now are void: their holders queue again
            if self._boost > 1:  # the pace had outrun the server's windows: back to one share, for good
                self._boost = 1.0
            else:  # at the plain pace: the server counted a request later than we did (see GUARD_S)
                late = min(WIDEN, retry_after or 0.0)
                if self._late_at is not None and self.acquired - self._late_at < SLOW_QUIET:
                    self._step = SLOW_QUIET  # two within so few: a busier machine, not one stall
                self._late_at = self.acquired
                self._guard = min(MAX_GUARD_S, max(2 * self._guard, self._guard + late))
            self._set_guard(self._guard)

    def _narrow(self) -> None:
        """One more request booked without a 429. Every QUIET of them halve what a 429 added to the margin
        (down to where it started), or below that take NARROW_S off it, down to MIN_GUARD_S; every SLOW_QUIET once
        two such 429s came within SLOW_QUIET (called holding the lock)."""
        self._quiet += 1
        if self._guard <= self._floor + EPS or self._quiet < self._step:
            return
        extra = self._guard - self._base_guard
        if extra > NARROW_S:
            self._set_guard(self._base_guard + extra / 2)
        else:
            self._set_guard(max(self._floor, min(self._guard, self._base_guard) - NARROW_S))

    def _set_guard(self, guard: float) -> None:
        """Widen or narrow every window's margin (called holding the lock)."""
        self._guard, self._quiet = guard, 0
        for limit in self._limits.values():
            limit.fit(guard, self._boost)

    # -- reporting --------------------------------------------------------------------------------------
    @property
    def cooling(self) -> bool:
        return self._clock() < self._cool_until

    def pace(self) -> dict[str, Any]:
        """The current pace (requests and tokens per minute over the last few seconds) and what limits it:
        ``requests``, ``tokens``, ``429s`` (a cooldown), or ``latency/concurrency`` (the gate held little back)."""
        with self._lock:
            now = self._clock()
            recent = [r for r in self._recent if r[0] >= now - RECENT_S]
            held: Counter[str] = Counter()
            for t, reason, wait in self._held:
                if t >= now - RECENT_S:
                    held[reason] += wait
        if not recent:
            return {"rpm": 0.0, "tpm": 0.0, "limited_by": "latency/concurrency"}
        span = max(now - recent[0][0], 1.0)
        busy = sum(held.values()) / len(recent)
        limited_by = held.most_common(1)[0][0] if held and busy > 0.02 else "latency/concurrency"
        return {"rpm": round(len(recent) * 60 / span, 1), "tpm": round(sum(r[1] for r in recent) * 60 / span),
                "limited_by": limited_by}

    def stats(self) -> dict[str, Any]:
        return {"rpm": self.rpm, "tpm": self.tpm, "learned": self._heard and self.learn,
                "boost": round(self._boost, 2), "margin_s": round(self._guard, 4), "lead_s": round(self._lead, 4),
                "waited_s": round(self.waited_s, 3),
                "waited_by": {k: round(v, 3) for k, v in self.waits.items()},
                "rate_limited": self.penalties, "refunded": self.refunds, **{"pace": self.pace()}}


def _lower(ceiling: float | None, heard: float | None) -> float | None:
    if heard is None:
        return ceiling
    return heard if ceiling is None else min(ceiling, heard)
