"""Is a running codex holding a thread? (Linux /proc: a codex process with the rollout or the
thread's writer lock open.)"""

from __future__ import annotations

import os
from pathlib import Path

from commuter.procscan import PROC, Process, others


def _is_codex(p: Process) -> bool:
    if p.comm().startswith("codex"):
        return True
    return any(os.path.basename(a).startswith("codex") for a in p.cmdline()[:2])


def busy_pids(paths: list[Path], proc: Path = PROC) -> list[int]:
    """Pids of codex processes holding any of `paths` open."""
    targets = {os.path.realpath(p) for p in paths if os.path.lexists(p)}
    if not targets:
        return []
    return [p.pid for p in others(proc) if _is_codex(p) and p.holds_open(targets)]
