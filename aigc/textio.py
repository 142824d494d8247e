"""Text in and out, safely: strict decoding of inputs, and files written whole or not at all."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

from .errors import InputError

TMP_PREFIX = ".aigc-"  # temporary files of an unfinished write: safe to delete when no writer runs


def decode_text(data: bytes, name: str) -> str:
    """UTF-8 text, or an InputError saying why not (binary, not UTF-8, empty); nothing is guessed."""
    if b"\x00" in data[:8192]:
        raise InputError(f"{name} looks like a binary file, not text")
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError as e:
        raise InputError(f"{name} is not UTF-8 text (byte {e.start}); convert it, e.g. iconv -t utf-8") from None
    if not text.strip():
        raise InputError(f"{name} is empty")
    return text


def _fsync_dir(folder: Path) -> None:
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:  # some platforms cannot open folders; the rename is still atomic
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def write_atomic(path: str | Path, text: str, *, make_dirs: bool = False) -> None:
    """Write ``text`` to ``path`` whole or not at all: a temporary file in the same folder, fsynced, renamed
    over the target, then the folder fsynced. A reader sees the old file or the new one, never a mix."""
    path = Path(path)
    folder = path.parent
    if make_dirs:
        folder.mkdir(parents=True, exist_ok=True)
    elif not folder.is_dir():
        raise InputError(f"cannot write {path}: folder {folder} does not exist")
    fd, tmp = tempfile.mkstemp(dir=folder, prefix=f"{TMP_PREFIX}{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w", encoding="utf-8", newline="") as f:
            f.write(text)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    _fsync_dir(folder)
