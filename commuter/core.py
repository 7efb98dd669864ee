"""The core operations the CLI, the peer server and the transports call: export and import.

Contract (owned by the core; other layers use only what is here):
- export_to(settings, out, session=ID-or-prefix | None, cwd=Path) writes one bundle to a binary
  file object and returns its Manifest. With session=None the newest session of `cwd` is taken.
- import_file(settings, path, options) verifies the whole bundle before writing anything, then
  has its backend place the session (its `--continue` in the target project finds it) and returns an
  ImportResult. Raises BundleError for bad input, SessionBusy where a running agent would
  otherwise lose a local file.
- read_manifest(path) reads only what `inspect` needs.
- list_sessions(settings) yields SessionRef, newest first.
"""

from __future__ import annotations

import dataclasses
import shutil
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, BinaryIO

from commuter import bundle
from commuter.errors import BackendError, BundleError, CommuterError
from commuter.model import ImportOptions, ImportResult, Manifest, Origin, SessionRef
from commuter.settings import Settings

if TYPE_CHECKING:
    from commuter.backends import Backend

__all__ = [
    "ImportOptions",
    "ImportResult",
    "Manifest",
    "Origin",
    "SessionRef",
    "bundle_digest",
    "export_to",
    "find_session",
    "import_file",
    "is_bundle",
    "list_sessions",
    "make_origin",
    "read_manifest",
]


def _backend(settings: Settings, name: str) -> Backend:
    from commuter.backends import get_backend

    return get_backend(name, settings)


def list_sessions(settings: Settings, agent: str | None = None) -> list[SessionRef]:
    """Every session of every backend on this machine (or of `agent`'s), newest first."""
    refs = [ref for backend in _backends(settings, agent) for ref in backend.sessions()]
    return sorted(refs, key=lambda r: r.updated_at, reverse=True)


def find_session(
    settings: Settings, session: str | None, cwd: Path | None = None, agent: str | None = None
) -> SessionRef:
    """A session by id or unique prefix, or the newest session of `cwd`'s project (of any
    agent, or of `agent` only)."""
    from commuter.backends import find_in

    return find_in(_backends(settings, agent), session, cwd or Path.cwd())


def _backends(settings: Settings, agent: str | None) -> list[Backend]:
    from commuter.backends import all_backends, backend_names, get_backend

    if agent is None:
        return all_backends(settings)
    if agent not in backend_names():
        raise BackendError(f"unknown agent {agent!r} (known: {', '.join(backend_names())})")
    return [get_backend(agent, settings)]


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
        hostname=settings.hostname,
        user=settings.user,
        created_at=_now(),
        commuter_version=__version__,
        device_id=device_id,
    )


def export_to(
    settings: Settings,
    out: BinaryIO,
    *,
    session: str | None = None,
    cwd: Path | None = None,
    agent: str | None = None,
) -> Manifest:
    """Write one session as a bundle to `out`; returns the bundle's Manifest."""
    ref = find_session(settings, session, cwd, agent)
    plan = _backend(settings, ref.backend).collect(ref)
    manifest = Manifest(
        format=bundle.FORMAT_VERSION,
        backend=plan.backend,
        session_id=plan.session_id,
        project_dir=plan.project_dir,
        created_at=_now(),
        origin=make_origin(settings),
        message_count=plan.message_count,
        git=plan.git,
        meta=plan.meta,
        members=(),
    )
    writer = bundle.BundleWriter(out, manifest)
    plan.write_members(writer)
    return writer.close()


def import_file(settings: Settings, path: Path, options: ImportOptions) -> ImportResult:
    """Verify and unpack a bundle (plain or legacy), then place its session here."""
    from commuter.backends import accepts_session_id, source_from

    digest = bundle.file_digest(path)
    settings.staging_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
    limits = bundle.DEFAULT_LIMITS.for_import(settings.max_import_size)
    unpacked = bundle.unpack(path, settings.staging_dir, limits=limits)
    try:
        manifest = unpacked.manifest
        backend = _backend(settings, manifest.backend)
        if not accepts_session_id(backend, manifest.session_id):
            raise BundleError(
                f"bundle session id {manifest.session_id!r} is not a {manifest.backend} session id"
            )
        result = backend.place(source_from(manifest, unpacked.root), options)
    finally:
        shutil.rmtree(unpacked.root, ignore_errors=True)
    return dataclasses.replace(result, bundle_digest=digest, backend=manifest.backend)


def read_manifest(path: Path) -> Manifest:
    """The manifest of a bundle file, for `inspect`."""
    return bundle.read_manifest(path)


def bundle_digest(path: Path) -> str:
    """sha256 hex of a bundle file."""
    return bundle.file_digest(path)


def is_bundle(path: Path) -> bool:
    """True if `path` looks like a plain or legacy bundle."""
    return bundle.is_bundle(path)


def _now() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds").replace("+00:00", "Z")
