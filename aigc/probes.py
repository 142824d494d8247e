"""Calls that generate no text, run by the engine when a flow asks for one (see :class:`aigc.flows.Probe`):

- :class:`Moderation` — the moderation endpoint's verdicts on some texts, in one call (aigc.moderation);
- :class:`LabelScores` — how likely the model finds each of some replies, without generating (classification
  on a local model, see aigc.classify).

:class:`ProbeRunner` is mixed into :class:`~aigc.engine.Engine`: its sync and async methods only do I/O.
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass
from typing import Any

from .errors import ConfigError
from .retry import acall_with_retry, call_with_retry
from .types import ChatRequest, Completion, Scores, Usage

__all__ = ["Moderation", "LabelScores", "ProbeRunner"]


@dataclass
class Moderation:
    """Check ``texts`` with the moderation service (one call for all of them)."""

    texts: list[str]

    def run(self, engine: Any) -> list[Any]:
        return engine.moderate(self.texts)

    async def arun(self, engine: Any) -> list[Any]:
        return await engine.amoderate(self.texts)


@dataclass
class LabelScores:
    """Score each continuation as the reply to ``request`` (one forward pass, no generation)."""

    request: ChatRequest
    continuations: list[str]
    task: str

    def run(self, engine: Any) -> Scores:
        return engine.score(self.request, self.continuations, self.task)

    async def arun(self, engine: Any) -> Scores:
        return await engine.ascore(self.request, self.continuations, self.task)


class ProbeRunner:
    """The engine's probe methods; they rely on its ``backend``, ``moderator``, ``policy``, ``settings``,
    ``accounting`` and ``price``."""

    def _moderator(self) -> Any:
        if self.moderator is None:
            raise ConfigError(f"moderation needs a backend with a moderation endpoint (openai); "
                              f"{self.backend.name} has none, and offline there is none: see docs/safety.md")
        return self.moderator

    def moderate(self, texts: list[str]) -> list[Any]:
        """The moderation service's verdicts on ``texts`` (one call), under the retry layer."""
        moderator = self._moderator()
        verdicts, _ = call_with_retry(lambda timeout: moderator.check(texts, timeout), self.policy,
                                      self.settings.timeout)
        return verdicts

    async def amoderate(self, texts: list[str]) -> list[Any]:
        moderator = self._moderator()
        verdicts, _ = await acall_with_retry(lambda timeout: moderator.acheck(texts, timeout),
                                             self.policy, self.settings.timeout)
        return verdicts

    def score(self, request: ChatRequest, continuations: list[str], task: str) -> Scores:
        """How likely the model finds each continuation as its reply to ``request``."""
        started = time.perf_counter()
        return self._scored(request, self.backend.score(request, continuations), task, started)

    async def ascore(self, request: ChatRequest, continuations: list[str], task: str) -> Scores:
        started = time.perf_counter()
        scores = await asyncio.to_thread(self.backend.score, request, continuations)
        return self._scored(request, scores, task, started)

    def _scored(self, request: ChatRequest, scores: Scores, task: str, started: float) -> Scores:
        """Record a scoring pass in the books: its prompt tokens were computed like any others."""
        completion = Completion(text="", usage=Usage(prompt_tokens=scores.prompt_tokens), model=scores.model,
                                finish_reason="stop")
        self.accounting.settle(request, task, [], completion=completion,
                               cost_usd=self.price(scores.model, scores.prompt_tokens, 0),
                               latency_s=time.perf_counter() - started)
        return scores
