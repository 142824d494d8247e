"""From a call to a flow: which task, which request, which flow — the planning every client shares.

:class:`CallPlanner` is mixed into :class:`~aigc.client.ClientBase`; it relies on the client's ``settings``,
``templates``, ``backend``, ``engine`` and ``model``. Nothing here sends anything.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from .engine import Engine
from .errors import AigcError, ConfigError
from .flows import Flow, single, structured
from .guard import around
from .longdoc import Estimate, Planner, replanning
from .tasks import Task, find_task, get_task, task_for_template
from .types import ChatRequest, as_messages

__all__ = ["Call", "CallPlanner"]


@dataclass
class Call:
    """One task call, planned: its flow and the engine (with any per-call budget) that runs it."""

    task: str
    flow: Flow
    engine: Engine
    stream: bool = False


class CallPlanner:
    """Binding a call's arguments to its task, rendering its request and choosing its flow."""

    settings: Any
    templates: Any
    backend: Any
    engine: Engine
    model: str

    # -- from a call to a flow ------------------------------------------------------------------------
    def task(self, name: str) -> Task:
        """The declared task called ``name``, or the task a template of that name declares."""
        task = find_task(name)
        if task is not None:
            return task
        try:
            return self.template_task(name)
        except AigcError:
            return get_task(name)  # the "unknown task" error

    def template_task(self, name: str) -> Task:
        """The task a template declares in its front matter (any template is one, see aigc.tasks)."""
        loaded = self.templates.get(name)
        return task_for_template(loaded.name, loaded.meta)

    def build_request(self, task: Task | str, variables: dict[str, Any], opts: dict[str, Any],
                      template: str | None = None) -> ChatRequest:
        """The request a call renders to. Generation settings: the call's option > the client's settings >
        the template's (or task's) defaults."""
        task = self.task(task) if isinstance(task, str) else task
        name = template or task.template
        if name is None:
            messages, defaults = as_messages(variables[task.input or "messages"]), task.defaults
        else:
            loaded = self.templates.get(name)
            messages, defaults = loaded.render(**variables), loaded.defaults

        def pick(key: str) -> Any:
            for value in (opts.get(key), getattr(self.settings, key, None), defaults.get(key)):
                if value is not None:
                    return value
            return None

        return ChatRequest(messages=messages, model=self.model_for(opts.get("model")),
                           temperature=pick("temperature"), max_output_tokens=pick("max_output_tokens"),
                           top_p=pick("top_p"), stop=opts.get("stop"), seed=opts.get("seed"),
                           timeout=opts.get("timeout"))

    def _builder(self, task: Task, opts: dict[str, Any]):
        return lambda template, variables: self.build_request(task, variables, opts, template)

    def flow(self, task: Task, variables: dict[str, Any], opts: dict[str, Any]) -> Flow:
        """The flow for one call (see :mod:`aigc.flows`): one request, structured output, the task's own flow
        or its long-input strategy, wrapped in the checks the call asks for (see :mod:`aigc.guard`)."""
        flow = replanning(lambda: self.task_flow(task, variables, opts),  # planned again if the window shrinks
                          lambda: self.context_window(opts.get("model")), stream=bool(opts.get("stream")))
        return self.guarded(flow, task, variables, opts)

    def guarded(self, flow: Flow, task: Task, variables: dict[str, Any], opts: dict[str, Any]) -> Flow:
        """``flow`` with moderation, redaction and the task's review, as the call and the settings ask."""
        return around(flow, task, variables, opts, self.settings, self.engine.moderator, self.backend.name)

    def task_flow(self, task: Task, variables: dict[str, Any], opts: dict[str, Any]) -> Flow:
        """The task's own flow, without the checks :meth:`flow` wraps it in."""
        request = self.build_request(task, variables, opts)
        if task.input is not None and task.long_input is not None:
            if task.reply_scale and request.max_output_tokens is None:
                info = self.engine.model_info(request.model)
                reply = int(task.reply_scale * self.backend.count_text(str(variables[task.input]), request.model))
                request = request.model_copy(update={"max_output_tokens": min(info.max_output_tokens, reply + 64)})
            if not self._fits(request):
                return Planner(self.engine, self._builder(task, opts), task, variables,
                               bool(opts.get("stream"))).flow()
        builder = task.hook("flow")
        if builder is not None:
            return builder(self, task, variables, opts, request)
        schema = opts.get("schema")
        if schema is not None:
            return structured(request, schema, self.settings.max_reasks)
        return single(request)

    def _fits(self, request: ChatRequest) -> bool:
        info = self.engine.model_info(request.model)
        reply = request.max_output_tokens or self.engine.default_cap(info)
        if reply > info.max_output_tokens:
            return False
        if self.engine.surely_fits(request, reply):
            return True
        return self.backend.count_tokens(request.messages, request.model) + reply <= info.context_window

    def call(self, task: str | Task, args: tuple[Any, ...] = (), kwargs: dict[str, Any] | None = None) -> Call:
        """Plan a call of ``task`` with these arguments (checked against its declaration)."""
        task = task if isinstance(task, Task) else self.task(task)
        variables, opts = task.bind(args, kwargs or {})
        return self.prepare(task, variables, opts)

    def prepare(self, task: Task, variables: dict[str, Any], opts: dict[str, Any]) -> Call:
        """Plan a call from checked variables and options (as :meth:`call` does after binding arguments)."""
        budget = opts.get("budget")
        engine = self.engine.with_budget(budget) if budget is not None else self.engine
        return Call(task.name, self.flow(task, variables, opts), engine, bool(opts.get("stream")))

    def template_call(self, template: str, variables: dict[str, Any] | None, kw: dict[str, Any]) -> Call:
        """Plan a call of a template with any variables (keyword options such as ``model`` are taken out)."""
        from .tasks import OPTIONS

        task = self.template_task(template)
        opts = {("max_output_tokens" if k == "max_tokens" else k): kw.pop(k)
                for k in list(kw) if k in OPTIONS or k == "max_tokens"}
        given = {**(variables or {}), **kw}
        self.templates.get(template).refuse_blank(given)
        values = task.check(given)
        return self.prepare(task, values, {k: v for k, v in opts.items() if v is not None})

    # -- planning without sending -----------------------------------------------------------------------
    def plan(self, task: str, *args: Any, batch: bool = False, **kwargs: Any) -> Estimate:
        """What a task call would send, without sending anything (for --dry-run); ``batch``: Batch API prices."""
        if task == "generate":
            call_task = self.template_task(args[0])
            variables, opts = call_task.check({**(args[1] if len(args) > 1 and args[1] else {}), **kwargs}), {}
        else:
            call_task = self.task(task)
            variables, opts = call_task.bind(args, kwargs)
        request = self.build_request(call_task, variables, opts)
        return Planner(self.engine, self._builder(call_task, opts), call_task, variables).estimate(request,
                                                                                                   batch=batch)

    def count_tokens(self, text: str, model: str | None = None) -> int:
        return self.backend.count_text(text, model or self.model)

    def context_window(self, model: str | None = None) -> int:
        return self.engine.model_info(model or self.model).context_window


    def model_for(self, name: str | None) -> str:
        """The model a call names (an alias resolved), or the client's."""
        if not name:
            return self.model
        from .tune.aliases import resolve

        alias = resolve(name, self.settings.data_dir)
        if alias is None:
            return name
        if alias.backend != self.backend.name:
            raise ConfigError(f"model {name!r} is an alias of the {alias.backend} model {alias.model}; this client "
                              f"uses the {self.backend.name} backend")
        return alias.model
