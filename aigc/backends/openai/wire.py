"""OpenAI's wire format, in one place: the request body, completions and usage as the API returns them
(SDK objects or plain JSON, e.g. Batch API output lines), and the ``x-ratelimit-*`` headers.

Used by the backend's direct calls and by the Batch API path alike, so both send the same body (structured
output included) and read usage the same way.
"""

from __future__ import annotations

import json
import re
from typing import Any

from ...types import ChatRequest, Completion, TokenLogprob, Usage

_DURATION = re.compile(r"(\d+(?:\.\d+)?)(ms|h|m|s)")
_SCALE = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0}


def schema_instruction(schema: dict[str, Any]) -> str:
    """The schema as an instruction, for servers that cannot be trusted to enforce it."""
    return ("Reply with a single JSON object and nothing else. It must validate against this JSON schema:\n"
            + json.dumps(schema["schema"], separators=(",", ":")))


def request_body(request: ChatRequest, *, official: bool, response_format: str = "json_schema") -> dict[str, Any]:
    """The JSON body of a chat completion request.

    ``official``: the hosted API wants ``max_completion_tokens`` (reasoning models require it); compatible
    servers widely know only ``max_tokens``. ``response_format``: how structured output is asked for —
    ``json_schema`` (the server enforces the schema), ``json_object`` (valid JSON, the schema in the prompt)
    or ``prompt`` (the schema in the prompt only).
    """
    messages = [m.model_dump(exclude_none=True) for m in request.messages]
    body: dict[str, Any] = {"model": request.model, "messages": messages}
    for name in ("temperature", "top_p", "seed"):
        value = getattr(request, name)
        if value is not None:
            body[name] = value
    if request.stop:
        body["stop"] = request.stop
    if request.max_output_tokens is not None:
        body["max_completion_tokens" if official else "max_tokens"] = request.max_output_tokens
    if request.logprobs is not None:
        body["logprobs"] = True
        if request.logprobs:
            body["top_logprobs"] = request.logprobs
    if request.json_schema is not None:
        if response_format == "json_schema":
            body["response_format"] = {"type": "json_schema", "json_schema": request.json_schema}
        else:
            last = dict(messages[-1])
            last["content"] = f"{last['content']}\n\n{schema_instruction(request.json_schema)}"
            body["messages"] = [*messages[:-1], last]
            if response_format == "json_object":
                body["response_format"] = {"type": "json_object"}
    return body


def _get(obj: Any, name: str) -> Any:
    return obj.get(name) if isinstance(obj, dict) else getattr(obj, name, None)


def usage_from(raw: Any) -> Usage | None:
    """Usage from an SDK object or its JSON; None when the server sent none."""
    if raw is None:
        return None
    return Usage(prompt_tokens=_get(raw, "prompt_tokens") or 0, completion_tokens=_get(raw, "completion_tokens") or 0)


def logprobs_from(raw: Any) -> list[TokenLogprob] | None:
    """A choice's ``logprobs.content`` (SDK object or JSON) as TokenLogprobs; None when there are none."""
    content = _get(raw, "content") if raw is not None else None
    if not content:
        return None
    return [TokenLogprob(token=_get(t, "token") or "", logprob=float(_get(t, "logprob") or 0.0),
                         top=[(_get(a, "token") or "", float(_get(a, "logprob") or 0.0))
                              for a in _get(t, "top_logprobs") or []])
            for t in content]


def completion_from(resp: Any, request: ChatRequest, *, response_format: str | None = None,
                    request_id: str | None = None) -> Completion:
    """A Completion from a ``chat.completion`` object (SDK object or JSON)."""
    choices = _get(resp, "choices") or []
    choice = choices[0] if choices else None
    message = _get(choice, "message") if choice is not None else None
    return Completion(
        text=(_get(message, "content") or "") if message is not None else "",
        finish_reason=_get(choice, "finish_reason") if choice is not None else None,
        usage=usage_from(_get(resp, "usage")),
        model=_get(resp, "model") or request.model,
        request_id=request_id or getattr(resp, "_request_id", None),
        response_format=response_format if request.json_schema is not None else None,
        logprobs=logprobs_from(_get(choice, "logprobs")) if choice is not None and request.logprobs is not None
        else None,
    )


def duration(text: str) -> float | None:
    """Seconds in OpenAI's reset durations: ``20ms``, ``1s``, ``1.5s``, ``6m0s``, ``1h2m3s``."""
    parts = _DURATION.findall(text.strip())
    if not parts or "".join(n + u for n, u in parts) != text.strip():
        return None
    return sum(float(n) * _SCALE[u] for n, u in parts)


def rate_limits(headers: Any) -> dict[str, float] | None:
    """``x-ratelimit-{limit,remaining,reset}-{requests,tokens}`` as numbers (resets in seconds)."""
    if headers is None:
        return None
    out: dict[str, float] = {}
    for kind in ("limit", "remaining", "reset"):
        for unit in ("requests", "tokens"):
            value = headers.get(f"x-ratelimit-{kind}-{unit}")
            if value is None:
                continue
            number = duration(value) if kind == "reset" else _number(value)
            if number is not None:
                out[f"{kind}_{unit}"] = number
    return out or None


def _number(text: str) -> float | None:
    try:
        return float(text)
    except ValueError:
        return None


class StreamAccumulator:
    """Collects streamed chunks into the text, finish reason, usage and request id of one completion."""

    def __init__(self, request: ChatRequest, *, request_id: str | None = None,
                 limits: dict[str, float] | None = None) -> None:
        self.request = request
        self.parts: list[str] = []
        self.finish_reason: str | None = None
        self.usage: Usage | None = None
        self.model = request.model
        self.request_id = request_id
        self.limits = limits

    def add(self, chunk: Any) -> str:
        """Take one chunk; return its new text."""
        self.model = chunk.model or self.model
        if chunk.usage is not None:
            self.usage = usage_from(chunk.usage)
        if not chunk.choices:
            return ""
        choice = chunk.choices[0]
        if choice.finish_reason:
            self.finish_reason = choice.finish_reason
        piece = choice.delta.content or "" if choice.delta else ""
        if piece:
            self.parts.append(piece)
        return piece

    def completion(self, response_format: str) -> Completion:
        return Completion(
            text="".join(self.parts),
            finish_reason=self.finish_reason,
            usage=self.usage,
            model=self.model,
            request_id=self.request_id,
            response_format=response_format if self.request.json_schema is not None else None,
            limits=self.limits,
        )
