"""Errors as OpenAI sends them: ``{"error": {"message", "type", "param", "code"}}`` with the right status.

Handlers raise :class:`ApiError`; aigc's own errors are translated by :func:`from_aigc`; one exception handler in
the app writes both. Headers tell the openai SDK (and other clients) whether retrying helps:
``x-should-retry: false`` where it cannot (an exhausted budget, an upstream failure aigc already retried),
``retry-after`` / ``retry-after-ms`` where waiting does (rate limits, a full queue).
"""

from __future__ import annotations

import math
from typing import Any

from .. import errors as aigc_errors

__all__ = ["ApiError", "from_aigc", "context_exceeded", "unsupported", "invalid"]


class ApiError(Exception):
    """An HTTP error answer in OpenAI's shape."""

    def __init__(self, status: int, message: str, *, type: str = "invalid_request_error", code: str | None = None,
                 param: str | None = None, retry_after: float | None = None, should_retry: bool | None = None):
        super().__init__(message)
        self.status, self.message, self.type, self.code, self.param = status, message, type, code, param
        self.retry_after, self.should_retry = retry_after, should_retry

    def body(self) -> dict[str, Any]:
        return {"error": {"message": self.message, "type": self.type, "param": self.param, "code": self.code}}

    def headers(self) -> dict[str, str]:
        out = {}
        if self.retry_after is not None:
            out["retry-after"] = str(max(1, math.ceil(self.retry_after)))
            out["retry-after-ms"] = str(max(1, math.ceil(self.retry_after * 1000)))
        if self.should_retry is not None:
            out["x-should-retry"] = "true" if self.should_retry else "false"
        return out


def invalid(message: str, param: str | None = None, code: str | None = None) -> ApiError:
    return ApiError(400, message, param=param, code=code)


def unsupported(param: str, detail: str = "") -> ApiError:
    return ApiError(400, f"Unsupported parameter: '{param}' is not supported by this server{detail}.",
                    param=param, code="unsupported_parameter")


def context_exceeded(window: int, prompt: int, completion: int) -> ApiError:
    return ApiError(
        400,
        f"This model's maximum context length is {window} tokens. However, you requested {prompt + completion} "
        f"tokens ({prompt} in the messages, {completion} in the completion). Please reduce the length of the "
        "messages or completion.",
        param="messages", code="context_length_exceeded")


def from_aigc(e: aigc_errors.AigcError) -> ApiError:
    """The answer for an aigc error that reached the server (after aigc's own retries)."""
    message = e.message
    if isinstance(e, aigc_errors.BudgetExceeded):
        return ApiError(429, f"This key's budget is used up: {message}", type="insufficient_quota",
                        code="insufficient_quota", should_retry=False)
    if isinstance(e, aigc_errors.QuotaExhausted):
        return ApiError(429, message, type="insufficient_quota", code="insufficient_quota", should_retry=False)
    if isinstance(e, aigc_errors.ContextLengthExceeded):
        return ApiError(400, message, param="messages", code="context_length_exceeded")
    if isinstance(e, aigc_errors.RateLimited):  # the upstream kept refusing through aigc's retries
        return ApiError(429, message, type="requests", code="rate_limit_exceeded", should_retry=False)
    if isinstance(e, aigc_errors.RequestTimeout):
        return ApiError(504, message, type="timeout_error", code="timeout", should_retry=False)
    if isinstance(e, aigc_errors.TransientError):
        return ApiError(502, message, type="server_error", code="upstream_error", should_retry=False)
    if isinstance(e, aigc_errors.ModelNotFound):
        return ApiError(404, message, code="model_not_found")
    if isinstance(e, aigc_errors.PermissionDenied):
        return ApiError(403, message, type="permission_error")
    if isinstance(e, aigc_errors.AuthenticationFailed):  # the gateway's own upstream key: not the caller's fault
        return ApiError(502, message, type="server_error", code="upstream_auth_failed", should_retry=False)
    if isinstance(e, aigc_errors.BadRequest):
        return ApiError(400, message, code=e.code)
    if isinstance(e, (aigc_errors.InputError, aigc_errors.TemplateError)):
        return ApiError(400, message)
    if isinstance(e, aigc_errors.OutputInvalid):
        return ApiError(500, message, type="server_error", code="output_invalid", should_retry=False)
    return ApiError(500, message, type="server_error", should_retry=False)
