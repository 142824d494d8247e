"""Asking a compatible server about itself: its context window, its tokenizer, whether it answers at all.

What each server says (documented by each project; the test server in ``tests/openai_server.py`` speaks
these dialects too):

- vLLM: ``GET /v1/models`` lists ``max_model_len`` per model; ``POST /tokenize`` takes ``{"model",
  "prompt"}`` or ``{"model", "messages"}`` (chat template applied) and answers ``{"count",
  "max_model_len", "tokens"}``.
- llama.cpp's ``llama-server``: ``GET /props`` has ``default_generation_settings.n_ctx`` (one slot's window)
  and ``total_slots``; ``POST /tokenize`` takes ``{"content"}`` and answers ``{"tokens"}``;
  ``POST /apply-template`` renders messages with the chat template.
- llama-cpp-python's server: ``POST /extras/tokenize/count`` takes ``{"input"}`` and answers ``{"count"}``;
  its window shows only in the 400 it sends for a prompt that is too long.
- Ollama: ``POST /api/show`` gives the Modelfile's ``num_ctx`` and the model's ``<arch>.context_length``;
  ``GET /api/ps`` the ``context_length`` a loaded model runs with. Ollama cuts a longer prompt silently.
- LiteLLM's proxy: ``GET /model/info`` carries ``max_input_tokens`` for models it knows.

Every probe is one small request with a short timeout; a server that does not know an endpoint costs a 404.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import Any

__all__ = ["ServerInfo", "server_root", "OLLAMA_DEFAULT_WINDOW"]

# The window Ollama gives a model whose Modelfile sets none, unless OLLAMA_CONTEXT_LENGTH says otherwise
# (2048 in older releases, 4096 or more in newer ones, which aigc cannot see): the smaller one is safe.
OLLAMA_DEFAULT_WINDOW = 2048
PROBE_TIMEOUT = 5.0
COUNT_TIMEOUT = 60.0
_NUM_CTX = re.compile(r"^\s*num_ctx\s+(\d+)\s*$", re.M)


def server_root(base_url: str) -> str:
    """The server's own root: ``http://host:8000/v1`` → ``http://host:8000`` (endpoints like /tokenize live there)."""
    url = base_url.rstrip("/")
    return url[: -len("/v1")] if url.endswith("/v1") else url


