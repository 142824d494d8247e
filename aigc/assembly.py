"""What a client is built from besides its backend, each built once from the settings and handed over:
the usage ledger, the response cache, the chain of fallback engines and the moderation endpoint."""

from __future__ import annotations

import dataclasses
from typing import TYPE_CHECKING, Any

from .backends.base import Backend, backend_names, create_backend
from .engine import Engine
from .failover import parse_fallbacks

if TYPE_CHECKING:
    from .accounting import Accounting
    from .cache import ResponseCache
    from .config import Settings
    from .ledger import Ledger
    from .retry import RetryPolicy

__all__ = ["open_ledger", "open_cache", "fallback_engine", "open_moderator"]


def open_ledger(settings: Settings) -> Ledger | None:
    if not settings.ledger:
        return None
    from .ledger import Ledger

    return Ledger(settings.data_dir / "ledger.db", store_prompts=settings.ledger_prompts)


def open_cache(settings: Settings, cache: bool | ResponseCache | None) -> tuple[ResponseCache | None, bool]:
    """The response cache to use, and whether the client opened it (and so closes it)."""
    if cache is None or cache is False:
        return None, False
    if cache is True:
        from .cache import ResponseCache

        return ResponseCache.in_dir(settings.data_dir), True
    return cache, False


def fallback_engine(settings: Settings, retry: RetryPolicy, accounting: Accounting) -> tuple[Engine | None,
                                                                                          list[Backend]]:
    """The chain of engines the ``fallback`` setting names, first one first, and their backends. Each has its
    own backend and model and shares the budgets, ledger and cache; not the rate gate, which keeps the first
    server's limits."""
    engine, backends = None, []
    if not any(v.strip() for v in settings.fallback):  # (naming the plugins installed reads every package's
        return engine, backends                          # metadata: about 8 ms)
    for spec in reversed(parse_fallbacks(settings.fallback, backend_names())):
        own = settings.model_copy(update={"backend": spec.backend, "model": spec.model, "fallback": []})
        backend = create_backend(own)
        backends.insert(0, backend)
        books = dataclasses.replace(accounting, backend=backend.name, gate=None,
                                    base_url=own.base_url if spec.backend == "openai" else None)
        engine = Engine(backend, own, retry, books, concurrency=own.concurrency, fallback=engine)
    return engine, backends


def open_moderator(backend: Backend, settings: Settings) -> tuple[Any, Backend | None]:
    """The moderation endpoint, and a backend opened just for it (to close with the client): the backend's
    own endpoint; with ``moderate`` on a backend without one (local), the hosted API's when a key is
    configured (it then sees only the texts it checks)."""
    moderator = backend.moderation_api()
    if moderator is None and settings.moderate and settings.key:
        hosted = create_backend(settings.model_copy(update={"backend": "openai", "base_url": None}))
        return hosted.moderation_api(), hosted
    return moderator, None
