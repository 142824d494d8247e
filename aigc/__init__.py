"""aigc: summaries, translations, news drafts and answers from language models.

    from aigc import summarize, translate, answer, write_news
    print(summarize(article, length="3 sentences"))

The module-level functions use a default :class:`Client` built from configuration (see
:mod:`aigc.config`); :func:`configure` replaces it. ``Client``/``AsyncClient`` give full control.
"""

from __future__ import annotations

import threading
from typing import Any

from .backends.base import Backend, BaseBackend, register_backend
from .backends.fake import FakeBackend
from .client import AsyncClient, AsyncTextStream, Client, TextStream
from .config import Settings, load_settings
from .errors import (
    AigcError,
    AuthenticationFailed,
    BackendError,
    BackendUnavailable,
    BadRequest,
    BudgetExceeded,
    ConfigError,
    ConnectionFailed,
    ContextLengthExceeded,
    InputError,
    ModelNotFound,
    OutputInvalid,
    PermissionDenied,
    QuotaExhausted,
    RateLimited,
    RequestTimeout,
    ServerError,
    TemplateError,
    TemplateVariableMissing,
    TransientError,
)
from .retry import RetryPolicy
from .types import ChatRequest, Completion, Message, Result, StreamDelta, Usage

__all__ = [
    "summarize", "translate", "answer", "write_news", "generate", "configure", "get_client",
    "Client", "AsyncClient", "TextStream", "AsyncTextStream", "Result", "Usage", "Message",
    "ChatRequest", "Completion", "StreamDelta", "Settings", "load_settings", "RetryPolicy", "Budget",
    "Backend", "BaseBackend", "FakeBackend", "register_backend",
    "AigcError", "ConfigError", "BackendUnavailable", "InputError", "TemplateError",
    "TemplateVariableMissing", "BudgetExceeded", "OutputInvalid", "BackendError", "TransientError",
    "RateLimited", "ServerError", "RequestTimeout", "ConnectionFailed", "QuotaExhausted",
    "AuthenticationFailed", "PermissionDenied", "ModelNotFound", "BadRequest", "ContextLengthExceeded",
]

_default: Client | None = None
_lock = threading.Lock()


def __getattr__(name: str) -> Any:
    if name == "Budget":  # keeps `import aigc` light; Budget lives in aigc.budget
        from .budget import Budget

        return Budget
    raise AttributeError(f"module 'aigc' has no attribute {name!r}")


def configure(**settings: Any) -> Client:
    """Replace the default client used by the module-level functions (same arguments as Client)."""
    global _default
    with _lock:
        old, _default = _default, Client(**settings)
    if old is not None:
        old.close()
    return _default


def get_client() -> Client:
    """The default client, built from configuration on first use."""
    global _default
    with _lock:
        if _default is None:
            _default = Client()
        return _default


def summarize(text: str, **kw: Any) -> Result | TextStream:
    """Summarize ``text``: ``summarize(article, length="3 sentences")``."""
    return get_client().summarize(text, **kw)


def translate(text: str, *, to: str, **kw: Any) -> Result | TextStream:
    """Translate ``text``: ``translate(page, to="en")`` (``source=`` when known, else detected)."""
    return get_client().translate(text, to=to, **kw)


def answer(question: str, **kw: Any) -> Result | TextStream:
    """Answer ``question`` (``context=`` to answer from a document; ``schema=`` for structured output)."""
    return get_client().answer(question, **kw)


def write_news(facts: str, **kw: Any) -> Result | TextStream:
    """Write a news article from ``facts`` (``style=``, ``length=``)."""
    return get_client().write_news(facts, **kw)


def generate(template: str, variables: dict[str, Any] | None = None, **kw: Any) -> Result | TextStream:
    """Render a template (built-in or your own) and send it: ``generate("news", facts=..., style=...)``."""
    return get_client().generate(template, variables, **kw)
