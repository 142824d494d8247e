"""The OpenAI chat-completions wire format: reading a request body, writing completions and stream chunks.

Reading is strict where it matters and lenient where clients are noisy: parameters this server cannot honour
are a 400 ``unsupported_parameter`` naming the parameter (never a 422), and the ones that change nothing
here (``user``, ``metadata``, ``store``, ``n: 1``, ``parallel_tool_calls``) are accepted and ignored.
``logprobs`` / ``top_logprobs`` give each output token's log-probability (the local model computes them; a
gateway passes them on when the server behind it gives them, else answers ``"logprobs": null``).
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass
from typing import Any

from ..types import Message, TokenLogprob
from .errors import ApiError, invalid, unsupported

__all__ = ["ChatParams", "parse_chat", "parse_json", "completion_body", "chunk", "usage_body", "error_event",
           "logprobs_body"]

# Accepted and ignored: they change nothing on this server.
_IGNORED = {"user", "metadata", "store", "parallel_tool_calls", "service_tier"}
# Accepted when they ask for the default behaviour only.
_DEFAULT_ONLY = {"n": (1,), "frequency_penalty": (0, 0.0),
                 "presence_penalty": (0, 0.0), "tool_choice": ("none",), "tools": ([],), "functions": ([],)}
_KNOWN = {"model", "messages", "temperature", "top_p", "max_tokens", "max_completion_tokens", "stop", "seed",
          "stream", "stream_options", "response_format", "knowledge", "logprobs", "top_logprobs"}
_ROLES = {"system": "system", "developer": "system", "user": "user", "assistant": "assistant"}


@dataclass
class ChatParams:
    """A chat request as this server understands it."""

    messages: list[Message]
    model: str | None = None
    temperature: float | None = None
    top_p: float | None = None
    max_tokens: int | None = None
    stop: list[str] | None = None
    seed: int | None = None
    stream: bool = False
    include_usage: bool = False
    json_schema: dict[str, Any] | None = None  # {"name", "schema", "strict"} for json_schema/json_object
    knowledge: bool = False  # aigc extension: ground the reply on the server's knowledge files
    logprobs: int | None = None  # None: not asked; else how many alternatives per token (top_logprobs)


def parse_json(raw: bytes) -> Any:
    try:
        return json.loads(raw)
    except ValueError:
        raise invalid("We could not parse the JSON body of your request. Send a JSON object.") from None


def _number(body: dict, name: str, lo: float, hi: float) -> float | None:
    value = body.get(name)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int | float) or not lo <= value <= hi:
        raise invalid(f"Invalid '{name}': expected a number from {lo:g} to {hi:g}, got {value!r}.", name,
                      "invalid_value")
    return float(value)


def _positive_int(body: dict, name: str) -> int | None:
    value = body.get(name)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise invalid(f"Invalid '{name}': expected a positive integer, got {value!r}.", name, "invalid_value")
    return value


def _content(message: dict, i: int) -> str:
    content = message.get("content")
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        parts = []
        for part in content:
            if not isinstance(part, dict) or part.get("type") != "text" or not isinstance(part.get("text"), str):
                raise unsupported(f"messages[{i}].content", " (only text parts are)")
            parts.append(part["text"])
        return "".join(parts)
    if content is None and message.get("role") == "assistant":
        return ""
    raise invalid(f"Invalid 'messages[{i}].content': expected a string or a list of text parts.",
                  f"messages[{i}].content")


def _messages(body: dict) -> list[Message]:
    raw = body.get("messages")
    if not isinstance(raw, list) or not raw:
        raise invalid("Missing required parameter: 'messages'.", "messages", "missing_required_parameter")
    out = []
    for i, m in enumerate(raw):
        if not isinstance(m, dict):
            raise invalid(f"Invalid 'messages[{i}]': expected an object.", f"messages[{i}]")
        role = m.get("role")
        if role not in _ROLES:
            if role in ("tool", "function"):
                raise unsupported(f"messages[{i}].role", f" (role {role!r}: tools are not available)")
            raise invalid(f"Invalid 'messages[{i}].role': {role!r}.", f"messages[{i}].role")
        for key in m:
            if key in ("tool_calls", "function_call") and m[key]:
                raise unsupported(f"messages[{i}].{key}")
        name = m.get("name")
        out.append(Message(role=_ROLES[role], content=_content(m, i), name=name if isinstance(name, str) else None))
    return out


def _stop(body: dict) -> list[str] | None:
    stop = body.get("stop")
    if stop is None:
        return None
    stops = [stop] if isinstance(stop, str) else stop
    if not isinstance(stops, list) or not all(isinstance(s, str) for s in stops) or len(stops) > 4:
        raise invalid("Invalid 'stop': expected a string or a list of up to 4 strings.", "stop")
    return [s for s in stops if s] or None


def _response_format(body: dict) -> dict | None:
    """The schema a reply must follow (json_object: any object), or None for text."""
    rf = body.get("response_format")
    if rf is None:
        return None
    kind = rf.get("type") if isinstance(rf, dict) else None
    if kind == "text":
        return None
    if kind == "json_object":
        return {"name": "json_object", "schema": {"type": "object"}, "strict": False}
    if kind == "json_schema":
        spec = rf.get("json_schema")
        if not isinstance(spec, dict) or not isinstance(spec.get("schema", {}), dict):
            raise invalid("Invalid 'response_format.json_schema': expected an object with a 'schema'.",
                          "response_format.json_schema")
        schema = spec.get("schema") or {"type": "object"}
        return {"name": str(spec.get("name") or "response"), "schema": schema,
                "strict": bool(spec.get("strict", False))}
    raise invalid(f"Invalid 'response_format.type': {kind!r}; use text, json_object or json_schema.",
                  "response_format.type")


def parse_chat(body: Any) -> ChatParams:
    """A request body as :class:`ChatParams`, or an :class:`ApiError` saying what is wrong with it."""
    if not isinstance(body, dict):
        raise invalid("The request body must be a JSON object.")
    for key, value in body.items():
        if key in _KNOWN or key in _IGNORED:
            continue
        if key in _DEFAULT_ONLY:
            if value is None or value in _DEFAULT_ONLY[key]:
                continue
            raise unsupported(key, f" (only {_DEFAULT_ONLY[key][0]!r})")
        raise unsupported(key)
    model = body.get("model")
    if model is not None and not isinstance(model, str):
        raise invalid("Invalid 'model': expected a string.", "model")
    stream = body.get("stream") or False
    options = body.get("stream_options") or {}
    if not isinstance(options, dict) or set(options) - {"include_usage", "include_obfuscation"}:
        raise unsupported("stream_options", " (only include_usage)")
    max_tokens = _positive_int(body, "max_completion_tokens") or _positive_int(body, "max_tokens")
    seed = body.get("seed")
    if seed is not None and (isinstance(seed, bool) or not isinstance(seed, int)):
        raise invalid("Invalid 'seed': expected an integer.", "seed")
    return ChatParams(
        messages=_messages(body), model=model or None, temperature=_number(body, "temperature", 0, 2),
        top_p=_number(body, "top_p", 0, 1), max_tokens=max_tokens, stop=_stop(body), seed=seed,
        stream=bool(stream), include_usage=bool(options.get("include_usage")), json_schema=_response_format(body),
        knowledge=bool(body.get("knowledge")), logprobs=_logprobs(body),
    )


def _logprobs(body: dict) -> int | None:
    asked, top = body.get("logprobs"), body.get("top_logprobs")
    if asked is not None and not isinstance(asked, bool):
        raise invalid(f"Invalid 'logprobs': expected a boolean, got {asked!r}.", "logprobs")
    if top is not None and (isinstance(top, bool) or not isinstance(top, int) or not 0 <= top <= 20):
        raise invalid(f"Invalid 'top_logprobs': expected an integer from 0 to 20, got {top!r}.", "top_logprobs",
                      "invalid_value")
    if top and not asked:
        raise invalid("Invalid 'top_logprobs': 'logprobs' must be true when 'top_logprobs' is set.",
                      "top_logprobs")
    return (top or 0) if asked else None


def logprobs_body(tokens: list[TokenLogprob] | None) -> dict[str, Any] | None:
    """Token log-probabilities in OpenAI's shape (``choices[].logprobs``); None when there are none."""
    if tokens is None:
        return None

    def entry(token: str, logprob: float) -> dict[str, Any]:
        return {"token": token, "logprob": logprob, "bytes": list(token.encode())}

    return {"content": [{**entry(t.token, t.logprob), "top_logprobs": [entry(a, v) for a, v in t.top]}
                        for t in tokens], "refusal": None}


