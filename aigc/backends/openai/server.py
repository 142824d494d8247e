"""Every decision the ``openai`` backend makes about its server; :class:`~.backend.OpenAIBackend` does the I/O.

The hosted OpenAI API is known: json_schema is enforced, tiktoken counts, the model table has the limits.
A compatible server is learned (see :mod:`.capabilities`): which structured-output mode it honours, its
context window (from its metadata, :mod:`.discovery`, or from the text of a context-length error), and how
its tokenizer counts (:mod:`.counting`). Structured output steps down json_schema → json_object → prompt
when the server refuses a mode (a 400, 422 or 500 naming it) or ignores it (a non-JSON answer), and on a
server not verified to enforce the schema the schema is always in the prompt too.
"""

from __future__ import annotations

import abc
import ipaddress
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

from ... import errors
from ...redact import redact_url, url_secrets
from ...types import ChatRequest, Completion, Message, Usage
from ..base import BaseBackend
from . import wire
from .capabilities import STRUCTURED_MODES, Capabilities, CapabilityStore, server_key
from .counting import Counting, choose_counting, folder_window
from .discovery import ServerInfo
from .errors import translate_error

if TYPE_CHECKING:
    from ...config import Settings
    from ...models import ModelInfo

__all__ = ["ServerBase", "is_local_address"]

_FORMAT_WORDS = ("response_format", "json_schema", "json_object")
_CALIBRATE_BYTES = 1024  # prompts this long teach the tokenizer's ratio (shorter ones: its template overhead)
_CALIBRATE_FIRST, _CALIBRATE_EVERY = 8, 64  # an exact counter is checked on the first answers, then 1 in 64


def is_local_address(base_url: str | None) -> bool:
    """True for a server on this machine or a private network: loopback, private or link-local addresses,
    ``localhost`` and ``*.local`` names."""
    if not base_url:
        return False
    host = (urlsplit(base_url).hostname or "").lower()
    if host in ("localhost", "0.0.0.0") or host.endswith((".localhost", ".local", ".internal")):
        return True
    try:
        address = ipaddress.ip_address(host)
    except ValueError:
        return False
    return address.is_loopback or address.is_private or address.is_link_local


