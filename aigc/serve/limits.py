"""Admission: the bounded request queue of the whole server, and each key's rate and concurrency limits.

:class:`Admission` counts a request the moment it arrives, before its body is tokenized, and turns it away
with 503 and ``retry-after-ms`` when ``max_waiting`` requests already wait behind ``max_running`` ones.
:class:`KeyLimits` keeps each key's requests and tokens of the last 60 seconds and its requests in flight,
and answers 429 ``rate_limit_exceeded`` with the wait that would let the request through. Both live in one
server process; with several workers each keeps its own books (budgets, in SQLite, are shared).
"""

from __future__ import annotations

import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field

from .errors import ApiError
from .keys import KeyRecord

__all__ = ["Admission", "KeyLimits", "Slot"]

WINDOW_S = 60.0


class Slot:
    """A place taken by one request; ``release()`` gives it back (once)."""

    def __init__(self, on_release: Callable[[], None]) -> None:
        self._on_release: Callable[[], None] | None = on_release

    def release(self) -> None:
        if self._on_release is not None:
            self._on_release, release = None, self._on_release
            release()


class Admission:
    """At most ``max_running + max_waiting`` requests in the server; the rest get 503 at once."""

    def __init__(self, max_running: int, max_waiting: int, retry_after_s: float = 1.0) -> None:
        self.max_running = max_running
        self.max_waiting = max_waiting
        self.retry_after_s = retry_after_s
        self.inflight = 0

    @property
    def limit(self) -> int:
        return self.max_running + self.max_waiting

    def enter(self) -> Slot:
        if self.inflight >= self.limit:
            raise ApiError(503, f"The server is busy: {self.inflight} requests are running or queued. "
                           "Retry shortly.", type="server_error", code="queue_full", retry_after=self.retry_after_s)
        self.inflight += 1

        def leave() -> None:
            self.inflight -= 1

        return Slot(leave)


@dataclass
class _Books:
    seen: deque[tuple[float, int]] = field(default_factory=deque)  # (time, tokens)
    tokens: int = 0
    inflight: int = 0


class KeyLimits:
    """Per-key requests per minute, tokens per minute (prompt + max output) and requests in flight."""

    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self._clock = clock
        self._books: dict[int, _Books] = {}

    def enter(self, key: KeyRecord, tokens: int) -> Slot:
        books = self._books.setdefault(key.id, _Books())
        now = self._clock()
        while books.seen and books.seen[0][0] <= now - WINDOW_S:
            books.tokens -= books.seen.popleft()[1]
        if key.max_parallel is not None and books.inflight >= key.max_parallel:
            raise _limited(f"key {key.name!r} may have {key.max_parallel} requests in flight", 1.0)
        if key.rpm is not None and len(books.seen) >= key.rpm:
            wait = books.seen[len(books.seen) - key.rpm][0] + WINDOW_S - now
            raise _limited(f"key {key.name!r} may send {key.rpm} requests per minute", wait)
        if key.tpm is not None and books.tokens + tokens > key.tpm:
            if tokens > key.tpm:
                raise ApiError(429, f"This request could use {tokens} tokens, more than key {key.name!r}'s "
                               f"{key.tpm} tokens per minute; lower max_tokens or shorten the messages.",
                               type="tokens", code="rate_limit_exceeded", should_retry=False)
            used, wait = books.tokens, 0.0
            for t, n in books.seen:
                used -= n
                wait = t + WINDOW_S - now
                if used + tokens <= key.tpm:
                    break
            raise _limited(f"key {key.name!r} may use {key.tpm} tokens per minute", wait)
        books.seen.append((now, tokens))
        books.tokens += tokens
        books.inflight += 1

        def leave() -> None:
            books.inflight -= 1

        return Slot(leave)


def _limited(what: str, wait: float) -> ApiError:
    wait = max(wait, 0.001)
    return ApiError(429, f"Rate limit reached: {what}. Please try again in {wait:.3g}s.", type="requests",
                    code="rate_limit_exceeded", retry_after=wait)
