"""``Client`` and ``AsyncClient``: every declared task, raw chat messages, templates and many inputs at once,
on any backend.

:class:`ClientBase` makes every decision (settings, collaborators, which flow a call needs); the two clients
only run those flows, one blocking and one with ``await``. Their task methods are written once, here.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from pathlib import Path
from typing import TYPE_CHECKING, Any

from .accounting import Accounting
from .assembly import fallback_engine, open_cache, open_ledger, open_moderator
from .backends.base import Backend, create_backend
from .calls import Call, CallPlanner
from .config import Settings, load_settings, updated
from .engine import Engine
from .errors import AigcError
from .retry import RetryPolicy
from .streams import AsyncTextStream, TextStream
from .tasks import find_task
from .templates import TemplateLibrary
from .tune.aliases import apply as apply_alias
from .types import Message, Result

if TYPE_CHECKING:
    from .budget import Budget
    from .cache import ResponseCache
    from .conversations import AsyncConversation, Conversation
    from .ratelimit import RateGate

__all__ = ["Client", "AsyncClient", "ClientBase", "Call"]

class ClientBase(CallPlanner, ABC):
    """Settings, collaborators and planning, shared by :class:`Client` and :class:`AsyncClient`."""

    def __init__(
        self,
        backend: str | Backend | None = None,
        *,
        model: str | None = None,
        temperature: float | None = None,
        max_output_tokens: int | None = None,
        max_tokens: int | None = None,
        api_key: str | None = None,
        base_url: str | None = None,
        timeout: float | None = None,
        deadline: float | None = None,
        max_attempts: int | None = None,
        templates_dir: str | Path | None = None,
        retry: RetryPolicy | None = None,
        budget: Budget | None = None,
        ledger: bool | None = None,
        cache: bool | ResponseCache | None = None,
        concurrency: int | None = None,
        rpm: float | None = None,
        tpm: float | None = None,
        gate: RateGate | None = None,
        job: str | None = None,
        fallback: list[str] | str | None = None,
        redact: bool | None = None,
        redact_region: str | None = None,
        moderate: bool | None = None,
        moderation_model: str | None = None,
        moderation_thresholds: dict[str, float] | None = None,
        settings: Settings | None = None,
    ) -> None:
        explicit = dict(model=model, temperature=temperature, max_output_tokens=max_output_tokens,
                        max_tokens=max_tokens, api_key=api_key, base_url=base_url, timeout=timeout,
                        deadline=deadline, max_attempts=max_attempts, templates_dir=templates_dir, ledger=ledger,
                        concurrency=concurrency, rpm=rpm, tpm=tpm, fallback=fallback, redact=redact,
                        redact_region=redact_region, moderate=moderate, moderation_model=moderation_model,
                        moderation_thresholds=moderation_thresholds)
        if backend is not None:
            explicit["backend"] = backend if isinstance(backend, str) else backend.name
        self.settings = apply_alias(updated(settings, explicit) if settings is not None else load_settings(explicit))
        s = self.settings
        self.backend: Backend = create_backend(s) if backend is None or isinstance(backend, str) else backend
        self.templates = TemplateLibrary(s.templates_dir)
        self._owned: list[Any] = []  # what this client opened and closes
        if gate is None and (s.rpm or s.tpm or self.backend.reports_limits):
            from .ratelimit import RateGate

            # Configured limits are a ceiling; the server's headers, where it sends them, are learned.
            gate = RateGate(s.rpm, s.tpm, learn=self.backend.reports_limits)
        if retry is None:
            # Behind a rate gate every retry waits its turn too, so the first may come sooner (0.1-0.2 s), and
            # the later ones grow faster (0.3, 0.9, 2.7, 8.1 s): six attempts span about as long as 0.5 s doubling.
            retry = RetryPolicy(max_attempts=s.max_attempts, deadline=s.deadline, max_retry_after=s.max_retry_after,
                                **({"initial_backoff": 0.1, "jitter": 0.1, "multiplier": 3.0} if gate is not None else {}))
        if budget is None and (s.max_total_tokens or s.max_cost_usd):
            from .budget import Budget

            budget = Budget(max_total_tokens=s.max_total_tokens, max_cost_usd=s.max_cost_usd)
        self.budget = budget
        ledger = open_ledger(s)
        cache, own_cache = open_cache(s, cache)
        self._owned += [part for part in (ledger, cache if own_cache else None) if part is not None]
        accounting = Accounting(backend=self.backend.name, base_url=s.base_url,
                                budgets=(budget,) if budget is not None else (), ledger=ledger, cache=cache,
                                gate=gate, job=job)
        fallback, self.fallbacks = fallback_engine(s, retry, accounting)  # the backends that take over, in order
        moderator, hosted = open_moderator(self.backend, s)
        self._backends = [self.backend, *self.fallbacks, *([hosted] if hosted else [])]  # what close() closes
        self.engine = Engine(self.backend, s, retry, accounting, concurrency=s.concurrency, fallback=fallback,
                             moderator=moderator)

    def __repr__(self) -> str:
        return f"{type(self).__name__}(backend={self.backend.name!r}, model={self.model!r})"

    @property
    def model(self) -> str:
        return self.engine.model

    @property
    def accounting(self) -> Accounting:
        return self.engine.accounting

    # -- the task methods, written once for both clients ------------------------------------------------
    def run(self, task: str, *args: Any, **kw: Any):
        """Run any declared task (or a template that declares one) by name: ``client.run("headline", text)``."""
        return self.run_call(self.call(task, args, kw))

    def summarize(self, text: str, **kw: Any):
        """Summarize ``text`` (``length="3 sentences"``, ``language``, ``focus``); long texts map-reduce."""
        return self.run_call(self.call("summarize", (text,), kw))

    def translate(self, text: str, *, to: str, **kw: Any):
        """Translate ``text`` into ``to`` (``source`` optional, else detected); formatting is kept."""
        return self.run_call(self.call("translate", (text,), {"to": to, **kw}))

    def answer(self, question: str, **kw: Any):
        """Answer ``question``, from ``context`` when given (long contexts: the most relevant parts)."""
        return self.run_call(self.call("answer", (question,), kw))

    def news(self, facts: str, **kw: Any):
        """A news article from ``facts`` (``style``, ``length``, ``headline``, ``audience``)."""
        return self.run_call(self.call("news", (facts,), kw))

    write_news = news

    def chat(self, messages: list[dict[str, Any]] | list[Message], **kw: Any):
        """Send chat messages as they are (``[{"role": "user", "content": "..."}]``), with the same retries,
        accounting, budget and structured output (``schema=``) as every task."""
        return self.run_call(self.call("chat", (messages,), kw))

    def generate(self, template: str, variables: dict[str, Any] | None = None, **kw: Any):
        """Render ``template`` (built-in or yours) with ``variables``/keyword variables and send it."""
        return self.run_call(self.template_call(template, variables, dict(kw)))

    def map(self, task: str, items: list[Any], *, return_exceptions: bool = True, **kw: Any):
        """Run ``task`` over many inputs (an item is the first argument, or a dict of arguments); concurrent
        on hosted backends, batched on local ones. Every item gets its place in the list: a Result, or the
        error that ended it (``return_exceptions=False``: the first error is raised once every item has
        finished, with the whole list as its ``results``)."""
        calls: list[Call | AigcError] = []
        for item in items:
            args, extra = ((), item) if isinstance(item, dict) else ((item,), {})
            try:
                calls.append(self.call(task, args, {**kw, **extra}))
            except AigcError as e:  # an unusable item fails in its place; the others still run
                calls.append(e)
        return self._map(calls, return_exceptions)

    @staticmethod
    def _runnable(calls: list[Call | AigcError]) -> list[Call]:
        return [c for c in calls if isinstance(c, Call)]

    @staticmethod
    def _outcomes(calls: list[Call | AigcError], ran: list[Any], return_exceptions: bool) -> list[Any]:
        """Each item's result (or error) in its place; see :meth:`map`."""
        done = iter(ran)
        results = [next(done) if isinstance(c, Call) else c for c in calls]
        if not return_exceptions:
            failed = next((r for r in results if isinstance(r, BaseException)), None)
            if failed is not None:
                failed.results = results  # type: ignore[attr-defined]  (finished work is not lost)
                raise failed
        return results

    def __getattr__(self, name: str):
        if not name.startswith("_") and find_task(name) is not None:
            return lambda *args, **kw: self.run_call(self.call(name, args, kw))
        raise AttributeError(f"{type(self).__name__!r} object has no attribute {name!r}")

    def _conversation(self, kind: Any, **kw: Any) -> Any:
        from .conversations import ConversationStore

        store = ConversationStore.in_dir(self.settings.data_dir)
        try:
            return kind.open(self, store, **kw)
        except BaseException:
            store.close()
            raise

    @abstractmethod
    def run_call(self, call: Call):
        """Run a planned call (each client does its own I/O)."""

    @abstractmethod
    def _map(self, calls: list[Call | AigcError], return_exceptions: bool):
        """Run many planned calls, failures in place."""

    def close(self) -> None:
        """Close the backends (an async client's HTTP client is left to the garbage collector: use aclose) and
        what this client opened (ledger, cache)."""
        for backend in self._backends:
            backend.close()
        self._close_owned()

    def _close_owned(self) -> None:
        for part in self._owned:
            part.close()