class ServerBase(BaseBackend):
    """What is known and decided about one server: capabilities, model limits, token counts, request bodies."""

    name = "openai"
    default_model = "gpt-4o-mini"

    def __init__(self, settings: Settings, *, store: CapabilityStore | None = None) -> None:
        self.settings = settings
        self._key = settings.key
        if not self._key and not settings.base_url:
            raise errors.ConfigError(
                "no API key for the openai backend: set OPENAI_API_KEY, api_key in the config file, "
                "or use --backend local"
            )
        self.where = redact_url(settings.base_url) or "the OpenAI API"
        replicas = settings.base_urls or ()
        if len(replicas) > 1:
            self.where += f" (and {len(replicas) - 1} more)"
        self._secrets = (self._key, *(s for u in (settings.base_url, *replicas) for s in url_secrets(u)))
        self.official = settings.base_url is None
        self.server = "openai" if self.official else server_key(settings.base_url or "")
        local = settings.local_server
        self.local_server = (not self.official) and (is_local_address(settings.base_url) if local is None else local)
        # One request at a time on a local server (most run one generation at a time; a queued request
        # would spend its timeout waiting), unless `concurrency` says otherwise.
        self.max_parallel = 1 if self.local_server else None
        if store is None:
            store = CapabilityStore(None if self.official else Path(settings.cache_dir) / "servers.db")
        self._store = store
        self._known: dict[str, Capabilities] = {}  # the hosted API's, never recorded
        self._infos: dict[str, tuple[int, ModelInfo]] = {}
        self._countings: dict[str, Counting] = {}
        self._calibrated: dict[str, int] = {}  # answers compared with an exact count, per model
        self._tables: Any = None

    # -- the SDK client used for probes (OpenAIBackend provides it) ------------------------------------
    @property
    @abc.abstractmethod
    def client(self) -> Any:
        """The SDK's sync client."""

    def translate(self, e: BaseException) -> errors.AigcError:
        """An SDK exception as aigc's error, the secrets scrubbed. Raise it outside the ``except`` block that
        caught ``e``, so that the SDK exception (and the request it holds) is not its ``__context__``."""
        return translate_error(e, key=self._secrets, where=self.where)

    # -- capabilities --------------------------------------------------------------------------------
    def capabilities(self, model: str) -> Capabilities:
        """What is known of ``model`` on this server (a fresh record for the hosted API)."""
        if self.official:
            caps = self._known.get(model)
            if caps is None:
                caps = self._known[model] = Capabilities()
            return caps
        return self._store.get(self.server, model)

    def _saver(self, model: str):
        def save() -> None:
            if self.official:
                self.capabilities(model).version += 1
            else:
                self._store.save(self.server, model, self.capabilities(model))
        return save

    def structured_mode(self, model: str) -> str:
        """How structured output is asked of this server for ``model``: json_schema, json_object or prompt."""
        return self.capabilities(model).structured

    def probe(self) -> ServerInfo | None:
        return None if self.official else ServerInfo(lambda: self.client, self.settings.base_url or "")

    # -- models and tokens ---------------------------------------------------------------------------
    def model_info(self, model: str) -> ModelInfo:
        """The table's entry, with the window this server runs the model with when it has told us."""
        if self._tables is None:
            from ...models import ModelTable

            self._tables = ModelTable.cached(self.settings.models_file)
        info = self._tables.lookup(model)
        if self.official:
            return info
        caps = self.capabilities(model)
        if not caps.probed and (not info.known or info.backend == "local"):
            caps.probed = True
            found = self.probe().window(model) or folder_window(model)  # type: ignore[union-attr]
            if found is not None and (found[0], found[1]) != (caps.context_window, caps.window_source):
                caps.context_window, caps.window_source = found
                self._saver(model)()
        memo = self._infos.get(model)
        if memo is not None and memo[0] == caps.version:
            return memo[1]
        window = caps.context_window
        if window:
            if info.known and info.backend != "local":
                window = min(window, info.context_window)
            update: dict[str, Any] = {"context_window": window,
                                      "max_output_tokens": min(info.max_output_tokens, window)}
            if info.max_input_tokens is not None:
                update["max_input_tokens"] = min(info.max_input_tokens, window)
            info = info.model_copy(update=update)
        self._infos[model] = (caps.version, info)
        return info

    def counting(self, model: str) -> Counting:
        counting = self._countings.get(model)
        if counting is None:
            info = self.model_info(model)
            caps = self.capabilities(model)
            if self.official:
                counting = Counting(info.encoding or "o200k_base", caps, self._saver(model), exact=True)
            else:
                counting = choose_counting(info, model, caps, self._saver(model),
                                           cache_dir=self.settings.cache_dir, probe=self.probe())
            self._countings[model] = counting
        return counting

    def count_tokens(self, messages: list[Message], model: str) -> int:
        return self.counting(model).messages(messages)

    def count_text(self, text: str, model: str) -> int:
        return self.counting(model).text(text)

    def text_counter(self, model: str) -> Any:
        """What splitting counts with: the tokenizer itself where it is exact, else a counting function."""
        return self.counting(model).splitter()

    # -- request shaping ------------------------------------------------------------------------------
    def body(self, request: ChatRequest, mode: str | None = None) -> dict[str, Any]:
        """The request's JSON body as this server will be sent it (also used for Batch API lines)."""
        if request.logprobs is not None and not self.capabilities(request.model).logprobs:
            request = request.model_copy(update={"logprobs": None})
        return wire.request_body(request, official=self.official,
                                 response_format=mode or self.structured_mode(request.model),
                                 schema_in_prompt=not self.official,
                                 object_schema=not self.official and self.capabilities(request.model).object_schema)

    # -- learning from failures and answers ---------------------------------------------------------
    def learned(self, err: errors.AigcError, request: ChatRequest, stream: bool, mode: str) -> bool:
        """What a failure of a request sent in structured ``mode`` teaches: True when a feature the server
        lacks was dropped and asking again is worthwhile; a context-length refusal records the window and
        the server's count."""
        if isinstance(err, errors.ContextLengthExceeded):
            err.learned = self._learn_window(err, request)
            return False
        if not isinstance(err, (errors.BadRequest, errors.ServerError)):
            return False
        text = err.message.lower()
        caps = self.capabilities(request.model)
        if request.json_schema is not None and mode != "prompt" and any(w in text for w in _FORMAT_WORDS):
            if mode == "json_object" and caps.object_schema:  # first without the schema extension
                caps.object_schema = False
                self._saver(request.model)()
                return True
            weaker = STRUCTURED_MODES[STRUCTURED_MODES.index(mode) + 1]
            if STRUCTURED_MODES.index(weaker) > STRUCTURED_MODES.index(caps.structured):
                caps.structured = weaker  # (a request running alongside may have stepped down already)
                self._saver(request.model)()
            return True
        if request.logprobs is not None and caps.logprobs and "logprobs" in text:
            caps.logprobs = False  # a server without log-probabilities: answers come without confidence
            self._saver(request.model)()
            return True
        if stream and ("stream_options" in text or "include_usage" in text):
            if caps.stream_options:  # (or a request running alongside dropped it already)
                caps.stream_options = False
                self._saver(request.model)()
            return True
        return False

    def _learn_window(self, err: errors.ContextLengthExceeded, request: ChatRequest) -> bool:
        """Record the window and the server's count a refusal names; True when either was news."""
        if self.official:
            return False
        caps = self.capabilities(request.model)
        learned = bool(err.prompt_tokens) and self.counting(request.model).observe(request.messages,
                                                                                   err.prompt_tokens or 0)
        if err.window and err.window != caps.context_window:
            caps.context_window, caps.window_source = err.window, "error"
            self._saver(request.model)()
            learned = True
        return learned

    def finished(self, completion: Completion, request: ChatRequest, mode: str) -> Completion:
        """A completion with its usage filled in, the structured mode it verified, and the lessons it
        teaches about the server's tokenizer and structured output recorded."""
        if completion.usage is None:
            usage = Usage(prompt_tokens=self.count_tokens(request.messages, request.model),
                          completion_tokens=self.count_text(completion.text, request.model))
            completion = completion.model_copy(update={"usage": usage, "usage_estimated": True})
        elif not self.official and not completion.usage_estimated:
            self._calibrate(request, completion.usage.prompt_tokens)
        if request.json_schema is not None:
            completion = completion.model_copy(update={"response_format": self._verify(completion, request, mode)})
        return completion

    def _calibrate(self, request: ChatRequest, prompt_tokens: int) -> None:
        counting = self.counting(request.model)
        if counting.exact:
            if sum(len(m.content) for m in request.messages) < _CALIBRATE_BYTES:
                return  # short prompts on a tiktoken model teach nothing worth the count
            # An exact count that matched the server the first times is checked now and then, not on every call.
            seen = self._calibrated[request.model] = self._calibrated.get(request.model, 0) + 1
            if seen > _CALIBRATE_FIRST and seen % _CALIBRATE_EVERY:
                return
        counting.observe(request.messages, prompt_tokens)

    def _verify(self, completion: Completion, request: ChatRequest, mode: str) -> str:
        if self.official:
            return mode
        shown = wire.enforced(completion.text, mode, request.json_schema or {}, completion.finish_reason)
        if shown is None:
            return mode
        caps = self.capabilities(request.model)
        rank = STRUCTURED_MODES.index
        if rank(shown) > rank(caps.structured):  # ignored: ask the next one in the weaker mode
            caps.structured = shown
            self._saver(request.model)()
        elif shown == mode and shown != "prompt" and (caps.enforced is None or rank(shown) < rank(caps.enforced)):
            caps.enforced = shown
            self._saver(request.model)()
        return shown

    def close(self) -> None:
        self._store.close()
