"""Running a job: exactly once, within its limits and budget, and saying what happened.

A run takes the job's lock (a second run exits at once), scans the inputs, registers new items in the
journal, and works through those not done with ``concurrency`` workers sharing one rate gate, one budget
and the response cache. Each item is marked in flight before it is sent and done only after its output
is durably written. The run stops scheduling when the budget is reached or the server refuses the
credentials; what is left stays pending for the next run. The library never prints: it logs to
``aigc.batch``, reports progress through a callback, and returns a :class:`RunReport`.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
import os
import time
from collections import deque
from collections.abc import Callable
from typing import Any

from ..budget import Budget
from ..errors import (
    AigcError,
    AuthenticationFailed,
    BudgetExceeded,
    ConfigError,
    InputError,
    ModelNotFound,
    PermissionDenied,
    QuotaExhausted,
    TransientError,
)
from .inputs import Item, KeyMaker, _Changed, scan
from .job import Job
from .journal import ItemRow, Journal, now
from .outputs import JsonlOutput, remove_leftovers, write_file
from .plan import close_client, key_maker, new_run_id, open_client, select, task_spec
from .report import Failure, Progress, RunReport, exit_code_for

__all__ = ["Runner", "JobLocked"]

log = logging.getLogger("aigc.batch")

# Errors that say the whole run cannot work (the credentials, the model): stop rather than fail every item.
_FATAL = (AuthenticationFailed, PermissionDenied, ModelNotFound, ConfigError)


class JobLocked(AigcError):
    """Another run of the same job holds its lock."""


class Runner:
    """One run of one job. ``await Runner(job).run()`` returns the report; it never raises for item
    failures, only for a bad configuration (ConfigError) or a held lock (JobLocked)."""

    def __init__(self, job: Job, *, retry_failed: bool = False, use_cache: bool = True, via: str = "direct",
                 progress: Callable[[Progress], None] | None = None) -> None:
        if via not in ("direct", "batch-api"):
            raise ConfigError(f"--via must be direct or batch-api, not {via!r}")
        self.job = job
        self.retry_failed = retry_failed
        self.use_cache = use_cache
        self.via = via
        self.progress = progress
        self.budget = Budget(max_tokens=job.spec.budget.max_tokens, max_cost_usd=job.spec.budget.max_cost_usd)
        self.stop: tuple[str, str] | None = None  # (outcome, reason) once the run must stop scheduling
        self.started = time.perf_counter()
        self.report: RunReport
        self.journal: Journal
        self.jsonl: JsonlOutput | None = None
        self.items: list[Item] = []
        self.todo_count = 0
        self.finished_count = 0
        self._counts = {"done": 0, "failed": 0}
        self.extra_tokens, self.extra_usd, self.extra_unpriced = 0, 0.0, 0

    # -- setup ------------------------------------------------------------------------------------------
    def _client(self):
        client = open_client(self.job, use_cache=self.use_cache, budget=self.budget)
        try:
            return self._configure(client)
        except BaseException:
            close_client(client)
            raise

    def _configure(self, client):
        if self.job.spec.budget.max_cost_usd is not None and client.engine.price(client.model, 1, 1) is None:
            raise ConfigError(f"{self.job.path}: [budget] max_cost_usd is set but the price of {client.model} "
                              "is unknown; add it to a models_file or cap max_tokens instead")
        if self.via == "batch-api" and client.backend.name != "openai":
            raise ConfigError(f"--via batch-api needs the openai backend (the job uses {client.backend.name!r})")
        if self.job.spec.limits.rpm or self.job.spec.limits.tpm:
            from .limiter import RateGate

            client.engine.gate = RateGate(self.job.spec.limits.rpm, self.job.spec.limits.tpm)
            # Every retry passes the gate too, so it cannot flood the server: the first one may come
            # sooner than the default backoff, which keeps a late failure from stretching the run's end.
            client.engine.policy = dataclasses.replace(client.engine.policy, initial_backoff=0.25, jitter=0.25)
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
        try:
            keys = key_maker(self.job, client)
            lock = self._lock()
            try:
                return await self._run(client, keys)
            finally:
                lock.release()
        finally:
            if self.jsonl is not None:
                self.jsonl.close()
            await client.aclose()
            if client.engine.cache is not None:
                client.engine.cache.close()

    async def _run(self, client, keys: KeyMaker) -> RunReport:
        job = self.job
        self.client = client
        self.run_id = new_run_id()
        self.report = RunReport(job=job.name, job_file=str(job.path), run_id=self.run_id, mode=self.via,
                                started=now())
        self.journal = Journal(job.journal_path)
        try:
            self.journal.begin_run(self.run_id, self.via, os.getpid())
            self.items = scan(job, keys)
            self.journal.register((i.key, i.id) for i in self.items)
            rows = self.journal.rows(i.key for i in self.items)
            if job.output_jsonl is not None:
                self.jsonl = JsonlOutput(job.output_jsonl)
                rows = self._recover_jsonl(rows)
            elif job.output_dir is not None and remove_leftovers(job.output_dir):
                log.info("removed temporary files left in %s by an interrupted run", job.output_dir)
            open_batches = {b.submission for b in self.journal.open_batches()}
            pick = select(self.items, rows, open_batches, retry_failed=self.retry_failed)
            todo = pick.todo
            self.report.skipped_done = pick.skipped_done
            self.report.redone_after_crash = pick.redone
            self.report.warnings += [f"{i.id}: its output {i.output} is missing; redoing it" for i in pick.missing]
            if pick.held and self.via == "direct":
                self.report.warnings.append(f"{pick.held} items are in an open Batch API batch; "
                                            "run with --via batch-api to collect them")
            if pick.redone:
                log.info("%d items were in flight when an earlier run stopped; redoing them (the response "
                         "cache answers those whose reply had arrived)", pick.redone)
            self.todo_count = len(todo)
            log.info("job %s: %d items, %d to do", job.name, len(self.items), len(todo))
            self.tick()
            if self.via == "batch-api":
                from .batchapi import BatchApiRun

                await BatchApiRun(self).run(todo)
            else:
                await self.direct(todo)
            return self._finish()
        finally:
            self.journal.close()

    def _recover_jsonl(self, rows: dict[str, ItemRow]) -> dict[str, ItemRow]:
        """Make the JSONL output hold exactly one line per done item (after a crash between the journal
        commit and the append, or a torn append). Done items with no line and no text in the journal
        (the output was moved) are done again. Returns the rows as they now stand."""
        assert self.jsonl is not None
        if self.jsonl.recover():
            self.report.warnings.append(f"{self.jsonl.path}: removed a torn last line left by an interrupted run")
        restored, redo = 0, []
        for item in self.items:
            row = rows[item.key]
            if row.state != "done" or item.key in self.jsonl.keys:
                continue
            if row.text is not None:
                self.jsonl.append(_line(item, row.text, prompt_tokens=row.prompt_tokens,
                                        completion_tokens=row.completion_tokens, cost_usd=row.cost_usd,
                                        cached=row.cached))
                restored += 1
            else:
                self.journal.release(item.key)
                redo.append(item.key)
        if restored:
            log.info("%s: restored %d lines whose items were done when a run stopped", self.jsonl.path, restored)
        if redo:
            self.report.warnings.append(f"{len(redo)} done items have no line in {self.jsonl.path}; redoing them")
            rows = {**rows, **self.journal.rows(redo)}
        return rows

    # -- direct mode ------------------------------------------------------------------------------------
    async def direct(self, todo: list[Item]) -> None:
        queue = deque(todo)

        async def worker() -> None:
            while queue and self.stop is None:
                await self.one(queue.popleft())

        workers = min(self.job.spec.limits.concurrency, len(todo))
        async with asyncio.TaskGroup() as group:
            for _ in range(workers):
                group.create_task(worker())

    async def one(self, item: Item) -> None:
        """Do one item: send, write its output, record it."""
        key = item.key
        if item.error is not None:
            self.fail(item, InputError(item.error))
            return
        self.journal.start(key, self.run_id)
        try:
            spec = task_spec(self.job, item.variables(self.job))
            flow = self.client.flow(self.job.task, spec[0], spec[1], spec[3], spec[2])
            result = await self.client.engine.arun(flow, self.job.task)
        except _Changed as e:
            self.journal.release(key)
            self.report.warnings.append(str(e))
            self._settled(None)
            return
        except BudgetExceeded as e:
            self.journal.release(key)
            self.halt("budget", f"budget reached: {e}")
            return
        except QuotaExhausted as e:
            self.journal.release(key)
            self.halt("failed", str(e))
            return
        except _FATAL as e:
            self.journal.release(key)
            self.halt("config", str(e))
            return
        except AigcError as e:
            self.report.requests += getattr(e, "attempts", 0) or 0
            self.fail(item, e)
            return
        cached = result.usage.total_tokens == 0 and "served from the response cache" in result.warnings
        self.report.requests += result.attempts
        if result.truncated:
            self.report.warnings.append(f"{item.id}: the output was cut at the token limit; "
                                        "raise [model] max_output_tokens")
        await self.deliver(item, result.text, prompt_tokens=result.usage.prompt_tokens,
                           completion_tokens=result.usage.completion_tokens, cost_usd=result.cost_usd,
                           cached=cached, model=result.model, finish_reason=result.finish_reason,
                           latency_s=result.latency_s)

    async def deliver(self, item: Item, text: str, *, prompt_tokens: int, completion_tokens: int,
                      cost_usd: float | None, cached: bool, model: str | None = None,
                      finish_reason: str | None = None, latency_s: float | None = None) -> None:
        """Put an item's output in place durably, then mark it done (JSONL: done first, then append)."""
        if item.output is not None:
            body = text if text.endswith("\n") else text + "\n"
            await asyncio.to_thread(write_file, item.output, body)
        self.journal.done(item.key, run_id=self.run_id, output=str(item.output or self.job.output_jsonl),
                          text=text if self.jsonl is not None else None, prompt_tokens=prompt_tokens,
                          completion_tokens=completion_tokens, cost_usd=cost_usd, cached=cached)
        if self.jsonl is not None:
            await asyncio.to_thread(self.jsonl.append, _line(
                item, text, model=model, finish_reason=finish_reason, prompt_tokens=prompt_tokens,
                completion_tokens=completion_tokens, cost_usd=cost_usd, latency_s=latency_s, cached=cached))
        self.report.prompt_tokens += prompt_tokens
        self.report.completion_tokens += completion_tokens
        self.report.done_this_run += 1
        self.report.cached += cached
        self._settled("done")

    def fail(self, item: Item, error: AigcError) -> None:
        permanent = not isinstance(error, TransientError)
        self.journal.fail(item.key, run_id=self.run_id, error=str(error), error_type=type(error).__name__,
                          permanent=permanent)
        self.report.failed_this_run += 1
        log.info("%s failed: %s", item.id, error)
        self._settled("failed")

    def charge(self, tokens: int, cost_usd: float | None) -> None:
        """Spend not reserved from this run's budget (a batch submitted by an earlier run)."""
        self.extra_tokens += tokens
        if cost_usd is None:
            self.extra_unpriced += 1
        else:
            self.extra_usd += cost_usd

    def spent(self) -> tuple[float, int]:
        """(USD, tokens) billed in this run."""
        return self.budget.spent_usd + self.extra_usd, self.budget.spent_tokens + self.extra_tokens

    def halt(self, outcome: str, reason: str) -> None:
        if self.stop is None:
            self.stop = (outcome, reason)
            log.info("stopping: %s", reason)
        self._settled(None)

    def _settled(self, state: str | None) -> None:
        if state is not None:
            self.finished_count += 1
            self._counts[state] += 1
        self.tick()

    def tick(self, note: str = "") -> None:
        if self.progress is None:
            return
        rows_done = self.report.skipped_done + self._counts["done"]
        self.progress(Progress(
            total=len(self.items), done=rows_done, failed=self._counts["failed"],
            pending=len(self.items) - rows_done - self._counts["failed"], todo=self.todo_count,
            finished=self.finished_count, cost_usd=self.spent()[0], tokens=self.spent()[1],
            elapsed_s=time.perf_counter() - self.started, note=note))

    # -- the end ----------------------------------------------------------------------------------------
    def _finish(self) -> RunReport:
        r = self.report
        rows = self.journal.rows(i.key for i in self.items)
        r.total = len(self.items)
        r.failures = []
        for item in self.items:
            row = rows[item.key]
            if row.state == "done":
                r.done += 1
            elif row.state == "failed":
                r.failed += 1
                r.failures.append(Failure(id=item.id, reason=row.error or "", error=row.error_type or "",
                                          permanent=row.permanent, this_run=row.run_id == self.run_id))
            else:
                r.pending += 1
        if self.stop is not None:
            r.stopped = self.stop[1]
        r.exit_code, r.outcome = exit_code_for(
            config_error=self.stop is not None and self.stop[0] == "config",
            budget=self.stop is not None and self.stop[0] == "budget",
            failed=r.failed + r.pending)  # anything not done (a stopped run, a file changed mid-run)
        spent_usd, spent_tokens = self.spent()
        r.cost_usd = None if self.budget.unpriced_requests + self.extra_unpriced else round(spent_usd, 8)
        r.budget = {"max_cost_usd": self.budget.max_cost_usd, "max_tokens": self.budget.max_tokens,
                    "spent_usd": round(self.budget.spent_usd, 8), "spent_tokens": self.budget.spent_tokens}
        gate = self.client.engine.gate
        if gate is not None:
            r.rate = {"rpm": gate.rpm, "tpm": gate.tpm, "waited_s": round(gate.waited_s, 3),
                      "rate_limited": gate.penalties, "refunded": gate.refunds}
        r.finished = now()
        r.duration_s = round(time.perf_counter() - self.started, 3)
        path = r.write(self.job.reports_dir)
        self.journal.end_run(self.run_id, exit_code=r.exit_code, outcome=r.outcome, done=r.done, failed=r.failed,
                             pending=r.pending, tokens=spent_tokens, cost_usd=r.cost_usd,
                             report=str(path))
        log.info("job %s: %d done, %d failed, %d pending", self.job.name, r.done, r.failed, r.pending)
        return r


def _line(item: Item, text: str, **meta: Any) -> dict[str, Any]:
    """One JSONL output line: id, key, text, then what is known of how it was made (model,
    finish_reason, prompt_tokens, completion_tokens, cost_usd, latency_s, cached)."""
    return {"id": item.id, "key": item.key, "text": text, **{k: v for k, v in meta.items() if v is not None}}
