"""``aigc serve``: run the OpenAI-compatible server; ``aigc serve keys ...``: its API keys."""

from __future__ import annotations

import json
import logging
import sys
from pathlib import Path
from typing import Annotated

import typer

from .app import BackendOpt, BaseUrlOpt, JsonOpt, ModelOpt, app

serve_app = typer.Typer(no_args_is_help=False, help="Serve a model as an OpenAI-compatible API with a chat page.")
keys_app = typer.Typer(no_args_is_help=True, help="API keys of the server: add, list, revoke, info.")
serve_app.add_typer(keys_app, name="keys")
app.add_typer(serve_app, name="serve")

KeysFileOpt = Annotated[Path | None, typer.Option("--keys-file", help="Keys database (default: in the data dir).")]


@serve_app.callback(invoke_without_command=True)
def serve(
    ctx: typer.Context,
    host: Annotated[str, typer.Option(help="Address to bind; 0.0.0.0 for every interface (needs keys).")] =
    "127.0.0.1",
    port: Annotated[int, typer.Option(min=0, max=65535, help="Port (0: any free one).")] = 8000,
    backend: BackendOpt = None, model: ModelOpt = None, base_url: BaseUrlOpt = None,
    device: Annotated[str | None, typer.Option(help="Local model: auto, cpu, cuda, cuda:1, mps.")] = None,
    dtype: Annotated[str | None, typer.Option(help="Local model: auto, float32, bfloat16, float16.")] = None,
    max_tokens: Annotated[int | None, typer.Option("--max-tokens", min=1,
                                                   help="Most output tokens a request may ask for.")] = None,
    max_batch: Annotated[int, typer.Option(min=1, help="Requests generating at once (the local batch).")] = 32,
    max_queue: Annotated[int, typer.Option(min=0, help="Requests waiting behind them; more get 503.")] = 64,
    max_body: Annotated[int, typer.Option(min=1024, help="Largest request body, in bytes.")] = 1 << 20,
    request_timeout: Annotated[float, typer.Option(min=1, help="Seconds a request may take.")] = 600.0,
    drain_timeout: Annotated[float, typer.Option(min=0, help="Seconds in-flight requests get on SIGTERM.")] = 30.0,
    system_prompt: Annotated[str | None, typer.Option(help="The chat page's default persona.")] = None,
    knowledge: Annotated[list[Path] | None, typer.Option(help="A file to ground replies on (repeatable).")] = None,
    cache: Annotated[bool, typer.Option(help="Answer repeated identical requests from the response cache.")] =
    False,
    rpm: Annotated[float | None, typer.Option(min=1, help="Upstream requests per minute (gateway).")] = None,
    tpm: Annotated[float | None, typer.Option(min=1, help="Upstream tokens per minute (gateway).")] = None,
    keys_file: KeysFileOpt = None,
    allow_no_auth: Annotated[bool, typer.Option(help="Serve a non-loopback address without API keys.")] = False,
    access_log: Annotated[bool, typer.Option(help="One JSON line per request on stderr.")] = True,
    as_json: JsonOpt = False,
) -> None:
    """Serve the local model (default) or a hosted account as an OpenAI-compatible API, with a chat page.

    \b
    aigc serve                                        # the local model on http://127.0.0.1:8000
    aigc serve --backend openai --model gpt-4o-mini   # a gateway with keys, budgets and one retry layer
    then: openai.OpenAI(base_url="http://127.0.0.1:8000/v1", api_key="<key or anything>")
    """
    if ctx.invoked_subcommand is not None:
        return
    import aigc

    from ..config import load_settings
    from ..serve import Core, ServeOptions, Server, build_backend, create_app, open_keys
    from ..serve.knowledge import Knowledge
    from ..tune.aliases import apply as apply_alias

    settings = apply_alias(load_settings({"backend": backend, "model": model, "base_url": base_url,
                                          "device": device, "dtype": dtype}))
    keys = open_keys(settings.data_dir, host, allow_no_auth=allow_no_auth, keys_file=keys_file)
    client = aigc.AsyncClient(backend=build_backend(settings, max_batch=max_batch), settings=settings,
                              concurrency=max_batch, cache=cache or None, rpm=rpm, tpm=tpm)
    core = Core(client)
    grounding = Knowledge(list(knowledge), core.text_counter()) if knowledge else None
    options = ServeOptions(max_tokens=max_tokens, max_running=max_batch, max_waiting=max_queue,
                           max_body_bytes=max_body, request_timeout=request_timeout, system_prompt=system_prompt)
    _log_access(access_log)

    def started(server: Server) -> None:
        url = server.url
        facts = {"url": url, "api": url + "/v1", "backend": core.backend_name, "model": core.model,
                 "auth": keys is not None}
        if as_json:
            typer.echo(json.dumps(facts))
            return
        typer.echo(f"aigc serve: {core.model} ({core.backend_name}) on {url}  (chat page: {url}/)", err=True)
        key = "<a key from `aigc serve keys add NAME`>" if keys is not None else "-"
        typer.echo(f'  client = openai.OpenAI(base_url="{url}/v1", api_key="{key}")', err=True)
        if keys is None:
            typer.echo("  no API keys: anyone who can reach this address can use it", err=True)

    server = Server(create_app(core, options, keys=keys, knowledge=grounding), host, port,
                    drain_timeout=drain_timeout, on_started=started)
    server.run()


def _log_access(enabled: bool) -> None:
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter("%(message)s"))
    access = logging.getLogger("aigc.serve.access")
    access.addHandler(handler)
    access.propagate = False
    access.setLevel(logging.INFO if enabled else logging.WARNING)


