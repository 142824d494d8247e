"""Writing outputs so that none is ever half-written, and cleaning up after a crash only what is ours.

- One file per input: the text goes to a temporary file in the target folder, is fsynced, and is renamed
  over the target (then the folder is fsynced), so a reader sees the old file or the new one, never a mix.
  Temporary files carry the job's id in their name; :func:`remove_leftovers` (called with the job's lock
  held) deletes only those, never another process's write in progress.
- A JSONL file: each item is one line ``{"id", "key", "text", ...}`` appended with a single write and
  fsynced, after its journal entry is committed. A crash mid-write can leave a torn last line;
  :meth:`JsonlOutput.recover` cuts it off, and the run appends every done item whose line is missing, so
  each key's line is in the file exactly once. A changed input appends a new line for its id; when an
  earlier key of that id becomes current again (a change reverted), its line is moved to the end, so the
  last line of an id is always its current output. Lines of superseded keys stay above, as history.
"""

from __future__ import annotations

import json
import logging
import os
import threading
from pathlib import Path
from typing import Any

from ..textio import temp_pattern, write_atomic

__all__ = ["write_file", "remove_leftovers", "JsonlOutput"]

log = logging.getLogger("aigc.batch")


def write_file(path: Path, text: str | bytes, *, owner: str = "w") -> None:
    """Write ``text`` to ``path`` whole or not at all (creating its folder)."""
    write_atomic(path, text, make_dirs=True, owner=owner)


def remove_leftovers(folder: Path, owner: str) -> int:
    """Delete the temporary files ``owner`` (a job) left in ``folder`` when a run was killed. Call it holding
    the job's lock, so none of them belongs to a write in progress."""
    removed = 0
    if folder.is_dir():
        for tmp in folder.rglob(temp_pattern(owner)):
            tmp.unlink(missing_ok=True)
            removed += 1
    return removed


class JsonlOutput:
    """An append-only JSONL output with torn-line recovery; one writer at a time (the job lock)."""

    def __init__(self, path: Path, *, owner: str = "w") -> None:
        self.path = path
        self.owner = owner
        self.keys: set[str] = set()
        self.spans: dict[str, tuple[int, int]] = {}  # key -> its line's byte span in the file
        self.last_key: dict[str, str] = {}  # id -> the key of its last line
        self._fd: int | None = None
        self._size = 0
        self._lock = threading.Lock()  # appends come from worker threads

    def recover(self, *, repair: bool = True) -> bool:
        """Read the keys already written; cut a torn last line (unless ``repair`` is False: a read-only look).
        Returns True if there was a torn line."""
        self.keys.clear()
        self.spans.clear()
        self.last_key.clear()
        if not self.path.exists():
            self._size = 0
            return False
        data = self.path.read_bytes()
        cut = False
        if data and not data.endswith(b"\n"):
            keep = data.rfind(b"\n") + 1
            if repair:
                with open(self.path, "r+b") as f:
                    f.truncate(keep)
                    f.flush()
                    os.fsync(f.fileno())
                log.info("%s: removed a torn last line (%d bytes) left by an interrupted run",
                         self.path, len(data) - keep)
            data, cut = data[:keep], True
        start = 0
        for number, line in enumerate(data.split(b"\n")[:-1], 1):
            end = start + len(line) + 1
            span, start = (start, end), end
            if not line.strip():
                continue
            try:
                record = json.loads(line)
                key, item_id = record.get("key"), record.get("id")
            except (ValueError, AttributeError):
                log.warning("%s line %d is not a JSON object; left as it is", self.path, number)
                continue
            if isinstance(key, str):
                self.keys.add(key)
                self.spans[key] = span
                if item_id is not None:
                    self.last_key[str(item_id)] = key
        self._size = len(data)
        return cut

    def line(self, key: str) -> dict[str, Any]:
        """The record written for ``key`` (which :attr:`keys` holds)."""
        start, end = self.spans[key]
        with open(self.path, "rb") as f:
            f.seek(start)
            return json.loads(f.read(end - start))

    def move_to_end(self, keys: list[str]) -> None:
        """Rewrite the file (atomically) with the lines of ``keys`` moved to its end, in that order."""
        if not keys:
            return
        data = self.path.read_bytes()
        moved = {k: self.spans[k] for k in keys}
        cuts = sorted(moved.values())
        kept, at = [], 0
        for start, end in cuts:
            kept.append(data[at:start])
            at = end
        kept.append(data[at:])
        tail = [data[start:end] for start, end in moved.values()]
        self.close()
        write_atomic(self.path, b"".join(kept + tail), owner=self.owner)
        self.recover(repair=False)

    def append(self, record: dict[str, Any]) -> bool:
        """Append one line for ``record`` (which has a ``key``) unless that key is already written."""
        key = record["key"]
        data = (json.dumps(record, ensure_ascii=False) + "\n").encode("utf-8")
        with self._lock:
            if key in self.keys:
                return False
            if self._fd is None:
                self.path.parent.mkdir(parents=True, exist_ok=True)
                self._fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o666)
            view = memoryview(data)
            try:
                while view:
                    written = os.write(self._fd, view)
                    view = view[written:]
                os.fsync(self._fd)
            except OSError:  # a full disk: leave no torn line for the next append to glue onto
                os.ftruncate(self._fd, self._size)
                raise
            self.keys.add(key)
            self.spans[key] = (self._size, self._size + len(data))
            self._size += len(data)
            if record.get("id") is not None:
                self.last_key[str(record["id"])] = key
            return True

    def close(self) -> None:
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None
