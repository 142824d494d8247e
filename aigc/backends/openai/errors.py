"""SDK exceptions → aigc's error tree, with secrets scrubbed and the server's own reason kept.

The aigc error never keeps the SDK exception reachable: that exception holds the request, with its
``Authorization`` header. ``raise ... from None`` only hides the chain from tracebacks (``__context__``
still holds it), so callers translate inside ``except`` and raise the translation after it.
"""

from __future__ import annotations

import email.utils
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
    body = e.body
    if isinstance(body, dict):
        inner = body.get("error", body)
        if isinstance(inner, dict) and inner.get("message"):
            return str(inner["message"])
    return e.message


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
        return errors.ModelNotFound(f"{where} has no such model or endpoint (HTTP 404): {msg} "
                                    "Check --model and base_url", **kw)
    if code == "context_length_exceeded":
        return errors.ContextLengthExceeded(f"prompt too long for the model: {msg}", **kw)
    return errors.BadRequest(f"{where} rejected the request (HTTP {status}): {msg}", **kw)