# -- answers ------------------------------------------------------------------------------------------------

def usage_body(prompt: int, completion: int, cost_usd: float | None = None) -> dict[str, Any]:
    out: dict[str, Any] = {"prompt_tokens": prompt, "completion_tokens": completion,
                           "total_tokens": prompt + completion}
    if cost_usd is not None:
        out["cost_usd"] = round(cost_usd, 8)  # an aigc extension; clients that do not know it ignore it
    return out


def completion_body(rid: str, model: str, text: str, finish: str | None, usage: dict[str, Any],
                    logprobs: dict[str, Any] | None = None) -> dict[str, Any]:
    return {
        "id": rid, "object": "chat.completion", "created": int(time.time()), "model": model,
        "system_fingerprint": None,
        "choices": [{"index": 0, "message": {"role": "assistant", "content": text, "refusal": None},
                     "logprobs": logprobs, "finish_reason": finish or "stop"}],
        "usage": usage,
    }


def chunk(rid: str, model: str, created: int, delta: dict[str, Any] | None, finish: str | None = None,
          usage: dict[str, Any] | None = None, with_usage_field: bool = False,
          logprobs: dict[str, Any] | None = None) -> bytes:
    """One server-sent event of a streamed completion."""
    event: dict[str, Any] = {"id": rid, "object": "chat.completion.chunk", "created": created, "model": model,
                             "system_fingerprint": None,
                             "choices": [] if delta is None else [
                                 {"index": 0, "delta": delta, "logprobs": logprobs, "finish_reason": finish}]}
    if with_usage_field:
        event["usage"] = usage
    return b"data: " + json.dumps(event, ensure_ascii=False).encode() + b"\n\n"


def error_event(error: ApiError) -> bytes:
    """An error after a stream has started: sent as an event, as OpenAI does."""
    return b"data: " + json.dumps(error.body()).encode() + b"\n\n"

