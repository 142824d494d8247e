"""The data that flows between tasks, backends and callers."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import AliasChoices, BaseModel, ConfigDict, Field, computed_field

Role = Literal["system", "user", "assistant"]

# The output cap of a request that sets none (bounded by the model's own cap and what is left of its window).
DEFAULT_MAX_OUTPUT_TOKENS = 1024


class Message(BaseModel):
    """One chat message."""

    model_config = ConfigDict(frozen=True)

    role: Role
    content: str
    name: str | None = None


class Usage(BaseModel):
    """Tokens spent by one or more requests."""

    prompt_tokens: int = 0
    completion_tokens: int = 0

    @computed_field  # type: ignore[prop-decorator]
    @property
    def total_tokens(self) -> int:
        return self.prompt_tokens + self.completion_tokens

    def __add__(self, other: Usage) -> Usage:
        return Usage(
            prompt_tokens=self.prompt_tokens + other.prompt_tokens,
            completion_tokens=self.completion_tokens + other.completion_tokens,
        )


class ChatRequest(BaseModel):
    """What a backend is asked to do: one chat completion."""

    model_config = ConfigDict(populate_by_name=True)

    messages: list[Message]
    model: str
    temperature: float | None = None
    # The cap on this request's output tokens (``max_tokens`` is accepted as its old name).
    max_output_tokens: int | None = Field(None, validation_alias=AliasChoices("max_output_tokens", "max_tokens"))
    top_p: float | None = None
    stop: list[str] | None = None
    seed: int | None = None
    # {"name": ..., "schema": {...}} when structured output is wanted.
    json_schema: dict[str, Any] | None = None
    # Seconds for one attempt; the retry layer may shrink it to fit the overall deadline.
    timeout: float | None = None


class Completion(BaseModel):
    """What a backend returns for one request."""

    text: str
    finish_reason: str | None = None
    usage: Usage | None = None
    model: str
    request_id: str | None = None
    # How structured output was obtained: "json_schema", "json_object", "prompt" or None.
    response_format: str | None = None
    usage_estimated: bool = False
    # What the server said of its rate limits in this answer's headers (see aigc.ratelimit.Limits).
    limits: dict[str, float] | None = None


class StreamDelta(BaseModel):
    """A piece of streamed text; the last one carries the finished Completion."""

    text: str = ""
    completion: Completion | None = None


class Result(BaseModel):
    """The outcome of a task: the text plus everything needed to trust and account for it."""

    text: str
    task: str
    model: str
    backend: str
    finish_reason: str | None = None
    usage: Usage = Field(default_factory=Usage)
    cost_usd: float | None = None
    latency_s: float = 0.0
    attempts: int = 1
    requests: int = 1
    reasks: int = 0
    parsed: Any = None
    response_format: str | None = None
    warnings: list[str] = Field(default_factory=list)

    @property
    def truncated(self) -> bool:
        """True when the output limit cut the text short."""
        return self.finish_reason == "length"

    def __str__(self) -> str:
        return self.text
