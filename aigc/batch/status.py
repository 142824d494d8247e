"""Read-only views of a job: where it stands (``aigc batch status``) and what a run would do (``--dry-run``).

Neither takes the job's lock or writes anything, so both are safe while a run is going on.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from typing import Any

from ..errors import AigcError, ConfigError
from .inputs import Item, scan
from .job import Job
from .journal import BatchRow, ItemRow, Journal, RunRow
from .outputs import JsonlOutput
from .plan import close_client, key_maker, open_client, output_states, record_options, select
from .records import CURRENT, OutputRecords

__all__ = ["JobStatus", "Plan", "job_status", "plan_job"]


def _journal_rows(job: Job, items: list[Item]) -> tuple[dict[str, ItemRow], list[BatchRow], Journal | None]:
    if not job.journal_path.exists():
        return {}, [], None
    journal = Journal(job.journal_path, outputs_record=job.records_path.name)
    return journal.rows(i.key for i in items), journal.open_batches(), journal


def _outputs(job: Job, items: list[Item], rows: dict[str, ItemRow], journal: Journal | None) -> dict[str, str]:
    """Each item's output state, looked at without changing anything (see :func:`.plan.output_states`)."""
    records = jsonl = None
    if job.output_jsonl is not None:
        jsonl = JsonlOutput(job.output_jsonl)
        jsonl.recover(repair=False)
    else:
        records = OutputRecords(job.records_path, job.dir)
        records.load(repair=False)
    return output_states(job, items, rows, records, jsonl, journal.legacy_outputs() if journal else {})


@dataclass
class JobStatus:
    job: str
    job_file: str
    total: int = 0
    done: int = 0
    failed: int = 0
    failed_permanent: int = 0
    pending: int = 0
    in_flight: int = 0  # left in flight by a run that died (redone next run), or in an open batch
    runs: int = 0
    spent_usd: float = 0.0  # from the usage ledger (every request, killed runs' too), else finished runs
    spent_tokens: int = 0
    cost_complete: bool = True
    last_run: dict[str, Any] | None = None
    running: bool = False  # the last run has not finished and its process is alive
    open_batches: list[str] = field(default_factory=list)
    failures: list[dict[str, Any]] = field(default_factory=list)


def _alive(pid: int | None) -> bool:
    if not pid:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def job_status(job: Job) -> JobStatus:
    """Counts over the job's items as its inputs stand now, spend over all runs, and the last run."""
    client = open_client(job, use_cache=False)
    try:
        items = scan(job, key_maker(job, client))
        ledger = client.accounting.ledger
        ledger = ledger.report(job=job.name)[0] if ledger is not None else None
    finally:
        close_client(client)
    status = JobStatus(job=job.name, job_file=str(job.path), total=len(items))
    rows, batches, journal = _journal_rows(job, items)
    try:
        outputs = _outputs(job, items, rows, journal)
    except BaseException:
        if journal is not None:
            journal.close()
        raise
    for item in items:
        row = rows.get(item.key)
        state = row.state if row is not None else "pending"
        current = outputs.get(item.key) == CURRENT
        if state == "done" and not current:
            state = "pending"  # its output is gone or is another key's: the next run does it again
        elif state != "done" and current and not (state == "in_flight" and row.batch):
            state = "done"  # its output is there for this key: the next run adopts it
        if state == "done":
            status.done += 1
        elif state == "failed":
            status.failed += 1
            status.failed_permanent += row.permanent
            status.failures.append({"id": item.id, "reason": row.error, "error": row.error_type,
                                    "permanent": row.permanent, "when": row.updated})
        elif state == "in_flight":
            status.in_flight += 1
        else:
            status.pending += 1
    if journal is not None:
        try:
            status.runs, status.spent_tokens, status.spent_usd, unknown = journal.totals()
            status.cost_complete = unknown == 0
            if ledger is not None and ledger.requests:
                # The usage ledger also counts what runs that were killed had spent.
                status.spent_tokens, status.spent_usd = ledger.total_tokens, ledger.cost_usd
                status.cost_complete = ledger.unpriced_requests <= ledger.failures  # failed ones cost nothing
            last: RunRow | None = journal.last_run()
            if last is not None:
                status.last_run = vars(last)
                status.running = last.finished is None and _alive(last.pid)
            status.open_batches = [b.batch_id or b.submission for b in batches]
        finally:
            journal.close()
    return status