class Client(ClientBase):
    """Synchronous client. ``Client(backend="local")``, ``Client(base_url=..., model=...)``, or
    ``Client(backend=FakeBackend())``; every task accepts ``model``, ``temperature``, ``max_output_tokens``,
    ``top_p``, ``stop``, ``seed``, ``schema`` (a pydantic model for structured output), ``stream``,
    ``budget`` and ``timeout``."""

    def run_call(self, call: Call) -> Result | TextStream:
        if call.stream:
            return TextStream(call.engine.run_stream(call.flow, call.task))
        return call.engine.run(call.flow, call.task)

    def _map(self, calls: list[Call | AigcError], return_exceptions: bool) -> list[Result | AigcError]:
        todo = self._runnable(calls)
        ran = self.engine.run_many([c.flow for c in todo], todo[0].task) if todo else []
        return self._outcomes(calls, ran, return_exceptions)

    def conversation(self, persona: str | None = None, *, knowledge: list[str] | None = None,
                     system: str | None = None, id: str | None = None, trim: str | None = None) -> Conversation:
        """A conversation kept in the store (``id``: resume one; ``"last"``: the latest), with a persona
        (``assistant``, ``support``, or your template) grounded on ``knowledge`` files; ``say(text)``."""
        from .conversations import Conversation

        return self._conversation(Conversation, persona=persona, knowledge=knowledge, system=system, id=id,
                                  trim=trim)

    def __enter__(self) -> Client:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()


