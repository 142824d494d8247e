"""Sending requests honestly: the cache, the context check, budget reservation, the rate gate, the retry
layer, usage and cost, the ledger.

Every request a task makes goes through :meth:`Engine.execute` (or its async and streaming twins), so these
rules hold for every task, backend and path alike:

1. A request the response cache can answer is not sent (when a cache is on).
2. Its output cap is settled (its own, else the one default, bounded by the model and its window), and the
   prompt is checked against the context window before anything is sent.
3. The worst case (prompt + output cap, and its price) is reserved from every budget; a request that could
   exceed one raises :class:`~aigc.errors.BudgetExceeded` and is never sent.
4. Every attempt, retries included, waits its turn at the rate gate; a 429 makes every caller cool down.
5. The backend call runs under the single retry layer.
6. The actual usage is charged, priced and recorded in the ledger (no prompts unless opted in).

7. When retries run out on transient failures or the quota is exhausted, the request fails over to the
   next engine in the fallback chain (see :mod:`aigc.failover`).

The decisions live in :class:`EngineBase`; :class:`Engine`'s sync and async methods only do I/O. Besides
chat requests the engine runs the probes flows may ask for: a moderation check and label scoring.
"""

from __future__ import annotations

import asyncio
import copy
import dataclasses
import itertools
import time
from collections.abc import AsyncIterator, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from .accounting import Accounting, price
from .drive import FlowDriver, Sent, gather_caught
from .errors import AigcError, BackendError, ContextLengthExceeded, RateLimited
from .failover import Failover, Health
from .probes import ProbeRunner
from .retry import RetryPolicy, acall_with_retry, call_with_retry
from .types import DEFAULT_MAX_OUTPUT_TOKENS, ChatRequest, Completion, StreamDelta, Usage

if TYPE_CHECKING:
    from .backends.base import Backend
    from .config import Settings
    from .models import ModelInfo


@dataclass
class Ticket:
    """One admitted request: what will be sent, what it holds in the budgets, what it weighs at the gate."""

    request: ChatRequest
    task: str
    held: list = field(default_factory=list)
    tokens: int = 0  # prompt + output cap, for a token gate (0 when nothing needed counting)
    asked: ChatRequest | None = None  # the request as the flow asked it (before its cap was settled): the cache key
    started: float = field(default_factory=time.perf_counter)
    window_limited: bool = False  # the output cap is what the prompt left of the window, less than asked


