"""The CLI's inputs (a file, or standard input for '-'), streamed text on standard output, and progress on
standard error."""

from __future__ import annotations

import sys
import time
from pathlib import Path
from typing import Any, TextIO

from ..errors import InputError
from ..textio import check_writable, decode_text, write_atomic

__all__ = ["read_input", "decode_text", "write_atomic", "check_writable", "print_stream", "ProgressLine"]


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


class ProgressLine:
    """Progress for long work: on a terminal one bar redrawn in place (at most every ``every`` seconds, and
    always at the end); elsewhere (cron mail, logs) plain lines, one per tenth of the work."""

    BAR = 24

    def __init__(self, stream: TextIO, *, tty: bool | None = None, width: int = 118, every: float = 0.1) -> None:
        self.stream = stream
        self.tty = stream.isatty() if tty is None else tty
        self.width, self.every = width, every
        self.drawn, self.last_draw, self.tenth = False, 0.0, -1

    def draw(self, done: int, todo: int, text: str, *, prefix: str = "") -> None:
        """Redraw the bar as ``prefix [####----] text``."""
        now = time.monotonic()
        if now - self.last_draw < self.every and done < todo:
            return
        self.last_draw = now
        filled = self.BAR * done // todo if todo else self.BAR
        line = f"{prefix}[{'#' * filled}{'-' * (self.BAR - filled)}] {text}"
        self.stream.write("\r" + line[:self.width].ljust(self.width))
        self.stream.flush()
        self.drawn = True

    def new_tenth(self, done: int, todo: int) -> bool:
        """Whether ``done`` of ``todo`` reaches a tenth of the work not reported yet (the first call does)."""
        tenth = 10 * done // todo if todo else 10
        if tenth == self.tenth:
            return False
        self.tenth = tenth
        return True

    def say(self, text: str) -> None:
        """A plain line (below the bar, if one is drawn)."""
        self.end_bar()
        self.stream.write(text + "\n")
        self.stream.flush()

    def end_bar(self) -> None:
        if self.drawn:
            self.stream.write("\n")
            self.stream.flush()
            self.drawn = False

    def close(self) -> None:
        self.end_bar()
