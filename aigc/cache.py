"""An optional response cache, so a rerun batch does not pay twice for the same request.

Entries live in ``<data_dir>/cache.db`` under the SHA-256 of the canonical JSON of the whole request
(backend, server, model, messages, sampling settings, schema...). The request itself is not stored, only
its hash and the completion. Credentials never reach the hash: fields such as ``api_key`` or
``headers`` are dropped, and a ``base_url`` is reduced to its scheme, host, port and path.

Canonical means: keys sorted, ``None`` values dropped (unset and None mean the same default), and a
whole-number float written as an integer, so ``{"temperature": 1}`` and ``{"temperature": 1.0}`` match.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from .db import Database, Migrations, Store, utc_stamp

__all__ = ["ResponseCache", "CacheStats", "canonical_json", "CACHE_FILE"]

CACHE_FILE = "cache.db"

# Bump when canonicalisation changes, so old entries stop matching instead of matching wrongly.
_KEY_VERSION = 1

_SECRET_FIELDS = frozenset({
    "api_key", "apikey", "api-key", "authorization", "headers", "default_headers", "extra_headers",
    "password", "secret", "access_token", "bearer",
})

MIGRATIONS = Migrations()
MIGRATIONS.register(
    "m001_initial",
    """
    CREATE TABLE responses (
        key TEXT PRIMARY KEY,
        completion TEXT NOT NULL,
        created TEXT NOT NULL,
        last_hit TEXT,
        hits INTEGER NOT NULL DEFAULT 0
    ) WITHOUT ROWID;
    CREATE INDEX responses_created ON responses (created);
    """,
)


def _server(url: str) -> str:
    parts = urlsplit(url)
    host = (parts.hostname or "") + (f":{parts.port}" if parts.port else "")
    return f"{parts.scheme.lower()}://{host}{parts.path.rstrip('/')}"


def _canonical(value: Any) -> Any:
    if isinstance(value, dict):
        out = {}
        for name, item in value.items():
            if not isinstance(name, str):
                raise TypeError(f"request keys must be strings, not {name!r}")
            if item is None or name.lower() in _SECRET_FIELDS:
                continue
            out[name] = _server(item) if name == "base_url" and isinstance(item, str) else _canonical(item)
        return out
    if isinstance(value, list | tuple):
        return [_canonical(item) for item in value]
    if hasattr(value, "model_dump"):  # pydantic models such as aigc.types.Message
        return _canonical(value.model_dump(mode="json"))
    if isinstance(value, float) and value.is_integer():
        return int(value)
    if value is None or isinstance(value, str | int | float | bool):
        return value
    raise TypeError(f"cannot put a {type(value).__name__} in a cache key; use JSON types")


def canonical_json(request: dict[str, Any]) -> str:
    """The exact text that is hashed for ``request``."""
    return json.dumps(
        {"v": _KEY_VERSION, "request": _canonical(request)},
        sort_keys=True, separators=(",", ":"), ensure_ascii=False, allow_nan=False,
    )


@dataclass(frozen=True, slots=True)
class CacheStats:
    entries: int
    hits: int
    size_bytes: int


class ResponseCache(Store):
    """Completions keyed by request; safe to share between threads and processes."""

    def __init__(self, path: Path | str) -> None:
        self.db = Database(path, MIGRATIONS, advice="delete it: it only keeps answers for reuse, and aigc "
                            "starts a new one")
        self.path = self.db.path

    @classmethod
    def in_dir(cls, data_dir: Path | str) -> ResponseCache:
        """The cache at ``<data_dir>/cache.db``."""
        return cls(Path(data_dir) / CACHE_FILE)

    @staticmethod
    def key(request: dict[str, Any]) -> str:
        """SHA-256 (hex) of the canonical request."""
        return hashlib.sha256(canonical_json(request).encode("utf-8")).hexdigest()

    def get(self, request: dict[str, Any]) -> dict[str, Any] | None:
        """The cached completion for ``request``, or None. A hit is counted."""
        rows = self.db.execute(
            "UPDATE responses SET hits = hits + 1, last_hit = ? WHERE key = ? RETURNING completion",
            (utc_stamp(), self.key(request)),
        )
        return json.loads(rows[0][0]) if rows else None

    def put(self, request: dict[str, Any], completion: dict[str, Any]) -> None:
        """Store (or replace) the completion for ``request`` in one atomic write."""
        text = json.dumps(completion, ensure_ascii=False, allow_nan=False)
        self.db.execute(
            "INSERT INTO responses (key, completion, created) VALUES (?, ?, ?)"
            " ON CONFLICT (key) DO UPDATE SET completion = excluded.completion, created = excluded.created",
            (self.key(request), text, utc_stamp()),
        )

    def clear(self, older_than: timedelta | None = None) -> int:
        """Remove every entry, or those stored more than ``older_than`` ago; return how many went."""
        if older_than is None:
            rows = self.db.execute("DELETE FROM responses RETURNING 1")
        else:
            cutoff = utc_stamp(datetime.now(UTC) - older_than)
            rows = self.db.execute("DELETE FROM responses WHERE created < ? RETURNING 1", (cutoff,))
        return len(rows)

    def stats(self) -> CacheStats:
        (entries, hits), = self.db.execute("SELECT count(*), coalesce(sum(hits), 0) FROM responses")
        size = sum(p.stat().st_size for p in (self.path, Path(f"{self.path}-wal")) if p.exists())
        return CacheStats(entries=entries, hits=hits, size_bytes=size)

    def __repr__(self) -> str:
        return f"ResponseCache({str(self.path)!r})"