@dataclass
class Plan:
    """What ``aigc batch run`` would do now: nothing is sent to make it."""

    job: str
    via: str
    backend: str
    model: str
    total: int = 0
    done: int = 0
    todo: int = 0
    unusable: int = 0  # inputs that will be reported as failed (empty, binary, not UTF-8...)
    skipped_failed: int = 0
    held: int = 0
    requests: int = 0
    prompt_tokens: int = 0
    max_output_tokens: int = 0
    max_cost_usd: float | None = 0.0
    fits_budget: int | None = None  # items the budget covers in the worst case; None without a budget
    minutes_at_limits: float | None = None  # the least time the rpm/tpm limits allow
    problems: list[str] = field(default_factory=list)


def plan_job(job: Job, *, retry_failed: bool = False, via: str = "direct") -> Plan:
    """Estimate the next run: items to do, requests, tokens and worst-case cost (Batch API prices for
    ``via="batch-api"``)."""
    if via not in ("direct", "batch-api"):
        raise ConfigError(f"--via must be direct or batch-api, not {via!r}")
    client = open_client(job, use_cache=False)
    try:
        items = scan(job, key_maker(job, client))
        rows, batches, journal = _journal_rows(job, items)
        try:
            outputs = _outputs(job, items, rows, journal)
        finally:
            if journal is not None:
                journal.close()
        pick = select(items, rows, {b.submission for b in batches}, retry_failed=retry_failed, outputs=outputs)
        plan = Plan(job=job.name, via=via, backend=client.backend.name, model=client.model, total=len(items),
                    done=pick.skipped_done + len(pick.adopt), todo=len(pick.todo),
                    skipped_failed=pick.skipped_failed, held=pick.held)
        plan.problems += [f"{i.output} already exists and this job has no record of writing it; the run "
                          "will refuse to start until it is moved away" for i in pick.foreign[:10]]
        budget = job.spec.budget
        cost: float | None = 0.0
        tokens = 0
        over = False
        for item in pick.todo:
            if item.error is not None:
                plan.unusable += 1
                continue
            try:
                variables = item.variables(job)
                if job.template is not None:
                    estimate = client.plan("generate", job.template, variables, batch=via == "batch-api")
                else:
                    estimate = client.plan(job.task, batch=via == "batch-api", **variables,
                                           **record_options(job, item.record))
            except TypeError as e:
                plan.unusable += 1
                plan.problems.append(f"{item.id}: cannot {job.task} this item: {e}")
                continue
            except AigcError as e:
                plan.unusable += 1
                plan.problems.append(str(e))
                continue
            plan.requests += estimate.requests
            plan.prompt_tokens += estimate.prompt_tokens
            plan.max_output_tokens += estimate.max_output_tokens
            price = estimate.max_cost_usd
            cost = None if cost is None or price is None else cost + price
            tokens += estimate.prompt_tokens + estimate.max_output_tokens
            if budget.max_cost_usd is not None or budget.max_total_tokens is not None:
                plan.fits_budget = plan.fits_budget or 0
                within = (budget.max_total_tokens is None or tokens <= budget.max_total_tokens) and (
                    budget.max_cost_usd is None or (cost is not None and cost <= budget.max_cost_usd))
                if within and not over:
                    plan.fits_budget += 1
                over = over or not within
        plan.max_cost_usd = None if cost is None else round(cost, 6)
        limits = job.spec.limits
        if via == "direct" and (limits.rpm or limits.tpm):
            plan.minutes_at_limits = round(max(plan.requests / limits.rpm if limits.rpm else 0.0,
                                               tokens / limits.tpm if limits.tpm else 0.0), 2)
        return plan
    finally:
        close_client(client)