class AsyncClient(ClientBase):
    """Asynchronous client with the same methods as :class:`Client` (``await client.summarize(...)``)."""

    async def run_call(self, call: Call) -> Result | AsyncTextStream:
        if call.stream:
            return AsyncTextStream(call.engine.arun_stream(call.flow, call.task))
        return await call.engine.arun(call.flow, call.task)

    async def _map(self, calls: list[Call | AigcError], return_exceptions: bool) -> list[Result | AigcError]:
        todo = self._runnable(calls)
        ran = await self.engine.arun_many([c.flow for c in todo], todo[0].task) if todo else []
        return self._outcomes(calls, ran, return_exceptions)

    def conversation(self, persona: str | None = None, *, knowledge: list[str] | None = None,
                     system: str | None = None, id: str | None = None, trim: str | None = None) -> AsyncConversation:
        """The async twin of :meth:`Client.conversation` (``await conversation.say(text)``)."""
        from .conversations import AsyncConversation

        return self._conversation(AsyncConversation, persona=persona, knowledge=knowledge, system=system, id=id,
                                  trim=trim)

    async def aclose(self) -> None:
        for backend in self._backends:
            await backend.aclose()
        self._close_owned()

    async def __aenter__(self) -> AsyncClient:
        return self

    async def __aexit__(self, *exc: Any) -> None:
        await self.aclose()
