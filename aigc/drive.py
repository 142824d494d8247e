"""Driving flows: each step's requests go out through the engine, concurrently where they can, and the
completions go back into the flow; the totals become the task's :class:`~aigc.types.Result`.

:class:`FlowDriver` is mixed into :class:`~aigc.engine.Engine`; it relies on the engine's ``execute_many``,
``aexecute_many`` (which return failures in place), ``stream``, ``astream``, ``backend`` and ``concurrency``.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

from .errors import AigcError
from .flows import Flow, Outcome, Step
from .types import Completion, Result, Usage


@dataclass
class Sent:
    """One executed request with its accounting."""

    completion: Completion
    attempts: int
    cost_usd: float | None
    cached: bool = False  # answered from the response cache: nothing was sent or spent
    backend: str | None = None  # the backend that answered, when not the engine's own (a failover)
    failover: str | None = None  # why it answered instead
    window_full: bool = False  # cut short because the prompt left too little of the context window


@dataclass
class _Tally:
    """Totals of one task across its requests."""

    usage: Usage = field(default_factory=Usage)
    cost_usd: float | None = 0.0
    attempts: int = 0
    requests: int = 0
    model: str = ""
    response_format: str | None = None
    window_full: bool = False
    warnings: list[str] = field(default_factory=list)
    backend: str | None = None
    failover: str | None = None

    def add(self, sent: Sent) -> None:
        c = sent.completion
        self.window_full |= sent.window_full and c.finish_reason == "length"
        if sent.failover is not None:
            self.backend, self.failover = sent.backend, sent.failover
            if sent.failover not in self.warnings:
                self.warnings.append(sent.failover)
        if sent.cached:
            self.model = c.model
            self.requests += 1
            if "served from the response cache" not in self.warnings:
                self.warnings.append("served from the response cache")
            return
        self.usage = self.usage + (c.usage or Usage())
        self.cost_usd = None if self.cost_usd is None or sent.cost_usd is None else self.cost_usd + sent.cost_usd
        self.attempts += sent.attempts
        self.requests += 1
        self.model = c.model
        self.response_format = c.response_format or self.response_format
        if c.usage_estimated and not any("usage" in w for w in self.warnings):
            self.warnings.append("the server reported no usage; tokens were counted locally")
        elif c.usage_via and not any("usage" in w for w in self.warnings):
            self.warnings.append(f"the usage of a streamed answer came from {c.usage_via}, which counts tokens "
                                 "itself when the server behind it reports none: it may be an estimate")
        if c.response_format in ("json_object", "prompt") and not any("json_schema" in w for w in self.warnings):
            how = "valid JSON only" if c.response_format == "json_object" else "nothing"
            self.warnings.append(f"the server did not enforce the json_schema response format ({how} was "
                                 f"enforced); the schema was asked for in the prompt and checked here")

    def probed(self, flow: Flow, answer: Any) -> Step:
        """Count what a probe computed (label scoring has usage; a moderation check has none) and hand its
        answer to the flow."""
        usage = getattr(answer, "usage", None)
        if isinstance(usage, Usage):
            self.usage = self.usage + usage
            self.requests += 1
            self.model = getattr(answer, "model", self.model)
        return flow.send(answer)

    def feed(self, flow: Flow, outcomes: list) -> Step:
        """Count a step's requests and hand their completions to the flow; its next step comes back. A failed
        request's error is thrown into the flow instead (the requests that did finish are still counted),
        where a flow that can do better (re-plan for a smaller window) catches it; others let it through."""
        failed = next((o for o in outcomes if isinstance(o, BaseException)), None)
        for sent in outcomes:
            if not isinstance(sent, BaseException):
                self.add(sent)
        if failed is not None:
            return flow.throw(failed)
        return flow.send([sent.completion for sent in outcomes])

    def result(self, outcome: Outcome, task: str, backend: str, started: float) -> Result:
        return Result(
            text=outcome.text, task=task, model=self.model, backend=self.backend or backend,
            failover=self.failover, redactions=outcome.redactions,
            finish_reason=outcome.finish_reason, usage=self.usage, cost_usd=self.cost_usd,
            latency_s=round(time.perf_counter() - started, 6), attempts=self.attempts,
            requests=self.requests, reasks=outcome.reasks, parsed=outcome.parsed, logprobs=outcome.logprobs,
            response_format=self.response_format, warnings=[*self.warnings, *outcome.warnings],
            cut_by=None if outcome.finish_reason != "length" else
            "context_window" if self.window_full else "max_output_tokens",
        )


class FlowDriver:
    """Sync, async, streaming and many-at-once drivers over one engine."""

    def run(self, flow: Flow, task: str) -> Result:
        """Run a flow to its Result."""
        *_, result = self._drive(flow, task, stream=False)
        return result

    def run_stream(self, flow: Flow, task: str) -> Iterator[str | Result]:
        """Like :meth:`run`, yielding the text of streamable steps as it arrives, then the Result."""
        return self._drive(flow, task, stream=True)

    async def arun(self, flow: Flow, task: str) -> Result:
        async for item in self._adrive(flow, task, stream=False):
            result = item
        return result

    def arun_stream(self, flow: Flow, task: str) -> AsyncIterator[str | Result]:
        return self._adrive(flow, task, stream=True)

    def _drive(self, flow: Flow, task: str, stream: bool) -> Iterator[str | Result]:
        started, tally, shown = time.perf_counter(), _Tally(), False
        try:
            step: Step = next(flow)
            while True:
                if stream and step.emit:
                    shown = True
                    yield step.emit
                if step.probe is not None:
                    step = tally.probed(flow, step.probe.run(self))
                    continue
                if stream and step.streamable and len(step.requests) == 1:
                    view = _Shown(step)
                    try:
                        for piece in self.stream(step.requests[0], task):
                            if text := view.take(piece):
                                shown = True
                                yield text
                    except AigcError as e:
                        view.failed(e)
                    for text in view.ending():
                        yield text
                    shown, sents = shown or view.showed, view.sents
                else:
                    sents = self.execute_many(step.requests, task)
                step = tally.feed(flow, sents)
        except StopIteration as stop:
            if stream and not shown and stop.value.text:
                yield stop.value.text  # nothing streamed (structured output, a label): the text, whole
            yield tally.result(stop.value, task, self.backend.name, started)

    async def _adrive(self, flow: Flow, task: str, stream: bool) -> AsyncIterator[str | Result]:
        """Async twin of :meth:`_drive`."""
        started, tally, shown = time.perf_counter(), _Tally(), False
        try:
            step: Step = next(flow)
            while True:
                if stream and step.emit:
                    shown = True
                    yield step.emit
                if step.probe is not None:
                    step = tally.probed(flow, await step.probe.arun(self))
                    continue
                if stream and step.streamable and len(step.requests) == 1:
                    view = _Shown(step)
                    try:
                        async for piece in self.astream(step.requests[0], task):
                            if text := view.take(piece):
                                shown = True
                                yield text
                    except AigcError as e:
                        view.failed(e)
                    for text in view.ending():
                        yield text
                    shown, sents = shown or view.showed, view.sents
                else:
                    sents = await self.aexecute_many(step.requests, task)
                step = tally.feed(flow, sents)
        except StopIteration as stop:
            if stream and not shown and stop.value.text:
                yield stop.value.text  # nothing streamed (structured output, a label): the text, whole
            yield tally.result(stop.value, task, self.backend.name, started)

    def run_many(self, flows: list[Flow], task: str) -> list[Result | AigcError]:
        """Run many flows in lockstep so each round's requests go out together (batched or concurrent).
        Every flow gets its place in the list: a Result, or the error that ended it."""
        started = time.perf_counter()
        tallies = [_Tally() for _ in flows]
        steps: dict[int, Step] = {}
        done: dict[int, Any] = {}
        for i, flow in enumerate(flows):
            self._advance(i, flow, None, steps, done, tallies, task, started)
        while steps:
            probing = [i for i in steps if steps[i].probe is not None]
            if probing:  # this round's quick checks (moderation) go out together too
                answers = self._run_probes([steps.pop(i).probe for i in probing])
                for i, answer in zip(probing, answers, strict=True):
                    if isinstance(answer, AigcError):
                        done[i] = answer
                    else:
                        self._advance(i, flows[i], answer, steps, done, tallies, task, started, probed=True)
                continue
            order = list(steps)
            requests = [(i, r) for i in order for r in steps[i].requests]
            outcomes = self.execute_many([r for _, r in requests], task)
            by_flow: dict[int, list] = {i: [] for i in order}
            for (i, _), out in zip(requests, outcomes, strict=True):
                by_flow[i].append(out)
            for i in order:
                del steps[i]
                self._advance(i, flows[i], by_flow[i], steps, done, tallies, task, started)
        return [done[i] for i in range(len(flows))]

    def _run_probes(self, probes: list[Any]) -> list[Any]:
        """Each probe's answer, or the aigc error it raised; at most ``concurrency`` at once."""
        def one(probe: Any) -> Any:
            try:
                return probe.run(self)
            except AigcError as e:
                return e

        if len(probes) == 1 or self.backend.prefers_batches:  # a local model scores one probe at a time
            return [one(p) for p in probes]
        with ThreadPoolExecutor(max_workers=min(self.concurrency, len(probes))) as pool:
            return list(pool.map(one, probes))

    async def arun_many(self, flows: list[Flow], task: str) -> list[Result | AigcError]:
        """Async twin of :meth:`run_many`: flows run concurrently (a local model batches them as they come)."""
        width = len(flows) if self.backend.prefers_batches else self.concurrency
        return await gather_caught(lambda flow: self.arun(flow, task), flows, width)

    def _advance(self, i, flow, answer, steps, done, tallies, task, started, probed: bool = False) -> None:
        """Flow ``i`` given ``answer`` (its requests' outcomes, or its probe's answer): its next step in
        ``steps``, or its end in ``done``."""
        try:
            if answer is None:
                steps[i] = next(flow)
            else:
                steps[i] = tallies[i].probed(flow, answer) if probed else tallies[i].feed(flow, answer)
        except StopIteration as stop:
            done[i] = tallies[i].result(stop.value, task, self.backend.name, started)
        except AigcError as e:
            done[i] = e


