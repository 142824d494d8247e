"""Classification and sentiment: a label (or several) from a given set, a short reason, and a confidence where
the backend can give one. The ``classify`` and ``sentiment`` tasks declare :func:`classify_flow` as their flow.

How, by what the backend can do:

- A backend that generates (hosted, compatible servers, fake): structured output whose schema admits only the
  given labels, validated (a label in another case is accepted as the label; anything else is re-asked). The
  request asks for ``logprobs`` with ``top_logprobs``; when the answer carries them, a label's confidence is
  the probability of its tokens (their log-probabilities summed). Servers without log-probabilities give no
  confidence.
- A backend that scores (``can_score``: the local one): each label's likelihood as the whole reply is computed
  directly, with no generation, and normalised over the labels: ``scores`` holds every label's share and
  ``confidence`` the chosen one's. With ``multi``, each label is asked about on its own (yes or no) and is
  chosen when "yes" is the likelier. A short reason is then generated (``reason=False`` skips it).
"""

from __future__ import annotations

import math
import re
from typing import Any, Literal

from pydantic import BaseModel, create_model, field_validator

from .errors import InputError
from .flows import Flow, Outcome, Step, structured, wrapped
from .probes import LabelScores
from .types import ChatRequest, Completion, Message, TokenLogprob

__all__ = ["Classification", "classify_flow", "label_probability"]

TOP_LOGPROBS = 5
REASON_TOKENS = 48


class Classification(BaseModel):
    """A classification: ``label`` (the first of ``labels`` with ``multi``), a reason, and confidences."""

    label: str | None
    labels: list[str]
    reason: str | None = None
    confidence: float | None = None  # the chosen label's probability (multi: the least sure of the chosen)
    scores: dict[str, float] | None = None  # each label's probability, where the backend gave them

    def __str__(self) -> str:
        chosen = ", ".join(self.labels) or "(none)"
        sure = f" (confidence {self.confidence:.2f})" if self.confidence is not None else ""
        return f"{chosen}{sure}" + (f": {self.reason}" if self.reason else "")


def checked_labels(value: Any) -> list[str]:
    """The label set: at least two distinct, non-blank labels (compared without regard to case)."""
    labels = [str(v).strip() for v in (value or [])]
    if any(not label for label in labels):
        raise InputError("classify: a label is blank; give labels like --labels positive,negative,neutral")
    unique = list({label.lower(): label for label in reversed(labels)}.values())[::-1]
    if len(unique) < 2:
        raise InputError("classify: give at least two different labels, e.g. --labels spam,not-spam")
    return unique


def answer_model(labels: list[str], multi: bool, reason: bool) -> type[BaseModel]:
    """The structured output's model: only the given labels validate (any case is taken as the label)."""
    kind = Literal[tuple(labels)]  # type: ignore[valid-type]
    canon = {label.lower(): label for label in labels}
    key = "labels" if multi else "label"
    fields: dict[str, Any] = {key: (list[kind] if multi else kind, ...)}  # type: ignore[valid-type]
    if reason:
        fields["reason"] = (str, ...)

    def same_case(cls, value: Any) -> Any:
        if isinstance(value, str):
            return canon.get(value.strip().lower(), value)
        if isinstance(value, list):
            return [canon.get(v.strip().lower(), v) if isinstance(v, str) else v for v in value]
        return value

    validators = {"same_case": field_validator(key, mode="before")(same_case)}
    return create_model("Labels" if multi else "Label", __validators__=validators, **fields)  # type: ignore[call-overload]


def classify_flow(client: Any, task: Any, variables: dict[str, Any], opts: dict[str, Any],
                  request: ChatRequest) -> Flow:
    """The flow of one classification (see the module docstring for the two ways)."""
    labels = checked_labels(variables.get("labels"))
    multi, reason = bool(variables.get("multi")), variables.get("reason") is not False
    if client.backend.can_score:
        def render(**extra: Any) -> ChatRequest:
            return client.build_request(task, {**variables, "labels": labels, **extra}, opts)

        return _scored(render, labels, multi, reason, task.name)
    model = answer_model(labels, multi, reason)
    asked = request.model_copy(update={"logprobs": TOP_LOGPROBS})
    return _generated(asked, model, labels, multi, client.settings.max_reasks)


