"""Is a gemini running in the project whose chat an import would replace? (Linux /proc.)

gemini appends to a chat file record by record; a chat replaced under a running gemini would
lose what it appends next. It does not keep the file open, so a gemini process (`gemini` as
argv[0]/argv[1], the npm bin under node) whose working directory is the project counts."""

from __future__ import annotations

import os
from pathlib import Path

from commuter.procscan import PROC, others


def is_gemini(cmdline: list[str]) -> bool:
    return any(os.path.basename(arg) in ("gemini", "gemini.js") for arg in cmdline[:2])


def busy_pids(project: str, proc: Path = PROC) -> list[int]:
    """Pids of gemini processes running in `project` (a realpath)."""
    return [p.pid for p in others(proc) if is_gemini(p.cmdline()) and p.cwd() == project]
