"""What the tune commands share: the sub-app, options, progress printers and problem listings."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, TextIO

import typer

from ..app import app
from ..io import ProgressLine

tune_app = typer.Typer(
    help="Fine-tune on your own data: locally (the default) or with OpenAI's fine-tuning API. See docs/tune.md.",
    no_args_is_help=True,
)
app.add_typer(tune_app, name="tune")

DataArg = Annotated[Path, typer.Argument(help="Training file: JSONL of {\"messages\": [...]} examples.",
                                         show_default=False)]
TemplateOpt = Annotated[Path | None, typer.Option("--chat-template", help="A training chat template with "
                                                  "{% generation %} markers, for a model aigc has none for.")]
EXIT_FAILED, EXIT_USAGE = 1, 2


def settings_now():
    from ...config import load_settings

    return load_settings()


def _clock(seconds: float | None) -> str:
    if seconds is None:
        return "-:--"
    seconds = int(seconds)
    return f"{seconds // 3600}:{seconds % 3600 // 60:02d}:{seconds % 60:02d}" if seconds >= 3600 \
        else f"{seconds // 60}:{seconds % 60:02d}"


class TrainPrinter:
    """A one-line bar on a terminal (step, loss, ETA); elsewhere a plain line per tenth of the steps."""

    def __init__(self, stream: TextIO, *, tty: bool | None = None) -> None:
        self.line = ProgressLine(stream, tty=tty, width=100, every=0.0)
        self.last_note = ""

    def __call__(self, p) -> None:
        if p.phase != "training":
            self.line.end_bar()
            if p.note and p.note != self.last_note:
                self.last_note = p.note
                self.line.say(f"aigc tune: {p.note}")
            return
        loss = "-" if p.loss is None else f"{p.loss:.4f}"
        rate = "" if p.tokens_per_s is None else f"  {p.tokens_per_s:,.0f} tok/s"
        if self.line.tty:
            self.line.draw(p.step, p.max_steps, f"step {p.step}/{p.max_steps}  loss {loss}  eta {_clock(p.eta_s)}{rate}")
        elif self.line.new_tenth(p.step, p.max_steps):
            self.line.say(f"aigc tune: step {p.step}/{p.max_steps} loss {loss} elapsed {_clock(p.elapsed_s)} "
                          f"eta {_clock(p.eta_s)}{rate}")

    def close(self) -> None:
        self.line.close()


def show_problems(report, limit: int | None = 50) -> None:
    shown = report.problems if limit is None else report.problems[:limit]
    for p in shown:
        typer.echo(f"  {p}", err=p.severity == "error")
    if len(report.problems) > len(shown):
        typer.echo(f"  ... and {len(report.problems) - len(shown)} more (--json lists them all)")


def refuse_data(e) -> None:
    typer.echo(f"aigc: error: {e.report.path}: {len(e.report.errors)} problem(s) stop training:", err=True)
    for p in e.report.errors[:50]:
        typer.echo(f"  {p}", err=True)
    raise typer.Exit(EXIT_USAGE)