def _store(keys_file: Path | None):
    from ..config import load_settings
    from ..serve.keys import KeyStore

    return KeyStore(keys_file) if keys_file else KeyStore.in_dir(load_settings().data_dir)


def _limits(record) -> str:
    parts = []
    if record.max_cost_usd is not None:
        parts.append(f"${record.max_cost_usd:g}")
    if record.max_total_tokens is not None:
        parts.append(f"{record.max_total_tokens:,} tokens")
    if parts and record.budget_period_s:
        from ..serve.keys import period_text

        parts[-1] += f" per {period_text(record.budget_period_s)}"
    for label, value in (("rpm", record.rpm), ("tpm", record.tpm), ("parallel", record.max_parallel)):
        if value is not None:
            parts.append(f"{value} {label}")
    if record.models:
        parts.append("models " + ",".join(record.models))
    if record.expires_at:
        parts.append("expires " + record.expires_at.date().isoformat())
    return "; ".join(parts) or "no limits"


@keys_app.command("add")
def keys_add(
    name: Annotated[str, typer.Argument(help="A name for the client, e.g. team-web.")],
    max_cost_usd: Annotated[float | None, typer.Option(min=0, help="Money cap (USD) per period.")] = None,
    max_total_tokens: Annotated[int | None, typer.Option(min=1, help="Token cap per period.")] = None,
    rpm: Annotated[int | None, typer.Option(min=1, help="Requests per minute.")] = None,
    tpm: Annotated[int | None, typer.Option(min=1, help="Tokens per minute (prompt + max output).")] = None,
    max_parallel: Annotated[int | None, typer.Option(min=1, help="Requests in flight at once.")] = None,
    models: Annotated[str | None, typer.Option(help="Comma-separated models the key may use.")] = None,
    budget_period: Annotated[str | None, typer.Option(help="Budgets renew every period, e.g. 30d.")] = None,
    expires: Annotated[str | None, typer.Option(help="A date (2027-01-31) or a duration (90d).")] = None,
    keys_file: KeysFileOpt = None, as_json: JsonOpt = False,
) -> None:
    """Make an API key; it is printed once and only its hash is stored.

    \b
    aigc serve keys add team-web --max-cost-usd 20 --budget-period 30d --rpm 60
    """
    with _store(keys_file) as store:
        record, secret = store.add(
            name, max_cost_usd=max_cost_usd, max_total_tokens=max_total_tokens, rpm=rpm, tpm=tpm,
            max_parallel=max_parallel, models=[m.strip() for m in models.split(",") if m.strip()] if models else None,
            budget_period=budget_period, expires=expires)
    if as_json:
        typer.echo(json.dumps({**record.as_dict(), "key": secret}))
        return
    typer.echo(secret)
    typer.echo(f"key {record.name!r} ({_limits(record)}): store it now, it cannot be shown again", err=True)


@keys_app.command("list")
def keys_list(keys_file: KeysFileOpt = None, as_json: JsonOpt = False) -> None:
    """List the keys with their limits and what each used this period.

    \b
    aigc serve keys list --json
    """
    with _store(keys_file) as store:
        rows = [(k, store.spend(k)) for k in store.list()]
    if as_json:
        typer.echo(json.dumps([{**k.as_dict(), "period_tokens": s.tokens, "period_cost_usd": round(s.cost_usd, 6),
                                "period_requests": s.requests} for k, s in rows], indent=2))
        return
    if not rows:
        typer.echo("no keys yet: aigc serve keys add NAME")
        return
    typer.echo(f"{'name':<20} {'status':<8} {'key':<14} {'requests':>8} {'tokens':>10} {'cost':>10}  limits")
    for k, s in rows:
        cost = f"${s.cost_usd:.4f}"
        typer.echo(f"{k.name:<20} {k.status():<8} {'sk-aigc-…' + k.hint:<14} {s.requests:>8} {s.tokens:>10} "
                   f"{cost:>10}  {_limits(k)}")


@keys_app.command("revoke")
def keys_revoke(name: Annotated[str, typer.Argument(help="The key's name.")], keys_file: KeysFileOpt = None,
                as_json: JsonOpt = False) -> None:
    """Revoke a key: requests with it get 401 from now on (its usage stays in the ledger).

    \b
    aigc serve keys revoke team-web
    """
    with _store(keys_file) as store:
        record = store.revoke(name)
    typer.echo(json.dumps(record.as_dict()) if as_json else f"key {name!r} revoked")


@keys_app.command("info")
def keys_info(name: Annotated[str, typer.Argument(help="The key's name.")], keys_file: KeysFileOpt = None,
              as_json: JsonOpt = False) -> None:
    """A key's limits, and what it used in the current budget period.

    \b
    aigc serve keys info team-web
    """
    with _store(keys_file) as store:
        record = store.get(name)
        spend = store.spend(record)
    facts = {**record.as_dict(), "period_start": spend.since.isoformat(), "period_requests": spend.requests,
             "period_tokens": spend.tokens, "period_cost_usd": round(spend.cost_usd, 6),
             "held_tokens": spend.held_tokens, "held_cost_usd": round(spend.held_usd, 6)}
    if as_json:
        typer.echo(json.dumps(facts, indent=2))
        return
    typer.echo(f"key {record.name} ({record.status()}), sk-aigc-…{record.hint}, made "
               f"{record.created_at:%Y-%m-%d %H:%M} UTC")
    typer.echo(f"limits: {_limits(record)}")
    typer.echo(f"since {spend.since:%Y-%m-%d %H:%M} UTC: {spend.requests} requests, {spend.tokens:,} tokens, "
               f"${spend.cost_usd:.4f}" + (f" (+{spend.held_tokens:,} tokens held in flight)"
                                           if spend.held_tokens else ""))
