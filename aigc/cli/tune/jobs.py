"""``aigc tune openai|status|list|cancel|alias``: hosted jobs, the journal and model names."""

from __future__ import annotations

import sys
import time
from typing import Annotated

import typer

from ..app import JsonOpt
from .common import EXIT_FAILED, EXIT_USAGE, DataArg, refuse_data, settings_now, tune_app

RefArg = Annotated[str, typer.Argument(help="A run id, job id (ftjob-...), ft: model or output folder.",
                                       show_default=False)]


def _event_printer():
    last_state: dict[str, str] = {}

    def show(job, event) -> None:
        stream = sys.stderr
        stamp = time.strftime("%H:%M:%S")
        if event is not None:
            when = time.strftime("%H:%M:%S", time.localtime(event.created_at))
            stream.write(f"aigc tune: [{when}] {event.message}\n")
        elif last_state.get(job.run_id) != job.state:
            last_state[job.run_id] = job.state
            ident = job.job_id or job.file_id or job.run_id
            stream.write(f"aigc tune: [{stamp}] {ident}: {job.state}\n")
        stream.flush()

    return show


def _show_job(job) -> None:
    typer.echo(f"run {job.run_id} ({job.provider}): {job.state}")
    typer.echo(f"  model:        {job.model}" + (f", suffix {job.suffix}" if job.suffix else ""))
    typer.echo(f"  data:         {job.data_path} (sha256 {job.data_sha256[:12]}...)")
    if job.job_id:
        typer.echo(f"  job:          {job.job_id}")
    if job.estimated_cost_usd is not None and job.provider == "openai":
        typer.echo(f"  estimated:    ${job.estimated_cost_usd:,.4f} for {job.estimated_tokens or 0:,} tokens")
    if job.trained_tokens is not None and job.provider == "openai":
        cost = "unknown" if job.cost_usd is None else f"${job.cost_usd:,.4f}"
        typer.echo(f"  billed:       {cost} for {job.trained_tokens:,} trained tokens")
    if job.fine_tuned_model:
        typer.echo(f"  model out:    {job.fine_tuned_model}")
    for checkpoint in job.checkpoints:
        typer.echo(f"  checkpoint:   {checkpoint}")
    if job.error:
        typer.echo(f"  error:        {job.error}")


def _exit_for(job) -> None:
    if job.state in ("failed", "cancelled"):
        raise typer.Exit(EXIT_FAILED)


@tune_app.command("openai")
def openai_cmd(
    data: DataArg,
    model: Annotated[str, typer.Option("--model", "-m", help="A fine-tunable snapshot, e.g. "
                                       "gpt-4o-mini-2024-07-18.")],
    suffix: Annotated[str | None, typer.Option(help="Up to 64 characters added to the model's name.")] = None,
    epochs: Annotated[int | None, typer.Option(min=1, max=50, help="Epochs (default: the service's rule).")] = None,
    seed: Annotated[int | None, typer.Option(help="Seed of the job.")] = None,
    learning_rate_multiplier: Annotated[float | None, typer.Option(min=0)] = None,
    batch_size: Annotated[int | None, typer.Option(min=1)] = None,
    max_cost: Annotated[float | None, typer.Option("--max-cost", min=0, help="Refuse (before uploading) when "
                                                   "the estimated training cost is over this (USD).")] = None,
    moderate: Annotated[bool, typer.Option("--moderate", help="Run every example through the moderation "
                                           "endpoint first.")] = False,
    wait: Annotated[bool, typer.Option("--wait/--no-wait", help="Follow the job to its end.")] = True,
    again: Annotated[bool, typer.Option("--again", help="Start a new job even if this data and model were "
                                        "tuned before.")] = False,
    poll: Annotated[float, typer.Option(min=0.01, help="Seconds between status checks.")] = 10.0,
    alias: Annotated[str | None, typer.Option("--alias", help="Save the fine-tuned model under this name.")] = None,
    as_json: JsonOpt = False,
) -> None:
    """Fine-tune a hosted model with OpenAI's fine-tuning API.

    Validates, checks the budget, uploads, creates the job and follows it. Killed, the same command
    reattaches to the same job.

    OpenAI is winding self-serve fine-tuning down (no new jobs for anybody from 2027-01-06); `aigc tune local`
    is the default path.

    Example: aigc tune openai data.jsonl --model gpt-4o-mini-2024-07-18 --suffix news --max-cost 5
    """
    from ...tune import TrainingDataInvalid, hosted, set_alias

    settings = settings_now()
    try:
        job = hosted(data, model=model, suffix=suffix, epochs=epochs, seed=seed,
                     learning_rate_multiplier=learning_rate_multiplier, batch_size=batch_size,
                     max_cost_usd=max_cost, moderate=moderate, wait=wait, again=again, poll_interval=poll,
                     progress=None if as_json else _event_printer(), settings=settings)
    except TrainingDataInvalid as e:
        refuse_data(e)
    if alias and job.fine_tuned_model:
        set_alias(alias, job.fine_tuned_model, data_dir=settings.data_dir, models_file=settings.models_file)
    if as_json:
        typer.echo(job.model_dump_json(indent=2))
    else:
        if job.reattached:
            typer.echo("(continued a run an earlier command began)" if not job.terminal or job.trained_tokens
                       else "(this data and model were tuned before; --again starts a new job)")
        _show_job(job)
        if alias and job.fine_tuned_model:
            typer.echo(f"alias: --model {alias}")
        elif not wait:
            typer.echo(f"follow it with: aigc tune status {job.job_id or job.run_id} --follow")
    _exit_for(job)


