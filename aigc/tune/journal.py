"""The journal of fine-tuning runs (hosted jobs and local results) in ``tune.db``.

A run's ``key`` says what was asked (data, model, settings): running the same command again finds the
unfinished run with that key and continues it instead of paying twice.
"""

from __future__ import annotations

import json
import uuid
from pathlib import Path
from typing import Any

from ..db import Database, Store, utc_stamp
from ..errors import InputError
from .store import open_store
from .types import TERMINAL, HostedJob

__all__ = ["Journal", "TERMINAL"]

_FIELDS = set(HostedJob.model_fields) - {"reattached", "checkpoints", "provider"}


class Journal(Store):
    """Runs by id; every method is one atomic read or write."""

    def __init__(self, data_dir: Path | str) -> None:
        self.db: Database = open_store(data_dir)

    @staticmethod
    def _job(row: Any) -> HostedJob:
        d = dict(row)
        fields = {k: d[k] for k in _FIELDS if k in d}
        return HostedJob(**fields, provider=d["provider"], checkpoints=json.loads(d["checkpoints"] or "[]"))

    def begin(self, *, key: str, provider: str, where: str | None, model: str, suffix: str | None, data_path: str,
              data_sha256: str, epochs: int | None, estimated_tokens: int | None,
              estimated_cost_usd: float | None, state: str) -> HostedJob:
        run_id = str(uuid.uuid4())
        stamp = utc_stamp(seconds=True)
        self.db.execute(
            "INSERT INTO runs (run_id, key, provider, where_, model, suffix, data_path, data_sha256, epochs, "
            "estimated_tokens, estimated_cost_usd, state, created, updated) "
            "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
            (run_id, key, provider, where, model, suffix, data_path, data_sha256, epochs, estimated_tokens,
             estimated_cost_usd, state, stamp, stamp))
        return self.get(run_id)

    def update(self, run_id: str, **values: Any) -> HostedJob:
        if "checkpoints" in values:
            values["checkpoints"] = json.dumps(values["checkpoints"])
        if values.get("state") in TERMINAL:
            values.setdefault("finished", utc_stamp(seconds=True))
        values["updated"] = utc_stamp(seconds=True)
        columns = ", ".join(f"{k} = ?" for k in values)
        self.db.execute(f"UPDATE runs SET {columns} WHERE run_id = ?", (*values.values(), run_id))
        return self.get(run_id)

    def get(self, run_id: str) -> HostedJob:
        rows = self.db.execute("SELECT * FROM runs WHERE run_id = ?", (run_id,))
        if not rows:
            raise InputError(f"no fine-tuning run {run_id!r} in the journal; see `aigc tune list`")
        return self._job(rows[0])

    def find(self, ref: str) -> HostedJob:
        """A run by its run id, its job id (``ftjob-...``), its fine-tuned model or its output folder."""
        rows = self.db.execute(
            "SELECT * FROM runs WHERE run_id = ? OR job_id = ? OR fine_tuned_model = ? "
            "ORDER BY created DESC LIMIT 1", (ref, ref, ref))
        if not rows:
            resolved = str(Path(ref).expanduser().resolve())
            rows = self.db.execute("SELECT * FROM runs WHERE fine_tuned_model = ? ORDER BY created DESC LIMIT 1",
                                   (resolved,))
        if not rows:
            raise InputError(f"no fine-tuning run {ref!r} in the journal; see `aigc tune list`")
        return self._job(rows[0])

    def latest(self, key: str) -> HostedJob | None:
        """The newest run with this key (what the same command started before), if any."""
        rows = self.db.execute("SELECT * FROM runs WHERE key = ? ORDER BY created DESC, rowid DESC LIMIT 1",
                               (key,))
        return self._job(rows[0]) if rows else None

    def billed(self, run_id: str) -> bool:
        rows = self.db.execute("SELECT billed FROM runs WHERE run_id = ?", (run_id,))
        return bool(rows and rows[0][0])

    def all(self, limit: int = 50) -> list[HostedJob]:
        rows = self.db.execute("SELECT * FROM runs ORDER BY created DESC, rowid DESC LIMIT ?", (limit,))
        return [self._job(r) for r in rows]
