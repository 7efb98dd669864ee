"""Backend protocol (one per agent CLI), the values it trades in, and the registry.

Everything agent-specific is a backend's: where its sessions are, how they are exported and
placed, the command lines that resume or continue one, what its `--continue` picks, its doctor
checks, the environment variables it reads and the shape of its session ids. `Backend` is what
each must define; `BackendExtras` is what one may define, with the defaults the helpers below
give a backend that does not (so a plug-in can start with the five methods of `Backend`).
"""

from __future__ import annotations

import shlex
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar, Protocol

from commuter import plugins
from commuter.errors import AmbiguousSession, BackendError, SessionNotFound
from commuter.model import ImportOptions, ImportResult, Manifest, SessionRef

if TYPE_CHECKING:
    from commuter.settings import Settings


class MemberSink(Protocol):
    """Where a backend's export puts bundle members (bundle.BundleWriter fits)."""

    def add_file(
        self, name: str, path: Path, *, observe: Callable[[bytes], None] | None = None
    ) -> None: ...
    def add_bytes(self, name: str, data: bytes) -> None: ...


class MemberScan(Protocol):
    """What a backend learns from one member in the pass that packs it (so the file is read
    once): `feed` sees each chunk, `more` names members found through it (packed last),
    `late` gives the manifest fields found (`message_count`, `meta` keys), which the bundle
    carries in its digest."""

    member: str

    def feed(self, chunk: bytes) -> None: ...
    def more(self) -> list[tuple[str, Path | bytes]]: ...
    def late(self) -> dict[str, Any]: ...


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
    scan: MemberScan | None = None

    def write_members(self, sink: MemberSink) -> None:
        """Stream every member into `sink` (the scanned one through `scan.feed`)."""
        for name, src in self.members:
            if isinstance(src, bytes):
                sink.add_bytes(name, src)
            elif self.scan is not None and name == self.scan.member:
                sink.add_file(name, src, observe=self.scan.feed)
            else:
                sink.add_file(name, src)
        if self.scan is None:
            return
        for name, src in self.scan.more():
            if isinstance(src, bytes):
                sink.add_bytes(name, src)
            else:
                sink.add_file(name, src)
        self.meta.update(self.scan.late().get("meta", {}))  # complete once written

    def scanned_members(self) -> list[tuple[str, Path | bytes]]:
        """Every member, those the scan finds too, for a caller that needs the whole list before
        packing (a delta): the scanned file is read here, in a pass of its own."""
        members = list(self.members)
        if self.scan is None:
            return members
        path = dict(members).get(self.scan.member)
        if isinstance(path, Path):
            with path.open("rb") as fh:
                while chunk := fh.read(1 << 20):
                    self.scan.feed(chunk)
        members += self.scan.more()
        self.meta.update(self.scan.late().get("meta", {}))
        return members

    def late(self) -> dict[str, Any] | None:
        """The manifest fields the scan found, once the members are written."""
        return self.scan.late() if self.scan is not None else None


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
    # What the backend's `stream_route` already wrote while the bundle was read (its own
    # object; the transcript member is then not in `root`).
    streamed: Any = None

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


# One line of `commuter doctor`: (what, ok, detail).
Check = tuple[str, bool, str]


class BackendExtras(Protocol):
    """What a backend may define beyond `Backend`; each helper below has the default."""

    # Environment variables the backend reads from `settings.env` (tests clear them all).
    env_vars: ClassVar[tuple[str, ...]]

    def resume_command(self, result: ImportResult) -> str:
        """The shell line a person runs to resume the placed session."""
        ...

    def continue_command(self, result: ImportResult) -> str | None:
        """The shell line that continues the project's newest session, or None."""
        ...

    def picks_up(self, result: ImportResult) -> bool:
        """Whether `continue_command` (run now) takes this session."""
        ...

    def launch_argv(self, result: ImportResult) -> list[str] | None:
        """What `import` execs on a terminal (in the project dir) to resume it, or None."""
        ...

    def doctor_checks(self) -> list[Check]:
        """`commuter doctor` lines about this agent (its CLI, its sessions)."""
        ...

    def is_session_id(self, text: str) -> bool:
        """True for an id of this agent's shape (checked before placing one)."""
        ...

    def session_busy(self, ref: SessionRef) -> str | None:
        """Why `ref` is held by a running agent right now (sync waits), or None."""
        ...

    def store_roots(self) -> list[Path]:
        """Folders where this agent's new sessions appear (the sync watcher polls them)."""
        ...

    def arrange(self, results: Sequence[ImportResult]) -> None:
        """Several sessions arrived at once: make the pick-up take the one last active at its
        source, not the one that happened to be imported last."""
        ...


def _extra(backend: object, name: str) -> Any:
    member = getattr(backend, name, None)
    return member if callable(member) else None


def backend_of(settings: Settings, result: ImportResult) -> Backend | None:
    """The backend that placed `result`, or None if it does not load here."""
    try:
        return get_backend(result.backend, settings)
    except BackendError:
        return None


def resume_command(settings: Settings, result: ImportResult) -> str:
    """The backend's resume line; by default `cd DIR && <name> --resume ID`."""
    backend = backend_of(settings, result)
    own = _extra(backend, "resume_command")
    if own is not None:
        return str(own(result))
    tool = getattr(backend, "name", None) or result.backend or "?"
    return f"cd {shlex.quote(str(result.project_dir))} && {tool} --resume {result.session_id}"


