"""An OpenAI-compatible HTTP server for tests and benchmarks.

Hosted-path tests talk to this server through the real ``openai`` SDK, so the headers, status codes, error bodies
and stream framing the SDK depends on are exercised over real HTTP. The server bills on its own (tiktoken plus
OpenAI's chat formula), so a test can check aigc's counts against what a provider would charge, and it can
misbehave on demand: scripted faults, random faults, latency, rate limits and context windows. It also answers
``/v1/moderations`` (scores scripted with :meth:`FakeOpenAIServer.flag`) and gives ``logprobs`` /
``top_logprobs`` in chat answers when asked.

In process::

    with FakeOpenAIServer(rpm=600) as server:
        server.enqueue_faults(Fault.rate_limit(retry_after=0.2))
        client = openai.OpenAI(base_url=server.url, api_key="sk-test", max_retries=0)

As a process, ``python tests/openai_server.py --port 0`` prints its base URL on one line and serves until
SIGTERM or SIGINT; the ``/_control/*`` endpoints script it from outside.
"""

from __future__ import annotations

import argparse
import contextlib
import copy
import functools
import hashlib
import itertools
import json
import math
import random
import re
import signal
import socket
import socketserver
import subprocess
import sys
import threading
import time
import traceback
import urllib.request
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field, fields
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

try:
    from tests.fake_fine_tuning import FORBIDDEN_MESSAGE, FineTuning
except ImportError:  # run as a script from the tests folder
    from fake_fine_tuning import FORBIDDEN_MESSAGE, FineTuning

__all__ = ["Dialect", "FakeOpenAIServer", "Fault", "RecordedRequest", "ServerProcess", "count_prompt_tokens",
           "duration", "example_instance", "FORBIDDEN_MESSAGE"]

_O200K_PREFIXES = ("gpt-4o", "gpt-4.1", "gpt-5", "o1", "o3", "o4")

# (type, code, message) sent for a status when a fault names nothing more specific; close to OpenAI's own.
_STATUS_ERRORS: dict[int, tuple[str, str | None, str]] = {
    400: ("invalid_request_error", None, "Invalid request."),
    401: ("invalid_request_error", "invalid_api_key", "Incorrect API key provided."),
    403: ("permission_error", None, "You are not allowed to use this model."),
    404: ("invalid_request_error", "model_not_found", "The model does not exist or you do not have access to it."),
    408: ("timeout_error", None, "Request timed out."),
    409: ("invalid_request_error", None, "The request conflicts with another request."),
    422: ("invalid_request_error", None, "The request could not be processed."),
    429: ("requests", "rate_limit_exceeded", "Rate limit reached for requests. Please try again later."),
    500: ("server_error", None, "The server had an error while processing your request. Sorry about that!"),
    502: ("server_error", None, "Bad gateway."),
    503: ("server_error", None, "The engine is currently overloaded, please try again later."),
}
_CODE_ERRORS = {
    "insufficient_quota": (
        "insufficient_quota",
        "You exceeded your current quota, please check your plan and billing details.",
    ),
}


_MODERATION_CATEGORIES = ("harassment", "harassment/threatening", "hate", "hate/threatening", "illicit",
                          "illicit/violent", "self-harm", "self-harm/intent", "self-harm/instructions", "sexual",
                          "sexual/minors", "violence", "violence/graphic")
_CATEGORY_NAMES = {name.replace("/", "_").replace("-", "_"): name for name in _MODERATION_CATEGORIES}


@dataclass
class Fault:
    """One misbehaviour, used up by the next chat or batch request.

    Applied in this order: ``stall`` (then answer as below), ``drop``, ``status`` (an error answer), and for a
    stream that otherwise succeeds, ``stream_drop_after``.
    """

    status: int | None = None
    retry_after: float | None = None
    retry_after_ms: float | None = None
    code: str | None = None
    message: str | None = None
    drop: bool = False
    stall: float = 0.0
    stream_drop_after: int | None = None
    page: bool = False  # a 200 whose body is an HTML page (a captive portal, a proxy's sign-in page)

    @classmethod
    def html_page(cls) -> Fault:
        return cls(page=True)

    @classmethod
    def rate_limit(cls, retry_after: float | None = None, *, retry_after_ms: float | None = None) -> Fault:
        return cls(status=429, code="rate_limit_exceeded", retry_after=retry_after, retry_after_ms=retry_after_ms)

    @classmethod
    def quota(cls) -> Fault:
        """The 429 that retrying cannot fix: the account is out of credit."""
        return cls(status=429, code="insufficient_quota")

    @classmethod
    def server_error(cls, status: int = 500, retry_after: float | None = None) -> Fault:
        return cls(status=status, retry_after=retry_after)

    @classmethod
    def dropped(cls) -> Fault:
        return cls(drop=True)

    @classmethod
    def stalled(cls, seconds: float) -> Fault:
        return cls(stall=seconds)

    @classmethod
    def stream_cut(cls, after_chunks: int) -> Fault:
        return cls(stream_drop_after=after_chunks)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Fault:
        known = {f.name for f in fields(cls)}
        unknown = set(data) - known
        if unknown:
            raise ValueError(f"unknown Fault fields: {sorted(unknown)}")
        return cls(**data)


@dataclass
class Dialect:
    """How a compatible server departs from the hosted API (the defaults behave like the hosted API).

    Each field is one behaviour seen on a real server; the presets combine them as those servers do.
    """

    # json_schema response formats: "ok" (enforced), "400" (refused, naming response_format), "500"
    # (llama-cpp-python: a pydantic literal error as an HTTP 500), "ignored" (transformers serve: accepted
    # and ignored; the "model" follows a schema stated in the prompt, as an instruction-tuned model would).
    json_schema: str = "ok"
    # Whether a json_object response format may carry a "schema" (llama.cpp's extension); False: a 400.
    object_schema: bool = True
    # Server tokens per tiktoken token: a model with another tokenizer (usage and the window count these).
    token_scale: float = 1.0
    # vLLM's POST /tokenize: {"model", "prompt"} or {"model", "messages"} -> {"count", "max_model_len", "tokens"}.
    tokenize: bool = False
    # Where the context window is advertised: "models" (vLLM's max_model_len in /v1/models), "props"
    # (llama.cpp's GET /props), "show" (Ollama's POST /api/show), or None: only in a 400's text.
    window_in: str | None = None
    # Error bodies: "openai" ({"error": {...}}), "fastapi" ({"detail": "..."}, transformers serve), "litellm"
    # (a multi-line message wrapped by the proxy, code "400", ContextWindowExceededError for the window).
    errors: str = "openai"
    # A model name the server insists on (transformers serve started with one model); others get a 400.
    pinned: str | None = None
    # prompt + max_tokens over the window: True clamps the answer to what is left (llama-cpp-python),
    # False refuses with a 400 (OpenAI, vLLM). A prompt alone over the window is always refused.
    clamp: bool = False
    # Streamed usage computed by a gateway rather than the model server (LiteLLM marks it so).
    estimated_stream_usage: bool = False
    # A streamed request the server refuses (a prompt too long for the window) gets a 200 and an empty
    # stream, the error only in the server's log (llama-cpp-python raises inside its stream generator).
    silent_stream_errors: bool = False

    @classmethod
    def llama_cpp_python(cls) -> Dialect:
        return cls(json_schema="500", token_scale=1.09, clamp=True, silent_stream_errors=True)

    @classmethod
    def transformers_serve(cls) -> Dialect:
        return cls(json_schema="ignored", token_scale=1.09, errors="fastapi")

    @classmethod
    def vllm(cls) -> Dialect:
        return cls(token_scale=1.3, tokenize=True, window_in="models")

    @classmethod
    def litellm(cls) -> Dialect:
        return cls(json_schema="500", errors="litellm", estimated_stream_usage=True)


@dataclass
class RecordedRequest:
    """What the server saw of one API request and how it answered (``status`` None: the connection was cut)."""

    method: str
    path: str
    body: Any
    headers: dict[str, str]
    time: float
    status: int | None = None
    fault: Fault | None = None


