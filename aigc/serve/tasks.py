"""``POST /v1/tasks/{summarize,translate,answer,news}``: aigc's content tasks for apps in any language.

The body holds the task's parameters (the same names as the library's and the CLI's) plus ``model``,
``temperature``, ``max_tokens`` and ``seed``; the answer is the task's :class:`~aigc.Result` as JSON. Long
inputs are handled as in the library: summaries map-reduce, translations go part by part, answers keep the
most relevant passages, news condenses long notes first.
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass
from typing import Any

from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from .core import Caller
from .errors import ApiError, invalid, unsupported
from .protocol import parse_json
from .state import ServeState

__all__ = ["run_task", "TASKS"]


@dataclass(frozen=True)
class TaskSpec:
    """One endpoint: the main input, the other required parameters, and the optional ones (name → type)."""

    main: str
    required: tuple[str, ...]
    optional: dict[str, type]


_STR, _OPTIONS = str, {"model": str, "temperature": float, "max_tokens": int, "seed": int}
TASKS: dict[str, TaskSpec] = {
    "summarize": TaskSpec("text", (), {"length": _STR, "language": _STR, "focus": _STR}),
    "translate": TaskSpec("text", ("to",), {"to": _STR, "source": _STR, "tone": _STR}),
    "answer": TaskSpec("question", (), {"context": _STR}),
    "news": TaskSpec("facts", (), {"style": _STR, "length": _STR, "headline": bool, "audience": _STR}),
}


def _params(spec: TaskSpec, body: Any) -> tuple[str, dict[str, Any]]:
    if not isinstance(body, dict):
        raise invalid("The request body must be a JSON object.")
    allowed = {**spec.optional, **_OPTIONS}
    for key in body:
        if key != spec.main and key not in allowed:
            raise unsupported(key)
    main = body.get(spec.main)
    if not isinstance(main, str) or not main.strip():
        raise invalid(f"Missing required parameter: '{spec.main}' (a non-empty string).", spec.main,
                      "missing_required_parameter")
    for name in spec.required:
        if body.get(name) in (None, ""):
            raise invalid(f"Missing required parameter: '{name}'.", name, "missing_required_parameter")
    params: dict[str, Any] = {}
    for name, kind in allowed.items():
        value = body.get(name)
        if value is None:
            continue
        ok = isinstance(value, int | float) and not isinstance(value, bool) if kind is float else \
            isinstance(value, kind) and not (kind is int and isinstance(value, bool))
        if not ok:
            raise invalid(f"Invalid '{name}': expected {kind.__name__}.", name, "invalid_value")
        params[name] = value
    return main, params


async def run_task(request: Request) -> Response:
    state: ServeState = request.app.state.serve
    info: dict[str, Any] = request.scope["state"]["aigc"]
    name = request.path_params["task"]
    spec = TASKS.get(name)
    if spec is None:
        raise ApiError(404, f"No task '{name}'; the tasks are {', '.join(TASKS)}.", code="not_found")
    started = time.perf_counter()
    caller, key = state.authenticate(request.headers.get("authorization"))
    info["key"] = caller.name
    if state.draining or not state.ready:
        raise ApiError(503, "The server is not ready; retry shortly.", type="server_error", code="not_ready",
                       retry_after=1.0)
    slots = [state.admission.enter()]
    try:
        main, params = _params(spec, parse_json(await request.body()))
        params["model"] = state.resolve_model(params.get("model"), key)
        info["model"] = params["model"]
        cap = state.options.max_tokens
        if cap is not None and params.get("max_tokens", 0) > cap:
            raise ApiError(400, f"max_tokens is too large: {params['max_tokens']}. This server allows at most "
                           f"{cap} completion tokens per request.", param="max_tokens", code="invalid_value")
        params["max_output_tokens"] = params.pop("max_tokens", None) or cap
        if key is not None:
            size = sum(state.core.count_text(v) for v in (main, *params.values()) if isinstance(v, str))
            slots.append(state.limits.enter(key, size + (params["max_output_tokens"] or 0)))
        params = {k: v for k, v in params.items() if v is not None}
        try:
            result = await asyncio.wait_for(state.core.task(name, main, params, Caller(caller.name, caller.budget)),
                                            state.options.request_timeout)
        except TimeoutError:
            raise ApiError(504, f"The task took longer than {state.options.request_timeout:g}s.",
                           type="timeout_error", code="timeout", should_retry=False) from None
    finally:
        for slot in slots:
            slot.release()
    state.metrics.e2e.observe(time.perf_counter() - started)
    state.metrics.prompt_tokens.inc(result.usage.prompt_tokens)
    state.metrics.add_generated(result.usage.completion_tokens)
    info["prompt_tokens"], info["completion_tokens"] = result.usage.prompt_tokens, result.usage.completion_tokens
    return JSONResponse(result.model_dump(mode="json"), headers={"x-aigc-backend": state.core.backend_name})
