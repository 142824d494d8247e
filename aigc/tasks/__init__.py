"""Tasks as declared objects: the client's methods, the CLI's commands, batch job files and the long-document
planner all read these declarations, so a task has one name everywhere (old spellings stay as aliases).

    from aigc.tasks import Task, Param, register_task
    register_task(Task(name="headline", template="headline", input="text", long_input="condense",
                       params=(Param("text", required=True, positional=True, nonblank=True),
                               Param("words", int, default=8))))

A user template whose front matter declares an ``input`` is a task too (see :func:`task_for_template`).
"""

from __future__ import annotations

from typing import Any

from ..errors import InputError
from .builtin import BUILTIN
from .task import LONG_INPUT, OPTIONS, Param, Task, param_from_spec

__all__ = ["Task", "Param", "OPTIONS", "LONG_INPUT", "register_task", "get_task", "find_task", "task_names",
           "task_for_template"]

_tasks: dict[str, Task] = {}
_aliases: dict[str, str] = {}


def register_task(task: Task) -> Task:
    """Add (or replace) a task; its name and aliases become usable everywhere."""
    _tasks[task.name] = task
    for alias in task.aliases:
        _aliases[alias] = task.name
    return task


for _task in BUILTIN:
    register_task(_task)


def find_task(name: str) -> Task | None:
    """The task called ``name`` (or one of its aliases), or None."""
    return _tasks.get(_aliases.get(name, name))


def get_task(name: str) -> Task:
    task = find_task(name)
    if task is None:
        raise InputError(f"unknown task {name!r}; choose one of {', '.join(task_names())}, "
                         "or run a template with `generate`")
    return task


def task_names() -> list[str]:
    return sorted(_tasks)


# Front-matter keys that declare a template's task rather than its generation defaults.
TASK_KEYS = ("input", "long_input", "params", "reply_scale")


def task_for_template(name: str, meta: dict[str, Any]) -> Task:
    """The task a template declares in its front matter: its ``input`` variable, ``long_input`` strategy and
    ``[params]`` (types, defaults, help); its ``[vars]`` defaults are parameters too. A template without
    them is a task with any variables and no long-input handling."""
    specs = dict(meta.get("params") or {})
    params = [param_from_spec(k, v, (meta.get("vars") or {}).get(k)) for k, v in specs.items()]
    params += [Param(k, type(v) if isinstance(v, str | int | float | bool) else str, default=v)
               for k, v in (meta.get("vars") or {}).items() if k not in specs]
    source = meta.get("input")
    if source is not None and source not in specs:
        params.insert(0, Param(source, required=True, positional=True, nonblank=True))
    else:
        params = [Param(p.name, p.type, p.default, p.required, True, p.nonblank, p.help) if p.name == source else p
                  for p in params]
    defaults = {k: v for k, v in meta.items() if k not in ("description", "vars", *TASK_KEYS)}
    try:
        return Task(name=name, template=name, params=tuple(params), input=source,
                    long_input=meta.get("long_input"), summary=str(meta.get("description", "")),
                    reply_scale=meta.get("reply_scale"), defaults=defaults)
    except ValueError as e:
        from ..errors import TemplateError

        raise TemplateError(f"template {name!r}: {e}", template=name) from None
