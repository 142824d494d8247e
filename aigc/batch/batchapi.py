"""``--via batch-api``: the same job through OpenAI's Batch API, at half price for work that can wait.

A submission goes: build the JSONL of requests (one line per item, ``custom_id`` = the item's key) →
upload it (``POST /v1/files``, purpose ``batch``) → record the file and mark the items in flight in the
journal → create the batch (``POST /v1/batches``) → record its id. Then poll ``GET /v1/batches/{id}``
until it ends, download the output and error files, and write each result through the same output
path as a direct run. A killed run resumes: the journal knows the open batch, so the next run polls it
instead of submitting again. If a run dies in the instant between the server creating a batch and the
journal recording its id, the next run looks for the batch by its metadata (where the server can list
batches) before submitting again.

Items whose input needs several rounds of requests (documents split to fit the context window) cannot
be one batch line; they run directly in the same run. Cached answers are used without submitting.
"""

from __future__ import annotations

import asyncio
import json
import logging
import secrets
from typing import TYPE_CHECKING, Any

from ..errors import AigcError, BudgetExceeded, ConfigError, InputError, ModelNotFound, TransientError
from ..types import Completion, Usage
from .inputs import Item, _Changed
from .journal import BatchRow
from .plan import task_spec
from .runner import _FATAL

if TYPE_CHECKING:
    from .runner import Runner

__all__ = ["BatchApiRun"]

log = logging.getLogger("aigc.batch")

ENDPOINT = "/v1/chat/completions"
TERMINAL = {"completed", "failed", "expired", "cancelled"}
MAX_FILE_BYTES = 190 * 1024 * 1024  # the API takes up to 200 MB per input file


