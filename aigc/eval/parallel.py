"""Large scoring jobs split over the CPU cores: per-item statistics are independent, so items are cut into
one contiguous range per worker process and the results joined in order.

Workers are started with ``spawn`` (no fork of a process that may hold threads), once per scoring and only
when the work is big enough to pay for their start (about half a second); small evals run in the calling
process.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from typing import Any

__all__ = ["Workers", "PARALLEL_MIN", "worker_count"]

PARALLEL_MIN = 4000  # texts to score (items × systems) below which one process is faster


def worker_count() -> int:
    try:
        cores = len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        cores = os.cpu_count() or 1
    return max(1, min(cores, 8))


class Workers:
    """A pool of worker processes, started on first need and shared by every metric of one scoring."""

    def __init__(self, min_work: int = PARALLEL_MIN) -> None:
        self.min_work = min_work
        self.count = worker_count()
        self._pool: Any = None

    def run_chunked(self, fn: Callable[..., Any], n: int, args_of: Callable[[int, int], tuple], *,
                    work: int) -> list[Any]:
        """``fn(*args_of(a, b))`` for ranges ``[a, b)`` covering ``range(n)``; in the workers when ``work``
        is at least ``min_work`` and there are several cores. Returns each range's result, in order."""
        if self.count < 2 or work < self.min_work or n < 2 * self.count:
            return [fn(*args_of(0, n))]
        if self._pool is None:
            import multiprocessing
            from concurrent.futures import ProcessPoolExecutor

            self._pool = ProcessPoolExecutor(self.count, mp_context=multiprocessing.get_context("spawn"))
        bounds = [n * k // self.count for k in range(self.count + 1)]
        futures = [self._pool.submit(fn, *args_of(a, b)) for a, b in zip(bounds, bounds[1:], strict=False)]
        return [f.result() for f in futures]

    def close(self) -> None:
        if self._pool is not None:
            self._pool.shutdown()
            self._pool = None

    def __enter__(self) -> Workers:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
