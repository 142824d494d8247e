"""What every request costs and leaves behind, kept in one object: budgets, prices, the usage ledger, the
response cache, the rate gate and the job label.

An :class:`Accounting` is built once (by a client, a batch run or a server) and handed to the engine; direct
runs, the Batch API path and dry-run plans all price with :func:`price` and settle through it::

    holds = accounting.reserve(worst_tokens, worst_cost)      # BudgetExceeded: nothing is sent
    ...send...
    accounting.settle(request, task, holds, completion=..., cost=..., latency=..., attempts=...)
"""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from .types import ChatRequest, Completion, Usage

if TYPE_CHECKING:
    from .budget import Budget, Reservation
    from .cache import ResponseCache
    from .ledger import Ledger
    from .models import ModelInfo
    from .ratelimit import RateGate

__all__ = ["Accounting", "price"]


def price(info: ModelInfo, prompt_tokens: int, completion_tokens: int, *, batch: bool = False) -> float | None:
    """USD for a request on this model; Batch API prices where the table has them (else the standard price,
    which errs high); None when the price is unknown."""
    if batch:
        cost = info.estimate_cost(prompt_tokens, completion_tokens, batch=True)
        if cost is not None:
            return cost
    return info.estimate_cost(prompt_tokens, completion_tokens)


@dataclass
class Accounting:
    """Budgets, ledger, cache, rate gate and job label for one client or run."""

    backend: str
    base_url: str | None = None
    budgets: tuple[Budget, ...] = ()
    ledger: Ledger | None = None
    cache: ResponseCache | None = None
    gate: RateGate | None = None
    job: str | None = None
    client_key: str | None = None  # the ``aigc serve`` API key the requests came in with

    def with_budget(self, budget: Budget) -> Accounting:
        """The same books with one more budget to respect (a per-call or per-job cap)."""
        return dataclasses.replace(self, budgets=(*self.budgets, budget))

    @property
    def counts_tokens(self) -> bool:
        """True when a request's prompt must be counted before it is sent (a budget or a token gate)."""
        return bool(self.budgets) or (self.gate is not None and bool(self.gate.tpm))

    # -- budgets ----------------------------------------------------------------------------------------
    def reserve(self, tokens: int, cost_usd: float | None) -> list[tuple[Budget, Reservation]]:
        """Hold the worst case in every budget, or in none (BudgetExceeded: nothing may be sent)."""
        held: list[tuple[Budget, Reservation]] = []
        try:
            for budget in self.budgets:
                held.append((budget, budget.reserve(tokens, cost_usd)))
        except BaseException:
            self.release(held)
            raise
        return held

    @staticmethod
    def release(held: list[tuple[Budget, Reservation]]) -> None:
        for budget, reservation in held:
            budget.release(reservation)

    # -- the outcome of one request -----------------------------------------------------------------------
    def settle(self, request: ChatRequest, task: str, held: list[tuple[Budget, Reservation]], *,
               completion: Completion | None = None, cost_usd: float | None = None,
               error: BaseException | None = None, latency_s: float = 0.0, attempts: int = 1) -> None:
        """Charge what a request used (or release what it held, if nothing was billed) and record it."""
        usage = (completion.usage if completion else None) or Usage()
        if completion is not None:
            for budget, reservation in held:
                budget.commit(reservation, usage.total_tokens, cost_usd)
        else:
            self.release(held)
        if self.ledger is None:
            return
        from .ledger import LedgerEntry

        keep = self.ledger.store_prompts
        self.ledger.record(LedgerEntry(
            backend=self.backend, model=completion.model if completion else request.model, task=task,
            prompt_tokens=usage.prompt_tokens, completion_tokens=usage.completion_tokens,
            # An error answer is not billed; a timeout or dropped connection may have been.
            cost_usd=cost_usd if completion else (0.0 if getattr(error, "status_code", None) else None),
            latency_s=latency_s, status="ok" if error is None else type(error).__name__, attempts=attempts,
            request_id=completion.request_id if completion else getattr(error, "request_id", None),
            job=self.job, client_key=self.client_key,
            prompt="\n\n".join(f"{m.role}: {m.content}" for m in request.messages) if keep else None,
            response=completion.text if completion is not None and keep else None,
            redactions=json.dumps(request.redactions, sort_keys=True) if request.redactions else None,
        ))

    # -- the response cache -----------------------------------------------------------------------------
    def _cache_key(self, request: ChatRequest) -> dict[str, Any]:
        return {"backend": self.backend, "base_url": self.base_url,
                **request.model_dump(exclude={"timeout"}, exclude_none=True)}

    def cached(self, request: ChatRequest) -> Completion | None:
        """The cache's answer to this exact request, if caching is on and it has one."""
        if self.cache is None:
            return None
        hit = self.cache.get(self._cache_key(request))
        return Completion.model_validate(hit) if hit else None

    def remember(self, request: ChatRequest, completion: Completion) -> None:
        """Keep a complete answer (cut-off answers are not worth reusing)."""
        if self.cache is not None and completion.finish_reason != "length":
            self.cache.put(self._cache_key(request), completion.model_dump(mode="json", exclude={"limits"}))

    def close(self) -> None:
        """Close the ledger and cache (the budgets and gate hold no resources)."""
        for part in (self.ledger, self.cache):
            if part is not None:
                part.close()
