"""Sending requests honestly: context check, budget reservation, the retry layer, usage and cost, the ledger.

Every request a task makes goes through :meth:`Engine.execute` (or its async/stream twins), so these rules
hold for every task and backend alike:

1. The prompt is counted and checked against the context window before anything is sent.
2. The worst case (prompt + max output tokens, and its price) is reserved from the budget; a request that
   could exceed the budget raises :class:`~aigc.errors.BudgetExceeded` and is never sent.
3. The backend call runs under the single retry layer.
4. The actual usage is charged and recorded in the ledger (no prompts unless opted in).
"""

from __future__ import annotations

import asyncio
import copy
import itertools
import time
from collections.abc import AsyncIterator, Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from .backends.base import Backend
from .config import Settings
from .drive import FlowDriver, Sent
from .errors import AigcError, BackendError, ConnectionFailed, ContextLengthExceeded, RateLimited, ServerError
from .retry import RetryPolicy, acall_with_retry, call_with_retry
from .types import ChatRequest, Completion, StreamDelta, Usage


class Engine(FlowDriver):
    """Executes requests for one client: owns the backend, retry policy, budget and ledger."""

    def __init__(self, backend: Backend, settings: Settings, policy: RetryPolicy, *,
                 budgets: list[Any] | None = None, ledger: Any = None, concurrency: int = 4) -> None:
        self.backend = backend
        self.settings = settings
        self.policy = policy
        self.budgets = list(budgets or [])
        self.ledger = ledger
        self.concurrency = max(1, concurrency)
        self.job: str | None = None  # batch job name, recorded in the ledger
        self.cache: Any = None  # a ResponseCache to reuse identical answers (batch jobs)
        # A shared limiter for requests and tokens per minute: ``await gate.acquire(tokens)`` before each
        # attempt, ``gate.penalize(retry_after)`` after a 429 (so concurrent workers cool down together) and
        # ``gate.refund()`` after an attempt the server did not count (a 5xx, a dropped connection).
        self.gate: Any = None
        self._table: Any = None

    def with_budget(self, budget: Any) -> Engine:
        """The same engine with one more budget to respect (e.g. a per-call or per-job cap)."""
        clone = copy.copy(self)
        clone.budgets = [*self.budgets, budget]
        return clone

    # -- accounting -------------------------------------------------------------------------------------
    def model_info(self, model: str):
        if self._table is None:
            from .models import ModelTable

            self._table = ModelTable.cached(self.settings.models_file)
        return self._table.lookup(model)

    def price(self, model: str, prompt_tokens: int, completion_tokens: int) -> float | None:
        if getattr(self.backend, "free", False):
            return 0.0
        return self.model_info(model).estimate_cost(prompt_tokens, completion_tokens)

    def output_cap(self, request: ChatRequest, prompt_tokens: int | None = None) -> int:
        """The most output tokens this request may produce (its max_tokens, or what the model allows)."""
        if prompt_tokens is None:
            prompt_tokens = self.backend.count_tokens(request.messages, request.model)
        room = self.backend.context_window(request.model) - prompt_tokens
        cap = min(self.backend.max_output_tokens(request.model), room)
        return cap if request.max_tokens is None else min(request.max_tokens, cap)

    def check(self, request: ChatRequest) -> tuple[int, int]:
        """Prompt tokens and output cap; raises ContextLengthExceeded (nothing sent) when it cannot fit."""
        prompt = self.backend.count_tokens(request.messages, request.model)
        window = self.backend.context_window(request.model)
        wanted = request.max_tokens or 1
        if prompt + wanted > window:
            raise ContextLengthExceeded(
                f"the prompt takes {prompt} tokens and the reply up to {wanted}, but {request.model} holds "
                f"{window}; shorten the input or lower max_tokens (not sent)")
        return prompt, self.output_cap(request, prompt)

    def surely_fits(self, request: ChatRequest, reply: int) -> bool:
        """True when the prompt plus ``reply`` tokens certainly fit, without counting: a token is at least
        one byte, and a margin covers chat-template tokens such as a default system prompt."""
        upper = sum(len(m.content.encode()) + 16 for m in request.messages) + 256
        return upper + reply <= self.backend.context_window(request.model)

    def _reserve(self, request: ChatRequest, task: str) -> tuple[list[tuple[Any, Any]], int]:
        """Reserve the worst case from every budget, or from none (BudgetExceeded, nothing sent).
        Returns the reservations and the worst-case token count (0 when nothing needed counting)."""
        if not self.budgets and self.gate is None and self.surely_fits(request, request.max_tokens or 1):
            return [], 0
        prompt, cap = self.check(request)
        if not self.budgets:
            return [], prompt + cap
        price = self.price(request.model, prompt, cap)
        held: list[tuple[Any, Any]] = []
        try:
            for budget in self.budgets:
                held.append((budget, budget.reserve(prompt + cap, price)))
        except BaseException:
            self._release(held)
            raise
        return held, prompt + cap

    @staticmethod
    def _release(held: list[tuple[Any, Any]]) -> None:
        for budget, reservation in held:
            budget.release(reservation)

    def _settle(self, request: ChatRequest, task: str, reservation: Any, sent: Sent | None,
                error: BaseException | None, latency: float, attempts: int) -> None:
        if sent is not None:
            usage = sent.completion.usage or Usage()
            for budget, held in reservation:
                budget.commit(held, usage.total_tokens, sent.cost_usd)
        else:
            self._release(reservation)
        if self.ledger is not None:
            from .ledger import LedgerEntry

            usage = (sent.completion.usage if sent else None) or Usage()
            self.ledger.record(LedgerEntry(
                backend=self.backend.name, model=sent.completion.model if sent else request.model, task=task,
                prompt_tokens=usage.prompt_tokens, completion_tokens=usage.completion_tokens,
                # An error answer is not billed; a timeout or dropped connection may have been.
                cost_usd=sent.cost_usd if sent else (0.0 if getattr(error, "status_code", None) else None),
                latency_s=latency,
                status="ok" if error is None else type(error).__name__, attempts=attempts,
                request_id=sent.completion.request_id if sent else getattr(error, "request_id", None),
                job=self.job,
                prompt="\n\n".join(f"{m.role}: {m.content}" for m in request.messages)
                if self.ledger.store_prompts else None,
                response=sent.completion.text if sent and self.ledger.store_prompts else None,
            ))

    def _done(self, request: ChatRequest, task: str, reservation: Any, started: float, completion: Completion,
              attempts: int) -> Sent:
        """Account for a completed request: charge the budgets, record it in the ledger."""
        sent = self._sent(completion, attempts)
        self._settle(request, task, reservation, sent, None, time.perf_counter() - started, attempts)
        return sent

    def _sent(self, completion: Completion, attempts: int) -> Sent:
        u = completion.usage or Usage()
        return Sent(completion, attempts, self.price(completion.model, u.prompt_tokens, u.completion_tokens))

    # -- one request ------------------------------------------------------------------------------------
    def _cache_key(self, request: ChatRequest) -> dict[str, Any]:
        return {"backend": self.backend.name, "base_url": self.settings.base_url,
                **request.model_dump(exclude={"timeout"}, exclude_none=True)}

    def cached(self, request: ChatRequest) -> Sent | None:
        """The response cache's answer to this exact request, if caching is on and it has one."""
        if self.cache is None:
            return None
        hit = self.cache.get(self._cache_key(request))
        return Sent(Completion.model_validate(hit), 0, 0.0, cached=True) if hit else None

    def remember(self, request: ChatRequest, sent: Sent) -> None:
        """Keep a complete answer in the response cache (cut-off answers are not worth reusing)."""
        if self.cache is not None and sent.completion.finish_reason != "length":
            self.cache.put(self._cache_key(request), sent.completion.model_dump(mode="json"))

    def execute(self, request: ChatRequest, task: str) -> Sent:
        if (hit := self.cached(request)) is not None:
            return hit
        reservation, _ = self._reserve(request, task)
        started = time.perf_counter()
        try:
            completion, attempts = call_with_retry(
                lambda t: self.backend.generate(request.model_copy(update={"timeout": t})),
                self.policy, request.timeout or self.settings.timeout)
        except BaseException as e:
            self._settle(request, task, reservation, None, e, time.perf_counter() - started,
                         getattr(e, "attempts", 1))
            raise
        sent = self._done(request, task, reservation, started, completion, attempts)
        self.remember(request, sent)
        return sent

    async def aexecute(self, request: ChatRequest, task: str) -> Sent:
        if (hit := self.cached(request)) is not None:
            return hit
        reservation, tokens = self._reserve(request, task)
        started = time.perf_counter()

        async def attempt(timeout: float | None) -> Completion:
            if self.gate is not None:
                await self.gate.acquire(tokens)
            try:
                return await self.backend.agenerate(request.model_copy(update={"timeout": timeout}))
            except RateLimited as e:
                if self.gate is not None:
                    self.gate.penalize(e.retry_after)
                raise
            except (ServerError, ConnectionFailed):
                if self.gate is not None:
                    self.gate.refund()  # a 5xx or a connection dropped before an answer was not counted
                raise

        try:
            completion, attempts = await acall_with_retry(attempt, self.policy,
                                                          request.timeout or self.settings.timeout)
        except BaseException as e:
            self._settle(request, task, reservation, None, e, time.perf_counter() - started,
                         getattr(e, "attempts", 1))
            raise
        sent = self._done(request, task, reservation, started, completion, attempts)
        self.remember(request, sent)
        return sent

    def stream(self, request: ChatRequest, task: str) -> Iterator[str | Sent]:
        """Stream one request: text pieces, then the :class:`Sent`. Failures before the first piece are
        retried; once text has reached the caller a failure surfaces instead of repeating it."""
        reservation, _ = self._reserve(request, task)
        started = time.perf_counter()
        attempts = 0
        opened: list[Iterator[StreamDelta]] = []

        def open_stream(timeout: float | None) -> StreamDelta | None:
            nonlocal attempts
            attempts += 1
            it = iter(self.backend.stream(request.model_copy(update={"timeout": timeout})))
            opened[:] = [it]
            return next(it, None)

        try:
            first, _ = call_with_retry(open_stream, self.policy, request.timeout or self.settings.timeout)
            completion = None
            for delta in itertools.chain([first] if first else [], opened[0]):
                if delta.completion is not None:
                    completion = delta.completion
                elif delta.text:
                    yield delta.text
            if completion is None:
                raise BackendError("the stream ended without a final completion")
        except BaseException as e:
            self._settle(request, task, reservation, None, e, time.perf_counter() - started, attempts)
            raise
        sent = self._done(request, task, reservation, started, completion, attempts)
        yield sent

    async def astream(self, request: ChatRequest, task: str) -> AsyncIterator[str | Sent]:
        """Async twin of :meth:`stream`."""
        reservation, _ = self._reserve(request, task)
        started = time.perf_counter()
        attempts = 0
        opened: list[AsyncIterator[StreamDelta]] = []

        async def open_stream(timeout: float | None) -> StreamDelta | None:
            nonlocal attempts
            attempts += 1
            it = aiter(self.backend.astream(request.model_copy(update={"timeout": timeout})))
            opened[:] = [it]
            return await anext(it, None)

        try:
            first, _ = await acall_with_retry(open_stream, self.policy, request.timeout or self.settings.timeout)
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
            self._settle(request, task, reservation, None, e, time.perf_counter() - started, attempts)
            raise
        sent = self._done(request, task, reservation, started, completion, attempts)
        yield sent

    # -- many requests ----------------------------------------------------------------------------------
    def execute_many(self, requests: list[ChatRequest], task: str, *, return_exceptions: bool = False) -> list:
        if not requests:
            return []
        if len(requests) == 1:
            try:
                return [self.execute(requests[0], task)]
            except AigcError as e:
                if return_exceptions:
                    return [e]
                raise
        if getattr(self.backend, "prefers_batches", False):
            return self._execute_batch(requests, task, return_exceptions)
        with ThreadPoolExecutor(max_workers=min(self.concurrency, len(requests))) as pool:
            futures = [pool.submit(self.execute, r, task) for r in requests]
            out = []
            for f in futures:
                try:
                    out.append(f.result())
                except AigcError as e:
                    if not return_exceptions:
                        for other in futures:
                            other.cancel()
                        raise
                    out.append(e)
            return out

    def _execute_batch(self, requests: list[ChatRequest], task: str, return_exceptions: bool) -> list:
        """Backends that generate many prompts at once (local models): one batched call, no retries."""
        reservations, ready, out = [], [], [None] * len(requests)
        for i, r in enumerate(requests):
            try:
                reservations.append((i, self._reserve(r, task)[0]))
                ready.append(i)
            except AigcError as e:
                if not return_exceptions:
                    for _, held in reservations:
                        self._release(held)
                    raise
                out[i] = e
        started = time.perf_counter()
        try:
            completions = self.backend.generate_batch([requests[i] for i in ready])
        except BaseException as e:
            for i, res in reservations:
                self._settle(requests[i], task, res, None, e, time.perf_counter() - started, 1)
            raise
        latency = (time.perf_counter() - started) / max(1, len(ready))
        for (i, res), completion in zip(reservations, completions, strict=True):
            out[i] = self._sent(completion, 1)
            self._settle(requests[i], task, res, out[i], None, latency, 1)
        return out

    async def aexecute_many(self, requests: list[ChatRequest], task: str, *,
                            return_exceptions: bool = False) -> list:
        if not requests:
            return []
        if getattr(self.backend, "prefers_batches", False) and len(requests) > 1:
            return await asyncio.to_thread(self._execute_batch, requests, task, return_exceptions)
        gate = asyncio.Semaphore(self.concurrency)

        async def one(r: ChatRequest) -> Sent:
            async with gate:
                return await self.aexecute(r, task)

        results = await asyncio.gather(*(one(r) for r in requests), return_exceptions=True)
        for r in results:
            if isinstance(r, BaseException) and (not return_exceptions or not isinstance(r, AigcError)):
                raise r
        return results

    # -- drivers ----------------------------------------------------------------------------------------
