"""A file this process is still writing, read meanwhile by another thread.

The LAN receiver writes an upload's opened (authenticated) bytes to a file as frames arrive,
and imports from that file at the same time: readers opened with `open_read` wait at the end
of what is written until more comes, then see the end of the file only once the writer has
finished (every frame authenticated, the seal's end seen), or raise the writer's error. So an
import that reads a growing file can never finish on a truncated or forged upload.
"""

from __future__ import annotations

import os
import threading
from pathlib import Path
from types import TracebackType
from typing import BinaryIO, ClassVar

from commuter.errors import BundleError

# A reader gives up if the writer neither writes, finishes nor fails for this long (the
# writer always does one of them; this only bounds a bug).
STALL = 600.0


class Growing:
    """The writing end. `write` appends (readers see it at once), `finish` ends the file for
    its readers, `fail` makes them raise; one of the two must come (use it as a context
    manager: leaving the block without `finish` fails it). While growing, `open_read(path)`
    returns a reader that follows it; afterwards an ordinary file."""

    _open: ClassVar[dict[str, Growing]] = {}
    _lock: ClassVar[threading.Lock] = threading.Lock()

    def __init__(self, path: Path) -> None:
        self.path = path
        self._fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o600)
        self._cond = threading.Condition()
        self.size = 0
        self._ended = False
        self._error: BaseException | None = None
        with Growing._lock:
            Growing._open[str(path)] = self

    def write(self, data: bytes) -> None:
        view = memoryview(data)
        while view:
            n = os.write(self._fd, view)
            view = view[n:]
        with self._cond:
            self.size += len(data)
            self._cond.notify_all()

    def finish(self) -> None:
        self._end(None)

    def fail(self, exc: BaseException) -> None:
        self._end(exc)

    def _end(self, exc: BaseException | None) -> None:
        with Growing._lock:
            Growing._open.pop(str(self.path), None)
        with self._cond:
            if self._ended:
                return
            self._ended = True
            self._error = exc
            self._cond.notify_all()
        os.close(self._fd)

    def wait_for(self, pos: int) -> bool:
        """Block until more than `pos` bytes are written (True) or the file ended (False);
        raises the writer's error."""
        with self._cond:
            while self.size <= pos and not self._ended:
                if not self._cond.wait(STALL):
                    raise BundleError(f"the upload stalled: nothing came for {STALL:g} s")
            if self._error is not None and self.size <= pos:
                raise BundleError(f"the upload failed: {self._error}")
            return self.size > pos

    def __enter__(self) -> Growing:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.fail(exc or BundleError("the upload ended before its seal did"))


class _Follower:
    """A read-only, unseekable view of a growing file: reads wait for what is yet to come."""

    def __init__(self, path: Path, growing: Growing) -> None:
        self._fh = path.open("rb", buffering=0)
        self._growing = growing
        self._pos = 0

    def read(self, n: int = -1) -> bytes:
        if n is None or n < 0:
            parts = []
            while chunk := self.read(1 << 20):
                parts.append(chunk)
            return b"".join(parts)
        while True:
            data = self._fh.read(n)
            if data:
                self._pos += len(data)
                return data
            if n == 0 or not self._growing.wait_for(self._pos):
                return b""

    def readline(self, limit: int = -1) -> bytes:
        line = bytearray()
        while limit < 0 or len(line) < limit:
            byte = self.read(1)
            if not byte:
                break
            line += byte
            if byte == b"\n":
                break
        return bytes(line)

    def seekable(self) -> bool:
        return False

    def readable(self) -> bool:
        return True

    def close(self) -> None:
        self._fh.close()

    def __enter__(self) -> _Follower:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()


def open_read(path: Path) -> BinaryIO:
    """`path` opened for reading: a follower while this process is still writing it."""
    with Growing._lock:
        growing = Growing._open.get(str(path))
    if growing is None:
        return path.open("rb")
    return _Follower(path, growing)  # type: ignore[return-value]