class BatchApiRun:
    """The Batch API part of one run; shares the runner's journal, outputs, budget and report."""

    def __init__(self, runner: Runner) -> None:
        self.runner = runner
        self.job = runner.job
        self.client = runner.client
        self.journal = runner.journal
        backend = self.client.backend
        if backend.name != "openai" or not hasattr(backend, "async_client"):
            raise ConfigError(f"--via batch-api needs the openai backend (the job uses {backend.name!r})")
        self.api = backend.async_client
        self.where = backend.where
        self.official = self.client.settings.base_url is None
        self.poll_s = self.job.spec.batch_api.poll_interval_s
        self.reservations: dict[str, Any] = {}
        self.by_key = {item.key: item for item in runner.items}

    # -- the whole path ---------------------------------------------------------------------------------
    async def run(self, todo: list[Item]) -> None:
        open_rows = self.journal.open_batches()
        for row in [r for r in open_rows if r.batch_id is None]:
            await self._find_lost(row)
        direct: list[Item] = []
        lines: list[tuple[Item, bytes]] = []
        for item in todo:
            if self.runner.stop is not None:
                break
            prepared = await self._prepare(item)
            if prepared == "direct":
                direct.append(item)
            elif isinstance(prepared, bytes):
                lines.append((item, prepared))
        for chunk in self._chunks(lines):
            try:
                await self._submit(chunk)
            except AigcError as e:
                for item, _ in chunk:
                    if (held := self.reservations.pop(item.key, None)) is not None:
                        self.runner.budget.release(held)
                self.runner.halt("config" if isinstance(e, _FATAL) else "failed", f"Batch API: {e}")
                break
        if direct:
            log.info("%d items need several requests each; running them directly", len(direct))
            await self.runner.direct(direct)
        for row in self.journal.open_batches():
            if row.batch_id is not None and self.runner.stop is None:
                try:
                    await self._finish(row)
                except AigcError as e:  # the batch stays open: the next run collects it
                    self.runner.halt("failed", f"Batch API: batch {row.batch_id}: {e}")

    # -- building lines ---------------------------------------------------------------------------------
    def flow(self, item: Item):
        spec = task_spec(self.job, item.variables(self.job))
        return self.client.flow(self.job.task, spec[0], spec[1], spec[3], spec[2])

    async def _prepare(self, item: Item) -> bytes | str | None:
        """The batch line for an item; "direct" if it needs several rounds; None if settled here."""
        runner, engine = self.runner, self.client.engine
        if item.error is not None:
            runner.fail(item, InputError(item.error))
            return None
        try:
            flow = self.flow(item)
            step = next(flow)
        except _Changed as e:
            runner.report.warnings.append(str(e))
            return None
        except AigcError as e:
            runner.fail(item, e)
            return None
        if len(step.requests) != 1:
            return "direct"
        request = step.requests[0]
        hit = engine.cached(request)
        if hit is not None:
            text = _outcome_text(flow, hit.completion)
            if text is None:
                return "direct"
            self.journal.start(item.key, runner.run_id)
            await runner.deliver(item, text, prompt_tokens=0, completion_tokens=0, cost_usd=0.0, cached=True)
            return None
        try:
            prompt, cap = engine.check(request)
            self.reservations[item.key] = runner.budget.reserve(prompt + cap, self._price(request.model, prompt, cap))
        except BudgetExceeded as e:
            runner.halt("budget", f"budget reached: {e}")
            return None
        except AigcError as e:
            runner.fail(item, e)
            return None
        line = {"custom_id": item.key, "method": "POST", "url": ENDPOINT, "body": self._body(request)}
        return json.dumps(line, ensure_ascii=False).encode("utf-8") + b"\n"

    def _body(self, request) -> dict[str, Any]:
        body: dict[str, Any] = {"model": request.model,
                                "messages": [m.model_dump(exclude_none=True) for m in request.messages]}
        for name in ("temperature", "top_p", "stop", "seed"):
            if getattr(request, name) is not None:
                body[name] = getattr(request, name)
        if request.max_tokens is not None:
            body["max_completion_tokens" if self.official else "max_tokens"] = request.max_tokens
        return body

    def _price(self, model: str, prompt: int, completion: int) -> float | None:
        """Batch prices where the model table has them, else the standard price (errs high)."""
        engine = self.client.engine
        if getattr(self.client.backend, "free", False):
            return 0.0
        batch = engine.model_info(model).estimate_cost(prompt, completion, batch=True)
        return batch if batch is not None else engine.price(model, prompt, completion)

    def _chunks(self, lines: list[tuple[Item, bytes]]):
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
    async def _call(self, what: str, fn, *args, **kwargs):
        """One API call, retried by the core retry policy on transient failures."""
        import openai

        from ..backends.openai import translate_error
        from ..retry import acall_with_retry

        async def attempt(timeout: float | None):
            try:
                return await fn(*args, **kwargs)
            except openai.OpenAIError as e:
                raise translate_error(e, key=self.client.settings.key, where=self.where) from None

        log.debug("Batch API: %s", what)
        result, _ = await acall_with_retry(attempt, self.client.engine.policy)
        return result

    async def _submit(self, chunk: list[tuple[Item, bytes]]) -> None:
        runner = self.runner
        submission = secrets.token_hex(8)
        data = b"".join(line for _, line in chunk)
        keys = [item.key for item, _ in chunk]
        upload = await self._call("upload", self.api.files.create,
                                  file=(f"aigc-{submission}.jsonl", data), purpose="batch")
        self.journal.add_batch(submission, input_file_id=upload.id, items=len(chunk), run_id=runner.run_id)
        self.journal.start_many(keys, runner.run_id, submission)
        try:
            batch = await self.api.batches.create(
                input_file_id=upload.id, endpoint=ENDPOINT, completion_window="24h",
                metadata={"aigc_job": self.job.name[:512], "aigc_submission": submission})
        except Exception as e:  # did the server create it anyway? look before giving the items back
            log.warning("creating the batch failed (%s); checking whether it exists", e)
            row = next(r for r in self.journal.open_batches() if r.submission == submission)
            await self._find_lost(row)
            return
        self.journal.set_batch(submission, batch_id=batch.id, status=batch.status)
        runner.report.batches.append({"batch_id": batch.id, "items": len(chunk), "input_file_id": upload.id})
        log.info("submitted batch %s with %d requests", batch.id, len(chunk))

    async def _find_lost(self, row: BatchRow) -> None:
        """A submission whose batch id was never recorded: find the batch by metadata, or give the items
        back to the queue (nothing was created)."""
        found = None
        try:
            async for batch in self.api.batches.list(limit=100):
                if (batch.metadata or {}).get("aigc_submission") == row.submission:
                    found = batch
                    break
        except Exception as e:  # servers without a batch listing
            log.warning("cannot list batches to look for submission %s (%s); submitting its items again",
                        row.submission, e)
        if found is not None:
            self.journal.set_batch(row.submission, batch_id=found.id, status=found.status)
            return
        for key in self.journal.batch_keys(row.submission):
            self.journal.release(key)
        self.journal.set_batch(row.submission, status="not_created", closed=True)

    # -- collecting -------------------------------------------------------------------------------------
    async def _finish(self, row: BatchRow) -> None:
        batch = await self._poll(row)
        if isinstance(batch, AigcError) and not isinstance(batch, ModelNotFound):
            raise batch
        if isinstance(batch, AigcError):  # 404: the server does not know this batch (any more)
            self.runner.report.warnings.append(f"batch {row.batch_id} cannot be read ({batch}); "
                                               "its items will be submitted again")
            for key in self.journal.batch_keys(row.submission):
                self.journal.release(key)
                if (held := self.reservations.pop(key, None)) is not None:
                    self.runner.budget.release(held)
            self.journal.set_batch(row.submission, status="unreadable", closed=True)
            return
        results: dict[str, dict[str, Any]] = {}
        for file_id in (batch.output_file_id, batch.error_file_id):
            if file_id:
                content = await self._call("download", self.api.files.content, file_id)
                for line in content.text.splitlines():
                    if line.strip():
                        entry = json.loads(line)
                        results[entry.get("custom_id")] = entry
        for key in self.journal.batch_keys(row.submission):
            await self._settle(key, results.get(key), batch)
        self.journal.set_batch(row.submission, status=batch.status, closed=True)
        counts = batch.request_counts
        self.runner.report.batches.append({
            "batch_id": batch.id, "status": batch.status,
            "completed": counts.completed if counts else None, "failed": counts.failed if counts else None})

    async def _poll(self, row: BatchRow):
        runner = self.runner
        while True:
            try:
                batch = await self.api.batches.retrieve(row.batch_id)
            except Exception as e:
                err = _translated(e, self)
                if not isinstance(err, TransientError):
                    return err
                log.info("polling batch %s failed (%s); trying again", row.batch_id, err)
            else:
                self.journal.set_batch(row.submission, status=batch.status)
                if batch.status in TERMINAL:
                    return batch
                counts = batch.request_counts
                note = f"batch {batch.id}: {batch.status}"
                if counts and counts.total:
                    note += f" {counts.completed + counts.failed}/{counts.total}"
                runner.tick(note)
            await asyncio.sleep(self.poll_s)

    async def _settle(self, key: str, entry: dict[str, Any] | None, batch) -> None:
        runner = self.runner
        item = self.by_key.get(key)
        held = self.reservations.pop(key, None)
        if item is None:  # its input was changed or removed since it was submitted
            self.journal.release(key)
            if held is not None:
                runner.budget.release(held)
            return
        response = (entry or {}).get("response") or {}
        body = response.get("body") or {}
        if entry is None or entry.get("error") or response.get("status_code") != 200:
            if held is not None:
                runner.budget.release(held)
            runner.fail(item, _entry_error(entry, batch))
            return
        choice = (body.get("choices") or [{}])[0]
        raw_usage = body.get("usage") or {}
        usage = Usage(prompt_tokens=raw_usage.get("prompt_tokens") or 0,
                      completion_tokens=raw_usage.get("completion_tokens") or 0)
        completion = Completion(text=(choice.get("message") or {}).get("content") or "",
                                finish_reason=choice.get("finish_reason"), usage=usage,
                                model=body.get("model") or self.client.model,
                                request_id=response.get("request_id"))
        cost = self._price(completion.model, usage.prompt_tokens, usage.completion_tokens)
        if held is not None:
            runner.budget.commit(held, usage.total_tokens, cost)
        else:  # submitted by an earlier run, under that run's budget
            runner.charge(usage.total_tokens, cost)
        runner.report.requests += 1
        try:
            flow = self.flow(item)
            request = next(flow).requests[0]
        except _Changed as e:
            self.journal.release(key)
            runner.report.warnings.append(str(e))
            return
        except AigcError as e:
            runner.fail(item, e)
            return
        self._remember(request, completion, cost)
        text = _outcome_text(flow, completion)
        if text is None:  # the flow wants more rounds after all: finish it directly
            await runner.one(item)
            return
        if completion.finish_reason == "length":
            runner.report.warnings.append(f"{item.id}: the output was cut at the token limit; "
                                          "raise [model] max_output_tokens")
        await runner.deliver(item, text, prompt_tokens=usage.prompt_tokens,
                             completion_tokens=usage.completion_tokens, cost_usd=cost, cached=False,
                             model=completion.model, finish_reason=completion.finish_reason)

    def _remember(self, request, completion: Completion, cost: float | None) -> None:
        """Put the answer in the response cache and the usage ledger, as a direct request would."""
        from ..engine import Sent

        engine = self.client.engine
        engine.remember(request, Sent(completion, 1, cost))
        if engine.ledger is not None:
            from ..ledger import LedgerEntry

            usage = completion.usage or Usage()
            engine.ledger.record(LedgerEntry(
                backend=self.client.backend.name, model=completion.model, task=self.job.task,
                prompt_tokens=usage.prompt_tokens, completion_tokens=usage.completion_tokens, cost_usd=cost,
                request_id=completion.request_id, job=self.job.name))


