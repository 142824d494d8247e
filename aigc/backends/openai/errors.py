"""SDK exceptions → aigc's error tree, with secrets scrubbed and the server's own reason kept.

The aigc error never keeps the SDK exception reachable: that exception holds the request, with its
``Authorization`` header. ``raise ... from None`` only hides the chain from tracebacks (``__context__``
still holds it), so callers translate inside ``except`` and raise the translation after it.
"""

from __future__ import annotations

import email.utils
import re
import sys
import time
from collections.abc import Iterable
from typing import Any

import openai

from ... import errors
from ...redact import scrub

__all__ = ["scrub", "parse_retry_after", "is_transport_error", "translate_error"]


def parse_retry_after(headers: Any) -> float | None:
    """Seconds from ``retry-after-ms`` or ``retry-after`` (seconds or an HTTP date); None if absent."""
    if headers is None:
        return None
    for name, scale in (("retry-after-ms", 1000.0), ("retry-after", 1.0)):
        value = headers.get(name)
        if not value:
            continue
        try:
            return max(0.0, float(value) / scale)
        except ValueError:
            pass
        if name == "retry-after":
            when = email.utils.parsedate_to_datetime(value) if value else None
            if when is not None:
                return max(0.0, when.timestamp() - time.time())
    return None


def is_transport_error(e: BaseException) -> bool:
    """A connection that broke while a streamed body was being read (the SDK does not wrap these)."""
    for name in ("httpx2", "httpx"):
        module = sys.modules.get(name)
        if module is not None and isinstance(e, module.TransportError):
            return True
    return False


def _error_message(e: openai.APIStatusError) -> str:
    """The server's own reason, in one line: OpenAI's ``error.message``, FastAPI's ``detail`` (a text or a
    list of validation errors), or the body's text."""
    body = e.body
    text = None
    if isinstance(body, dict):
        inner = body.get("error", body)
        if isinstance(inner, dict) and inner.get("message"):
            text = inner["message"]
        elif isinstance(inner, str) and inner.strip():
            text = inner
        elif "detail" in body:
            text = _detail(body["detail"])
    elif isinstance(body, str) and body.strip():
        text = body
    return one_line(str(text) if text else e.message)


def _detail(detail: Any) -> str:
    if isinstance(detail, list):  # FastAPI's validation errors: [{"loc": [...], "msg": ...}, ...]
        parts = []
        for item in detail[:5]:
            if isinstance(item, dict):
                loc = ".".join(str(p) for p in item.get("loc") or [] if p != "body")
                parts.append(f"{loc}: {item.get('msg', '')}" if loc else str(item.get("msg", "")))
            else:
                parts.append(str(item))
        return "; ".join(parts)
    if isinstance(detail, dict):
        return str(detail.get("message") or detail.get("msg") or detail)
    return str(detail)


def one_line(text: str, limit: int = 600) -> str:
    """``text`` with its lines and runs of spaces folded into single spaces, cut at ``limit`` characters."""
    folded = " ".join(text.split())
    return folded if len(folded) <= limit else folded[: limit - 1].rstrip() + "…"


# A context-length refusal, however a server words it: OpenAI, vLLM and llama-cpp-python ("maximum context
# length is N tokens"), llama-cpp-python's own ValueError, llama.cpp ("exceeds the available context
# size"), LiteLLM (ContextWindowExceededError around any of these).
_CONTEXT_TEXT = re.compile(r"maximum context length|context window|exceeds? the available context size|"
                           r"ContextWindowExceededError|context_length_exceeded", re.I)
_WINDOW = (re.compile(r"maximum context length is (\d+)", re.I),
           re.compile(r"exceeds? (?:the )?context window of (\d+)", re.I))
_PROMPT = (re.compile(r"\((\d+) in the messages", re.I), re.compile(r"request has (\d+) input tokens", re.I),
           re.compile(r"Requested tokens \((\d+)\)", re.I))


