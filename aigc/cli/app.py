"""The ``aigc`` app, the options every content command shares, and running a content command.

Nothing heavy is imported here: a command imports the client when it runs, so ``aigc --help`` stays fast.
"""

from __future__ import annotations

import inspect
from pathlib import Path
from typing import Annotated, Any

import typer

from ..errors import InputError, OutputError
from .io import check_writable, print_stream, write_atomic

app = typer.Typer(
    name="aigc",
    help="Summaries, translations, news drafts, answers, conversations and labels from language models — hosted "
         "or local.\n\n"
         "Example: aigc summarize article.txt --length \"3 sentences\"",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
    rich_markup_mode=None,
    context_settings={"help_option_names": ["-h", "--help"]},
)

BackendOpt = Annotated[str | None, typer.Option("--backend", "-b", help="openai, local, fake, ...")]
ModelOpt = Annotated[str | None, typer.Option("--model", "-m", help="Model name or local path.")]
TempOpt = Annotated[float | None, typer.Option("--temperature", "-t", min=0, max=2, help="Sampling temperature.")]
MaxOutOpt = Annotated[int | None, typer.Option("--max-output-tokens", "--max-tokens", min=1,
                                               help="Cap on output tokens per request.")]
BaseUrlOpt = Annotated[str | None, typer.Option("--base-url", help="OpenAI-compatible server URL.")]
OutOpt = Annotated[Path | None, typer.Option("--output", "-o", help="Write the text to this file (atomically).")]
JsonOpt = Annotated[bool, typer.Option("--json", help="Print the whole result as JSON.")]
StreamOpt = Annotated[bool, typer.Option("--stream", help="Print text as it arrives.")]
DryOpt = Annotated[bool, typer.Option("--dry-run", help="Show requests, tokens and cost; send nothing.")]
CostOpt = Annotated[float | None, typer.Option("--max-cost", min=0, help="Refuse to spend more than this (USD).")]
BudgetTokOpt = Annotated[int | None, typer.Option("--max-total-tokens", min=1,
                                                  help="Refuse to use more tokens than this in total.")]
TimeoutOpt = Annotated[float | None, typer.Option("--timeout", min=0.1, help="Seconds per attempt.")]
DeadlineOpt = Annotated[float | None, typer.Option("--deadline", min=0.1,
                                                   help="Seconds for the whole call, retries included.")]
FallbackOpt = Annotated[list[str] | None, typer.Option(
    "--fallback", help="Backend, or backend/model, that answers when this one's retries run out or its quota is "
                       "exhausted (repeatable, tried in order), e.g. --fallback local.")]
RedactOpt = Annotated[bool | None, typer.Option(
    "--redact/--no-redact", help="Replace e-mail addresses, phone, card and IBAN numbers with placeholders before "
                                 "sending, and put them back in the output.")]
RegionOpt = Annotated[str | None, typer.Option(
    "--region", help="With --redact: the region of phone numbers written without a country code, e.g. DE.")]
ModerateOpt = Annotated[bool | None, typer.Option(
    "--moderate/--no-moderate", help="Check the input and the output with the moderation endpoint; a flagged "
                                     "item is stopped (exit 1).")]

# Option name -> (annotation, default): shared by every content command.
COMMON: dict[str, tuple[Any, Any]] = {
    "backend": (BackendOpt, None), "model": (ModelOpt, None), "temperature": (TempOpt, None),
    "max_output_tokens": (MaxOutOpt, None), "base_url": (BaseUrlOpt, None), "output": (OutOpt, None),
    "as_json": (JsonOpt, False), "stream": (StreamOpt, False), "dry_run": (DryOpt, False),
    "max_cost": (CostOpt, None), "max_total_tokens": (BudgetTokOpt, None), "timeout": (TimeoutOpt, None),
    "deadline": (DeadlineOpt, None), "fallback": (FallbackOpt, None), "redact": (RedactOpt, None),
    "region": (RegionOpt, None), "moderate": (ModerateOpt, None),
}



def shared_parameters(options: dict[str, tuple[Any, Any]] = COMMON) -> list[inspect.Parameter]:
    """``options`` (name -> (annotation, default)) as keyword-only parameters for a command's signature."""
    return [inspect.Parameter(name, inspect.Parameter.KEYWORD_ONLY, default=default, annotation=annotation)
            for name, (annotation, default) in options.items()]


