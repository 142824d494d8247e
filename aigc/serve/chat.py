"""``POST /v1/chat/completions``: plain and streamed, with usage, limits and budgets.

A request is admitted (503 when the queue is full) before its messages are tokenized; then its model, output
limit and context are checked (400s), its key's rate limits applied (429), and it goes to the core, where the
key's budget is reserved (429 ``insufficient_quota``). A stream's first piece is awaited before the answer
starts, so every refusal is an HTTP status, never an error inside a 200 stream.
"""

from __future__ import annotations

import asyncio
import secrets
import time
from collections.abc import AsyncIterator
from typing import Any

from starlette.requests import Request
from starlette.responses import JSONResponse, Response, StreamingResponse

from ..errors import AigcError
from ..types import ChatRequest, Result
from .errors import ApiError, from_aigc, invalid
from .limits import Slot
from .protocol import (
    ChatParams,
    chunk,
    completion_body,
    error_event,
    logprobs_body,
    parse_chat,
    parse_json,
    usage_body,
)
from .state import ServeState

__all__ = ["chat_completions"]


class _Lease:
    """The places a request holds (queue, key concurrency); given back once, when it ends."""

    def __init__(self) -> None:
        self.slots: list[Slot] = []

    def release(self) -> None:
        for slot in self.slots:
            slot.release()


def _request(state: ServeState, params: ChatParams, model: str) -> ChatRequest:
    messages = params.messages
    if params.knowledge:
        if state.knowledge is None:
            raise invalid("This server has no knowledge files; start it with --knowledge FILE.", "knowledge")
        messages = state.knowledge.ground(messages)
    return ChatRequest(messages=messages, model=model, temperature=params.temperature, top_p=params.top_p,
                       stop=params.stop, seed=params.seed, json_schema=params.json_schema, logprobs=params.logprobs)


async def chat_completions(request: Request) -> Response:
    state: ServeState = request.app.state.serve
    info: dict[str, Any] = request.scope["state"]["aigc"]
    started = time.perf_counter()
    caller, key = state.authenticate(request.headers.get("authorization"))
    info["key"] = caller.name
    state.check_ready()
    lease, handed_over = _Lease(), False
    try:
        lease.slots.append(state.admission.enter())
        params = parse_chat(parse_json(await request.body()))
        model = state.resolve_model(params.model, key)
        info["model"] = model
        chat = _request(state, params, model)
        prompt = state.core.prompt_tokens(chat)
        chat = chat.model_copy(update={"max_output_tokens": state.output_tokens(model, prompt, params.max_tokens)})
        if key is not None:
            lease.slots.append(state.limits.enter(key, prompt + chat.max_output_tokens))
        if params.stream:
            response = await _stream(state, chat, params, caller, lease, info, started)
            handed_over = True  # the stream gives the places back when it ends
            return response
        try:
            result = await asyncio.wait_for(state.core.complete(chat, caller), state.options.request_timeout)
        except TimeoutError:
            raise ApiError(504, f"The request took longer than {state.options.request_timeout:g}s.",
                           type="timeout_error", code="timeout", should_retry=False) from None
        state.finished(info, result, started)
        rid = "chatcmpl-" + secrets.token_hex(12)
        usage = usage_body(result.usage.prompt_tokens, result.usage.completion_tokens, result.cost_usd)
        body = completion_body(rid, result.model or model, result.text, result.finish_reason, usage,
                               logprobs_body(result.logprobs))
        return JSONResponse(body, headers=_headers(state))
    except ApiError as e:
        state.rejected(e)
        raise
    finally:
        if not handed_over:
            lease.release()


def _headers(state: ServeState) -> dict[str, str]:
    return {"x-aigc-backend": state.core.backend_name}


async def _stream(state: ServeState, chat: ChatRequest, params: ChatParams, caller: Any, lease: _Lease,
                  info: dict, started: float) -> Response:
    deadline = time.monotonic() + state.options.request_timeout
    pieces: AsyncIterator[str | Result] = aiter(state.core.stream(chat, caller))
    try:
        async with asyncio.timeout_at(_loop_time(deadline)):
            first = await anext(pieces)
    except TimeoutError:
        raise ApiError(504, f"No reply within {state.options.request_timeout:g}s.", type="timeout_error",
                       code="timeout", should_retry=False) from None
    rid, created, model = "chatcmpl-" + secrets.token_hex(12), int(time.time()), chat.model
    usage_field = params.include_usage

    def event(delta: dict | None, finish: str | None = None, usage: dict | None = None,
              logprobs: dict | None = None) -> bytes:
        return chunk(rid, model, created, delta, finish, usage, with_usage_field=usage_field, logprobs=logprobs)

    async def body() -> AsyncIterator[bytes]:
        result: Result | None = None
        try:
            yield event({"role": "assistant", "content": ""})
            piece: str | Result | None = first
            while piece is not None:
                if isinstance(piece, Result):
                    result = piece
                    break
                if "ttft" not in info:
                    info["ttft"] = time.perf_counter() - started
                    state.metrics.ttft.observe(info["ttft"])
                yield event({"content": piece})
                async with asyncio.timeout_at(_loop_time(deadline)):
                    piece = await anext(pieces, None)
            if result is None:
                raise ApiError(502, "The stream ended without a result.", type="server_error")
            state.finished(info, result, started)
            # Token log-probabilities are read once the reply is whole: they come with the last chunk.
            yield event({}, result.finish_reason or "stop", logprobs=logprobs_body(result.logprobs))
            if usage_field:
                yield event(None, usage=usage_body(result.usage.prompt_tokens, result.usage.completion_tokens,
                                                   result.cost_usd))
        except TimeoutError:
            info["error"] = "timeout"
            yield error_event(ApiError(504, f"The reply took longer than {state.options.request_timeout:g}s.",
                                       type="timeout_error", code="timeout"))
        except (AigcError, ApiError) as e:
            err = e if isinstance(e, ApiError) else from_aigc(e)
            info["error"] = err.code or err.type
            yield error_event(err)
        finally:
            lease.release()
            await pieces.aclose()
        yield b"data: [DONE]\n\n"

    return StreamingResponse(body(), media_type="text/event-stream",
                             headers={**_headers(state), "cache-control": "no-cache"})


def _loop_time(deadline: float) -> float:
    """A ``time.monotonic`` deadline on the event loop's clock."""
    loop = asyncio.get_running_loop()
    return loop.time() + (deadline - time.monotonic())
