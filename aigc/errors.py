"""Every error aigc raises.

    AigcError
    ├── ConfigError                  bad or missing setting (e.g. no API key)
    │   └── BackendUnavailable       backend not installed / unknown
    ├── InputError                   input the task cannot use (empty, binary, not UTF-8)
    ├── OutputError                  an output cannot be written (folder missing or read-only, disk full)
    ├── TemplateError                template missing, broken or unsafe
    │   └── TemplateVariableMissing  a variable the template needs was not given
    ├── BudgetExceeded               a request could exceed the token / money cap; nothing was sent
    ├── OutputInvalid                structured output still invalid after the re-asks
    │   └── FactCheckFailed          a news draft states facts its input does not hold (strict)
    ├── ContentFlagged               the moderation check stopped the input or the output
    └── BackendError                 the model server or local model failed
        ├── TransientError           worth retrying (aigc retries these itself)
        │   ├── RateLimited          429 (retry_after in seconds when the server said)
        │   ├── ServerError          5xx, 408, 409
        │   ├── RequestTimeout       no answer in time
        │   └── ConnectionFailed     refused or dropped connection
        ├── QuotaExhausted           429 insufficient_quota: add credit, retrying will not help
        ├── AuthenticationFailed     401
        ├── PermissionDenied         403
        ├── ModelNotFound            404
        └── BadRequest               400 / 422
            └── ContextLengthExceeded

Messages say what to do next. They never contain an API key.
"""

from __future__ import annotations

__all__ = [
    "AigcError",
    "ConfigError",
    "BackendUnavailable",
    "InputError",
    "OutputError",
    "TemplateError",
    "TemplateVariableMissing",
    "BudgetExceeded",
    "OutputInvalid",
    "FactCheckFailed",
    "ContentFlagged",
    "BackendError",
    "TransientError",
    "RateLimited",
    "ServerError",
    "RequestTimeout",
    "ConnectionFailed",
    "QuotaExhausted",
    "AuthenticationFailed",
    "PermissionDenied",
    "ModelNotFound",
    "BadRequest",
    "ContextLengthExceeded",
]


class AigcError(Exception):
    """Base class of every aigc error."""

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message

    def __str__(self) -> str:
        return self.message


class ConfigError(AigcError):
    """A setting is missing or invalid."""


class BackendUnavailable(ConfigError):
    """The chosen backend is unknown or its dependencies are not installed."""


class InputError(AigcError):
    """The input cannot be used by the task."""


class OutputError(AigcError):
    """An output cannot be written: its folder is missing or read-only, the disk is full, a folder is in
    the way. Nothing that was paid for is lost: aigc says where the text went instead."""

    def __init__(self, message: str, *, path: str | None = None) -> None:
        super().__init__(message)
        self.path = path


class TemplateError(AigcError):
    """A template is missing, malformed, or tried something the sandbox forbids."""

    def __init__(self, message: str, *, template: str | None = None) -> None:
        super().__init__(message)
        self.template = template


class TemplateVariableMissing(TemplateError):
    """A template referenced a variable that was not given."""

    def __init__(self, template: str, variable: str) -> None:
        super().__init__(
            f"template {template!r} needs the variable {variable!r}; pass it (CLI: --var {variable}=...)",
            template=template,
        )
        self.variable = variable


class BudgetExceeded(AigcError):
    """Sending the next request could exceed the budget, so it was not sent."""

    def __init__(self, message: str, *, needed_tokens: int = 0, needed_usd: float | None = None) -> None:
        super().__init__(message)
        self.needed_tokens = needed_tokens
        self.needed_usd = needed_usd


class OutputInvalid(AigcError):
    """The model's output did not validate against the requested schema."""

    def __init__(self, message: str, *, text: str = "", errors: str = "") -> None:
        super().__init__(message)
        self.text = text
        self.errors = errors


class FactCheckFailed(OutputInvalid):
    """A news draft holds numbers, dates, names or quotations its facts do not (``strict=True``)."""

    def __init__(self, message: str, *, text: str = "", unsupported: list[str] | None = None) -> None:
        super().__init__(message, text=text, errors="; ".join(unsupported or []))
        self.unsupported = list(unsupported or [])


class ContentFlagged(AigcError):
    """The moderation check stopped an item: its input or its output crossed a category's threshold."""

    def __init__(self, message: str, *, side: str, categories: dict[str, float]) -> None:
        super().__init__(message)
        self.side = side  # "input" or "output"
        self.categories = dict(categories)  # the categories that crossed, with their scores


class BackendError(AigcError):
    """The backend failed to produce a completion."""

    def __init__(
        self,
        message: str,
        *,
        status_code: int | None = None,
        request_id: str | None = None,
        code: str | None = None,
    ) -> None:
        super().__init__(message)
        self.status_code = status_code
        self.request_id = request_id
        self.code = code

    def __str__(self) -> str:
        if self.request_id:
            return f"{self.message} (request id {self.request_id})"
        return self.message


class TransientError(BackendError):
    """A failure that may go away: aigc retries it within the retry policy."""

    retry_after: float | None = None


class RateLimited(TransientError):
    """The server asked us to slow down (HTTP 429). ``limits``: what its rate-limit headers said."""

    def __init__(self, message: str, *, retry_after: float | None = None,
                 limits: dict[str, float] | None = None, **kw) -> None:
        super().__init__(message, **kw)
        self.retry_after = retry_after
        self.limits = limits


class ServerError(TransientError):
    """The server failed (5xx, 408, 409)."""

    def __init__(self, message: str, *, retry_after: float | None = None, **kw) -> None:
        super().__init__(message, **kw)
        self.retry_after = retry_after


class RequestTimeout(TransientError):
    """No answer before the timeout."""


class ConnectionFailed(TransientError):
    """The connection was refused or dropped."""


class QuotaExhausted(BackendError):
    """The account has no quota left; retrying cannot help."""


class AuthenticationFailed(BackendError):
    """The API key was rejected."""


class PermissionDenied(BackendError):
    """The key may not use this model or endpoint."""


class ModelNotFound(BackendError):
    """The model or endpoint does not exist on this server."""


class BadRequest(BackendError):
    """The server rejected the request as malformed."""


class ContextLengthExceeded(BadRequest):
    """The prompt plus requested output is longer than the model's context window."""
