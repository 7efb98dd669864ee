"""The core operations the CLI, the peer server and the transports call: export and import.

Contract (owned by the core; other layers use only what is here):
- export_to(settings, out, session=ID-or-prefix | None, cwd=Path) writes one bundle to a binary
  file object and returns its Manifest. With session=None the newest session of `cwd` is taken.
- import_file(settings, path, options) verifies the whole bundle before writing anything, then
  places the session so `claude --continue` in the target project finds it, and returns an
  ImportResult. Raises BundleError for bad input, ConsentRequired / SessionBusy where a local
  file would otherwise be lost.
- read_manifest(path) reads only what `inspect` needs.
- list_sessions(settings) yields SessionRef, newest first.
"""

from __future__ import annotations

import dataclasses
import importlib
import shlex
import shutil
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any, BinaryIO

from commuter.errors import CommuterError
from commuter.settings import Settings

if TYPE_CHECKING:
    from commuter.backends import Backend, SessionRef


@dataclass(frozen=True, slots=True)
class ImportOptions:
    """How an import should behave; the CLI fills it from flags and the terminal."""

    project_dir: Path | None = None
    replace: bool = False
    dry_run: bool = False
    assume_yes: bool = False
    interactive: bool = False
    origin: str | None = None
    # The bundle was sealed by a paired peer and its seal checked. Only then may its project
    # config add files missing here without a yes; anyone who can write to a shared folder can
    # drop a plain bundle, and CLAUDE.md or a command file steers the agent.
    sender_verified: bool = False
    # On a TTY the CLI passes a chooser: ask(question, choices) -> one of choices.
    ask: Callable[[str, tuple[str, ...]], str] | None = None


@dataclass(frozen=True, slots=True)
class ImportResult:
    """What an import did."""

    session_id: str
    project_dir: Path
    action: str  # "created" | "updated" | "unchanged" | "forked" | "replaced" | "dry-run"
    transcript: Path | None = None
    backups: tuple[Path, ...] = ()
    warnings: tuple[str, ...] = ()
    original_session_id: str | None = None
    bundle_digest: str = ""
    origin: str | None = None  # who exported the bundle, and when
    print_mode: bool = False  # made by `claude -p`: interactive `claude --continue` skips it
    planned: str | None = None  # with action "dry-run": what an import would do (an action)
    last_activity: float | None = None  # when the session was last written at its source

    def resume_command(self) -> str:
        """The command a person runs to continue the session."""
        return f"cd {shlex.quote(str(self.project_dir))} && claude --resume {self.session_id}"

    def continue_command(self) -> str:
        """`claude --continue`; for a session made by `claude -p`, the form that finds it."""
        where = f"cd {shlex.quote(str(self.project_dir))} && "
        if self.print_mode:
            return where + "claude -p --continue   (made by claude -p: plain --continue skips it)"
        return where + "claude --continue"


@dataclass(frozen=True, slots=True)
class Origin:
    """Who made a bundle: shown in `inspect` and in the import summary."""

    hostname: str
    user: str
    created_at: str
    commuter_version: str
    device_id: str | None = None
    extra: dict[str, str] = field(default_factory=dict)


def _bundle() -> Any:
    # bundle.py is another engineer's module; imported by name so this module loads without it.
    return importlib.import_module("commuter.bundle")


def _backend(settings: Settings, name: str) -> Backend:
    from commuter.backends import get_backend

    return get_backend(name, settings)


def list_sessions(settings: Settings) -> list[SessionRef]:
    """Every session of every backend on this machine, newest first."""
    from commuter.backends import all_backends

    refs = [ref for backend in all_backends(settings) for ref in backend.sessions()]
    return sorted(refs, key=lambda r: r.updated_at, reverse=True)


def find_session(settings: Settings, session: str | None, cwd: Path | None = None) -> SessionRef:
    """A session by id or unique prefix, or the newest session of `cwd`'s project (any tool)."""
    from commuter.backends import all_backends, find_in

    return find_in(all_backends(settings), session, cwd or Path.cwd())


def make_origin(settings: Settings) -> Origin:
    """This machine as a bundle's origin (device id only if a key already exists)."""
    from commuter import __version__

    device_id = None
    try:
        from commuter.peer.identity import KEY_FILE, Identity

        if (settings.config_dir / KEY_FILE).is_file():
            device_id = Identity.load_or_create(settings).device_id
    except (ImportError, CommuterError):
        device_id = None
    return Origin(
        hostname=settings.hostname, user=settings.user, created_at=_now(),
        commuter_version=__version__, device_id=device_id,
    )


def export_to(
    settings: Settings, out: BinaryIO, *, session: str | None = None, cwd: Path | None = None
) -> Any:
    """Write one session as a bundle to `out`; returns the bundle's Manifest."""
    ref = find_session(settings, session, cwd)
    plan = _backend(settings, ref.backend).collect(ref)
    bundle = _bundle()
    manifest = bundle.Manifest(
        format=bundle.FORMAT_VERSION, backend=plan.backend, session_id=plan.session_id,
        project_dir=plan.project_dir, created_at=_now(), origin=make_origin(settings),
        message_count=plan.message_count, git=plan.git, meta=plan.meta, members=(),
    )
    writer = bundle.BundleWriter(out, manifest)
    plan.write_members(writer)
    return writer.close()


def import_file(settings: Settings, path: Path, options: ImportOptions) -> ImportResult:
    """Verify and unpack a bundle (plain or legacy), then place its session here."""
    from commuter.backends import source_from

    bundle = _bundle()
    digest = bundle.file_digest(path)
    settings.staging_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
    limits = bundle.DEFAULT_LIMITS.for_import(settings.max_import_size)
    unpacked = bundle.unpack(path, settings.staging_dir, limits=limits)
    try:
        manifest = unpacked.manifest
        backend = _backend(settings, manifest.backend)
        result = backend.place(source_from(manifest, unpacked.root), options)
    finally:
        shutil.rmtree(unpacked.root, ignore_errors=True)
    return dataclasses.replace(result, bundle_digest=digest)


def read_manifest(path: Path) -> Any:
    """The manifest of a bundle file, for `inspect`."""
    return _bundle().read_manifest(path)


def bundle_digest(path: Path) -> str:
    """sha256 hex of a bundle file."""
    return str(_bundle().file_digest(path))


def is_bundle(path: Path) -> bool:
    """True if `path` looks like a plain or legacy bundle."""
    return bool(_bundle().is_bundle(path))


def _now() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds").replace("+00:00", "Z")
