"""Atomic file writes: a temp file in the target's folder, fsync, then rename.

Every temporary name carries its writer's process tag (pid and start time), so a later run
can tell the leftovers of a process that died (kill -9, power loss) from the files of one
still writing, and remove only the former (`sweep_temps`, `sweep_staging`).
"""

from __future__ import annotations

import atexit
import contextlib
import functools
import os
import queue
import re
import shutil
import stat
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import BinaryIO

CHUNK = 1 << 20  # the block every reader and writer of files and bodies moves at a time
# `.<name>.cm<pid>-<start>.<random>.tmp`: what atomic_writer leaves if its process dies.
_TEMP = re.compile(r"\..+\.cm(\d+)-(\d+)\.[A-Za-z0-9_]+\.tmp")
# A per-process staging folder: `p<pid>-<start>`.
_STAGING = re.compile(r"p(\d+)-(\d+)")
# Staging entries without a process tag were made by an earlier commuter; after this long
# their process is surely gone (a transfer of many GB takes minutes, not an hour).
_UNTAGGED_AGE = 3600.0


def _start_time(pid: int) -> int | None:
    """The start time of `pid` in clock ticks since boot (Linux), 0 where unknown; None if the
    process does not exist."""
    try:
        stat_line = Path(f"/proc/{pid}/stat").read_bytes()
    except FileNotFoundError:
        if Path("/proc/self/stat").exists():
            return None
    except OSError:
        return 0
    else:
        try:
            return int(stat_line[stat_line.rindex(b")") + 2 :].split()[19])
        except (ValueError, IndexError):
            return 0
    try:  # no /proc (macOS): liveness only
        os.kill(pid, 0)
    except ProcessLookupError:
        return None
    except OSError:
        pass
    return 0


def process_tag_of(pid: int) -> str:
    """`<pid>-<start time>` of a process: unique among live processes, and a pid that is
    reused later gets another start time."""
    return f"{pid}-{_start_time(pid) or 0}"


@functools.cache
def _own_tag(pid: int) -> str:
    return process_tag_of(pid)


def process_tag() -> str:
    """This process's tag (see process_tag_of)."""
    return _own_tag(os.getpid())


def is_dead(pid: int, start: int) -> bool:
    """True if the process tagged (pid, start) no longer runs."""
    now = _start_time(pid)
    return now is None or (start != 0 and now not in (0, start))


@contextlib.contextmanager
def atomic_writer(
    path: Path, mode: int = 0o600, *, fsync: bool = True, parents: bool = True
) -> Iterator[BinaryIO]:
    """Yield a binary file that replaces `path` only if the block completes.

    Missing parent folders are created unless `parents` is False. The rename replaces whatever
    entry `path` names, a symlink or a device too: callers writing to a path a user typed check
    it first with `output_problem`.
    """
    with temp_writer(path, mode, fsync=fsync, parents=parents) as (fh, tmp):
        yield fh
    os.replace(tmp, path)


@contextlib.contextmanager
def temp_writer(
    path: Path, mode: int = 0o600, *, fsync: bool = True, parents: bool = True
) -> Iterator[tuple[BinaryIO, str]]:
    """Yield (file, temp path) beside `path`; the temp file is complete, `mode`d and fsynced
    (if asked) after the block, and removed if the block fails. The caller renames it."""
    if parents:
        path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(
        prefix=f".{path.name}.cm{process_tag()}.", suffix=".tmp", dir=path.parent
    )
    try:
        with os.fdopen(fd, "wb") as fh:
            yield fh, tmp
            fh.flush()
            if fsync:
                os.fsync(fh.fileno())
        os.chmod(tmp, mode)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise


def sweep_temps(*folders: Path) -> int:
    """Remove the temp files that atomic_writer left in `folders` when its process died;
    the number removed. Files of live processes, and every other file, stay."""
    removed = 0
    for folder in folders:
        try:
            names = os.listdir(folder)
        except OSError:
            continue
        for name in names:
            m = _TEMP.fullmatch(name)
            if m is None or not is_dead(int(m[1]), int(m[2])):
                continue
            with contextlib.suppress(FileNotFoundError):
                os.unlink(folder / name)
                removed += 1
    return removed


_swept: set[Path] = set()


def staging_for(root: Path) -> Path:
    """This process's own folder under the staging root `root` (callers create it, 0700). The
    first call for a root removes what dead processes left there: staging holds plaintext
    bundles. At exit the folder is removed if this process left it empty."""
    own = root / f"p{process_tag()}"
    if root not in _swept:
        _swept.add(root)
        sweep_staging(root)
        atexit.register(_remove_empty, own)
    return own


