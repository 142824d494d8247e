"""Prometheus metrics, named after vLLM's under an ``aigc:`` prefix so existing dashboards work.

    aigc:num_requests_running            requests generating now
    aigc:num_requests_waiting            requests admitted and waiting for a place on the model
    aigc:queue_depth                     requests in the server (running + waiting), the queue bound's count
    aigc:time_to_first_token_seconds     streamed requests: arrival to first text
    aigc:e2e_request_latency_seconds     arrival to the last byte
    aigc:prompt_tokens_total             prompt tokens of finished requests
    aigc:generation_tokens_total         tokens generated (local model: counted as they are made)
    aigc:batch_size                      rows in each decode step of the local model
    aigc:requests_total{endpoint,status} answered requests
    aigc:requests_cancelled_total        requests whose client went away before the end
    aigc:requests_rejected_total{reason} 401, 429 and 503 answers by cause
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

__all__ = ["Metrics"]

_LATENCY = (0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 0.75, 1.0, 2.5, 5.0, 7.5, 10.0, 20.0, 40.0, 80.0, 160.0)
_TTFT = (0.001, 0.005, 0.01, 0.02, 0.04, 0.06, 0.08, 0.1, 0.25, 0.5, 0.75, 1.0, 2.5, 5.0, 7.5, 10.0, 20.0)
_BATCH = (1, 2, 4, 8, 16, 24, 32, 48, 64, 96, 128, 256)


class Metrics:
    """One registry per app (tests run several apps in one process).

    ``running``, ``waiting`` and ``queue_depth`` are read at each scrape; so is ``live()``, the local decode
    loop's counters (None for other backends), which supply the generated tokens and batch sizes as they
    happen. Without a live loop, generated tokens are added as requests finish (:meth:`add_generated`).
    """

    def __init__(self, running: Callable[[], float], waiting: Callable[[], float],
                 queue_depth: Callable[[], float], live: Callable[[], Any] = lambda: None) -> None:
        from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

        self.registry = r = CollectorRegistry()
        self._live = live
        self._generated = 0
        Gauge("aigc:num_requests_running", "Requests generating now.", registry=r).set_function(running)
        Gauge("aigc:num_requests_waiting", "Requests waiting for a place on the model.",
              registry=r).set_function(waiting)
        Gauge("aigc:queue_depth", "Requests in the server (running and waiting).", registry=r).set_function(
            queue_depth)
        self.ttft = Histogram("aigc:time_to_first_token_seconds", "Arrival to first streamed text.",
                              buckets=_TTFT, registry=r)
        self.e2e = Histogram("aigc:e2e_request_latency_seconds", "Arrival to the end of the answer.",
                             buckets=_LATENCY, registry=r)
        self.prompt_tokens = Counter("aigc:prompt_tokens", "Prompt tokens of finished requests.", registry=r)
        self.requests = Counter("aigc:requests", "Answered requests.", ["endpoint", "status"], registry=r)
        self.cancelled = Counter("aigc:requests_cancelled", "Requests whose client went away.", registry=r)
        self.rejected = Counter("aigc:requests_rejected", "Requests turned away.", ["reason"], registry=r)
        r.register(self)

    def add_generated(self, tokens: int) -> None:
        if self._live() is None:
            self._generated += tokens

    def describe(self) -> list:
        return []

    def collect(self) -> Iterator[Any]:
        """The live part: generated tokens and the decode loop's batch sizes."""
        from prometheus_client.core import CounterMetricFamily, HistogramMetricFamily

        stats = self._live()
        yield CounterMetricFamily("aigc:generation_tokens", "Generated tokens.",
                                  value=stats.tokens if stats is not None else self._generated)
        if stats is None:
            return
        counts = dict(stats.batch_sizes)
        buckets, running = [], 0
        for bound in _BATCH:
            running = sum(n for size, n in counts.items() if size <= bound)
            buckets.append((str(float(bound)), running))
        buckets.append(("+Inf", sum(counts.values())))
        yield HistogramMetricFamily("aigc:batch_size", "Rows in each decode step of the local model.",
                                    buckets=buckets, sum_value=sum(size * n for size, n in counts.items()))

    def render(self) -> tuple[bytes, str]:
        from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

        return generate_latest(self.registry), CONTENT_TYPE_LATEST
