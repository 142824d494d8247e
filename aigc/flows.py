"""Task logic as generators that yield requests and receive completions (no I/O here).

A flow yields :class:`Step` objects; the driver (sync or async, see :mod:`aigc.drive`) executes each step's
requests, concurrently where it can, and sends back the completions in order. The flow returns an
:class:`Outcome`. Writing each task once this way keeps sync, async, streaming and batch behaviour equal.
"""

from __future__ import annotations

import dataclasses
import json
import re
from collections.abc import Callable, Generator
from dataclasses import dataclass, field
from typing import Any, Protocol

from pydantic import BaseModel, ValidationError

from .errors import OutputInvalid
from .types import ChatRequest, Completion, Message, TokenLogprob


class Probe(Protocol):
    """A call that generates no text (a moderation check, scoring labels): the driver runs it on its engine
    and sends its answer back to the flow in place of completions."""

    def run(self, engine: Any) -> Any: ...

    async def arun(self, engine: Any) -> Any: ...


class TextFilter(Protocol):
    """Rewrites streamed text piece by piece (e.g. putting redacted values back); ``flush`` at the end."""

    def feed(self, piece: str) -> str: ...

    def flush(self) -> str: ...


@dataclass
class Step:
    requests: list[ChatRequest]
    # True for a single request whose text goes to the caller as is: the driver may stream it.
    streamable: bool = False
    # When streaming: text to pass to the caller before / after this step's streamed text, and whether
    # to strip the streamed text's surrounding whitespace (the flow's own assembly strips it too).
    emit: str = ""
    strip: bool = False
    trailer: str = ""
    # Instead of requests: one probe, whose answer the flow receives.
    probe: Probe | None = None
    # When streaming: what the streamed text passes through before it reaches the caller.
    text_filter: TextFilter | None = None


@dataclass
class Outcome:
    text: str
    finish_reason: str | None
    parsed: Any = None
    reasks: int = 0
    warnings: list[str] = field(default_factory=list)
    redactions: dict[str, int] = field(default_factory=dict)  # counts only (see aigc.pii)
    logprobs: list[TokenLogprob] | None = None  # the answer's token log-probabilities, when asked for


Flow = Generator[Step, list[Completion], Outcome]


def wrapped(flow: Flow, *, step: Callable[[Step], Step] | None = None,
            reply: Callable[[Step, Any], Any] | None = None,
            outcome: Callable[[Outcome], Outcome] | None = None) -> Flow:
    """``flow`` with each step it yields, each answer sent back to it and its outcome passed through these
    functions (the safety checks and reviews wrap task flows this way). A failure the driver throws in goes
    on to ``flow``, which may handle it (a long input planned again for a smaller window)."""
    try:
        current = next(flow)
        while True:
            try:
                answer = yield step(current) if step else current
            except GeneratorExit:
                flow.close()
                raise
            except BaseException as e:
                current = flow.throw(e)
                continue
            current = flow.send(reply(current, answer) if reply else answer)
    except StopIteration as stop:
        return outcome(stop.value) if outcome else stop.value


def silenced(flow: Flow) -> Flow:
    """``flow`` with nothing of it shown to a streaming caller (no streamed text, emits or trailers)."""
    return wrapped(flow, step=lambda s: dataclasses.replace(s, streamable=False, emit="", trailer=""))


def single(request: ChatRequest) -> Flow:
    """One request; its text is the answer."""
    [completion] = yield Step([request], streamable=True)
    return Outcome(completion.text, completion.finish_reason, logprobs=completion.logprobs)


# -- structured output ------------------------------------------------------------------------------

def strict_json_schema(model: type[BaseModel]) -> dict[str, Any]:
    """The model's JSON schema in the form strict structured output accepts."""

    def fix(node: Any) -> Any:
        if isinstance(node, dict):
            node = {k: fix(v) for k, v in node.items() if k not in ("title", "default")}
            if node.get("type") == "object" and "properties" in node:
                node["additionalProperties"] = False
                node["required"] = list(node["properties"])
            return node
        if isinstance(node, list):
            return [fix(v) for v in node]
        return node

    return {"name": re.sub(r"[^A-Za-z0-9_-]", "_", model.__name__)[:64],
            "schema": fix(model.model_json_schema()), "strict": True}


