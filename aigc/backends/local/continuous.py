"""The local backend for servers: async requests share one continuously batched decode loop.

:class:`ContinuousLocalBackend` is a :class:`~aigc.backends.local.LocalBackend` whose async calls
(``agenerate``, ``astream``) go through a :class:`~.scheduler.Scheduler`: concurrent requests decode together,
each streams its own text, a request whose caller goes away (its stream closed, its task cancelled) stops at
the next step without disturbing the others, and ``json_schema`` output is enforced while decoding when
llguidance is installed (:mod:`.constraints`). Sync calls keep the parent's behaviour.

Streamed and non-streamed replies are assembled the same way (incremental detokenization, ``stop`` strings cut
before they show), so both give the same text for the same request.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import AsyncIterator, Callable
from typing import TYPE_CHECKING, Any

from ...errors import BackendError
from ...types import ChatRequest, Completion, StreamDelta, Usage
from .backend import LocalBackend, first_stop, held_back, request_ids
from .constraints import Constraints
from .models import LoadedModel
from .scheduler import Scheduler, SchedulerStats, Sequence

if TYPE_CHECKING:
    from ...config import Settings

__all__ = ["ContinuousLocalBackend"]


class ContinuousLocalBackend(LocalBackend):
    """``LocalBackend`` with continuous batching for async callers (``aigc serve`` uses it).

    ``max_batch`` rows decode together (default 32 on CPU, 128 on a GPU); ``stats`` holds the loop's counters.
    """

    prefers_batches = False  # many requests at once go through the scheduler, not generate_batch

    def __init__(self, settings: Settings, *, max_batch: int | None = None, prefill_tokens: int = 4096) -> None:
        super().__init__(settings)
        self.max_batch = max_batch
        self.prefill_tokens = prefill_tokens
        self._schedulers: dict[str, tuple[Scheduler, Constraints]] = {}
        self._lock = threading.Lock()

    def load(self, model: str | None = None) -> LoadedModel:
        """Load the model (and start its decode loop) now rather than on the first request."""
        lm = self._get(model)
        self._scheduler(lm)
        return lm

    def _scheduler(self, lm: LoadedModel) -> tuple[Scheduler, Constraints]:
        with self._lock:
            pair = self._schedulers.get(lm.name)
            if pair is None:
                for old, _ in self._schedulers.values():  # one resident model, one loop
                    old.close()
                self._schedulers.clear()
                batch = self.max_batch or (32 if lm.device == "cpu" else 128)
                pair = (Scheduler(lm.model, device=lm.device, pad_id=lm.pad_id, max_batch=batch,
                                  prefill_tokens=self.prefill_tokens),
                        Constraints(lm.tokenizer, lm.end_ids))
                self._schedulers[lm.name] = pair
            return pair

    @property
    def stats(self) -> SchedulerStats:
        """The running loop's counters (empty before the first request)."""
        with self._lock:
            pair = next(iter(self._schedulers.values()), None)
        return pair[0].stats if pair else SchedulerStats()

    def prompt_tokens(self, request: ChatRequest) -> int:
        """Tokens of the prompt as the model will see it: chat template and any schema instruction included."""
        lm = self._get(request.model)
        return len(self._prompt_ids(lm, request.messages, request.json_schema))

    def close(self) -> None:
        with self._lock:
            for scheduler, _ in self._schedulers.values():
                scheduler.close()
            self._schedulers.clear()
        super().close()

    # -- async generation -----------------------------------------------------------------------------------

    async def agenerate(self, request: ChatRequest) -> Completion:
        completion = None
        async for delta in self.astream(request):
            completion = delta.completion or completion
        assert completion is not None
        return completion

    async def astream(self, request: ChatRequest) -> AsyncIterator[StreamDelta]:
        lm = self._get(request.model) if self._loaded is not None else await asyncio.to_thread(
            self._get, request.model)
        job = self._plan(lm, request)
        scheduler, constraints = self._scheduler(lm)
        constraint = None
        if request.json_schema is not None:
            constraint = constraints.for_schema(request.json_schema.get("schema", request.json_schema))
        loop = asyncio.get_running_loop()
        tokens: asyncio.Queue[int | None] = asyncio.Queue()
        seq = Sequence(prompt=job.ids, max_new=job.max_new, sink=_sink(loop, tokens),
                       temperature=job.temperature, top_p=request.top_p, seed=request.seed,
                       end_ids=frozenset(lm.end_ids), constraint=constraint)
        text = _Text(lm.tokenizer, request.stop or [], lm.end_ids)
        scheduler.submit(seq)
        try:
            while (token := await tokens.get()) is not None:
                if piece := text.add(token):
                    yield StreamDelta(text=piece)
                if text.stopped:
                    break
        finally:
            seq.cancel()  # the caller went away, or a stop string ended it: free the row at the next step
        if seq.error is not None and not text.stopped:
            raise BackendError(f"the local model {lm.name} failed: {seq.error}") from seq.error
        if rest := text.flush():
            yield StreamDelta(text=rest)
        ended = text.stopped or seq.finish == "stop"
        logprobs = None
        if request.logprobs is not None:  # one forward pass over the reply, beside the decode loop
            from .scoring import token_logprobs

            logprobs = await asyncio.to_thread(token_logprobs, lm, job.ids, text.ids, request.logprobs)
        yield StreamDelta(completion=Completion(
            text=text.text,
            finish_reason="stop" if ended else "length",
            usage=Usage(prompt_tokens=len(job.ids), completion_tokens=text.count),
            model=lm.name,
            request_id=f"local-batch-{next(request_ids)}",
            response_format=("json_schema" if constraint is not None else "prompt")
            if request.json_schema is not None else None,
            logprobs=logprobs,
        ))


