"""Building only what a command line needs: typer reads every command's signature to build the whole app,
which is most of ``aigc --help``'s time. The listing needs only names and first lines, and a command needs only
itself, so ``main`` runs one of these instead of the whole app. What is printed and done is the same."""

from __future__ import annotations

import inspect

import typer

__all__ = ["for_argv"]


def _name(info) -> str:
    return info.name or info.callback.__name__.replace("_", "-")


def _like(app: typer.Typer) -> typer.Typer:
    """An empty app with the same settings and help as ``app``."""
    info = app.info
    return typer.Typer(name=info.name, help=info.help, no_args_is_help=True, add_completion=False,
                       pretty_exceptions_enable=False, rich_markup_mode=None, context_settings=info.context_settings)


def _listing(app: typer.Typer) -> typer.Typer:
    """The root app with every command and group as a stub: the same names, first lines and order."""
    stub = _like(app)

    def nothing() -> None:  # pragma: no cover - the listing never runs a command
        pass

    for info in app.registered_commands:
        doc = info.help or inspect.getdoc(info.callback) or ""
        stub.command(name=_name(info), help=doc, hidden=info.hidden)(nothing)
    for group in app.registered_groups:
        sub = group.typer_instance
        text = group.help or sub.info.help or ""
        inner = typer.Typer(help=text, add_completion=False)
        inner.command(hidden=True)(nothing)
        inner.command(name="-", hidden=True)(nothing)
        stub.add_typer(inner, name=group.name or sub.info.name, help=text, hidden=group.hidden)
    return stub


def for_argv(app: typer.Typer, argv: list[str]) -> typer.Typer:
    """The app to run for ``argv``: just the command it names, or the listing."""
    first = next((a for a in argv if not a.startswith("-")), None)
    for info in app.registered_commands:
        if first is not None and _name(info) == first:
            only = _like(app)
            only.registered_commands = [info]
            only.callback()(lambda: None)  # keeps `aigc NAME ...` a group, as in the whole app
            return only
    for group in app.registered_groups:
        if first is not None and (group.name or group.typer_instance.info.name) == first:
            only = _like(app)
            only.registered_groups = [group]
            only.callback()(lambda: None)
            return only
    return _listing(app)