def context_error(status: int, code: str | None, message: str, body: Any) -> tuple[int | None, int | None] | None:
    """(window, prompt tokens) the server named when this error is a context-length refusal; None otherwise."""
    inner = body.get("error", body) if isinstance(body, dict) else None
    fields = inner if isinstance(inner, dict) else {}
    if not (code == "context_length_exceeded" or fields.get("type") == "exceed_context_size_error"
            or (status in (400, 413, 422, 500) and _CONTEXT_TEXT.search(message))):
        return None
    window = _first_int(_WINDOW, message) or _int(fields.get("n_ctx"))
    prompt = _first_int(_PROMPT, message) or _int(fields.get("n_prompt_tokens"))
    return window, prompt


def _first_int(patterns: tuple[re.Pattern, ...], text: str) -> int | None:
    for pattern in patterns:
        if m := pattern.search(text):
            return int(m.group(1))
    return None


def _int(value: Any) -> int | None:
    return value if isinstance(value, int) and not isinstance(value, bool) and value > 0 else None


def translate_error(e: BaseException, *, key: str | Iterable[str | None] | None, where: str) -> errors.AigcError:
    """Map an SDK exception onto aigc's error tree; ``key``: the secrets to scrub (the API key and those of
    the base URL); ``where``: the server, already redacted."""
    if isinstance(e, errors.AigcError):
        return e
    if isinstance(e, openai.APITimeoutError):
        return errors.RequestTimeout(f"no answer from {where} in time; raise timeout= or check the server")
    if isinstance(e, openai.APIConnectionError):
        cause = e.__cause__ or e.__context__
        detail = f": {scrub(str(cause), key)}" if cause else ""
        return errors.ConnectionFailed(f"connection to {where} failed{detail}; check base_url and the network")
    if is_transport_error(e):
        return errors.ConnectionFailed(f"connection to {where} broke: {scrub(str(e) or type(e).__name__, key)}")
    if not isinstance(e, openai.APIStatusError):
        return errors.BackendError(scrub(f"{type(e).__name__}: {e}", key))
    status, code = e.status_code, e.code
    msg = scrub(_error_message(e), key)
    kw = dict(status_code=status, request_id=e.request_id, code=code)
    retry_after = parse_retry_after(e.response.headers)
    context = context_error(status, code, msg, e.body)
    if context is not None:
        window, prompt = context
        return errors.ContextLengthExceeded(f"prompt too long for the model at {where}: {msg}", window=window,
                                            prompt_tokens=prompt, **kw)
    if status == 429 and code == "insufficient_quota":
        return errors.QuotaExhausted(f"quota exhausted at {where}: {msg} Add credit or raise the limit; "
                                     "retrying will not help", **kw)
    if status == 429:
        from .wire import rate_limits

        return errors.RateLimited(f"rate limited by {where}: {msg}", retry_after=retry_after,
                                  limits=rate_limits(e.response.headers), **kw)
    if status in (408, 409) or status >= 500:
        return errors.ServerError(f"{where} failed with HTTP {status}: {msg}", retry_after=retry_after, **kw)
    if status == 401:
        return errors.AuthenticationFailed(
            f"{where} rejected the API key (HTTP 401): {msg} Set OPENAI_API_KEY or api_key in the config file",
            **kw)
    if status == 403:
        return errors.PermissionDenied(f"{where} refused access (HTTP 403): {msg}", **kw)
    if status == 404:
        hint = ""
        if where.startswith("http") and not where.rstrip("/").endswith("/v1"):
            hint = f" (compatible servers usually answer under /v1: try base_url {where.rstrip('/')}/v1)"
        return errors.ModelNotFound(f"{where} has no such model or endpoint (HTTP 404): {msg} "
                                    f"Check --model and base_url{hint}", **kw)
    return errors.BadRequest(f"{where} rejected the request (HTTP {status}): {msg}", **kw)
