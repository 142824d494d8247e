"""``--via batch-api``: the same job through the provider's Batch API, at half price for work that can wait.

A submission goes: build the JSONL of requests (one line per item, ``custom_id`` = the item's key) →
upload it → record the file and mark the items in flight in the journal → create the batch → record its
id. Then poll it until it ends, read its results, and settle each item through the same outcomes as a
direct run. A killed run resumes: the journal knows the open batch, so the next run polls it instead of
submitting again. If a run dies in the instant between the server creating a batch and the journal
recording its id, the next run looks for the batch by its metadata before submitting again.

Items whose input needs several rounds of requests (documents split to fit the context window) cannot be
one batch line; they run directly in the same run. Cached answers are used without submitting. The wire
format (lines, results) is the backend's (:mod:`aigc.backends.openai.batches`).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import secrets
from typing import Any

from ..accounting import price
from ..errors import AigcError, BudgetExceeded, ConfigError, InputError, ModelNotFound
from ..flows import Outcome
from ..retry import acall_with_retry
from ..types import Completion, Result, Usage
from .direct import DirectMode
from .inputs import Item
from .journal import BatchRow
from .outcomes import FATAL, Outcomes
from .plan import item_call, record_options

__all__ = ["BatchApiMode"]

log = logging.getLogger("aigc.batch")


class BatchApiMode:
    """The Batch API strategy of one run; reports through the run's :class:`Outcomes`."""

    name = "batch-api"

    def __init__(self, client, outcomes: Outcomes) -> None:
        self.client = client
        self.outcomes = outcomes
        self.job = outcomes.job
        self.journal = outcomes.journal
        self.api = client.backend.batch_api()
        if self.api is None:
            raise ConfigError(f"--via batch-api needs a backend with a Batch API such as openai "
                              f"(the job uses {client.backend.name!r})")
        self.engine = client.engine
        self.poll_s = self.job.spec.batch_api.poll_interval_s
        self.held: dict[str, Any] = {}

    async def _retry(self, fn, *args: Any) -> Any:
        """One Batch API call under the retry policy (its deadline included)."""
        result, _ = await acall_with_retry(lambda _timeout: fn(*args), self.engine.policy)
        return result

    # -- the whole path ---------------------------------------------------------------------------------
    async def run(self, todo: list[Item]) -> None:
        books = self.outcomes
        for row in [r for r in self.journal.open_batches() if r.batch_id is None]:
            await self._find_lost(row)
        direct: list[Item] = []
        lines: list[tuple[Item, bytes]] = []
        for item in todo:
            if books.stop is not None:
                break
            prepared = await self._prepare(item)
            if prepared == "direct":
                direct.append(item)
            elif isinstance(prepared, bytes):
                lines.append((item, prepared))
        for chunk in self._chunks(lines):
            if books.stop is not None:  # stopped (interrupted) before this chunk went out: it stays pending
                for item, _ in chunk:
                    self.client.accounting.release(self.held.pop(item.key, []))
                continue
            try:
                await self._submit(chunk)
            except AigcError as e:
                for item, _ in chunk:
                    self.client.accounting.release(self.held.pop(item.key, []))
                books.halt("config" if isinstance(e, FATAL) else "failed", f"Batch API: {e}")
        if direct:
            log.info("%d items need several requests each; running them directly", len(direct))
            await DirectMode(self.client, books).run(direct)
        for row in self.journal.open_batches():
            if row.batch_id is not None and books.stop is None:
                try:
                    await self._finish(row)
                except AigcError as e:  # the batch stays open: the next run collects it
                    books.halt("failed", f"Batch API: batch {row.batch_id}: {e}")

    # -- building lines ---------------------------------------------------------------------------------
    def _call(self, item: Item):
        return item_call(self.client, self.job, item.variables(self.job), record_options(self.job, item.record))

    async def _prepare(self, item: Item) -> bytes | str | None:
        """The batch line for an item; "direct" if it needs several rounds; None if settled here."""
        books = self.outcomes
        if item.error is not None:
            books.fail(item, InputError(item.error))
            return None
        try:
            call = self._call(item)
            step = next(call.flow)
        except AigcError as e:
            books.error(item, e)
            return None
        if len(step.requests) != 1:
            return "direct"
        request = step.requests[0]
        hit = self.client.accounting.cached(request)
        if hit is not None:
            outcome = _outcome(call.flow, hit)
            if outcome is None:
                return "direct"
            books.journal.start(item.key, books.run_id)
            await books.deliver(item, _result(self.job.task, outcome, hit, self.client.backend.name, 0.0,
                                              cached=True))
            return None
        try:
            request, prompt = self._sized(request)
            cap = request.max_output_tokens
            worst = price(self.engine.model_info(request.model), prompt, cap, batch=True)
            self.held[item.key] = self.client.accounting.reserve(prompt + cap, worst)
        except BudgetExceeded as e:
            books.halt("budget", f"budget reached: {e}")
            return None
        except AigcError as e:
            books.fail(item, e)
            return None
        return self.api.line(item.key, request)

    def _sized(self, request):
        """The request with its output cap settled (as a direct run would send it), and its prompt tokens."""
        prompt, cap = self.engine.check(request)
        return request.model_copy(update={"max_output_tokens": cap}), prompt

    def _chunks(self, lines: list[tuple[Item, bytes]]):
        from ..backends.openai.batches import MAX_FILE_BYTES

        limit = self.job.spec.batch_api.max_requests_per_batch
        chunk: list[tuple[Item, bytes]] = []
        size = 0
        for item, line in lines:
            if chunk and (len(chunk) >= limit or size + len(line) > MAX_FILE_BYTES):
                yield chunk
                chunk, size = [], 0
            chunk.append((item, line))
            size += len(line)
        if chunk:
            yield chunk

    # -- submitting -------------------------------------------------------------------------------------
    async def _submit(self, chunk: list[tuple[Item, bytes]]) -> None:
        books = self.outcomes
        submission = secrets.token_hex(8)
        keys = [item.key for item, _ in chunk]
        file_id = await self._retry(self.api.upload, f"aigc-{submission}.jsonl", b"".join(line for _, line in chunk))
        self.journal.add_batch(submission, input_file_id=file_id, items=len(chunk), run_id=books.run_id)
        self.journal.start_many(keys, books.run_id, submission)
        try:  # not retried: creating a batch twice would pay twice
            batch = await self.api.create(file_id, {"aigc_job": self.job.name[:512], "aigc_submission": submission})
        except AigcError as e:  # did the server create it anyway? look before giving the items back
            log.warning("creating the batch failed (%s); checking whether it exists", e)
            row = next(r for r in self.journal.open_batches() if r.submission == submission)
            await self._find_lost(row)
            return
        self.journal.set_batch(submission, batch_id=batch.id, status=batch.status)
        books.report.batches.append({"batch_id": batch.id, "items": len(chunk), "input_file_id": file_id})
        log.info("submitted batch %s with %d requests", batch.id, len(chunk))

    async def _find_lost(self, row: BatchRow) -> None:
        """A submission whose batch id was never recorded: find the batch by metadata, or give the items
        back to the queue (nothing was created)."""
        try:
            found = await self.api.find("aigc_submission", row.submission)
        except AigcError as e:  # servers without a batch listing
            log.warning("cannot list batches to look for submission %s (%s); submitting its items again",
                        row.submission, e)
            found = None
        if found is not None:
            self.journal.set_batch(row.submission, batch_id=found.id, status=found.status)
            return
        for key in self.journal.batch_keys(row.submission):
            self.journal.release(key)
        self.journal.set_batch(row.submission, status="not_created", closed=True)

    # -- collecting -------------------------------------------------------------------------------------
    async def _finish(self, row: BatchRow) -> None:
        books = self.outcomes
        try:
            batch = await self._poll(row)
            if batch is None:  # the run is stopping: the batch stays open and the next run collects it
                return
        except ModelNotFound as e:  # the server does not know this batch (any more)
            books.report.warnings.append(f"batch {row.batch_id} cannot be read ({e}); its items will be "
                                         "submitted again")
            for key in self.journal.batch_keys(row.submission):
                self.journal.release(key)
                self.client.accounting.release(self.held.pop(key, []))
            self.journal.set_batch(row.submission, status="unreadable", closed=True)
            return
        results = await self._retry(self.api.results, batch)
        for key in self.journal.batch_keys(row.submission):
            await self._settle(key, results.get(key), batch)
        self.journal.set_batch(row.submission, status=batch.status, closed=True)
        counts = batch.request_counts
        books.report.batches.append({
            "batch_id": batch.id, "status": batch.status,
            "completed": counts.completed if counts else None, "failed": counts.failed if counts else None})

    async def _poll(self, row: BatchRow):
        """The batch once it has ended; None if the run is told to stop first."""
        from ..backends.openai.batches import TERMINAL

        while self.outcomes.stop is None:
            batch = await self._retry(self.api.retrieve, row.batch_id)
            self.journal.set_batch(row.submission, status=batch.status)
            if batch.status in TERMINAL:
                return batch
            counts = batch.request_counts
            note = f"batch {batch.id}: {batch.status}"
            if counts and counts.total:
                note += f" {counts.completed + counts.failed}/{counts.total}"
            self.outcomes.tick(note)
            with contextlib.suppress(TimeoutError):  # a poll interval, cut short if the run is stopped
                await asyncio.wait_for(self.outcomes.stopping.wait(), self.poll_s)
        return None

    async def _settle(self, key: str, entry: dict[str, Any] | None, batch) -> None:
        books, accounting = self.outcomes, self.client.accounting
        item = books.by_key.get(key)
        held = self.held.pop(key, None)
        if item is None:  # its input was changed or removed since it was submitted
            self.journal.release(key)
            accounting.release(held or [])
            return
        try:
            call = self._call(item)
            asked = next(call.flow).requests[0]
            request = self._sized(asked)[0]
        except AigcError as e:
            accounting.release(held or [])
            books.error(item, e)
            return
        outcome = self.api.outcome(entry, batch, request)
        if isinstance(outcome, AigcError):
            accounting.release(held or [])
            books.fail(item, outcome)
            return
        usage = outcome.usage or Usage()
        cost = price(self.engine.model_info(outcome.model), usage.prompt_tokens, usage.completion_tokens, batch=True)
        accounting.settle(request, self.job.task, held or [], completion=outcome, cost_usd=cost)
        if held is None:  # submitted by an earlier run, under that run's budget
            books.charge(usage.total_tokens, cost)
        accounting.remember(asked, outcome)
        books.report.requests += 1
        done = _outcome(call.flow, outcome)
        if done is None:  # the flow wants more rounds after all: finish it directly
            await DirectMode(self.client, books).one(item)
            return
        await books.deliver(item, _result(self.job.task, done, outcome, self.client.backend.name, cost))


def _outcome(flow, completion: Completion) -> Outcome | None:
    """Feed a single-request flow its completion; its outcome, or None if it asks for more."""
    try:
        flow.send([completion])
    except StopIteration as stop:
        return stop.value
    return None


def _result(task: str, outcome: Outcome, completion: Completion, backend: str, cost: float | None, *,
            cached: bool = False) -> Result:
    usage = Usage() if cached else (completion.usage or Usage())
    return Result(text=outcome.text, task=task, model=completion.model, backend=backend,
                  finish_reason=outcome.finish_reason, usage=usage, cost_usd=0.0 if cached else cost,
                  requests=1, attempts=0 if cached else 1, parsed=outcome.parsed, reasks=outcome.reasks,
                  warnings=["served from the response cache"] if cached else [*outcome.warnings],
                  latency_s=0.0, redactions=outcome.redactions)

