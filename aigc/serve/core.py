"""Everything the server asks of aigc's core, in one place: the only module of the server that touches the
client, the engine, flows and backends.

Every request goes through the same engine as the library (context check, budget reservation, the single retry
layer, the response cache and rate gate when configured, usage and cost, the ledger), with two additions per
caller: the caller's key budget is reserved and settled like a client budget, and the caller's key name is
written on its ledger rows.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

from ..client import AsyncClient
from ..flows import Flow, Outcome, extract_json, reasked, single
from ..tasks import Task
from ..types import ChatRequest, Completion, Result

__all__ = ["Core", "Caller"]


@dataclass(frozen=True)
class Caller:
    """Who sends a request: the key's name (None when auth is off) and its budget."""

    name: str | None = None
    budget: Any = None  # a KeyBudget, or None


class Core:
    """One client (backend, settings, retry policy and its accounting: ledger, response cache, rate gate)
    shared by every request of the server."""

    def __init__(self, client: AsyncClient) -> None:
        self.client = client
        self.backend = client.backend
        self.engine = client.engine
        self.max_reasks = client.settings.max_reasks
        self._engines: dict[str | None, Any] = {}

    # -- what is served -------------------------------------------------------------------------------------

    @property
    def backend_name(self) -> str:
        return self.backend.name

    @property
    def model(self) -> str:
        return self.client.model

    def load(self) -> None:
        """Load the model now (local backends), so the first request does not wait for it."""
        loader = getattr(self.backend, "load", None)
        if loader is not None:
            loader(self.model)

    def loop_stats(self) -> Any:
        """The local decode loop's counters (running, waiting, tokens, batch sizes); None for other backends."""
        return getattr(self.backend, "stats", None)

    def running(self) -> int | None:
        stats = self.loop_stats()
        return None if stats is None else stats.running

    def waiting(self) -> int | None:
        stats = self.loop_stats()
        return None if stats is None else stats.waiting

    def context_window(self, model: str) -> int:
        return self.backend.model_info(model).context_window

    def max_output_tokens(self, model: str) -> int:
        return self.backend.model_info(model).max_output_tokens

    def prompt_tokens(self, request: ChatRequest) -> int:
        """Prompt tokens as the model will see them: chat template and any schema text included."""
        exact = getattr(self.backend, "prompt_tokens", None)
        if exact is not None:
            return exact(request)
        tokens = self.backend.count_tokens(request.messages, request.model)
        if request.json_schema is not None:
            tokens += self.backend.count_text(json.dumps(request.json_schema.get("schema", {})), request.model)
        return tokens

    def count_text(self, text: str) -> int:
        return self.backend.count_text(text, self.model)

    def text_counter(self) -> Any:
        """A token counter for passage selection (the backend's own when it has one)."""
        return self.backend.text_counter(self.model) or self.count_text

    # -- sending --------------------------------------------------------------------------------------------

    def _engine_for(self, caller: Caller) -> Any:
        """The engine with the caller's key name on its ledger rows and the key's budget among its budgets."""
        base = self._engines.get(caller.name)
        if base is None:
            base = self._engines[caller.name] = self.engine.for_key(caller.name)
        return base.with_budget(caller.budget) if caller.budget is not None else base

    def _flow(self, request: ChatRequest) -> Flow:
        if request.json_schema is None:
            return single(request)
        return _validated(request, self.max_reasks)

    async def complete(self, request: ChatRequest, caller: Caller) -> Result:
        return await self._engine_for(caller).arun(self._flow(request), "chat")

    def stream(self, request: ChatRequest, caller: Caller) -> AsyncIterator[str | Result]:
        """Text pieces as they come, then the Result (structured output is checked, not re-asked, here)."""
        return self._engine_for(caller).arun_stream(single(request), "chat")

    async def task(self, task: Task, variables: dict[str, Any], options: dict[str, Any], caller: Caller) -> Result:
        """One declared task (its checked variables and options) with its long-input handling."""
        call = await asyncio.to_thread(self.client.prepare, task, variables, options)
        return await self._engine_for(caller).arun(call.flow, call.task)

    async def aclose(self) -> None:
        await self.client.aclose()


def check_json(text: str, schema: dict[str, Any]) -> str | None:
    """None when ``text`` is JSON valid for ``schema``, else what is wrong with it."""
    try:
        value = json.loads(text)
    except ValueError as e:
        return f"not valid JSON ({e})"
    import jsonschema

    try:
        jsonschema.validate(value, schema)
    except jsonschema.ValidationError as e:
        where = "/".join(str(p) for p in e.absolute_path) or "the value"
        return f"{where}: {e.message}"
    except jsonschema.SchemaError as e:
        return f"the schema itself is invalid: {e.message}"
    return None


def _validated(request: ChatRequest, max_reasks: int) -> Flow:
    """Ask for JSON matching the request's schema; re-ask with what was wrong, at most ``max_reasks`` times."""
    schema = request.json_schema.get("schema", {})

    def check(completion: Completion) -> Outcome | str:
        text = completion.text if completion.response_format == "json_schema" else extract_json(completion.text)
        problem = check_json(text, schema)
        if problem is None or completion.finish_reason == "length":  # a cut reply is returned as it is
            return Outcome(text if problem is None else completion.text, completion.finish_reason,
                           logprobs=completion.logprobs)
        return problem

    return (yield from reasked(request, check, max_reasks, "the JSON schema"))
