"""The CLI's inputs (a file, or standard input for '-') and streamed text on standard output."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

from ..errors import InputError
from ..textio import check_writable, decode_text, write_atomic

__all__ = ["read_input", "decode_text", "write_atomic", "check_writable", "print_stream"]


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


def print_stream(stream: Any) -> Any:
    """Print a text stream's pieces as they come, then a newline; its Result."""
    for piece in stream:
        sys.stdout.write(piece)
        sys.stdout.flush()
    sys.stdout.write("\n")
    return stream.result