class _ApiError(Exception):
    """An error answer in OpenAI's shape, raised anywhere below the dispatcher."""

    def __init__(self, status: int, message: str, *, type: str = "invalid_request_error", param: str | None = None,
                 code: str | None = None, retry_after: float | None = None, retry_after_ms: float | None = None):
        super().__init__(message)
        self.status, self.message, self.type, self.param, self.code = status, message, type, param, code
        self.retry_after, self.retry_after_ms = retry_after, retry_after_ms

    @classmethod
    def from_fault(cls, fault: Fault) -> _ApiError:
        status = fault.status or 500
        type_, code, message = _STATUS_ERRORS.get(
            status, ("server_error" if status >= 500 else "invalid_request_error", None, "Request failed.")
        )
        if fault.code in _CODE_ERRORS:
            type_, message = _CODE_ERRORS[fault.code]
        return cls(status, fault.message or message, type=type_, code=fault.code or code,
                   retry_after=fault.retry_after, retry_after_ms=fault.retry_after_ms)

    def body(self, dialect: Dialect | None = None) -> dict[str, Any]:
        style = dialect.errors if dialect is not None else "openai"
        if style == "fastapi":
            return {"detail": self.message}
        if style == "litellm":
            kind = "ContextWindowExceededError" if self.code == "context_length_exceeded" else "BadRequestError"
            message = (f"litellm.{kind}: litellm.BadRequestError: OpenAIException - {self.message}\n"
                       "Received Model Group=aigc-test\nAvailable Model Group Fallbacks=None")
            return {"error": {"message": message, "type": None, "param": None, "code": str(self.status)}}
        return {"error": {"message": self.message, "type": self.type, "param": self.param, "code": self.code}}

    def answer(self, dialect: Dialect | None = None) -> _Answer:
        headers = {}
        if self.retry_after is not None:
            headers["retry-after"] = f"{self.retry_after:g}"
        if self.retry_after_ms is not None:
            headers["retry-after-ms"] = f"{self.retry_after_ms:g}"
        wait = self.retry_after_ms / 1000 if self.retry_after_ms is not None else self.retry_after
        return _Answer(status=self.status, body=self.body(dialect), headers=headers, retry_wait=wait)


@dataclass
class _Answer:
    """A response the handler writes; the logic that builds it never touches a socket."""

    status: int = 200
    body: Any = None  # dict/list → JSON; bytes → sent as they are
    headers: dict[str, str] = field(default_factory=dict)
    events: list[dict] | None = None  # server-sent events of a stream
    drop: bool = False  # close the connection without answering
    drop_after: int | None = None  # stream events sent before the connection is cut
    retry_wait: float | None = None  # seconds the client was told to wait
    usage: dict[str, int] | None = None  # billed if the answer counts as a success
    token_delay: float = 0.0  # seconds between stream events (a model generating at that pace)
    done: bool = True  # a stream ends with "data: [DONE]"


# ---- tokens and replies -------------------------------------------------------------------------------------


@functools.cache
def _encoding(model: str):
    """The tiktoken encoding OpenAI uses for ``model``; imported late so the script entry can fix sys.path."""
    from aigc.tokens import get_encoding

    return get_encoding("o200k_base" if model.startswith(_O200K_PREFIXES) else "cl100k_base")


def _text(content: Any) -> str:
    """The text of a message content: a string, or the text parts of a list of content parts."""
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        return "".join(p["text"] for p in content if isinstance(p, dict) and isinstance(p.get("text"), str))
    return ""


def _count(model: str, text: str) -> int:
    return len(_encoding(model).encode_ordinary(text))


def count_prompt_tokens(model: str, messages: list[dict]) -> int:
    """OpenAI's chat formula: 3 per message, the tokens of role/content/name, 1 more per name, 3 for the primer."""
    total = 3
    for message in messages:
        total += 3 + sum(_count(model, _text(message.get(key))) for key in ("role", "content", "name"))
        total += 1 if "name" in message else 0
    return total


def example_instance(schema: dict, defs: dict | None = None) -> Any:
    """The smallest JSON value fitting ``schema``: what a model obeying a json_schema response format sends."""
    if defs is None:
        defs = {**schema.get("definitions", {}), **schema.get("$defs", {})}
    if "$ref" in schema:
        return example_instance(defs[schema["$ref"].rsplit("/", 1)[-1]], defs)
    for key in ("anyOf", "oneOf", "allOf"):
        if schema.get(key):
            return example_instance(schema[key][0], defs)
    if "const" in schema:
        return schema["const"]
    if schema.get("enum"):
        return schema["enum"][0]
    kind = schema.get("type", "object" if "properties" in schema else "string")
    if isinstance(kind, list):
        kind = next((k for k in kind if k != "null"), "null")
    if kind == "object":
        return {name: example_instance(sub, defs) for name, sub in schema.get("properties", {}).items()}
    if kind == "array":
        return [example_instance(schema.get("items", {}), defs) for _ in range(schema.get("minItems", 0))]
    return {"string": "example", "integer": 0, "number": 0, "boolean": False}.get(kind)


def _default_reply(messages: list[dict]) -> str:
    user = [m for m in messages if m.get("role") == "user"]
    words = _text(user[-1].get("content")).split() if user else []
    return "Reply: " + " ".join(words[:12])


_STATED_SCHEMA = re.compile(r"JSON schema:\s*(\{.*\})\s*$", re.S)


def _schema_in_prompt(messages: list[dict]) -> dict | None:
    """The JSON schema an instruction in the last user message states, if any."""
    user = [m for m in messages if m.get("role") == "user"]
    match = _STATED_SCHEMA.search(_text(user[-1].get("content"))) if user else None
    if match is None:
        return None
    try:
        return json.loads(match.group(1))
    except ValueError:
        return None


def _body_key(body: Any) -> str:
    """Identifies a logical request across re-sends: the same JSON body hashes the same."""
    return hashlib.sha256(json.dumps(body, sort_keys=True).encode()).hexdigest()


def _parse_json(raw: bytes) -> Any:
    try:
        return json.loads(raw)
    except ValueError:
        raise _ApiError(400, "We could not parse the JSON body of your request.") from None


# ---- rate limits --------------------------------------------------------------------------------------------


def _share(per_minute: float, window_s: float = 1.0) -> tuple[float, float]:
    """(window seconds, capacity): the ``window_s`` share of a per-minute limit (one second by default, as
    OpenAI enforces limits over short periods; 60 counts over whole minutes), or one unit per longer window."""
    if per_minute * window_s / 60 >= 1:
        return window_s, per_minute * window_s / 60
    return 60 / per_minute, 1.0


def duration(seconds: float) -> str:
    """A reset time as OpenAI writes it: ``20ms``, ``1s``, ``1.5s``, ``6m0s``."""
    if seconds < 1:
        return f"{max(0, round(seconds * 1000))}ms"
    minutes, rest = divmod(seconds, 60)
    rest_text = f"{rest:.3f}".rstrip("0").rstrip(".") + "s"
    return f"{int(minutes)}m{rest_text}" if minutes else rest_text


