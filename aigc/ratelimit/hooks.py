"""The HTTP client's side of the rate gate: a request hook that tells the gate when the request of the slot
the caller took leaves, and an httpx trace that tells it when the request's headers go on the wire."""

from __future__ import annotations

from typing import Any

from .gate import LAST_SLOT, Slot

__all__ = ["leaving", "aleaving"]


def leaving(request: object = None) -> None:
    """The caller's request is leaving now: an HTTP client's request hook (``event_hooks={"request":
    [leaving]}``), run in the thread or task that took the slot. The gate counts it from now if it was held
    up after it was counted, and from when its bytes go out if it then waits for a connection (an httpx
    ``trace`` extension, added to the request)."""
    _leave(request, asynchronous=False)


async def aleaving(request: object = None) -> None:
    """:func:`leaving` for an async HTTP client."""
    _leave(request, asynchronous=True)


def _leave(request: object, *, asynchronous: bool) -> None:
    slot = LAST_SLOT.get()
    if slot is not None and not slot.left:
        slot.gate.left_late(slot)
        _trace(request, slot, asynchronous=asynchronous)


def _trace(request: object, slot: Slot, *, asynchronous: bool) -> None:
    """Have the HTTP client say when ``request``'s headers start going out (after any wait for a connection,
    its TCP and TLS handshakes): ``slot`` counts from then. A trace already there is still called."""
    extensions = getattr(request, "extensions", None)
    if not isinstance(extensions, dict):
        return
    before = extensions.get("trace")

    def on(name: str) -> None:
        if name.endswith(".send_request_headers.started"):
            slot.gate.sent(slot)

    if asynchronous:
        async def atrace(name: str, info: dict[str, Any]) -> None:
            on(name)
            if before is not None:
                await before(name, info)

        extensions["trace"] = atrace
    else:
        def trace(name: str, info: dict[str, Any]) -> None:
            on(name)
            if before is not None:
                before(name, info)

        extensions["trace"] = trace
