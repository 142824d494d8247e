"""Moderation: a call's input and output checked by a moderation endpoint in one request, judged against
per-category thresholds.

The service is the hosted backend's ``/v1/moderations`` (model ``omni-moderation-latest`` by default, set with
``moderation_model``). Each text gets a score per category; an item is stopped when a category's score reaches
its threshold (``moderation_thresholds = {violence = 0.5}``), or, for a category without a threshold, when the
endpoint itself flags it. A check that cannot be made (no endpoint, the endpoint failing past its retries)
stops the item too: moderation fails closed.

Offline there is no moderation model: with only the local backend, ``moderate`` is a configuration error.
Redaction and the news fact check work offline; see docs/safety.md for the rest.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Protocol

from .errors import ContentFlagged

__all__ = ["Verdict", "ModerationApi", "ModerationPolicy", "CATEGORIES"]

# The categories of omni-moderation-latest (text-moderation-latest has the same minus the illicit ones).
CATEGORIES = ("harassment", "harassment/threatening", "hate", "hate/threatening", "illicit", "illicit/violent",
              "self-harm", "self-harm/intent", "self-harm/instructions", "sexual", "sexual/minors", "violence",
              "violence/graphic")


@dataclass
class Verdict:
    """The endpoint's answer for one text."""

    flagged: bool
    categories: dict[str, bool] = field(default_factory=dict)
    scores: dict[str, float] = field(default_factory=dict)


class ModerationApi(Protocol):
    """A moderation endpoint: one verdict per text, in order, from one request."""

    model: str

    def check(self, texts: list[str], timeout: float | None) -> list[Verdict]: ...

    async def acheck(self, texts: list[str], timeout: float | None) -> list[Verdict]: ...


@dataclass(frozen=True)
class ModerationPolicy:
    """When a verdict stops an item: a category at or above its threshold, else the endpoint's own flag."""

    model: str = "omni-moderation-latest"
    thresholds: dict[str, float] = field(default_factory=dict)

    def crossed(self, verdict: Verdict) -> dict[str, float]:
        """The categories that stop the item, with their scores."""
        out = {}
        for name in sorted(set(verdict.scores) | set(verdict.categories) | set(self.thresholds)):
            score = verdict.scores.get(name, 0.0)
            threshold = self.thresholds.get(name)
            if (score >= threshold) if threshold is not None else verdict.categories.get(name, False):
                out[name] = score
        return out

    def judge(self, sides: list[str], verdicts: list[Verdict]) -> None:
        """Raise ContentFlagged for the first side (input, output) a verdict stops."""
        for side, verdict in zip(sides, verdicts, strict=True):
            crossed = self.crossed(verdict)
            if crossed:
                what = ", ".join(f"{k} {v:.2f}" + (f" >= {self.thresholds[k]:g}" if k in self.thresholds else "")
                                 for k, v in crossed.items())
                raise ContentFlagged(f"moderation stopped the {side}: {what} ({self.model}); nothing was "
                                     "delivered", side=side, categories=crossed)


def verdict_from(raw: Any) -> Verdict:
    """A Verdict from one result of the endpoint (SDK object or JSON)."""
    data = raw if isinstance(raw, dict) else raw.model_dump(by_alias=True)
    categories = {k: bool(v) for k, v in (data.get("categories") or {}).items() if v is not None}
    scores = {k: float(v) for k, v in (data.get("category_scores") or {}).items() if v is not None}
    return Verdict(flagged=bool(data.get("flagged")), categories=categories, scores=scores)
