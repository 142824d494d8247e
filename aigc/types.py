"""The data that flows between tasks, backends and callers."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import AliasChoices, BaseModel, ConfigDict, Field, computed_field

from .errors import InputError

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
    # Ask for the output tokens' log-probabilities, with this many alternatives per token (0: none).
    logprobs: int | None = Field(None, ge=0, le=20)
    # How many values of each kind were replaced by placeholders before sending (aigc.pii): counts only,
    # never sent, cached or stored as anything but counts.
    redactions: dict[str, int] | None = Field(None, exclude=True)


class TokenLogprob(BaseModel):
    """One output token with its log-probability, and the most likely alternatives at its place."""

    token: str
    logprob: float
    top: list[tuple[str, float]] = Field(default_factory=list)


class Completion(BaseModel):
    """What a backend returns for one request."""

    text: str
    finish_reason: str | None = None
    usage: Usage | None = None
    model: str
    request_id: str | None = None
    # How structured output was obtained, as far as the answer verified it: "json_schema" (the server
    # enforced the schema), "json_object" (it enforced JSON), "prompt" (only the prompt asked) or None.
    response_format: str | None = None
    usage_estimated: bool = False
    # The gateway (e.g. "LiteLLM") that reported a streamed answer's usage: it counts tokens itself when the
    # server behind it reports none, and does not say which it did, so the figures may be its estimate.
    usage_via: str | None = None
    # What the server said of its rate limits in this answer's headers (see aigc.ratelimit.Limits).
    limits: dict[str, float] | None = None
    # The output tokens' log-probabilities, when the request asked for them and the backend gives them.
    logprobs: list[TokenLogprob] | None = None


class Scores(BaseModel):
    """How likely a model finds each of some replies to one prompt: the log-probability of each reply's
    tokens, summed (``tokens`` says how many each had)."""

    logprobs: list[float]
    tokens: list[int]
    prompt_tokens: int
    model: str

    @property
    def usage(self) -> Usage:
        """What the scoring pass computed, as usage (its replies were read, not generated)."""
        return Usage(prompt_tokens=self.prompt_tokens)


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
    # What cut the text short: "max_output_tokens" (the cap asked for), "context_window" (the prompt left
    # too little of the window, and a larger cap would not help), or None when it was not cut.
    cut_by: str | None = None
    # Why another backend than the first one answered (``backend`` says which did); None when it did not.
    failover: str | None = None
    # Values replaced by placeholders before anything was sent, by kind (counts only; see aigc.pii).
    redactions: dict[str, int] = Field(default_factory=dict)
    # The answer's token log-probabilities, when the request asked for them and the backend gives them.
    logprobs: list[TokenLogprob] | None = None

    @property
    def truncated(self) -> bool:
        """True when the output limit cut the text short."""
        return self.finish_reason == "length"

    def __str__(self) -> str:
        return self.text


def as_messages(value: Any) -> list[Message]:
    """Chat messages from dicts (OpenAI's shape; text content parts are joined) or Message objects."""
    if not isinstance(value, list) or not value:
        raise InputError("messages must be a non-empty list of {\"role\": ..., \"content\": ...} objects")
    out = []
    for i, m in enumerate(value):
        if isinstance(m, Message):
            out.append(m)
            continue
        if not isinstance(m, dict):
            raise InputError(f"message {i + 1} is not an object with a role and content")
        content = m.get("content")
        if isinstance(content, list):
            content = "".join(p.get("text", "") for p in content if isinstance(p, dict) and p.get("type") == "text")
        if m.get("role") not in ("system", "user", "assistant", "developer") or not isinstance(content, str):
            raise InputError(f"message {i + 1} needs a role (system, user or assistant) and text content")
        role = "system" if m["role"] == "developer" else m["role"]
        out.append(Message(role=role, content=content, name=m.get("name")))
    return out
