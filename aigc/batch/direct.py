"""``--via direct`` (the default): each item's requests go out now, ``concurrency`` items at a time, through
the client's engine (rate gate, retries, budget, cache and ledger included)."""

from __future__ import annotations

import asyncio
from collections import deque

from ..errors import AigcError, InputError
from .inputs import Item
from .outcomes import Outcomes
from .plan import item_call, record_options

__all__ = ["DirectMode"]


class DirectMode:
    """Runs items one request flow at a time per worker."""

    name = "direct"

    def __init__(self, client, outcomes: Outcomes) -> None:
        self.client = client
        self.outcomes = outcomes
        self.job = outcomes.job

    async def run(self, todo: list[Item]) -> None:
        queue = deque(todo)

        async def worker() -> None:
            while queue and self.outcomes.stop is None:
                await self.one(queue.popleft())

        async with asyncio.TaskGroup() as group:
            for _ in range(min(self.job.spec.limits.concurrency, len(todo))):
                group.create_task(worker())

    async def one(self, item: Item) -> None:
        """Do one item: send, write its output, record it."""
        books = self.outcomes
        if item.error is not None:
            books.fail(item, InputError(item.error))
            return
        books.journal.start(item.key, books.run_id)
        try:
            call = item_call(self.client, self.job, item.variables(self.job), record_options(self.job, item.record))
        except AigcError as e:
            books.error(item, e)
            return
        # The request runs as its own task, so a signal that will not wait can cancel it without cutting
        # short the delivery of an answer that has already arrived.
        request = asyncio.ensure_future(call.engine.arun(call.flow, call.task))
        books.inflight.add(request)
        try:
            result = await request
        except AigcError as e:
            books.error(item, e)
            return
        except asyncio.CancelledError:
            books.journal.release(item.key)  # not answered: pending for the next run
            current = asyncio.current_task()
            if current is not None and current.cancelling():
                raise  # the whole run is being cancelled
            return
        finally:
            books.inflight.discard(request)
        books.report.requests += result.attempts
        await books.deliver(item, result)
