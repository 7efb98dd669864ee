"""Backend protocol (one per agent CLI), the values it trades in, and the registry."""

from __future__ import annotations

import importlib
import logging
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar, Protocol

from commuter.errors import AmbiguousSession, BackendError, SessionNotFound
from commuter.model import ImportOptions, ImportResult, Manifest, SessionRef

log = logging.getLogger(__name__)

if TYPE_CHECKING:
    from commuter.settings import Settings


class MemberSink(Protocol):
    """Where a backend's export puts bundle members (bundle.BundleWriter fits)."""

    def add_file(self, name: str, path: Path) -> None: ...
    def add_bytes(self, name: str, data: bytes) -> None: ...


@dataclass(frozen=True, slots=True)
class ExportPlan:
    """What a backend gathered for one session: manifest fields and the members to pack."""

    backend: str
    session_id: str
    project_dir: str
    message_count: int
    git: dict[str, Any] | None
    meta: dict[str, Any]
    members: tuple[tuple[str, Path | bytes], ...]

    def write_members(self, sink: MemberSink) -> None:
        """Stream every member into `sink`."""
        for name, src in self.members:
            if isinstance(src, bytes):
                sink.add_bytes(name, src)
            else:
                sink.add_file(name, src)


@dataclass(frozen=True, slots=True)
class ImportSource:
    """A verified, unpacked bundle as a backend sees it: manifest fields plus member files."""

    session_id: str
    project_dir: str
    root: Path
    members: tuple[str, ...]
    git: dict[str, Any] | None = None
    meta: dict[str, Any] = field(default_factory=dict)
    origin: str = ""

    def member(self, name: str) -> Path:
        return self.root / name


class Backend(Protocol):
    """An agent CLI whose sessions commuter can move."""

    name: ClassVar[str]

    def is_installed(self) -> bool:
        """True if the agent's data dir or binary exists here."""
        ...

    def sessions(self) -> Iterator[SessionRef]:
        """Sessions on this machine, newest first."""
        ...

    def find(self, session: str | None, cwd: Path) -> SessionRef:
        """A session by id or unique prefix, or the newest of `cwd`'s project when None."""
        ...

    def collect(self, ref: SessionRef) -> ExportPlan:
        """Everything one session consists of, ready to pack."""
        ...

    def place(self, source: ImportSource, options: ImportOptions) -> ImportResult:
        """Put an unpacked session where the agent finds it."""
        ...


class Arranges(Protocol):
    """A backend that can order what one pull placed for its `--continue`-style pick-up."""

    def arrange(self, results: Sequence[ImportResult]) -> None:
        """Several sessions arrived at once: make the pick-up take the one last active at its
        source, not the one that happened to be imported last."""
        ...


def arrange_for_continue(settings: Settings, results: Sequence[ImportResult]) -> None:
    """Hand each backend the results of one pull that it placed (those that define `arrange`)."""
    by_backend: dict[str, list[ImportResult]] = {}
    for result in results:
        by_backend.setdefault(result.backend, []).append(result)
    for name, placed in by_backend.items():
        try:
            backend = get_backend(name, settings)
        except BackendError:
            continue
        arrange = getattr(backend, "arrange", None)
        if callable(arrange):
            arrange(placed)


BUILTIN: dict[str, str] = {"claude": "commuter.backends.claude:ClaudeBackend"}
ENTRY_POINT_GROUP = "commuter.backends.v1"


def _plugin_specs() -> dict[str, str]:
    from importlib.metadata import entry_points

    specs: dict[str, str] = {}
    try:
        for ep in entry_points(group=ENTRY_POINT_GROUP):
            specs.setdefault(ep.name, ep.value)
    except Exception as exc:  # a broken installed distribution must not break commuter
        log.warning("cannot read %s entry points: %s", ENTRY_POINT_GROUP, exc)
    return specs


def backend_names() -> list[str]:
    """Every backend: built-ins first, then `commuter.backends.v1` plug-ins."""
    return [*BUILTIN, *(n for n in _plugin_specs() if n not in BUILTIN)]


def get_backend(name: str, settings: Settings) -> Backend:
    """Construct the backend called `name` (built-ins win over plug-ins of the same name)."""
    target = BUILTIN.get(name) or _plugin_specs().get(name)
    if target is None:
        raise BackendError(f"unknown backend {name!r} (known: {', '.join(backend_names())})")
    module_name, _, attr = target.partition(":")
    try:
        cls = getattr(importlib.import_module(module_name), attr)
    except (ImportError, AttributeError) as exc:
        raise BackendError(f"backend {name!r} failed to load ({exc})") from exc
    backend: Backend = cls(settings)
    return backend


def all_backends(settings: Settings) -> list[Backend]:
    """Every backend that loads (a broken plug-in is logged and left out)."""
    out: list[Backend] = []
    for name in backend_names():
        try:
            out.append(get_backend(name, settings))
        except BackendError as exc:
            log.warning("%s", exc)
    return out


def find_in(backends: list[Backend], session: str | None, cwd: Path) -> SessionRef:
    """A session by id/prefix across `backends`, or the newest of `cwd`'s project in any.

    An id prefix that matches in two backends is ambiguous; with none found, the first
    backend's error (the built-in's) explains.
    """
    found: list[SessionRef] = []
    first_error: SessionNotFound | None = None
    for backend in backends:
        try:
            found.append(backend.find(session, cwd))
        except SessionNotFound as exc:
            first_error = first_error or exc
    if not found:
        raise first_error or SessionNotFound(f"session {session or 'for ' + str(cwd)} not found")
    if session is not None and len(found) > 1:
        shown = ", ".join(f"{r.backend}:{r.session_id[:12]}" for r in found)
        raise AmbiguousSession(f"{session} matches sessions of several tools ({shown}); "
                               "give more characters")
    return max(found, key=lambda r: r.updated_at)


def source_from(manifest: Manifest, root: Path) -> ImportSource:
    """An ImportSource from a bundle.Manifest and the folder it was unpacked into."""
    return ImportSource(
        session_id=manifest.session_id,
        project_dir=manifest.project_dir,
        root=root,
        members=tuple(m.name for m in manifest.members),
        git=manifest.git,
        meta=dict(manifest.meta or {}),
        origin=_origin_text(manifest.origin),
    )


def _origin_text(origin: Any) -> str:
    if origin is None:
        return ""
    host = getattr(origin, "hostname", "") or "?"
    user = getattr(origin, "user", "") or "?"
    when = getattr(origin, "created_at", "") or ""
    return f"{user}@{host} {when}".strip()