def schema_instruction(spec: dict[str, Any]) -> str:
    """The schema as an instruction in the prompt: for servers not known to enforce it, and for re-asks."""
    return ("Reply with a single JSON object and nothing else. It must validate against this JSON schema:\n"
            + json.dumps(spec.get("schema", spec), separators=(",", ":")))


_FENCE = re.compile(r"```(?:json)?\s*(.*?)```", re.S)


def extract_json(text: str) -> str:
    """The JSON in a reply, tolerating code fences and chatter around one object."""
    fenced = _FENCE.search(text)
    if fenced:
        text = fenced.group(1)
    start, end = text.find("{"), text.rfind("}")
    return text[start:end + 1] if 0 <= start < end else text.strip()


def _json_object(text: str) -> Any:
    """A JSON object, for a schema given as a plain dict (a Batch API request's response_format)."""
    try:
        value = json.loads(extract_json(text))
    except ValueError as e:
        raise ValidationError.from_exception_data("output", [{"type": "json_invalid", "loc": (),
                                                              "input": text, "ctx": {"error": str(e)}}]) from None
    if not isinstance(value, dict):
        raise ValidationError.from_exception_data("output", [{"type": "dict_type", "loc": (), "input": value}])
    return value


def structured(request: ChatRequest, schema: type[BaseModel] | dict[str, Any], max_reasks: int) -> Flow:
    """Ask for JSON matching ``schema`` (a pydantic model, or a JSON schema as ``{"name", "schema"}``);
    re-ask with the validation errors, at most ``max_reasks`` times."""
    if isinstance(schema, dict):
        spec, title = (schema if "schema" in schema else {"name": "output", "schema": schema}), "the JSON schema"
        parse = _json_object
    else:
        spec, title, parse = strict_json_schema(schema), schema.__name__, schema.model_validate_json

    def check(completion: Completion) -> Outcome | str:
        try:
            parsed = parse(extract_json(completion.text))
        except ValidationError as e:
            return "; ".join(f"{'.'.join(map(str, err['loc'])) or 'value'}: {err['msg']}" for err in e.errors()[:8])
        dumped = parsed if isinstance(parsed, dict) else parsed.model_dump(mode="json")
        return Outcome(json.dumps(dumped, ensure_ascii=False), completion.finish_reason, parsed=parsed)

    request = request.model_copy(update={"json_schema": spec})
    return (yield from reasked(request, check, max_reasks, title, reply="JSON object", hint=schema_instruction(spec)))


def reasked(request: ChatRequest, check: Callable[[Completion], Outcome | str], max_reasks: int, title: str,
            reply: str = "JSON", hint: str = "") -> Flow:
    """Ask ``request``; while ``check`` finds the reply wrong (says what is wrong), ask again with that (for the
    corrected ``reply``, then ``hint``), at most ``max_reasks`` times, then raise :class:`OutputInvalid`. The
    outcome is the one ``check`` returns."""
    again = " ".join(part for part in (f"Reply again with only the corrected {reply}.", hint) if part)
    reasks = 0
    while True:
        [completion] = yield Step([request])
        verdict = check(completion)
        if isinstance(verdict, Outcome):
            return dataclasses.replace(verdict, reasks=reasks)
        if reasks >= max_reasks:
            raise OutputInvalid(f"the model's output did not match {title} after {reasks} re-ask(s): {verdict}",
                                text=completion.text, errors=verdict)
        reasks += 1
        request = request.model_copy(update={"messages": [
            *request.messages,
            Message(role="assistant", content=completion.text),
            Message(role="user", content=f"That reply is not valid: {verdict}. {again}"),
        ]})
