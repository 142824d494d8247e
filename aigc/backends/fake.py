"""A scripted backend for testing apps built on aigc, no network or model needed.

    fake = FakeBackend()
    fake.enqueue("First reply", RateLimited("slow down", retry_after=0), "Second reply")
    client = aigc.Client(backend=fake)
    client.summarize("...")          # -> "First reply"
    fake.history[-1].messages        # what was sent

Queued strings become completions; queued exceptions are raised (so retry paths can be tested); with the
queue empty the reply is derived from the last user message. Tokens are counted with tiktoken
(o200k_base), so budgets and usage behave as they would on the hosted API.
"""

from __future__ import annotations

import itertools
import re
import threading
from collections import deque
from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING

from ..tokens import get_encoding
from ..types import ChatRequest, Completion, Message, StreamDelta, Usage
from .base import BaseBackend

if TYPE_CHECKING:
    from ..config import Settings
    from ..models import ModelInfo

Reply = str | BaseException | Callable[[ChatRequest], str]


class FakeBackend(BaseBackend):
    """Replies from a queue; records every request in ``history``."""

    name = "fake"
    default_model = "fake-model"

    def __init__(self, settings: Settings | None = None, *, replies: list[Reply] | None = None,
                 context_window: int = 8192, max_output_tokens: int = 4096) -> None:
        self.settings = settings
        self.history: list[ChatRequest] = []
        self._queue: deque[Reply] = deque(replies or [])
        self._lock = threading.Lock()
        self._ids = itertools.count(1)
        self._context_window = context_window
        self._max_output = max_output_tokens
        self._enc = get_encoding("o200k_base")

    def enqueue(self, *replies: Reply) -> FakeBackend:
        """Queue replies (text, an exception to raise, or a function of the request)."""
        with self._lock:
            self._queue.extend(replies)
        return self

    def _next_reply(self, request: ChatRequest) -> str:
        with self._lock:
            self.history.append(request)
            reply = self._queue.popleft() if self._queue else None
        if isinstance(reply, BaseException):
            raise reply
        if callable(reply):
            return reply(request)
        if reply is not None:
            return reply
        last = next((m.content for m in reversed(request.messages) if m.role == "user"), "")
        return "Fake reply: " + " ".join(last.split()[:12])

    def generate(self, request: ChatRequest) -> Completion:
        text = self._next_reply(request)
        finish = "stop"
        if request.max_output_tokens is not None:
            ids = self._enc.encode_ordinary(text)
            if len(ids) > request.max_output_tokens:
                text, finish = self._enc.decode(ids[: request.max_output_tokens]), "length"
        return Completion(
            text=text,
            finish_reason=finish,
            usage=Usage(prompt_tokens=self.count_tokens(request.messages, request.model),
                        completion_tokens=self.count_text(text, request.model)),
            model=request.model,
            request_id=f"fake-{next(self._ids)}",
            response_format="json_schema" if request.json_schema else None,
        )

    def stream(self, request: ChatRequest) -> Iterator[StreamDelta]:
        completion = self.generate(request)
        for piece in re.findall(r"\s*\S+|\s+", completion.text):
            yield StreamDelta(text=piece)
        yield StreamDelta(completion=completion)

    def count_tokens(self, messages: list[Message], model: str) -> int:
        # The same shape as OpenAI's chat billing: 3 per message, 1 per name, 3 to prime the reply.
        total = 3
        for m in messages:
            total += 3 + len(self._enc.encode_ordinary(m.content)) + len(self._enc.encode_ordinary(m.role))
            if m.name:
                total += 1 + len(self._enc.encode_ordinary(m.name))
        return total

    def count_text(self, text: str, model: str) -> int:
        return len(self._enc.encode_ordinary(text))

    def text_counter(self, model: str):
        return self._enc

    def model_info(self, model: str) -> ModelInfo:
        """The model table's entry (so prices behave as on the hosted API) with this fake's limits."""
        from ..models import ModelTable

        info = ModelTable.cached(self.settings.models_file if self.settings else None).lookup(model)
        return info.model_copy(update={"context_window": self._context_window,
                                       "max_output_tokens": min(self._max_output, self._context_window)})
