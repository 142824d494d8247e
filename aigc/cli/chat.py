"""``aigc chat``: a conversation in the terminal, kept in the conversation store; ``aigc chat list|show|delete``.

On a terminal it is interactive (line editing and history through readline, replies streamed, ``/exit``,
``/reset``, ``/system TEXT``, ``/help``); with standard input piped it answers that one message and exits
(``echo "Where is my order?" | aigc chat -c``).
"""

from __future__ import annotations

import contextlib
import json
import sys
from pathlib import Path
from typing import Annotated, Any

import typer

from ..errors import AigcError, InputError
from .app import COMMON, Common, JsonOpt, app, with_options
from .io import print_stream

__all__ = ["chat_app"]

chat_app = typer.Typer(
    help="Chat with a model: interactive on a terminal (/exit, /reset, /system TEXT), one answer with a pipe. "
         "Conversations are kept: --continue resumes the latest; chat list|show|delete manage them.\n\n"
         "Example:\n\n  aigc chat --persona support --knowledge faq.md --knowledge policies/\n\n"
         "  echo \"And for sale items?\" | aigc chat -c",
    invoke_without_command=True)
app.add_typer(chat_app, name="chat")

HELP = """commands:
  /exit           leave (Ctrl-D works too)
  /reset          start a new conversation (same persona and knowledge)
  /system TEXT    use TEXT as the system prompt from now on (/system alone: the persona's own again)
  /help           this list"""
_SHARED = {k: v for k, v in COMMON.items() if k not in ("dry_run", "output")}


def chat(
    ctx: typer.Context,
    persona: Annotated[str | None, typer.Option("--persona", "-p", help="assistant (default), support, or a "
                                                "template of yours.")] = None,
    knowledge: Annotated[list[Path] | None, typer.Option("--knowledge", "-k", help="A file or folder to answer "
                                                         "from (repeatable).")] = None,
    system: Annotated[str | None, typer.Option("--system", "-s", help="The system prompt (instead of the "
                                               "persona's).")] = None,
    resume: Annotated[bool, typer.Option("--continue", "-c", help="Continue the latest conversation.")] = False,
    conversation: Annotated[str | None, typer.Option("--conversation", "--cid", help="Continue this "
                                                     "conversation (an id, or the start of one).")] = None,
    trim: Annotated[str | None, typer.Option("--trim", help="When the history outgrows the window: drop the "
                                             "oldest turns (drop), or summarize them (summarize).")] = None,
    **shared: Any,
) -> None:
    """Chat with a model; on a terminal it is interactive, with a pipe it answers one message.

    Example:

      aigc chat --persona support --knowledge faq.md --knowledge policies/
      echo "And for sale items?" | aigc chat -c
    """
    if ctx.invoked_subcommand is not None:
        return
    common = Common(**shared)
    from ..conversations import TRIMS

    if trim is not None and trim not in TRIMS:
        raise InputError(f"--trim must be {' or '.join(TRIMS)}, not {trim!r}")
    ref = conversation or ("last" if resume else None)
    paths = [str(k) for k in knowledge] if knowledge else None
    with common.client() as client, client.conversation(persona, knowledge=paths, system=system, id=ref,
                                                        trim=trim) as conv:
        if sys.stdin.isatty():
            _interactive(conv, common, client)
        else:
            _one(conv, common)


def _one(conv: Any, common: Common) -> None:
    text = sys.stdin.read()
    if not text.strip():
        raise InputError("no message on standard input")
    if common.stream and not common.as_json:
        result = print_stream(conv.say(text.strip(), stream=True))
    else:
        result = conv.say(text.strip())
    if common.as_json:
        typer.echo(json.dumps({**result.model_dump(mode="json"), "conversation_id": conv.id}, indent=2))
    else:
        if not common.stream:
            typer.echo(result.text)
        _notes(result)


def _notes(result: Any) -> None:
    for warning in result.warnings:
        typer.echo(f"aigc: note: {warning}", err=True)


def _readline(data_dir: Path) -> None:
    """Line editing and a history of what was typed, where the platform has readline."""
    try:
        import atexit
        import readline
    except ImportError:
        return
    history = data_dir / "chat_history"
    try:
        history.parent.mkdir(parents=True, exist_ok=True)
        readline.read_history_file(history)
    except OSError:
        pass
    readline.set_history_length(1000)
    atexit.register(lambda: _save_history(readline, history))


def _save_history(readline: Any, path: Path) -> None:
    with contextlib.suppress(OSError):
        readline.write_history_file(path)


