"""The checks around a task's flow, as flow wrappers (I/O-free, so sync, async, streamed, mapped and batch
calls get them alike):

- :func:`redacted` — every request (and moderation probe) leaves with personal data replaced by placeholders;
  the output, streamed or not, comes back with the values restored (:mod:`aigc.pii`);
- :func:`moderated` — the input and the finished output are checked in one moderation call before anything is
  delivered; streaming waits for the check (:mod:`aigc.moderation`);
- :func:`reviewed` — the task's declared review of its output (e.g. the news fact check).

A call wraps them in this order, innermost first: its flow, moderated, redacted, reviewed — so the moderation
endpoint sees only placeholders, and a review sees the output as the caller will.
"""

from __future__ import annotations

import dataclasses
from collections import Counter
from collections.abc import Callable
from typing import Any

from .errors import ConfigError
from .flows import Flow, Outcome, Step, silenced, wrapped
from .moderation import ModerationPolicy
from .pii import PLACEHOLDER, Redactor
from .probes import LabelScores, Moderation
from .types import ChatRequest, Message

__all__ = ["around", "redacted", "moderated", "reviewed", "redact_request", "input_text"]


def around(flow: Flow, task: Any, variables: dict[str, Any], opts: dict[str, Any], settings: Any,
           moderator: Any, backend: str) -> Flow:
    """A call's flow wrapped in the checks its options (else the settings) ask for, and its task's review."""
    if _pick(opts, settings, "moderate"):
        if moderator is None:
            raise ConfigError(f"moderate needs a moderation endpoint: the {backend} backend has none and no API "
                              "key is configured for the hosted one (offline there is none; see docs/safety.md)")
        policy = ModerationPolicy(moderator.model, settings.moderation_thresholds)
        flow = moderated(flow, policy, input_text(variables.get(task.input or ""), variables))
    if _pick(opts, settings, "redact"):
        flow = redacted(flow, Redactor(settings.redact_region))
    review = task.hook("review")
    return reviewed(flow, review, variables) if review is not None else flow


def _pick(opts: dict[str, Any], settings: Any, name: str) -> Any:
    """A call's own option, else the client's setting."""
    value = opts.get(name)
    return getattr(settings, name) if value is None else value


def redact_request(request: ChatRequest, redactor: Redactor) -> ChatRequest:
    """The request with its messages redacted, and counts of the placeholders it carries."""
    messages = [Message(role=m.role, content=redactor.redact(m.content), name=m.name) for m in request.messages]
    found = {match for m in messages for match in PLACEHOLDER.findall(m.content)}
    counts = dict(Counter(kind.lower() for kind, _ in found))
    return request.model_copy(update={"messages": messages, "redactions": counts or None})


def redacted(flow: Flow, redactor: Redactor) -> Flow:
    """``flow`` with nothing detected by ``redactor`` leaving, and its output restored."""

    def step(s: Step) -> Step:
        probe = s.probe
        if isinstance(probe, Moderation):
            probe = Moderation([redactor.redact(t) for t in probe.texts])
        elif isinstance(probe, LabelScores):
            probe = dataclasses.replace(probe, request=redact_request(probe.request, redactor))
        return dataclasses.replace(s, requests=[redact_request(r, redactor) for r in s.requests], probe=probe,
                                   emit=redactor.restore(s.emit), trailer=redactor.restore(s.trailer),
                                   text_filter=redactor.stream_filter() if s.streamable else s.text_filter)

    def outcome(o: Outcome) -> Outcome:
        return dataclasses.replace(o, text=redactor.restore(o.text), parsed=redactor.restore_value(o.parsed),
                                   redactions=redactor.counts)

    return wrapped(flow, step=step, outcome=outcome)


def moderated(flow: Flow, policy: ModerationPolicy, input_text: str) -> Flow:
    """``flow``, then its input and output checked in one moderation call; a crossed threshold raises
    ContentFlagged. Nothing streams before the check: the text is given out whole once it passes."""
    held = yield from silenced(flow)
    verdicts = yield Step([], probe=Moderation([input_text, held.text]))
    policy.judge(["input", "output"], verdicts)
    yield Step([], emit=held.text)  # what a streaming caller sees, now that it may
    return held


def reviewed(flow: Flow, review: Callable[[dict[str, Any], Outcome], Outcome], variables: dict[str, Any]) -> Flow:
    """``flow`` with ``review(variables, outcome)`` applied to its outcome."""
    return wrapped(flow, outcome=lambda o: review(variables, o))


def input_text(task_input: Any, variables: dict[str, Any]) -> str:
    """What a call's moderation checks as its input: the chat's user messages, or its text variables."""
    if isinstance(task_input, list):
        return "\n\n".join(m.content if isinstance(m, Message) else str(m.get("content", ""))
                           for m in task_input if (m.role if isinstance(m, Message) else m.get("role")) == "user")
    return "\n\n".join(v for v in variables.values() if isinstance(v, str) and v.strip())
