"""Helpers for the ``aigc serve`` tests: a real uvicorn server on 127.0.0.1, port 0, around any backend."""

from __future__ import annotations

import contextlib
import re
import time
from collections.abc import Iterator
from typing import Any

import httpx2
import openai
import pytest

for _extra in ("starlette", "uvicorn", "prometheus_client", "jsonschema"):  # the serve extra
    pytest.importorskip(_extra, reason="needs the serve extra: pip install 'aigc-toolkit[serve]'")

import aigc  # noqa: E402
from aigc.backends.fake import FakeBackend  # noqa: E402
from aigc.config import load_settings  # noqa: E402
from aigc.serve import Core, KeyStore, Knowledge, ServeOptions, Server, build_backend, create_app  # noqa: E402

__all__ = ["KeyStore", "Knowledge", "ServeOptions", "SlowFake", "serving", "wait_ready", "sdk", "async_sdk",
           "metric", "ask"]


class SlowFake(FakeBackend):
    """A fake that streams word by word with a pause and counts the words it produced, so a test can see
    generation stop when its client goes away; ``generate`` waits too (a slow model)."""

    def __init__(self, delay: float = 0.05, **kw: Any) -> None:
        super().__init__(**kw)
        self.delay = delay
        self.produced = 0

    def generate(self, request):
        time.sleep(self.delay)
        return super().generate(request)

    def stream(self, request):
        for delta in super().stream(request):
            if delta.text:
                time.sleep(self.delay)
                self.produced += 1
            yield delta


@contextlib.contextmanager
def serving(served: Any, options: ServeOptions | None = None, *, keys: KeyStore | None = None,
            knowledge: Any = None, **settings: Any) -> Iterator[Server]:
    """A started server over ``served``, a backend (or the one ``settings`` name, in its serving form), ready to answer.
    Settings come from the test's isolated environment."""
    config = load_settings({"backend": served.name, **settings} if served is not None else settings)
    backend = served if served is not None else build_backend(config)
    client = aigc.AsyncClient(backend=backend, settings=config)
    app = create_app(Core(client), options or ServeOptions(), keys=keys, knowledge=knowledge)
    with Server(app, "127.0.0.1", 0) as server:
        wait_ready(server.url)
        try:
            yield server
        finally:
            while _clients:
                _clients.pop().close()


def wait_ready(url: str, timeout: float = 120.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with contextlib.suppress(httpx2.HTTPError):
            if httpx2.get(url + "/ready", timeout=5).status_code == 200:
                return
        time.sleep(0.05)
    raise TimeoutError(f"{url} never became ready")


_clients: list[openai.OpenAI] = []  # closed when the server they talk to stops


def sdk(server: Server, key: str = "no-key", **kw: Any) -> openai.OpenAI:
    client = openai.OpenAI(base_url=server.url + "/v1", api_key=key, **kw)
    _clients.append(client)
    return client


def async_sdk(server: Server, key: str = "no-key", **kw: Any) -> openai.AsyncOpenAI:
    return openai.AsyncOpenAI(base_url=server.url + "/v1", api_key=key, **kw)


def metric(server: Server, name: str, labels: str = "") -> float:
    """The value of one sample on /metrics (0 when absent)."""
    text = httpx2.get(server.url + "/metrics").text
    pattern = re.escape(name) + (re.escape("{" + labels + "}") if labels else r"(?:\{\})?") + r" ([0-9.e+-]+)"
    found = re.search(r"^" + pattern + "$", text, re.M)
    return float(found.group(1)) if found else 0.0


def ask(text: str) -> list[dict[str, str]]:
    return [{"role": "user", "content": text}]
