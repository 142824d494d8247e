"""The one retry layer: tenacity around a backend call.

Only :class:`~aigc.errors.TransientError` is retried (429 rate limits, 5xx/408/409, timeouts, dropped
connections). Everything else, a 429 ``insufficient_quota`` included, surfaces at once. The wait is the
server's ``Retry-After`` when it sent one (capped), else exponential backoff with jitter. Attempts stop at
``max_attempts`` or when the next attempt could not start before the overall deadline, whichever comes
first, and the real error is re-raised. The openai SDK's own retries are off (``max_retries=0``).
"""

from __future__ import annotations

import asyncio
import logging
import random
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import TypeVar

from tenacity import AsyncRetrying, RetryCallState, Retrying, retry_if_exception_type

from .errors import RequestTimeout, TransientError

T = TypeVar("T")
log = logging.getLogger("aigc.retry")


@dataclass(frozen=True)
class RetryPolicy:
    """How hard to try. ``sleep``/``async_sleep``/``clock`` are injectable for tests."""

    max_attempts: int = 6
    deadline: float = 300.0
    initial_backoff: float = 0.5
    multiplier: float = 2.0  # each wait this many times the last
    max_backoff: float = 20.0
    jitter: float = 0.5
    max_retry_after: float = 60.0
    sleep: Callable[[float], None] = field(default=time.sleep, compare=False)
    async_sleep: Callable[[float], Awaitable[None]] = field(default=asyncio.sleep, compare=False)
    clock: Callable[[], float] = field(default=time.monotonic, compare=False)


class _Attempts:
    """Tenacity hooks bound to one call: the wait rule, the stop rule and the attempt counter."""

    def __init__(self, policy: RetryPolicy) -> None:
        self.policy = policy
        self.started = policy.clock()
        self.count = 0

    def remaining(self) -> float:
        return self.policy.deadline - (self.policy.clock() - self.started)

    def wait(self, state: RetryCallState) -> float:
        exc = state.outcome.exception() if state.outcome else None
        retry_after = getattr(exc, "retry_after", None)
        if retry_after is not None and retry_after >= 0:
            # Never earlier than the server asked; a little later spreads concurrent callers apart.
            return retry_after + random.uniform(0, min(0.1 * retry_after, 1.0))
        exponential = self.policy.initial_backoff * self.policy.multiplier ** (state.attempt_number - 1)
        return min(self.policy.max_backoff, exponential) + random.uniform(0, self.policy.jitter)

    def stop(self, state: RetryCallState) -> bool:
        exc = state.outcome.exception() if state.outcome else None
        retry_after = getattr(exc, "retry_after", None)
        if state.attempt_number >= self.policy.max_attempts:
            return True
        if retry_after is not None and retry_after > self.policy.max_retry_after:
            log.warning("server asked to wait %.1fs, more than max_retry_after; giving up", retry_after)
            return True
        return state.upcoming_sleep >= self.remaining()

    def before_sleep(self, state: RetryCallState) -> None:
        exc = state.outcome.exception() if state.outcome else None
        log.info("attempt %d failed (%s); retrying in %.2fs", state.attempt_number, exc, state.upcoming_sleep)

    def attempt_timeout(self, timeout: float | None) -> float | None:
        self.count += 1
        remaining = self.remaining()
        if remaining <= 0:
            raise RequestTimeout(f"the overall deadline of {self.policy.deadline:g}s passed; raise it with deadline=")
        return remaining if timeout is None else min(timeout, remaining)

    def kwargs(self) -> dict:
        return dict(
            stop=self.stop,
            wait=self.wait,
            retry=retry_if_exception_type(TransientError),
            before_sleep=self.before_sleep,
            reraise=True,
        )


def call_with_retry(
    fn: Callable[[float | None], T], policy: RetryPolicy, timeout: float | None = None
) -> tuple[T, int]:
    """Run ``fn(attempt_timeout)`` under the policy; return its result and the number of attempts made.

    The first attempt runs bare (most calls succeed, and building the retry machinery costs more than a
    fast local call); if it fails transiently, tenacity takes over with that failure as its first attempt.
    """
    attempts = _Attempts(policy)
    try:
        return fn(attempts.attempt_timeout(timeout)), 1
    except TransientError as e:
        replay: list[BaseException] = [e]
    except Exception as e:
        e.attempts = 1  # type: ignore[attr-defined]
        raise

    def attempt() -> T:
        if replay:
            raise replay.pop()
        return fn(attempts.attempt_timeout(timeout))

    try:
        result = Retrying(sleep=policy.sleep, **attempts.kwargs())(attempt)
    except Exception as e:
        e.attempts = attempts.count  # type: ignore[attr-defined]
        raise
    return result, attempts.count


async def acall_with_retry(
    fn: Callable[[float | None], Awaitable[T]], policy: RetryPolicy, timeout: float | None = None
) -> tuple[T, int]:
    """Async twin of :func:`call_with_retry`."""
    attempts = _Attempts(policy)
    try:
        return await fn(attempts.attempt_timeout(timeout)), 1
    except TransientError as e:
        replay: list[BaseException] = [e]
    except Exception as e:
        e.attempts = 1  # type: ignore[attr-defined]
        raise

    async def attempt() -> T:
        if replay:
            raise replay.pop()
        return await fn(attempts.attempt_timeout(timeout))

    try:
        result = await AsyncRetrying(sleep=policy.async_sleep, **attempts.kwargs())(attempt)
    except Exception as e:
        e.attempts = attempts.count  # type: ignore[attr-defined]
        raise
    return result, attempts.count