class EngineBase:
    """Every decision about a request, shared by the sync and async paths."""

    def __init__(self, backend: Backend, settings: Settings, policy: RetryPolicy, accounting: Accounting, *,
                 concurrency: int | None = None, fallback: Engine | None = None, moderator: Any = None) -> None:
        self.backend = backend
        self.settings = settings
        self.policy = policy
        self.accounting = accounting
        # None: 4, or fewer when the backend's server runs fewer at once (a local server: 1).
        self.concurrency = max(1, concurrency or getattr(backend, "max_parallel", None) or 4)
        self.fallback = fallback  # the engine that takes over when this one cannot answer (aigc.failover)
        self.moderator = moderator  # the moderation service, when there is one (aigc.moderation)
        self.health = Health(settings.fallback_cooldown)

    def with_budget(self, budget: Any) -> Any:
        """The same engine with one more budget to respect (e.g. a per-call cap); its fallbacks too."""
        return self._with_books(lambda books: books.with_budget(budget))

    def for_key(self, key: str | None) -> Any:
        """The same engine writing ``key`` (a served API key's name) on its ledger rows; its fallbacks too."""
        return self._with_books(lambda books: dataclasses.replace(books, client_key=key))

    def _with_books(self, change: Any) -> Any:
        twin = copy.copy(self)
        twin.accounting = change(self.accounting)
        if self.fallback is not None:
            twin.fallback = self.fallback._with_books(change)
        return twin

    @property
    def model(self) -> str:
        return self.settings.model or self.backend.default_model

    # -- models and prices ------------------------------------------------------------------------------
    def model_info(self, model: str) -> ModelInfo:
        return self.backend.model_info(model)

    def price(self, model: str, prompt_tokens: int, completion_tokens: int, *, batch: bool = False) -> float | None:
        return price(self.model_info(model), prompt_tokens, completion_tokens, batch=batch)

    def default_cap(self, info: ModelInfo) -> int:
        """The output cap of a request that sets none (a reasoning model keeps its own, larger one)."""
        return info.max_output_tokens if info.reasoning else min(DEFAULT_MAX_OUTPUT_TOKENS, info.max_output_tokens)

    def output_cap(self, request: ChatRequest, prompt_tokens: int | None = None) -> int:
        """The most output tokens this request may produce: its own cap, else the default, within the model's
        cap and what the prompt leaves of the window."""
        info = self.model_info(request.model)
        if prompt_tokens is None:
            prompt_tokens = self.backend.count_tokens(request.messages, request.model)
        wanted = request.max_output_tokens or self.default_cap(info)
        return max(0, min(wanted, info.max_output_tokens, info.context_window - prompt_tokens))

    def check(self, request: ChatRequest) -> tuple[int, int]:
        """Prompt tokens and output cap; raises ContextLengthExceeded (nothing sent) when it cannot fit."""
        info = self.model_info(request.model)
        prompt = self.backend.count_tokens(request.messages, request.model)
        wanted = request.max_output_tokens or 1
        if prompt + wanted > info.context_window:
            raise ContextLengthExceeded(
                f"the prompt takes {prompt} tokens and the reply up to {wanted}, but {request.model} holds "
                f"{info.context_window}; shorten the input or lower max_output_tokens (not sent)")
        return prompt, self.output_cap(request, prompt)

    def surely_fits(self, request: ChatRequest, reply: int) -> bool:
        """True when the prompt plus ``reply`` tokens certainly fit, without counting: a token is at least
        one byte, and a margin covers chat-template tokens such as a default system prompt."""
        upper = sum(len(m.content.encode()) + 16 for m in request.messages) + 256
        return upper + reply <= self.model_info(request.model).context_window

    # -- admitting and settling -------------------------------------------------------------------------
    def admit(self, request: ChatRequest, task: str) -> Ticket | Sent:
        """A cached answer, or a ticket to send: the cap settled, the window checked, the budgets held."""
        accounting = self.accounting
        if accounting.cache is not None and (hit := accounting.cached(request)) is not None:
            return Sent(hit, 0, 0.0, cached=True)
        info, asked = self.model_info(request.model), request
        cap = request.max_output_tokens or self.default_cap(info)
        if not accounting.counts_tokens and self.surely_fits(request, cap):
            if request.max_output_tokens is None:
                request = request.model_copy(update={"max_output_tokens": cap})
            return Ticket(request, task, asked=asked)
        wanted = cap
        prompt, cap = self.check(request)
        request = request.model_copy(update={"max_output_tokens": cap})
        held = accounting.reserve(prompt + cap, price(info, prompt, cap)) if accounting.budgets else []
        return Ticket(request, task, held, prompt + cap, asked=asked,
                      window_limited=cap < min(wanted, info.max_output_tokens))

    def succeeded(self, ticket: Ticket, completion: Completion, attempts: int) -> Sent:
        """Charge, record and cache a finished request."""
        usage = completion.usage or Usage()
        cost = self.price(completion.model, usage.prompt_tokens, usage.completion_tokens)
        self.accounting.settle(ticket.request, ticket.task, ticket.held, completion=completion, cost_usd=cost,
                               latency_s=time.perf_counter() - ticket.started, attempts=attempts)
        self.accounting.remember(ticket.asked or ticket.request, completion)
        if self.accounting.gate is not None:
            self.accounting.gate.observe(completion.limits)
        return Sent(completion, attempts, cost, window_full=self.window_full(ticket, completion))

    @staticmethod
    def window_full(ticket: Ticket, completion: Completion) -> bool:
        """True when an answer cut for length was cut by the window, not by the cap asked for: the cap was
        what the prompt left, or the server stopped before the cap (it clamped the answer to its window)."""
        if completion.finish_reason != "length":
            return False
        cap, usage = ticket.request.max_output_tokens, completion.usage
        clamped = (cap is not None and usage is not None and not completion.usage_estimated
                   and 0 < usage.completion_tokens < cap)
        return ticket.window_limited or clamped

    def failed(self, ticket: Ticket, error: BaseException, attempts: int) -> None:
        self.accounting.settle(ticket.request, ticket.task, ticket.held, error=error,
                               latency_s=time.perf_counter() - ticket.started, attempts=attempts)

    def rejected(self, error: BaseException) -> None:
        """What the gate learns from a failed attempt: a 429 was not counted, and everyone cools down. A 5xx
        or a dropped connection keeps its place: the server may well have counted it."""
        gate = self.accounting.gate
        if gate is not None and isinstance(error, RateLimited):
            gate.rate_limited(error.retry_after)
            if error.limits:
                gate.observe(error.limits)

    def timeout(self, ticket: Ticket) -> float | None:
        return ticket.request.timeout or self.settings.timeout

    @staticmethod
    def attempt_request(ticket: Ticket, timeout: float | None) -> ChatRequest:
        return ticket.request.model_copy(update={"timeout": timeout})


