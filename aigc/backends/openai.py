"""The hosted OpenAI API, or any OpenAI-compatible server (vLLM, Ollama, llama.cpp) through ``base_url``.

The SDK client is created with ``max_retries=0``: retrying belongs to :mod:`aigc.retry` alone. Every SDK
error is translated into an :mod:`aigc.errors` type here, with the API key scrubbed from its message.
Servers differ, so features degrade instead of failing, and the result says what was used:
``json_schema`` → ``json_object`` → schema in the prompt; streamed usage → counted locally.
"""

from __future__ import annotations

import email.utils
import json
import re
import sys
import time
from collections.abc import AsyncIterator, Iterator
from typing import TYPE_CHECKING, Any

import openai

from .. import errors
from ..tokens import count_messages, count_text, encoding_for
from ..types import ChatRequest, Completion, Message, StreamDelta, Usage
from .base import BaseBackend

if TYPE_CHECKING:
    from ..config import Settings

_KEYLIKE = re.compile(r"\b(sk|rk)-[A-Za-z0-9_\-*]{6,}")


def _scrub(text: str, key: str | None) -> str:
    if key:
        text = text.replace(key, "***")
    return _KEYLIKE.sub(r"\1-***", text)


def parse_retry_after(headers: Any) -> float | None:
    """Seconds from ``retry-after-ms`` or ``retry-after`` (seconds or an HTTP date); None if absent."""
    if headers is None:
        return None
    for name, scale in (("retry-after-ms", 1000.0), ("retry-after", 1.0)):
        value = headers.get(name)
        if not value:
            continue
        try:
            return max(0.0, float(value) / scale)
        except ValueError:
            pass
        if name == "retry-after":
            when = email.utils.parsedate_to_datetime(value) if value else None
            if when is not None:
                return max(0.0, when.timestamp() - time.time())
    return None


def _is_transport_error(e: Exception) -> bool:
    """A connection that broke while a streamed body was being read (the SDK does not wrap these)."""
    for name in ("httpx2", "httpx"):
        module = sys.modules.get(name)
        if module is not None and isinstance(e, module.TransportError):
            return True
    return False


def _error_message(e: openai.APIStatusError) -> str:
    body = e.body
    if isinstance(body, dict):
        inner = body.get("error", body)
        if isinstance(inner, dict) and inner.get("message"):
            return str(inner["message"])
    return e.message


def translate_error(e: Exception, *, key: str | None, where: str) -> errors.AigcError:
    """Map an SDK exception onto aigc's error tree."""
    if isinstance(e, openai.APITimeoutError):
        return errors.RequestTimeout(f"no answer from {where} in time; raise timeout= or check the server")
    if isinstance(e, openai.APIConnectionError):
        cause = e.__cause__ or e.__context__
        detail = f": {_scrub(str(cause), key)}" if cause else ""
        return errors.ConnectionFailed(f"connection to {where} failed{detail}; check base_url and the network")
    if _is_transport_error(e):
        return errors.ConnectionFailed(f"connection to {where} broke: {_scrub(str(e) or type(e).__name__, key)}")
    if not isinstance(e, openai.APIStatusError):
        return errors.BackendError(_scrub(f"{type(e).__name__}: {e}", key))
    status, code = e.status_code, e.code
    msg = _scrub(_error_message(e), key)
    kw = dict(status_code=status, request_id=e.request_id, code=code)
    retry_after = parse_retry_after(e.response.headers)
    if status == 429 and code == "insufficient_quota":
        return errors.QuotaExhausted(f"quota exhausted at {where}: {msg} Add credit or raise the limit; "
                                     "retrying will not help", **kw)
    if status == 429:
        return errors.RateLimited(f"rate limited by {where}: {msg}", retry_after=retry_after, **kw)
    if status in (408, 409) or status >= 500:
        return errors.ServerError(f"{where} failed with HTTP {status}: {msg}", retry_after=retry_after, **kw)
    if status == 401:
        return errors.AuthenticationFailed(
            f"{where} rejected the API key (HTTP 401): {msg} Set OPENAI_API_KEY or api_key in the config file",
            **kw)
    if status == 403:
        return errors.PermissionDenied(f"{where} refused access (HTTP 403): {msg}", **kw)
    if status == 404:
        return errors.ModelNotFound(f"{where} has no such model or endpoint (HTTP 404): {msg} "
                                    "Check --model and base_url", **kw)
    if code == "context_length_exceeded":
        return errors.ContextLengthExceeded(f"prompt too long for the model: {msg}", **kw)
    return errors.BadRequest(f"{where} rejected the request (HTTP {status}): {msg}", **kw)


