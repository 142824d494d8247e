"""Inputs longer than the context window: split, work on the parts, recombine — never an oversize request.

- summarize: map-reduce. Each part is summarized, then the part summaries are merged, in rounds, until
  they fit one final request.
- news: the facts are condensed the same way, then one article is written from the condensed notes.
- translate: the document is cut at markdown block boundaries; code blocks are never sent; parts are
  translated independently and reassembled in order with the original spacing.
- answer: the context is cut into passages and the ones most relevant to the question (BM25 over words)
  are kept, in document order, up to what fits.

Sizes come from the backend's own tokenizer and context window, so the same rules hold on local models.
A task declares which of these it uses (:attr:`aigc.tasks.Task.long_input`: ``condense``, ``translate``
or ``select``); the planner reads the declaration.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from pydantic import BaseModel

from . import chunking
from .errors import ContextLengthExceeded
from .flows import Flow, Outcome, Step
from .types import ChatRequest

if TYPE_CHECKING:
    from .engine import EngineBase
    from .tasks import Task

# Builds a request from a template name (None: the task's own) and its variables, the call's options applied.
Build = Callable[[str | None, dict[str, Any]], ChatRequest]

MARGIN = 32  # tokens kept free for counting differences between us and the server
PASSAGE_TOKENS = 300  # passage size when picking context for answers


class Estimate(BaseModel):
    """What a call would send: for ``--dry-run`` and ``aigc tokens``."""

    task: str
    backend: str
    model: str
    input_tokens: int
    context_window: int
    requests: int
    prompt_tokens: int
    max_output_tokens: int
    max_cost_usd: float | None
    split: bool


class Planner:
    """Plans one task call whose input may not fit in one request."""

    def __init__(self, engine: EngineBase, build: Build, task: Task, variables: dict[str, Any],
                 stream: bool = False) -> None:
        self.engine = engine
        self.backend = engine.backend
        self.build = build
        self.task = task
        self.variables = variables
        self.stream = stream
        self.model = build(None, variables).model
        self.info = engine.model_info(self.model)
        self.window = self.info.context_window
        # The tokenizer itself when the backend offers it (fast), else a counting function.
        self.counter = self.backend.text_counter(self.model) or self.count

    # -- sizes ------------------------------------------------------------------------------------------
    def count(self, text: str) -> int:
        return self.backend.count_text(text, self.model)

    def request(self, template: str | None = None, **variables: Any) -> ChatRequest:
        return self.build(template, {**self.variables, **variables})

    def prompt_tokens(self, request: ChatRequest) -> int:
        return self.backend.count_tokens(request.messages, request.model)

    def room(self, input_var: str, reply: int, template: str | None = None, **variables: Any) -> int:
        """Tokens left for the input variable once the template, the reply and a margin are counted."""
        empty = self.request(template, **{input_var: ""}, **variables)
        return self.window - self.prompt_tokens(empty) - reply - MARGIN

    def reply_cap(self, request: ChatRequest) -> int:
        return request.max_output_tokens or self.engine.default_cap(self.info)

    # -- flows ------------------------------------------------------------------------------------------
    def flow(self) -> Flow:
        """The task's declared strategy over its input."""
        strategy = self.task.long_input
        if strategy is None or self.task.input is None:
            raise ContextLengthExceeded(
                f"the input to {self.task.name} does not fit the context window of {self.model} "
                f"({self.window} tokens), and {self.task.name} cannot split it; shorten it or use a larger model")
        text = str(self.variables[self.task.input])
        return {"condense": self._condense, "translate": self._translate, "select": self._select}[strategy](text)

    def _parts(self, text: str, reply: int, template: str = "summarize") -> tuple[list[str], int]:
        room = self.room("text", reply, template, parts=99, part=99)
        if room < 64:
            raise_context(self.window, reply)
        return chunking.split(text, room, counter=self.counter), room

    def _condense(self, text: str) -> Flow:
        """Map-reduce: summarize parts, merge summaries until the final request fits, then finish."""
        summarizing, input_var = self.task.template == "summarize", self.task.input
        final_reply = self.reply_cap(self.request())
        map_reply = min(self.reply_cap(self.request("summarize", text="")), 600)
        parts, room = self._parts(text, map_reply)
        map_reply = min(map_reply, max(64, room // 3))  # a merge round must shrink the notes
        focus = None if summarizing else "facts, names, numbers, dates and quotes"
        requests = [self.request("summarize", text=p, part=i + 1, parts=len(parts), focus=focus,
                                 combine=False).model_copy(update={"max_output_tokens": map_reply})
                    for i, p in enumerate(parts)]
        completions = yield Step(requests)
        notes = [c.text.strip() for c in completions]
        warnings = [f"the input was split into {len(parts)} parts and summarized in rounds"]
        truncated = any(c.finish_reason == "length" for c in completions)
        final_vars = {"combine": True} if summarizing else {}
        while True:
            joined = "\n\n".join(notes)
            final = self.request(None, **{input_var: joined}, **final_vars)
            if self.prompt_tokens(final) + final_reply + MARGIN <= self.window:
                break
            merge_room = self.room("text", map_reply, "summarize", combine=True)
            groups = _pack(notes, merge_room, self.count)
            if len(groups) >= len(notes):
                raise_context(self.window, map_reply)  # notes this long cannot be merged in this window
            merges = [self.request("summarize", text="\n\n".join(g), combine=True)
                      .model_copy(update={"max_output_tokens": map_reply}) for g in groups]
            completions = yield Step(merges)
            truncated |= any(c.finish_reason == "length" for c in completions)
            notes = [c.text.strip() for c in completions]
        [done] = yield Step([final], streamable=True)
        if truncated:
            warnings.append("some part summaries hit the output limit")
        return Outcome(done.text, done.finish_reason, warnings=warnings)

    def _translate(self, text: str) -> Flow:
        """Translate block groups independently and reassemble; code blocks are passed through."""
        max_out = self.info.max_output_tokens
        source = self.task.input
        empty = self.prompt_tokens(self.request(**{source: ""}))
        # The reply is about as long as the input; leave room for a 2x expansion.
        size = min((self.window - empty - MARGIN - 64) // 3, (max_out - 64) // 2, 1500)
        if size < 32:
            raise_context(self.window, 64)
        groups = chunking.group_blocks(chunking.markdown_blocks(text), size, self.counter)
        pieces: list[tuple[str, ChatRequest | None, str, str]] = []
        for group in groups:
            body = "".join(b.text for b in group)
            if not any(b.translatable for b in group) or not body.strip():
                pieces.append((body, None, "", ""))
                continue
            lead, core, trail = _split_ws(body)
            request = self.request(**{source: core}).model_copy(
                update={"max_output_tokens": min(max_out, 2 * self.count(core) + 64)})
            pieces.append(("", request, lead, trail))
        requests = [p[1] for p in pieces if p[1] is not None]
        out: list[str] = []
        finish = "stop"
        if self.stream:
            for literal, request, lead, trail in pieces:
                if request is None:
                    yield Step([], emit=literal)
                    out.append(literal)
                    continue
                [c] = yield Step([request], streamable=True, emit=lead, strip=True, trailer=trail)
                out.append(lead + c.text.strip() + trail)
                finish = "length" if c.finish_reason == "length" else finish
        else:
            completions = iter((yield Step(requests)))
            for literal, request, lead, trail in pieces:
                if request is None:
                    out.append(literal)
                    continue
                c = next(completions)
                out.append(lead + c.text.strip() + trail)
                finish = "length" if c.finish_reason == "length" else finish
        warnings = [f"the input was translated in {len(requests)} parts"]
        return Outcome("".join(out), finish, warnings=warnings)

    def query(self) -> str:
        """What passages are chosen for: the task's first required parameter besides its input."""
        name = next(p.name for p in self.task.params if p.required and p.name != self.task.input)
        return str(self.variables[name])

    def _select(self, context: str) -> Flow:
        """Keep the passages most relevant to the question that fit, in document order."""
        source = self.task.input
        reply = self.reply_cap(self.request(**{source: "x"}))
        room = self.room(source, reply)
        if room < 64:
            raise_context(self.window, reply)
        passages = chunking.split(context, min(PASSAGE_TOKENS, room), counter=self.counter)
        keep = chunking.select_relevant(passages, self.query(), room - 8 * len(passages), self.counter)
        chosen = "\n\n[...]\n\n".join(passages[i] for i in keep)
        [done] = yield Step([self.request(**{source: chosen})], streamable=True)
        note = (f"the context was too long; used the {len(keep)} of {len(passages)} passages "
                f"most relevant to the question (BM25 word match)")
        return Outcome(done.text, done.finish_reason, warnings=[note])

    # -- estimates --------------------------------------------------------------------------------------
    def estimate(self, request: ChatRequest, *, batch: bool = False) -> Estimate:
        """What the call would send (``batch``: priced at Batch API rates), nothing being sent."""
        engine, source, strategy = self.engine, self.task.input, self.task.long_input
        text = str(self.variables.get(source) or "") if source and isinstance(self.variables.get(source), str) else ""
        prompt = self.prompt_tokens(request)
        fits = prompt + self.reply_cap(request) <= self.window
        if fits or strategy is None:
            cap = engine.output_cap(request, prompt) if fits else self.reply_cap(request)
            calls = [(prompt, cap)]
        elif strategy == "select":
            reply = self.reply_cap(request)
            calls = [(self.window - reply - MARGIN, reply)]
        elif strategy == "translate":
            calls = self._estimate_translate(text)
        else:
            calls = self._estimate_condense(text)
        costs = [engine.price(self.model, p, c, batch=batch) for p, c in calls]
        return Estimate(
            task=self.task.name, backend=self.backend.name, model=self.model, input_tokens=self.count(text),
            context_window=self.window, requests=len(calls), prompt_tokens=sum(p for p, _ in calls),
            max_output_tokens=sum(c for _, c in calls),
            max_cost_usd=None if any(c is None for c in costs) else round(sum(costs), 6), split=not fits)

    def _estimate_translate(self, text: str) -> list[tuple[int, int]]:
        flow = self._translate(text)
        step = next(flow)
        while not step.requests:
            step = flow.send([])
        max_out = self.info.max_output_tokens
        return [(self.prompt_tokens(r), min(max_out, r.max_output_tokens or max_out)) for r in step.requests]

    def _estimate_condense(self, text: str) -> list[tuple[int, int]]:
        map_reply = min(self.reply_cap(self.request("summarize", text="")), 600)
        parts, room = self._parts(text, map_reply)
        map_reply = min(map_reply, max(64, room // 3))
        calls = [(self.count(p) + (self.window - room - map_reply - MARGIN), map_reply) for p in parts]
        notes = len(parts)
        per_merge = max(2, room // map_reply)
        while notes * map_reply > room:  # merge rounds, assuming every note uses its whole cap
            notes = math.ceil(notes / per_merge)
            calls += [(room, map_reply)] * notes
        final_reply = self.reply_cap(self.request())
        calls.append((min(self.window - final_reply, notes * map_reply + 200), final_reply))
        return calls


def raise_context(window: int, reply: int) -> None:
    raise ContextLengthExceeded(
        f"the context window ({window} tokens) is too small for the template and a {reply}-token reply; "
        "use a model with a larger context or lower max_output_tokens")


def _pack(texts: list[str], budget: int, count) -> list[list[str]]:
    groups: list[list[str]] = [[]]
    used = 0
    for t in texts:
        n = count(t) + 2
        if groups[-1] and used + n > budget:
            groups.append([])
            used = 0
        groups[-1].append(t)
        used += n
    return groups


def _split_ws(text: str) -> tuple[str, str, str]:
    core = text.strip()
    start = text.find(core)
    return text[:start], core, text[start + len(core):]
