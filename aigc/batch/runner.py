"""Running a job: exactly once, within its limits and budget, and saying what happened.

A run takes the job's lock (a second run exits at once), scans the inputs, registers new items in the
journal, and works through those not done with ``concurrency`` workers sharing one rate gate, one budget
and the response cache. Each item is marked in flight before it is sent and done only after its output
is durably written. The run stops scheduling when the budget is reached or the server refuses the
credentials; what is left stays pending for the next run. The library never prints: it logs to
``aigc.batch``, reports progress through a callback, and returns a :class:`RunReport`.
"""

from __future__ import annotations

import contextlib
import logging
import os
import time
from collections.abc import Callable

from ..budget import Budget
from ..errors import AigcError, ConfigError
from .batchapi import BatchApiMode
from .direct import DirectMode
from .inputs import Item, KeyMaker, scan
from .job import Job
from .journal import ItemRow, Journal, now
from .outcomes import Outcomes, output_line
from .outputs import JsonlOutput, remove_leftovers
from .plan import key_maker, new_run_id, open_client, select
from .report import Failure, Progress, RunReport, exit_code_for

__all__ = ["Runner", "JobLocked", "MODES"]

log = logging.getLogger("aigc.batch")

# The ways a run can send its requests: each takes the client and the run's outcomes, and runs items.
MODES = {DirectMode.name: DirectMode, BatchApiMode.name: BatchApiMode}


class JobLocked(AigcError):
    """Another run of the same job holds its lock."""


