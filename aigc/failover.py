"""Failing over to the next backend when the first one cannot answer.

A ``fallback`` setting (``fallback = ["local"]``, ``AIGC_FALLBACK=local``, ``--fallback local``, a job's
``[model] fallback``) lists backends, or ``backend/model`` pairs, to try in order. A request moves on only when
its backend's retries ran out on transient failures (429, 5xx, timeouts, dropped connections) or its quota is
exhausted; a 400, 401, 403 or 404 is the caller's to fix and never fails over. A backend that failed over is
skipped for ``fallback_cooldown`` seconds, so the calls after it do not each wait out a dead server's retries.
The result's ``backend`` says who answered and its ``failover`` why.

:class:`Failover` is mixed into :class:`~aigc.engine.Engine`: ``detour`` decides, and the four twins
(``execute``, ``aexecute``, ``stream``, ``astream``) send a request here (the engine's ``_execute`` and its
twins) or on to the fallback engine, which may fail over in turn. A stream fails over only before its first
piece of text reached the caller.
"""

from __future__ import annotations

import threading
import time
from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import dataclass
from typing import Any

from .drive import Sent
from .errors import AigcError, ConfigError, QuotaExhausted, TransientError
from .types import ChatRequest

__all__ = ["FallbackSpec", "parse_fallbacks", "fails_over", "Health", "Failover"]

# What moves a request on to the next backend: everything else is the caller's to fix, or a bug.
FAILS_OVER = (TransientError, QuotaExhausted)


@dataclass(frozen=True)
class FallbackSpec:
    """One entry of the fallback list: a backend name, and optionally the model to use on it."""

    backend: str
    model: str | None = None

    @classmethod
    def parse(cls, text: str, known: list[str]) -> FallbackSpec:
        """``local``, ``openai/gpt-4o-mini`` or ``local/HuggingFaceTB/SmolLM2-360M-Instruct`` (the model may
        hold slashes; the backend is the part before the first)."""
        name, _, model = text.strip().partition("/")
        if name not in known:
            raise ConfigError(f"fallback {text!r}: unknown backend {name!r}; write BACKEND or BACKEND/MODEL with "
                              f"one of {', '.join(known)}")
        return cls(name, model.strip() or None)

    def __str__(self) -> str:
        return f"{self.backend}/{self.model}" if self.model else self.backend


def parse_fallbacks(values: list[str], known: list[str]) -> list[FallbackSpec]:
    return [FallbackSpec.parse(v, known) for v in values if v.strip()]


def fails_over(error: BaseException) -> bool:
    """True for failures another backend may not share: transient ones past their retries, or no quota."""
    return isinstance(error, FAILS_OVER)


class Health:
    """When a backend last failed over; it is skipped until ``cooldown`` seconds have passed."""

    def __init__(self, cooldown: float, clock: Callable[[], float] = time.monotonic) -> None:
        self.cooldown = cooldown
        self.clock = clock
        self._lock = threading.Lock()
        self._since: float | None = None
        self._why = ""

    def trip(self, error: BaseException) -> None:
        with self._lock:
            self._since, self._why = self.clock(), f"{type(error).__name__}: {error}"

    def down(self) -> str | None:
        """Why the backend is being skipped now, or None when it should be tried."""
        with self._lock:
            if self._since is None:
                return None
            ago = self.clock() - self._since
            if ago >= self.cooldown:
                self._since = None
                return None
            return f"failed {ago:.0f}s ago ({self._why})"


class Failover:
    """The engine's routing: it relies on the engine's ``backend``, ``fallback``, ``health`` and its
    ``_execute``, ``_aexecute``, ``_stream`` and ``_astream``."""

    # -- failing over -----------------------------------------------------------------------------------
    def detour(self, error: BaseException | None = None) -> tuple[Any, str] | None:
        """Where a request goes instead, and why: after ``error`` (if it may fail over), or, without one,
        while this backend cools down from an earlier failover. None: it stays here (or fails here)."""
        if self.fallback is None:
            return None
        name, other = self.backend.name, self.fallback.backend.name
        if error is None:
            down = self.health.down()
            return None if down is None else (self.fallback, f"{name} skipped: it {down}; {other} answered")
        if not fails_over(error):
            return None
        self.health.trip(error)
        return self.fallback, f"{name} failed ({type(error).__name__}: {error}); {other} answered"

    @staticmethod
    def handover(request: ChatRequest, fallback: Any) -> ChatRequest:
        """The request as the fallback sends it: its own model, its own output cap settled by its own window."""
        return request.model_copy(update={"model": fallback.model})

    @staticmethod
    def answered(piece: Any, fallback: Any, reason: str) -> Any:
        """A fallback's Sent, marked with who answered and why (other pieces pass unchanged)."""
        if isinstance(piece, Sent):
            piece.failover = reason if piece.failover is None else f"{reason}; then {piece.failover}"
            piece.backend = piece.backend or fallback.backend.name
        return piece

    # -- one request, failing over when it must -------------------------------------------------------
    def execute(self, request: ChatRequest, task: str) -> Sent:
        detour = self.detour()
        if detour is None:
            try:
                return self._execute(request, task)
            except AigcError as e:
                if (detour := self.detour(e)) is None:
                    raise
        fallback, reason = detour
        return self.answered(fallback.execute(self.handover(request, fallback), task), fallback, reason)

    async def aexecute(self, request: ChatRequest, task: str) -> Sent:
        detour = self.detour()
        if detour is None:
            try:
                return await self._aexecute(request, task)
            except AigcError as e:
                if (detour := self.detour(e)) is None:
                    raise
        fallback, reason = detour
        return self.answered(await fallback.aexecute(self.handover(request, fallback), task), fallback, reason)

    def stream(self, request: ChatRequest, task: str) -> Iterator[str | Sent]:
        """Stream one request: text pieces, then the :class:`Sent`. Failures before the first piece are
        retried (and may fail over); once text has reached the caller a failure surfaces instead."""
        detour = self.detour()
        if detour is None:
            shown = False
            try:
                for piece in self._stream(request, task):
                    shown = shown or isinstance(piece, str)
                    yield piece
                return
            except AigcError as e:
                if shown or (detour := self.detour(e)) is None:
                    raise
        fallback, reason = detour
        for piece in fallback.stream(self.handover(request, fallback), task):
            yield self.answered(piece, fallback, reason)

    async def astream(self, request: ChatRequest, task: str) -> AsyncIterator[str | Sent]:
        """Async twin of :meth:`stream`."""
        detour = self.detour()
        if detour is None:
            shown = False
            try:
                async for piece in self._astream(request, task):
                    shown = shown or isinstance(piece, str)
                    yield piece
                return
            except AigcError as e:
                if shown or (detour := self.detour(e)) is None:
                    raise
        fallback, reason = detour
        async for piece in fallback.astream(self.handover(request, fallback), task):
            yield self.answered(piece, fallback, reason)