def _schema_instruction(schema: dict[str, Any]) -> str:
    return ("Reply with a single JSON object and nothing else. It must validate against this JSON schema:\n"
            + json.dumps(schema["schema"], separators=(",", ":")))


class OpenAIBackend(BaseBackend):
    """Chat completions over the openai SDK (sync and async)."""

    name = "openai"
    default_model = "gpt-4o-mini"

    def __init__(
        self,
        settings: Settings,
        *,
        client: openai.OpenAI | None = None,
        async_client: openai.AsyncOpenAI | None = None,
    ) -> None:
        self.settings = settings
        self._key = settings.key
        if not self._key and not settings.base_url:
            raise errors.ConfigError(
                "no API key for the openai backend: set OPENAI_API_KEY, api_key in the config file, "
                "or use --backend local"
            )
        self._client = client
        self._async_client = async_client
        self.where = settings.base_url or "the OpenAI API"
        self._official = settings.base_url is None
        # Capabilities learned from this server's answers, so each downgrade costs one request only.
        self._response_format = "json_schema"
        self._stream_options = True
        self._tables: Any = None

    # -- clients --------------------------------------------------------------------------------------
    def _client_kwargs(self) -> dict[str, Any]:
        return dict(
            api_key=self._key or "not-needed",
            base_url=self.settings.base_url,
            max_retries=0,
            timeout=self.settings.timeout,
        )

    @property
    def client(self) -> openai.OpenAI:
        if self._client is None:
            self._client = openai.OpenAI(**self._client_kwargs())
        return self._client

    @property
    def async_client(self) -> openai.AsyncOpenAI:
        if self._async_client is None:
            self._async_client = openai.AsyncOpenAI(**self._client_kwargs())
        return self._async_client

    def close(self) -> None:
        if self._client is not None:
            self._client.close()

    async def aclose(self) -> None:
        if self._async_client is not None:
            await self._async_client.close()

    # -- request shaping --------------------------------------------------------------------------------
    def _params(self, request: ChatRequest, *, stream: bool = False) -> dict[str, Any]:
        messages = [m.model_dump(exclude_none=True) for m in request.messages]
        params: dict[str, Any] = {"model": request.model, "messages": messages}
        if request.temperature is not None:
            params["temperature"] = request.temperature
        if request.top_p is not None:
            params["top_p"] = request.top_p
        if request.max_tokens is not None:
            # The official API wants max_completion_tokens (required by reasoning models);
            # compatible servers widely know only max_tokens.
            params["max_completion_tokens" if self._official else "max_tokens"] = request.max_tokens
        if request.stop:
            params["stop"] = request.stop
        if request.seed is not None:
            params["seed"] = request.seed
        if request.timeout is not None:
            params["timeout"] = request.timeout
        if request.json_schema is not None:
            mode = self._response_format
            if mode == "json_schema":
                params["response_format"] = {"type": "json_schema", "json_schema": request.json_schema}
            else:
                last = dict(messages[-1])
                last["content"] = f"{last['content']}\n\n{_schema_instruction(request.json_schema)}"
                params["messages"] = [*messages[:-1], last]
                if mode == "json_object":
                    params["response_format"] = {"type": "json_object"}
        if stream:
            params["stream"] = True
            if self._stream_options:
                params["stream_options"] = {"include_usage": True}
        return params

    def _downgrade(self, err: errors.AigcError, request: ChatRequest, stream: bool) -> bool:
        """After a 400, drop one optional feature the server may lack; True if worth asking again."""
        if not isinstance(err, errors.BadRequest) or isinstance(err, errors.ContextLengthExceeded):
            return False
        text = err.message.lower()
        if request.json_schema is not None and self._response_format != "prompt" and (
            "response_format" in text or "json_schema" in text or "json_object" in text
        ):
            self._response_format = "json_object" if self._response_format == "json_schema" else "prompt"
            return True
        if stream and self._stream_options and ("stream_options" in text or "include_usage" in text):
            self._stream_options = False
            return True
        return False

    def _completion(self, resp: Any, request: ChatRequest) -> Completion:
        choice = resp.choices[0] if resp.choices else None
        text = (choice.message.content or "") if choice else ""
        usage = None
        if resp.usage is not None:
            usage = Usage(prompt_tokens=resp.usage.prompt_tokens or 0,
                          completion_tokens=resp.usage.completion_tokens or 0)
        return Completion(
            text=text,
            finish_reason=choice.finish_reason if choice else None,
            usage=usage,
            model=resp.model or request.model,
            request_id=getattr(resp, "_request_id", None),
            response_format=self._response_format if request.json_schema is not None else None,
        )

    def _fill_usage(self, completion: Completion, request: ChatRequest) -> Completion:
        if completion.usage is not None:
            return completion
        usage = Usage(prompt_tokens=self.count_tokens(request.messages, request.model),
                      completion_tokens=self.count_text(completion.text, request.model))
        return completion.model_copy(update={"usage": usage, "usage_estimated": True})

    # -- generation -------------------------------------------------------------------------------------
    def _failed(self, e: Exception, request: ChatRequest, stream: bool) -> None:
        """Raise the aigc error for an SDK failure, unless dropping a feature the server lacks makes one more
        request worthwhile (then return, and the caller asks again)."""
        err = translate_error(e, key=self._key, where=self.where)
        if not self._downgrade(err, request, stream):
            raise err from None

    def _create(self, request: ChatRequest, *, stream: bool = False) -> Any:
        while True:
            try:
                return self.client.chat.completions.create(**self._params(request, stream=stream))
            except openai.OpenAIError as e:
                self._failed(e, request, stream)

    async def _acreate(self, request: ChatRequest, *, stream: bool = False) -> Any:
        while True:
            try:
                return await self.async_client.chat.completions.create(**self._params(request, stream=stream))
            except openai.OpenAIError as e:
                self._failed(e, request, stream)

    def generate(self, request: ChatRequest) -> Completion:
        return self._fill_usage(self._completion(self._create(request), request), request)

    async def agenerate(self, request: ChatRequest) -> Completion:
        return self._fill_usage(self._completion(await self._acreate(request), request), request)

    def stream(self, request: ChatRequest) -> Iterator[StreamDelta]:
        acc = _StreamAccumulator(request)
        stream = self._create(request, stream=True)
        acc.request_id = stream.response.headers.get("x-request-id")
        try:
            for chunk in stream:
                piece = acc.add(chunk)
                if piece:
                    yield StreamDelta(text=piece)
        except Exception as e:
            raise translate_error(e, key=self._key, where=self.where) from None
        finally:
            stream.close()
        yield StreamDelta(completion=self._fill_usage(acc.completion(self._response_format), request))

    async def astream(self, request: ChatRequest) -> AsyncIterator[StreamDelta]:
        acc = _StreamAccumulator(request)
        stream = await self._acreate(request, stream=True)
        acc.request_id = stream.response.headers.get("x-request-id")
        try:
            async for chunk in stream:
                piece = acc.add(chunk)
                if piece:
                    yield StreamDelta(text=piece)
        except Exception as e:
            raise translate_error(e, key=self._key, where=self.where) from None
        finally:
            await stream.close()
        yield StreamDelta(completion=self._fill_usage(acc.completion(self._response_format), request))

    # -- accounting -------------------------------------------------------------------------------------
    def _model_info(self, model: str):
        if self._tables is None:
            from ..models import ModelTable

            self._tables = ModelTable.cached(self.settings.models_file)
        return self._tables.lookup(model)

    def count_tokens(self, messages: list[Message], model: str) -> int:
        return count_messages(messages, self._model_info(model))

    def count_text(self, text: str, model: str) -> int:
        return count_text(text, self._model_info(model))

    def text_counter(self, model: str):
        """The tiktoken encoding, for splitting long documents fast."""
        return encoding_for(self._model_info(model))

    def context_window(self, model: str) -> int:
        return self._model_info(model).context_window

    def max_output_tokens(self, model: str) -> int:
        return self._model_info(model).max_output_tokens


class _StreamAccumulator:
    """Collects streamed chunks into the text, finish reason, usage and request id of one completion."""

    def __init__(self, request: ChatRequest) -> None:
        self.request = request
        self.parts: list[str] = []
        self.finish_reason: str | None = None
        self.usage: Usage | None = None
        self.model = request.model
        self.request_id: str | None = None

    def add(self, chunk: Any) -> str:
        self.model = chunk.model or self.model
        if chunk.usage is not None:
            self.usage = Usage(prompt_tokens=chunk.usage.prompt_tokens or 0,
                               completion_tokens=chunk.usage.completion_tokens or 0)
        if not chunk.choices:
            return ""
        choice = chunk.choices[0]
        if choice.finish_reason:
            self.finish_reason = choice.finish_reason
        piece = choice.delta.content or "" if choice.delta else ""
        if piece:
            self.parts.append(piece)
        return piece

    def completion(self, response_format: str) -> Completion:
        return Completion(
            text="".join(self.parts),
            finish_reason=self.finish_reason,
            usage=self.usage,
            model=self.model,
            request_id=self.request_id,
            response_format=response_format if self.request.json_schema is not None else None,
        )
