"""``aigc tune validate`` and ``aigc tune data-from``: the training file."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Annotated

import typer

from ..app import JsonOpt
from .common import EXIT_USAGE, DataArg, TemplateOpt, settings_now, show_problems, tune_app


@tune_app.command("validate")
def validate_cmd(
    data: DataArg,
    model: Annotated[str | None, typer.Option("--model", "-m", help="The model to train: local (default: the "
                                              "local backend's) or hosted, e.g. gpt-4o-mini-2024-07-18.")] = None,
    epochs: Annotated[int | None, typer.Option(min=1, max=50, help="Epochs (default: 3, adjusted to the "
                                               "data's size as the hosted service does).")] = None,
    max_length: Annotated[int | None, typer.Option(min=8, help="Local: tokens per example.")] = None,
    moderate: Annotated[bool, typer.Option("--moderate", help="Also run every example through OpenAI's "
                                           "moderation endpoint (needs an API key).")] = False,
    show_labels: Annotated[int, typer.Option("--show-labels", min=0, help="Show N examples token by token: "
                                             "which tokens are trained and which masked (local models).")] = 0,
    chat_template: TemplateOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Check a training file as the hosted service would, and more; estimate tokens, epochs and cost.

    Every problem names its line. Exit code 0: trainable (warnings may remain); 2: problems stop training.

    Example: aigc tune validate data.jsonl --model gpt-4o-mini-2024-07-18
    """
    from ...tune import validate

    settings = settings_now()
    tokenizer = None
    if show_labels:
        from ...models import ModelTable
        from ...tune.validation import resolve_target

        if resolve_target(model, ModelTable.cached(settings.models_file))[0] == "local":
            from ...tune.base import check_installed, load_tokenizer, resolve_base

            check_installed()
            tokenizer = load_tokenizer(resolve_base(model, settings.cache_dir))
    examples: list = []
    encoded: list = []
    report = validate(data, model=model, epochs=epochs, max_length=max_length, moderate=moderate,
                      settings=settings, tokenizer=tokenizer, chat_template=chat_template, encoded=encoded,
                      examples=examples)
    if as_json:
        typer.echo(report.model_dump_json(indent=2))
    else:
        _show_report(report)
        if show_labels:
            _show_labels(examples[:show_labels], encoded[:show_labels], tokenizer)
    raise typer.Exit(0 if report.ok else EXIT_USAGE)


def _show_report(r) -> None:
    typer.echo(f"{r.path}: {r.examples} examples, {r.usable_examples} usable, for {r.model} ({r.target})")
    if r.usable_examples:
        typer.echo(f"  tokens per example: {r.min_example_tokens:,} min, {r.mean_example_tokens:,.0f} mean, "
                   f"{r.max_example_tokens:,} max (limit {r.example_limit:,})")
        typer.echo(f"  tokens per epoch:   {r.tokens:,} ({r.trained_tokens:,} of them trained: the assistant's)")
        how = "default for this many examples" if r.epochs_default else "as given"
        typer.echo(f"  epochs:             {r.epochs} ({how})")
        typer.echo(f"  training tokens:    {r.training_tokens:,}")
    if r.target == "openai":
        cost = "unknown (no training price)" if r.estimated_cost_usd is None else f"${r.estimated_cost_usd:,.4f}"
        dated = f" at ${r.training_price:g}/1M tokens (prices of {r.prices_as_of})" if r.training_price else ""
        typer.echo(f"  estimated cost:     {cost}{dated}")
    if r.moderated:
        typer.echo(f"  moderation:         {r.moderated} examples checked")
    errors, warnings = len(r.errors), len(r.warnings)
    typer.echo(f"{errors} error(s), {warnings} warning(s)" + (":" if r.problems else ""))
    show_problems(r)
    for note in r.notes:
        typer.echo(f"note: {note}")


def _show_labels(examples: list, encoded: list, tokenizer) -> None:
    """The first examples as validation read them: message by message for a hosted model (its chat format is
    not public), token by token, trained or masked, for a local one (as encoded for training)."""
    if tokenizer is None:
        for example in examples:
            typer.echo(f"--- line {example.line}")
            for m in example.messages:
                trained = m["role"] == "assistant" and m.get("weight", 1) == 1
                typer.echo(f"[{'TRAINED' if trained else 'masked '}] {m['role']}: {m.get('content')}")
        return
    from ...tune.encode import label_segments

    color = sys.stdout.isatty()
    typer.echo("trained tokens are " + ("green" if color else "between [[ and ]]") + "; the rest is masked")
    for example in encoded:
        typer.echo(f"--- line {example.line}: {len(example.input_ids)} tokens, {example.trained} trained")
        parts = []
        for text, trained in label_segments(tokenizer, example):
            if color:
                parts.append(f"\x1b[32m{text}\x1b[0m" if trained else f"\x1b[2m{text}\x1b[0m")
            else:
                parts.append(f"[[{text}]]" if trained else text)
        typer.echo("".join(parts))


@tune_app.command("data-from")
def data_from(
    source: Annotated[Path, typer.Argument(help="A batch job file (JOB.toml) that has run, or a JSONL file "
                                           "of input/output records.", show_default=False)],
    output: Annotated[Path, typer.Option("--output", "-o", help="The training file to write (atomically).")],
    task: Annotated[str | None, typer.Option(help="Records: the task their fields fill (summarize, translate, "
                                             "answer, news).")] = None,
    template: Annotated[str | None, typer.Option(help="Records: the template their fields fill.")] = None,
    output_field: Annotated[str, typer.Option(help="Records: the field holding the reply.")] = "output",
    input_field: Annotated[str | None, typer.Option(help="Records: the field holding the task's input, when "
                                                    "it is not called text (or facts, context).")] = None,
    as_json: JsonOpt = False,
) -> None:
    """Build a training file from a finished batch job, or from input/output pairs.

    A job's done items become examples (distil a hosted model into the local one); JSONL records fill a
    task or template, and their output field becomes the reply.

    Example: aigc tune data-from nightly.toml -o distil.jsonl
    """
    from ...tune import from_job, from_pairs, write_examples

    if source.suffix.lower() == ".toml":
        if task or template:
            raise typer.BadParameter("--task/--template are for JSONL records; a job file has its own")
        built = from_job(source)
    else:
        built = from_pairs(source, task=task, template=template, output_field=output_field, input_field=input_field)
    if built.examples:
        write_examples(built.examples, output)
    if as_json:
        typer.echo(json.dumps({"output": str(output) if built.examples else None, "examples": len(built.examples),
                               "skipped": built.skipped}, indent=2))
    else:
        typer.echo(f"{len(built.examples)} examples written to {output}" if built.examples
                   else "no examples: nothing was written")
        for reason in built.skipped[:20]:
            typer.echo(f"  skipped {reason}", err=True)
        if len(built.skipped) > 20:
            typer.echo(f"  ... and {len(built.skipped) - 20} more skipped", err=True)
    if not built.examples:
        raise typer.Exit(EXIT_USAGE)

