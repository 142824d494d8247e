"""The conversation store: ``<data_dir>/conversations.db``, SQLite with named migrations.

Its ``conversations`` and ``responses`` tables keep the columns of simonw/llm's log (``prompt``, ``system``,
``prompt_json``, ``options_json``, ``response``, ``response_json``, ``conversation_id``, ``duration_ms``,
``datetime_utc``, ``input_tokens``, ``output_tokens``), so queries written for llm's ``logs.db`` work here;
aigc adds the cost, the backend that answered, the persona, how many old turns were trimmed and the knowledge
passages a reply was given. Ids are ULIDs (sortable by time), as llm's are.
"""

from __future__ import annotations

import json
import os
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from ..db import Database, Migrations, Store
from ..errors import InputError

__all__ = ["ConversationStore", "ConversationRecord", "Turn", "new_id", "STORE_FILE"]

STORE_FILE = "conversations.db"
MIGRATIONS = Migrations()
MIGRATIONS.register(
    "m001_initial",
    """
    CREATE TABLE conversations (
        id TEXT PRIMARY KEY,
        name TEXT,
        model TEXT,
        backend TEXT,
        persona TEXT,
        system TEXT,
        knowledge_json TEXT,
        options_json TEXT,
        summary TEXT,
        summarized_turns INTEGER NOT NULL DEFAULT 0,
        datetime_utc TEXT
    );
    CREATE TABLE responses (
        id TEXT PRIMARY KEY,
        model TEXT,
        prompt TEXT,
        system TEXT,
        prompt_json TEXT,
        options_json TEXT,
        response TEXT,
        response_json TEXT,
        conversation_id TEXT REFERENCES conversations(id),
        duration_ms INTEGER,
        datetime_utc TEXT,
        input_tokens INTEGER,
        output_tokens INTEGER,
        token_details TEXT,
        cost_usd REAL,
        backend TEXT,
        persona TEXT,
        trimmed_turns INTEGER NOT NULL DEFAULT 0,
        passages_json TEXT
    );
    CREATE INDEX responses_conversation ON responses (conversation_id, datetime_utc);
    """,
)

_CROCKFORD = "0123456789abcdefghjkmnpqrstvwxyz"


def new_id() -> str:
    """A ULID in lower case: 48 bits of milliseconds, 80 random bits; sorts by creation time."""
    value = (int(time.time() * 1000) << 80) | int.from_bytes(os.urandom(10), "big")
    return "".join(_CROCKFORD[(value >> (5 * i)) & 31] for i in reversed(range(26)))


def _now() -> str:
    return datetime.now(UTC).isoformat(timespec="microseconds")


@dataclass
class ConversationRecord:
    """One conversation's settings and its running summary (``trim="summarize"``)."""

    id: str
    name: str | None = None
    model: str | None = None
    backend: str | None = None
    persona: str | None = None
    system: str | None = None  # set with --system or /system; None: the persona's own
    knowledge: list[str] = field(default_factory=list)
    options: dict[str, Any] = field(default_factory=dict)
    summary: str | None = None
    summarized_turns: int = 0
    created: str = ""


@dataclass
class Turn:
    """One exchange: the user's prompt and the reply, with what it took."""

    prompt: str
    response: str
    id: str = ""
    model: str = ""
    backend: str = ""
    persona: str | None = None
    system: str | None = None
    messages: list[dict[str, str]] = field(default_factory=list)  # what was sent, as prompt_json
    options: dict[str, Any] = field(default_factory=dict)
    details: dict[str, Any] = field(default_factory=dict)  # response_json: finish reason, warnings, failover...
    duration_ms: int = 0
    input_tokens: int = 0
    output_tokens: int = 0
    cost_usd: float | None = None
    trimmed_turns: int = 0
    passages: list[dict[str, str]] = field(default_factory=list)
    time: str = ""


