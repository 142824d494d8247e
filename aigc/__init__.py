"""aigc: summaries, translations, news drafts and answers from language models.

    from aigc import summarize, translate, answer, news, classify, sentiment
    print(summarize(article, length="3 sentences"))

The module-level functions use a default :class:`Client` built from configuration (see
:mod:`aigc.config`); :func:`configure` replaces it. ``Client``/``AsyncClient`` give full control.
Names are imported when first used, so ``import aigc`` (and the ``aigc`` command) stay light.
"""

from __future__ import annotations

import importlib
import threading
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from .client import Client
    from .streams import TextStream
    from .types import Result

__all__ = [
    "summarize", "translate", "answer", "news", "write_news", "chat", "classify", "sentiment", "generate",
    "configure", "get_client",
    "Client", "AsyncClient", "TextStream", "AsyncTextStream", "Result", "Usage", "Message",
    "ChatRequest", "Completion", "StreamDelta", "Settings", "load_settings", "RetryPolicy", "Budget",
    "RateGate", "Accounting", "Task", "Param", "register_task", "get_task",
    "Conversation", "AsyncConversation", "Classification", "Redactor",
    "Backend", "BaseBackend", "FakeBackend", "register_backend",
    "AigcError", "ConfigError", "BackendUnavailable", "InputError", "OutputError", "TemplateError",
    "TemplateVariableMissing", "BudgetExceeded", "OutputInvalid", "FactCheckFailed", "ContentFlagged",
    "BackendError", "TransientError",
    "RateLimited", "ServerError", "RequestTimeout", "ConnectionFailed", "QuotaExhausted",
    "AuthenticationFailed", "PermissionDenied", "ModelNotFound", "BadRequest", "ContextLengthExceeded",
]

# Where each public name lives.
_HOMES = {
    "Client": "client", "AsyncClient": "client", "TextStream": "streams", "AsyncTextStream": "streams",
    "Result": "types", "Usage": "types", "Message": "types", "ChatRequest": "types", "Completion": "types",
    "StreamDelta": "types", "Settings": "config", "load_settings": "config", "RetryPolicy": "retry",
    "Budget": "budget", "RateGate": "ratelimit", "Accounting": "accounting", "Task": "tasks", "Param": "tasks",
    "register_task": "tasks", "get_task": "tasks", "Backend": "backends.base", "BaseBackend": "backends.base",
    "register_backend": "backends.base", "FakeBackend": "backends.fake", "Conversation": "conversations",
    "AsyncConversation": "conversations", "Classification": "classify", "Redactor": "pii",
    **{name: "errors" for name in __all__[__all__.index("AigcError"):]},
}

_default: Client | None = None
_lock = threading.Lock()


def __getattr__(name: str) -> Any:
    home = _HOMES.get(name)
    if home is None:
        raise AttributeError(f"module 'aigc' has no attribute {name!r}")
    value = getattr(importlib.import_module(f".{home}", __name__), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))


def configure(**settings: Any) -> Client:
    """Replace the default client used by the module-level functions (same arguments as Client)."""
    from .client import Client

    global _default
    with _lock:
        old, _default = _default, Client(**settings)
    if old is not None:
        old.close()
    return _default


def get_client() -> Client:
    """The default client, built from configuration on first use."""
    from .client import Client

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


def news(facts: str, **kw: Any) -> Result | TextStream:
    """Write a news article from ``facts`` (``style=``, ``length=``)."""
    return get_client().news(facts, **kw)


write_news = news


def chat(messages: list[Any], **kw: Any) -> Result | TextStream:
    """Send chat messages as they are: ``chat([{"role": "user", "content": "Hi"}])``."""
    return get_client().chat(messages, **kw)


def classify(text: str, *, labels: list[str], **kw: Any) -> Result | TextStream:
    """A label for ``text`` from ``labels`` (``multi=True``: every one that applies), with a reason and,
    where the backend gives one, a confidence: ``classify(ticket, labels=["billing", "shipping"])``."""
    return get_client().classify(text, labels=labels, **kw)


def sentiment(text: str, **kw: Any) -> Result | TextStream:
    """positive, negative or neutral, with a reason: ``sentiment(review).text``."""
    return get_client().sentiment(text, **kw)


def generate(template: str, variables: dict[str, Any] | None = None, **kw: Any) -> Result | TextStream:
    """Render a template (built-in or yours) and send it: ``generate("news", facts=..., style=...)``."""
    return get_client().generate(template, variables, **kw)
