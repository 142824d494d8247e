"""Commands about the setup rather than content: tokens, usage, doctor."""

from __future__ import annotations

import json
from typing import Annotated

import typer

from .app import BackendOpt, BaseUrlOpt, JsonOpt, ModelOpt, app
from .io import read_input


@app.command()
def tokens(
    file: Annotated[str | None, typer.Argument(help="Text file, or - for standard input.")] = None,
    backend: BackendOpt = None, model: ModelOpt = None, base_url: BaseUrlOpt = None, as_json: JsonOpt = False,
) -> None:
    """Count a file's tokens; show the context window and each task's estimated cost. Sends nothing."""
    from ..client import Client

    text = read_input(file)
    with Client(backend=backend, model=model, base_url=base_url, ledger=False) as client:
        estimates = {
            "summarize": client.plan("summarize", text),
            "translate": client.plan("translate", text, to="English"),
            "answer": client.plan("answer", "What is this about?", context=text),
            "news": client.plan("news", text),
        }
        first = next(iter(estimates.values()))
    if as_json:
        typer.echo(json.dumps({k: v.model_dump() for k, v in estimates.items()}, indent=2))
        return
    typer.echo(f"{first.input_tokens} tokens for {first.backend}/{first.model} "
               f"(context window {first.context_window})")
    typer.echo(f"{'task':<10} {'requests':>8} {'prompt tok':>10} {'max out tok':>11} {'max cost':>12}")
    for name, e in estimates.items():
        cost = "unknown" if e.max_cost_usd is None else f"${e.max_cost_usd:.4f}"
        typer.echo(f"{name:<10} {e.requests:>8} {e.prompt_tokens:>10} {e.max_output_tokens:>11} {cost:>12}")


@app.command()
def usage(
    since: Annotated[str | None, typer.Option(help='How far back: "7d", "24h", "30m" or a date.')] = None,
    by: Annotated[str | None, typer.Option(help="Group by model, task, day, backend, job or key (aigc serve API keys).")] = None,
    as_json: JsonOpt = False,
) -> None:
    """Report tokens and money spent, from the local usage ledger."""
    from ..config import load_settings
    from ..ledger import Ledger, parse_since

    settings = load_settings()
    start = parse_since(since) if since else None
    path = settings.data_dir / "ledger.db"
    if not path.exists():
        rows = []
    else:
        with Ledger(path) as ledger:
            rows = ledger.report(start, by)  # type: ignore[arg-type]
    rows = [r for r in rows if r.requests]
    if as_json:
        typer.echo(json.dumps([{"key": r.key, "requests": r.requests, "prompt_tokens": r.prompt_tokens,
                                "completion_tokens": r.completion_tokens, "total_tokens": r.total_tokens,
                                "cost_usd": round(r.cost_usd, 6), "cost_complete": r.cost_complete,
                                "failures": r.failures} for r in rows], indent=2))
        return
    if not rows:
        typer.echo("no requests recorded" + (f" since {since}" if since else ""))
        return
    label = by or "all"
    typer.echo(f"{label:<22} {'requests':>8} {'failed':>6} {'prompt':>10} {'completion':>10} {'cost (USD)':>12}")
    for r in rows:
        cost = f"{r.cost_usd:.4f}" + ("" if r.cost_complete else "+")
        typer.echo(f"{str(r.key or 'total'):<22} {r.requests:>8} {r.failures:>6} {r.prompt_tokens:>10} "
                   f"{r.completion_tokens:>10} {cost:>12}")
    if any(not r.cost_complete for r in rows):
        typer.echo("+ some requests had no known price (or failed without an answer): the cost is a lower bound")


def _size(n: int | None) -> str:
    return "?" if n is None else f"{n / 2**30:.1f} GiB" if n >= 2**30 else f"{n / 2**20:.0f} MiB"


@app.command()
def doctor(as_json: JsonOpt = False) -> None:
    """Check this machine and configuration: Python, torch, CUDA, GPUs, keys (never shown), backends."""
    from ..config import load_settings
    from ..doctor import diagnose

    report = diagnose(load_settings())
    if as_json:
        typer.echo(report.model_dump_json(indent=2))
        return
    hw = report.hardware
    lines = [
        f"aigc {hw.aigc_version} on Python {hw.python_version} ({hw.platform})",
        f"config file   {report.config_file}" + ("" if report.config_file_exists else " (none yet)"),
        f"data dir      {report.data_dir}",
        *(f"{f.name:<14}{f.path} ({'damaged' if f.problem else 'ok' if f.exists else 'none yet'})"
          for f in report.data_files),
        f"API key       {'configured' if report.api_key_configured else 'not configured'}"
        + (f"; base URL {report.base_url}" if report.base_url else ""),
        f"local extra   {'installed' if hw.local_extra_installed else 'missing: ' + (hw.install_hint or '')}",
        f"torch         {hw.torch_version or '-'} ({hw.torch_build or '-'}); CUDA "
        f"{'available' if hw.cuda_available else 'not available'}",
    ]
    lines += [f"GPU {g.index}         {g.name}, {_size(g.memory_total_bytes)}" for g in hw.gpus]
    lines.append(f"memory        {_size(hw.ram_available_bytes)} free of {_size(hw.ram_total_bytes)}, "
                 f"{hw.cpu_count} CPUs")
    m = hw.model
    fits = {True: "fits", False: "may not fit", None: "fit unknown"}[m.fits]
    lines.append(f"local model   {m.name}: {m.parameters or '?'} parameters, needs ~{_size(m.memory_needed_bytes)}"
                 f" on {hw.device or '?'} ({fits})" + ("; converted cache ready" if m.converted else ""))
    lines.append("backends")
    for b in report.backends:
        mark = "ok " if b.usable else "-- "
        default = " (default)" if b.name == report.default_backend else ""
        lines.append(f"  {mark}{b.name:<7} {b.default_model:<24} {b.note}{default}")
    for problem in report.problems:
        lines.append(f"problem: {problem}")
    typer.echo("\n".join(lines))