class _RateWindow:
    """Requests admitted in the last minute, checked against shares of rpm and tpm.

    OpenAI states limits per minute but enforces them over shorter intervals; a one-second share makes a limit
    bind within a test lasting seconds (``window_s=60`` counts over whole minutes instead). A request bigger
    than a whole share is admitted into an empty window. The ``x-ratelimit-*`` headers speak per minute, as
    OpenAI's do: the limit, what is left of it over the last minute, and when it is whole again.
    """

    def __init__(self, window_s: float = 1.0) -> None:
        self._admitted: deque[tuple[float, int]] = deque()  # (monotonic time, tokens)
        self._tokens = 0
        self.window_s = window_s

    def admit(self, now: float, tokens: int, rpm: float | None, tpm: float | None) -> float:
        """Record the request and return 0, or return the seconds until it would fit."""
        self._prune(now)
        wait = max(self._wait(now, 1, rpm, lambda n: 1), self._wait(now, tokens, tpm, lambda n: n))
        if wait <= 0:
            self._admitted.append((now, tokens))
            self._tokens += tokens
            i = len(self._admitted) - 1
            while i > 0 and self._admitted[i - 1][0] > now:  # two taken in moments apart, in the other order
                self._admitted[i - 1], self._admitted[i] = self._admitted[i], self._admitted[i - 1]
                i -= 1
        return wait

    def remaining(self, now: float, rpm: float | None, tpm: float | None) -> dict[str, str]:
        self._prune(now)
        headers = {}
        reset = duration(self._admitted[0][0] + 60 - now) if self._admitted else "0ms"
        if rpm:
            headers["x-ratelimit-limit-requests"] = f"{rpm:g}"
            headers["x-ratelimit-remaining-requests"] = f"{max(0, rpm - len(self._admitted)):g}"
            headers["x-ratelimit-reset-requests"] = reset
        if tpm:
            headers["x-ratelimit-limit-tokens"] = f"{tpm:g}"
            headers["x-ratelimit-remaining-tokens"] = f"{max(0, tpm - self._tokens):g}"
            headers["x-ratelimit-reset-tokens"] = reset
        return headers

    def _prune(self, now: float) -> None:
        while self._admitted and self._admitted[0][0] <= now - 60:
            self._tokens -= self._admitted.popleft()[1]

    def _wait(self, now: float, cost: int, per_minute: float | None, weight: Callable[[int], int]) -> float:
        if not per_minute:
            return 0.0
        window, capacity = _share(per_minute, self.window_s)
        recent = list(itertools.takewhile(lambda e: e[0] > now - window, reversed(self._admitted)))[::-1]
        used = sum(weight(n) for _, n in recent)
        if not recent or used + cost <= capacity:
            return 0.0
        for t, n in recent:  # oldest first: until when must the window drain for this request to fit?
            used -= weight(n)
            if used + cost <= capacity:
                return t + window - now
        return recent[-1][0] + window - now


# ---- HTTP plumbing ------------------------------------------------------------------------------------------


class _HTTPServer(ThreadingHTTPServer):
    daemon_threads = True
    request_queue_size = 128  # benchmarks open many connections at once

    def __init__(self, address: tuple[str, int], fake: FakeOpenAIServer):
        self.fake = fake
        super().__init__(address, _Handler)

    def server_bind(self) -> None:
        """Bind without HTTPServer's reverse DNS lookup of the host, which can take seconds."""
        socketserver.TCPServer.server_bind(self)
        self.server_name, self.server_port = self.server_address[:2]

    def handle_error(self, request, client_address) -> None:
        if not isinstance(sys.exc_info()[1], OSError):  # a client going away is normal here
            super().handle_error(request, client_address)


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"  # keep-alive, as the SDK's connection pool expects
    disable_nagle_algorithm = True  # headers and body go out as separate writes; don't let them wait on ACKs
    server: _HTTPServer

    def setup(self) -> None:
        super().setup()
        self.server.fake._track(self.connection, True)

    def finish(self) -> None:
        try:
            super().finish()
        finally:
            self.server.fake._track(self.connection, False)

    def log_message(self, format: str, *args: Any) -> None:
        """Quiet: tests read ``server.requests`` instead of a log."""

    def do_GET(self) -> None:
        self._serve()

    def do_POST(self) -> None:
        self._serve()

    def do_DELETE(self) -> None:
        self._serve()

    def _serve(self) -> None:
        arrived = time.monotonic()  # the request line and headers are in: limits count from here
        try:
            raw = self._read_body()
            try:
                answer = self.server.fake._dispatch(self.command, self.path, dict(self.headers), raw, arrived)
            except Exception as err:  # a bug here or in a reply callable: say so rather than hang up
                traceback.print_exc()
                answer = _ApiError(500, f"The test server failed: {err!r}", type="server_error").answer()
            self._write(answer)
        except OSError:
            self.close_connection = True

    def _read_body(self) -> bytes:
        if self.headers.get("Transfer-Encoding", "").lower() == "chunked":
            parts = []
            while size := int(self.rfile.readline().split(b";")[0], 16):
                parts.append(self.rfile.read(size))
                self.rfile.readline()
            while self.rfile.readline() not in (b"\r\n", b"\n", b""):
                pass
            return b"".join(parts)
        return self.rfile.read(int(self.headers.get("Content-Length") or 0))

    def _write(self, answer: _Answer) -> None:
        if answer.drop:
            self.close_connection = True
            return
        self.send_response(answer.status)
        for name, value in answer.headers.items():
            self.send_header(name, value)
        if answer.events is None:
            payload = answer.body if isinstance(answer.body, bytes) else json.dumps(answer.body).encode()
            kind = "application/octet-stream" if isinstance(answer.body, bytes) else "application/json"
            self.send_header("Content-Type", kind)
            self.send_header("Content-Length", str(len(payload)))
            self.end_headers()
            self.wfile.write(payload)
            return
        self.send_header("Content-Type", "text/event-stream; charset=utf-8")
        self.send_header("Cache-Control", "no-cache")
        self.send_header("Transfer-Encoding", "chunked")
        self.end_headers()
        for sent, event in enumerate(answer.events):
            if answer.token_delay and sent and self.server.fake._stopping.wait(answer.token_delay):
                self.close_connection = True
                return
            if answer.drop_after is not None and sent >= answer.drop_after:
                self.close_connection = True  # cut mid-stream: the chunked body never ends
                return
            self._chunk(f"data: {json.dumps(event)}\n\n".encode())
        if answer.done:
            self._chunk(b"data: [DONE]\n\n")
        self._chunk(b"")

    def _chunk(self, data: bytes) -> None:
        self.wfile.write(b"%x\r\n%s\r\n" % (len(data), data))


def _parse_multipart(raw: bytes, content_type: str) -> dict[str, tuple[str | None, bytes]]:
    """Form fields of a multipart/form-data body: name → (filename, bytes)."""
    match = re.search(r'boundary="?([^";]+)"?', content_type)
    if not match:
        raise _ApiError(400, "Expected a multipart/form-data body.")
    result = {}
    for part in raw.split(b"--" + match.group(1).encode())[1:]:
        if part.startswith(b"--"):
            break
        head, _, data = part.partition(b"\r\n\r\n")
        head_text = head.decode("utf-8", "replace")
        name = re.search(r'[;\s]name="([^"]*)"', head_text)
        filename = re.search(r'filename="([^"]*)"', head_text)
        if name:
            result[name.group(1)] = (filename and filename.group(1), data.removesuffix(b"\r\n"))
    return result


# ---- the server ---------------------------------------------------------------------------------------------


@dataclass
class _Batch:
    obj: dict[str, Any]
    polls: int = 0