def _sink(loop: asyncio.AbstractEventLoop, tokens: asyncio.Queue) -> Callable[[int | None], None]:
    def put(token: int | None) -> None:
        loop.call_soon_threadsafe(tokens.put_nowait, token)  # raises once the loop is gone: the row is dropped

    return put


class _Text:
    """Token ids in, text out: incremental detokenization, with ``stop`` strings cut before they show.

    ``count`` is the number of tokens the reply used: every generated token, or up to the one that completed
    a stop string."""

    def __init__(self, tokenizer: Any, stops: list[str], end_ids: list[int]) -> None:
        self.tokenizer = tokenizer
        self.stops = [s for s in stops if s]
        self.end_ids = set(end_ids)
        self.ids: list[int] = []
        self.raw = ""  # everything decoded so far
        self.shown = 0  # characters of raw already handed out
        self.count = 0
        self.stopped = False
        self._prefix = self._read = 0

    def _decode(self, ids: list[int]) -> str:
        return self.tokenizer.decode(ids, skip_special_tokens=True)

    def add(self, token: int) -> str:
        self.count += 1
        if token in self.end_ids:
            return ""
        self.ids.append(token)
        before = self._decode(self.ids[self._prefix:self._read])
        after = self._decode(self.ids[self._prefix:])
        if len(after) <= len(before) or after.endswith("\ufffd"):
            return ""  # an incomplete character: wait for the next token
        self.raw += after[len(before):]
        self._prefix, self._read = self._read, len(self.ids)
        return self._release()

    def _release(self, final: bool = False) -> str:
        cut = first_stop(self.raw, self.stops)
        if cut is not None:
            self.stopped = True
            self.raw = self.raw[:cut]
            end = cut
        elif final:
            end = len(self.raw)
        else:
            end = len(self.raw) - held_back(self.raw, self.stops)
        out = self.raw[self.shown:end] if end > self.shown else ""
        self.shown = max(self.shown, end)
        return out

    def flush(self) -> str:
        if not self.stopped and self._read < len(self.ids):  # a last incomplete character
            before = self._decode(self.ids[self._prefix:self._read])
            self.raw += self._decode(self.ids[self._prefix:])[len(before):]
            self._read = len(self.ids)
        return self._release(final=True)

    @property
    def text(self) -> str:
        return self.raw[: self.shown]
