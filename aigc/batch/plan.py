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

__all__ = ["open_client", "close_client", "task_spec", "key_maker", "Selection", "select", "new_run_id"]


def open_client(job: Job, *, use_cache: bool = True, budget: Budget | None = None):
    """The AsyncClient a job runs with: its backend and model settings, one budget, the shared cache."""
    from ..client import AsyncClient

    m = job.spec.model
    client = AsyncClient(
        backend=m.backend, model=m.model, base_url=m.base_url, temperature=m.temperature,
        max_tokens=m.max_output_tokens, timeout=m.timeout, deadline=m.deadline, max_attempts=m.max_attempts,
        templates_dir=job.templates_dir, budget=budget or Budget(allow_unknown_prices=True),
        # One request at a time per item: with `concurrency` items in flight, at most `concurrency`
        # requests are ever in flight, which bounds what a crash can make us pay twice.
        concurrency=1,
    )
    client.engine.job = job.name
    if use_cache:
        from ..cache import ResponseCache

        client.engine.cache = ResponseCache.in_dir(client.settings.data_dir)
    return client


def close_client(client) -> None:
    """Release what :func:`open_client` opened (sync clients only; runs use :meth:`Runner.run`)."""
    client.backend.close()
    for part in (client.engine.ledger, client.engine.cache):
        if part is not None:
            part.close()


def task_spec(job: Job, variables: dict[str, Any]) -> tuple:
    """(template name, variables, long-input variable, options) for one item, as the client plans a call."""
    from ..client import TASK_SPECS

    if job.template is not None:
        spec = TASK_SPECS["generate"](job.template, variables)
    else:
        try:
            spec = TASK_SPECS[job.task](**variables)
        except TypeError as e:
            raise InputError(f"cannot {job.task} this item: {e}") from None
    seed = job.spec.model.seed
    return spec if seed is None else (*spec[:3], {**spec[3], "seed": seed})


def key_maker(job: Job, client) -> KeyMaker:
    """Keys for this job's items with this client's backend, model and template."""
    name = job.template or task_spec(job, {v: "x" for v in job.required_vars})[0]
    try:
        source = client.templates.source(name)
    except TemplateError as e:
        raise ConfigError(f"{job.path}: {e}") from None
    s = client.settings
    return KeyMaker(job, template_name=name, template_source=source, backend=client.backend.name,
                    model=client.model, temperature=s.temperature, max_output_tokens=s.max_tokens,
                    seed=job.spec.model.seed)


@dataclass
class Selection:
    todo: list[Item] = field(default_factory=list)
    skipped_done: int = 0
    redone: int = 0  # left in flight by a run that died
    held: int = 0  # in an open Batch API batch
    skipped_failed: int = 0  # failed permanently before (without --retry-failed)
    missing: list[Item] = field(default_factory=list)  # done, but the output file is gone


def select(items: list[Item], rows: dict[str, ItemRow], open_batches: set[str], *,
           retry_failed: bool) -> Selection:
    """Which items a run does, in input order: everything not done, except items waiting in an open
    batch and (without ``retry_failed``) items that failed permanently."""
    pick = Selection()
    for item in items:
        row = rows.get(item.key)
        state = row.state if row is not None else "pending"
        if state == "done":
            if item.output is not None and not item.output.exists():
                pick.missing.append(item)
                pick.todo.append(item)
            else:
                pick.skipped_done += 1
        elif state == "in_flight" and row.batch in open_batches:
            pick.held += 1
        elif state == "failed" and row.permanent and not retry_failed:
            pick.skipped_failed += 1
        else:
            pick.redone += state == "in_flight"
            pick.todo.append(item)
    return pick


def new_run_id() -> str:
    return datetime.now(UTC).strftime("%Y%m%dT%H%M%S.%fZ") + "-" + secrets.token_hex(3)
