"""``aigc batch run|status JOB.toml``: content jobs from cron.

Exit codes of ``aigc batch run``: 0 every item done; 1 some items failed (listed); 2 bad job file or
configuration; 3 budget reached (the rest left pending); 75 another run of the job holds its lock;
130/143 interrupted by SIGINT/SIGTERM (the rest left pending, the report written).
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path
from typing import Annotated, TextIO

import typer

from .app import JsonOpt, app
from .io import ProgressLine

batch_app = typer.Typer(
    help="Content jobs from job files, for cron: exactly once, within limits and budget. See docs/batch.md.",
    no_args_is_help=True,
)
app.add_typer(batch_app, name="batch")

JobArg = Annotated[Path, typer.Argument(help="The job file (TOML).", show_default=False)]


def _usd(value: float | None) -> str:
    if value is None:
        return "unknown (no price for this model)"
    return f"${value:,.4f}" if value < 100 else f"${value:,.2f}"


class ProgressPrinter:
    """A one-line bar on a terminal; elsewhere (cron mail, logs) a plain line every tenth of the work."""

    def __init__(self, stream: TextIO, *, tty: bool | None = None) -> None:
        self.line = ProgressLine(stream, tty=tty, width=150)
        self.last_note = ("", 0.0)

    def __call__(self, p) -> None:
        if self.line.tty:
            cost = "" if p.cost_usd is None else f"  ${p.cost_usd:.4f}"
            self.line.draw(p.finished, p.todo, f"{p.finished}/{p.todo}  done {p.done}  failed {p.failed}{cost}  "
                                               f"{p.elapsed_s:.0f}s{_eta(p)}{_pace(p)}  {p.note}")
        elif not p.todo:
            return
        elif self.line.new_tenth(p.finished, p.todo):
            self.line.say(f"aigc batch: {p.finished}/{p.todo} settled ({p.done} of {p.total} items done, "
                          f"{p.failed} failed) after {p.elapsed_s:.0f}s{_eta(p)}{_pace(p)}")
        elif p.note and (p.note != self.last_note[0] and time.monotonic() - self.last_note[1] > 60):
            self.last_note = (p.note, time.monotonic())
            self.line.say(f"aigc batch: {p.note}")

    def close(self) -> None:
        self.line.close()


def _eta(p) -> str:
    return f", ETA {p.eta_s:.0f}s" if p.eta_s and p.finished < p.todo else ""


def _pace(p) -> str:
    """The pace and what holds it back, e.g. ``; 1180 rpm, 146k tpm, limited by tokens``."""
    if p.pace_rpm is None:
        return ""
    tpm = f"{p.pace_tpm / 1000:.0f}k" if (p.pace_tpm or 0) >= 10_000 else f"{p.pace_tpm:.0f}"
    return f"; {p.pace_rpm:.0f} rpm, {tpm} tpm, limited by {p.limited_by}"


def show_report(report) -> None:
    r = report
    typer.echo(f"job {r.job}: {r.total} items: {r.done} done, {r.failed} failed, {r.pending} pending")
    cached = f" ({r.cached} from the cache)" if r.cached else ""
    typer.echo(f"this run ({r.mode}): {r.done_this_run} done{cached}, {r.failed_this_run} failed, "
               f"{r.requests:,} requests, {r.tokens:,} tokens, {_usd(r.cost_usd)}, {r.duration_s:.1f}s")
    if r.redone_after_crash:
        typer.echo(f"redone: {r.redone_after_crash} items left in flight by an interrupted run")
    if r.stopped:
        typer.echo(f"stopped: {r.stopped}")
    if r.failures:
        typer.echo("failed:")
        for f in r.failures[:20]:
            when = "" if f.this_run else " (earlier run)"
            retry = " [permanent]" if f.permanent else " [retried next run]"
            typer.echo(f"  {f.id}: {f.error}: {f.reason}{when}{retry}")
        if len(r.failures) > 20:
            typer.echo(f"  ... and {len(r.failures) - 20} more (see the report)")
    for warning in r.warnings[:20]:
        typer.echo(f"note: {warning}")
    if r.rate:
        pace = r.rate.get("pace") or {}
        learned = " (learned from the server)" if r.rate.get("learned") else ""
        typer.echo(f"limits: {r.rate.get('rpm') or '-'} rpm, {r.rate.get('tpm') or '-'} tpm{learned}; "
                   f"{r.rate.get('rate_limited', 0)} x 429; last pace {pace.get('rpm', 0):.0f} rpm, limited by "
                   f"{pace.get('limited_by', '-')}")
    typer.echo(f"report: {r.report_path}")


def show_plan(plan) -> None:
    typer.echo(f"dry run of job {plan.job} via {plan.via} on {plan.backend}/{plan.model}: nothing was sent")
    typer.echo(f"  items:              {plan.total} ({plan.done} done, {plan.todo} to do, "
               f"{plan.skipped_failed} failed before and skipped, {plan.held} in open batches)")
    if plan.unusable:
        typer.echo(f"  unusable inputs:    {plan.unusable} (they will be reported as failed)")
    typer.echo(f"  requests:           {plan.requests}")
    typer.echo(f"  prompt tokens:      {plan.prompt_tokens:,}")
    typer.echo(f"  max output tokens:  {plan.max_output_tokens:,}")
    price = " at Batch API prices" if plan.via == "batch-api" else ""
    typer.echo(f"  max cost:           {_usd(plan.max_cost_usd)}{price}")
    if plan.fits_budget is not None:
        typer.echo(f"  budget covers:      {plan.fits_budget} of {plan.todo - plan.unusable} items in the worst case")
    if plan.minutes_at_limits is not None:
        typer.echo(f"  time at rpm/tpm:    at least {plan.minutes_at_limits:g} min")
    for problem in plan.problems[:10]:
        typer.echo(f"  problem: {problem}")


@batch_app.command("run")
def run(
    job_file: JobArg,
    retry_failed: Annotated[bool, typer.Option("--retry-failed", help="Also retry items that failed "
                                               "permanently before.")] = False,
    dry_run: Annotated[bool, typer.Option("--dry-run", help="Show the plan and estimated cost; send "
                                          "nothing.")] = False,
    no_cache: Annotated[bool, typer.Option("--no-cache", help="Do not reuse answers from the response "
                                           "cache.")] = False,
    via: Annotated[str, typer.Option("--via", help="direct, or batch-api (OpenAI Batch API: half price, "
                                     "results within 24 h).")] = "direct",
    as_json: JsonOpt = False,
) -> None:
    """Do the job's items that are not done yet.

    Exit codes: 0 all items done; 1 some items failed (listed in the report); 2 bad job file or
    configuration; 3 budget reached (the rest left pending); 75 another run of this job holds the lock;
    130/143 interrupted (the rest left pending).

    Example: aigc batch run nightly.toml --json
    """
    import asyncio

    from ..batch import EXIT_LOCKED, JobLocked, Runner, load_job, plan_job

    job = load_job(job_file)
    if dry_run:
        plan = plan_job(job, retry_failed=retry_failed, via=via)
        if as_json:
            typer.echo(json.dumps(vars(plan), indent=2))
        else:
            show_plan(plan)
        return
    progress = ProgressPrinter(sys.stderr)
    runner = Runner(job, retry_failed=retry_failed, use_cache=not no_cache, via=via, progress=progress)

    async def run_until_signalled():
        # SIGINT (Ctrl-C) and SIGTERM (cron's timeout, systemd) stop the run in order rather than kill it:
        # nothing more is sent, requests in flight get a moment, the report is written. A second signal
        # stops waiting.
        import signal

        loop = asyncio.get_running_loop()
        caught = [s for s in (signal.SIGINT, signal.SIGTERM) if _handle(loop, s, runner.interrupt)]
        try:
            return await runner.run()
        finally:
            for s in caught:
                loop.remove_signal_handler(s)

    try:
        report = asyncio.run(run_until_signalled())
    except JobLocked as e:
        typer.echo(f"aigc: {e}", err=True)
        raise typer.Exit(EXIT_LOCKED) from None
    finally:
        progress.close()
    if as_json:
        typer.echo(json.dumps(report.to_dict(), indent=2, ensure_ascii=False))
    else:
        show_report(report)
    raise typer.Exit(report.exit_code)


def _handle(loop, signum: int, handler) -> bool:
    try:
        loop.add_signal_handler(signum, handler, signum)
    except (NotImplementedError, RuntimeError, ValueError):  # not the main thread, or no signals here
        return False
    return True


@batch_app.command("status")
def status(job_file: JobArg, as_json: JsonOpt = False) -> None:
    """Show a job's done / failed / pending counts, its spend and its last run. Sends nothing."""
    from ..batch import job_status, load_job

    s = job_status(load_job(job_file))
    if as_json:
        typer.echo(json.dumps(vars(s), indent=2, default=str))
        return
    typer.echo(f"job {s.job} ({s.job_file})")
    flying = f", {s.in_flight} in flight" if s.in_flight else ""
    typer.echo(f"items: {s.total}: {s.done} done, {s.failed} failed ({s.failed_permanent} permanently), "
               f"{s.pending} pending{flying}")
    cost = _usd(s.spent_usd) + ("" if s.cost_complete else " (some runs had unknown prices)")
    typer.echo(f"spend: {cost}, {s.spent_tokens:,} tokens over {s.runs} runs")
    last = s.last_run
    if last is None:
        typer.echo("last run: none yet")
    elif last["finished"] is None:
        state = f"running now (pid {last['pid']})" if s.running else "did not finish (killed?)"
        typer.echo(f"last run: {last['id']} ({last['mode']}), started {last['started']}, {state}")
    else:
        typer.echo(f"last run: {last['id']} ({last['mode']}), finished {last['finished']}, exit "
                   f"{last['exit_code']} ({last['outcome']}): {last['done']} done, {last['failed']} failed, "
                   f"{last['pending']} pending; report {last['report']}")
    if s.open_batches:
        typer.echo(f"open batches: {', '.join(s.open_batches)}")
    for f in s.failures[:20]:
        typer.echo(f"  failed {f['id']}: {f['error']}: {f['reason']}")
    if len(s.failures) > 20:
        typer.echo(f"  ... and {len(s.failures) - 20} more")
