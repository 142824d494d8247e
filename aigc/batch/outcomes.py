"""What becomes of items, in one place for every way of running them: delivered (the output durably in
place, then the journal says done), failed (with a reason, and whether retrying could help), left pending
when the run halts, what was spent, and the progress the operator sees.

An output that cannot be written (a full disk, a folder made read-only mid-run) fails its item with the
reason; the answer stays in the response cache, so the next run writes it at no cost.

Both strategies (:mod:`.direct` and :mod:`.batchapi`) report through one :class:`Outcomes`, so a job
behaves the same whichever way its requests go.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from typing import Any

from ..budget import Budget
from ..errors import (
    AigcError,
    AuthenticationFailed,
    BudgetExceeded,
    ConfigError,
    ModelNotFound,
    OutputError,
    PermissionDenied,
    QuotaExhausted,
    TransientError,
)
from ..types import Result
from .inputs import Item, _Changed
from .job import Job
from .journal import Journal
from .outputs import JsonlOutput, write_file
from .records import OutputRecords, digest
from .report import Progress, RunReport

__all__ = ["Outcomes", "FATAL", "output_line"]

log = logging.getLogger("aigc.batch")

# Errors that say the whole run cannot work (the credentials, the model): stop rather than fail every item.
FATAL = (AuthenticationFailed, PermissionDenied, ModelNotFound, ConfigError)


def output_line(item: Item, result: Result) -> dict[str, Any]:
    """An item's line in a JSONL output: its text (and parsed output, e.g. a classification's label and
    confidence) and what producing it took."""
    line = {"id": item.id, "key": item.key, "text": result.text, "model": result.model,
            "finish_reason": result.finish_reason, "prompt_tokens": result.usage.prompt_tokens,
            "completion_tokens": result.usage.completion_tokens, "cost_usd": result.cost_usd,
            "latency_s": result.latency_s, "cached": "served from the response cache" in result.warnings}
    if result.parsed is not None:
        line["parsed"] = result.model_dump(mode="json", include={"parsed"})["parsed"]
    if result.failover is not None:
        line["backend"], line["failover"] = result.backend, result.failover
    return line


class Outcomes:
    """The books of one run: journal, outputs, report, budget and progress."""

    def __init__(self, job: Job, journal: Journal, report: RunReport, budget: Budget, items: list[Item], *,
                 run_id: str, jsonl: JsonlOutput | None, records: OutputRecords | None = None,
                 cache: bool = True, gate: Any = None, progress: Callable[[Progress], None] | None = None) -> None:
        self.job = job
        self.journal = journal
        self.report = report
        self.budget = budget
        self.items = items
        self.by_key = {item.key: item for item in items}
        self.run_id = run_id
        self.jsonl = jsonl
        self.records = records
        self.cache = cache
        self.progress = progress
        self.gate = gate  # the run's rate gate, for the pace and what limits it
        self.stop: tuple[str, str] | None = None  # (outcome, reason) once the run must stop scheduling
        self.stopping = asyncio.Event()  # set with ``stop``: waits (a Batch API poll) end early
        self.inflight: set[asyncio.Task] = set()  # requests being sent now (cancelled if a signal insists)
        self.started = time.perf_counter()
        self.todo_count = 0
        self.finished = 0
        self._counts = {"done": 0, "failed": 0}
        self.extra_tokens, self.extra_usd, self.extra_unpriced = 0, 0.0, 0
        self.truncated = 0

    # -- the outcomes ---------------------------------------------------------------------------------
    def _write(self, item: Item, text: str) -> None:
        """The item's file: its record first (so a crash can never leave a file that seems current), then
        the file itself, whole or not at all."""
        assert item.output is not None
        data = (text if text.endswith("\n") else text + "\n").encode("utf-8")
        if self.records is not None:
            self.records.add(item.output, item.key, digest(data))
        write_file(item.output, data, owner=self.job.id)

    async def deliver(self, item: Item, result: Result) -> None:
        """Put an item's output in place durably, then mark it done (JSONL: done first, then append)."""
        cached = "served from the response cache" in result.warnings
        text = result.text
        if result.truncated:
            self.truncated += 1
        target = item.output or self.job.output_jsonl
        try:
            if item.output is not None:
                await asyncio.to_thread(self._write, item, text)
            self.journal.done(item.key, run_id=self.run_id, output=str(target),
                              text=text if self.jsonl is not None else None,
                              prompt_tokens=result.usage.prompt_tokens,
                              completion_tokens=result.usage.completion_tokens, cost_usd=result.cost_usd,
                              cached=cached)
            if self.jsonl is not None:
                await asyncio.to_thread(self.jsonl.append, output_line(item, result))
        except (OSError, OutputError) as e:
            reason = e.message if isinstance(e, OutputError) else f"cannot write {target} ({e.strerror or e})"
            kept = "; its answer is in the response cache: the next run writes it at no cost" if self.cache else ""
            self.fail(item, OutputError(reason + kept, path=str(target)))
            return
        self.report.prompt_tokens += result.usage.prompt_tokens
        self.report.completion_tokens += result.usage.completion_tokens
        self.report.done_this_run += 1
        self.report.cached += cached
        self._settled("done")

    def fail(self, item: Item, error: AigcError) -> None:
        permanent = not isinstance(error, TransientError | OutputError)  # a rerun may well succeed
        self.journal.fail(item.key, run_id=self.run_id, error=str(error), error_type=type(error).__name__,
                          permanent=permanent)
        self.report.failed_this_run += 1
        log.info("%s failed: %s", item.id, error)
        self._settled("failed")

    def halt(self, outcome: str, reason: str) -> None:
        """Stop scheduling: ``budget``, ``config``, ``failed`` or ``interrupted``; what is left stays pending."""
        if self.stop is None:
            self.stop = (outcome, reason)
            self.stopping.set()
            log.info("stopping: %s", reason)
        self._settled(None)

    def cancel_inflight(self) -> None:
        """Give up on the requests being sent now (a signal said not to wait); their items go back to pending."""
        for task in list(self.inflight):
            task.cancel()

    def error(self, item: Item, e: AigcError) -> None:
        """An item's call ended with ``e``: fail it, leave it pending, or halt the run, as ``e`` says."""
        if isinstance(e, _Changed):
            self.journal.release(item.key)
            self.report.warnings.append(str(e))
            self._settled(None)
        elif isinstance(e, BudgetExceeded):
            self.journal.release(item.key)
            self.halt("budget", f"budget reached: {e}")
        elif isinstance(e, QuotaExhausted):
            self.journal.release(item.key)
            self.halt("failed", str(e))
        elif isinstance(e, FATAL):
            self.journal.release(item.key)
            self.halt("config", str(e))
        else:
            self.report.requests += getattr(e, "attempts", 0) or 0
            self.fail(item, e)

    # -- money ----------------------------------------------------------------------------------------
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

    # -- progress -------------------------------------------------------------------------------------
    def _settled(self, state: str | None) -> None:
        if state is not None:
            self.finished += 1
            self._counts[state] += 1
        self.tick()

    def tick(self, note: str = "") -> None:
        if self.progress is None:
            return
        rows_done = self.report.skipped_done + self._counts["done"]
        usd, tokens = self.spent()
        elapsed = time.perf_counter() - self.started
        pace = self.gate.pace() if self.gate is not None and self.gate.active else {}
        left = self.todo_count - self.finished
        eta = round(left * elapsed / self.finished, 1) if self.finished and left > 0 else (0.0 if not left else None)
        self.progress(Progress(
            total=len(self.items), done=rows_done, failed=self._counts["failed"],
            pending=len(self.items) - rows_done - self._counts["failed"], todo=self.todo_count,
            finished=self.finished, cost_usd=usd, tokens=tokens, elapsed_s=elapsed, note=note,
            pace_rpm=pace.get("rpm"), pace_tpm=pace.get("tpm"), limited_by=pace.get("limited_by"), eta_s=eta))
