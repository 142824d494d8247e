"""``aigc serve``: an OpenAI-compatible server over any aigc backend, with keys, budgets, usage per client
and a chat page.

    from aigc.serve import Core, ServeOptions, Server, create_app
    core = Core(aigc.AsyncClient(backend=build_backend(settings), settings=settings))
    with Server(create_app(core, ServeOptions()), port=0) as server:
        openai.OpenAI(base_url=server.url + "/v1", api_key="-").chat.completions.create(...)

The parts: :mod:`.app` (the app factory, operational endpoints), :mod:`.chat` and :mod:`.tasks` (the API),
:mod:`.protocol` (OpenAI's wire format), :mod:`.errors` (OpenAI's error shape), :mod:`.core` (the one module
that uses aigc's client and engine), :mod:`.keys` (API keys and budgets in SQLite), :mod:`.limits` (the queue
bound, per-key rates), :mod:`.metrics` (Prometheus), :mod:`.asgi` (disconnects, body limit, access log),
:mod:`.knowledge` (grounding on files), :mod:`.state` (what handlers share), :mod:`.server` (uvicorn, drain),
:mod:`.balance` (spreading a client's requests over several servers). Needs the ``serve`` extra:
``pip install 'aigc-toolkit[serve]'``.
"""

from __future__ import annotations

from .app import create_app
from .core import Caller, Core
from .errors import ApiError
from .keys import KeyRecord, KeyStore
from .knowledge import Knowledge
from .server import Server, build_backend, open_keys
from .state import ServeOptions

__all__ = ["create_app", "Core", "Caller", "ApiError", "KeyStore", "KeyRecord", "Knowledge", "Server",
           "ServeOptions", "build_backend", "open_keys"]
