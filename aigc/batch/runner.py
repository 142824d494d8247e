"""Running a job: exactly once, within its limits and budget, and saying what happened.

A run takes the job's lock (a second run exits at once), scans the inputs, registers new items in the
journal, checks every output against the key it was written for (:mod:`.records`), and works through
the items whose output is not there for their current key, with ``concurrency`` workers sharing one rate
gate, one budget and the response cache. Before the first request it makes sure the outputs can be
written and that no file this job never wrote is in the way. Each item is marked in flight before it is
sent and done only after its output is durably written. The run stops scheduling when the budget is
reached, the server refuses the credentials, or it is interrupted (:meth:`Runner.interrupt`); what is
left stays pending for the next run. The library never prints: it logs to ``aigc.batch``, reports
progress through a callback, and returns a :class:`RunReport`.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import logging
import os
import signal as signals
import time
from collections.abc import Callable

from ..budget import Budget
from ..db import utc_stamp
from ..errors import AigcError, ConfigError, OutputError
from ..textio import check_folder, check_writable
from .batchapi import BatchApiMode
from .direct import DirectMode
from .inputs import Item, KeyMaker, scan
from .job import Job
from .journal import ItemRow, Journal
from .outcomes import Outcomes, output_line
from .outputs import JsonlOutput, remove_leftovers
from .plan import Selection, key_maker, new_run_id, open_client, output_states, select
from .records import OutputRecords
from .report import Failure, Progress, RunReport, exit_code_for

__all__ = ["Runner", "JobLocked", "MODES"]

log = logging.getLogger("aigc.batch")

# The ways a run can send its requests: each takes the client and the run's outcomes, and runs items.
MODES = {DirectMode.name: DirectMode, BatchApiMode.name: BatchApiMode}


class JobLocked(AigcError):
    """Another run of the same job holds its lock."""


class Runner:
    """One run of one job. ``await Runner(job).run()`` returns the report; it never raises for item
    failures, only for a bad configuration (ConfigError) or a held lock (JobLocked).

    ``grace_s``: after :meth:`interrupt`, how long requests already in flight may take to finish."""

    def __init__(self, job: Job, *, retry_failed: bool = False, use_cache: bool = True, via: str = "direct",
                 progress: Callable[[Progress], None] | None = None, grace_s: float = 10.0) -> None:
        if via not in MODES:
            raise ConfigError(f"--via must be one of {', '.join(MODES)}, not {via!r}")
        self.job = job
        self.retry_failed = retry_failed
        self.use_cache = use_cache
        self.via = via
        self.progress = progress
        self.grace_s = grace_s
        self.budget = Budget(max_total_tokens=job.spec.budget.max_total_tokens, max_cost_usd=job.spec.budget.max_cost_usd)
        self.outcomes: Outcomes | None = None
        self.signal: int | None = None  # the signal that interrupted the run
        self._mode: asyncio.Task | None = None
        self._gave_up = False

    # -- interruption -----------------------------------------------------------------------------------
    def interrupt(self, signum: int = signals.SIGINT) -> None:
        """Stop the run, as SIGINT or SIGTERM ask (call it from the run's event loop, e.g. from
        ``loop.add_signal_handler``). The first call stops sending and gives requests in flight ``grace_s``
        seconds to finish; a second call, or the end of the grace, gives up on them. Items not done go back
        to pending; the report is written; its exit code is 128 + ``signum`` (130, 143)."""
        first = self.signal is None
        if first:
            self.signal = signum
        books = self.outcomes
        if books is None:  # not sending yet: the run stops before it starts
            return
        if first:
            name = signals.Signals(signum).name
            books.halt("interrupted", f"interrupted by {name}: nothing more was sent; items not done are "
                                      "pending for the next run")
            asyncio.get_running_loop().call_later(self.grace_s, self._give_up)
        else:
            self._give_up()

    def _give_up(self) -> None:
        if self._gave_up or self.outcomes is None:
            return
        self._gave_up = True
        self.outcomes.cancel_inflight()
        if self.via != DirectMode.name and self._mode is not None:
            self._mode.cancel()  # a Batch API upload or poll: its batch stays open for the next run

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

        try:
            self.job.state_dir.mkdir(parents=True, exist_ok=True)
        except OSError as e:
            raise ConfigError(f"{self.job.path}: cannot create the state folder {self.job.state_dir} "
                              f"({e.strerror}); make it writable or set state_dir") from None
        lock = FileLock(self.job.lock_path, blocking=False)
        try:
            lock.acquire()
        except Timeout:
            holder = ""
            with contextlib.suppress(OSError):
                holder = " (" + (self.job.state_dir / "run.pid").read_text().strip() + ")"
            raise JobLocked(f"another run of job {self.job.name!r} is in progress{holder}; "
                            "this one exits without doing anything") from None
        except OSError as e:
            raise ConfigError(f"{self.job.path}: cannot lock {self.job.lock_path} ({e.strerror}); make the "
                              "state folder writable") from None
        with contextlib.suppress(OSError):
            (self.job.state_dir / "run.pid").write_text(f"pid {os.getpid()}, started {utc_stamp()}\n")
        return lock

    # -- the run ----------------------------------------------------------------------------------------
    async def run(self) -> RunReport:
        client = self._client()
        opened: list[JsonlOutput | OutputRecords] = []
        try:
            keys = key_maker(self.job, client)
            lock = self._lock()
            try:
                return await self._run(client, keys, opened)
            finally:
                lock.release()
        finally:
            for output in opened:
                output.close()
            await client.aclose()

    async def _run(self, client, keys: KeyMaker, opened: list) -> RunReport:
        job = self.job
        run_id = new_run_id()
        report = RunReport(job=job.name, job_file=str(job.path), run_id=run_id, mode=self.via, started=utc_stamp())
        journal = Journal(job.journal_path, outputs_record=job.records_path.name)
        try:
            items = scan(job, keys)
            journal.register((i.key, i.id) for i in items)
            rows = journal.rows(i.key for i in items)
            records = jsonl = None
            if job.output_jsonl is not None:
                jsonl = JsonlOutput(job.output_jsonl, owner=job.id)
                opened.append(jsonl)
                if jsonl.recover():
                    report.warnings.append(f"{jsonl.path}: removed a torn last line left by an interrupted run")
            else:
                records = OutputRecords(job.records_path, job.dir, owner=job.id)
                opened.append(records)
                records.load()
            states = output_states(job, items, rows, records, jsonl, journal.legacy_outputs())
            pick = select(items, rows, {b.submission for b in journal.open_batches()},
                          retry_failed=self.retry_failed, outputs=states)
            self._refuse_foreign(pick)
            self._check_writable(items, pick, rows, jsonl)
            journal.begin_run(run_id, self.via, os.getpid())
            books = self.outcomes = Outcomes(job, journal, report, self.budget, items, run_id=run_id, jsonl=jsonl,
                                             records=records, cache=self.use_cache, gate=client.accounting.gate,
                                             progress=self.progress)
            if jsonl is not None:
                self._settle_jsonl(books, rows)
            else:
                assert records is not None and job.output_dir is not None
                records.compact()
                if remove_leftovers(job.output_dir, job.id):
                    log.info("removed temporary files left in %s by an interrupted run", job.output_dir)
            self._adopt(books, pick, rows)
            report.skipped_done = pick.skipped_done + len(pick.adopt)
            report.redone_after_crash = pick.redone
            report.warnings += [f"{i.id}: its output {i.output or job.output_jsonl} is missing; redoing it"
                                for i in pick.missing]
            report.warnings += [f"{i.id}: its output {i.output} was written for other inputs or settings, or "
                                "changed since; redoing it (free from the response cache when possible)"
                                for i in pick.stale]
            if pick.held and self.via == "direct":
                report.warnings.append(f"{pick.held} items are in an open Batch API batch; "
                                       "run with --via batch-api to collect them")
            if pick.redone:
                log.info("%d items were in flight when an earlier run stopped; redoing them (the response "
                         "cache answers those whose reply had arrived)", pick.redone)
            books.todo_count = len(pick.todo)
            log.info("job %s: %d items, %d to do", job.name, len(items), len(pick.todo))
            books.tick()
            if self.signal is not None:  # interrupted while getting ready: send nothing
                self.signal, first = None, self.signal
                self.interrupt(first)
            # What is loaded by now (the SDK's and pydantic's ~80,000 objects) stays out of the collector's way
            # while requests go: a full collection over it would hold every request back for 40-70 ms.
            gc.freeze()
            try:
                await self._send(client, books, pick.todo)
            finally:
                gc.unfreeze()
            return self._finish(client, books)
        finally:
            journal.close()

    async def _send(self, client, books: Outcomes, todo: list[Item]) -> None:
        """Run the mode; a cancellation (Ctrl-C in ``asyncio.run``) still leaves no item in flight and writes
        the report before it goes on."""
        self._mode = asyncio.ensure_future(MODES[self.via](client, books).run(todo))
        try:
            await self._mode
        except asyncio.CancelledError:
            released = books.journal.release_in_flight(books.run_id)
            current = asyncio.current_task()
            if current is not None and current.cancelling():  # the caller cancelled the whole run
                if self.signal is None:
                    self.signal = signals.SIGINT
                books.halt("interrupted", "cancelled: items not done are pending for the next run")
                log.info("run cancelled; %d items in flight went back to pending", released)
                self._finish(client, books)
                raise
            # our own give-up after an interrupt (a Batch API mode): the report follows as usual
        finally:
            books.journal.release_in_flight(books.run_id)

    # -- checks before anything is sent ------------------------------------------------------------------
    def _refuse_foreign(self, pick: Selection) -> None:
        if not pick.foreign:
            return
        names = ", ".join(str(i.output) for i in pick.foreign[:3])
        more = f" and {len(pick.foreign) - 3} more" if len(pick.foreign) > 3 else ""
        raise ConfigError(f"{self.job.path}: {names}{more} already exist and this job has no record of writing "
                          "them; move them away (or delete them) and run again, or set another [output] dir")

    def _check_writable(self, items: list[Item], pick: Selection, rows: dict[str, ItemRow],
                        jsonl: JsonlOutput | None) -> None:
        """Before paying for answers: can their outputs (and the report) be written?"""
        job = self.job
        try:
            if jsonl is not None:
                restore = any(rows[i.key].state == "done" and i.key not in jsonl.keys for i in items)
                if pick.todo or restore:
                    check_writable(jsonl.path, make_dirs=True, owner=job.id)
            elif pick.todo and job.output_dir is not None:
                check_folder(job.output_dir, make_dirs=True, owner=job.id)
                for folder in sorted({i.output.parent for i in pick.todo if i.output is not None}):
                    if folder.exists():
                        check_folder(folder, owner=job.id)
            check_folder(job.reports_dir, make_dirs=True, owner=job.id)
        except OutputError as e:
            raise ConfigError(f"{job.path}: {e}; nothing was sent") from None

    # -- outputs already there --------------------------------------------------------------------------
    def _adopt(self, books: Outcomes, pick: Selection, rows: dict[str, ItemRow]) -> None:
        """Items whose outputs were written for their keys but the journal does not say done (it was
        emptied or lost, or a run died between the two): done, without a request."""
        for item in pick.adopt:
            row = rows.get(item.key)
            text = row.text if row is not None else None
            tokens = (row.prompt_tokens, row.completion_tokens, row.cost_usd) if row is not None else (0, 0, 0.0)
            if books.jsonl is not None and text is None and item.key in books.jsonl.keys:
                line = books.jsonl.line(item.key)
                text = line.get("text")
                tokens = (line.get("prompt_tokens") or 0, line.get("completion_tokens") or 0, line.get("cost_usd"))
            books.journal.done(item.key, run_id=books.run_id, output=str(item.output or self.job.output_jsonl),
                               text=text if books.jsonl is not None else None, prompt_tokens=tokens[0],
                               completion_tokens=tokens[1], cost_usd=tokens[2], cached=False)
        if pick.adopt:
            books.report.adopted = len(pick.adopt)
            log.info("%d outputs were already written for their items' current keys; marked done without "
                     "a request", len(pick.adopt))

    def _settle_jsonl(self, books: Outcomes, rows: dict[str, ItemRow]) -> None:
        """Make the JSONL output hold exactly one line per done item, the last line of its id: lines lost to
        a crash between the journal commit and the append are restored from the journal, and an item whose
        current key was superseded and then restored (a change reverted) has its line moved to the end."""
        jsonl = books.jsonl
        assert jsonl is not None
        restored = 0
        for item in books.items:
            row = rows[item.key]
            if row.state == "done" and item.key not in jsonl.keys and row.text is not None:
                jsonl.append({**output_line(item, _restored(item, row)), "restored": True})
                restored += 1
        if restored:
            log.info("%s: restored %d lines whose items were done when a run stopped", jsonl.path, restored)
        buried = [i.key for i in books.items
                  if i.key in jsonl.keys and jsonl.last_key.get(i.id, i.key) != i.key]
        if buried:
            jsonl.move_to_end(buried)
            books.report.warnings.append(f"{jsonl.path}: {len(buried)} items are back to earlier inputs or "
                                         "settings; their lines were moved after the superseded ones")

    # -- the end ----------------------------------------------------------------------------------------
    def _finish(self, client, books: Outcomes) -> RunReport:
        r = books.report
        rows = books.journal.rows(i.key for i in books.items)
        r.total = len(books.items)
        r.done = r.failed = r.pending = 0
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
            failed=r.failed + r.pending,  # anything not done (a stopped run, a file changed mid-run)
            signal=self.signal if stop is not None and stop[0] == "interrupted" else None)
        spent_usd, spent_tokens = books.spent()
        r.cost_usd = None if self.budget.unpriced_requests + books.extra_unpriced else round(spent_usd, 8)
        r.budget = {"max_cost_usd": self.budget.max_cost_usd, "max_tokens": self.budget.max_total_tokens,
                    "spent_usd": round(self.budget.spent_usd, 8), "spent_tokens": self.budget.spent_tokens}
        gate = client.accounting.gate
        if gate is not None and gate.active:
            r.rate = gate.stats()
        r.finished = utc_stamp()
        r.duration_s = round(time.perf_counter() - books.started, 3)
        path = None
        try:
            path = r.write(self.job.reports_dir, owner=self.job.id)
        except (OSError, OutputError) as e:
            r.report_path = None
            r.warnings.append(f"the report could not be written to {self.job.reports_dir} "
                              f"({getattr(e, 'strerror', None) or e})")
            log.warning("the report could not be written to %s: %s", self.job.reports_dir, e)
        books.journal.end_run(books.run_id, exit_code=r.exit_code, outcome=r.outcome, done=r.done,
                              failed=r.failed, pending=r.pending, tokens=spent_tokens, cost_usd=r.cost_usd,
                              report=str(path) if path else None)
        log.info("job %s: %d done, %d failed, %d pending", self.job.name, r.done, r.failed, r.pending)
        return r


def _restored(item: Item, row: ItemRow):
    """A done item's Result as its journal row remembers it (for a JSONL line lost to a crash)."""
    from ..types import Result, Usage

    return Result(text=row.text or "", task="", model="", backend="",
                  usage=Usage(prompt_tokens=row.prompt_tokens, completion_tokens=row.completion_tokens),
                  cost_usd=row.cost_usd, warnings=["served from the response cache"] if row.cached else [])
