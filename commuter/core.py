"""The core operations the CLI, the peer server and the transports call: export and import.

Contract (owned by the core; other layers use only what is here):
- export_to(settings, out, session=ID-or-prefix | None, cwd=Path) writes one bundle to a binary
  file object and returns its Manifest. With session=None the newest session of `cwd` is taken;
  ref=SessionRef (from find_session) skips the lookup.
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
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any, BinaryIO

from commuter import bundle, progress
from commuter.errors import BundleError, CommuterError, DeltaBaseMismatch
from commuter.model import ImportOptions, ImportResult, Manifest, Origin, SessionRef
from commuter.settings import FORKS_FILE, KEY_FILE, Settings

if TYPE_CHECKING:
    from commuter.backends import Backend, ExportPlan, ImportSource

__all__ = [
    "Exported",
    "ImportOptions",
    "ImportResult",
    "Manifest",
    "Origin",
    "SessionRef",
    "bundle_digest",
    "export_session",
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
    from commuter import listing

    return listing.list_sessions(settings, agent)


def find_session(
    settings: Settings, session: str | None, cwd: Path | None = None, agent: str | None = None
) -> SessionRef:
    """A session by id or unique prefix, or the newest session of `cwd`'s project (of any
    agent, or of `agent` only)."""
    from commuter.backends import find_in

    return find_in(_backends(settings, agent), session, cwd or Path.cwd())


def _backends(settings: Settings, agent: str | None) -> list[Backend]:
    from commuter import listing

    return listing.backends(settings, agent)


def make_origin(settings: Settings) -> Origin:
    """This machine as a bundle's origin (device id only if a key already exists)."""
    from commuter import __version__

    device_id = None
    if (settings.config_dir / KEY_FILE).is_file():  # else nacl is not even imported
        try:
            from commuter.peer.identity import Identity

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
    ref: SessionRef | None = None,
) -> Manifest:
    """Write one session as a bundle to `out` (`ref` if given: found already, else by
    `session` / `cwd`); returns the bundle's Manifest."""
    if ref is None:
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
        meta=_with_fork(settings, plan.backend, plan.session_id, plan.meta),
        members=(),
    )
    with progress.step(f"export {plan.session_id[:8]}", _plan_size(plan)):
        writer = bundle.BundleWriter(out, manifest)
        plan.write_members(writer)
        return writer.close(plan.late())


def _plan_size(plan: ExportPlan) -> int | None:
    """The bytes an export of `plan` reads (for its progress bar); None when not known."""
    if not progress.wanted(progress.MIN_BYTES):
        return None
    total = 0
    for _, src in plan.members:
        try:
            total += len(src) if isinstance(src, bytes) else src.stat().st_size
        except OSError:
            return None
    return total


def _with_fork(
    settings: Settings, agent: str, session_id: str, meta: dict[str, Any]
) -> dict[str, Any]:
    """`meta` plus `fork_of` / `fork_from` when the session is a recorded fork, so the
    machine it goes to marks it alike (forks.py)."""
    if not (settings.state_dir / FORKS_FILE).exists():  # no fork recorded: no sqlite3 import
        return meta
    from commuter import forks

    fork = forks.lookup(settings.state_dir, agent, session_id)
    if fork is None:
        return meta
    return {**meta, "fork_of": fork.origin_id, "fork_from": fork.origin_host}


def _record_fork(settings: Settings, manifest: Manifest, result: ImportResult) -> None:
    """A session that is a fork where it comes from is marked a fork here too."""
    from commuter import forks
    from commuter.bundle.model import is_session_token

    origin, host = manifest.meta.get("fork_of"), manifest.meta.get("fork_from")
    if (
        result.action == "created"
        and result.session_id == manifest.session_id
        and isinstance(origin, str)
        and is_session_token(origin)
        and origin != manifest.session_id
        and isinstance(host, str)
    ):
        forks.record(settings.state_dir, manifest.backend, result.session_id, origin, host[:253])


@dataclass(frozen=True, slots=True)
class Exported:
    """What `export_session` wrote: the manifest, the session's whole state (member -> size,
    sha256; for a delta the unchanged members and the whole transcript included), the name of
    its transcript member ("" if it has none by that name) and whether it is a delta."""

    manifest: Manifest
    state: dict[str, tuple[int, str]]
    transcript: str
    delta: bool


def export_session(
    settings: Settings,
    out: BinaryIO,
    ref: SessionRef,
    *,
    base: Mapping[str, tuple[int, str]] | None = None,
) -> Exported:
    """Write `ref` as a bundle to `out`: whole, or a delta against `base` (a state the
    receiver acknowledged) when its backend takes deltas and `base` still prefixes it."""
    from commuter.bundle import delta

    backend = _backend(settings, ref.backend)
    plan = backend.collect(ref)
    transcript = f"session/{plan.session_id}.jsonl"
    members = list(plan.members)
    if transcript not in dict(members):
        transcript = ""
    planned = None
    scanned = base is not None and bool(transcript) and hasattr(backend, "place_delta")
    if scanned and base is not None:
        members = plan.scanned_members()  # a delta is planned from the whole list
        planned = delta.plan(members, transcript, base)
    manifest = Manifest(
        format=bundle.FORMAT_VERSION,
        backend=plan.backend,
        session_id=plan.session_id,
        project_dir=plan.project_dir,
        created_at=_now(),
        origin=make_origin(settings),
        message_count=plan.message_count,
        git=plan.git,
        meta=_with_fork(settings, plan.backend, plan.session_id, plan.meta),
        members=(),
        delta=planned.spec.to_dict() if planned is not None else None,
    )
    writer = bundle.BundleWriter(out, manifest)
    if not scanned:
        plan.write_members(writer)  # one pass: the backend's scan sees the transcript go by
    else:
        for name, src in planned.members if planned is not None else members:
            if isinstance(src, bytes):
                writer.add_bytes(name, src)
            else:
                writer.add_file(name, src)
    written = writer.close(plan.late())
    sent = {m.name: (m.size, m.sha256) for m in written.members}
    state = planned.spec.whole(sent) if planned is not None else sent
    return Exported(written, state, transcript, planned is not None)


