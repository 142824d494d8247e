"""From a job to the work of a run: its client, its items' keys, what each item asks, which items to do.

Shared by a run (:mod:`~aigc.batch.runner`) and the read-only views (:mod:`~aigc.batch.status`), so a dry
run and a status count exactly what a run would do.
"""

from __future__ import annotations

import secrets
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from ..budget import Budget
from ..errors import ConfigError, InputError, TemplateError
from .inputs import Item, KeyMaker
from .job import Job
from .journal import ItemRow
from .outputs import JsonlOutput
from .records import CURRENT, FOREIGN, MISSING, STALE, OutputRecords

__all__ = ["open_client", "close_client", "item_call", "record_options", "key_maker", "Selection", "select",
           "output_states", "new_run_id"]


def open_client(job: Job, *, use_cache: bool = True, budget: Budget | None = None):
    """The AsyncClient a job runs with: its backend and model settings, its budget, rate limits, the shared
    response cache and the job's name on every ledger row."""
    from ..client import AsyncClient

    m, limits, safety = job.spec.model, job.spec.limits, job.spec.safety
    return AsyncClient(
        backend=m.backend, model=m.model, base_url=m.base_url, temperature=m.temperature,
        max_output_tokens=m.max_output_tokens, timeout=m.timeout, deadline=m.deadline, max_attempts=m.max_attempts,
        templates_dir=job.templates_dir, budget=budget or Budget(allow_unknown_prices=True),
        rpm=limits.rpm, tpm=limits.tpm, cache=use_cache, job=job.name, fallback=m.fallback,
        redact=safety.redact, redact_region=safety.region, moderate=safety.moderate,
        moderation_model=safety.moderation_model, moderation_thresholds=safety.thresholds,
        # One request at a time per item: with `concurrency` items in flight, at most `concurrency`
        # requests are ever in flight, which bounds what a crash can make us pay twice.
        concurrency=1,
    )


def close_client(client) -> None:
    """Release what :func:`open_client` opened (outside an event loop; runs use ``await client.aclose()``)."""
    client.close()


# Fields of a chat record (an OpenAI Batch API request body) that set the request rather than the prompt.
_RECORD_OPTIONS = {"model": "model", "temperature": "temperature", "top_p": "top_p", "stop": "stop",
                   "seed": "seed", "max_tokens": "max_output_tokens", "max_completion_tokens": "max_output_tokens",
                   "max_output_tokens": "max_output_tokens"}


def record_options(job: Job, record: dict[str, Any] | None) -> dict[str, Any]:
    """A chat record's own request settings (model, temperature, max_tokens, response_format...)."""
    if record is None or job.declared is None or job.declared.template is not None:
        return {}
    options = {_RECORD_OPTIONS[k]: v for k, v in record.items() if k in _RECORD_OPTIONS and v is not None}
    fmt = record.get("response_format")
    if isinstance(fmt, dict) and fmt.get("type") == "json_schema" and isinstance(fmt.get("json_schema"), dict):
        options["schema"] = fmt["json_schema"]
    elif isinstance(fmt, dict) and fmt.get("type") == "json_object":
        options["schema"] = {"name": "object", "schema": {"type": "object"}}
    if isinstance(options.get("stop"), str):
        options["stop"] = [options["stop"]]
    return options


def item_call(client, job: Job, variables: dict[str, Any], options: dict[str, Any] | None = None):
    """The planned call (flow and engine) of one item, as the client plans any call of the task."""
    if job.spec.model.seed is not None:  # a job's seed (e.g. an eval sample's); a record's own wins
        options = {"seed": job.spec.model.seed, **(options or {})}
    try:
        if job.template is not None:
            return client.template_call(job.template, variables, dict(options or {}))
        return client.prepare(job.declared, job.declared.check(variables), options or {})
    except TypeError as e:
        raise InputError(f"cannot {job.task} this item: {e}") from None


def key_maker(job: Job, client) -> KeyMaker:
    """Keys for this job's items with this client's backend, model and template."""
    name = job.template or (job.declared.template if job.declared is not None else None)
    try:
        source = client.templates.source(name) if name else ""
    except TemplateError as e:
        raise ConfigError(f"{job.path}: {e}") from None
    s = client.settings
    return KeyMaker(job, template_name=name or job.task, template_source=source, backend=client.backend.name,
                    model=client.model, temperature=s.temperature, max_output_tokens=s.max_output_tokens,
                    seed=job.spec.model.seed)


@dataclass
class Selection:
    todo: list[Item] = field(default_factory=list)
    skipped_done: int = 0
    redone: int = 0  # left in flight by a run that died
    held: int = 0  # in an open Batch API batch
    skipped_failed: int = 0  # failed permanently before (without --retry-failed)
    missing: list[Item] = field(default_factory=list)  # done, but the output is gone
    stale: list[Item] = field(default_factory=list)  # done, but the output on disk is another key's (or edited)
    adopt: list[Item] = field(default_factory=list)  # not marked done, but its output is there and current
    foreign: list[Item] = field(default_factory=list)  # to do, but a file this job never wrote is in the way


def output_states(job: Job, items: list[Item], rows: dict[str, ItemRow], records: OutputRecords | None,
                  jsonl: JsonlOutput | None, legacy: dict[str, str]) -> dict[str, str]:
    """What each item's output on disk is for its current key (see :mod:`.records`). ``legacy``: output
    path -> key of the latest done journal row there, for files written before outputs were recorded."""
    states: dict[str, str] = {}
    for item in items:
        row = rows.get(item.key)
        if item.error is not None:
            state = MISSING
        elif jsonl is not None:
            restorable = row is not None and row.state == "done" and row.text is not None
            state = CURRENT if item.key in jsonl.keys or restorable else MISSING
        elif item.output is not None and records is not None:
            found = records.state(item.output, item.key)
            if found is None:  # a file with no record: the journal's word for old outputs, else not ours
                owner = legacy.get(str(item.output))
                found = FOREIGN if owner is None else CURRENT if owner == item.key else STALE
            state = found
        else:
            state = MISSING
        states[item.key] = state
    return states


def select(items: list[Item], rows: dict[str, ItemRow], open_batches: set[str], *,
           retry_failed: bool, outputs: dict[str, str] | None = None) -> Selection:
    """Which items a run does, in input order: everything whose output is not there for its current key,
    except items waiting in an open batch and (without ``retry_failed``) items that failed permanently.
    ``outputs``: each key's output state (:func:`output_states`); without it, "done" is taken at its word
    when a file output exists."""
    pick = Selection()
    for item in items:
        row = rows.get(item.key)
        state = row.state if row is not None else "pending"
        out = outputs.get(item.key, MISSING) if outputs is not None else (
            MISSING if item.output is not None and not item.output.exists() else CURRENT if state == "done"
            else MISSING)
        if state == "done":
            if out == CURRENT:
                pick.skipped_done += 1
                continue
            (pick.stale if out in (STALE, FOREIGN) else pick.missing).append(item)
            pick.todo.append(item)
        elif state == "in_flight" and row.batch in open_batches:
            pick.held += 1
        elif out == CURRENT:
            pick.adopt.append(item)
        elif state == "failed" and row.permanent and not retry_failed:
            pick.skipped_failed += 1
        else:
            if out == FOREIGN:
                pick.foreign.append(item)
            pick.redone += state == "in_flight"
            pick.todo.append(item)
    return pick


def new_run_id() -> str:
    return datetime.now(UTC).strftime("%Y%m%dT%H%M%S.%fZ") + "-" + secrets.token_hex(3)