class Engine(EngineBase, Failover, FlowDriver, ProbeRunner):
    """Executes requests for one client or run; the I/O twins of :class:`EngineBase`'s decisions. Its
    ``execute``, ``aexecute``, ``stream`` and ``astream`` (from :class:`~aigc.failover.Failover`) send here,
    or on to the fallback; ``_execute`` and its twins send here."""

    # -- one request here -------------------------------------------------------------------------------
    def _execute(self, request: ChatRequest, task: str) -> Sent:
        ticket = self.admit(request, task)
        if isinstance(ticket, Sent):
            return ticket
        gate = self.accounting.gate

        def attempt(timeout: float | None) -> Completion:
            slot = gate.acquire_blocking(ticket.tokens) if gate is not None else None
            try:
                return self.backend.generate(self.attempt_request(ticket, timeout))
            except AigcError as e:
                self.rejected(e)
                raise
            finally:
                if slot is not None:
                    gate.finished(slot)

        try:
            completion, attempts = call_with_retry(attempt, self.policy, self.timeout(ticket))
        except BaseException as e:
            self.failed(ticket, e, getattr(e, "attempts", 1))
            raise
        return self.succeeded(ticket, completion, attempts)

    async def _aexecute(self, request: ChatRequest, task: str) -> Sent:
        ticket = self.admit(request, task)
        if isinstance(ticket, Sent):
            return ticket
        gate = self.accounting.gate

        async def attempt(timeout: float | None) -> Completion:
            slot = await gate.acquire(ticket.tokens) if gate is not None else None
            try:
                return await self.backend.agenerate(self.attempt_request(ticket, timeout))
            except AigcError as e:
                self.rejected(e)
                raise
            finally:
                if slot is not None:
                    gate.finished(slot)

        try:
            completion, attempts = await acall_with_retry(attempt, self.policy, self.timeout(ticket))
        except BaseException as e:
            self.failed(ticket, e, getattr(e, "attempts", 1))
            raise
        return self.succeeded(ticket, completion, attempts)

    # -- one streamed request here ----------------------------------------------------------------------
    def _stream(self, request: ChatRequest, task: str) -> Iterator[str | Sent]:
        ticket = self.admit(request, task)
        if isinstance(ticket, Sent):
            yield from (ticket.completion.text, ticket) if ticket.completion.text else (ticket,)
            return
        gate, attempts, opened = self.accounting.gate, 0, []

        def open_stream(timeout: float | None) -> StreamDelta | None:
            nonlocal attempts
            attempts += 1
            slot = gate.acquire_blocking(ticket.tokens) if gate is not None else None
            try:
                it = iter(self.backend.stream(self.attempt_request(ticket, timeout)))
                opened[:] = [it]
                return next(it, None)
            except AigcError as e:
                self.rejected(e)
                raise
            finally:
                if slot is not None:
                    gate.finished(slot)

        try:
            first, _ = call_with_retry(open_stream, self.policy, self.timeout(ticket))
            completion = None
            for delta in itertools.chain([first] if first else [], opened[0]):
                if delta.completion is not None:
                    completion = delta.completion
                elif delta.text:
                    yield delta.text
            if completion is None:
                raise BackendError("the stream ended without a final completion")
        except BaseException as e:
            self.failed(ticket, e, attempts)
            raise
        yield self.succeeded(ticket, completion, attempts)

    async def _astream(self, request: ChatRequest, task: str) -> AsyncIterator[str | Sent]:
        ticket = self.admit(request, task)
        if isinstance(ticket, Sent):
            if ticket.completion.text:
                yield ticket.completion.text
            yield ticket
            return
        gate, attempts, opened = self.accounting.gate, 0, []

        async def open_stream(timeout: float | None) -> StreamDelta | None:
            nonlocal attempts
            attempts += 1
            slot = await gate.acquire(ticket.tokens) if gate is not None else None
            try:
                it = aiter(self.backend.astream(self.attempt_request(ticket, timeout)))
                opened[:] = [it]
                return await anext(it, None)
            except AigcError as e:
                self.rejected(e)
                raise
            finally:
                if slot is not None:
                    gate.finished(slot)

        try:
            first, _ = await acall_with_retry(open_stream, self.policy, self.timeout(ticket))
            completion = None
            if first is not None and first.completion is not None:
                completion = first.completion
            elif first is not None and first.text:
                yield first.text
            async for delta in opened[0]:
                if delta.completion is not None:
                    completion = delta.completion
                elif delta.text:
                    yield delta.text
            if completion is None:
                raise BackendError("the stream ended without a final completion")
        except BaseException as e:
            self.failed(ticket, e, attempts)
            raise
        yield self.succeeded(ticket, completion, attempts)

    # -- many requests (failures in place) --------------------------------------------------------------
    def execute_many(self, requests: list[ChatRequest], task: str) -> list[Sent | AigcError]:
        if not requests:  # a step that only shows text
            return []
        if len(requests) == 1:
            return [_caught(self.execute, requests[0], task)]
        if self.backend.prefers_batches:
            return self._execute_batch(requests, task)
        with ThreadPoolExecutor(max_workers=min(self.concurrency, len(requests)) or 1) as pool:
            return list(pool.map(lambda r: _caught(self.execute, r, task), requests))

    async def aexecute_many(self, requests: list[ChatRequest], task: str) -> list[Sent | AigcError]:
        if not requests:
            return []
        if self.backend.prefers_batches and len(requests) > 1:
            return await asyncio.to_thread(self._execute_batch, requests, task)
        return await gather_caught(lambda r: self.aexecute(r, task), requests, self.concurrency)

    def _execute_batch(self, requests: list[ChatRequest], task: str) -> list[Sent | AigcError]:
        """Backends that generate many prompts at once (local models): one batched call, no retries."""
        out: list[Any] = [None] * len(requests)
        tickets: dict[int, Ticket] = {}
        for i, r in enumerate(requests):
            try:
                admitted = self.admit(r, task)
            except AigcError as e:
                out[i] = e
                continue
            if isinstance(admitted, Sent):
                out[i] = admitted
            else:
                tickets[i] = admitted
        if tickets and (gate := self.accounting.gate) is not None:
            for ticket in tickets.values():
                gate.finished(gate.acquire_blocking(ticket.tokens))
        try:
            completions = self.backend.generate_batch([t.request for t in tickets.values()]) if tickets else []
        except AigcError as e:
            for i, ticket in tickets.items():
                self.failed(ticket, e, 1)
                out[i] = e
            return out
        except BaseException as e:
            for ticket in tickets.values():
                self.failed(ticket, e, 1)
            raise
        for (i, ticket), completion in zip(tickets.items(), completions, strict=True):
            out[i] = self.succeeded(ticket, completion, 1)
        return out


def _caught(fn, request: ChatRequest, task: str) -> Sent | AigcError:
    try:
        return fn(request, task)
    except AigcError as e:
        return e
