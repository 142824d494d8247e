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