def _interactive(conv: Any, common: Common, client: Any) -> None:
    _readline(client.settings.data_dir)
    stream = not client.settings.moderate  # a moderated reply is shown once it has passed
    where = f"{client.backend.name}/{client.model}"
    typer.echo(f"Chatting with {where} as {conv.persona.name} (conversation {conv.id}). /help for commands, "
               "/exit to leave.")
    while True:
        try:
            line = input("> ")
        except EOFError:
            typer.echo()
            return
        except KeyboardInterrupt:
            typer.echo()
            continue
        text = line.strip()
        if not text:
            continue
        command, _, rest = text.partition(" ")
        if command in ("/exit", "/quit"):
            return
        if command == "/help":
            typer.echo(HELP)
            continue
        if command == "/reset":
            conv.reset()
            typer.echo(f"New conversation {conv.id}.")
            continue
        if command == "/system":
            conv.set_system(rest.strip() or None)
            typer.echo("System prompt set." if rest.strip() else f"System prompt: the {conv.persona.name} persona's.")
            continue
        if command.startswith("/"):
            typer.echo(f"unknown command {command}; /help lists them")
            continue
        _turn(conv, text, stream)


def _turn(conv: Any, text: str, stream: bool) -> None:
    try:
        if stream:
            result = print_stream(conv.say(text, stream=True))
        else:
            result = conv.say(text)
            typer.echo(result.text)
        _notes(result)
    except KeyboardInterrupt:
        typer.echo("\n(interrupted: this reply is not kept)")
    except AigcError as e:  # the conversation goes on: a budget, a flagged message, a failed backend
        typer.echo(f"aigc: error: {e}", err=True)


chat_app.callback(invoke_without_command=True)(with_options(chat, _SHARED))


def _store():
    from ..config import load_settings
    from ..conversations import ConversationStore

    return ConversationStore.in_dir(load_settings().data_dir)


@chat_app.command("list")
def chat_list(limit: Annotated[int, typer.Option("--limit", "-n", min=1, help="How many.")] = 20,
              as_json: JsonOpt = False) -> None:
    """The latest conversations, newest first.

    Example: aigc chat list -n 5
    """
    with _store() as store:
        rows = store.list(limit)
    if as_json:
        typer.echo(json.dumps([{"id": r.id, "name": r.name, "persona": r.persona, "model": r.model, "turns": n,
                                "updated": updated} for r, n, updated in rows], indent=2))
        return
    for record, turns, updated in rows:
        typer.echo(f"{record.id}  {updated[:16].replace('T', ' ')}  {turns:>3} turn(s)  {record.persona or '-':<9}  "
                   f"{record.name or ''}")


@chat_app.command("show")
def chat_show(conversation: Annotated[str, typer.Argument(help="An id, its start, or last.")] = "last",
              as_json: JsonOpt = False) -> None:
    """Print a conversation's turns.

    Example: aigc chat show last
    """
    with _store() as store:
        record = store.find(conversation)
        turns = store.turns(record.id)
    if as_json:
        typer.echo(json.dumps({"id": record.id, "name": record.name, "persona": record.persona,
                               "system": record.system, "knowledge": record.knowledge, "summary": record.summary,
                               "turns": [{"id": t.id, "time": t.time, "prompt": t.prompt, "response": t.response,
                                          "model": t.model, "backend": t.backend, "input_tokens": t.input_tokens,
                                          "output_tokens": t.output_tokens, "cost_usd": t.cost_usd,
                                          "trimmed_turns": t.trimmed_turns,
                                          "passages": [p["source"] for p in t.passages]} for t in turns]},
                              indent=2, ensure_ascii=False))
        return
    typer.echo(f"conversation {record.id} ({record.persona}, {len(turns)} turns)")
    for t in turns:
        typer.echo(f"\n> {t.prompt}\n{t.response}")


@chat_app.command("delete")
def chat_delete(conversation: Annotated[str, typer.Argument(help="An id, or its start.")],
                yes: Annotated[bool, typer.Option("--yes", "-y", help="Do not ask.")] = False) -> None:
    """Delete a conversation and its turns.

    Example: aigc chat delete 01jc3f --yes
    """
    with _store() as store:
        record = store.find(conversation)
        if not yes and sys.stdin.isatty() and not typer.confirm(f"Delete conversation {record.id} "
                                                                f"({record.name or 'no turns'})?"):
            raise typer.Exit(1)
        store.delete(record.id)
    typer.echo(f"deleted {record.id}")
