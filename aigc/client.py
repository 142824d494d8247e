"""``Client`` and ``AsyncClient``: the four content tasks plus templates, on any backend."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

from pydantic import BaseModel

from . import longdoc
from .backends.base import Backend, create_backend
from .config import Settings, load_settings
from .engine import Engine
from .errors import InputError
from .flows import Flow, single, structured
from .retry import RetryPolicy
from .templates import TemplateLibrary
from .tune.aliases import apply as apply_alias
from .types import ChatRequest, Result

_OPTIONS = ("model", "temperature", "max_tokens", "stream", "schema", "budget", "timeout", "seed")


class TextStream:
    """Text as it arrives: iterate it for the pieces; ``.result`` holds the full :class:`Result` afterwards."""

    def __init__(self, pieces: Iterator[str | Result]) -> None:
        self._pieces = pieces
        self._result: Result | None = None

    def __iter__(self) -> Iterator[str]:
        for piece in self._pieces:
            if isinstance(piece, Result):
                self._result = piece
            else:
                yield piece

    @property
    def result(self) -> Result:
        if self._result is None:
            for _ in self:
                pass
        assert self._result is not None
        return self._result

    @property
    def text(self) -> str:
        return self.result.text


class AsyncTextStream:
    """Async twin of :class:`TextStream`: ``async for piece in stream``; then ``await stream.get_result()``."""

    def __init__(self, pieces: AsyncIterator[str | Result]) -> None:
        self._pieces = pieces
        self._result: Result | None = None

    async def __aiter__(self) -> AsyncIterator[str]:
        async for piece in self._pieces:
            if isinstance(piece, Result):
                self._result = piece
            else:
                yield piece

    async def get_result(self) -> Result:
        if self._result is None:
            async for _ in self:
                pass
        assert self._result is not None
        return self._result


class _ClientBase:
    def __init__(
        self,
        backend: str | Backend | None = None,
        *,
        model: str | None = None,
        temperature: float | None = None,
        max_tokens: int | None = None,
        api_key: str | None = None,
        base_url: str | None = None,
        timeout: float | None = None,
        deadline: float | None = None,
        max_attempts: int | None = None,
        templates_dir: str | Path | None = None,
        retry: RetryPolicy | None = None,
        budget: Any = None,
        ledger: bool | None = None,
        concurrency: int = 4,
        settings: Settings | None = None,
    ) -> None:
        explicit = dict(model=model, temperature=temperature, max_tokens=max_tokens, api_key=api_key,
                        base_url=base_url, timeout=timeout, deadline=deadline, max_attempts=max_attempts,
                        templates_dir=templates_dir, ledger=ledger)
        if isinstance(backend, str):
            explicit["backend"] = backend
        elif backend is not None:
            explicit["backend"] = backend.name
        if settings is not None:
            settings = settings.model_copy(update={k: v for k, v in explicit.items() if v is not None})
        self.settings = apply_alias(settings or load_settings(explicit))  # --model NAME of aigc tune alias
        self.backend: Backend = backend if backend is not None and not isinstance(backend, str) \
            else create_backend(self.settings)
        self.templates = TemplateLibrary(self.settings.templates_dir)
        policy = retry or RetryPolicy(max_attempts=self.settings.max_attempts, deadline=self.settings.deadline,
                                      max_retry_after=self.settings.max_retry_after)
        if budget is None and (self.settings.budget_tokens or self.settings.budget_usd):
            from .budget import Budget

            budget = Budget(max_tokens=self.settings.budget_tokens, max_cost_usd=self.settings.budget_usd)
        self.budget = budget
        self.engine = Engine(self.backend, self.settings, policy, budgets=[budget] if budget else [],
                             ledger=self._open_ledger(), concurrency=concurrency)

    def _open_ledger(self):
        if not self.settings.ledger:
            return None
        from .ledger import Ledger

        return Ledger(self.settings.data_dir / "ledger.db", store_prompts=self.settings.ledger_prompts)

    def __repr__(self) -> str:
        return f"{type(self).__name__}(backend={self.backend.name!r}, model={self.model!r})"

    @property
    def model(self) -> str:
        return self.settings.model or self.backend.default_model

    # -- planning: from a task call to a flow ---------------------------------------------------------
    def build_request(self, template_name: str, variables: dict[str, Any], opts: dict[str, Any]) -> ChatRequest:
        """The request a template renders to, with model and generation settings resolved (explicit option >
        client settings > the template's defaults)."""
        template = self.templates.get(template_name)
        defaults = template.defaults

        def pick(name: str) -> Any:
            for value in (opts.get(name), getattr(self.settings, name, None), defaults.get(name)):
                if value is not None:
                    return value
            return None

        return ChatRequest(
            messages=template.render(**variables),
            model=opts.get("model") or self.model,
            temperature=pick("temperature"),
            max_tokens=pick("max_tokens"),
            seed=opts.get("seed"),
            timeout=opts.get("timeout"),
        )

    def flow(self, task: str, template_name: str, variables: dict[str, Any], opts: dict[str, Any],
             long_input: str | None) -> Flow:
        """The flow for one task call (see :mod:`aigc.flows`), for drivers such as batch jobs. The arguments
        are what a :data:`TASK_SPECS` entry returns."""
        unknown = set(opts) - set(_OPTIONS)
        if unknown:
            raise TypeError(f"unexpected option {sorted(unknown)[0]!r}")
        if long_input is not None and not str(variables.get(long_input) or "").strip():
            raise InputError(f"the {long_input} to {task} is empty")
        request = self.build_request(template_name, variables, opts)
        schema: type[BaseModel] | None = opts.get("schema")
        if long_input is not None and not self._fits(request):
            plan = longdoc.Planner(self, template_name, variables, opts)
            return plan.flow(task, long_input)
        if schema is not None:
            return structured(request, schema, self.settings.max_reasks)
        return single(request)

    def _fits(self, request: ChatRequest) -> bool:
        reply = request.max_tokens or min(1024, self.backend.max_output_tokens(request.model))
        if self.engine.surely_fits(request, reply):
            return True
        prompt = self.backend.count_tokens(request.messages, request.model)
        return prompt + reply <= self.backend.context_window(request.model)

    def _engine(self, opts: dict[str, Any]) -> Engine:
        extra = opts.get("budget")
        return self.engine.with_budget(extra) if extra is not None else self.engine

    # -- public helpers -----------------------------------------------------------------------------
    def count_tokens(self, text: str, model: str | None = None) -> int:
        return self.backend.count_text(text, model or self.model)

    def context_window(self, model: str | None = None) -> int:
        return self.backend.context_window(model or self.model)

    def plan(self, task: str, *args: Any, **kwargs: Any) -> longdoc.Estimate:
        """What a task call would send, without sending anything (for --dry-run)."""
        template_name, variables, long_input, opts = TASK_SPECS[task](*args, **kwargs)
        request = self.build_request(template_name, variables, opts)
        return longdoc.Planner(self, template_name, variables, opts).estimate(task, request, long_input)


def _summarize(text: str, *, length: str | None = None, language: str | None = None,
               focus: str | None = None, **opts: Any):
    return "summarize", dict(text=text, length=length, language=language, focus=focus), "text", opts


def _translate(text: str, *, to: str, source: str | None = None, tone: str | None = None, **opts: Any):
    return "translate", dict(text=text, to=to, source=source, tone=tone), "text", opts


def _answer(question: str, *, context: str | None = None, **opts: Any):
    if not question.strip():
        raise InputError("the question is empty")
    return "qa", dict(question=question, context=context), "context" if context else None, opts


def _write_news(facts: str, *, style: str | None = None, length: str | None = None,
                headline: bool | None = None, audience: str | None = None, **opts: Any):
    return "news", dict(facts=facts, style=style, length=length, headline=headline, audience=audience), \
        "facts", opts


def _generate(template: str, variables: dict[str, Any] | None = None, **kwargs: Any):
    opts = {k: kwargs.pop(k) for k in list(kwargs) if k in _OPTIONS}
    return template, {**(variables or {}), **kwargs}, None, opts


# How each task call maps to (template, variables, the variable that may be long, options).
TASK_SPECS = {"summarize": _summarize, "translate": _translate, "answer": _answer,
          "news": _write_news, "generate": _generate}


class Client(_ClientBase):
    """Synchronous client. ``Client(backend="local")``, ``Client(base_url=..., model=...)``, or
    ``Client(backend=FakeBackend())``; every task accepts ``model``, ``temperature``, ``max_tokens``,
    ``schema`` (a pydantic model for structured output), ``stream``, ``budget``, ``timeout`` and ``seed``."""

    def _run(self, task: str, spec: tuple) -> Result | TextStream:
        template_name, variables, long_input, opts = spec
        flow = self.flow(task, template_name, variables, opts, long_input)
        engine = self._engine(opts)
        if opts.get("stream"):
            return TextStream(engine.run_stream(flow, task))
        return engine.run(flow, task)

    def summarize(self, text: str, **kw: Any) -> Result | TextStream:
        """Summarize ``text`` (``length="3 sentences"``, ``language``, ``focus``); long texts map-reduce."""
        return self._run("summarize", _summarize(text, **kw))

    def translate(self, text: str, *, to: str, **kw: Any) -> Result | TextStream:
        """Translate ``text`` into ``to`` (``source`` optional, else detected); formatting is kept."""
        return self._run("translate", _translate(text, to=to, **kw))

    def answer(self, question: str, **kw: Any) -> Result | TextStream:
        """Answer ``question``, from ``context`` when given (long contexts: the most relevant parts)."""
        return self._run("answer", _answer(question, **kw))

    def write_news(self, facts: str, **kw: Any) -> Result | TextStream:
        """A news article from ``facts`` (``style``, ``length``, ``headline``, ``audience``)."""
        return self._run("news", _write_news(facts, **kw))

    def generate(self, template: str, variables: dict[str, Any] | None = None, **kw: Any) -> Result | TextStream:
        """Render ``template`` with ``variables``/keyword variables and send it."""
        return self._run("generate", _generate(template, variables, **kw))

    def map(self, task: str, items: list[Any], *, return_exceptions: bool = False, **kw: Any) -> list:
        """Run one task over many inputs; concurrent on hosted backends, batched on local ones."""
        flows = []
        for item in items:
            args, extra = ((item,), {}) if not isinstance(item, dict) else ((), item)
            template_name, variables, long_input, opts = TASK_SPECS[task](*args, **{**kw, **extra})
            flows.append(self.flow(task, template_name, variables, opts, long_input))
        return self.engine.run_many(flows, task, return_exceptions=return_exceptions)

    def close(self) -> None:
        self.backend.close()
        if self.engine.ledger is not None:
            self.engine.ledger.close()

    def __enter__(self) -> Client:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()


class AsyncClient(_ClientBase):
    """Asynchronous client with the same tasks as :class:`Client` (``await client.summarize(...)``)."""

    async def _run(self, task: str, spec: tuple) -> Result | AsyncTextStream:
        template_name, variables, long_input, opts = spec
        flow = self.flow(task, template_name, variables, opts, long_input)
        engine = self._engine(opts)
        if opts.get("stream"):
            return AsyncTextStream(engine.arun_stream(flow, task))
        return await engine.arun(flow, task)

    async def summarize(self, text: str, **kw: Any) -> Result | AsyncTextStream:
        return await self._run("summarize", _summarize(text, **kw))

    async def translate(self, text: str, *, to: str, **kw: Any) -> Result | AsyncTextStream:
        return await self._run("translate", _translate(text, to=to, **kw))

    async def answer(self, question: str, **kw: Any) -> Result | AsyncTextStream:
        return await self._run("answer", _answer(question, **kw))

    async def write_news(self, facts: str, **kw: Any) -> Result | AsyncTextStream:
        return await self._run("news", _write_news(facts, **kw))

    async def generate(self, template: str, variables: dict[str, Any] | None = None,
                       **kw: Any) -> Result | AsyncTextStream:
        return await self._run("generate", _generate(template, variables, **kw))

    async def aclose(self) -> None:
        closer = getattr(self.backend, "aclose", None)
        if closer is not None:
            await closer()
        self.backend.close()
        if self.engine.ledger is not None:
            self.engine.ledger.close()

    async def __aenter__(self) -> AsyncClient:
        return self

    async def __aexit__(self, *exc: Any) -> None:
        await self.aclose()