def with_options(fn: Any, options: dict[str, tuple[Any, Any]] = COMMON) -> Any:
    """``fn`` (taking ``**kw``) with ``options`` in its signature, which typer reads."""
    params = [p for p in inspect.signature(fn, eval_str=True).parameters.values() if p.kind != p.VAR_KEYWORD]
    params += shared_parameters(options)
    fn.__signature__ = inspect.Signature(params)
    fn.__annotations__ = {p.name: p.annotation for p in params}
    return fn

class Common:
    """The options every content command shares, turned into a client and an output."""

    def __init__(self, backend=None, model=None, temperature=None, max_output_tokens=None, base_url=None,
                 output=None, as_json=False, stream=False, dry_run=False, max_cost=None, max_total_tokens=None,
                 timeout=None, deadline=None, fallback=None, redact=None, region=None, moderate=None) -> None:
        self.client_args = dict(backend=backend, model=model, temperature=temperature,
                                max_output_tokens=max_output_tokens, base_url=base_url, timeout=timeout,
                                deadline=deadline, fallback=fallback or None, redact=redact,
                                redact_region=region, moderate=moderate)
        self.output, self.as_json, self.stream, self.dry_run = output, as_json, stream, dry_run
        self.max_cost, self.max_total_tokens = max_cost, max_total_tokens

    def client(self):
        from ..client import Client

        budget = None
        if self.max_cost is not None or self.max_total_tokens is not None:
            from ..budget import Budget

            budget = Budget(max_total_tokens=self.max_total_tokens, max_cost_usd=self.max_cost)
        return Client(**self.client_args, budget=budget)

    def check(self) -> None:
        """Refuse combinations that mean nothing, and an output that could not be written, before sending."""
        if self.stream and self.as_json:
            raise InputError("--stream and --json cannot be combined")
        if self.dry_run and (self.stream or self.output is not None):
            raise InputError(f"--dry-run sends nothing, so {'--stream' if self.stream else '-o/--output'} has "
                             "nothing to do; drop one of them")
        if self.output is not None:
            check_writable(self.output)

    def run(self, task: str, *args: Any, **kwargs: Any) -> None:
        """Run a task (or ``generate`` a template) and show its result as the options ask."""
        self.check()
        with self.client() as client:
            if self.dry_run:
                show_plan(client.plan(task, *args, **kwargs), self.as_json)
                return
            call = client.template_call(args[0], args[1], {}) if task == "generate" else client.call(
                task, args, kwargs)
            if self.stream:
                call.stream = True
                result = print_stream(client.run_call(call))
            else:
                result = client.run_call(call)
            self.finish(result, shown(task, result))

    def finish(self, result, text: str | None = None) -> None:
        """Write or print the result (``text``: what a person is shown, when not the result's text)."""
        text = result.text if text is None else text
        if self.output is not None:
            written = text if not self.as_json else result.model_dump_json(indent=2)
            try:
                write_atomic(self.output, written)
            except (OSError, OutputError) as e:  # paid for: show it rather than lose it
                if not self.stream:
                    typer.echo(written)
                said = e.message if isinstance(e, OutputError) else f"cannot write {self.output} ({e.strerror or e})"
                raise OutputError(f"{said}; the text was printed instead", path=str(self.output)) from None
        if self.as_json:
            if self.output is None:
                typer.echo(result.model_dump_json(indent=2))
        elif not self.stream and self.output is None:
            typer.echo(text)
        for warning in result.warnings:
            typer.echo(f"aigc: note: {warning}", err=True)
        if result.truncated and result.cut_by == "context_window":
            typer.echo("aigc: warning: the output was cut because the prompt filled the model's context window; "
                       "shorten the input or use a model with a larger window", err=True)
        elif result.truncated:
            typer.echo("aigc: warning: the output was cut at the token limit; raise --max-output-tokens", err=True)


def shown(task: str, result) -> str:
    """What a person is shown of a result: its text, or its parsed output where the task declares so
    (classification: the label, confidence and reason)."""
    from ..tasks import find_task

    declared = find_task(task)
    if declared is not None and declared.cli_output == "parsed" and result.parsed is not None:
        return str(result.parsed)
    return result.text


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