class ConversationStore(Store):
    """Conversations and their turns in one SQLite file."""

    def __init__(self, path: Path | str) -> None:
        self.db = Database(path, MIGRATIONS)
        self.path = self.db.path

    @classmethod
    def in_dir(cls, data_dir: Path | str) -> ConversationStore:
        return cls(Path(data_dir) / STORE_FILE)

    def create(self, record: ConversationRecord) -> ConversationRecord:
        record.created = record.created or _now()
        self.db.execute(
            "INSERT INTO conversations (id, name, model, backend, persona, system, knowledge_json, options_json,"
            " summary, summarized_turns, datetime_utc) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
            (record.id, record.name, record.model, record.backend, record.persona, record.system,
             json.dumps(record.knowledge), json.dumps(record.options), record.summary, record.summarized_turns,
             record.created))
        return record

    def find(self, ref: str) -> ConversationRecord:
        """The conversation ``ref`` names: an id, a unique start of one, or ``last``."""
        if ref == "last":
            rows = self.db.execute("SELECT c.* FROM conversations c LEFT JOIN responses r ON r.conversation_id = c.id"
                                   " GROUP BY c.id ORDER BY max(coalesce(r.datetime_utc, c.datetime_utc)) DESC LIMIT 1")
            if not rows:
                raise InputError("there is no conversation to continue yet; start one with `aigc chat`")
        else:
            rows = self.db.execute("SELECT * FROM conversations WHERE id LIKE ? ORDER BY id", (ref.lower() + "%",))
            if len(rows) != 1:
                problem = "no conversation" if not rows else f"{len(rows)} conversations start with"
                raise InputError(f"{problem} {ref!r}; see `aigc chat list`")
        return _record(rows[0])

    def update(self, id: str, **values: Any) -> None:
        """Change a conversation's ``system``, ``summary``, ``summarized_turns``, ``model``, ``name``,
        ``backend``, ``persona``, ``knowledge`` (a list of paths) or ``options`` (a dict)."""
        allowed = {"system", "summary", "summarized_turns", "model", "name", "backend", "persona", "knowledge",
                   "options"}
        if not values or set(values) - allowed:
            raise ValueError(f"update takes {', '.join(sorted(allowed))}")
        as_json = {"knowledge": "knowledge_json", "options": "options_json"}
        columns = ", ".join(f"{as_json.get(k, k)} = ?" for k in values)
        params = [json.dumps(v) if k in as_json else v for k, v in values.items()]
        self.db.execute(f"UPDATE conversations SET {columns} WHERE id = ?", (*params, id))

    def add(self, conversation_id: str, turn: Turn) -> Turn:
        """Append a turn (its id and time are set here); the conversation takes its first prompt as name."""
        turn.id, turn.time = turn.id or new_id(), turn.time or _now()
        with self.db.transaction() as conn:
            conn.execute(
                "INSERT INTO responses (id, model, prompt, system, prompt_json, options_json, response,"
                " response_json, conversation_id, duration_ms, datetime_utc, input_tokens, output_tokens,"
                " cost_usd, backend, persona, trimmed_turns, passages_json)"
                " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                (turn.id, turn.model, turn.prompt, turn.system, json.dumps(turn.messages, ensure_ascii=False),
                 json.dumps(turn.options), turn.response, json.dumps(turn.details, ensure_ascii=False),
                 conversation_id, turn.duration_ms, turn.time, turn.input_tokens, turn.output_tokens,
                 turn.cost_usd, turn.backend, turn.persona, turn.trimmed_turns,
                 json.dumps(turn.passages, ensure_ascii=False)))
            conn.execute("UPDATE conversations SET name = coalesce(name, ?), model = ? WHERE id = ?",
                         (_title(turn.prompt), turn.model, conversation_id))
        return turn

    def turns(self, conversation_id: str) -> list[Turn]:
        rows = self.db.execute("SELECT * FROM responses WHERE conversation_id = ? ORDER BY datetime_utc, id",
                               (conversation_id,))
        return [_turn(r) for r in rows]

    def list(self, limit: int = 20) -> list[tuple[ConversationRecord, int, str]]:
        """The latest conversations: each with its number of turns and when it last changed."""
        rows = self.db.execute(
            "SELECT c.*, count(r.id) AS turns, max(coalesce(r.datetime_utc, c.datetime_utc)) AS updated"
            " FROM conversations c LEFT JOIN responses r ON r.conversation_id = c.id"
            " GROUP BY c.id ORDER BY updated DESC LIMIT ?", (limit,))
        return [(_record(r), r["turns"], r["updated"]) for r in rows]

    def delete(self, id: str) -> None:
        with self.db.transaction() as conn:
            conn.execute("DELETE FROM responses WHERE conversation_id = ?", (id,))
            conn.execute("DELETE FROM conversations WHERE id = ?", (id,))


def _title(prompt: str) -> str:
    line = " ".join(prompt.split())
    return line if len(line) <= 48 else line[:47] + "…"


def _record(row: Any) -> ConversationRecord:
    return ConversationRecord(
        id=row["id"], name=row["name"], model=row["model"], backend=row["backend"], persona=row["persona"],
        system=row["system"], knowledge=json.loads(row["knowledge_json"] or "[]"),
        options=json.loads(row["options_json"] or "{}"), summary=row["summary"],
        summarized_turns=row["summarized_turns"], created=row["datetime_utc"] or "")


def _turn(row: Any) -> Turn:
    return Turn(
        prompt=row["prompt"] or "", response=row["response"] or "", id=row["id"], model=row["model"] or "",
        backend=row["backend"] or "", persona=row["persona"], system=row["system"],
        messages=json.loads(row["prompt_json"] or "[]"), options=json.loads(row["options_json"] or "{}"),
        details=json.loads(row["response_json"] or "{}"), duration_ms=row["duration_ms"] or 0,
        input_tokens=row["input_tokens"] or 0, output_tokens=row["output_tokens"] or 0, cost_usd=row["cost_usd"],
        trimmed_turns=row["trimmed_turns"], passages=json.loads(row["passages_json"] or "[]"),
        time=row["datetime_utc"] or "")
