"""Text in and out, safely: strict decoding of inputs, and files written whole or not at all.

A write goes to a temporary file beside its target, named ``.aigc-<owner>-<name>.<random>.tmp``: the owner
says whose it is (a batch job's id), so a clean-up after a crash removes only its own leftovers and never
another process's write in progress. Files are created as a plain ``open()`` would create them: the
process's umask applies, and a file that is replaced keeps its permissions.
"""

from __future__ import annotations

import contextlib
import os
import stat
from pathlib import Path

from .errors import InputError, OutputError

__all__ = ["decode_text", "write_atomic", "check_writable", "check_folder", "temp_pattern", "TMP_PREFIX"]

TMP_PREFIX = ".aigc-"


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


def temp_pattern(owner: str) -> str:
    """The glob matching the temporary files of ``owner`` (and no one else's)."""
    return f"{TMP_PREFIX}{owner}-*.tmp"


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


def _create_temp(folder: Path, name: str, owner: str) -> tuple[int, Path]:
    """A new temporary file in ``folder``, created with mode 0666 so the kernel applies the umask exactly
    as it does for ``open(path, "w")``."""
    while True:
        tmp = folder / f"{TMP_PREFIX}{owner}-{name[:80]}.{os.urandom(4).hex()}.tmp"
        try:
            return os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666), tmp
        except FileExistsError:
            continue


def _folder(path: Path, make_dirs: bool) -> Path:
    folder = path.parent
    if make_dirs:
        try:
            folder.mkdir(parents=True, exist_ok=True)
        except OSError as e:
            raise OutputError(f"cannot write {path}: cannot create folder {folder} ({e.strerror})",
                              path=str(path)) from None
    elif not folder.is_dir():
        raise OutputError(f"cannot write {path}: folder {folder} does not exist", path=str(path))
    return folder


def write_atomic(path: str | Path, text: str | bytes, *, make_dirs: bool = False, owner: str = "w") -> None:
    """Write ``text`` to ``path`` whole or not at all: a temporary file in the same folder, fsynced, renamed
    over the target, then the folder fsynced. A reader sees the old file or the new one, never a mix.

    OSError is left to the caller (a full disk, a folder in the way), except a missing folder (OutputError).
    """
    path = Path(path)
    folder = _folder(path, make_dirs)
    fd, tmp = _create_temp(folder, path.name, owner)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(text.encode("utf-8") if isinstance(text, str) else text)
            f.flush()
            with contextlib.suppress(FileNotFoundError):  # a replaced file keeps its permissions
                os.fchmod(f.fileno(), stat.S_IMODE(path.stat().st_mode))
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    _fsync_dir(folder)


def check_folder(folder: str | Path, *, make_dirs: bool = False, owner: str = "w") -> None:
    """OutputError unless files can be written in ``folder`` now (it exists, or is made, and takes a new
    file: a probe is created and removed)."""
    folder = Path(folder)
    _folder(folder / "probe", make_dirs)
    try:
        fd, tmp = _create_temp(folder, "probe", owner)
    except OSError as e:
        raise OutputError(f"cannot write in {folder}: {e.strerror}", path=str(folder)) from None
    os.close(fd)
    tmp.unlink(missing_ok=True)


def check_writable(path: str | Path, *, make_dirs: bool = False, owner: str = "w") -> None:
    """OutputError unless a file could be written at ``path`` now (its folder exists or can be made, and
    takes a new file; ``path`` is not a folder nor a read-only file). Called before paying for what will be
    written there."""
    path = Path(path)
    if path.is_dir():
        raise OutputError(f"cannot write {path}: it is a folder", path=str(path))
    try:
        check_folder(path.parent, make_dirs=make_dirs, owner=owner)
    except OutputError as e:
        raise OutputError(f"cannot write {path}: {e.message.removeprefix('cannot write ')}", path=str(path)) from None
    if path.exists() and not os.access(path, os.W_OK):
        raise OutputError(f"cannot write {path}: the file is read-only", path=str(path))
