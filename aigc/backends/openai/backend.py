"""The hosted OpenAI API, or any OpenAI-compatible server (vLLM, Ollama, llama.cpp) through ``base_url``.

The SDK client is created with ``max_retries=0``: retrying belongs to :mod:`aigc.retry` alone. Every SDK
error is translated into an :mod:`aigc.errors` type (:mod:`.errors`), with the API key scrubbed from its
message. Servers differ, so features degrade instead of failing, and the result says what was used:
``json_schema`` → ``json_object`` → schema in the prompt; streamed usage → counted locally. What the
backend knows and decides about its server is :class:`~.server.ServerBase`'s; this class does the I/O.
On a local server (loopback or private address) even plain requests are streamed, so an attempt's timeout
counts from the last token received, and an abandoned generation stops when the connection closes.

Requests go through the SDK's documented ``client.post`` with the body :mod:`.wire` built (a plain answer is
read as JSON, a stream as the SDK's chunks): the same client, headers, auth and errors as
``chat.completions.create``, without
re-walking the body against the SDK's typed parameters (about 0.45 ms of CPU per call on the test machine,
more than the rest of aigc's own work).
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import ssl
from collections.abc import AsyncIterator, Iterator
from typing import TYPE_CHECKING, Any

import httpx2
import openai
from openai.types.chat import ChatCompletion, ChatCompletionChunk

from ... import errors
from ...ratelimit import aleaving, leaving
from ...types import ChatRequest, Completion, StreamDelta
from . import wire
from .capabilities import CapabilityStore
from .server import ServerBase

if TYPE_CHECKING:
    from ...config import Settings
    from .batches import BatchApi
    from .moderation import OpenAIModeration


# Requests for one attempt: json_schema, json_object with and without the schema, prompt, without
# stream_options, without logprobs.
_MAX_DOWNGRADES = 6
_PATH = "/chat/completions"


class OpenAIBackend(ServerBase):
    """Chat completions over the openai SDK (sync and async)."""

    reports_limits = True  # x-ratelimit-* headers, where the server sends them

    def __init__(
        self,
        settings: Settings,
        *,
        client: openai.OpenAI | None = None,
        async_client: openai.AsyncOpenAI | None = None,
        store: CapabilityStore | None = None,
    ) -> None:
        if settings.base_urls and not settings.base_url:  # replicas: the first names the server in messages
            settings = settings.model_copy(update={"base_url": settings.base_urls[0]})
        super().__init__(settings, store=store)
        if settings.base_urls and client is None and async_client is None:
            from ...balance import balanced_clients

            client, async_client = balanced_clients(settings.base_urls, self._key, timeout=settings.timeout)
        self._client = client
        self._async_client = async_client

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
            self._client = openai.OpenAI(**self._client_kwargs(), http_client=_Http())
        return self._client

    @property
    def async_client(self) -> openai.AsyncOpenAI:
        if self._async_client is None:
            self._async_client = openai.AsyncOpenAI(**self._client_kwargs(), http_client=_AsyncHttp())
        return self._async_client

    def batch_api(self) -> BatchApi:
        from .batches import BatchApi

        return BatchApi(self)

    def moderation_api(self) -> OpenAIModeration:
        from .moderation import OpenAIModeration

        return OpenAIModeration(self, self.settings.moderation_model)

    def close(self) -> None:
        if self._client is not None:
            self._client.close()
        super().close()

    async def aclose(self) -> None:
        if self._async_client is not None:
            await self._async_client.close()
        self.close()

    # -- request shaping --------------------------------------------------------------------------------
    def _streamed(self, request: ChatRequest, mode: str) -> dict[str, Any]:
        body = self.body(request, mode)
        body["stream"] = True
        if self.capabilities(request.model).stream_options:
            body["stream_options"] = {"include_usage": True}
        return body

    @staticmethod
    def _options(request: ChatRequest) -> dict[str, Any]:
        return {"timeout": request.timeout} if request.timeout is not None else {}

    def _parsed(self, raw: httpx2.Response, request: ChatRequest, mode: str) -> Completion:
        try:
            data = raw.json()
        except ValueError:
            raise errors.BackendError(f"the server answered HTTP {raw.status_code} with a body that is not JSON: "
                                      f"{raw.text[:200]!r}; check base_url") from None
        completion = wire.completion_from(data, request, response_format=mode,
                                          request_id=raw.headers.get("x-request-id"))
        limits = wire.rate_limits(raw.headers)
        if limits:
            completion = completion.model_copy(update={"limits": limits})
        return self.finished(completion, request, mode)

    # -- generation -------------------------------------------------------------------------------------
    def _failed(self, err: errors.AigcError, request: ChatRequest, stream: bool, mode: str, *, last: bool) -> str:
        """Raise the aigc error for an SDK failure, unless dropping a feature the server lacks makes one more
        request worthwhile: then return the structured mode to ask in, and the caller asks again."""
        if not self.learned(err, request, stream, mode) or last:
            raise err
        return self.structured_mode(request.model)

    def _create(self, request: ChatRequest, mode: str, *, stream: bool = False) -> tuple[Any, str]:
        for tries in range(_MAX_DOWNGRADES):
            try:
                if stream:
                    return self.client.post(_PATH, body=self._streamed(request, mode), cast_to=ChatCompletion,
                                            options=self._options(request), stream=True,
                                            stream_cls=openai.Stream[ChatCompletionChunk]), mode
                return self.client.post(_PATH, body=self.body(request, mode), cast_to=httpx2.Response,
                                        options=self._options(request)), mode
            except openai.OpenAIError as e:
                err = self.translate(e)
            # outside the except: the SDK error (and the request it holds) is not the aigc error's context
            mode = self._failed(err, request, stream, mode, last=tries == _MAX_DOWNGRADES - 1)
        raise AssertionError("unreachable")  # pragma: no cover

    async def _acreate(self, request: ChatRequest, mode: str, *, stream: bool = False) -> tuple[Any, str]:
        for tries in range(_MAX_DOWNGRADES):
            try:
                if stream:
                    return await self.async_client.post(
                        _PATH, body=self._streamed(request, mode), cast_to=ChatCompletion,
                        options=self._options(request), stream=True,
                        stream_cls=openai.AsyncStream[ChatCompletionChunk]), mode
                return await self.async_client.post(_PATH, body=self.body(request, mode), cast_to=httpx2.Response,
                                                    options=self._options(request)), mode
            except openai.OpenAIError as e:
                err = self.translate(e)
            # outside the except: the SDK error (and the request it holds) is not the aigc error's context
            mode = self._failed(err, request, stream, mode, last=tries == _MAX_DOWNGRADES - 1)
        raise AssertionError("unreachable")  # pragma: no cover

    def generate(self, request: ChatRequest) -> Completion:
        if self.local_server:
            return _last(self.stream(request))
        raw, mode = self._create(request, self.structured_mode(request.model))
        return self._parsed(raw, request, mode)

    async def agenerate(self, request: ChatRequest) -> Completion:
        if self.local_server:
            completion = None
            async for delta in self.astream(request):
                completion = delta.completion or completion
            return completion  # type: ignore[return-value]
        raw, mode = await self._acreate(request, self.structured_mode(request.model))
        return self._parsed(raw, request, mode)

    def _accumulator(self, stream: Any, request: ChatRequest) -> wire.StreamAccumulator:
        headers = stream.response.headers
        return wire.StreamAccumulator(request, request_id=headers.get("x-request-id"),
                                      limits=wire.rate_limits(headers), via=wire.gateway(headers))

    def stream(self, request: ChatRequest) -> Iterator[StreamDelta]:
        stream, mode = self._create(request, self.structured_mode(request.model), stream=True)
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
        if acc.hollow:  # no text, no usage: a refusal inside the stream (llama-cpp-python); ask plainly to hear why
            raw, mode = self._create(request, mode)
            yield from _whole(self._parsed(raw, request, mode))
            return
        yield StreamDelta(completion=self.finished(acc.completion(mode), request, mode))

    async def astream(self, request: ChatRequest) -> AsyncIterator[StreamDelta]:
        stream, mode = await self._acreate(request, self.structured_mode(request.model), stream=True)
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
        if acc.hollow:
            raw, mode = await self._acreate(request, mode)
            for delta in _whole(self._parsed(raw, request, mode)):
                yield delta
            return
        yield StreamDelta(completion=self.finished(acc.completion(mode), request, mode))


def _whole(completion: Completion) -> Iterator[StreamDelta]:
    """A completion as a stream: its text in one piece, then itself."""
    if completion.text:
        yield StreamDelta(text=completion.text)
    yield StreamDelta(completion=completion)


def _last(deltas: Iterator[StreamDelta]) -> Completion:
    completion = None
    for delta in deltas:
        completion = delta.completion or completion
    return completion  # type: ignore[return-value]


@functools.cache
def _tls() -> ssl.SSLContext:
    """The TLS settings every client in this process shares, as the HTTP library makes them by default
    (``SSL_CERT_FILE``/``SSL_CERT_DIR`` as they were at the first client): reading the system's certificates
    takes about 20 ms, paid once instead of by every client (a batch job, each command of a session, each
    backend of a failover list)."""
    return httpx2.create_ssl_context()


class _Http(openai.DefaultHttpxClient):
    """The SDK's HTTP client with the SDK's defaults, telling the rate gate as each request leaves (a request
    hook); closed when dropped unclosed, as the SDK's own is."""

    def __init__(self) -> None:
        super().__init__(event_hooks={"request": [leaving]}, verify=_tls())

    def __del__(self) -> None:
        if not self.is_closed:
            with contextlib.suppress(Exception):
                self.close()


class _AsyncHttp(openai.DefaultAsyncHttpxClient):
    def __init__(self) -> None:
        super().__init__(event_hooks={"request": [aleaving]}, verify=_tls())

    def __del__(self) -> None:
        if not self.is_closed:
            with contextlib.suppress(Exception):
                asyncio.get_running_loop().create_task(self.aclose())
