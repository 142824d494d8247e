"""The content commands: one per declared task (summarize, translate, answer, news, and any registered
since), built from the task's declaration; ``generate`` for templates; ``templates list|show``.

A task's command takes its input as a FILE argument (``-`` for standard input), or, when the task names
another argument (``answer``: the question), that argument plus ``--<input> FILE``; each other parameter
is an option. Its help is the task's summary and example.
"""

from __future__ import annotations

import inspect
import json
from typing import Annotated, Any

import typer

from ..errors import InputError
from ..tasks import Task, task_names
from ..tasks import find_task as _find
from .app import COMMON, Common, JsonOpt, app, shared_parameters, with_options
from .io import read_input

__all__ = ["register_task_commands"]


def _option(task: Task, name: str) -> inspect.Parameter:
    p = task.param(name)
    flag = p.flag or "--" + name.replace("_", "-")
    if p.type is bool:
        spec = typer.Option(f"{flag}/--no-{flag[2:]}", help=p.help)
        annotation: Any = Annotated[bool | None, spec]
    else:
        kind = p.type if p.type in (int, float) else str
        annotation = Annotated[kind if p.required and name != task.input else kind | None,
                               typer.Option(flag, help=p.help + (" (a file, - for standard input)"
                                                                 if name == task.input else ""))]
    default = ... if p.required and name != task.input and not p.positional else None
    return inspect.Parameter(name, inspect.Parameter.KEYWORD_ONLY, default=default, annotation=annotation)


def task_command(task: Task):
    """A typer command for ``task``: its argument, its parameters as options, and the shared options."""
    argument = task.cli_argument or task.input
    if argument == task.input:
        arg = inspect.Parameter(argument, inspect.Parameter.POSITIONAL_OR_KEYWORD, default=None,
                                annotation=Annotated[str | None, typer.Argument(
                                    help="Input file, or - for standard input.", show_default=False)])
    else:
        arg = inspect.Parameter(argument, inspect.Parameter.POSITIONAL_OR_KEYWORD,
                                annotation=Annotated[str, typer.Argument(help=task.param(argument).help)])
    own = [arg] + [_option(task, p.name) for p in task.params if p.name != argument]
    shared = shared_parameters()

    def command(**kw: Any) -> None:
        common = Common(**{name: kw.pop(name) for name in COMMON})
        if task.input is not None:
            source = kw.get(task.input)
            if task.input == argument or source is not None:
                kw[task.input] = read_input(source)
        first = kw.pop(task.params[0].name) if task.params[0].positional else None
        common.run(task.name, *([first] if first is not None else []),
                   **{k: v for k, v in kw.items() if v is not None})

    command.__signature__ = inspect.Signature(own + shared)  # type: ignore[attr-defined]
    command.__annotations__ = {p.name: p.annotation for p in own + shared}
    command.__doc__ = f"{task.summary}\n\nExample:\n\n  {task.example}" if task.example else task.summary
    return command


def register_task_commands() -> None:
    """A command for every declared task with a template that has none yet (tasks registered later, by a
    plugin or a test, get theirs the next time the CLI starts)."""
    existing = {c.name for c in app.registered_commands}
    for name in task_names():
        task = _find(name)
        if task is None or task.template is None or name in existing:
            continue
        app.command(name=name, help=task_command(task).__doc__)(task_command(task))
        for alias in task.aliases:
            if alias.isidentifier() and "_" not in alias and alias not in existing and len(alias) <= 8:
                app.command(name=alias, hidden=True)(task_command(task))


def _pairs(items: list[str], flag: str, shape: str) -> list[tuple[str, str]]:
    out = []
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not key.strip():
            raise InputError(f"{flag} expects {shape}, got {item!r}")
        out.append((key.strip(), value))
    return out


def parse_vars(pairs: list[str], files: list[str]) -> dict[str, Any]:
    """Template variables from --var KEY=VALUE and --var-file KEY=FILE."""
    values: dict[str, Any] = dict(_pairs(pairs, "--var", "KEY=VALUE"))
    values.update((key, read_input(path)) for key, path in _pairs(files, "--var-file", "KEY=FILE"))
    return values


def generate(
    template: Annotated[str, typer.Argument(help="Template name (see `aigc templates list`).")],
    file: Annotated[str | None, typer.Argument(help="Input file for the template's declared input "
                                               "variable, or - for standard input.", show_default=False)] = None,
    var: Annotated[list[str] | None, typer.Option("--var", help="Template variable KEY=VALUE (repeatable).")] = None,
    var_file: Annotated[list[str] | None, typer.Option("--var-file", help="Variable from a file: KEY=FILE.")] = None,
    **common: Any,
) -> None:
    """Render a template (built-in or yours) with variables and send it.

    Example:

      aigc generate headline article.txt --var words=8
    """
    c = Common(**common)
    values = parse_vars(var or [], var_file or [])
    if file is not None:
        from ..config import load_settings
        from ..tasks import task_for_template
        from ..templates import TemplateLibrary

        loaded = TemplateLibrary(load_settings().templates_dir).get(template)
        source = task_for_template(loaded.name, loaded.meta).input
        if source is None:
            raise InputError(f"template {template!r} declares no input variable; pass --var NAME=... "
                             "(or add `input = \"text\"` to its front matter)")
        values[source] = read_input(file)
    c.run("generate", template, values)


app.command(name="generate")(with_options(generate))

templates_app = typer.Typer(help="List and show prompt templates.", no_args_is_help=True)
app.add_typer(templates_app, name="templates")


@templates_app.command("list")
def templates_list(as_json: JsonOpt = False) -> None:
    """List templates (yours shadow built-ins of the same name).

    Example: aigc templates list --json
    """
    from ..config import load_settings
    from ..templates import TemplateLibrary

    library = TemplateLibrary(load_settings().templates_dir)
    items = library.names()
    if as_json:
        typer.echo(json.dumps([{"name": t.name, "origin": t.origin, "path": str(t.path),
                                "description": t.description} for t in items], indent=2))
        return
    width = max((len(t.name) for t in items), default=4)
    for t in items:
        typer.echo(f"{t.name:<{width}}  {t.origin:<7}  {t.description}")


@templates_app.command("show")
def templates_show(name: Annotated[str, typer.Argument(help="Template name.")], as_json: JsonOpt = False) -> None:
    """Print a template's source.

    Example: aigc templates show summarize
    """
    from ..config import load_settings
    from ..templates import TemplateLibrary

    template = TemplateLibrary(load_settings().templates_dir).get(name)
    source = template.path.read_text(encoding="utf-8")
    if as_json:
        typer.echo(json.dumps({"name": template.name, "origin": template.origin, "path": str(template.path),
                               "source": source}, indent=2))
        return
    typer.echo(source, nl=False)
