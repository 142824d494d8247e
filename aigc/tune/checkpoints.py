"""Checkpoints you can trust after ``kill -9``: a marker written last says a checkpoint is whole.

transformers' Trainer writes ``checkpoint-<step>/`` file by file (weights, optimizer, scheduler, RNG states,
trainer state). A process killed half-way leaves a folder that looks like a checkpoint but is not one, and
the Trainer's own "last checkpoint" would pick it. aigc flushes the folder's files to disk and then writes
``aigc-complete.json``; resuming takes the newest folder that has it and deletes the ones that do not.
"""

from __future__ import annotations

import json
import os
import re
import shutil
from pathlib import Path

from ..textio import write_atomic

__all__ = ["MARKER", "mark_complete", "latest_complete", "remove_incomplete", "prune"]

MARKER = "aigc-complete.json"
_NAME = re.compile(r"checkpoint-(\d+)")


def _checkpoints(root: Path) -> list[tuple[int, Path]]:
    if not root.is_dir():
        return []
    found = [(int(m.group(1)), p) for p in root.iterdir() if p.is_dir() and (m := _NAME.fullmatch(p.name))]
    return sorted(found)


def mark_complete(folder: Path, step: int) -> None:
    """Flush every file of the checkpoint to disk, then write the marker (atomically)."""
    for path in folder.rglob("*"):
        if path.is_file():
            fd = os.open(path, os.O_RDONLY)
            try:
                os.fsync(fd)
            finally:
                os.close(fd)
    write_atomic(folder / MARKER, json.dumps({"step": step}) + "\n")


def _complete(folder: Path) -> bool:
    return (folder / MARKER).is_file()


def latest_complete(root: Path) -> tuple[int, Path] | None:
    """(step, folder) of the newest whole checkpoint, or None."""
    whole = [(step, p) for step, p in _checkpoints(root) if _complete(p)]
    return whole[-1] if whole else None


def remove_incomplete(root: Path) -> list[int]:
    """Delete checkpoints a killed run left half-written; return their steps."""
    gone = []
    for step, path in _checkpoints(root):
        if not _complete(path):
            shutil.rmtree(path, ignore_errors=True)
            gone.append(step)
    return gone


def prune(root: Path, keep: int = 2) -> None:
    """Keep the ``keep`` newest whole checkpoints (and anything newer than them, still being written)."""
    whole = [(step, p) for step, p in _checkpoints(root) if _complete(p)]
    for _, path in whole[:-keep]:
        shutil.rmtree(path, ignore_errors=True)
