"""``aigc eval run|compare``: is the content any good, and what does it cost? See docs/eval.md.

Exit codes of ``aigc eval run``: 0 everything generated and scored; 1 some items failed, or a judge output
could not be parsed; 2 bad suite file, configuration or usage; 3 the budget stopped it; 75 another run of
one of its jobs holds the lock. ``aigc eval compare``: 0, or 2 when the reports are not comparable.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Annotated, TextIO

import typer

from ..errors import BackendUnavailable
from .app import JsonOpt, app
from .io import ProgressLine

eval_app = typer.Typer(
    help="Evaluate generated content: compare models, backends, templates and fine-tunes on your own data, "
         "with quality, cost and speed side by side. See docs/eval.md.",
    no_args_is_help=True,
)
app.add_typer(eval_app, name="eval")

OutOpt = Annotated[Path | None, typer.Option("--output", "-o", help="Also write the report: .html for a "
                                             "self-contained page with plots, .json for the data.")]


def _library():
    try:
        import aigc.eval as library
    except ImportError as e:
        raise BackendUnavailable(f"aigc eval needs the eval extra ({e.name} is missing): "
                                 "pip install 'aigc-toolkit[eval]'") from None
    return library


class _Progress:
    """A one-line bar per job on a terminal; elsewhere (cron mail, logs) a line every tenth of a job."""

    def __init__(self, stream: TextIO) -> None:
        self.stream = stream
        self.label = ""
        self.line = ProgressLine(stream)

    def __call__(self, label: str, p) -> None:
        if label != self.label:
            self.close()
            self.label, self.line = label, ProgressLine(self.stream, tty=self.line.tty)
        if not p.todo:
            return
        if self.line.tty:
            self.line.draw(p.finished, p.todo, f"{p.finished}/{p.todo}  {p.elapsed_s:.0f}s", prefix=f"{label[:28]:<28} ")
        elif self.line.new_tenth(p.finished, p.todo):
            self.line.say(f"aigc eval: {label}: {p.finished}/{p.todo} done after {p.elapsed_s:.0f}s")

    def close(self) -> None:
        self.line.close()


def _write(report: dict, output: Path | None) -> None:
    if output is None:
        return
    library = _library()
    from ..textio import write_atomic

    if output.suffix.lower() in (".html", ".htm"):
        from aigc.eval.html import render_html

        write_atomic(output, render_html(report))
    else:
        write_atomic(output, json.dumps(library.run.clean(report), indent=1, ensure_ascii=False) + "\n")
    typer.echo(f"wrote {output}", err=True)


@eval_app.command("run")
def run(
    suite_file: Annotated[Path, typer.Argument(help="The suite file (TOML).", show_default=False)],
    dry_run: Annotated[bool, typer.Option("--dry-run", help="Show the jobs and the worst-case cost; send "
                                          "nothing.")] = False,
    samples: Annotated[int | None, typer.Option("--samples", min=1, max=100, help="Outputs per item and "
                                                "candidate (needs temperature > 0); the spread is reported.")] = None,
    no_cache: Annotated[bool, typer.Option("--no-cache", help="Do not reuse answers from the response "
                                           "cache.")] = False,
    output: OutOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Run every candidate over every item, score, and compare.

    Example: aigc eval run examples/eval/summaries.toml -o report.html

    Exit codes: 0 done; 1 some items failed or a judge output could not be parsed; 2 bad suite or
    configuration; 3 budget reached (run again to finish); 75 another run holds a job's lock.
    """
    import asyncio

    library = _library()
    from aigc.eval.table import format_plan, format_report

    from ..batch import EXIT_LOCKED, JobLocked

    suite = library.load_suite(suite_file)
    if dry_run:
        plan = library.Evaluation(suite, samples=samples).plan()
        typer.echo(json.dumps(plan, indent=1, ensure_ascii=False) if as_json else format_plan(plan))
        return
    progress = _Progress(sys.stderr)
    evaluation = library.Evaluation(suite, samples=samples, use_cache=not no_cache, progress=progress)
    try:
        report = asyncio.run(evaluation.run())
    except JobLocked as e:
        typer.echo(f"aigc: {e}", err=True)
        raise typer.Exit(EXIT_LOCKED) from None
    finally:
        progress.close()
    if as_json:
        typer.echo(json.dumps(library.run.clean(report), indent=1, ensure_ascii=False))
    else:
        typer.echo(format_report(report))
    _write(report, output)
    raise typer.Exit(report["exit_code"])


@eval_app.command("compare")
def compare(
    first: Annotated[Path, typer.Argument(help="An eval report (JSON), the baseline's run.", show_default=False)],
    second: Annotated[Path, typer.Argument(help="Another eval report of the same suite.", show_default=False)],
    output: OutOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Compare two saved eval runs (e.g. last month's and today's): re-scored side by side.

    Example: aigc eval compare .aigc/eval/summaries/reports/A.json .aigc/eval/summaries/reports/B.json

    Refuses (exit 2) runs whose data, metrics, metric signatures, or a candidate's template or model
    snapshot differ.
    """
    library = _library()
    from aigc.eval.table import format_report

    report = library.compare_reports(library.load_report(first), library.load_report(second),
                                     labels=(first.stem, second.stem))
    if as_json:
        typer.echo(json.dumps(library.run.clean(report), indent=1, ensure_ascii=False))
    else:
        typer.echo(format_report(report))
    _write(report, output)
