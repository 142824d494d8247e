"""The hosted OpenAI API, or any OpenAI-compatible server (vLLM, Ollama, llama.cpp) through ``base_url``.

The SDK client is created with ``max_retries=0``: retrying belongs to :mod:`aigc.retry` alone. Every SDK
error is translated into an :mod:`aigc.errors` type (:mod:`.errors`), with the API key scrubbed from its
message. Servers differ, so features degrade instead of failing, and the result says what was used:
``json_schema`` → ``json_object`` → schema in the prompt; streamed usage → counted locally. The request
body and the parsing of answers are :mod:`.wire`'s.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from typing import TYPE_CHECKING, Any

import openai

from ... import errors
from ...redact import redact_url, url_secrets
from ...tokens import count_messages, count_text, encoding_for
from ...types import ChatRequest, Completion, Message, StreamDelta, Usage
from ..base import BaseBackend
from . import wire
from .errors import translate_error

if TYPE_CHECKING:
    from ...config import Settings
    from ...models import ModelInfo
    from .batches import BatchApi
    from .moderation import OpenAIModeration


class OpenAIBackend(BaseBackend):
    """Chat completions over the openai SDK (sync and async)."""

    name = "openai"
    default_model = "gpt-4o-mini"
    reports_limits = True  # x-ratelimit-* headers, where the server sends them

    def __init__(
        self,
        settings: Settings,
        *,
        client: openai.OpenAI | None = None,
        async_client: openai.AsyncOpenAI | None = None,
    ) -> None:
        if settings.base_urls and not settings.base_url:  # replicas: the first names the server in messages
            settings = settings.model_copy(update={"base_url": settings.base_urls[0]})
        self.settings = settings
        self._key = settings.key
        if not self._key and not settings.base_url:
            raise errors.ConfigError(
                "no API key for the openai backend: set OPENAI_API_KEY, api_key in the config file, "
                "or use --backend local"
            )
        if settings.base_urls and client is None and async_client is None:
            from ...balance import balanced_clients

            client, async_client = balanced_clients(settings.base_urls, self._key, timeout=settings.timeout)
        self._client = client
        self._async_client = async_client
        self.where = redact_url(settings.base_url) or "the OpenAI API"
        if settings.base_urls and len(settings.base_urls) > 1:
            self.where += f" (and {len(settings.base_urls) - 1} more)"
        self._secrets = (self._key, *(s for u in (settings.base_url, *(settings.base_urls or ())) for s in url_secrets(u)))
        self.official = settings.base_url is None
        # Capabilities learned from this server's answers, so each downgrade costs one request only.
        self._response_format = "json_schema"
        self._stream_options = True
        self._logprobs = True
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

    @property
    def structured_mode(self) -> str:
        """How structured output is asked of this server now: json_schema, json_object or prompt."""
        return self._response_format

    def batch_api(self) -> BatchApi:
        from .batches import BatchApi

        return BatchApi(self)

    def moderation_api(self) -> OpenAIModeration:
        from .moderation import OpenAIModeration

        return OpenAIModeration(self, self.settings.moderation_model)

    def translate(self, e: BaseException) -> errors.AigcError:
        """An SDK exception as aigc's error, the secrets scrubbed. Raise it outside the ``except`` block that
        caught ``e``, so that the SDK exception (and the request it holds) is not its ``__context__``."""
        return translate_error(e, key=self._secrets, where=self.where)

    def close(self) -> None:
        if self._client is not None:
            self._client.close()

    async def aclose(self) -> None:
        if self._async_client is not None:
            await self._async_client.close()
        self.close()

    # -- request shaping --------------------------------------------------------------------------------
    def body(self, request: ChatRequest) -> dict[str, Any]:
        """The request's JSON body as this server will be sent it (also used for Batch API lines)."""
        if request.logprobs is not None and not self._logprobs:
            request = request.model_copy(update={"logprobs": None})
        return wire.request_body(request, official=self.official, response_format=self._response_format)

    def _params(self, request: ChatRequest, *, stream: bool = False) -> dict[str, Any]:
        params = self.body(request)
        if request.timeout is not None:
            params["timeout"] = request.timeout
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
        if request.logprobs is not None and self._logprobs and "logprobs" in text:
            self._logprobs = False  # a server without log-probabilities: answers come without confidence
            return True
        return False

    def _fill_usage(self, completion: Completion, request: ChatRequest) -> Completion:
        if completion.usage is not None:
            return completion
        usage = Usage(prompt_tokens=self.count_tokens(request.messages, request.model),
                      completion_tokens=self.count_text(completion.text, request.model))
        return completion.model_copy(update={"usage": usage, "usage_estimated": True})

    def _parsed(self, raw: Any, request: ChatRequest) -> Completion:
        completion = wire.completion_from(raw.parse(), request, response_format=self._response_format,
                                          request_id=raw.request_id)
        limits = wire.rate_limits(raw.headers)
        if limits:
            completion = completion.model_copy(update={"limits": limits})
        return self._fill_usage(completion, request)

    # -- generation -------------------------------------------------------------------------------------
    def _failed(self, err: errors.AigcError, request: ChatRequest, stream: bool) -> None:
        """Raise the aigc error for an SDK failure, unless dropping a feature the server lacks makes one more
        request worthwhile (then return, and the caller asks again)."""
        if not self._downgrade(err, request, stream):
            raise err

    def _create(self, request: ChatRequest, *, stream: bool = False) -> Any:
        while True:
            try:
                if stream:
                    return self.client.chat.completions.create(**self._params(request, stream=True))
                return self.client.chat.completions.with_raw_response.create(**self._params(request))
            except openai.OpenAIError as e:
                err = self.translate(e)
            self._failed(err, request, stream)  # outside the except: the SDK error is not its context

    async def _acreate(self, request: ChatRequest, *, stream: bool = False) -> Any:
        chat = self.async_client.chat.completions
        while True:
            try:
                if stream:
                    return await chat.create(**self._params(request, stream=True))
                return await chat.with_raw_response.create(**self._params(request))
            except openai.OpenAIError as e:
                err = self.translate(e)
            self._failed(err, request, stream)

    def generate(self, request: ChatRequest) -> Completion:
        return self._parsed(self._create(request), request)

    async def agenerate(self, request: ChatRequest) -> Completion:
        return self._parsed(await self._acreate(request), request)

    def _accumulator(self, stream: Any, request: ChatRequest) -> wire.StreamAccumulator:
        headers = stream.response.headers
        return wire.StreamAccumulator(request, request_id=headers.get("x-request-id"),
                                      limits=wire.rate_limits(headers))

    def stream(self, request: ChatRequest) -> Iterator[StreamDelta]:
        stream = self._create(request, stream=True)
        acc = self._accumulator(stream, request)
        failure = None
        try:
            for chunk in stream:
                if piece := acc.add(chunk):
                    yield StreamDelta(text=piece)
        except Exception as e:
            failure = self.translate(e)
        finally:
            stream.close()
        if failure is not None:
            raise failure
        yield StreamDelta(completion=self._fill_usage(acc.completion(self._response_format), request))

    async def astream(self, request: ChatRequest) -> AsyncIterator[StreamDelta]:
        stream = await self._acreate(request, stream=True)
        acc = self._accumulator(stream, request)
        failure = None
        try:
            async for chunk in stream:
                if piece := acc.add(chunk):
                    yield StreamDelta(text=piece)
        except Exception as e:
            failure = self.translate(e)
        finally:
            await stream.close()
        if failure is not None:
            raise failure
        yield StreamDelta(completion=self._fill_usage(acc.completion(self._response_format), request))

    # -- models and tokens ------------------------------------------------------------------------------
    def model_info(self, model: str) -> ModelInfo:
        if self._tables is None:
            from ...models import ModelTable

            self._tables = ModelTable.cached(self.settings.models_file)
        return self._tables.lookup(model)

    def count_tokens(self, messages: list[Message], model: str) -> int:
        return count_messages(messages, self.model_info(model))

    def count_text(self, text: str, model: str) -> int:
        return count_text(text, self.model_info(model))

    def text_counter(self, model: str):
        """The tiktoken encoding, for splitting long documents fast."""
        return encoding_for(self.model_info(model))