@tune_app.command("status")
def status_cmd(
    ref: RefArg,
    follow: Annotated[bool, typer.Option("--follow", help="Wait until the job ends, printing its events.")] = False,
    poll: Annotated[float, typer.Option(min=0.01, help="Seconds between status checks.")] = 10.0,
    as_json: JsonOpt = False,
) -> None:
    """Show a fine-tuning run from the journal, refreshed from the service.

    Example: aigc tune status ftjob-abc123 --follow
    """
    from ...tune import status

    job = status(ref, follow=follow, settings=settings_now(), poll_interval=poll,
                 progress=None if as_json or not follow else _event_printer())
    typer.echo(job.model_dump_json(indent=2)) if as_json else _show_job(job)
    _exit_for(job)


@tune_app.command("list")
def list_cmd(
    limit: Annotated[int, typer.Option(min=1, help="How many runs, newest first.")] = 50,
    as_json: JsonOpt = False,
) -> None:
    """List fine-tuning runs (local results and hosted jobs) from the journal. Sends nothing.

    Example: aigc tune list --json
    """
    from ...tune import list_runs

    runs = list_runs(settings=settings_now(), limit=limit)
    if as_json:
        typer.echo("[" + ",\n".join(r.model_dump_json(indent=2) for r in runs) + "]")
        return
    if not runs:
        typer.echo("no fine-tuning runs yet")
        return
    for r in runs:
        result = r.fine_tuned_model or r.job_id or "-"
        typer.echo(f"{r.created}  {r.provider:<6} {r.state:<16} {r.model:<28} {result}")


@tune_app.command("cancel")
def cancel_cmd(ref: RefArg, as_json: JsonOpt = False) -> None:
    """Cancel a hosted fine-tuning job (tokens trained so far are still billed).

    Example: aigc tune cancel ftjob-abc123
    """
    from ...tune import cancel

    job = cancel(ref, settings=settings_now())
    typer.echo(job.model_dump_json(indent=2)) if as_json else _show_job(job)


@tune_app.command("alias")
def alias_cmd(
    name: Annotated[str | None, typer.Argument(help="The short name.", show_default=False)] = None,
    model: Annotated[str | None, typer.Argument(help="An ft: model id or a local result folder.",
                                                show_default=False)] = None,
    remove: Annotated[bool, typer.Option("--remove", help="Forget NAME.")] = False,
    as_json: JsonOpt = False,
) -> None:
    """Name a fine-tuned model so that --model NAME works everywhere (no arguments: list the names).

    Example: aigc tune alias my-news ft:gpt-4o-mini-2024-07-18:acme:news:abc123
    """
    from ...tune import list_aliases, remove_alias, resolve, set_alias

    settings = settings_now()
    if remove:
        if name is None or model is not None:
            raise typer.BadParameter("--remove takes one NAME")
        if not remove_alias(name, data_dir=settings.data_dir):
            typer.echo(f"aigc: error: no alias {name!r}", err=True)
            raise typer.Exit(EXIT_USAGE)
        typer.echo(f"removed {name}")
        return
    if name is not None and model is not None:
        aliases = [set_alias(name, model, data_dir=settings.data_dir, models_file=settings.models_file)]
    elif name is not None:
        found = resolve(name, settings.data_dir)
        if found is None:
            typer.echo(f"aigc: error: no alias {name!r}; see `aigc tune alias`", err=True)
            raise typer.Exit(EXIT_USAGE)
        aliases = [found]
    else:
        aliases = list_aliases(data_dir=settings.data_dir)
    if as_json:
        typer.echo("[" + ",\n".join(a.model_dump_json(indent=2) for a in aliases) + "]")
        return
    if not aliases:
        typer.echo("no aliases yet; make one with: aigc tune alias NAME ft:... (or a local result folder)")
    for a in aliases:
        price = "" if a.input_price is None else f"  ${a.input_price:g}/${a.output_price:g} per 1M in/out"
        retires = f"  base retires {a.retires}" if a.retires else ""
        typer.echo(f"{a.name:<20} {a.backend:<6} {a.model}{price}{retires}")