class ServerInfo:
    """Probes of one server, through the backend's SDK client (its key, its transport), made on the first
    probe by ``client()``."""

    def __init__(self, client: Callable[[], Any], base_url: str) -> None:
        self._client = client
        self.base_url = base_url.rstrip("/")
        self.root = server_root(base_url)

    # -- plumbing -----------------------------------------------------------------------------------
    def _get(self, url: str, timeout: float = PROBE_TIMEOUT) -> Any:
        try:
            return self._client().get(url, cast_to=object, options={"timeout": timeout})
        except Exception:  # any failure means "this server does not tell"
            return None

    def _post(self, url: str, body: dict[str, Any], timeout: float = PROBE_TIMEOUT) -> Any:
        try:
            return self._client().post(url, body=body, cast_to=object, options={"timeout": timeout})
        except Exception:
            return None

    # -- the context window -------------------------------------------------------------------------
    def window(self, model: str) -> tuple[int, str] | None:
        """The context window the server runs ``model`` with, and where it said so; None if it does not say."""
        for probe in (self._vllm_models, self._llamacpp_props, self._ollama, self._litellm_info):
            found = probe(model)
            if found:
                return found
        return None

    def models(self) -> list[dict[str, Any]] | None:
        data = self._get(f"{self.base_url}/models")
        items = data.get("data") if isinstance(data, dict) else None
        return [m for m in items if isinstance(m, dict)] if isinstance(items, list) else None

    def _vllm_models(self, model: str) -> tuple[int, str] | None:
        items = self.models() or []
        entry = next((m for m in items if m.get("id") == model), items[0] if len(items) == 1 else None)
        value = entry.get("max_model_len") if entry else None
        return (value, "models") if _positive(value) else None

    def _llamacpp_props(self, model: str) -> tuple[int, str] | None:
        props = self._get(f"{self.root}/props")
        if not isinstance(props, dict):
            return None
        settings = props.get("default_generation_settings")
        value = settings.get("n_ctx") if isinstance(settings, dict) else props.get("n_ctx")
        return (value, "props") if _positive(value) else None

    def _ollama(self, model: str) -> tuple[int, str] | None:
        show = self._post(f"{self.root}/api/show", {"model": model})
        if not isinstance(show, dict) or not ("parameters" in show or "model_info" in show):
            return None
        trained = next((v for k, v in (show.get("model_info") or {}).items()
                        if k.endswith(".context_length") and _positive(v)), None)
        match = _NUM_CTX.search(str(show.get("parameters") or ""))
        running = self._get(f"{self.root}/api/ps")
        models = running.get("models") if isinstance(running, dict) else None
        loaded = next((m.get("context_length") for m in models if isinstance(m, dict)
                       and model in (m.get("name"), m.get("model"))), None) if isinstance(models, list) else None
        value = int(match.group(1)) if match else loaded if _positive(loaded) else OLLAMA_DEFAULT_WINDOW
        return (min(value, trained) if trained else value), "show"

    def _litellm_info(self, model: str) -> tuple[int, str] | None:
        info = self._get(f"{self.root}/model/info")
        entries = info.get("data") if isinstance(info, dict) else None
        for entry in entries if isinstance(entries, list) else []:
            if isinstance(entry, dict) and entry.get("model_name") == model:
                details = entry.get("model_info") or {}
                value = details.get("max_input_tokens") or details.get("max_tokens")
                return (value, "model/info") if _positive(value) else None
        return None

    def parallel(self) -> int | None:
        """How many requests llama-server runs at once (``--parallel``), when it says."""
        props = self._get(f"{self.root}/props")
        value = props.get("total_slots") if isinstance(props, dict) else None
        return value if _positive(value) else None

    # -- the tokenizer ------------------------------------------------------------------------------
    def tokenizer_kind(self, model: str) -> str:
        """Which tokenize endpoint this server has: vllm, llamacpp, llama-cpp-python or none."""
        sample = "Hello world"
        answer = self._post(f"{self.root}/tokenize", {"model": model, "prompt": sample, "content": sample,
                                                      "add_special_tokens": False, "add_special": False})
        if isinstance(answer, dict) and _positive(answer.get("count")):
            return "vllm"
        if isinstance(answer, dict) and isinstance(answer.get("tokens"), list) and answer["tokens"]:
            return "llamacpp"
        answer = self._post(f"{self.root}/extras/tokenize/count", {"input": sample, "model": model})
        if isinstance(answer, dict) and _positive(answer.get("count")):
            return "llama-cpp-python"
        return "none"

    def count_text(self, kind: str, model: str, text: str) -> int | None:
        """Tokens of ``text`` by the server's own tokenizer; None if it could not say."""
        if kind == "vllm":
            answer = self._post(f"{self.root}/tokenize", {"model": model, "prompt": text,
                                                          "add_special_tokens": False}, COUNT_TIMEOUT)
            return _count(answer)
        if kind == "llamacpp":
            answer = self._post(f"{self.root}/tokenize", {"content": text, "add_special": False,
                                                          "parse_special": False}, COUNT_TIMEOUT)
            return _count(answer)
        if kind == "llama-cpp-python":
            answer = self._post(f"{self.root}/extras/tokenize/count", {"input": text, "model": model},
                                COUNT_TIMEOUT)
            return _count(answer)
        return None

    def count_messages(self, kind: str, model: str, messages: list[dict[str, Any]]) -> int | None:
        """Prompt tokens of a chat request, chat template included, where the server can render it."""
        if kind == "vllm":
            answer = self._post(f"{self.root}/tokenize", {"model": model, "messages": messages,
                                                          "add_generation_prompt": True}, COUNT_TIMEOUT)
            return _count(answer)
        if kind == "llamacpp":
            rendered = self._post(f"{self.root}/apply-template", {"messages": messages}, COUNT_TIMEOUT)
            prompt = rendered.get("prompt") if isinstance(rendered, dict) else None
            if isinstance(prompt, str):
                answer = self._post(f"{self.root}/tokenize", {"content": prompt, "add_special": True,
                                                              "parse_special": True}, COUNT_TIMEOUT)
                return _count(answer)
        return None


def _positive(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value > 0


def _count(answer: Any) -> int | None:
    if not isinstance(answer, dict):
        return None
    if _positive(answer.get("count")) or answer.get("count") == 0:
        return answer["count"]
    tokens = answer.get("tokens")
    return len(tokens) if isinstance(tokens, list) else None


def check_server(base_url: str, key: str | None, *, timeout: float = PROBE_TIMEOUT) -> tuple[bool, list[str], str]:
    """Whether ``base_url`` answers ``GET /models`` as an OpenAI-compatible server: (ok, model ids, what to
    say, the URL's secrets redacted). A 404 from a base URL without ``/v1`` gets the hint to add it."""
    import openai

    from ...redact import redact_url, url_secrets
    from .errors import one_line, scrub

    shown, secrets = redact_url(base_url) or base_url, (key, *url_secrets(base_url))
    problem = None
    with openai.OpenAI(base_url=base_url, api_key=key or "not-needed", max_retries=0, timeout=timeout) as client:
        try:
            ids = [m.id for m in client.models.list()]
        except openai.NotFoundError:
            hint = "" if shown.rstrip("/").endswith("/v1") else f"; try base_url {shown.rstrip('/')}/v1"
            problem = f"{shown} answers 404 for /models: not an OpenAI-compatible API there{hint}"
        except openai.AuthenticationError:
            problem = f"{shown} answers, but rejects the API key (HTTP 401)"
        except openai.APIStatusError as e:
            problem = f"{shown} answers /models with HTTP {e.status_code}: {one_line(scrub(e.message, secrets), 200)}"
        except openai.APIConnectionError as e:
            cause = e.__cause__ or e.__context__
            why = f": {one_line(scrub(str(cause), secrets), 200)}" if cause else ""
            problem = f"{shown} does not answer{why}; is the server running?"
    if problem is not None:
        return False, [], problem
    listed = ", ".join(ids[:5]) + (f" and {len(ids) - 5} more" if len(ids) > 5 else "")
    return True, ids, f"OpenAI-compatible server at {shown}" + (f" serving {listed}" if ids else "")
