"""The one interface every backend implements, and the registry that picks one by name."""

from __future__ import annotations

import abc
import asyncio
import threading
from collections.abc import AsyncIterator, Callable, Iterator
from importlib.metadata import entry_points
from typing import TYPE_CHECKING, Any, Protocol, runtime_checkable

from ..errors import BackendUnavailable
from ..targets import load_target
from ..types import ChatRequest, Completion, Message, Scores, StreamDelta

if TYPE_CHECKING:
    from ..config import Settings
    from ..models import ModelInfo


@runtime_checkable
class Backend(Protocol):
    """A source of chat completions.

    Backends raise :mod:`aigc.errors` types only (never their SDK's), so the single retry layer in
    :mod:`aigc.retry` can tell transient failures from permanent ones. Backends never retry.
    Every member is declared here; :class:`BaseBackend` gives the optional ones their defaults.
    """

    name: str
    default_model: str
    # True when many prompts are best sent together through generate_batch (local models on one device).
    prefers_batches: bool
    # How many requests the backend's server runs at once, when it is known to be few (a local server);
    # None: no limit of its own. A client's default concurrency stays within it.
    max_parallel: int | None
    # True when score() works: the likelihood of given replies, without generating (local models).
    can_score: bool
    # True when answers carry the server's rate limits (Completion.limits), so a client can learn them.
    reports_limits: bool

    def generate(self, request: ChatRequest) -> Completion: ...

    def stream(self, request: ChatRequest) -> Iterator[StreamDelta]: ...

    async def agenerate(self, request: ChatRequest) -> Completion: ...

    def astream(self, request: ChatRequest) -> AsyncIterator[StreamDelta]: ...

    def generate_batch(self, requests: list[ChatRequest]) -> list[Completion]: ...

    def model_info(self, model: str) -> ModelInfo:
        """The model's context window, output cap, prices and tokenizer."""
        ...

    def count_tokens(self, messages: list[Message], model: str) -> int:
        """Prompt tokens these messages cost, as the backend bills or feeds them."""
        ...

    def count_text(self, text: str, model: str) -> int:
        """Tokens of a bare piece of text (for splitting documents)."""
        ...

    def text_counter(self, model: str) -> Any:
        """A tokenizer object that splitting can use directly (fast), or None to count with count_text."""
        ...

    def batch_api(self) -> Any:
        """The provider's asynchronous batch service (see aigc.backends.openai.batches), or None."""
        ...

    def moderation_api(self) -> Any:
        """The provider's moderation endpoint (see aigc.moderation.ModerationApi), or None."""
        ...

    def score(self, request: ChatRequest, continuations: list[str]) -> Scores:
        """The log-probability of each continuation as the reply to ``request`` (when ``can_score``)."""
        ...

    def close(self) -> None: ...

    async def aclose(self) -> None: ...


class BaseBackend(abc.ABC):
    """Defaults shared by backends: async by thread, batches one by one, no batch service."""

    name = "base"
    default_model = ""
    prefers_batches = False
    max_parallel: int | None = None
    can_score = False
    reports_limits = False

    @abc.abstractmethod
    def generate(self, request: ChatRequest) -> Completion:
        """One completion for one request."""

    @abc.abstractmethod
    def model_info(self, model: str) -> ModelInfo:
        """The model's limits, prices and tokenizer."""

    @abc.abstractmethod
    def count_tokens(self, messages: list[Message], model: str) -> int:
        """Prompt tokens these messages cost."""

    @abc.abstractmethod
    def count_text(self, text: str, model: str) -> int:
        """Tokens of a bare piece of text."""

    def text_counter(self, model: str) -> Any:
        return None

    def batch_api(self) -> Any:
        return None

    def moderation_api(self) -> Any:
        return None

    def score(self, request: ChatRequest, continuations: list[str]) -> Scores:
        raise NotImplementedError(f"the {self.name} backend cannot score replies without generating them")

    def context_window(self, model: str) -> int:
        """Shorthand for ``model_info(model).context_window``."""
        return self.model_info(model).context_window

    def max_output_tokens(self, model: str) -> int:
        """Shorthand for ``model_info(model).max_output_tokens``."""
        return self.model_info(model).max_output_tokens

    def stream(self, request: ChatRequest) -> Iterator[StreamDelta]:
        completion = self.generate(request)
        yield StreamDelta(text=completion.text)
        yield StreamDelta(completion=completion)

    async def agenerate(self, request: ChatRequest) -> Completion:
        return await asyncio.to_thread(self.generate, request)

    async def astream(self, request: ChatRequest) -> AsyncIterator[StreamDelta]:
        """Run the sync stream in a worker thread and hand its pieces to the event loop."""
        loop = asyncio.get_running_loop()
        queue: asyncio.Queue = asyncio.Queue()
        done = object()
        stop = threading.Event()

        def pump() -> None:
            try:
                for delta in self.stream(request):
                    if stop.is_set():
                        break
                    loop.call_soon_threadsafe(queue.put_nowait, delta)
            except BaseException as e:  # handed to the consumer below
                loop.call_soon_threadsafe(queue.put_nowait, e)
            finally:
                loop.call_soon_threadsafe(queue.put_nowait, done)

        worker = loop.run_in_executor(None, pump)
        try:
            while (item := await queue.get()) is not done:
                if isinstance(item, BaseException):
                    raise item
                yield item
        finally:
            stop.set()
            await asyncio.shield(worker)

    def generate_batch(self, requests: list[ChatRequest]) -> list[Completion]:
        return [self.generate(r) for r in requests]

    def close(self) -> None:
        """Release clients or memory; nothing to do by default."""
        return None

    async def aclose(self) -> None:
        """Release async clients; then :meth:`close`."""
        self.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc) -> None:
        self.close()


BackendFactory = Callable[["Settings"], Backend]

_BUILTIN = {
    "openai": "aigc.backends.openai:OpenAIBackend",
    "local": "aigc.backends.local:LocalBackend",
    "fake": "aigc.backends.fake:FakeBackend",
}
_registry: dict[str, BackendFactory | str] = dict(_BUILTIN)


def register_backend(name: str, factory: BackendFactory | str) -> None:
    """Make ``backend=name`` build backends with ``factory(settings)`` (or a ``"module:attr"`` path)."""
    _registry[name] = factory


def backend_names() -> list[str]:
    names = set(_registry)
    names.update(ep.name for ep in entry_points(group="aigc.backends"))
    return sorted(names)


def _resolve(name: str) -> BackendFactory:
    target = _registry.get(name)
    if target is None:
        eps = [ep for ep in entry_points(group="aigc.backends") if ep.name == name]
        if not eps:
            raise BackendUnavailable(
                f"unknown backend {name!r}; choose one of: {', '.join(backend_names())}"
            )
        return eps[0].load()
    if isinstance(target, str):
        try:
            target = load_target(target)
        except ImportError as e:
            hint = " (install it with: pip install 'aigc-toolkit[local]')" if name == "local" else ""
            raise BackendUnavailable(f"backend {name!r} cannot load: {e}{hint}") from None
    return target  # type: ignore[return-value]


def create_backend(settings: Settings) -> Backend:
    """Build the backend ``settings`` names."""
    return _resolve(settings.resolved_backend())(settings)
