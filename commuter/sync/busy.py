"""Is a session held by a running agent right now? Then it is not sent yet (its transcript
is still being written). The backends' own checks (their `procs` modules, over
commuter.procscan) answer; a plug-in backend may offer `session_busy(ref) -> str | None`."""

from __future__ import annotations

import os
from collections.abc import Callable

from commuter.model import SessionRef
from commuter.settings import Settings


def busy_reason(settings: Settings, ref: SessionRef) -> str | None:
    """Why `ref` is held (which agent process), or None."""
    from commuter.backends import get_backend

    try:
        backend = get_backend(ref.backend, settings)
    except Exception:  # an unloadable plug-in: cannot say, so not held
        return None
    hook: Callable[[SessionRef], str | None] | None = getattr(backend, "session_busy", None)
    if callable(hook):
        return hook(ref)
    if ref.backend == "claude" and ref.path is not None:
        from commuter.backends.claude.paths import ClaudeDirs
        from commuter.backends.claude.procs import session_busy

        return session_busy(ref.path, ref.session_id, ClaudeDirs.of(settings).sessions_dir)
    if ref.backend == "codex" and ref.path is not None:
        from commuter.backends.codex.procs import busy_pids as codex_pids

        pids = codex_pids([ref.path])
        return f"codex (pid {pids[0]}) has it open" if pids else None
    if ref.backend == "gemini" and ref.project is not None:
        from commuter.backends.gemini.procs import busy_pids as gemini_pids

        pids = gemini_pids(os.path.realpath(ref.project))
        return f"gemini (pid {pids[0]}) runs in its project" if pids else None
    return None