def _generated(request: ChatRequest, model: type[BaseModel], labels: list[str], multi: bool,
               max_reasks: int) -> Flow:
    last: list[Completion] = []

    def keep(step: Step, answer: Any) -> Any:
        last[:] = answer
        return answer

    outcome = yield from wrapped(structured(request, model, max_reasks), reply=keep)
    answer = outcome.parsed
    chosen = list(answer.labels) if multi else [answer.label]
    chosen = [label for label in labels if label in chosen]  # the set's order, each once
    logprobs = last[-1].logprobs if last else None
    scores = {label: p for label in chosen
              if (p := label_probability(last[-1].text, logprobs, label)) is not None} if logprobs else None
    result = Classification(label=chosen[0] if chosen else None, labels=chosen,
                            reason=getattr(answer, "reason", None), scores=scores or None,
                            confidence=min(scores.values()) if scores and len(scores) == len(chosen) else None)
    return Outcome(", ".join(chosen), outcome.finish_reason, parsed=result, reasks=outcome.reasks,
                   warnings=outcome.warnings)


def _scored(render: Any, labels: list[str], multi: bool, reason: bool, task: str) -> Flow:
    if multi:
        scores = {}
        for label in labels:
            yes_no = yield Step([], probe=LabelScores(render(ask=label), ["yes", "no"], task))
            scores[label] = _shares(yes_no.logprobs)[0]
        chosen = [label for label in labels if scores[label] > 0.5]
        confidence = min((max(p, 1 - p) for p in scores.values()), default=None)
    else:
        answer = yield Step([], probe=LabelScores(render(only_label=True, reason=False), labels, task))
        shares = _shares(answer.logprobs)
        scores = dict(zip(labels, shares, strict=True))
        best = max(range(len(labels)), key=lambda i: shares[i])
        chosen, confidence = [labels[best]], shares[best]
    why, finish = None, "stop"
    if reason:
        base = render(only_label=not multi, reason=False)
        ask = base.model_copy(update={"max_output_tokens": REASON_TOKENS, "messages": [
            *base.messages, Message(role="assistant", content=", ".join(chosen) or "none"),
            Message(role="user", content="In one short sentence, why?")]})
        [done] = yield Step([ask])
        why, finish = done.text.strip() or None, done.finish_reason
    result = Classification(label=chosen[0] if chosen else None, labels=chosen, reason=why,
                            confidence=round(confidence, 6) if confidence is not None else None,
                            scores={k: round(v, 6) for k, v in scores.items()})
    return Outcome(", ".join(chosen), finish, parsed=result)


def _shares(logprobs: list[float]) -> list[float]:
    """Log-probabilities as shares of their total (a softmax)."""
    top = max(logprobs)
    weights = [math.exp(lp - top) for lp in logprobs]
    total = sum(weights)
    return [w / total for w in weights]


def label_probability(text: str, logprobs: list[TokenLogprob] | None, label: str) -> float | None:
    """The probability of ``label``'s tokens where the JSON answer ``text`` writes it as a value: the tokens
    overlapping the label's characters, their log-probabilities summed. None when it cannot be placed."""
    if not logprobs or "".join(t.token for t in logprobs) != text:
        return None
    key = re.search(r'"labels?"\s*:\s*', text)
    found = re.search(r'"' + re.escape(label) + r'"', text[key.end():] if key else text, re.IGNORECASE)
    if found is None:
        return None
    start = (key.end() if key else 0) + found.start() + 1
    end = start + len(label)
    total, position = 0.0, 0
    for token in logprobs:
        if position < end and start < position + len(token.token):
            total += token.logprob
        position += len(token.token)
    return math.exp(total)
