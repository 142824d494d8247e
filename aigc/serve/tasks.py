"""``POST /v1/tasks/{name}``: every declared task (summarize, translate, answer, news, classify, sentiment and any
registered since) for apps in any language.

The body holds the task's parameters, as its declaration names them (the same names as the library's and the
CLI's), plus ``model``, ``temperature``, ``max_tokens`` (or ``max_output_tokens``), ``top_p``, ``stop`` and
``seed``; the answer is the task's :class:`~aigc.Result` as JSON. Long inputs are handled as the declaration
says: summaries map-reduce, translations go part by part, answers keep the most relevant passages, news
condenses long notes first.
"""

from __future__ import annotations

import asyncio
import time
from typing import Any

from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from ..errors import InputError
from ..tasks import Task, find_task, task_names
from .core import Caller
from .errors import ApiError, invalid, unsupported
from .protocol import parse_json
from .state import ServeState

__all__ = ["run_task", "served_tasks"]

_OPTIONS = {"model": str, "temperature": float, "max_tokens": int, "max_output_tokens": int, "top_p": float,
            "stop": list, "seed": int}


def served_tasks() -> list[str]:
    """The declared tasks the endpoint serves: those with a template (``chat`` is /v1/chat/completions)."""
    return [n for n in task_names() if (t := find_task(n)) is not None and t.template is not None]


def _params(task: Task, body: Any) -> tuple[dict[str, Any], dict[str, Any]]:
    """The body as the task's variables and options, checked against its declaration (400s, never 422)."""
    if not isinstance(body, dict):
        raise invalid("The request body must be a JSON object.")
    for key in body:
        if key not in task.names and key not in _OPTIONS:
            raise unsupported(key)
    for name, kind in _OPTIONS.items():
        value = body.get(name)
        ok = value is None or (isinstance(value, int | float) and not isinstance(value, bool) if kind is float
                               else isinstance(value, kind) and not (kind is int and isinstance(value, bool)))
        if not ok:
            raise invalid(f"Invalid '{name}': expected {kind.__name__}.", name, "invalid_value")
    missing = sorted(task.required - {k for k, v in body.items() if v is not None})
    if missing:
        raise invalid(f"Missing required parameter: '{missing[0]}'.", missing[0], "missing_required_parameter")
    try:
        return task.bind((), body)
    except InputError as e:
        raise invalid(str(e), None, "invalid_value") from None


async def run_task(request: Request) -> Response:
    state: ServeState = request.app.state.serve
    info: dict[str, Any] = request.scope["state"]["aigc"]
    name = request.path_params["task"]
    task = find_task(name)
    if task is None or task.template is None:
        raise ApiError(404, f"No task '{name}'; the tasks are {', '.join(served_tasks())}.", code="not_found")
    started = time.perf_counter()
    caller, key = state.authenticate(request.headers.get("authorization"))
    info["key"] = caller.name
    state.check_ready()
    slots = []
    try:
        slots.append(state.admission.enter())
        variables, options = _params(task, parse_json(await request.body()))
        options["model"] = info["model"] = state.resolve_model(options.get("model"), key)
        if "max_output_tokens" in options:
            state.check_cap(options["max_output_tokens"])
        options["max_output_tokens"] = options.get("max_output_tokens") or state.options.max_tokens
        if key is not None:
            size = sum(state.core.count_text(v) for v in (*variables.values(), *options.values()) if isinstance(v, str))
            slots.append(state.limits.enter(key, size + (options["max_output_tokens"] or 0)))
        options = {k: v for k, v in options.items() if v is not None}
        try:
            result = await asyncio.wait_for(state.core.task(task, variables, options, Caller(caller.name, caller.budget)),
                                            state.options.request_timeout)
        except TimeoutError:
            raise ApiError(504, f"The task took longer than {state.options.request_timeout:g}s.",
                           type="timeout_error", code="timeout", should_retry=False) from None
    except ApiError as e:
        state.rejected(e)
        raise
    finally:
        for slot in slots:
            slot.release()
    state.finished(info, result, started)
    return JSONResponse(result.model_dump(mode="json"), headers={"x-aigc-backend": state.core.backend_name})
