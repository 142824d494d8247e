"""OpenAI's Batch API as aigc uses it: upload a JSONL of requests, create a batch, poll it, read its results.

Each method makes one call and translates SDK errors into aigc's (the caller retries, as everywhere). The
lines and their results are in the same wire format as direct calls (:mod:`.wire`).
"""

from __future__ import annotations

import json
from typing import Any

import openai

from ... import errors
from ...types import ChatRequest, Completion
from . import wire

__all__ = ["BatchApi", "ENDPOINT", "TERMINAL"]

ENDPOINT = "/v1/chat/completions"
TERMINAL = frozenset({"completed", "failed", "expired", "cancelled"})
MAX_FILE_BYTES = 190 * 1024 * 1024  # the API takes up to 200 MB per input file


class BatchApi:
    """The Batch API of one OpenAI backend (its server, key and async SDK client)."""

    def __init__(self, backend: Any) -> None:
        """``backend``: the OpenAIBackend whose server, key and async SDK client to use."""
        self.backend = backend
        self.api = backend.async_client
        self.where = backend.where

    async def _call(self, fn, *args: Any, **kwargs: Any) -> Any:
        try:
            return await fn(*args, **kwargs)
        except openai.OpenAIError as e:
            err = self.backend.translate(e)
        raise err  # outside the except: the SDK error (and its request) is not its context

    def line(self, custom_id: str, request: ChatRequest) -> bytes:
        """One line of a batch input file."""
        entry = {"custom_id": custom_id, "method": "POST", "url": ENDPOINT, "body": self.backend.body(request)}
        return json.dumps(entry, ensure_ascii=False).encode("utf-8") + b"\n"

    async def upload(self, name: str, data: bytes) -> str:
        """Upload a batch input file; its file id."""
        info = await self._call(self.api.files.create, file=(name, data), purpose="batch")
        return info.id

    async def create(self, input_file_id: str, metadata: dict[str, str]) -> Any:
        return await self._call(self.api.batches.create, input_file_id=input_file_id, endpoint=ENDPOINT,
                                completion_window="24h", metadata=metadata)

    async def retrieve(self, batch_id: str) -> Any:
        return await self._call(self.api.batches.retrieve, batch_id)

    async def find(self, key: str, value: str) -> Any | None:
        """The batch whose metadata has ``key = value`` among the recent ones, or None."""

        async def look() -> Any | None:
            async for batch in self.api.batches.list(limit=100):
                if (batch.metadata or {}).get(key) == value:
                    return batch
            return None

        return await self._call(look)

    async def results(self, batch: Any) -> dict[str, dict[str, Any]]:
        """The output and error lines of a finished batch, by custom id."""
        out: dict[str, dict[str, Any]] = {}
        for file_id in (batch.output_file_id, batch.error_file_id):
            if file_id:
                content = await self._call(self.api.files.content, file_id)
                for line in content.text.splitlines():
                    if line.strip():
                        entry = json.loads(line)
                        out[entry.get("custom_id")] = entry
        return out

    def outcome(self, entry: dict[str, Any] | None, batch: Any, request: ChatRequest) -> Completion | errors.AigcError:
        """One request's result line as a Completion, or the error it ended with (transient for a 5xx/429,
        permanent for a 4xx)."""
        if entry is None:
            why = ""
            batch_errors = batch.errors
            if batch_errors is not None and batch_errors.data:
                why = f": {batch_errors.data[0].message}"
            return errors.ServerError(f"batch {batch.id} ended {batch.status} without a result for this item{why}")
        if entry.get("error"):
            err = entry["error"]
            return errors.BadRequest(f"batch {batch.id}: {err.get('code')}: {err.get('message')}")
        response = entry.get("response") or {}
        status = response.get("status_code") or 0
        body = response.get("body") or {}
        if status != 200:
            detail = (body.get("error") or {}).get("message") or f"HTTP {status}"
            message = f"batch {batch.id}: HTTP {status}: {detail}"
            if status in (408, 409, 429) or status >= 500:
                return errors.ServerError(message, status_code=status)
            return errors.BadRequest(message, status_code=status)
        return wire.completion_from(body, request, response_format=self.backend.structured_mode,
                                    request_id=response.get("request_id"))