def _outcome_text(flow, completion: Completion) -> str | None:
    """Feed a single-request flow its completion; its final text, or None if it asks for more."""
    try:
        flow.send([completion])
    except StopIteration as stop:
        return stop.value.text
    return None


def _translated(e: Exception, run: BatchApiRun) -> AigcError:
    import openai

    from ..backends.openai import translate_error

    if isinstance(e, openai.OpenAIError):
        return translate_error(e, key=run.client.settings.key, where=run.where)
    return e if isinstance(e, AigcError) else AigcError(f"{type(e).__name__}: {e}")


def _entry_error(entry: dict[str, Any] | None, batch) -> AigcError:
    """The error of one failed batch line: permanent for 4xx answers, retryable otherwise."""
    from ..errors import BadRequest, ServerError

    if entry is None:
        why = ""
        errors = getattr(batch, "errors", None)
        if errors is not None and getattr(errors, "data", None):
            why = f": {errors.data[0].message}"
        return ServerError(f"batch {batch.id} ended {batch.status} without a result for this item{why}")
    if entry.get("error"):
        err = entry["error"]
        return BadRequest(f"batch {batch.id}: {err.get('code')}: {err.get('message')}")
    response = entry.get("response") or {}
    status = response.get("status_code") or 0
    detail = ((response.get("body") or {}).get("error") or {}).get("message") or f"HTTP {status}"
    message = f"batch {batch.id}: HTTP {status}: {detail}"
    if status in (408, 409, 429) or status >= 500:
        return ServerError(message, status_code=status)
    return BadRequest(message, status_code=status)
