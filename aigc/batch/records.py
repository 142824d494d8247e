"""What a job wrote where, so that "done" means "the output on disk was written for this item's key".

Each file output is recorded in ``<state_dir>/written.jsonl``, one line ``{"output", "key", "sha256"}`` per
write, appended and fsynced *before* the file is renamed into place. So after any crash, a file whose
content and key match its latest record is exactly the output of that key, and anything else is not:

- a revert (an input, a record or ``[vars]`` changed and changed back) finds the output written for the
  other version and does the item again (free from the response cache);
- an output edited or replaced by hand no longer matches its hash and is done again;
- a journal that was emptied or lost is no loss: outputs whose record matches are adopted as done,
  without a request;
- a file at an output path that this job never wrote is not overwritten: the run refuses to start.

JSONL outputs need no separate record: each line carries its ``key``.
"""

from __future__ import annotations

import hashlib
import json
import os
import threading
from dataclasses import dataclass
from pathlib import Path

from ..errors import ConfigError
from ..textio import write_atomic

__all__ = ["OutputRecords", "Written", "digest", "CURRENT", "STALE", "MISSING", "FOREIGN"]

# What an item's output on disk is, for the item's current key.
CURRENT = "current"  # written for this key, unchanged since
STALE = "stale"  # written by this job, but for another key (or changed since)
MISSING = "missing"  # not there
FOREIGN = "foreign"  # there, but this job never wrote it


def digest(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


@dataclass(frozen=True)
class Written:
    key: str
    sha256: str


class OutputRecords:
    """The record of a job's file outputs (``written.jsonl`` in its state folder); one writer at a time."""

    def __init__(self, path: Path, base: Path, *, owner: str = "w") -> None:
        self.path = path
        self.base = base  # outputs are recorded relative to the job's folder, so a job can move
        self.owner = owner
        self.latest: dict[str, Written] = {}
        self._lines = 0
        self._fd: int | None = None
        self._lock = threading.Lock()

    def _name(self, output: Path) -> str:
        return os.path.relpath(output, self.base)

    def load(self, *, repair: bool = True) -> None:
        """Read the records. A torn last line (a crash mid-append) is cut when ``repair``; damage anywhere
        else is a ConfigError naming the file and what to do."""
        self.latest.clear()
        self._lines = 0
        if not self.path.exists():
            return
        data = self.path.read_bytes()
        if data and not data.endswith(b"\n"):
            keep = data.rfind(b"\n") + 1
            if repair:
                with open(self.path, "r+b") as f:
                    f.truncate(keep)
                    os.fsync(f.fileno())
            data = data[:keep]
        for number, line in enumerate(data.splitlines(), 1):
            try:
                entry = json.loads(line)
                self.latest[entry["output"]] = Written(key=str(entry["key"]), sha256=str(entry["sha256"]))
            except (ValueError, KeyError, TypeError):
                raise ConfigError(
                    f"{self.path} is damaged (line {number}); move it aside and run again: outputs the "
                    "journal marks done are kept, the others are done again (free from the response cache)"
                ) from None
            self._lines += 1

    def get(self, output: Path) -> Written | None:
        return self.latest.get(self._name(output))

    def state(self, output: Path, key: str) -> str | None:
        """CURRENT, STALE or MISSING for ``output`` and ``key``; None when the file exists but has no record."""
        written = self.get(output)
        if written is None or written.key != key:
            if not output.exists():
                return MISSING
            return None if written is None else STALE
        try:
            data = output.read_bytes()
        except FileNotFoundError:
            return MISSING
        except OSError:
            return STALE  # unreadable: write it again
        return CURRENT if written.sha256 == digest(data) else STALE

    def add(self, output: Path, key: str, sha256: str) -> None:
        """Record that ``output`` is about to hold the text of ``key`` with this hash (fsynced)."""
        name = self._name(output)
        line = (json.dumps({"output": name, "key": key, "sha256": sha256}) + "\n").encode("utf-8")
        with self._lock:
            if self._fd is None:
                self.path.parent.mkdir(parents=True, exist_ok=True)
                self._fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o666)
            size = os.fstat(self._fd).st_size
            try:
                os.write(self._fd, line)
                os.fsync(self._fd)
            except OSError:
                os.ftruncate(self._fd, size)
                raise
            self.latest[name] = Written(key=key, sha256=sha256)
            self._lines += 1

    def compact(self) -> None:
        """Rewrite the file with one line per output once superseded lines outnumber the live ones."""
        if self._lines <= 2 * len(self.latest) + 1000:
            return
        self.close()
        text = "".join(json.dumps({"output": name, "key": w.key, "sha256": w.sha256}) + "\n"
                       for name, w in sorted(self.latest.items()))
        write_atomic(self.path, text, owner=self.owner)
        self._lines = len(self.latest)

    def close(self) -> None:
        with self._lock:
            if self._fd is not None:
                os.close(self._fd)
                self._fd = None
