"""The content commands: summarize, translate, ask, news, generate."""

from __future__ import annotations

import functools
import inspect
import json
import sys
from pathlib import Path
from typing import Annotated, Any

import typer

from ..errors import InputError
from .io import read_input, write_atomic

app = typer.Typer(
    name="aigc",
    help="Summaries, translations, news drafts and answers from language models — hosted or local.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
    context_settings={"help_option_names": ["-h", "--help"]},
)

BackendOpt = Annotated[str | None, typer.Option("--backend", "-b", help="openai, local, fake, ...")]
ModelOpt = Annotated[str | None, typer.Option("--model", "-m", help="Model name or local path.")]
TempOpt = Annotated[float | None, typer.Option("--temperature", "-t", min=0, max=2, help="Sampling temperature.")]
MaxTokOpt = Annotated[int | None, typer.Option("--max-tokens", min=1, help="Cap on output tokens per request.")]
BaseUrlOpt = Annotated[str | None, typer.Option("--base-url", help="OpenAI-compatible server URL.")]
OutOpt = Annotated[Path | None, typer.Option("--output", "-o", help="Write the text to this file (atomically).")]
JsonOpt = Annotated[bool, typer.Option("--json", help="Print the whole result as JSON.")]
StreamOpt = Annotated[bool, typer.Option("--stream", help="Print text as it arrives.")]
DryOpt = Annotated[bool, typer.Option("--dry-run", help="Show requests, tokens and cost; send nothing.")]
CostOpt = Annotated[float | None, typer.Option("--max-cost", min=0, help="Refuse to spend more than this (USD).")]
BudgetTokOpt = Annotated[int | None, typer.Option("--max-total-tokens", min=1,
                                                  help="Refuse to use more tokens than this in total.")]
TimeoutOpt = Annotated[float | None, typer.Option("--timeout", min=0.1, help="Seconds per attempt.")]


class Common:
    """The options every content command shares, turned into a client and an output."""

    def __init__(self, backend, model, temperature, max_tokens, base_url, output, as_json, stream, dry_run,
                 max_cost, max_total_tokens, timeout) -> None:
        self.client_args = dict(backend=backend, model=model, temperature=temperature, max_tokens=max_tokens,
                                base_url=base_url, timeout=timeout)
        self.output, self.as_json, self.stream, self.dry_run = output, as_json, stream, dry_run
        self.max_cost, self.max_total_tokens = max_cost, max_total_tokens

    def client(self):
        from ..client import Client

        budget = None
        if self.max_cost is not None or self.max_total_tokens is not None:
            from ..budget import Budget

            budget = Budget(max_tokens=self.max_total_tokens, max_cost_usd=self.max_cost)
        return Client(**self.client_args, budget=budget)

    def run(self, task: str, *args: Any, **kwargs: Any) -> None:
        if self.stream and self.as_json:
            raise InputError("--stream and --json cannot be combined")
        with self.client() as client:
            if self.dry_run:
                show_plan(client.plan(task, *args, **kwargs), self.as_json)
                return
            method = {"news": client.write_news}.get(task) or getattr(client, task)
            if self.stream:
                stream = method(*args, stream=True, **kwargs)
                for piece in stream:
                    sys.stdout.write(piece)
                    sys.stdout.flush()
                sys.stdout.write("\n")
                result = stream.result
            else:
                result = method(*args, **kwargs)
            self.finish(result)

    def finish(self, result) -> None:
        if self.output is not None:
            write_atomic(self.output, result.text if not self.as_json else result.model_dump_json(indent=2))
        if self.as_json:
            if self.output is None:
                typer.echo(result.model_dump_json(indent=2))
        elif not self.stream and self.output is None:
            typer.echo(result.text)
        for warning in result.warnings:
            typer.echo(f"aigc: note: {warning}", err=True)
        if result.truncated:
            typer.echo("aigc: warning: the output was cut at the token limit; raise --max-tokens", err=True)


def show_plan(estimate, as_json: bool) -> None:
    if as_json:
        typer.echo(estimate.model_dump_json(indent=2))
        return
    cost = "unknown (no price for this model)" if estimate.max_cost_usd is None else f"${estimate.max_cost_usd:.4f}"
    split = " (input split to fit the context window)" if estimate.split else ""
    typer.echo(
        f"dry run: {estimate.requests} request(s) to {estimate.backend}/{estimate.model}{split}\n"
        f"  input tokens:       {estimate.input_tokens}\n"
        f"  prompt tokens:      {estimate.prompt_tokens}\n"
        f"  max output tokens:  {estimate.max_output_tokens}\n"
        f"  context window:     {estimate.context_window}\n"
        f"  max cost:           {cost}\n"
        "nothing was sent")