class Runner:
    """One run of one job. ``await Runner(job).run()`` returns the report; it never raises for item
    failures, only for a bad configuration (ConfigError) or a held lock (JobLocked)."""

    def __init__(self, job: Job, *, retry_failed: bool = False, use_cache: bool = True, via: str = "direct",
                 progress: Callable[[Progress], None] | None = None) -> None:
        if via not in MODES:
            raise ConfigError(f"--via must be one of {', '.join(MODES)}, not {via!r}")
        self.job = job
        self.retry_failed = retry_failed
        self.use_cache = use_cache
        self.via = via
        self.progress = progress
        self.budget = Budget(max_total_tokens=job.spec.budget.max_total_tokens, max_cost_usd=job.spec.budget.max_cost_usd)
        self.outcomes: Outcomes | None = None

    # -- setup ------------------------------------------------------------------------------------------
    def _client(self):
        client = open_client(self.job, use_cache=self.use_cache, budget=self.budget)
        try:
            if self.job.spec.budget.max_cost_usd is not None and client.engine.price(client.model, 1, 1) is None:
                raise ConfigError(f"{self.job.path}: [budget] max_cost_usd is set but the price of {client.model} "
                                  "is unknown; add it to a models_file or cap max_output_tokens instead")
            if self.via == "batch-api" and client.backend.batch_api() is None:
                raise ConfigError(f"--via batch-api needs a backend with a Batch API such as openai (the job "
                                  f"uses {client.backend.name!r})")
        except BaseException:
            client.close()
            raise
        return client

    def _lock(self):
        from filelock import FileLock, Timeout

        self.job.state_dir.mkdir(parents=True, exist_ok=True)
        lock = FileLock(self.job.lock_path, blocking=False)
        try:
            lock.acquire()
        except Timeout:
            holder = ""
            with contextlib.suppress(OSError):
                holder = " (" + (self.job.state_dir / "run.pid").read_text().strip() + ")"
            raise JobLocked(f"another run of job {self.job.name!r} is in progress{holder}; "
                            "this one exits without doing anything") from None
        (self.job.state_dir / "run.pid").write_text(f"pid {os.getpid()}, started {now()}\n")
        return lock

    # -- the run ----------------------------------------------------------------------------------------
    async def run(self) -> RunReport:
        client = self._client()
        jsonl: list[JsonlOutput] = []
        try:
            keys = key_maker(self.job, client)
            lock = self._lock()
            try:
                return await self._run(client, keys, jsonl)
            finally:
                lock.release()
        finally:
            for output in jsonl:
                output.close()
            await client.aclose()

    async def _run(self, client, keys: KeyMaker, opened: list[JsonlOutput]) -> RunReport:
        job = self.job
        run_id = new_run_id()
        report = RunReport(job=job.name, job_file=str(job.path), run_id=run_id, mode=self.via, started=now())
        journal = Journal(job.journal_path)
        try:
            journal.begin_run(run_id, self.via, os.getpid())
            items = scan(job, keys)
            journal.register((i.key, i.id) for i in items)
            rows = journal.rows(i.key for i in items)
            jsonl = JsonlOutput(job.output_jsonl) if job.output_jsonl is not None else None
            opened.extend([jsonl] if jsonl else [])
            books = self.outcomes = Outcomes(job, journal, report, self.budget, items, run_id=run_id, jsonl=jsonl,
                                             gate=client.accounting.gate, progress=self.progress)
            if jsonl is not None:
                rows = self._recover_jsonl(books, rows)
            elif job.output_dir is not None and remove_leftovers(job.output_dir):
                log.info("removed temporary files left in %s by an interrupted run", job.output_dir)
            open_batches = {b.submission for b in journal.open_batches()}
            pick = select(items, rows, open_batches, retry_failed=self.retry_failed)
            report.skipped_done = pick.skipped_done
            report.redone_after_crash = pick.redone
            report.warnings += [f"{i.id}: its output {i.output} is missing; redoing it" for i in pick.missing]
            if pick.held and self.via == "direct":
                report.warnings.append(f"{pick.held} items are in an open Batch API batch; "
                                       "run with --via batch-api to collect them")
            if pick.redone:
                log.info("%d items were in flight when an earlier run stopped; redoing them (the response "
                         "cache answers those whose reply had arrived)", pick.redone)
            books.todo_count = len(pick.todo)
            log.info("job %s: %d items, %d to do", job.name, len(items), len(pick.todo))
            books.tick()
            await MODES[self.via](client, books).run(pick.todo)
            return self._finish(client, books)
        finally:
            journal.close()

    def _recover_jsonl(self, books: Outcomes, rows: dict[str, ItemRow]) -> dict[str, ItemRow]:
        """Make the JSONL output hold exactly one line per done item (after a crash between the journal
        commit and the append, or a torn append). Done items with no line and no text in the journal
        (the output was moved) are done again. Returns the rows as they now stand."""
        jsonl, journal = books.jsonl, books.journal
        assert jsonl is not None
        if jsonl.recover():
            books.report.warnings.append(f"{jsonl.path}: removed a torn last line left by an interrupted run")
        restored, redo = 0, []
        for item in books.items:
            row = rows[item.key]
            if row.state != "done" or item.key in jsonl.keys:
                continue
            if row.text is not None:
                jsonl.append({**output_line(item, _restored(item, row)), "restored": True})
                restored += 1
            else:
                journal.release(item.key)
                redo.append(item.key)
        if restored:
            log.info("%s: restored %d lines whose items were done when a run stopped", jsonl.path, restored)
        if redo:
            books.report.warnings.append(f"{len(redo)} done items have no line in {jsonl.path}; redoing them")
            rows = {**rows, **journal.rows(redo)}
        return rows

    # -- the end ----------------------------------------------------------------------------------------
    def _finish(self, client, books: Outcomes) -> RunReport:
        r = books.report
        rows = books.journal.rows(i.key for i in books.items)
        r.total = len(books.items)
        r.failures = []
        for item in books.items:
            row = rows[item.key]
            if row.state == "done":
                r.done += 1
            elif row.state == "failed":
                r.failed += 1
                r.failures.append(Failure(id=item.id, reason=row.error or "", error=row.error_type or "",
                                          permanent=row.permanent, this_run=row.run_id == books.run_id))
            else:
                r.pending += 1
        if books.truncated:
            r.warnings.append(f"{books.truncated} output(s) were cut at the output token limit; raise [model] "
                              "max_output_tokens")
        stop = books.stop
        if stop is not None:
            r.stopped = stop[1]
        r.exit_code, r.outcome = exit_code_for(
            config_error=stop is not None and stop[0] == "config",
            budget=stop is not None and stop[0] == "budget",
            failed=r.failed + r.pending)  # anything not done (a stopped run, a file changed mid-run)
        spent_usd, spent_tokens = books.spent()
        r.cost_usd = None if self.budget.unpriced_requests + books.extra_unpriced else round(spent_usd, 8)
        r.budget = {"max_cost_usd": self.budget.max_cost_usd, "max_tokens": self.budget.max_total_tokens,
                    "spent_usd": round(self.budget.spent_usd, 8), "spent_tokens": self.budget.spent_tokens}
        gate = client.accounting.gate
        if gate is not None and gate.active:
            r.rate = gate.stats()
        r.finished = now()
        r.duration_s = round(time.perf_counter() - books.started, 3)
        path = r.write(self.job.reports_dir)
        books.journal.end_run(books.run_id, exit_code=r.exit_code, outcome=r.outcome, done=r.done,
                              failed=r.failed, pending=r.pending, tokens=spent_tokens, cost_usd=r.cost_usd,
                              report=str(path))
        log.info("job %s: %d done, %d failed, %d pending", self.job.name, r.done, r.failed, r.pending)
        return r


def _restored(item: Item, row: ItemRow):
    """A done item's Result as its journal row remembers it (for a JSONL line lost to a crash)."""
    from ..types import Result, Usage

    return Result(text=row.text or "", task="", model="", backend="",
                  usage=Usage(prompt_tokens=row.prompt_tokens, completion_tokens=row.completion_tokens),
                  cost_usd=row.cost_usd, warnings=["served from the response cache"] if row.cached else [])
