"""API keys for the server, with limits and budgets, in ``<data_dir>/serve-keys.db``.

A key is shown once, when it is made (``aigc serve keys add NAME``); only its SHA-256 is stored, with the last
four characters as a hint. Each key may carry a money cap, a token cap (both over a rolling period such as
``30d``, or for its lifetime), requests and tokens per minute, a number of requests in flight, a list of models
and an expiry date.

Budgets are reserved before a request is sent and settled after it, in one SQLite transaction each: the worst
case (prompt plus the output limit, at the model's price) is held; a request that could pass the cap is refused
before anything is spent, however many arrive at once and in however many server processes. Checking after
spending, as LiteLLM does, lets concurrent requests overspend. Holds left by a crashed server expire on their
own (``HOLD_TTL_S``).
"""

from __future__ import annotations

import hashlib
import json
import math
import re
import secrets
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from ..budget import Reservation
from ..db import Database, Migrations, Store, utc_stamp
from ..errors import BudgetExceeded, InputError
from ..ledger import parse_duration

__all__ = ["KeyStore", "KeyRecord", "KeyBudget", "Spend", "KEYS_FILE", "parse_period", "parse_expiry"]

KEYS_FILE = "serve-keys.db"
HOLD_TTL_S = 3600.0
_PREFIX = "sk-aigc-"
_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.@-]{0,63}")

MIGRATIONS = Migrations()
MIGRATIONS.register(
    "m001_initial",
    """
    CREATE TABLE keys (
        id INTEGER PRIMARY KEY,
        name TEXT NOT NULL UNIQUE,
        hash TEXT NOT NULL UNIQUE,
        hint TEXT NOT NULL,
        created_at TEXT NOT NULL,
        expires_at TEXT,
        revoked_at TEXT,
        max_cost_usd REAL,
        max_total_tokens INTEGER,
        rpm INTEGER,
        tpm INTEGER,
        max_parallel INTEGER,
        models TEXT,
        budget_period_s INTEGER
    );
    CREATE TABLE spend (
        key_id INTEGER NOT NULL REFERENCES keys (id),
        time TEXT NOT NULL,
        tokens INTEGER NOT NULL,
        cost_usd REAL
    );
    CREATE INDEX spend_key_time ON spend (key_id, time);
    CREATE TABLE holds (
        id INTEGER PRIMARY KEY,
        key_id INTEGER NOT NULL REFERENCES keys (id),
        tokens INTEGER NOT NULL,
        cost_usd REAL,
        expires_at TEXT NOT NULL
    );
    """,
)


def _now() -> datetime:
    return datetime.now(UTC)


def _parse(stamp: str | None) -> datetime | None:
    return None if stamp is None else datetime.strptime(stamp, "%Y-%m-%dT%H:%M:%S.%fZ").replace(tzinfo=UTC)


_SECONDS = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800}


def parse_period(text: str) -> int:
    """``30d``, ``12h``, ``1w`` → seconds."""
    duration = parse_duration(text)
    if not duration:
        raise InputError(f"cannot read the period {text!r}: use a duration such as 30d, 12h or 1w")
    return int(duration.total_seconds())


def parse_expiry(text: str, *, now: datetime | None = None) -> datetime:
    """A date (``2027-01-31``, midnight UTC), a date-time, or a duration from now (``90d``)."""
    value = text.strip()
    if parse_duration(value) is not None:
        return (now or _now()) + timedelta(seconds=parse_period(value))
    try:
        moment = datetime.fromisoformat(value)
    except ValueError:
        raise InputError(f"cannot read the date {text!r}: use a date such as 2027-01-31 or a duration "
                         "such as 90d") from None
    return moment.replace(tzinfo=UTC) if moment.tzinfo is None else moment.astimezone(UTC)


def _digest(secret: str) -> str:
    return hashlib.sha256(secret.encode()).hexdigest()


@dataclass(frozen=True)
class KeyRecord:
    """A key's name and limits (never the key itself)."""

    id: int
    name: str
    hint: str
    created_at: datetime
    expires_at: datetime | None = None
    revoked_at: datetime | None = None
    max_cost_usd: float | None = None
    max_total_tokens: int | None = None
    rpm: int | None = None
    tpm: int | None = None
    max_parallel: int | None = None
    models: tuple[str, ...] | None = None
    budget_period_s: int | None = None

    def status(self, now: datetime | None = None) -> str:
        if self.revoked_at is not None:
            return "revoked"
        if self.expires_at is not None and (now or _now()) >= self.expires_at:
            return "expired"
        return "active"

    def period_start(self, now: datetime | None = None) -> datetime:
        """Where the current budget period began (the key's creation for a lifetime budget)."""
        if not self.budget_period_s:
            return self.created_at
        elapsed = ((now or _now()) - self.created_at).total_seconds()
        return self.created_at + timedelta(seconds=self.budget_period_s * math.floor(elapsed / self.budget_period_s))

    def allows_model(self, model: str) -> bool:
        return self.models is None or model in self.models

    def as_dict(self) -> dict[str, Any]:
        out = {k: getattr(self, k) for k in self.__dataclass_fields__}
        for k in ("created_at", "expires_at", "revoked_at"):
            out[k] = out[k].isoformat() if out[k] else None
        out["models"] = list(self.models) if self.models is not None else None
        out["status"] = self.status()
        out.pop("id")
        return out