class _Shown:
    """A streamed step as the caller sees it: its text filter first, then the whitespace trim; the step's
    outcome (its Sent, or the error that ended it before any of its text was shown)."""

    def __init__(self, step: Step) -> None:
        self.filter = step.text_filter
        self.trim = _Trim() if step.strip else None
        self.trailer = step.trailer
        self.sents: list[Sent | AigcError] = []
        self.showed = False

    def take(self, piece: str | Sent) -> str:
        """The text to show for one streamed piece ("" for none)."""
        if isinstance(piece, Sent):
            self.sents.append(piece)
            return ""
        if self.filter is not None:
            piece = self.filter.feed(piece)
        text = self.trim.feed(piece) if self.trim is not None and piece else piece
        self.showed = self.showed or bool(text)
        return text

    def failed(self, error: AigcError) -> None:
        """The stream failed: the flow may plan again, unless text of it already reached the caller."""
        if self.showed:
            raise error
        self.sents = [error]

    def ending(self) -> list[str]:
        """What is left to show once the stream ended well: held-back text, then the step's trailer."""
        if not self.sents or isinstance(self.sents[-1], BaseException):
            return []
        rest = self.filter.flush() if self.filter is not None else ""
        rest = self.trim.feed(rest) if self.trim is not None and rest else rest
        self.showed = self.showed or bool(rest)
        return [text for text in (rest, self.trailer) if text]


class _Trim:
    """Streams text without its leading and trailing whitespace (trailing runs are held back until
    more text follows), matching what the flow's own assembly keeps."""

    def __init__(self) -> None:
        self.started = False
        self.held = ""

    def feed(self, piece: str) -> str:
        if not self.started:
            piece = piece.lstrip()
            self.started = bool(piece)
        body = piece.rstrip()
        if not body:
            self.held += piece
            return ""
        out, self.held = self.held + body, piece[len(body):]
        return out


async def gather_caught(run: Callable[[Any], Awaitable[Any]], items: list, width: int) -> list:
    """``run`` over ``items``, at most ``width`` at a time; an aigc error is returned in its item's place."""
    limit = asyncio.Semaphore(width)

    async def one(item: Any) -> Any:
        async with limit:
            try:
                return await run(item)
            except AigcError as e:
                return e

    return list(await asyncio.gather(*(one(item) for item in items)))