def import_file(
    settings: Settings, path: Path, options: ImportOptions, *, sender: str | None = None
) -> ImportResult:
    """Verify and unpack a bundle (plain or legacy), then place its session here.

    `sender`: the device id of the paired peer whose seal was checked. Only then is a delta
    taken (against what this machine imported from that peer, see acks.py), and what an
    import leaves is recorded as the base of the next delta."""
    from commuter.backends import accepts_session_id, source_from

    settings.staging_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
    limits = bundle.DEFAULT_LIMITS.for_import(settings.max_import_size)
    routes: list[Any] = []

    def router(manifest: Manifest) -> Any:
        """The backend's one-pass route for the transcript (written as it is decompressed,
        visible only after the whole bundle checks out), if it has one for this bundle."""
        be = _backend(settings, manifest.backend)
        start = getattr(be, "stream_route", None)
        if start is None or manifest.delta is not None:
            return None
        if not accepts_session_id(be, manifest.session_id):
            return None
        route = start(manifest, options)
        if route is not None:
            routes.append(route)
        return route

    try:
        with progress.step("import", progress.size_of(path)):
            unpacked = bundle.unpack(path, settings.staging_dir, limits=limits, router=router)
        if routes and not routes[0].usable:  # the route handed it back: the ordinary path
            shutil.rmtree(unpacked.root, ignore_errors=True)
            routes.pop().discard()
            unpacked = bundle.unpack(path, settings.staging_dir, limits=limits)
    except BaseException:
        for route in routes:
            route.discard()
        raise
    try:
        manifest = unpacked.manifest
        backend = _backend(settings, manifest.backend)
        if not accepts_session_id(backend, manifest.session_id):
            raise BundleError(
                f"bundle session id {manifest.session_id!r} is not a {manifest.backend} session id"
            )
        source = source_from(manifest, unpacked.root)
        if routes:
            source = dataclasses.replace(source, streamed=routes[0])
        sent = {m.name: (m.size, m.sha256) for m in manifest.members}
        if manifest.delta is not None:
            result, state = _place_delta(settings, backend, manifest, source, options, sender)
        else:
            result, state = backend.place(source, options), sent
        if not options.dry_run:
            _record_fork(settings, manifest, result)
        if sender is not None and not options.dry_run:
            _record_received(settings, sender, manifest, result, state)
    finally:
        shutil.rmtree(unpacked.root, ignore_errors=True)
        for route in routes:
            route.discard()
    return dataclasses.replace(result, bundle_digest=unpacked.digest, backend=manifest.backend)


def _place_delta(
    settings: Settings,
    backend: Backend,
    manifest: Manifest,
    source: ImportSource,
    options: ImportOptions,
    sender: str | None,
) -> tuple[ImportResult, dict[str, tuple[int, str]]]:
    """A delta placed on the state it names; DeltaBaseMismatch when this machine does not hold
    that state as the import from `sender` left it (the sender then sends it whole)."""
    from commuter import acks
    from commuter.bundle import delta

    spec = delta.spec_of(manifest)
    place_delta = getattr(backend, "place_delta", None)
    if sender is None or not options.sender_verified:
        raise DeltaBaseMismatch("a delta bundle is taken only from a paired peer's seal")
    if place_delta is None:
        raise DeltaBaseMismatch(f"the {manifest.backend} backend here takes no delta bundles")
    for rec in acks.received(settings.state_dir, sender, manifest.backend, manifest.session_id):
        held = rec.members.get(spec.transcript)
        if held == (spec.base_size, spec.base_sha256) and all(
            rec.members.get(name) == state for name, state in spec.base.items()
        ):
            sent = {m.name: (m.size, m.sha256) for m in manifest.members}
            result: ImportResult = place_delta(source, spec, rec, options)
            return result, spec.whole(sent)
    raise DeltaBaseMismatch(
        f"the delta of session {manifest.session_id} is based on a state this machine did not "
        "import from the sender"
    )


def _record_received(
    settings: Settings,
    sender: str,
    manifest: Manifest,
    result: ImportResult,
    state: Mapping[str, tuple[int, str]],
) -> None:
    """What the import left, as the base of the next delta from `sender`: only where the
    backend says the local transcript now holds exactly the bundle's session."""
    from commuter import acks
    from commuter.bundle.delta import prefix_sha256

    transcript = f"session/{manifest.session_id}.jsonl"
    path = result.transcript
    # created / updated / replaced under the bundle's own id hold exactly its session; an
    # identical copy left unchanged does too (the backend says so)
    in_step = result.extra.get("in_step") or (
        result.action in ("created", "updated", "replaced")
        and result.session_id == manifest.session_id
    )
    if not in_step or path is None or transcript not in state:
        return  # earlier records stay: a delta on one is checked against the file itself
    size = result.extra.get("in_step_size")
    if not isinstance(size, int):
        size = path.stat().st_size
    known = result.extra.get("in_step_sha256")
    sha = known if isinstance(known, str) else prefix_sha256(path, size)
    if sha is None:
        return
    acks.record_received(
        settings.state_dir,
        sender,
        manifest.backend,
        manifest.session_id,
        state,
        transcript,
        path,
        size,
        sha,
    )


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
