"""Writing outputs so that none is ever half-written.

- One file per input: the text goes to a temporary file in the target folder, is fsynced, and is renamed
  over the target (then the folder is fsynced), so a reader sees the old file or the new one, never a mix.
- A JSONL file: each item is one line ``{"id", "key", "text", ...}`` appended with a single write and
  fsynced, after its journal entry is committed. A crash mid-write can leave a torn last line;
  :meth:`JsonlOutput.recover` cuts it off and appends every done item whose line is missing, so each
  item's line is in the file exactly once. A changed input appends a new line for its id (the last wins).
"""

from __future__ import annotations

import json
import logging
import os
import threading
from pathlib import Path
from typing import Any

from ..textio import TMP_PREFIX, write_atomic

__all__ = ["write_file", "remove_leftovers", "JsonlOutput"]

log = logging.getLogger("aigc.batch")



def write_file(path: Path, text: str) -> None:
    """Write ``text`` to ``path`` whole or not at all (creating its folder)."""
    write_atomic(path, text, make_dirs=True)


def remove_leftovers(folder: Path) -> int:
    """Delete temporary files a killed run left in ``folder`` (call it holding the job's lock)."""
    removed = 0
    if folder.is_dir():
        for tmp in folder.rglob(f"{TMP_PREFIX}*.tmp"):
            tmp.unlink(missing_ok=True)
            removed += 1
    return removed


class JsonlOutput:
    """An append-only JSONL output with torn-line recovery; one writer at a time (the job lock)."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.keys: set[str] = set()
        self._fd: int | None = None
        self._lock = threading.Lock()  # appends come from worker threads

    def recover(self) -> bool:
        """Read the keys already written; cut a torn last line. Returns True if one was cut."""
        self.keys.clear()
        if not self.path.exists():
            return False
        data = self.path.read_bytes()
        cut = False
        if data and not data.endswith(b"\n"):
            keep = data.rfind(b"\n") + 1
            with open(self.path, "r+b") as f:
                f.truncate(keep)
                f.flush()
                os.fsync(f.fileno())
            log.info("%s: removed a torn last line (%d bytes) left by an interrupted run",
                        self.path, len(data) - keep)
            data, cut = data[:keep], True
        for number, line in enumerate(data.splitlines(), 1):
            if not line.strip():
                continue
            try:
                key = json.loads(line).get("key")
            except (ValueError, AttributeError):
                log.warning("%s line %d is not a JSON object; left as it is", self.path, number)
                continue
            if isinstance(key, str):
                self.keys.add(key)
        return cut

    def append(self, record: dict[str, Any]) -> bool:
        """Append one line for ``record`` (which has a ``key``) unless that key is already written."""
        key = record["key"]
        data = (json.dumps(record, ensure_ascii=False) + "\n").encode("utf-8")
        with self._lock:
            if key in self.keys:
                return False
            if self._fd is None:
                self.path.parent.mkdir(parents=True, exist_ok=True)
                self._fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
            view = memoryview(data)
            while view:
                written = os.write(self._fd, view)
                view = view[written:]
            os.fsync(self._fd)
            self.keys.add(key)
            return True

    def close(self) -> None:
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None
