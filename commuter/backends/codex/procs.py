"""Is a running codex holding a thread? (Linux /proc: a codex process with the rollout or the
thread's writer lock open.)"""

from __future__ import annotations

import os
from pathlib import Path


def _read(path: Path) -> bytes:
    try:
        with path.open("rb") as fh:
            return fh.read(65536)
    except OSError:
        return b""


def _is_codex(base: Path) -> bool:
    comm = _read(base / "comm").decode(errors="replace").strip()
    if comm.startswith("codex"):
        return True
    args = [a.decode(errors="replace") for a in _read(base / "cmdline").split(b"\0") if a]
    return any(os.path.basename(a).startswith("codex") for a in args[:2])


def busy_pids(paths: list[Path], proc: Path = Path("/proc")) -> list[int]:
    """Pids of codex processes holding any of `paths` open."""
    targets = {os.path.realpath(p) for p in paths if os.path.lexists(p)}
    found: list[int] = []
    if not targets:
        return found
    try:
        entries = [e for e in os.scandir(proc) if e.name.isdigit()]
    except OSError:
        return found
    me = os.getpid()
    for entry in entries:
        pid = int(entry.name)
        base = Path(entry.path)
        if pid == me or not _is_codex(base):
            continue
        try:
            fds = list(os.scandir(base / "fd"))
        except OSError:
            continue
        for fd in fds:
            try:
                if os.readlink(fd.path) in targets:
                    found.append(pid)
                    break
            except OSError:
                continue
    return found
