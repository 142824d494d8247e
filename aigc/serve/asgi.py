"""The server's one middleware, in plain ASGI: request ids, the body size limit, client disconnects and the
access log.

Disconnects: a single reader takes the request's messages from the server; once the client goes away before
the answer is complete, the handler's task is cancelled, which cancels whatever it awaits: a queued request
leaves the queue, a generating one stops at the next step (its row leaves the batch, the others go on), an
upstream call is abandoned. Starlette's ``BaseHTTPMiddleware`` would hide the disconnect from the handler, so
this is written against ASGI directly.

The access log is one JSON line per request on the ``aigc.serve.access`` logger: time, request id, method,
path, status, duration, the key's *name*, model and token counts. Never a prompt, a reply or a key.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import secrets
import time
from datetime import UTC, datetime
from typing import Any

from .errors import ApiError

__all__ = ["ServeMiddleware"]

access_log = logging.getLogger("aigc.serve.access")


async def _too_large(send: Any, max_body: int) -> None:
    """Answer 413 in OpenAI's error shape."""
    error = ApiError(413, f"The request body is larger than this server's limit of {max_body} bytes.",
                     code="request_too_large")
    body = json.dumps(error.body()).encode()
    await send({"type": "http.response.start", "status": 413,
                "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]})
    await send({"type": "http.response.body", "body": body})


class ServeMiddleware:
    """Wraps the app: ``max_body`` bytes per request body; ``on_cancel()`` when a client goes away;
    ``on_done(path, status)`` when a request ends."""

    def __init__(self, app: Any, *, max_body: int, on_cancel: Any = None, on_done: Any = None) -> None:
        self.app = app
        self.max_body = max_body
        self.on_cancel = on_cancel
        self.on_done = on_done

    async def __call__(self, scope: dict, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        rid = "req_" + secrets.token_hex(12)
        info: dict[str, Any] = {"request_id": rid}
        scope.setdefault("state", {})["aigc"] = info
        status: list[int] = [0]
        done = [False]  # the whole answer was handed to the server

        async def send_wrapper(message: dict) -> None:
            if message["type"] == "http.response.start":
                status[0] = message["status"]
                message = {**message, "headers": [*message.get("headers", []), (b"x-request-id", rid.encode())]}
            elif message["type"] == "http.response.body" and not message.get("more_body", False):
                done[0] = True
            await send(message)

        length = dict(scope.get("headers") or []).get(b"content-length")
        if length is not None and length.isdigit() and int(length) > self.max_body:
            await _too_large(send_wrapper, self.max_body)
            self._log(scope, info, 413, started)
            return

        inbox: asyncio.Queue = asyncio.Queue()
        handler = asyncio.current_task()
        app_task = asyncio.ensure_future(self.app(scope, inbox.get, send_wrapper))
        reader = asyncio.ensure_future(self._read(receive, inbox, app_task, done, info))
        try:
            await app_task
        except asyncio.CancelledError:
            if handler is not None and handler.cancelling():
                app_task.cancel()  # the server itself is cancelling us
                raise
            status[0] = status[0] or 499  # the client closed the connection
            info["cancelled"] = True
        finally:
            reader.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await reader
        if info.get("too_large") and not status[0]:
            await _too_large(send_wrapper, self.max_body)
            status[0] = 413
        self._log(scope, info, status[0], started)

    async def _read(self, receive: Any, inbox: asyncio.Queue, app_task: asyncio.Future, done: list[bool],
                    info: dict) -> None:
        size = 0
        while True:
            message = await receive()
            if message["type"] == "http.request":
                size += len(message.get("body", b""))
                if size > self.max_body:
                    info["too_large"] = True
                    app_task.cancel()
                    return
                inbox.put_nowait(message)
                continue
            if message["type"] == "http.disconnect":
                inbox.put_nowait(message)
                if not done[0] and not app_task.done():
                    if self.on_cancel is not None:
                        self.on_cancel()
                    app_task.cancel()
                return

    def _log(self, scope: dict, info: dict, status: int, started: float) -> None:
        if self.on_done is not None:
            self.on_done(scope.get("path", ""), status)
        if not access_log.isEnabledFor(logging.INFO):
            return
        record = {
            "time": datetime.now(UTC).isoformat(timespec="milliseconds"), "request_id": info["request_id"],
            "method": scope.get("method"), "path": scope.get("path"), "status": status,
            "duration_ms": round((time.perf_counter() - started) * 1000, 1),
            "client": (scope.get("client") or [None])[0],
        }
        for name in ("key", "model", "prompt_tokens", "completion_tokens", "error", "cancelled"):
            if info.get(name) is not None:
                record[name] = info[name]
        access_log.info(json.dumps(record))
