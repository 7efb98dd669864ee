"""Is a session held by a running agent right now? Then it is not sent yet (its transcript
is still being written). Each backend's `session_busy(ref)` answers (BackendExtras); a
backend without one is never held."""

from __future__ import annotations

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
    return None
