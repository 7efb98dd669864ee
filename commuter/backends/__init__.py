"""Backend protocol (one per agent CLI), the values it trades in, and the registry."""

from __future__ import annotations

import importlib
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar, Protocol

from commuter.errors import BackendError

if TYPE_CHECKING:
    from commuter.core import ImportOptions, ImportResult
    from commuter.settings import Settings


@dataclass(frozen=True, slots=True)
class SessionRef:
    """One session on this machine, as `list` shows it."""

    backend: str
    session_id: str
    project: Path | None
    updated_at: datetime
    path: Path | None = None
    size: int = 0
    first_prompt: str | None = None
    has_messages: bool = True


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


BUILTIN: dict[str, str] = {"claude": "commuter.backends.claude:ClaudeBackend"}


def get_backend(name: str, settings: Settings) -> Backend:
    """Construct the backend called `name` (built-ins, then `commuter.backends.v1` plugins)."""
    target = BUILTIN.get(name)
    if target is None:
        from importlib.metadata import entry_points

        for ep in entry_points(group="commuter.backends.v1"):
            if ep.name == name:
                target = ep.value
                break
    if target is None:
        raise BackendError(f"unknown backend {name!r} (known: {', '.join(sorted(BUILTIN))})")
    module_name, _, attr = target.partition(":")
    cls = getattr(importlib.import_module(module_name), attr)
    backend: Backend = cls(settings)
    return backend


def all_backends(settings: Settings) -> list[Backend]:
    """Every built-in backend."""
    return [get_backend(name, settings) for name in BUILTIN]
