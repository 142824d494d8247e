"""What the handlers share: options, the core, keys, limits, metrics; and the decisions every request needs
(who is calling, which model, how many output tokens)."""

from __future__ import annotations

import ipaddress
import time
from dataclasses import dataclass
from typing import Any

from .core import Caller, Core
from .errors import ApiError, context_exceeded
from .keys import KeyBudget, KeyRecord, KeyStore
from .knowledge import Knowledge
from .limits import Admission, KeyLimits
from .metrics import Metrics

__all__ = ["ServeOptions", "ServeState", "is_loopback"]


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


@dataclass(frozen=True)
class ServeOptions:
    """How the server behaves (the CLI's options)."""

    max_tokens: int | None = None  # cap on output tokens per request; None: what the window leaves
    default_max_tokens: int | None = None  # when a request names none (None: up to the cap / window)
    max_running: int = 32  # requests generating at once (the local model's batch)
    max_waiting: int = 64  # requests queued behind them; more get 503
    max_body_bytes: int = 1 << 20
    request_timeout: float = 600.0
    system_prompt: str | None = None  # the chat page's default persona
    title: str = "aigc chat"


class ServeState:
    """Built once per app; handlers reach it as ``request.app.state.serve``."""

    def __init__(self, core: Core, options: ServeOptions, keys: KeyStore | None,
                 knowledge: Knowledge | None) -> None:
        self.core = core
        self.options = options
        self.keys = keys
        self.knowledge = knowledge
        self.admission = Admission(options.max_running, options.max_waiting)
        self.limits = KeyLimits()
        self.live_tokens = core.running() is not None  # the local loop counts tokens as it makes them
        self.metrics = Metrics(
            running=lambda: core.running() if self.live_tokens else self.admission.inflight,
            waiting=lambda: core.waiting() if self.live_tokens else 0,
            queue_depth=lambda: self.admission.inflight,
            live=core.loop_stats,
        )
        self.ready = False
        self.draining = False
        self.load_error: str | None = None

    # -- who ------------------------------------------------------------------------------------------------

    @property
    def auth(self) -> bool:
        return self.keys is not None

    def authenticate(self, authorization: str | None) -> tuple[Caller, KeyRecord | None]:
        if self.keys is None:
            return Caller(), None
        header = (authorization or "").strip()
        secret = header[7:].strip() if header.lower().startswith("bearer ") else ""
        if not secret:
            raise self._unauthorized("You didn't provide an API key. Send it as 'Authorization: Bearer <key>'; "
                                     "`aigc serve keys add NAME` makes one.", "missing_api_key")
        record = self.keys.verify(secret)
        if record is None:
            raise self._unauthorized("Incorrect API key provided.", "invalid_api_key")
        status = record.status()
        if status != "active":
            raise self._unauthorized(f"This API key ({record.name}) is {status}.", f"key_{status}")
        return Caller(record.name, KeyBudget(self.keys, record)), record

    def _unauthorized(self, message: str, code: str) -> ApiError:
        self.metrics.rejected.labels("unauthorized").inc()
        return ApiError(401, message, code=code)

    def check_ready(self) -> None:
        """A 503 while the model loads or the server shuts down."""
        if self.draining or not self.ready:
            raise ApiError(503, "The server is " + ("shutting down" if self.draining else "loading the model") +
                           "; retry shortly.", type="server_error", code="not_ready", retry_after=1.0)

    def rejected(self, error: ApiError) -> None:
        """Count a request turned away for lack of room (503) or over its key's limits (429)."""
        if error.status in (429, 503):
            self.metrics.rejected.labels("queue_full" if error.status == 503 else "rate_limited").inc()

    def finished(self, info: dict[str, Any], result: Any, started: float) -> None:
        """A request answered: its time and tokens into the metrics and the access log's record."""
        m = self.metrics
        m.e2e.observe(time.perf_counter() - started)
        m.prompt_tokens.inc(result.usage.prompt_tokens)
        m.add_generated(result.usage.completion_tokens)
        info["prompt_tokens"], info["completion_tokens"] = result.usage.prompt_tokens, result.usage.completion_tokens

    # -- which model, how many tokens -----------------------------------------------------------------------

    @property
    def strict_models(self) -> bool:
        """A local model serves itself only; a gateway passes other model names on."""
        return self.core.backend_name == "local"

    def served_models(self) -> list[str]:
        return [self.core.model]

    def resolve_model(self, asked: str | None, key: KeyRecord | None) -> str:
        model = asked or self.core.model
        if self.strict_models and model != self.core.model:
            raise ApiError(404, f"The model '{model}' does not exist on this server; it serves "
                           f"'{self.core.model}'.", param="model", code="model_not_found")
        if key is not None and not key.allows_model(model):
            raise ApiError(403, f"Key {key.name!r} may not use the model '{model}'.", type="permission_error",
                           param="model", code="model_not_allowed")
        return model

    def check_cap(self, asked: int) -> None:
        """A 400 for a request asking more output tokens than the configured cap."""
        cap = self.options.max_tokens
        if cap is not None and asked > cap:
            raise ApiError(400, f"max_tokens is too large: {asked}. This server allows at most {cap} "
                           "completion tokens per request.", param="max_tokens", code="invalid_value")

    def output_tokens(self, model: str, prompt: int, asked: int | None) -> int:
        """The output limit of a request: what it asked for (refused above the configured cap), else
        the default, the cap or what the context window leaves, whichever is least."""
        window = self.core.context_window(model)
        cap = self.options.max_tokens
        if asked is not None:
            self.check_cap(asked)
            if prompt + asked > window:
                raise context_exceeded(window, prompt, asked)
            return asked
        room = min(window - prompt, self.core.max_output_tokens(model))
        if room < 1:
            raise context_exceeded(window, prompt, 1)
        return min(x for x in (room, cap, self.options.default_max_tokens) if x is not None)

    def info(self) -> dict[str, Any]:
        """What the chat page needs to know (no secrets)."""
        return {
            "model": self.core.model, "backend": self.core.backend_name, "auth": self.auth,
            "system_prompt": self.options.system_prompt or "", "title": self.options.title,
            "knowledge": self.knowledge.names if self.knowledge else [], "max_tokens": self.options.max_tokens,
        }
