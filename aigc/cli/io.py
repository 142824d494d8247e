"""Reading the CLI's inputs: a file, or standard input for '-'."""

from __future__ import annotations

import sys
from pathlib import Path

from ..errors import InputError
from ..textio import check_writable, decode_text, write_atomic

__all__ = ["read_input", "decode_text", "write_atomic", "check_writable"]


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