def continue_command(settings: Settings, result: ImportResult) -> str | None:
    """The backend's continue line if its `--continue` would take `result`, else None (also by
    default: a backend without `continue_command` shows only the resume line)."""
    backend = backend_of(settings, result)
    own = _extra(backend, "continue_command")
    if own is None:
        return None
    line: str | None = own(result)
    if line is None or result.action == "dry-run":
        return line
    picks_up = _extra(backend, "picks_up")
    return line if picks_up is None or picks_up(result) else None


def launch_argv(settings: Settings, result: ImportResult) -> list[str] | None:
    """What to exec on a terminal after an import; None (the default): nothing."""
    own = _extra(backend_of(settings, result), "launch_argv")
    argv: list[str] | None = own(result) if own is not None else None
    return list(argv) if argv else None


def doctor_checks(backend: Backend) -> list[Check]:
    """The backend's doctor lines; by default one saying whether it is installed."""
    own = _extra(backend, "doctor_checks")
    if own is not None:
        return list(own())
    installed = backend.is_installed()
    return [(backend.name, installed, "installed" if installed else "not found here")]


def accepts_session_id(backend: Backend, text: str) -> bool:
    """The backend's own id check; by default any id the bundle reader let through
    (bundle.model.is_session_token: a plain file name)."""
    own = _extra(backend, "is_session_id")
    return own is None or bool(own(text))


def env_vars(cls: type) -> tuple[str, ...]:
    """The environment variables a backend class reads (none by default)."""
    return tuple(getattr(cls, "env_vars", ()))


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
        arrange = _extra(backend, "arrange")
        if arrange is not None:
            arrange(placed)


BUILTIN: dict[str, str] = {"claude": "commuter.backends.claude:ClaudeBackend"}
BUILTIN["codex"] = "commuter.backends.codex:CodexBackend"
BUILTIN["gemini"] = "commuter.backends.gemini:GeminiBackend"
ENTRY_POINT_GROUP = "commuter.backends.v1"


def _codex_dirs(settings: Settings) -> list[Path]:
    return [Path(settings.env.get("CODEX_HOME") or settings.home / ".codex")]


def _gemini_dirs(settings: Settings) -> list[Path]:
    return [Path(settings.env.get("GEMINI_CLI_HOME") or settings.home) / ".gemini"]


# Where a built-in keeps everything it lists (tests/test_startup.py holds each to its
# backend's own): without any of them it has no session here, and a listing need not import it.
DATA_DIRS: dict[str, Callable[[Settings], list[Path]]] = {
    "codex": _codex_dirs,
    "gemini": _gemini_dirs,
}


def _cache_dir(settings: Settings | None) -> Path | None:
    return settings.cache_dir if settings is not None else None


def backend_names(settings: Settings | None = None, *, fresh: bool = False) -> list[str]:
    """Every backend: built-ins first, then `commuter.backends.v1` plug-ins (with `settings`,
    the plug-ins found are cached in its cache dir, `fresh` refreshes it: plugins.py)."""
    return plugins.names(BUILTIN, ENTRY_POINT_GROUP, _cache_dir(settings), fresh=fresh)


def backend_class(name: str, settings: Settings | None = None) -> type:
    """The class of the backend called `name` (built-ins win over plug-ins of the same name)."""
    target = plugins.spec_of(BUILTIN, ENTRY_POINT_GROUP, name, _cache_dir(settings))
    if target is None:
        known = ", ".join(backend_names(settings))
        raise BackendError(f"unknown backend {name!r} (known: {known})")
    try:
        cls = plugins.load(target)
    except (ImportError, AttributeError) as exc:
        raise BackendError(f"backend {name!r} failed to load ({exc})") from exc
    if not isinstance(cls, type):
        raise BackendError(f"backend {name!r} ({target}) is not a class")
    return cls


def get_backend(name: str, settings: Settings) -> Backend:
    """Construct the backend called `name`."""
    backend: Backend = backend_class(name, settings)(settings)
    return backend


def _warn(exc: BackendError) -> None:
    import logging  # here: a listing that meets no broken plug-in need not import it

    logging.getLogger(__name__).warning("%s", exc)


def all_env_vars() -> tuple[str, ...]:
    """The environment variables of every backend that loads."""
    found: list[str] = []
    for name in backend_names():
        try:
            found += [v for v in env_vars(backend_class(name)) if v not in found]
        except BackendError as exc:
            _warn(exc)
    return tuple(found)


def all_backends(settings: Settings, *, with_data_only: bool = False) -> list[Backend]:
    """Every backend that loads (a broken plug-in is logged and left out). A listing passes
    `with_data_only`: the built-ins none of whose DATA_DIRS exists (they have no session here)
    are left out and the plug-ins come from the cache; else (doctor, the sync watcher) the
    plug-ins are read afresh and the cache refreshed."""
    out: list[Backend] = []
    for name in backend_names(settings, fresh=not with_data_only):
        dirs = DATA_DIRS.get(name) if with_data_only else None
        if dirs is not None and not any(d.is_dir() for d in dirs(settings)):
            continue
        try:
            out.append(get_backend(name, settings))
        except BackendError as exc:
            _warn(exc)
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
        raise AmbiguousSession(
            f"{session} matches sessions of several tools ({shown}); give more characters"
        )
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