_COMMON = {  # option name -> (annotation, default): shared by every content command
    "backend": (BackendOpt, None), "model": (ModelOpt, None), "temperature": (TempOpt, None),
    "max_tokens": (MaxTokOpt, None), "base_url": (BaseUrlOpt, None), "output": (OutOpt, None),
    "as_json": (JsonOpt, False), "stream": (StreamOpt, False), "dry_run": (DryOpt, False),
    "max_cost": (CostOpt, None), "max_total_tokens": (BudgetTokOpt, None), "timeout": (TimeoutOpt, None),
}


def content_command(fn):
    """Register ``fn(c: Common, ...)`` as a command that also takes the shared options, gathered into a Common."""
    own = list(inspect.signature(fn, eval_str=True).parameters.values())[1:]  # the first one is the Common
    shared = [inspect.Parameter(name, inspect.Parameter.KEYWORD_ONLY, default=default, annotation=annotation)
              for name, (annotation, default) in _COMMON.items()]

    @functools.wraps(fn)
    def command(**kw: Any) -> None:
        fn(Common(*(kw.pop(name) for name in _COMMON)), **kw)

    command.__signature__ = inspect.Signature(own + shared)  # type: ignore[attr-defined]
    command.__annotations__ = {p.name: p.annotation for p in own + shared}
    del command.__wrapped__  # typer must see the combined signature, not fn's
    return app.command(name=fn.__name__)(command)


@content_command
def summarize(
    c: Common,
    file: Annotated[str | None, typer.Argument(help="Text file, or - for standard input.")] = None,
    length: Annotated[str | None, typer.Option(help='How long, e.g. "3 sentences", "100 words".')] = None,
    language: Annotated[str | None, typer.Option(help="Write the summary in this language.")] = None,
    focus: Annotated[str | None, typer.Option(help="What the summary should focus on.")] = None,
) -> None:
    """Summarize a text (long texts are split and summarized in rounds)."""
    c.run("summarize", read_input(file), length=length, language=language, focus=focus)


@content_command
def translate(
    c: Common,
    file: Annotated[str | None, typer.Argument(help="Text file, or - for standard input.")] = None,
    to: Annotated[str, typer.Option("--to", help="Target language, e.g. en, German.")] = ...,
    source: Annotated[str | None, typer.Option("--from", help="Source language (detected if omitted).")] = None,
    tone: Annotated[str | None, typer.Option(help="Tone, e.g. formal.")] = None,
) -> None:
    """Translate a text, keeping its formatting (code blocks are left alone)."""
    c.run("translate", read_input(file), to=to, source=source, tone=tone)


@content_command
def ask(
    c: Common,
    question: Annotated[str, typer.Argument(help="The question.")],
    context: Annotated[str | None, typer.Option("--context", "-c",
                                                help="Answer from this file (- for standard input).")] = None,
) -> None:
    """Answer a question, from a context document when given."""
    c.run("answer", question, context=read_input(context) if context else None)


@content_command
def news(
    c: Common,
    file: Annotated[str | None, typer.Argument(help="Facts or notes, or - for standard input.")] = None,
    style: Annotated[str | None, typer.Option(help='e.g. "neutral wire-service", "feature".')] = None,
    length: Annotated[str | None, typer.Option(help='e.g. "about 300 words".')] = None,
    headline: Annotated[bool, typer.Option("--headline/--no-headline", help="Start with a headline.")] = True,
) -> None:
    """Write a news article from facts or notes."""
    c.run("news", read_input(file), style=style, length=length, headline=headline)


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


@content_command
def generate(
    c: Common,
    template: Annotated[str, typer.Argument(help="Template name (see `aigc templates list`).")],
    var: Annotated[list[str] | None, typer.Option("--var", help="Template variable KEY=VALUE (repeatable).")] = None,
    var_file: Annotated[list[str] | None, typer.Option("--var-file", help="Variable from a file: KEY=FILE.")] = None,
) -> None:
    """Render a template with variables and send it."""
    c.run("generate", template, parse_vars(var or [], var_file or []))


templates_app = typer.Typer(help="List and show prompt templates.", no_args_is_help=True)
app.add_typer(templates_app, name="templates")


@templates_app.command("list")
def templates_list(as_json: JsonOpt = False) -> None:
    """List templates (yours shadow built-ins of the same name)."""
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
def templates_show(name: Annotated[str, typer.Argument(help="Template name.")]) -> None:
    """Print a template's source."""
    from ..config import load_settings
    from ..templates import TemplateLibrary

    typer.echo(TemplateLibrary(load_settings().templates_dir).source(name), nl=False)
