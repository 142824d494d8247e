"""What a task is: a name, a template, the variable its document fills, typed parameters, and how it
handles a document longer than the context window. Plain data, cheap to import (the CLI reads it to build
its commands before anything heavy is loaded).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from ..errors import InputError
from ..targets import load_target

__all__ = ["Param", "Task", "OPTIONS", "LONG_INPUT"]

# Options every task call accepts besides its parameters (they shape the request, not the prompt).
OPTIONS = ("model", "temperature", "max_output_tokens", "top_p", "stop", "seed", "stream", "schema", "budget",
           "timeout", "redact", "moderate")
_OPTION_ALIASES = {"max_tokens": "max_output_tokens"}
# How a task may handle an input longer than the context window (implemented in aigc.longdoc).
LONG_INPUT = ("condense", "translate", "select")
_TYPES = {"str": str, "int": int, "float": float, "bool": bool, "list": list}


@dataclass(frozen=True)
class Param:
    """One variable a task takes."""

    name: str
    type: type = str
    default: Any = None
    required: bool = False
    positional: bool = False  # may be passed positionally to the method (in declaration order)
    nonblank: bool = False  # given, it must hold more than whitespace
    help: str = ""
    flag: str | None = None  # the CLI flag when it is not --name (e.g. --from for source)

    def coerce(self, value: Any, task: str) -> Any:
        """``value`` as this parameter's type (text from the command line or a job file is converted)."""
        if value is None or isinstance(value, self.type) and not (self.type is int and isinstance(value, bool)):
            return value
        if self.type is bool and isinstance(value, str) and value.strip().lower() in _BOOLS:
            return _BOOLS[value.strip().lower()]
        if self.type in (int, float) and isinstance(value, str | int | float) and not isinstance(value, bool):
            try:
                return self.type(value)
            except ValueError:
                pass
        if self.type is str and isinstance(value, int | float) and not isinstance(value, bool):
            return str(value)
        if self.type is list and isinstance(value, tuple):
            return list(value)
        if self.type is list and isinstance(value, str):  # "a,b,c" from a command line or a job file
            return [part.strip() for part in value.split(",") if part.strip()]
        raise InputError(f"{task}: {self.name} must be {_NAMES[self.type]}, not {value!r}")


_BOOLS = {"true": True, "yes": True, "1": True, "on": True, "false": False, "no": False, "0": False, "off": False}
_NAMES = {str: "text", int: "a whole number", float: "a number", bool: "true or false", list: "a list"}


@dataclass(frozen=True)
class Task:
    """A declared task. Adding a built-in task is one of these (see :mod:`.builtin`) plus its template."""

    name: str
    params: tuple[Param, ...]
    template: str | None = None  # None: the input holds the chat messages themselves
    input: str | None = None  # the variable a document fills (a file on the command line, a job's input)
    long_input: str | None = None  # one of LONG_INPUT; None: an input that does not fit is an error
    aliases: tuple[str, ...] = ()
    summary: str = ""
    example: str = ""
    reply_scale: float | None = None  # the reply runs about this many times the input's length (translate)
    cli_argument: str | None = None  # the command line's argument when it is not the input (answer: question)
    defaults: dict[str, Any] = field(default_factory=dict)  # generation defaults (a user template's front matter)
    # "module:function" building this task's flow from (client, task, variables, options, request), when one
    # request (or structured output) is not how it works, e.g. classification's label scoring.
    flow: str | None = None
    # "module:function" reviewing the finished output, (variables, outcome) -> outcome: it may add warnings or
    # raise (the news task's fact check).
    review: str | None = None
    # What the command line prints: "text" (the result's text) or "parsed" (str() of its parsed output).
    cli_output: str = "text"

    def __post_init__(self) -> None:
        if self.long_input is not None and self.long_input not in LONG_INPUT:
            raise ValueError(f"task {self.name}: long_input must be one of {', '.join(LONG_INPUT)}")
        if self.input is not None and self.input not in self.names:
            raise ValueError(f"task {self.name}: its input {self.input!r} is not one of its params")

    @property
    def names(self) -> tuple[str, ...]:
        return tuple(p.name for p in self.params)

    def hook(self, kind: str) -> Callable[..., Any] | None:
        """The function a ``flow`` or ``review`` declaration names, imported now (None when not declared)."""
        path = getattr(self, kind)
        if path is None:
            return None
        return load_target(path)

    def param(self, name: str) -> Param:
        return next(p for p in self.params if p.name == name)

    @property
    def required(self) -> frozenset[str]:
        return frozenset(p.name for p in self.params if p.required)

    def bind(self, args: tuple[Any, ...], kwargs: dict[str, Any]) -> tuple[dict[str, Any], dict[str, Any]]:
        """A call's arguments as (variables, options), checked: a misuse is a TypeError, as for any Python
        call; a value the task cannot use (wrong type, blank where text is needed) an InputError."""
        positional = [p for p in self.params if p.positional]
        if len(args) > len(positional):
            raise TypeError(f"{self.name}() takes {len(positional)} positional argument(s) but {len(args)} were given")
        variables: dict[str, Any] = {p.name: a for p, a in zip(positional, args, strict=False)}
        options: dict[str, Any] = {}
        for key, value in kwargs.items():
            if key in self.names:
                if key in variables:
                    raise TypeError(f"{self.name}() got multiple values for argument {key!r}")
                variables[key] = value
            elif key in OPTIONS or key in _OPTION_ALIASES:
                name = _OPTION_ALIASES.get(key, key)
                if value is not None or name not in options:
                    options[name] = value
            else:
                raise TypeError(f"{self.name}() got an unexpected keyword argument {key!r}")
        return self.check(variables), {k: v for k, v in options.items() if v is not None}

    def check(self, variables: dict[str, Any]) -> dict[str, Any]:
        """Variables typed and complete, or a clear error (a job file or a form goes through here too)."""
        missing = sorted(self.required - {k for k, v in variables.items() if v is not None})
        if missing:
            raise TypeError(f"{self.name}() missing required argument {missing[0]!r}")
        out = {}
        for p in self.params:
            value = p.coerce(variables.get(p.name, p.default), self.name)
            if p.nonblank and value is not None and isinstance(value, str) and not value.strip():
                raise InputError(f"the {p.name} to {self.name} is empty" if p.name == self.input
                                 else f"{self.name}: {p.name} is empty; give a value or leave it out")
            out[p.name] = value
        extra = {k: v for k, v in variables.items() if k not in out}
        return {**out, **extra}


def param_from_spec(name: str, spec: Any, default: Any = None) -> Param:
    """A parameter from a template's front matter: ``words = {type = "int", default = 8, help = "..."}``,
    or just a default value whose type is the parameter's."""
    if not isinstance(spec, dict):
        kind = type(spec) if spec is not None else str
        return Param(name, kind if kind in _NAMES else str, default=spec)
    kind = spec.get("type", type(spec.get("default", default)).__name__ if spec.get("default", default) is not None
                    else "str")
    if kind not in _TYPES:
        raise ValueError(f"param {name}: type must be one of {', '.join(_TYPES)}")
    return Param(name, _TYPES[kind], default=spec.get("default", default), required=bool(spec.get("required")),
                 nonblank=bool(spec.get("required")), help=str(spec.get("help", "")))
