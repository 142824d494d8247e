"""The app factory and the operational endpoints.

    app = create_app(core, ServeOptions(...), keys=KeyStore.in_dir(data_dir))

Routes: ``/`` (the chat page), ``/health`` (alive), ``/ready`` (503 while loading or draining), ``/metrics``,
``/v1/models``, ``/v1/chat/completions``, ``/v1/tasks/{task}`` and ``/v1/serve/info`` (what the page shows).
The model is loaded once, by the lifespan, in the background: ``/health`` answers at once and ``/ready`` when
the model is there. Every error leaves through one handler, in OpenAI's error shape.
"""

from __future__ import annotations

import asyncio
import functools
import logging
from contextlib import asynccontextmanager
from importlib import resources
from typing import Any

from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import HTMLResponse, JSONResponse, Response
from starlette.routing import Route

from ..errors import AigcError
from .chat import chat_completions
from .core import Core
from .errors import ApiError, from_aigc
from .keys import KeyStore
from .knowledge import Knowledge
from .state import ServeOptions, ServeState
from .tasks import run_task, served_tasks

__all__ = ["create_app"]

log = logging.getLogger("aigc.serve")


async def _health(request: Request) -> Response:
    return JSONResponse({"status": "ok"})


async def _ready(request: Request) -> Response:
    state: ServeState = request.app.state.serve
    if state.draining:
        return JSONResponse({"status": "draining"}, status_code=503)
    if state.load_error is not None:
        return JSONResponse({"status": "failed", "error": state.load_error}, status_code=503)
    if not state.ready:
        return JSONResponse({"status": "loading"}, status_code=503)
    return JSONResponse({"status": "ready", "model": state.core.model})


async def _metrics(request: Request) -> Response:
    body, kind = request.app.state.serve.metrics.render()
    return Response(body, media_type=kind)


async def _models(request: Request) -> Response:
    state: ServeState = request.app.state.serve
    state.authenticate(request.headers.get("authorization"))
    data = [{"id": m, "object": "model", "created": 0, "owned_by": f"aigc-{state.core.backend_name}"}
            for m in state.served_models()]
    return JSONResponse({"object": "list", "data": data})


async def _info(request: Request) -> Response:
    return JSONResponse(request.app.state.serve.info())


async def _page(request: Request) -> Response:
    return HTMLResponse(_chat_page(), headers={"cache-control": "no-cache"})


@functools.cache
def _chat_page() -> str:
    """The chat page, read from the package once."""
    return resources.files("aigc.serve").joinpath("page/chat.html").read_text(encoding="utf-8")


async def _error(request: Request, exc: Exception) -> Response:
    state: ServeState = request.app.state.serve
    if isinstance(exc, AigcError):
        exc = from_aigc(exc)
    elif isinstance(exc, HTTPException):
        exc = ApiError(exc.status_code, f"{exc.detail}: {request.method} {request.url.path}",
                       code="not_found" if exc.status_code == 404 else None)
    elif not isinstance(exc, ApiError):
        log.exception("unexpected error in %s", request.url.path)
        exc = ApiError(500, "The server failed unexpectedly; see its log.", type="server_error")
    info = request.scope.get("state", {}).get("aigc")
    if info is not None:
        info["error"] = exc.code or exc.type
    headers = {**exc.headers(), "x-aigc-backend": state.core.backend_name}
    return JSONResponse(exc.body(), status_code=exc.status, headers=headers)


def create_app(core: Core, options: ServeOptions | None = None, *, keys: KeyStore | None = None,
               knowledge: Knowledge | None = None) -> Starlette:
    """The ASGI app over ``core``. ``keys=None`` turns authentication off (see :func:`aigc.serve.run`)."""
    from .asgi import ServeMiddleware

    state = ServeState(core, options or ServeOptions(), keys, knowledge)

    @asynccontextmanager
    async def lifespan(app: Starlette):
        async def load() -> None:
            try:
                await asyncio.to_thread(core.load)
                state.ready = True
            except AigcError as e:
                state.load_error = str(e)
                log.error("cannot load the model: %s", e)

        loading = asyncio.create_task(load())
        try:
            yield
        finally:
            state.ready = False
            loading.cancel()
            await core.aclose()
            if keys is not None:
                keys.close()

    routes = [
        Route("/", _page), Route("/health", _health), Route("/ready", _ready), Route("/metrics", _metrics),
        Route("/v1/models", _models), Route("/v1/serve/info", _info),
        Route("/v1/chat/completions", chat_completions, methods=["POST"]),
        Route("/v1/tasks/{task}", run_task, methods=["POST"]),
    ]
    handlers: dict[Any, Any] = {Exception: _error, ApiError: _error, AigcError: _error, HTTPException: _error}
    app = Starlette(routes=routes, exception_handlers=handlers, lifespan=lifespan)
    app.state.serve = state
    endpoints = {r.path for r in routes} | {f"/v1/tasks/{t}" for t in served_tasks()}

    def done(path: str, status: int) -> None:
        state.metrics.requests.labels(path if path in endpoints else "other", str(status)).inc()

    app.add_middleware(ServeMiddleware, max_body=state.options.max_body_bytes,
                       on_cancel=state.metrics.cancelled.inc, on_done=done)
    return app
