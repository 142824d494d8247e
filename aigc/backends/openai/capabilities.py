"""What one OpenAI-compatible server does for one model, learned from its answers and remembered.

Servers differ in ways that cost a failed request to find out: a ``json_schema`` response format answered
with a 400, a 500 or plain prose; a context window that only the error text names; a tokenizer that counts
more tokens than tiktoken. Each lesson is written into the :class:`Capabilities` of that server and model,
kept for the process and in ``<cache_dir>/servers.db``, so it costs one request once, not on every call
or every run. The hosted OpenAI API is known and never recorded.

The key is the base URL without credentials or query (``http://host:8080/v1``) plus the model name.
"""

from __future__ import annotations

import json
import threading
import time
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

from ...db import Database, Migrations

__all__ = ["Capabilities", "CapabilityStore", "STRUCTURED_MODES", "server_key"]

# How structured output is asked for, strongest first: the server enforces the schema; the server
# enforces JSON (the schema is in the prompt); only the prompt asks for it.
STRUCTURED_MODES = ("json_schema", "json_object", "prompt")
# Facts older than this are not trusted: servers restart with other settings.
MAX_AGE_S = 7 * 24 * 3600

MIGRATIONS = Migrations()
MIGRATIONS.register("m001_capabilities", """
    CREATE TABLE capabilities (
        server TEXT NOT NULL,
        model TEXT NOT NULL,
        facts TEXT NOT NULL,
        updated_at REAL NOT NULL,
        PRIMARY KEY (server, model)
    )
""")


def server_key(base_url: str) -> str:
    """The base URL as a key: no user name, password, query or fragment, no trailing slash."""
    parts = urlsplit(base_url.strip())
    host = parts.hostname or ""
    if parts.port is not None:
        host = f"{host}:{parts.port}"
    return urlunsplit((parts.scheme.lower(), host.lower(), parts.path.rstrip("/"), "", ""))


@dataclass
class Capabilities:
    """What is known of one model on one server. ``version`` changes whenever a fact does."""

    structured: str = "json_schema"  # the mode structured output is asked in now (see STRUCTURED_MODES)
    enforced: str | None = None  # the strongest mode this server was seen to enforce
    # json_object requests carry the schema too (llama.cpp's extension: its grammar then enforces it);
    # False once the server refused that.
    object_schema: bool = True
    stream_options: bool = True  # the server accepts stream_options.include_usage
    logprobs: bool = True  # the server accepts logprobs (label confidences, aigc.classify)
    context_window: int | None = None  # learned from the server's metadata or its error text
    window_source: str | None = None  # where it came from: models, props, show, tokenize, error
    tokenizer: str | None = None  # the server's tokenize endpoint: vllm, llamacpp, llama-cpp-python, none
    scale: float | None = None  # the most server tokens seen per token of aigc's count (None: not measured)
    extra: int | None = None  # the most tokens the server's chat template was seen to add
    basis: str | None = None  # what scale and extra were measured against: tiktoken or tokenizer
    version: int = field(default=0, compare=False)
    probed: bool = field(default=False, compare=False)  # metadata asked for in this process

    _KEPT = ("structured", "enforced", "object_schema", "stream_options", "logprobs", "context_window",
             "window_source", "tokenizer", "scale", "extra", "basis")

    def facts(self) -> dict[str, Any]:
        return {k: v for k, v in asdict(self).items() if k in self._KEPT}

    @classmethod
    def from_facts(cls, facts: dict[str, Any]) -> Capabilities:
        known = {f.name for f in fields(cls)} & set(cls._KEPT)
        caps = cls(**{k: v for k, v in facts.items() if k in known})
        if caps.structured not in STRUCTURED_MODES:
            caps.structured = "json_schema"
        return caps


class CapabilityStore:
    """Capabilities by (server, model): shared by the backends of one process and one cache dir, and
    written to ``servers.db`` there whenever a fact changes."""

    _shared: dict[tuple[str, str, str], Capabilities] = {}
    _lock = threading.RLock()

    def __init__(self, path: Path | None) -> None:
        """``path``: the SQLite file, or None to remember for this process only."""
        self.path = path
        self._db: Database | None = None
        self._broken = False

    def get(self, server: str, model: str) -> Capabilities:
        key = (str(self.path), server, model)
        caps = self._shared.get(key)
        if caps is not None:
            return caps
        with self._lock:
            caps = self._shared.get(key)
            if caps is None:
                caps = self._shared[key] = self._load(server, model)
            return caps

    def save(self, server: str, model: str, caps: Capabilities) -> None:
        """Record that ``caps`` changed: a new version for this process, a row in the file."""
        with self._lock:
            caps.version += 1
            db = self._open()
            if db is None:
                return
            try:
                db.execute("INSERT OR REPLACE INTO capabilities (server, model, facts, updated_at) "
                           "VALUES (?, ?, ?, ?)", (server, model, json.dumps(caps.facts()), time.time()))
            except Exception:  # a read-only or full cache dir costs the memory, never the request
                self._broken = True

    def _load(self, server: str, model: str) -> Capabilities:
        db = self._open()
        if db is None:
            return Capabilities()
        try:
            rows = db.execute("SELECT facts, updated_at FROM capabilities WHERE server = ? AND model = ?",
                              (server, model))
        except Exception:
            return Capabilities()
        if not rows or time.time() - rows[0]["updated_at"] > MAX_AGE_S:
            return Capabilities()
        try:
            return Capabilities.from_facts(json.loads(rows[0]["facts"]))
        except (TypeError, ValueError):
            return Capabilities()

    def _open(self) -> Database | None:
        if self.path is None or self._broken:
            return None
        if self._db is None:
            try:
                self._db = Database(self.path, MIGRATIONS)
            except Exception:
                self._broken = True
                return None
        return self._db

    def close(self) -> None:
        if self._db is not None:
            self._db.close()
            self._db = None

    @classmethod
    def forget(cls) -> None:
        """Drop what this process remembers (the file is left as it is)."""
        with cls._lock:
            cls._shared.clear()