class FakeOpenAIServer:
    """An OpenAI-compatible server on 127.0.0.1 with scriptable faults, limits and its own billing.

    Options are plain attributes and may be changed while it runs; counters are read through properties that
    return snapshots. ``stats`` counts chat-completion requests (plus ``batches_created``).
    """

    def __init__(self, *, host: str = "127.0.0.1", port: int = 0, latency: float = 0.0,
                 reply: Callable[[dict], str | None] | None = None, stream_usage: bool = True,
                 supports_json_schema: bool = True, context_windows: dict[str, int] | None = None,
                 error_rate: float = 0.0, drop_rate: float = 0.0, seed: int | None = None,
                 rpm: float | None = None, tpm: float | None = None, api_key: str | None = None,
                 batch_polls_to_complete: int = 2, rate_window: float = 1.0, latency_jitter: float = 0.0,
                 logprob: Callable[[str], float] | None = None, supports_logprobs: bool = True,
                 fine_tune_durations: tuple[float, float, float] = (0.5, 0.5, 1.0), fine_tuning_allowed: bool = True,
                 file_polls_to_process: int = 1,
                 dialect: Dialect | None = None, token_delay: float = 0.0):
        self.host, self.port = host, port
        self.latency, self.reply, self.stream_usage = latency, reply, stream_usage
        self.latency_jitter = latency_jitter  # each answer takes latency ± up to this much (uniform)
        self.supports_json_schema = supports_json_schema
        self.dialect = dialect or Dialect()
        self.token_delay = token_delay  # seconds per streamed piece of a reply (a slow local model)
        self.context_windows = dict(context_windows or {})
        self.error_rate, self.drop_rate, self.seed = error_rate, drop_rate, seed
        self.rpm, self.tpm, self.api_key = rpm, tpm, api_key
        self.rate_window = rate_window  # seconds over which rpm/tpm are enforced: 1 (OpenAI-like) or 60
        self.batch_polls_to_complete = batch_polls_to_complete
        # The log-probability a chat answer gives each of its tokens, when asked for logprobs.
        self.logprob = logprob or (lambda token: math.log(0.9))
        self.supports_logprobs = supports_logprobs
        self.moderation_rules: dict[str, dict[str, float]] = {}
        self.fine_tune_durations, self.fine_tuning_allowed = fine_tune_durations, fine_tuning_allowed
        self.file_polls_to_process = file_polls_to_process  # retrieves before a fine-tune upload is processed
        self._lock = threading.RLock()
        self._stopping = threading.Event()
        self._ids = itertools.count(1)  # object ids (chatcmpl-, file-, batch_ …)
        self._request_ids = itertools.count(1)
        self._connections: set[socket.socket] = set()
        self._httpd: _HTTPServer | None = None
        self._thread: threading.Thread | None = None
        self.reset()

    # -- lifecycle

    def start(self) -> FakeOpenAIServer:
        if self._httpd is None:
            self._stopping.clear()
            self._httpd = _HTTPServer((self.host, self.port), self)
            self._thread = threading.Thread(target=self._httpd.serve_forever, kwargs={"poll_interval": 0.01},
                                            name="fake-openai-server", daemon=True)
            self._thread.start()
        return self

    def stop(self) -> None:
        """Stop promptly: stalled handlers wake up and every open connection is shut."""
        if self._httpd is None:
            return
        self._stopping.set()
        self._httpd.shutdown()
        with self._lock:
            connections = list(self._connections)
        for conn in connections:
            with contextlib.suppress(OSError):
                conn.shutdown(socket.SHUT_RDWR)
        self._httpd.server_close()
        self._thread.join()
        self._httpd = self._thread = None

    def __enter__(self) -> FakeOpenAIServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    @property
    def url(self) -> str:
        if self._httpd is None:
            raise RuntimeError("the server is not running; use start() or a with block")
        return f"http://{self.host}:{self._httpd.server_address[1]}/v1"

    # -- scripting

    def enqueue_faults(self, *faults: Fault) -> None:
        with self._lock:
            self._faults.extend(faults)

    def clear_faults(self) -> None:
        """Forget the scripted faults not used up yet."""
        with self._lock:
            self._faults.clear()

    def fail_next(self, n: int, fault: Fault | None = None) -> None:
        self.enqueue_faults(*[fault or Fault.server_error()] * n)

    def flag(self, substring: str, **scores: float) -> None:
        """Moderation: a text containing ``substring`` gets these category scores (``violence=0.91``; a
        category spelled with a slash uses ``_``: ``self_harm_intent``); 0.5 and above are flagged."""
        self.moderation_rules[substring] = {_CATEGORY_NAMES.get(k, k): v for k, v in scores.items()}

    def enqueue_replies(self, *texts: str) -> None:
        with self._lock:
            self._replies.extend(texts)

    def reset(self) -> None:
        """Forget requests, counters, queues, files and batches; keep the options."""
        with self._lock:
            self._faults: deque[Fault] = deque()
            self._replies: deque[str] = deque()
            self._requests: list[RecordedRequest] = []
            self._stats: dict[str, Any] = {
                "requests": 0, "ok": 0, "errors_by_status": {}, "dropped": 0, "rate_limited": 0,
                "resent_early": 0, "duplicates": 0, "oversize_rejections": 0, "batches_created": 0,
            }
            self._billed = {"prompt_tokens": 0, "completion_tokens": 0}
            self._answered: set[str] = set()
            self._wait_until: dict[str, float] = {}
            self._window = _RateWindow(self.rate_window)
            self._admissions: list[tuple[float, int, bool]] = []  # (arrived, tokens, admitted) under rate limits
            self._rng = random.Random(self.seed)
            self._files: dict[str, tuple[dict, bytes]] = {}
            self._file_polls: dict[str, int] = {}
            self._batches: dict[str, _Batch] = {}
            # Fine-tuning jobs (tests/fake_fine_tuning.py); its options may be changed live.
            self.fine_tuning = FineTuning(files=self._file, count_tokens=count_prompt_tokens, error=_ApiError)
            self.fine_tuning.durations = self.fine_tune_durations
            self.fine_tuning.allowed = self.fine_tuning_allowed

    # -- bookkeeping

    @property
    def requests(self) -> list[RecordedRequest]:
        with self._lock:
            return list(self._requests)

    @property
    def request_count(self) -> int:
        with self._lock:
            return self._stats["requests"]

    @property
    def stats(self) -> dict[str, Any]:
        with self._lock:
            return {**self._stats, "errors_by_status": dict(self._stats["errors_by_status"])}

    @property
    def billed(self) -> dict[str, int]:
        with self._lock:
            return dict(self._billed)

    @property
    def oversize_rejections(self) -> int:
        with self._lock:
            return self._stats["oversize_rejections"]

    def _track(self, conn: socket.socket, open_: bool) -> None:
        with self._lock:
            (self._connections.add if open_ else self._connections.discard)(conn)

    def _bill(self, usage: dict[str, int]) -> None:
        with self._lock:
            self._billed["prompt_tokens"] += usage["prompt_tokens"]
            self._billed["completion_tokens"] += usage["completion_tokens"]

    # -- dispatch

    # (method, path, handler method, whether faults apply)
    _ROUTES = [
        ("POST", re.compile(r"/v1/chat/completions"), "_chat", True),
        ("GET", re.compile(r"/v1/models"), "_models", False),
        ("POST", re.compile(r"/v1/moderations"), "_moderations", True),
        ("POST", re.compile(r"/v1/files"), "_upload", True),
        ("GET", re.compile(r"/v1/files/([^/]+)"), "_file_info", True),
        ("GET", re.compile(r"/v1/files/([^/]+)/content"), "_file_content", True),
        ("DELETE", re.compile(r"/v1/files/([^/]+)"), "_delete_file", True),
        ("POST", re.compile(r"/v1/batches"), "_create_batch", True),
        ("GET", re.compile(r"/v1/batches/([^/]+)"), "_retrieve_batch", True),
        ("POST", re.compile(r"/v1/batches/([^/]+)/cancel"), "_cancel_batch", True),
        ("POST", re.compile(r"/tokenize"), "_tokenize", False),
        ("GET", re.compile(r"/props"), "_props", False),
        ("POST", re.compile(r"/api/show"), "_show", False),
        ("POST", re.compile(r"/v1/fine_tuning/jobs"), "_ft_create", True),
        ("GET", re.compile(r"/v1/fine_tuning/jobs"), "_ft_list", True),
        ("GET", re.compile(r"/v1/fine_tuning/jobs/([^/]+)"), "_ft_retrieve", True),
        ("GET", re.compile(r"/v1/fine_tuning/jobs/([^/]+)/events"), "_ft_events", True),
        ("GET", re.compile(r"/v1/fine_tuning/jobs/([^/]+)/checkpoints"), "_ft_checkpoints", True),
        ("POST", re.compile(r"/v1/fine_tuning/jobs/([^/]+)/cancel"), "_ft_cancel", True),
    ]

    def _dispatch(self, method: str, target: str, headers: dict[str, str], raw: bytes,
                  arrived: float | None = None) -> _Answer:
        path = urlsplit(target).path
        if path.startswith("/_control/"):
            return self._control(method, path, raw)
        name, args, faultable = None, (), False
        for route_method, pattern, route_name, route_faultable in self._ROUTES:
            if route_method == method and (match := pattern.fullmatch(path)):
                name, args, faultable = route_name, match.groups(), route_faultable
        record = self._record(method, path, headers, raw)
        key = _body_key(record.body) if name == "_chat" and record.body is not None else None
        if name == "_chat":
            self._count_arrival(key)
        try:
            if name is None:
                raise _ApiError(404, f"Invalid URL ({method} {path})")
            self._authorize(headers)
            if name == "_chat":
                self._admit_arrival(raw, time.monotonic() if arrived is None else arrived)
            headers = {**headers, "x-query-string": urlsplit(target).query}  # for handlers that read it
            record.fault = self._next_fault() if faultable else None
            answer = self._apply_fault(record.fault) or getattr(self, name)(raw, headers, record.fault, *args)
        except _ApiError as err:
            answer = err.answer(self.dialect)
            if (self.dialect.silent_stream_errors and name == "_chat" and err.status == 400
                    and isinstance(record.body, dict) and record.body.get("stream")):
                # A 200, nothing streamed, no [DONE]; nothing billed. Behind LiteLLM: an empty "stop".
                events = [] if self.dialect.errors != "litellm" else [
                    {"id": "chatcmpl-0", "object": "chat.completion.chunk", "created": int(time.time()),
                     "model": record.body.get("model"),
                     "choices": [{"index": 0, "delta": {}, "finish_reason": "stop"}]}]
                answer = _Answer(events=events, done=bool(events),
                                 usage={"prompt_tokens": 0, "completion_tokens": 0})
        answer.headers["x-request-id"] = f"req_{next(self._request_ids)}"
        if self.dialect.errors == "litellm":
            answer.headers["x-litellm-version"] = "1.108.7"  # what LiteLLM's proxy sends on every answer
        record.status = None if answer.drop else answer.status
        if name == "_chat":
            answer.headers.update(self._window.remaining(time.monotonic(), self.rpm, self.tpm))
            self._count_chat(answer, key)
        return answer

    def _record(self, method: str, path: str, headers: dict[str, str], raw: bytes) -> RecordedRequest:
        try:
            body = json.loads(raw) if raw else None
        except ValueError:
            body = None
        hidden = {"authorization", "api-key"}
        kept = {k: v for k, v in headers.items() if k.lower() not in hidden}
        record = RecordedRequest(method, path, body, kept, time.time())
        with self._lock:
            self._requests.append(record)
        return record

    def _count_arrival(self, key: str | None) -> None:
        """Count a chat request, and whether it came back before the wait its last answer asked for."""
        with self._lock:
            self._stats["requests"] += 1
            if key in self._wait_until and time.monotonic() < self._wait_until[key]:
                self._stats["resent_early"] += 1

    def _authorize(self, headers: dict[str, str]) -> None:
        if self.api_key is None:
            return
        given = next((v for k, v in headers.items() if k.lower() == "authorization"), "")
        if given != f"Bearer {self.api_key}":
            raise _ApiError(401, "Incorrect API key provided.", code="invalid_api_key")

    def _next_fault(self) -> Fault | None:
        with self._lock:
            if self._faults:
                return self._faults.popleft()
            if self.error_rate or self.drop_rate:
                draw = self._rng.random()
                if draw < self.drop_rate:
                    return Fault.dropped()
                if draw < self.drop_rate + self.error_rate:
                    return Fault.server_error()
        return None

    def _apply_fault(self, fault: Fault | None) -> _Answer | None:
        """An answer replacing the normal one, or None to answer normally."""
        if fault is None:
            return None
        if fault.stall and self._stopping.wait(fault.stall):
            return _Answer(drop=True)  # shutting down
        if fault.drop:
            return _Answer(drop=True)
        if fault.status:
            raise _ApiError.from_fault(fault)
        if fault.page:
            return _Answer(body=b"<html><body>Please sign in to the network</body></html>")
        return None

    def _count_chat(self, answer: _Answer, key: str | None) -> None:
        with self._lock:
            stats = self._stats
            if answer.drop or answer.drop_after is not None:
                stats["dropped"] += 1
            elif answer.status == 200:
                stats["ok"] += 1
                stats["duplicates"] += key in self._answered
                self._answered.add(key)
                self._wait_until.pop(key, None)
                if answer.usage is not None:
                    self._bill(answer.usage)
            else:
                stats["errors_by_status"][answer.status] = stats["errors_by_status"].get(answer.status, 0) + 1
                stats["rate_limited"] += answer.status == 429
            if answer.retry_wait is not None and key is not None:
                self._wait_until[key] = time.monotonic() + answer.retry_wait

    # -- chat completions

    def _admit_arrival(self, raw: bytes, arrived: float) -> None:
        """Rate limits apply when a request arrives, before anything else can go wrong with it: a request that
        then fails (5xx, dropped connection) still counted, as on OpenAI; one answered 429 did not. It counts
        from the moment it ``arrived``, however long this server then took to read and count it."""
        try:
            body = json.loads(raw)
            prompt_tokens = count_prompt_tokens(body["model"], body["messages"])
        except (ValueError, KeyError, TypeError, AttributeError):
            return  # malformed: _chat answers it with a 400
        self._admit(body, prompt_tokens, arrived)

    def _chat(self, raw: bytes, headers: dict[str, str], fault: Fault | None) -> _Answer:
        body = _parse_json(raw)
        prompt_tokens = self._check_chat(body)
        delay = self.latency + (self._rng.uniform(-1, 1) * self.latency_jitter if self.latency_jitter else 0.0)
        if delay > 0 and self._stopping.wait(delay):
            return _Answer(drop=True)
        completion = self._complete(body, prompt_tokens)
        events = self._stream_events(body, completion)
        if not body.get("stream"):
            # A plain answer comes when the whole reply is generated, at the same pace as a stream's.
            if self.token_delay and self._stopping.wait(self.token_delay * (len(events) - 1)):
                return _Answer(drop=True)
            return _Answer(body=completion, usage=completion["usage"])
        cut = fault.stream_drop_after if fault else None
        return _Answer(events=events, usage=completion["usage"], drop_after=None if cut is None else 1 + cut,
                       token_delay=self.token_delay)

    def _check_chat(self, body: Any) -> int:
        """Reject what OpenAI would reject with a 400; return the prompt's tokens."""
        if not isinstance(body, dict):
            raise _ApiError(400, "The request body must be a JSON object.")
        if not isinstance(body.get("model"), str) or not body["model"]:
            raise _ApiError(400, "you must provide a model parameter", param="model")
        messages = body.get("messages")
        if not isinstance(messages, list) or not messages or not all(isinstance(m, dict) for m in messages):
            raise _ApiError(400, "Missing required parameter: 'messages'.", param="messages",
                            code="missing_required_parameter")
        for name in ("max_tokens", "max_completion_tokens"):
            value = body.get(name)
            if value is not None and (not isinstance(value, int) or value < 1):
                raise _ApiError(400, f"Invalid '{name}': expected a positive integer.", param=name)
        pinned = self.dialect.pinned
        if pinned is not None and body["model"] != pinned:
            raise _ApiError(400, f"Server is pinned to '{pinned}'; requested '{body['model']}'")
        if body.get("logprobs") and not self.supports_logprobs:
            raise _ApiError(400, "logprobs is not supported by this server", param="logprobs")
        response_format = body.get("response_format")
        if isinstance(response_format, dict) and response_format.get("type") == "json_schema":
            if self.dialect.json_schema == "500":
                raise _ApiError(500, "1 validation error for CreateChatCompletionRequest\nresponse_format.type\n"
                                "  Input should be 'text' or 'json_object' [type=literal_error, "
                                "input_value='json_schema', input_type=str]", type="server_error")
            if not self.supports_json_schema or self.dialect.json_schema == "400":
                raise _ApiError(400, "response_format json_schema is not supported by this server",
                                param="response_format")
            if not isinstance(response_format.get("json_schema"), dict):
                raise _ApiError(400, "Missing required parameter: 'response_format.json_schema'.",
                                param="response_format")
        if isinstance(response_format, dict) and "schema" in response_format and not self.dialect.object_schema:
            raise _ApiError(400, "response_format.schema: Extra inputs are not permitted", param="response_format")
        prompt_tokens = self._scaled(count_prompt_tokens(body["model"], messages))
        self._check_context(body, prompt_tokens)
        return prompt_tokens

    def _scaled(self, tokens: int) -> int:
        """Tokens as this server's tokenizer counts them."""
        scale = self.dialect.token_scale
        return tokens if scale == 1.0 else math.ceil(tokens * scale)

    def _check_context(self, body: dict, prompt_tokens: int) -> None:
        window = self.context_windows.get(body["model"])
        completion = body.get("max_completion_tokens") or body.get("max_tokens") or 0
        if window is None or prompt_tokens + completion <= window:
            return
        if self.dialect.clamp and prompt_tokens < window:
            return  # the answer is cut to what the window leaves (see _complete)
        with self._lock:
            self._stats["oversize_rejections"] += 1
        raise _ApiError(
            400,
            f"This model's maximum context length is {window} tokens. However, you requested "
            f"{prompt_tokens + completion} tokens ({prompt_tokens} in the messages, {completion} in the "
            "completion). Please reduce the length of the messages or completion.",
            param="messages", code="context_length_exceeded",
        )

    def _admit(self, body: dict, prompt_tokens: int, arrived: float) -> None:
        if not (self.rpm or self.tpm):
            return
        cost = prompt_tokens + (body.get("max_completion_tokens") or body.get("max_tokens") or 0)
        with self._lock:
            wait = self._window.admit(arrived, cost, self.rpm, self.tpm)
            self._admissions.append((arrived, cost, wait <= 0))
        if wait > 0:
            wait_ms = math.ceil(wait * 1000)
            raise _ApiError(429, f"Rate limit reached for {body['model']}. Please try again in {wait_ms}ms.",
                            type="requests", code="rate_limit_exceeded", retry_after=math.ceil(wait),
                            retry_after_ms=wait_ms)

    def _reply_text(self, body: dict) -> str:
        """Scripted replies first, then the ``reply`` callable, then a schema instance or the default."""
        with self._lock:
            if self._replies:
                return self._replies.popleft()
        if self.reply is not None and (text := self.reply(body)) is not None:
            return text
        response_format = body.get("response_format") or {}
        kind = response_format.get("type")
        if kind == "json_schema" and self.dialect.json_schema == "ignored":
            kind = None
        if kind == "json_schema":
            return json.dumps(example_instance(response_format["json_schema"].get("schema", {})))
        stated = _schema_in_prompt(body["messages"])
        if stated is not None:  # an instruction-following model: the schema it was told, fenced unless JSON is forced
            instance = json.dumps(example_instance(stated))
            return instance if kind == "json_object" else f"Here it is:\n```json\n{instance}\n```"
        text = _default_reply(body["messages"])
        return json.dumps({"reply": text}) if kind == "json_object" else text

    def _complete(self, body: dict, prompt_tokens: int) -> dict[str, Any]:
        """A chat.completion object for a valid body; cut to max tokens like a real model."""
        model, text, finish = body["model"], self._reply_text(body), "stop"
        limit = body.get("max_completion_tokens") or body.get("max_tokens")
        window = self.context_windows.get(model)
        if window is not None and self.dialect.clamp and (limit is None or prompt_tokens + limit > window):
            limit = window - prompt_tokens  # what the window leaves
        if limit and self.dialect.token_scale != 1.0:
            limit = max(1, math.floor(limit / self.dialect.token_scale))  # in tiktoken tokens
        tokens = _encoding(model).encode_ordinary(text)
        if limit and len(tokens) > limit:
            text, finish = _encoding(model).decode(tokens[:limit]), "length"
        asked = body.get("max_completion_tokens") or body.get("max_tokens") or 1 << 30
        completion_tokens = min(self._scaled(_count(model, text)), asked)
        logprobs = self._logprobs(model, text, body.get("top_logprobs") or 0) if body.get("logprobs") else None
        return {
            "id": f"chatcmpl-{next(self._ids)}", "object": "chat.completion", "created": int(time.time()),
            "model": model, "system_fingerprint": None,
            "choices": [{"index": 0, "message": {"role": "assistant", "content": text, "refusal": None},
                         "logprobs": logprobs, "finish_reason": finish}],
            "usage": {"prompt_tokens": prompt_tokens, "completion_tokens": completion_tokens,
                      "total_tokens": prompt_tokens + completion_tokens},
        }

    def _stream_events(self, body: dict, completion: dict) -> list[dict]:
        """The chunks of a completion: role, one per word, finish, then usage if asked for and supported."""
        base = {key: completion[key] for key in ("id", "created", "model", "system_fingerprint")}
        base["object"] = "chat.completion.chunk"
        with_usage = self.stream_usage and bool((body.get("stream_options") or {}).get("include_usage"))

        def chunk(delta: dict, finish: str | None = None) -> dict:
            event = {**base, "choices": [{"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish}]}
            return {**event, "usage": None} if with_usage else event

        choice = completion["choices"][0]
        pieces = re.findall(r"\S+\s*|\s+", choice["message"]["content"])
        events = [chunk({"role": "assistant", "content": ""})]
        events += [chunk({"content": piece}) for piece in pieces]
        events.append(chunk({}, choice["finish_reason"]))
        if with_usage:
            events.append({**base, "choices": [], "usage": completion["usage"]})
        elif self.dialect.estimated_stream_usage:  # LiteLLM counts the usage itself and sends it anyway
            events.append({**base, "choices": [{"index": 0, "delta": {}}], "usage": completion["usage"]})
        return events

    def _logprobs(self, model: str, text: str, top: int) -> dict[str, Any]:
        """Each token of the answer with ``self.logprob(token)``, and ``top`` alternatives (the token first)."""
        if not isinstance(top, int) or not 0 <= top <= 20:
            raise _ApiError(400, "Invalid 'top_logprobs': expected an integer from 0 to 20.", param="top_logprobs")
        enc, content = _encoding(model), []
        for token_id in enc.encode_ordinary(text):
            token = enc.decode_single_token_bytes(token_id).decode("utf-8", "replace")
            lp = float(self.logprob(token))
            alternatives = [(token, lp)] + [(f"{token}~{k}", lp - 2.0 * k) for k in range(1, top)]
            content.append({"token": token, "logprob": lp, "bytes": list(token.encode()),
                            "top_logprobs": [{"token": t, "logprob": v, "bytes": list(t.encode())}
                                             for t, v in alternatives[:top]]})
        return {"content": content, "refusal": None}

    def _moderations(self, raw: bytes, headers: dict[str, str], fault: Fault | None) -> _Answer:
        """``/v1/moderations``: one result per input text, scored by :meth:`flag`'s rules."""
        body = _parse_json(raw)
        texts = body.get("input") if isinstance(body, dict) else None
        texts = [texts] if isinstance(texts, str) else texts
        if not isinstance(texts, list) or not texts or not all(isinstance(t, str) for t in texts):
            raise _ApiError(400, "Invalid 'input': expected a string or a list of strings.", param="input")
        with self._lock:
            rules = dict(self.moderation_rules)
        results = []
        for text in texts:
            scores = {name: 1e-5 for name in _MODERATION_CATEGORIES}
            for substring, scripted in rules.items():
                if substring in text:
                    scores.update({k: max(v, scores.get(k, 0.0)) for k, v in scripted.items()})
            categories = {name: score >= 0.5 for name, score in scores.items()}
            results.append({"flagged": any(categories.values()), "categories": categories,
                            "category_scores": scores,
                            "category_applied_input_types": {name: ["text"] for name in scores}})
        model = body.get("model") or "omni-moderation-latest"
        return _Answer(body={"id": f"modr-{next(self._ids)}", "model": model, "results": results})

    def _models(self, raw: bytes, headers: dict[str, str], fault: Fault | None) -> _Answer:
        names = sorted({*self.context_windows, "gpt-4o-mini"})
        data = [{"id": name, "object": "model", "created": 0, "owned_by": "aigc-tests"} for name in names]
        if self.dialect.window_in == "models":
            for item in data:
                if item["id"] in self.context_windows:
                    item["max_model_len"] = self.context_windows[item["id"]]
        return _Answer(body={"object": "list", "data": data})

    # -- what some compatible servers add: a tokenizer, window metadata

    def _tokenize(self, raw: bytes, headers: dict[str, str], fault: Fault | None) -> _Answer:
        """vLLM's /tokenize: a prompt (no chat template) or messages (with the chat formula)."""
        if not self.dialect.tokenize:
            raise _ApiError(404, "Invalid URL (POST /tokenize)")
        body = _parse_json(raw)
        model = body.get("model") or "gpt-4o-mini"
        if isinstance(body.get("messages"), list):
            count = self._scaled(count_prompt_tokens(model, body["messages"]))
        elif isinstance(body.get("prompt"), str):
            count = self._scaled(_count(model, body["prompt"])) if body["prompt"] else 0
        else:
            raise _ApiError(400, "Either 'prompt' or 'messages' is required.")
        with self._lock:
            self._stats["tokenize"] = self._stats.get("tokenize", 0) + 1
        return _Answer(body={"count": count, "max_model_len": self.context_windows.get(model, 8192),
                             "tokens": list(range(count))})

    def _props(self, raw: bytes, headers: dict[str, str], fault: Fault | None) -> _Answer:
        """llama.cpp's /props: the one model's slot window and the number of slots."""
        if self.dialect.window_in != "props" or not self.context_windows:
            raise _ApiError(404, "Invalid URL (GET /props)")
        window = next(iter(self.context_windows.values()))
        return _Answer(body={"default_generation_settings": {"n_ctx": window}, "total_slots": 1})

    def _show(self, raw: bytes, headers: dict[str, str], fault: Fault | None) -> _Answer:
        """Ollama's /api/show: the Modelfile's parameters and the model's trained window."""
        model = (_parse_json(raw) or {}).get("model")
        if self.dialect.window_in != "show" or model not in self.context_windows:
            raise _ApiError(404, "Invalid URL (POST /api/show)")
        return _Answer(body={"parameters": f"num_ctx {self.context_windows[model]}\nstop \"<|im_end|>\"",
                             "model_info": {"llama.context_length": 8192}})

    # -- files and batches

    def _store_file(self, filename: str, purpose: str, data: bytes) -> dict[str, Any]:
        with self._lock:
            # Fine-tuning uploads are processed a little later (clients must wait for it); others at once.
            status = "uploaded" if purpose == "fine-tune" and self.file_polls_to_process > 0 else "processed"
            info = {"id": f"file-{next(self._ids)}", "object": "file", "bytes": len(data),
                    "created_at": int(time.time()), "filename": filename, "purpose": purpose, "status": status}
            self._files[info["id"]] = (info, data)
            return dict(info)

    def _file(self, file_id: str) -> tuple[dict, bytes]:
        with self._lock:
            if file_id not in self._files:
                raise _ApiError(404, f"No such File object: {file_id}", param="id")
            return self._files[file_id]

    def _upload(self, raw: bytes, headers: dict[str, str], fault: Fault | None) -> _Answer:
        form = _parse_multipart(raw, next((v for k, v in headers.items() if k.lower() == "content-type"), ""))
        if "file" not in form:
            raise _ApiError(400, "Missing required parameter: 'file'.", param="file")
        purpose = form.get("purpose", (None, b""))[1].decode()
        if not purpose:
            raise _ApiError(400, "Missing required parameter: 'purpose'.", param="purpose")
        filename, data = form["file"]
        return _Answer(body=self._store_file(filename or "upload", purpose, data))

    def _file_info(self, raw: bytes, headers: dict[str, str], fault: Fault | None, file_id: str) -> _Answer:
        with self._lock:
            info = self._file(file_id)[0]
            if info["status"] == "uploaded":
                self._file_polls[file_id] = self._file_polls.get(file_id, 0) + 1
                if self._file_polls[file_id] >= self.file_polls_to_process:
                    info["status"] = "processed"
            return _Answer(body=dict(info))

    def _file_content(self, raw: bytes, headers: dict[str, str], fault: Fault | None, file_id: str) -> _Answer:
        return _Answer(body=self._file(file_id)[1])

    def _delete_file(self, raw: bytes, headers: dict[str, str], fault: Fault | None, file_id: str) -> _Answer:
        with self._lock:
            self._file(file_id)
            del self._files[file_id]
        return _Answer(body={"id": file_id, "object": "file", "deleted": True})

    def _batch(self, batch_id: str) -> _Batch:
        if batch_id not in self._batches:
            raise _ApiError(404, f"No such Batch object: {batch_id}", param="id")
        return self._batches[batch_id]

    def _create_batch(self, raw: bytes, headers: dict[str, str], fault: Fault | None) -> _Answer:
        body = _parse_json(raw)
        if not isinstance(body, dict):
            raise _ApiError(400, "The request body must be a JSON object.")
        self._file(body.get("input_file_id") or "")
        if body.get("endpoint") != "/v1/chat/completions":
            raise _ApiError(400, "Only /v1/chat/completions batches are supported.", param="endpoint")
        if body.get("completion_window") != "24h":
            raise _ApiError(400, "completion_window must be '24h'.", param="completion_window")
        now = int(time.time())
        obj = {
            "id": f"batch_{next(self._ids)}", "object": "batch", "endpoint": body["endpoint"], "errors": None,
            "input_file_id": body["input_file_id"], "completion_window": "24h", "status": "validating",
            "output_file_id": None, "error_file_id": None, "created_at": now, "in_progress_at": None,
            "expires_at": now + 86400, "finalizing_at": None, "completed_at": None, "failed_at": None,
            "expired_at": None, "cancelling_at": None, "cancelled_at": None,
            "request_counts": {"total": 0, "completed": 0, "failed": 0}, "metadata": body.get("metadata"),
        }
        with self._lock:
            self._batches[obj["id"]] = _Batch(obj)
            self._stats["batches_created"] += 1
        if self.batch_polls_to_complete <= 0:
            self._advance(obj["id"], poll=False)
        with self._lock:
            return _Answer(body=copy.deepcopy(self._batches[obj["id"]].obj))

    def _retrieve_batch(self, raw: bytes, headers: dict[str, str], fault: Fault | None, batch_id: str) -> _Answer:
        self._advance(batch_id, poll=True)
        with self._lock:
            return _Answer(body=copy.deepcopy(self._batch(batch_id).obj))

    def _cancel_batch(self, raw: bytes, headers: dict[str, str], fault: Fault | None, batch_id: str) -> _Answer:
        with self._lock:
            obj = self._batch(batch_id).obj
            if obj["status"] not in ("validating", "in_progress"):
                raise _ApiError(400, f"Cannot cancel a batch with status '{obj['status']}'.")
            obj.update(status="cancelling", cancelling_at=int(time.time()))
            return _Answer(body=copy.deepcopy(obj))

    def _advance(self, batch_id: str, poll: bool) -> None:
        """Move a batch one step per poll: validating → in_progress → (after enough polls) completed."""
        now = int(time.time())
        with self._lock:
            batch = self._batch(batch_id)
            batch.polls += poll
            obj = batch.obj
            if obj["status"] == "cancelling":
                obj.update(status="cancelled", cancelled_at=now)
            if obj["status"] == "validating":
                lines = self._file(obj["input_file_id"])[1].splitlines()
                obj["request_counts"]["total"] = sum(1 for line in lines if line.strip())
                obj.update(status="in_progress", in_progress_at=now)
            if obj["status"] != "in_progress" or batch.polls < self.batch_polls_to_complete:
                return
            obj.update(status="finalizing", finalizing_at=now)  # concurrent polls see this while it runs
            data = self._file(obj["input_file_id"])[1]
        results = [self._batch_line(line, obj["endpoint"]) for line in data.splitlines() if line.strip()]
        done, failed = [], []
        for result in results:
            ok = result["error"] is None and result["response"]["status_code"] == 200
            (done if ok else failed).append(result)
        output = self._store_file(f"{batch_id}_output.jsonl", "batch_output", _jsonl(done))
        errors = self._store_file(f"{batch_id}_error.jsonl", "batch_output", _jsonl(failed)) if failed else None
        with self._lock:
            obj.update(status="completed", completed_at=int(time.time()), output_file_id=output["id"],
                       error_file_id=errors and errors["id"],
                       request_counts={"total": len(results), "completed": len(done), "failed": len(failed)})

    def _batch_line(self, line: bytes, endpoint: str) -> dict[str, Any]:
        """One input line through the chat logic (no faults, limits or latency), as an output-file line."""
        result = {"id": f"batch_req_{next(self._ids)}", "custom_id": None, "response": None, "error": None}
        try:
            item = json.loads(line)
        except ValueError:
            return {**result, "error": {"code": "invalid_json_line", "message": "This line is not valid JSON."}}
        if not isinstance(item, dict) or item.get("url") != endpoint or item.get("method", "POST") != "POST":
            return {**result, "custom_id": item.get("custom_id") if isinstance(item, dict) else None,
                    "error": {"code": "invalid_request", "message": f"Each line must be a POST to {endpoint}."}}
        result["custom_id"] = item.get("custom_id")
        request_id = f"req_{next(self._request_ids)}"
        try:
            body = item.get("body")
            completion = self._complete(body, self._check_chat(body))
        except _ApiError as err:
            return {**result, "response": {"status_code": err.status, "request_id": request_id, "body": err.body()}}
        self._bill(completion["usage"])
        return {**result, "response": {"status_code": 200, "request_id": request_id, "body": completion}}

    # -- fine-tuning jobs (the state lives in tests/fake_fine_tuning.py)

    def _ft_create(self, raw: bytes, headers: dict[str, str], fault: Fault | None) -> _Answer:
        job = self.fine_tuning.create(_parse_json(raw))
        return _Answer(drop=True) if self.fine_tuning.lose_this_answer() else _Answer(body=job)

    def _ft_list(self, raw: bytes, headers: dict[str, str], fault: Fault | None) -> _Answer:
        return _Answer(body=self.fine_tuning.list(headers["x-query-string"]))

    def _ft_retrieve(self, raw: bytes, headers: dict[str, str], fault: Fault | None, job_id: str) -> _Answer:
        return _Answer(body=self.fine_tuning.retrieve(job_id))

    def _ft_events(self, raw: bytes, headers: dict[str, str], fault: Fault | None, job_id: str) -> _Answer:
        return _Answer(body=self.fine_tuning.events(job_id, headers["x-query-string"]))

    def _ft_checkpoints(self, raw: bytes, headers: dict[str, str], fault: Fault | None, job_id: str) -> _Answer:
        return _Answer(body=self.fine_tuning.checkpoints(job_id))

    def _ft_cancel(self, raw: bytes, headers: dict[str, str], fault: Fault | None, job_id: str) -> _Answer:
        return _Answer(body=self.fine_tuning.cancel(job_id))

    # -- control endpoints for a server in another process

    def _control(self, method: str, path: str, raw: bytes) -> _Answer:
        try:
            if (method, path) == ("POST", "/_control/faults"):
                faults = [Fault.from_dict(item) for item in _parse_json(raw)]
                self.enqueue_faults(*faults)
                return _Answer(body={"queued": len(faults)})
            if (method, path) == ("POST", "/_control/moderation"):
                for substring, scores in _parse_json(raw).items():
                    self.flag(substring, **scores)
                return _Answer(body={"rules": len(self.moderation_rules)})
            if (method, path) == ("POST", "/_control/replies"):
                replies = [str(text) for text in _parse_json(raw)]
                self.enqueue_replies(*replies)
                return _Answer(body={"queued": len(replies)})
            if (method, path) == ("GET", "/_control/stats"):
                return _Answer(body={"stats": self.stats, "billed": self.billed})
            if (method, path) == ("GET", "/_control/admissions"):
                with self._lock:  # when each rate-limited request arrived (time.monotonic), its tokens, if let in
                    return _Answer(body={"admissions": list(self._admissions)})
            if (method, path) == ("POST", "/_control/reset"):
                self.reset()
                return _Answer(body={"reset": True})
            raise _ApiError(404, f"Invalid URL ({method} {path})")
        except (TypeError, ValueError) as err:
            return _ApiError(400, f"Bad control request: {err}").answer()
        except _ApiError as err:
            return err.answer()


def _jsonl(items: list[dict]) -> bytes:
    return b"".join(json.dumps(item).encode() + b"\n" for item in items)


# ---- running as a process -----------------------------------------------------------------------------------


class ServerProcess:
    """The server in a process of its own, started with :func:`main`'s flags, as a real API runs: a test of
    timing (rate limits) then measures the client, not an interpreter the two share. ``control`` scripts it.

        with ServerProcess("--rpm", "1200") as server:
            client = openai.OpenAI(base_url=server.url, api_key="sk-test")
            server.stats["rate_limited"]
    """

    def __init__(self, *flags: str) -> None:
        self.flags = flags
        self.process: subprocess.Popen | None = None
        self.url = ""

    def __enter__(self) -> ServerProcess:
        command = [sys.executable, str(Path(__file__).resolve()), "--port", "0", *self.flags]
        self.process = subprocess.Popen(command, stdout=subprocess.PIPE, text=True)
        self.url = self.process.stdout.readline().strip()
        if not self.url.startswith("http"):
            self.__exit__()
            raise RuntimeError(f"the test server did not start: {' '.join(command)}")
        return self

    def __exit__(self, *exc: object) -> None:
        self.process.terminate()
        self.process.wait(10)
        self.process.stdout.close()

    def control(self, path: str, payload: Any = None) -> dict:
        """GET ``/_control/<path>``, or POST ``payload`` as JSON to it."""
        request = urllib.request.Request(f"{self.url.removesuffix('/v1')}/_control/{path}",
                                         data=None if payload is None else json.dumps(payload).encode(),
                                         headers={"Content-Type": "application/json"})
        with urllib.request.urlopen(request, timeout=10) as response:
            return json.loads(response.read())

    @property
    def stats(self) -> dict[str, Any]:
        return self.control("stats")["stats"]

    @property
    def admissions(self) -> list[tuple[float, int, bool]]:
        """(arrived, tokens, admitted) for each request the rate limits saw; ``arrived`` is this machine's
        ``time.monotonic()``."""
        return [tuple(row) for row in self.control("admissions")["admissions"]]

    def reset(self, settle: float = 0.0) -> None:
        """Forget every request and empty the rate windows, then pause ``settle`` seconds before the next run."""
        self.control("reset", {})
        time.sleep(settle)



def _context_window(text: str) -> tuple[str, int]:
    model, _, tokens = text.rpartition("=")
    return model, int(tokens)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Serve a fake OpenAI-compatible API until SIGTERM/SIGINT.")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=0)
    parser.add_argument("--latency", type=float, default=0.0)
    parser.add_argument("--latency-jitter", type=float, default=0.0)
    parser.add_argument("--error-rate", type=float, default=0.0)
    parser.add_argument("--drop-rate", type=float, default=0.0)
    parser.add_argument("--seed", type=int)
    parser.add_argument("--rpm", type=float)
    parser.add_argument("--tpm", type=float)
    parser.add_argument("--api-key")
    parser.add_argument("--no-stream-usage", action="store_true")
    parser.add_argument("--no-json-schema", action="store_true")
    parser.add_argument("--context-window", type=_context_window, action="append", default=[],
                        metavar="MODEL=TOKENS")
    parser.add_argument("--batch-polls-to-complete", type=int, default=2)
    parser.add_argument("--rate-window", type=float, default=1.0,
                        help="seconds over which rpm/tpm are enforced: 1 (as OpenAI does) or 60")
    parser.add_argument("--fine-tune-durations", type=float, nargs=3, default=(0.5, 0.5, 1.0),
                        metavar=("VALIDATING", "QUEUED", "RUNNING"))
    parser.add_argument("--no-fine-tuning", action="store_true", help="answer job creation with 403")
    args = parser.parse_args(argv)
    server = FakeOpenAIServer(
        host=args.host, port=args.port, latency=args.latency, error_rate=args.error_rate,
        drop_rate=args.drop_rate, seed=args.seed, rpm=args.rpm, tpm=args.tpm, api_key=args.api_key,
        stream_usage=not args.no_stream_usage, supports_json_schema=not args.no_json_schema,
        context_windows=dict(args.context_window), batch_polls_to_complete=args.batch_polls_to_complete,
        rate_window=args.rate_window, latency_jitter=args.latency_jitter,
        fine_tune_durations=tuple(args.fine_tune_durations), fine_tuning_allowed=not args.no_fine_tuning,
    )
    stop = threading.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: stop.set())
    for model in ("gpt-4o-mini", "gpt-4"):  # warm before it says it is up, as a real API is
        _count(model, "warm")
    with server:
        print(server.url, flush=True)
        while not stop.wait(0.5):
            pass
    return 0


if __name__ == "__main__":
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # make `aigc` importable from a checkout
    sys.exit(main())
