"""The other processes of this machine, as the backends' busy checks look at them (Linux
/proc; where there is none, there are none)."""

from __future__ import annotations

import os
from collections.abc import Collection, Iterator
from dataclasses import dataclass
from pathlib import Path

PROC = Path("/proc")


def read_small(path: Path, limit: int = 65536) -> bytes:
    """The first `limit` bytes of `path`; b"" if it cannot be read (a process gone meanwhile)."""
    try:
        with path.open("rb") as fh:
            return fh.read(limit)
    except OSError:
        return b""


@dataclass(frozen=True, slots=True)
class Process:
    """One process, read lazily from its /proc folder `base`."""

    pid: int
    base: Path

    def cmdline(self) -> list[str]:
        raw = read_small(self.base / "cmdline")
        return [a.decode(errors="replace") for a in raw.split(b"\0") if a]

    def comm(self) -> str:
        return read_small(self.base / "comm").decode(errors="replace").strip()

    def cwd(self) -> str | None:
        try:
            return os.readlink(self.base / "cwd")
        except OSError:
            return None

    def environ(self) -> dict[bytes, bytes]:
        raw = read_small(self.base / "environ")
        return dict(item.split(b"=", 1) for item in raw.split(b"\0") if b"=" in item)

    def holds_open(self, targets: Collection[str]) -> bool:
        """True if one of its open files is one of `targets` (real paths)."""
        try:
            fds = list(os.scandir(self.base / "fd"))
        except OSError:
            return False
        for fd in fds:
            try:
                if os.readlink(fd.path) in targets:
                    return True
            except OSError:
                continue
        return False


def others(proc: Path = PROC) -> Iterator[Process]:
    """Every process but this one."""
    try:
        entries = [e for e in os.scandir(proc) if e.name.isdigit()]
    except OSError:
        return
    me = os.getpid()
    for entry in entries:
        if int(entry.name) != me:
            yield Process(int(entry.name), Path(entry.path))
