"""Is a gemini running in the project whose chat an import would replace? (Linux /proc.)

gemini appends to a chat file record by record; a chat replaced under a running gemini would
lose what it appends next. It does not keep the file open, so a gemini process (`gemini` as
argv[0]/argv[1], the npm bin under node) whose working directory is the project counts."""

from __future__ import annotations

import os
from pathlib import Path


def _read(path: Path, limit: int = 65536) -> bytes:
    try:
        with path.open("rb") as fh:
            return fh.read(limit)
    except OSError:
        return b""


def is_gemini(cmdline: list[str]) -> bool:
    return any(os.path.basename(arg) in ("gemini", "gemini.js") for arg in cmdline[:2])


def busy_pids(project: str, proc: Path = Path("/proc")) -> list[int]:
    """Pids of gemini processes running in `project` (a realpath)."""
    found: list[int] = []
    try:
        entries = [e for e in os.scandir(proc) if e.name.isdigit()]
    except OSError:
        return found
    me = os.getpid()
    for entry in entries:
        pid = int(entry.name)
        if pid == me:
            continue
        base = Path(entry.path)
        cmdline = [a.decode(errors="replace") for a in _read(base / "cmdline").split(b"\0") if a]
        if not is_gemini(cmdline):
            continue
        try:
            cwd = os.readlink(base / "cwd")
        except OSError:
            continue
        if cwd == project:
            found.append(pid)
    return found
