"""Which sessions there are, across every backend: what `list` needs and nothing more (no
bundle code is imported, so a listing starts as fast as the backends allow). core re-exports
`list_sessions`."""

from __future__ import annotations

from typing import TYPE_CHECKING

from commuter.errors import BackendError

if TYPE_CHECKING:
    from commuter.backends import Backend
    from commuter.model import SessionRef
    from commuter.settings import Settings


def list_sessions(settings: Settings, agent: str | None = None) -> list[SessionRef]:
    """Every session of every backend on this machine (or of `agent`'s), newest first."""
    refs = [ref for backend in backends(settings, agent) for ref in backend.sessions()]
    return sorted(refs, key=lambda r: r.updated_at, reverse=True)


def backends(settings: Settings, agent: str | None) -> list[Backend]:
    """Every backend that loads and may have sessions here (a built-in whose data dir is
    missing is not imported), or `agent`'s alone (BackendError if there is none such)."""
    from commuter.backends import all_backends, backend_names, get_backend

    if agent is None:
        return all_backends(settings, with_data_only=True)
    known = backend_names(settings)
    if agent not in known:
        known = backend_names()  # perhaps installed just now, unseen by the cache
    if agent not in known:
        raise BackendError(f"unknown agent {agent!r} (known: {', '.join(known)})")
    return [get_backend(agent, settings)]
