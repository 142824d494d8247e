"""Running the app: uvicorn with a graceful drain, and the pieces ``aigc serve`` assembles.

On SIGTERM (or SIGINT) the server stops accepting connections, ``/ready`` answers 503, requests in flight
finish (streams included) for up to ``drain_timeout`` seconds, and then it exits (``run()`` returns after
SIGTERM; SIGINT is raised again as KeyboardInterrupt). :class:`Server` runs in the
main thread (``run()``, signals handled) or in a background thread (``start()``/``stop()``, for tests and
embedding).
"""

from __future__ import annotations

import signal
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from ..config import Settings
from ..errors import ConfigError
from ..targets import load_target
from .keys import KEYS_FILE, KeyStore
from .state import is_loopback

__all__ = ["Server", "build_backend", "open_keys"]

# Backends that serve better in another form than the library's default (declared, not switched on).
_SERVING_BACKENDS = {"local": "aigc.backends.local.continuous:ContinuousLocalBackend"}


def build_backend(settings: Settings, **options: Any) -> Any:
    """The backend ``settings`` names, in its serving form where it has one (the local model: continuous
    batching, ``options`` such as ``max_batch`` and ``on_step`` go to it)."""
    from ..backends.base import create_backend

    target = _SERVING_BACKENDS.get(settings.resolved_backend())
    if target is None:
        return create_backend(settings)
    return load_target(target)(settings, **options)


def open_keys(data_dir: Path, host: str, *, allow_no_auth: bool = False,
              keys_file: Path | None = None) -> KeyStore | None:
    """The key store when authentication is on, None when it is off.

    Auth is on once a keys file exists. Without one, a loopback address serves without keys; any other address
    is refused (ConfigError) unless ``allow_no_auth``: an open server on a network spends your money and compute.
    """
    path = keys_file or Path(data_dir) / KEYS_FILE
    if path.exists():
        return KeyStore(path)
    if is_loopback(host) or allow_no_auth:
        return None
    raise ConfigError(f"refusing to serve {host} without API keys: add one with `aigc serve keys add NAME`, "
                      "bind 127.0.0.1, or pass --allow-no-auth to serve without authentication")


class Server:
    """uvicorn over ``app`` on ``host:port`` (0: any free port; see ``port`` once started)."""

    def __init__(self, app: Any, host: str = "127.0.0.1", port: int = 8000, *, drain_timeout: float = 30.0,
                 log_level: str = "warning", on_started: Callable[[Server], None] | None = None) -> None:
        import uvicorn

        self.app = app
        state, outer = app.state.serve, self

        class _Uvicorn(uvicorn.Server):
            async def startup(self, sockets: Any = None) -> None:
                await super().startup(sockets)
                if on_started is not None and self.started:
                    on_started(outer)

            def handle_exit(self, sig: int, frame: Any) -> None:
                state.draining = True  # /ready says so while requests in flight finish
                super().handle_exit(sig, frame)
                captured = getattr(self, "_captured_signals", None)
                if sig == signal.SIGTERM and captured:
                    captured.remove(sig)  # a drained server exits 0 (uvicorn would re-raise SIGTERM)

        config = uvicorn.Config(app, host=host, port=port, lifespan="on", access_log=False, log_config=None,
                                log_level=log_level, timeout_graceful_shutdown=drain_timeout,
                                timeout_keep_alive=5)
        self._server = _Uvicorn(config)
        self.host = host
        self._thread: threading.Thread | None = None

    @property
    def started(self) -> bool:
        return bool(self._server.started)

    @property
    def port(self) -> int:
        for server in self._server.servers:
            for sock in server.sockets:
                return int(sock.getsockname()[1])
        return int(self._server.config.port)

    @property
    def url(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"http://{host}:{self.port}"

    def run(self) -> None:
        """Serve until SIGTERM/SIGINT, then drain (blocks; call from the main thread)."""
        self._server.run()

    def start(self, timeout: float = 60.0) -> Server:
        """Serve from a background thread; returns once the socket listens."""
        self._thread = threading.Thread(target=self._server.run, name="aigc-serve", daemon=True)
        self._thread.start()
        deadline = time.monotonic() + timeout
        while not self._server.started:
            if not self._thread.is_alive() or time.monotonic() > deadline:
                raise RuntimeError("the server did not start")
            time.sleep(0.01)
        return self

    def stop(self, timeout: float = 60.0) -> None:
        """Drain and stop a server started with :meth:`start`."""
        self.app.state.serve.draining = True
        self._server.should_exit = True
        if self._thread is not None:
            self._thread.join(timeout)
            self._thread = None

    def __enter__(self) -> Server:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
