"""A conversation: turns kept in the store, the history trimmed to the model's window, grounded on knowledge.

:class:`ConversationBase` plans each turn (the passages to give, which old turns still fit, whether a summary
of the trimmed ones must be made first) and records it; :class:`Conversation` and :class:`AsyncConversation`
only run the planned flow, blocking or awaited, plain or streamed. Every turn goes through the client's
engine and checks like any other call (retries, failover, budgets, ledger, redaction, moderation).

Trimming: the system prompt and the new message always stay; older turns are dropped, oldest first, until the
rest fits the window with room for the reply. With ``trim="summarize"`` the dropped turns are summarised (one
extra request, only when more turns drop) and the summary rides along in the system prompt. The result's
warnings say what was trimmed, and the store keeps the count.
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, field
from typing import Any

from ..errors import ContextLengthExceeded, InputError
from ..flows import Flow, Outcome, Step, silenced
from ..knowledge import Knowledge, Passage, content_terms
from ..streams import AsyncTextStream, TextStream
from ..tasks import OPTIONS, get_task
from ..types import ChatRequest, Message, Result
from .persona import Persona, load_persona
from .store import ConversationRecord, ConversationStore, Turn, new_id

__all__ = ["Conversation", "AsyncConversation", "ConversationBase", "TRIMS"]

TRIMS = ("drop", "summarize")
MARGIN = 32  # tokens kept free for counting differences
SUMMARY_TOKENS = 200  # the cap on a summary of trimmed turns (and the room kept for it)
TASK = "chat"


@dataclass
class _Plan:
    """One planned turn."""

    prompt: str
    flow: Flow
    engine: Any
    options: dict[str, Any]
    passages: list[Passage] = field(default_factory=list)
    trimmed: int = 0
    summarized: int | None = None  # the turns the new summary covers, when one is made
    sent: dict[str, Any] = field(default_factory=dict)  # filled by the flow: the messages, the new summary
    started: float = field(default_factory=time.perf_counter)


class ConversationBase:
    """Planning and recording turns, shared by both twins."""

    def __init__(self, client: Any, store: ConversationStore, record: ConversationRecord, persona: Persona,
                 knowledge: Knowledge | None, trim: str, saved: bool) -> None:
        self.client = client
        self.store = store
        self.record = record
        self.persona = persona
        self.knowledge = knowledge
        self.trim = trim
        self._saved = saved  # a new conversation is written on its first turn

    @classmethod
    def open(cls, client: Any, store: ConversationStore, *, persona: str | None = None,
             knowledge: list[str] | None = None, system: str | None = None, id: str | None = None,
             trim: str | None = None) -> Any:
        """A new conversation, or the stored one ``id`` names (an id, its start, or ``last``) resumed with its
        persona, knowledge, system prompt and trim mode unless these are given again."""
        record = store.find(id) if id is not None else None
        if record is None:
            record = ConversationRecord(id=new_id(), model=client.model, backend=client.backend.name)
        record.persona = persona or record.persona or "assistant"
        record.system = system if system is not None else record.system
        paths = knowledge if knowledge is not None else record.knowledge
        trim = trim or record.options.get("trim") or "drop"
        if trim not in TRIMS:
            raise InputError(f"trim must be one of {', '.join(TRIMS)}, not {trim!r}")
        loaded = load_persona(client.templates, record.persona)
        model = client.model
        counter = client.backend.text_counter(model) or (lambda text: client.backend.count_text(text, model))
        library = Knowledge.load(paths, counter) if paths else None
        if loaded.needs_knowledge and library is None:
            raise InputError(f"the {record.persona} persona answers only from knowledge files: give some "
                             "(--knowledge faq.md, knowledge=[...])")
        record.knowledge = library.paths if library else []
        record.options = {**record.options, "trim": trim}
        if id is not None:  # what was given again is what the conversation goes on with, now and when resumed
            store.update(record.id, persona=record.persona, system=record.system, knowledge=record.knowledge,
                         options=record.options)
        return cls(client, store, record, loaded, library, trim, saved=id is not None)

    @property
    def id(self) -> str:
        return self.record.id

    def turns(self) -> list[Turn]:
        """The stored turns, oldest first."""
        return self.store.turns(self.id) if self._saved else []

    def set_system(self, text: str | None) -> None:
        """Replace the system prompt for the turns to come (None: the persona's own again)."""
        self.record.system = text or None
        if self._saved:
            self.store.update(self.id, system=self.record.system)

    def reset(self) -> None:
        """Start a new conversation with the same persona, knowledge, system prompt and trim mode."""
        self.record = dataclasses.replace(self.record, id=new_id(), name=None, summary=None, summarized_turns=0,
                                          created="")
        self._saved = False

    # -- planning ---------------------------------------------------------------------------------------
    def plan(self, text: str, opts: dict[str, Any]) -> _Plan:
        if not text.strip():
            raise InputError("the message is empty")
        unknown = sorted(set(opts) - set(OPTIONS) - {"max_tokens", "stream"})
        if unknown:
            raise TypeError(f"say() got an unexpected keyword argument {unknown[0]!r}")
        opts = {("max_output_tokens" if k == "max_tokens" else k): v for k, v in opts.items() if v is not None}
        client = self.client
        history = self.turns()
        engine = client.engine.with_budget(opts["budget"]) if opts.get("budget") is not None else client.engine
        if self.knowledge is not None:
            count = self._counter(opts)
            # A follow-up with no words of its own ("Why?") is about what the previous question was.
            query = text if content_terms(text) or not history else history[-1].prompt
            passages = self.knowledge.select(query, self.persona.knowledge_tokens, count)
            if not passages and self.persona.no_answer:
                note = ("no knowledge passage matched the question: the persona's no_answer reply was given "
                        "without asking the model")
                return _Plan(text, _canned(self.persona.no_answer, note), engine, opts)
        else:
            passages = []
        plan = _Plan(text, iter(()), engine, opts, passages=passages)
        plan.flow = client.guarded(self._turn_flow(plan, history), get_task(TASK),
                                   {"messages": [{"role": "user", "content": text}]}, opts)
        return plan

    def _counter(self, opts: dict[str, Any]) -> Any:
        backend, model = self.client.backend, opts.get("model") or self.client.model
        return lambda text: backend.count_text(text, model)

    def _request(self, plan: _Plan, summary: str | None, turns: list[Turn]) -> ChatRequest:
        system, user = self.persona.render(message=plan.prompt, system=self.record.system, summary=summary,
                                           passages=[{"source": p.source, "text": p.text} for p in plan.passages])
        history = [m for t in turns for m in (Message(role="user", content=t.prompt),
                                              Message(role="assistant", content=t.response))]
        task = dataclasses.replace(get_task(TASK), defaults=self.persona.defaults)
        return self.client.build_request(task, {"messages": [*([system] if system else []), *history, user]},
                                         plan.options)

    def _turn_flow(self, plan: _Plan, history: list[Turn]) -> Flow:
        """Trim (and summarise) the history to fit, then send the turn."""
        client, summarizing = self.client, self.trim == "summarize"
        summary = self.record.summary if summarizing else None
        first = self._request(plan, summary, [])
        info = client.engine.model_info(first.model)
        reply = first.max_output_tokens or client.engine.default_cap(info)
        room = info.context_window - reply - MARGIN - (SUMMARY_TOKENS if summarizing and history else 0)
        count = client.backend.count_tokens
        fixed = count(first.messages, first.model)
        if fixed > room:
            raise ContextLengthExceeded(f"the message and the system prompt take {fixed} tokens; with a "
                                        f"{reply}-token reply they do not fit the {info.context_window}-token window "
                                        f"of {first.model}: shorten them or lower max_output_tokens")
        sizes = [count([Message(role="user", content=t.prompt), Message(role="assistant", content=t.response)],
                       first.model) - 3 for t in history]
        kept, used = 0, fixed
        for size in reversed(sizes):
            if used + size > room:
                break
            used, kept = used + size, kept + 1
        start = len(history) - kept
        notes = []
        if start:
            plan.trimmed = start
            how = "summarized" if summarizing else "dropped"
            notes.append(f"trimmed: {how} the {start} oldest turn(s) to fit the {info.context_window}-token "
                         f"window of {first.model}")
        if summarizing and start > self.record.summarized_turns:
            done = yield from self._summary_flow(history[self.record.summarized_turns:start], plan.options)
            summary = plan.sent["summary"] = done.text.strip()
            plan.summarized = start
        elif summarizing:
            start = max(start, self.record.summarized_turns)
        request = self._request(plan, summary, history[start:])
        plan.sent["messages"] = [m.model_dump(exclude_none=True) for m in request.messages]
        [completion] = yield Step([request], streamable=True)
        if plan.passages:
            notes.append("knowledge passages given: " + ", ".join(
                f"[{i}] {p.source}" for i, p in enumerate(plan.passages, 1)))
        return Outcome(completion.text, completion.finish_reason, warnings=notes)

    def _summary_flow(self, turns: list[Turn], opts: dict[str, Any]) -> Flow:
        earlier = f"Summary of the conversation so far: {self.record.summary}\n\n" if self.record.summary else ""
        transcript = earlier + "\n\n".join(f"User: {t.prompt}\nAssistant: {t.response}" for t in turns)
        task = get_task("summarize")
        variables = task.check({"text": transcript, "length": "at most 100 words",
                                "focus": "what the user asked and was told: names, numbers, decisions"})
        flow = self.client.task_flow(task, variables, {"model": opts.get("model"),
                                                       "max_output_tokens": SUMMARY_TOKENS})
        # The summary is for the model, not the reader: none of it streams.
        return silenced(flow)

    # -- recording --------------------------------------------------------------------------------------
    def record_turn(self, plan: _Plan, result: Result) -> Turn:
        """Keep a finished turn (and a new summary) in the store."""
        if not self._saved:
            self.store.create(self.record)
            self._saved = True
        if plan.summarized is not None:
            self.record.summary, self.record.summarized_turns = plan.sent["summary"], plan.summarized
            self.store.update(self.id, summary=self.record.summary, summarized_turns=plan.summarized)
        options = {k: v for k, v in plan.options.items() if isinstance(v, str | int | float | bool)}
        details = result.model_dump(mode="json", include={"finish_reason", "warnings", "failover", "requests",
                                                          "attempts", "redactions", "usage"})
        turn = Turn(prompt=plan.prompt, response=result.text, model=result.model or self.client.model,
                    backend=result.backend, persona=self.persona.name, system=self.record.system,
                    messages=plan.sent.get("messages", []), options=options, details=details,
                    duration_ms=int((time.perf_counter() - plan.started) * 1000),
                    input_tokens=result.usage.prompt_tokens, output_tokens=result.usage.completion_tokens,
                    cost_usd=result.cost_usd, trimmed_turns=plan.trimmed,
                    passages=[{"source": p.source, "text": p.text} for p in plan.passages])
        return self.store.add(self.id, turn)

    def close(self) -> None:
        self.store.close()


def _canned(text: str, note: str) -> Flow:
    """A reply that needs no request."""
    return Outcome(text, "stop", warnings=[note])
    yield  # a generator, like every flow


class Conversation(ConversationBase):
    """``conversation.say(text)`` → Result; ``say(text, stream=True)`` → TextStream (recorded once read)."""

    def say(self, text: str, *, stream: bool = False, **opts: Any) -> Result | TextStream:
        plan = self.plan(text, opts)
        if stream:
            return TextStream(self._recorded(plan, plan.engine.run_stream(plan.flow, TASK)))
        result = plan.engine.run(plan.flow, TASK)
        self.record_turn(plan, result)
        return result

    def _recorded(self, plan: _Plan, pieces: Iterator[str | Result]) -> Iterator[str | Result]:
        for piece in pieces:
            if isinstance(piece, Result):
                self.record_turn(plan, piece)
            yield piece

    def __enter__(self) -> Conversation:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()


class AsyncConversation(ConversationBase):
    """``await conversation.say(text)``; with ``stream=True`` an AsyncTextStream, recorded once read."""

    async def say(self, text: str, *, stream: bool = False, **opts: Any) -> Result | AsyncTextStream:
        plan = self.plan(text, opts)
        if stream:
            return AsyncTextStream(self._recorded(plan, plan.engine.arun_stream(plan.flow, TASK)))
        result = await plan.engine.arun(plan.flow, TASK)
        self.record_turn(plan, result)
        return result

    async def _recorded(self, plan: _Plan, pieces: AsyncIterator[str | Result]) -> AsyncIterator[str | Result]:
        async for piece in pieces:
            if isinstance(piece, Result):
                self.record_turn(plan, piece)
            yield piece

    async def __aenter__(self) -> AsyncConversation:
        return self

    async def __aexit__(self, *exc: Any) -> None:
        self.close()
