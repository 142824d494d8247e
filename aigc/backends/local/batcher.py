"""Coalescing concurrent async requests into batches, for backends that generate many prompts at once.

A local model on a GPU produces 32 replies in barely more time than one; async callers (batch jobs with
several workers, ``asyncio.gather`` over an ``AsyncClient``) each ask for one. The batcher queues their
requests, waits a few milliseconds for company, and runs whatever has gathered as one ``generate_batch``
call in a worker thread, off the event loop. While a batch runs, new requests queue up for the next one.
"""

from __future__ import annotations

import asyncio
import queue
import threading
import time
from collections.abc import Callable

from ...types import ChatRequest, Completion

_STOP = object()


class MicroBatcher:
    def __init__(self, run_batch: Callable[[list[ChatRequest]], list[Completion]],
                 run_one: Callable[[ChatRequest], Completion], *, max_batch: int = 64,
                 wait_s: float = 0.005) -> None:
        self.run_batch = run_batch
        self.run_one = run_one
        self.max_batch = max_batch
        self.wait_s = wait_s
        self.batch_sizes: list[int] = []  # what was run together, for tests and benchmarks
        self._queue: queue.SimpleQueue = queue.SimpleQueue()
        self._worker: threading.Thread | None = None
        self._lock = threading.Lock()

    async def submit(self, request: ChatRequest) -> Completion:
        loop = asyncio.get_running_loop()
        future = loop.create_future()
        self._ensure_worker()
        self._queue.put((request, loop, future))
        return await future

    def close(self) -> None:
        with self._lock:
            if self._worker is not None:
                self._queue.put(_STOP)
                self._worker = None

    def _ensure_worker(self) -> None:
        with self._lock:
            if self._worker is None:
                self._worker = threading.Thread(target=self._work, name="aigc-batcher", daemon=True)
                self._worker.start()

    def _gather(self, first) -> list:
        batch = [first]
        deadline = time.monotonic() + self.wait_s
        while len(batch) < self.max_batch:
            try:
                item = self._queue.get(timeout=max(0.0, deadline - time.monotonic()))
            except queue.Empty:
                break
            if item is _STOP:
                self._queue.put(_STOP)
                break
            batch.append(item)
        return batch

    def _work(self) -> None:
        while (first := self._queue.get()) is not _STOP:
            batch = self._gather(first)
            self.batch_sizes.append(len(batch))
            try:
                outcomes: list = self.run_batch([request for request, _, _ in batch])
            except Exception:  # one bad request must not fail its neighbours: run them apart
                outcomes = []
                for request, _, _ in batch:
                    try:
                        outcomes.append(self.run_one(request))
                    except Exception as e:
                        outcomes.append(e)
            for (_, loop, future), outcome in zip(batch, outcomes, strict=True):
                loop.call_soon_threadsafe(_settle, future, outcome)


def _settle(future: asyncio.Future, outcome: Completion | BaseException) -> None:
    if future.done():  # the caller gave up (cancelled)
        return
    if isinstance(outcome, BaseException):
        future.set_exception(outcome)
    else:
        future.set_result(outcome)
