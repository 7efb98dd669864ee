"""Atomic file writes: a temp file in the target's folder, fsync, then rename."""

from __future__ import annotations

import contextlib
import os
import stat
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import BinaryIO


@contextlib.contextmanager
def atomic_writer(path: Path, mode: int = 0o600, *, fsync: bool = True,
                  parents: bool = True) -> Iterator[BinaryIO]:
    """Yield a binary file that replaces `path` only if the block completes.

    Missing parent folders are created unless `parents` is False. The rename replaces whatever
    entry `path` names, a symlink or a device too: callers writing to a path a user typed check
    it first with `output_problem`.
    """
    if parents:
        path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as fh:
            yield fh
            fh.flush()
            if fsync:
                os.fsync(fh.fileno())
        os.chmod(tmp, mode)
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise


def output_problem(path: Path) -> str | None:
    """Why `path` must not be replaced by a new file (None if it may be): its folder is missing
    or not a folder, or it exists and is not a regular file. A symlink counts as not a regular
    file: the rename would replace the link, not the file it points to, and in a shared folder
    such as /tmp a planted link must not steer a write."""
    parent = path.parent
    try:
        if not stat.S_ISDIR(parent.stat().st_mode):
            return f"{parent} is not a directory"
    except FileNotFoundError:
        return f"no such directory: {parent}"
    except NotADirectoryError:
        return f"{parent} is not a directory"
    try:
        st = path.lstat()
    except FileNotFoundError:
        return None
    if stat.S_ISLNK(st.st_mode):
        return f"{path} is a symlink; give the path of the file itself"
    if stat.S_ISDIR(st.st_mode):
        return f"{path} is a directory; give a file name"
    if not stat.S_ISREG(st.st_mode):
        return f"{path} is not a regular file (a {_kind(st.st_mode)}); refusing to replace it"
    return None


def _kind(mode: int) -> str:
    for test, name in ((stat.S_ISFIFO, "fifo"), (stat.S_ISCHR, "character device"),
                       (stat.S_ISBLK, "block device"), (stat.S_ISSOCK, "socket")):
        if test(mode):
            return name
    return "special file"


def atomic_write_bytes(path: Path, data: bytes, mode: int = 0o600) -> None:
    """Write `data` to `path` atomically."""
    with atomic_writer(path, mode) as fh:
        fh.write(data)


def atomic_write_text(path: Path, text: str, mode: int = 0o600) -> None:
    """Write `text` (UTF-8) to `path` atomically."""
    atomic_write_bytes(path, text.encode("utf-8"), mode)


def fsync_dir(path: Path) -> None:
    """Make the renames inside `path` durable (POSIX; a no-op where a folder cannot be opened)."""
    try:
        fd = os.open(path, os.O_RDONLY | getattr(os, "O_DIRECTORY", 0))
    except OSError:
        return
    try:
        with contextlib.suppress(OSError):
            os.fsync(fd)
    finally:
        os.close(fd)


def is_temp_name(name: str) -> bool:
    """True for names that syncing clients and our own writers use for partial files."""
    lowered = name.lower()
    return (
        name.startswith((".", "~"))
        or lowered.endswith((".tmp", ".part", ".partial", ".crdownload", ".download"))
        or ".syncthing." in lowered
        or ".sb-" in lowered
    )