def _remove_empty(folder: Path) -> None:
    with contextlib.suppress(OSError):
        folder.rmdir()


def sweep_staging(root: Path) -> int:
    """Remove the per-process staging folders of processes that no longer run, and untagged
    entries an earlier version left over an hour ago; the number removed."""
    try:
        entries = list(os.scandir(root))
    except OSError:
        return 0
    removed = 0
    now = time.time()
    for entry in entries:
        m = _STAGING.fullmatch(entry.name)
        if m is not None:
            stale = is_dead(int(m[1]), int(m[2]))
        else:
            try:
                stale = now - entry.stat(follow_symlinks=False).st_mtime > _UNTAGGED_AGE
            except OSError:
                continue
        if not stale:
            continue
        path = Path(entry.path)
        if entry.is_dir(follow_symlinks=False):
            shutil.rmtree(path, ignore_errors=True)
        else:
            with contextlib.suppress(FileNotFoundError):
                path.unlink()
        removed += 1
    return removed


_datasync = getattr(os, "fdatasync", os.fsync)  # macOS has no fdatasync
# Threads of a pipeline hand the GIL over this often (Python's default is every 5 ms).
SWITCH_INTERVAL = 1e-4


@contextlib.contextmanager
def quick_handoffs() -> Iterator[None]:
    """A short GIL switch interval while a pipeline runs: a thread back from C code that
    dropped the GIL (zstd, sha256, write) waits up to the interval while another runs Python
    code (the rewriter, a scan), and with Python's 5 ms default each 1 MiB chunk waits so
    several times (one measurement, 100 MB in-process at load 9: 1.6-1.7 s against 2.3-2.6 s)."""
    old = sys.getswitchinterval()
    sys.setswitchinterval(min(old, SWITCH_INTERVAL))
    try:
        yield
    finally:
        sys.setswitchinterval(old)


class BackgroundWriter:
    """Writes chunks to `out` on a thread of its own (write() drops the GIL), so the caller
    goes on with the next chunk meanwhile. `close` waits for the last one; a failed write is
    raised by the next `write` or by `close`.

    `sync_every` (bytes, 0: never): a file that will be fsynced at the end is flushed to disk
    on the way, every so many bytes, by this thread; the final fsync then waits only for the
    rest (for 100 MB it was 0.08 s at the end, on the critical path)."""

    def __init__(self, out: BinaryIO, depth: int = 4, *, sync_every: int = 0) -> None:
        self._out = out
        self._queue: queue.Queue[bytes | None] = queue.Queue(maxsize=depth)
        self.error: BaseException | None = None
        self._sync_every = sync_every
        self._unsynced = 0
        self._thread: threading.Thread | None = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while (data := self._queue.get()) is not None:
            if self.error is None:  # after an error keep draining so write() never blocks
                try:
                    self._out.write(data)
                    self._unsynced += len(data)
                    if self._sync_every and self._unsynced >= self._sync_every:
                        self._unsynced = 0
                        self._out.flush()
                        _datasync(self._out.fileno())
                except BaseException as exc:
                    self.error = exc

    def write(self, data: bytes) -> None:
        if self.error is not None:
            raise self.error
        if self._thread is None:
            raise ValueError("write to a closed BackgroundWriter")
        if data:
            self._queue.put(data)

    def close(self) -> None:
        if self._thread is not None:
            self._queue.put(None)
            self._thread.join()
            self._thread = None
        if self.error is not None:
            raise self.error


def sha256_file(path: Path) -> str:
    """sha256 hex of a whole file, read in blocks."""
    import hashlib

    with path.open("rb") as fh:
        return hashlib.file_digest(fh, "sha256").hexdigest()


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
    for test, name in (
        (stat.S_ISFIFO, "fifo"),
        (stat.S_ISCHR, "character device"),
        (stat.S_ISBLK, "block device"),
        (stat.S_ISSOCK, "socket"),
    ):
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


def copy_prefix(path: Path, size: int, out: BinaryIO, shrank: type[Exception]) -> None:
    """Copy the first `size` bytes of `path` into `out`; `shrank(message)` if it has fewer."""
    write = out.write
    with path.open("rb") as fh:
        left = size
        while left:
            chunk = fh.read(min(CHUNK, left))
            if not chunk:
                raise shrank(f"{path} shrank while it was being updated")
            write(chunk)
            left -= len(chunk)
