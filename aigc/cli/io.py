"""Reading inputs and writing outputs for the CLI: strict text decoding, atomic files."""

from __future__ import annotations

import os
import sys
import tempfile
from pathlib import Path

from ..errors import InputError


def decode_text(data: bytes, name: str) -> str:
    """UTF-8 text or a clear InputError: binary and undecodable inputs are refused, not guessed at."""
    if b"\x00" in data[:8192]:
        raise InputError(f"{name} looks like a binary file, not text")
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError as e:
        raise InputError(f"{name} is not UTF-8 text (byte {e.start}); convert it, e.g. iconv -t utf-8") from None
    if not text.strip():
        raise InputError(f"{name} is empty")
    return text


def read_input(source: str | None) -> str:
    """Text from a file path, or from stdin for '-' (or no path with stdin piped)."""
    if source in (None, "-"):
        if source is None and sys.stdin.isatty():
            raise InputError("no input: give a FILE, or '-' / a pipe for standard input")
        return decode_text(sys.stdin.buffer.read(), "standard input")
    path = Path(source)
    if not path.exists():
        raise InputError(f"{source}: no such file")
    if path.is_dir():
        raise InputError(f"{source} is a directory; give a file")
    try:
        return decode_text(path.read_bytes(), source)
    except PermissionError:
        raise InputError(f"{source}: permission denied") from None


def write_atomic(path: str | Path, text: str) -> None:
    """Write the whole file or nothing: a temporary file in the same folder, fsynced, then renamed."""
    path = Path(path)
    folder = path.parent if str(path.parent) else Path(".")
    if not folder.is_dir():
        raise InputError(f"cannot write {path}: folder {folder} does not exist")
    fd, tmp = tempfile.mkstemp(dir=folder, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w", encoding="utf-8", newline="") as f:
            f.write(text)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