@dataclass(frozen=True)
class Spend:
    """What a key used in its current period, and what requests in flight hold."""

    requests: int
    tokens: int
    cost_usd: float
    held_tokens: int
    held_usd: float
    since: datetime


_COLUMNS = ("id, name, hint, created_at, expires_at, revoked_at, max_cost_usd, max_total_tokens, rpm, tpm, "
            "max_parallel, models, budget_period_s")


def _record(row: Any) -> KeyRecord:
    return KeyRecord(
        id=row[0], name=row[1], hint=row[2], created_at=_parse(row[3]), expires_at=_parse(row[4]),
        revoked_at=_parse(row[5]), max_cost_usd=row[6], max_total_tokens=row[7], rpm=row[8], tpm=row[9],
        max_parallel=row[10], models=tuple(json.loads(row[11])) if row[11] else None, budget_period_s=row[12])


class KeyStore(Store):
    """The keys file. Safe to share between threads and server processes."""

    def __init__(self, path: Path | str) -> None:
        self.db = Database(path, MIGRATIONS)
        self.path = self.db.path

    @classmethod
    def in_dir(cls, data_dir: Path | str) -> KeyStore:
        return cls(Path(data_dir) / KEYS_FILE)

    # -- managing keys ------------------------------------------------------------------------------------

    def add(self, name: str, *, max_cost_usd: float | None = None, max_total_tokens: int | None = None,
            rpm: int | None = None, tpm: int | None = None, max_parallel: int | None = None,
            models: list[str] | None = None, budget_period: str | None = None,
            expires: str | datetime | None = None) -> tuple[KeyRecord, str]:
        """Make a key; returns its record and the key itself, which is not stored and cannot be shown again."""
        if not _NAME.fullmatch(name):
            raise InputError(f"invalid key name {name!r}: use letters, digits and _ . @ - (up to 64)")
        for label, value in (("max cost", max_cost_usd), ("max total tokens", max_total_tokens), ("rpm", rpm),
                             ("tpm", tpm), ("max parallel", max_parallel)):
            if value is not None and value <= 0:
                raise InputError(f"{label} must be more than zero")
        period = parse_period(budget_period) if budget_period else None
        expiry = parse_expiry(expires) if isinstance(expires, str) else expires
        secret = _PREFIX + secrets.token_urlsafe(32)
        with self.db.transaction() as conn:
            if conn.execute("SELECT 1 FROM keys WHERE name = ?", (name,)).fetchone():
                raise InputError(f"a key named {name!r} exists; revoke it or choose another name")
            conn.execute(
                "INSERT INTO keys (name, hash, hint, created_at, expires_at, max_cost_usd, max_total_tokens, rpm,"
                " tpm, max_parallel, models, budget_period_s) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                (name, _digest(secret), secret[-4:], utc_stamp(), utc_stamp(expiry) if expiry else None,
                 max_cost_usd, max_total_tokens, rpm, tpm, max_parallel,
                 json.dumps(sorted(set(models))) if models else None, period))
        return self.get(name), secret

    def get(self, name: str) -> KeyRecord:
        rows = self.db.execute(f"SELECT {_COLUMNS} FROM keys WHERE name = ?", (name,))
        if not rows:
            raise InputError(f"no key named {name!r}; `aigc serve keys list` shows them")
        return _record(rows[0])

    def list(self) -> list[KeyRecord]:
        return [_record(r) for r in self.db.execute(f"SELECT {_COLUMNS} FROM keys ORDER BY name")]

    def revoke(self, name: str) -> KeyRecord:
        self.get(name)
        self.db.execute("UPDATE keys SET revoked_at = coalesce(revoked_at, ?) WHERE name = ?", (utc_stamp(), name))
        return self.get(name)

    def verify(self, secret: str) -> KeyRecord | None:
        """The record of a presented key, whatever its status; None for an unknown key."""
        rows = self.db.execute(f"SELECT {_COLUMNS} FROM keys WHERE hash = ?", (_digest(secret),))
        return _record(rows[0]) if rows else None

    # -- budgets ------------------------------------------------------------------------------------------

    def _spend(self, conn: Any, key: KeyRecord, now: datetime) -> Spend:
        since = key.period_start(now)
        n, tokens, usd = conn.execute(
            "SELECT count(*), coalesce(sum(tokens), 0), coalesce(sum(cost_usd), 0.0) FROM spend"
            " WHERE key_id = ? AND time >= ?", (key.id, utc_stamp(since))).fetchone()
        held_tokens, held_usd = conn.execute(
            "SELECT coalesce(sum(tokens), 0), coalesce(sum(cost_usd), 0.0) FROM holds"
            " WHERE key_id = ? AND expires_at > ?", (key.id, utc_stamp(now))).fetchone()
        return Spend(n, tokens, usd, held_tokens, held_usd, since)

    def spend(self, key: KeyRecord) -> Spend:
        with self.db.lock:
            return self._spend(self.db.conn, key, _now())

    def reserve(self, key: KeyRecord, tokens: int, cost_usd: float | None) -> int:
        """Hold a request's worst case against the key's caps; returns the hold's id or raises BudgetExceeded."""
        now = _now()
        with self.db.transaction() as conn:
            spent = self._spend(conn, key, now)
            if key.max_total_tokens is not None:
                left = key.max_total_tokens - spent.tokens - spent.held_tokens
                if tokens > left:
                    raise BudgetExceeded(
                        f"key {key.name!r} may use {key.max_total_tokens:,} tokens{_period(key)}; this request "
                        f"could use {tokens:,} and {max(left, 0):,} are left. Lower max_tokens or raise the "
                        "key's --max-total-tokens", needed_tokens=tokens, needed_usd=cost_usd)
            if key.max_cost_usd is not None:
                if cost_usd is None:
                    raise BudgetExceeded(
                        f"key {key.name!r} has a ${key.max_cost_usd:g} cap, but this model's price is unknown, "
                        "so the cap could not be guaranteed; add the model's price to the models file",
                        needed_tokens=tokens)
                left_usd = key.max_cost_usd - spent.cost_usd - spent.held_usd
                if cost_usd > left_usd + 1e-9:
                    raise BudgetExceeded(
                        f"key {key.name!r} may spend ${key.max_cost_usd:g}{_period(key)}; this request could "
                        f"cost ${cost_usd:.6f} and ${max(left_usd, 0):.6f} is left. Lower max_tokens or raise "
                        "the key's --max-cost-usd", needed_tokens=tokens, needed_usd=cost_usd)
            cursor = conn.execute("INSERT INTO holds (key_id, tokens, cost_usd, expires_at) VALUES (?, ?, ?, ?)",
                                  (key.id, tokens, cost_usd, utc_stamp(now + timedelta(seconds=HOLD_TTL_S))))
            return int(cursor.lastrowid)

    def settle(self, key: KeyRecord, hold: int, tokens: int, cost_usd: float | None) -> None:
        """Replace a hold by what the request actually used."""
        with self.db.transaction() as conn:
            row = conn.execute("SELECT cost_usd FROM holds WHERE id = ?", (hold,)).fetchone()
            conn.execute("DELETE FROM holds WHERE id = ?", (hold,))
            charged = cost_usd if cost_usd is not None else (row[0] if row else None)
            conn.execute("INSERT INTO spend (key_id, time, tokens, cost_usd) VALUES (?, ?, ?, ?)",
                         (key.id, utc_stamp(), tokens, charged))

    def release(self, hold: int) -> None:
        self.db.execute("DELETE FROM holds WHERE id = ?", (hold,))


def period_text(seconds: int) -> str:
    """A budget period as it is written: ``30d``, ``12h``, ``1w``."""
    for unit in ("w", "d", "h", "m"):
        if seconds % _SECONDS[unit] == 0:
            return f"{seconds // _SECONDS[unit]}{unit}"
    return f"{seconds}s"


def _period(key: KeyRecord) -> str:
    return f" per {period_text(key.budget_period_s)}" if key.budget_period_s else ""


class KeyBudget:
    """A key's budget with the interface of :class:`aigc.Budget` (reserve, commit, release), so the engine
    reserves and settles it exactly like a client's own budget."""

    def __init__(self, store: KeyStore, key: KeyRecord) -> None:
        self.store = store
        self.key = key

    def reserve(self, tokens: int, cost_usd: float | None) -> Reservation:
        return Reservation(self.store.reserve(self.key, tokens, cost_usd), tokens, cost_usd)

    def commit(self, reservation: Reservation, usage_tokens: Any, cost_usd: float | None) -> None:
        tokens = getattr(usage_tokens, "total_tokens", usage_tokens)
        self.store.settle(self.key, reservation.id, int(tokens), cost_usd)

    def release(self, reservation: Reservation) -> None:
        self.store.release(reservation.id)
