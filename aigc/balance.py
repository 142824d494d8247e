"""Spreading one client's requests over several OpenAI-compatible servers, with health checks.

Replicas of ``aigc serve`` (or vLLM, or any compatible server) behind no load balancer can still share a
client's work: give the client an HTTP transport that sends each request to the healthy server with the fewest
requests in flight::

    http = httpx2.AsyncClient(transport=AsyncBalancingTransport(["http://a:8000/v1", "http://b:8000/v1"]))
    sdk = openai.AsyncOpenAI(base_url="http://a:8000/v1", api_key=key, max_retries=0, http_client=http)
    backend = OpenAIBackend(settings, async_client=sdk)          # or: balanced_clients(urls, key)

A server that refuses a connection, times out or answers 502/503/504 is set aside for ``cooldown`` seconds
(doubling while it keeps failing, up to ``max_cooldown``); when its time is up, its ``/health`` is probed before
it gets traffic again. The transport never retries: the failed request surfaces to aigc's one retry layer, whose
next attempt goes to another server. Each response says where it was served in ``x-aigc-upstream``.
"""

from __future__ import annotations

import itertools
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import httpx2

from .backends.openai.discovery import server_root
from .ratelimit import aleaving, leaving

__all__ = ["Upstream", "Upstreams", "BalancingTransport", "AsyncBalancingTransport", "balanced_clients"]

_FAILING = {502, 503, 504}


@dataclass(eq=False)
class Upstream:
    base_url: str
    inflight: int = 0
    failures: int = 0
    down_until: float = 0.0

    @property
    def health_url(self) -> str:
        return server_root(self.base_url) + "/health"


class Upstreams:
    """The servers and their health: the decisions, shared by the sync and async transports."""

    def __init__(self, base_urls: Sequence[str], *, cooldown: float = 2.0, max_cooldown: float = 60.0,
                 clock: Callable[[], float] = time.monotonic) -> None:
        if not base_urls:
            raise ValueError("give at least one base URL")
        self.servers = [Upstream(u.rstrip("/")) for u in base_urls]
        self.cooldown, self.max_cooldown, self.clock = cooldown, max_cooldown, clock
        self._order = itertools.count()
        self._lock = threading.Lock()

    def pick(self) -> tuple[Upstream, bool]:
        """The server for the next request, and whether to probe its health first (it was down)."""
        with self._lock:
            now = self.clock()
            healthy = [s for s in self.servers if s.down_until <= now]
            if healthy:
                turn = next(self._order)
                # Fewest in flight; ties taken in turn so equal servers share the load.
                chosen = min(healthy, key=lambda s: (s.inflight, (self.servers.index(s) - turn) % len(self.servers)))
            else:  # everyone is down: try the one that comes back first
                chosen = min(self.servers, key=lambda s: s.down_until)
            chosen.inflight += 1
            return chosen, chosen.failures > 0

    def done(self, server: Upstream, ok: bool) -> None:
        with self._lock:
            server.inflight -= 1
            if ok:
                server.failures, server.down_until = 0, 0.0
            else:
                server.failures += 1
                wait = min(self.max_cooldown, self.cooldown * 2 ** (server.failures - 1))
                server.down_until = self.clock() + wait

    def probed(self, server: Upstream, status: int) -> None:
        """What ``server``'s ``/health`` answered before it gets traffic again: anything but 200 keeps it out."""
        if status != 200:
            raise httpx2.ConnectError(f"{server.health_url} answered {status}")

    def answered(self, server: Upstream, response: Any) -> Any:
        """``server`` answered: a 502/503/504 sets it aside; the response says where it was served."""
        self.done(server, ok=response.status_code not in _FAILING)
        response.headers["x-aigc-upstream"] = server.base_url
        return response

    def moved(self, request: Any, server: Upstream) -> Any:
        """``request`` (built on the first base URL by the SDK) sent to ``server`` instead."""
        target = httpx2.URL(self.route(str(request.url), server))
        headers = [(k, v) if k.lower() != b"host" else (k, target.netloc) for k, v in request.headers.raw]
        return httpx2.Request(request.method, target, headers=headers, stream=request.stream,
                              extensions=request.extensions)

    def route(self, url: str, server: Upstream) -> str:
        """``url`` (built on the first base URL by the SDK) moved onto ``server``."""
        primary = self.servers[0].base_url
        return server.base_url + url[len(primary):] if url.startswith(primary) else url


class BalancingTransport(httpx2.BaseTransport):
    """A sync ``httpx2`` transport over several base URLs."""

    def __init__(self, base_urls: Sequence[str], *, transport: Any = None, **options: Any) -> None:
        self.upstreams = Upstreams(base_urls, **options)
        self._inner = transport or httpx2.HTTPTransport()

    def handle_request(self, request: Any) -> Any:
        ups = self.upstreams
        server, probe = ups.pick()
        try:
            if probe:
                health = self._inner.handle_request(httpx2.Request("GET", server.health_url))
                health.close()
                ups.probed(server, health.status_code)
            response = self._inner.handle_request(ups.moved(request, server))
        except httpx2.TransportError:
            ups.done(server, ok=False)
            raise
        return ups.answered(server, response)

    def close(self) -> None:
        self._inner.close()

    def __enter__(self) -> BalancingTransport:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class AsyncBalancingTransport(httpx2.AsyncBaseTransport):
    """The async twin of :class:`BalancingTransport` (the same :class:`Upstreams` decisions)."""

    def __init__(self, base_urls: Sequence[str], *, transport: Any = None, **options: Any) -> None:
        self.upstreams = Upstreams(base_urls, **options)
        self._inner = transport or httpx2.AsyncHTTPTransport()

    async def handle_async_request(self, request: Any) -> Any:
        ups = self.upstreams
        server, probe = ups.pick()
        try:
            if probe:
                health = await self._inner.handle_async_request(httpx2.Request("GET", server.health_url))
                await health.aclose()
                ups.probed(server, health.status_code)
            response = await self._inner.handle_async_request(ups.moved(request, server))
        except httpx2.TransportError:
            ups.done(server, ok=False)
            raise
        return ups.answered(server, response)

    async def aclose(self) -> None:
        await self._inner.aclose()

    async def __aenter__(self) -> AsyncBalancingTransport:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()


def balanced_clients(base_urls: Sequence[str], api_key: str | None, *, timeout: float = 60.0,
                     **options: Any) -> tuple[Any, Any]:
    """An ``openai.OpenAI`` and an ``openai.AsyncOpenAI`` that spread requests over ``base_urls`` (SDK retries
    off: aigc's retry layer owns retrying), for ``OpenAIBackend(settings, client=..., async_client=...)``."""
    import openai

    common = dict(base_url=base_urls[0], api_key=api_key or "not-needed", max_retries=0, timeout=timeout)
    sync = openai.OpenAI(**common, http_client=httpx2.Client(
        transport=BalancingTransport(base_urls, **options), timeout=timeout, event_hooks={"request": [leaving]}))
    asynchronous = openai.AsyncOpenAI(**common, http_client=httpx2.AsyncClient(
        transport=AsyncBalancingTransport(base_urls, **options), timeout=timeout,
        event_hooks={"request": [aleaving]}))
    return sync, asynchronous
