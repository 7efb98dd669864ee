"""Place an unpacked Claude Code session on this machine: decide, back up, rewrite, write."""

from __future__ import annotations

import contextlib
import dataclasses
import errno
import filecmp
import os
import shutil
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import BinaryIO

import orjson

from commuter import config, fsutil
from commuter.backends import ImportSource
from commuter.backends.claude import lineage
from commuter.backends.claude.memory import MemoryWrite, host_tag, plan_memory
from commuter.backends.claude.paths import (
    ClaudeDirs,
    check_session_id,
    claude_project_folder,
    is_safe_name,
    is_safe_slug,
    read_entrypoint,
)
from commuter.backends.claude.rewrite import Rewriter, backup_hash
from commuter.errors import BackendError, BundleError, SessionBusy
from commuter.fsutil import atomic_write_bytes
from commuter.model import ImportOptions, ImportResult
from commuter.pathmap import PathMap, resolve_target_project
from commuter.settings import Settings

SETTINGS = ".claude/settings.json"
ALLOWED_PROJECT = (SETTINGS, "CLAUDE.md")
# Export carries project files up to 1 MiB and the session's own history lines; a bundle
# with more is not one commuter made, and these members are compared and written whole.
MAX_PROJECT_MEMBER = 1 << 20
MAX_HISTORY_MEMBER = 16 << 20
SESSION_DIRS = ("subagents", "tool-results", "workflows", "remote-agents")
MAX_SESSION_DEPTH = 6


@dataclass(slots=True)
class _Plan:
    sid: str
    target: Path
    dest: Path
    action: str
    warnings: list[str] = field(default_factory=list)
    backups: list[Path] = field(default_factory=list)
    origin: str = ""
    print_mode: bool = False
    last_activity: float | None = None


def place(settings: Settings, source: ImportSource, options: ImportOptions) -> ImportResult:
    """Decide what to do with the incoming session, then write it (see docs/architecture.md)."""
    sid = check_session_id(source.session_id)
    if not source.project_dir.startswith("/"):
        raise BundleError(f"bundle names a relative project dir {source.project_dir!r}")
    incoming = source.member(f"session/{sid}.jsonl")
    if not incoming.is_file():
        raise BundleError(f"bundle has no transcript session/{sid}.jsonl")
    cfg = config.load(settings)
    target = resolve_target_project(
        source.project_dir, override=options.project_dir, config_maps=cfg.path_maps,
        cwd=Path.cwd(), git=source.git,
    )
    dirs = ClaudeDirs.of(settings)
    folder = dirs.project_folder(target)
    plan = _decide(settings, dirs, sid, target, folder / f"{sid}.jsonl", incoming, options)
    plan.origin = source.origin
    plan.last_activity = _when(source.meta.get("last_activity"))
    plan.print_mode = read_entrypoint(incoming) == "sdk-cli"
    from commuter import gitstate

    git_warnings = gitstate.import_warnings(source.git, target)
    plan.warnings += git_warnings
    if git_warnings and not options.dry_run and options.interactive and options.ask is not None:
        question = "; ".join(git_warnings) + ". Import anyway?"
        if options.ask(question, ("yes", "no")) != "yes":
            raise BackendError("import cancelled; nothing was written")
    pathmap = _pathmap(source, sid, plan.sid, target, dirs, cfg.path_maps)
    renames = _file_history_names(source, pathmap)
    if options.dry_run:
        plan.warnings += _project_conflicts(source, target, dirs, options)
        plan.warnings += plan_memory(source, dirs.memory(folder), options,
                                     local_tag=host_tag(settings.hostname), dry_run=True).warnings
        return dataclasses.replace(_result(plan, "dry-run", sid), planned=plan.action)
    # Memory is decided (and consent asked) before anything is written, and written with
    # the session's files: all or nothing.
    memory = plan_memory(source, dirs.memory(folder), options,
                         local_tag=host_tag(settings.hostname))
    plan.warnings += memory.warnings
    if plan.action == "unchanged":
        history = _history_lines(source, dirs, Rewriter(pathmap), plan)
        with _Pending() as pending:
            _write_memory(memory.writes, pending)
            pending.commit()
        _append_history(dirs, history)
        _project_files(settings, source, dirs, plan, options)
        os.utime(plan.dest, None)
        return _result(plan, plan.action, sid)
    slugs = _plan_slugs(source, sid, plan.sid)
    rewriter = Rewriter(pathmap, old_sid=sid, new_sid=plan.sid, backup_names=renames,
                        literals=_slug_literals(*slugs) if slugs else ())
    # Everything is rewritten into temp files first: a line the rewriter refuses (bad input)
    # leaves nothing behind. Side files become visible before the transcript that names them.
    with _Pending() as pending:
        pending.folder(folder)
        fsutil.sweep_temps(folder)
        with pending.writer(plan.dest, fsync=True) as out:
            rewriter.copy(incoming, out)
        _write_side_files(settings, source, dirs, sid, plan, rewriter, renames, slugs, pending)
        _write_memory(memory.writes, pending)
        history = _history_lines(source, dirs, rewriter, plan)
        if plan.action in ("updated", "replaced"):
            plan.backups += _backup_session(settings, plan.dest, plan.sid)
        pending.commit()
    _append_history(dirs, history)
    _project_files(settings, source, dirs, plan, options)
    os.utime(plan.dest, None)
    return _result(plan, plan.action, sid)


class _Pending:
    """Temp files beside their destinations, renamed together by `commit` (the one written
    first, last); if the block fails before that, the temps and the folders made are removed."""

    def __init__(self) -> None:
        self._files: list[tuple[str, Path]] = []
        self._made: list[Path] = []
        self._done = False

    def __enter__(self) -> _Pending:
        return self

    def __exit__(self, *exc_info: object) -> None:
        if self._done:
            return
        for tmp, _dest in self._files:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(tmp)
        for made in reversed(self._made):
            with contextlib.suppress(OSError):
                made.rmdir()

    def folder(self, path: Path) -> None:
        """Make `path` (0700) and any missing parents, remembering which were made."""
        missing: list[Path] = []
        at = path
        while not os.path.lexists(at):
            missing.append(at)
            at = at.parent
        if not at.is_dir():
            raise NotADirectoryError(errno.ENOTDIR, os.strerror(errno.ENOTDIR), str(at))
        for made in reversed(missing):
            made.mkdir(mode=0o700)
            os.chmod(made, 0o700)
            self._made.append(made)

    @contextlib.contextmanager
    def writer(self, dest: Path, *, fsync: bool = False) -> Iterator[BinaryIO]:
        # Side files are many and small: not fsynced one by one (144 fsyncs cost 0.3 s).
        self.folder(dest.parent)
        with fsutil.temp_writer(dest, 0o600, fsync=fsync, parents=False) as (out, tmp):
            yield out
        self._files.append((tmp, dest))

    def copy(self, src: Path, dest: Path) -> None:
        with src.open("rb") as fh, self.writer(dest) as out:
            shutil.copyfileobj(fh, out, 1 << 20)

    def commit(self) -> None:
        for tmp, dest in [*self._files[1:], *self._files[:1]]:
            os.replace(tmp, dest)
        self._done = True


def _write_memory(writes: list[MemoryWrite], pending: _Pending) -> None:
    for write in writes:
        fsutil.sweep_temps(write.dest.parent)
        with pending.writer(write.dest) as out:
            out.write(write.data)


def _result(plan: _Plan, action: str, original: str) -> ImportResult:
    return ImportResult(
        session_id=plan.sid, project_dir=plan.target, action=action,
        transcript=plan.dest, backups=tuple(plan.backups), warnings=tuple(plan.warnings),
        original_session_id=original if plan.sid != original else None,
        origin=plan.origin or None, extra={"print_mode": plan.print_mode},
        last_activity=plan.last_activity,
    )


def _when(text: object) -> float | None:
    """An ISO time from the manifest as a POSIX timestamp; None if absent or not a time."""
    if not isinstance(text, str):
        return None
    try:
        moment = datetime.fromisoformat(text)
    except ValueError:
        return None
    return (moment if moment.tzinfo else moment.replace(tzinfo=UTC)).timestamp()


def _decide(
    settings: Settings, dirs: ClaudeDirs, sid: str, target: Path, dest: Path, incoming: Path,
    options: ImportOptions,
) -> _Plan:
    if not dest.exists():
        return _Plan(sid, target, dest, "created")
    relation = lineage.compare_files(dest, incoming)
    if relation is lineage.Relation.IDENTICAL:
        return _Plan(sid, target, dest, "unchanged")
    if relation is lineage.Relation.LOCAL_NEWER and not options.replace:
        return _Plan(sid, target, dest, "unchanged",
                     [f"the local copy of session {sid} is newer than the bundle's; kept it"])
    action = "updated" if relation is lineage.Relation.CONTINUED else "fork"
    if action == "fork":
        if options.replace:
            action = "replaced"
        elif options.interactive and options.ask is not None:
            choice = options.ask(
                f"session {sid} differs from the local copy (both have new messages)",
                ("fork", "replace", "cancel"),
            )
            if choice == "cancel":
                raise BackendError("import cancelled; nothing was written")
            action = "replaced" if choice == "replace" else "fork"
    if action == "fork":
        earlier = _earlier_fork(sid, target, dest, incoming)
        if earlier is not None:
            return _check_busy(dirs, earlier, options)
        new = str(uuid.uuid4())
        note = ("an import would make a fork with a new id" if options.dry_run
                else f"imported as a fork {new}")
        return _Plan(new, target, dest.with_name(f"{new}.jsonl"), "forked",
                     [f"session {sid} diverged from the local copy; {note}"])
    return _check_busy(dirs, _Plan(sid, target, dest, action), options)


def _check_busy(dirs: ClaudeDirs, plan: _Plan, options: ImportOptions) -> _Plan:
    """SessionBusy if `plan` rewrites a transcript a running claude is writing to."""
    if plan.action in ("updated", "replaced") and not options.dry_run:
        from commuter.backends.claude.procs import session_busy

        reason = session_busy(plan.dest, plan.sid, dirs.sessions_dir)
        if reason:
            raise SessionBusy(f"{reason}; quit it first, then import again")
    return plan


def _earlier_fork(sid: str, target: Path, dest: Path, incoming: Path) -> _Plan | None:
    """The plan for a diverged session that an earlier import already forked here.

    A fork keeps the entry uuids and gets a new session id, so it is found by its uuid
    chain among the folder's other transcripts: the same → nothing to do; a prefix of the
    incoming one → update that fork; newer → keep it. None: no fork of it yet.
    """
    chain = lineage.uuid_chain(incoming)
    if not chain:
        return None
    for other in sorted(dest.parent.glob("*.jsonl")):
        if other == dest or lineage.first_uuid(other) != chain[0]:
            continue
        relation = lineage.compare_chains(lineage.uuid_chain(other), chain)
        fork = other.stem
        if relation is lineage.Relation.DIVERGENT:
            continue
        if relation is lineage.Relation.CONTINUED:
            return _Plan(fork, target, other, "updated",
                         [f"session {sid} diverged from the local copy; updated its fork {fork}"])
        note = ("is the same as the bundle's" if relation is lineage.Relation.IDENTICAL
                else "is newer than the bundle's; kept it")
        return _Plan(fork, target, other, "unchanged",
                     [f"session {sid} was imported before as the fork {fork}, which {note}"])
    return None


def _pathmap(
    source: ImportSource, old_sid: str, new_sid: str, target: Path, dirs: ClaudeDirs,
    config_maps: list[tuple[str, str]],
) -> PathMap:
    pairs: list[tuple[str, str]] = []
    src_claude = source.meta.get("source_claude_dir")
    src_folder = source.meta.get("source_project_folder") or claude_project_folder(
        source.project_dir
    )
    dst_folder = dirs.project_folder(target)
    if isinstance(src_claude, str) and src_claude.startswith("/"):
        pairs.append((f"{src_claude}/projects/{src_folder}/{old_sid}", f"{dst_folder}/{new_sid}"))
        pairs.append((f"{src_claude}/projects/{src_folder}", str(dst_folder)))
        pairs.append((f"{src_claude}/file-history/{old_sid}", str(dirs.file_history(new_sid))))
        pairs.append((f"{src_claude}/tasks/{old_sid}", str(dirs.tasks(new_sid))))
        pairs.append((src_claude, str(dirs.root)))
    pairs.append((source.project_dir, str(target)))
    for a, b in config_maps:
        pairs += [(a, b), (b, a)]
    return PathMap.of(pairs)


def _file_history_names(source: ImportSource, pathmap: PathMap) -> dict[str, str]:
    """Old backup name -> new one, recomputed from the translated absolute path."""
    renames: dict[str, str] = {}
    paths = source.meta.get("file_history") or {}
    for member in source.members:
        if not member.startswith("file-history/"):
            continue
        name = member.split("/", 1)[1]
        absolute = paths.get(member) if isinstance(paths, dict) else None
        _stem, sep, version = name.partition("@")
        if not isinstance(absolute, str) or not sep:
            continue
        new = f"{backup_hash(pathmap.apply(absolute))}@{version}"
        if new != name and is_safe_name(new):
            renames[name] = new
    return renames


def _write_side_files(
    settings: Settings,
    source: ImportSource, dirs: ClaudeDirs, sid: str, plan: _Plan, rewriter: Rewriter,
    renames: dict[str, str],
    slugs: tuple[str, str] | None,
    pending: _Pending,
) -> None:
    session_prefix = f"session/{sid}/"
    slug = source.meta.get("plan_slug")
    side = plan.dest.parent / plan.sid
    fsutil.sweep_temps(*(side / sub for sub in SESSION_DIRS), dirs.file_history(plan.sid),
                       dirs.tasks(plan.sid), dirs.root / "plans")
    for member in source.members:
        src = source.member(member)
        if member.startswith(session_prefix):
            parts = member[len(session_prefix) :].split("/")
            if (parts[0] not in SESSION_DIRS or not 2 <= len(parts) <= MAX_SESSION_DEPTH + 2
                    or not all(is_safe_name(p) for p in parts)):
                continue
            dest = side.joinpath(*parts)
            if parts[-1].endswith((".jsonl", ".json")):  # transcripts, meta, workflow state
                with pending.writer(dest) as out:
                    rewriter.copy(src, out)
            else:
                pending.copy(src, dest)
        elif member.startswith("file-history/"):
            name = member.split("/", 1)[1]
            if is_safe_name(name):
                pending.copy(src, dirs.file_history(plan.sid) / renames.get(name, name))
        elif member.startswith("tasks/"):
            name = member.split("/", 1)[1]
            if is_safe_name(name) and name.endswith(".json"):
                pending.copy(src, dirs.tasks(plan.sid) / name)
        elif member.startswith("plans/"):
            name = member.split("/", 1)[1]
            stem = name.removesuffix(".md")
            if name.endswith(".md") and is_safe_slug(stem) and (slug in (None, stem)):
                dest = dirs.plan(slugs[1] if slugs else stem)  # slugs[0] is stem here
                if dest.is_file() and not filecmp.cmp(dest, src, shallow=False):
                    plan.backups.append(_backup_file(settings, dest, plan.sid))
                pending.copy(src, dest)


def _plan_slugs(source: ImportSource, sid: str, new_sid: str) -> tuple[str, str] | None:
    """(old, new) plan slug for a fork: its own plan file, so that the local session's plan is
    never changed by a fork of it. Derived from the fork's id, so a later update of the same
    fork finds it again. None when the session keeps its id or has no plan."""
    slug = source.meta.get("plan_slug")
    if new_sid == sid or not isinstance(slug, str) or not is_safe_slug(slug):
        return None
    forked = f"{slug}-{new_sid[:8]}"
    return (slug, forked) if is_safe_slug(forked) else None


def _slug_literals(old: str, new: str) -> list[tuple[bytes, bytes]]:
    """The transcript's `slug` fields and paths of the plan file, renamed."""
    return [(f'"slug":"{old}"'.encode(), f'"slug":"{new}"'.encode()),
            (f"/plans/{old}.md".encode(), f"/plans/{new}.md".encode())]


def _backup_dir(settings: Settings, sid: str) -> Path:
    stamp = time.strftime("%Y%m%dT%H%M%S", time.gmtime())
    path = settings.backups_dir / f"{stamp}-{sid}-{uuid.uuid4().hex[:6]}"
    path.mkdir(parents=True, mode=0o700)
    return path


def _backup_session(settings: Settings, transcript: Path, sid: str) -> list[Path]:
    """Copy the local transcript (and its session folder) to the backups dir."""
    folder = _backup_dir(settings, sid)
    shutil.copy2(transcript, folder / transcript.name)
    side = transcript.parent / sid
    if side.is_dir():
        shutil.copytree(side, folder / sid, symlinks=True)
    return [folder / transcript.name]


def _backup_file(settings: Settings, path: Path, sid: str) -> Path:
    dest = _backup_dir(settings, sid) / path.name
    shutil.copy2(path, dest)
    return dest


def _history_lines(
    source: ImportSource, dirs: ClaudeDirs, rewriter: Rewriter, plan: _Plan
) -> bytes:
    """The session's prompt-history lines to append, translated, without ones already there."""
    if "history.jsonl" not in source.members:
        return b""
    member = source.member("history.jsonl")
    if member.stat().st_size > MAX_HISTORY_MEMBER:
        plan.warnings.append("skipped the bundle's prompt history: larger than 16 MiB")
        return b""
    seen: set[tuple[object, ...]] = set()
    ends_with_newline = True
    try:
        with dirs.history.open("rb") as fh:
            for line in fh:
                if line.strip():
                    seen.add(_history_key(line.rstrip(b"\r\n")))
                ends_with_newline = line.endswith(b"\n")
    except FileNotFoundError:
        pass
    new: list[bytes] = []
    with member.open("rb") as fh:
        for raw in fh:
            line = raw.rstrip(b"\r\n")
            if not line.strip():
                continue
            out = rewriter.line(line)
            key = _history_key(out)
            if key not in seen:
                seen.add(key)
                new.append(out)
    if not new:
        return b""
    return (b"" if ends_with_newline else b"\n") + b"\n".join(new) + b"\n"


def _append_history(dirs: ClaudeDirs, data: bytes) -> None:
    """One O_APPEND write: lines a running claude appends meanwhile are never lost (the file
    is not rewritten)."""
    if not data:
        return
    dirs.history.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    fd = os.open(dirs.history, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
    try:
        view = memoryview(data)
        while view:
            view = view[os.write(fd, view):]
    finally:
        os.close(fd)


def _history_key(line: bytes) -> tuple[object, ...]:
    try:
        entry = orjson.loads(line)
    except orjson.JSONDecodeError:
        return (line,)
    if not isinstance(entry, dict):
        return (line,)
    return (entry.get("timestamp"), entry.get("sessionId"), str(entry.get("display")))


def _project_targets(
    source: ImportSource, target: Path, dirs: ClaudeDirs, warnings: list[str]
) -> list[tuple[Path, Path, str]]:
    """(member file, destination, relative name) of the project config a bundle may write."""
    out: list[tuple[Path, Path, str]] = []
    root = os.path.realpath(target)
    claude_root = os.path.realpath(dirs.root)
    for member in source.members:
        if not member.startswith("project/"):
            continue
        rel = member[len("project/") :]
        if rel not in ALLOWED_PROJECT and not rel.startswith(".claude/commands/"):
            continue
        if ".." in rel.split("/") or rel.startswith("/") or "\\" in rel:
            continue
        dest = target / rel
        real = os.path.realpath(dest)
        if not real.startswith(root + os.sep):
            continue
        if real == claude_root or real.startswith(claude_root + os.sep):
            # A session of ~ itself: its "project" config is Claude Code's own user config.
            warnings.append(f"did not write the bundle's {rel}: it would land in Claude Code's "
                            f"own config dir {dirs.root}")
            continue
        src = source.member(member)
        if src.stat().st_size > MAX_PROJECT_MEMBER:
            warnings.append(f"did not write the bundle's {rel}: larger than 1 MiB")
            continue
        out.append((src, dest, rel))
    return out


def _project_conflicts(
    source: ImportSource, target: Path, dirs: ClaudeDirs, options: ImportOptions
) -> list[str]:
    warnings: list[str] = []
    for src, dest, rel in _project_targets(source, target, dirs, warnings):
        if dest.is_file() and not filecmp.cmp(dest, src, shallow=False):
            warnings.append(f"{rel} differs from the local one (import keeps the local one "
                            "without --yes)")
        elif rel == SETTINGS and not dest.exists():
            warnings.append(f"the bundle brings {rel}, which can run commands (hooks); "
                            "import writes it only with --yes")
        elif not dest.exists() and not options.sender_verified:
            warnings.append(f"the bundle brings {rel} but is not sealed by a paired peer; "
                            "import writes it only with --yes")
    return warnings


def _project_files(
    settings: Settings, source: ImportSource, dirs: ClaudeDirs, plan: _Plan,
    options: ImportOptions,
) -> None:
    """Write project config. Replacing a different local file, or adding a settings.json
    (hooks run commands), takes consent: a yes on a terminal or --yes."""
    for src, dest, rel in _project_targets(source, plan.target, dirs, plan.warnings):
        data = src.read_bytes()
        if dest.is_file() and dest.read_bytes() == data:
            continue
        if dest.exists() and not dest.is_file():
            plan.warnings.append(f"kept your {rel}; it is not a regular file")
            continue
        replacing = dest.is_file()
        asks = replacing or rel == SETTINGS or not options.sender_verified
        if asks and not _consent(options, rel, replacing):
            plan.warnings.append(_kept(rel, replacing))
            continue
        if replacing:
            folder = _backup_dir(settings, plan.sid)
            (folder / rel).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(dest, folder / rel)
            plan.backups.append(folder / rel)
        dest.parent.mkdir(parents=True, exist_ok=True)
        fsutil.sweep_temps(dest.parent)
        mode = 0o644 if rel != SETTINGS else 0o600
        atomic_write_bytes(dest, data, mode)


def _kept(rel: str, replacing: bool) -> str:
    if replacing:
        return f"kept your {rel}; the bundle's differs (--yes takes it)"
    if rel == SETTINGS:
        return f"did not write the bundle's {rel}: it can run commands (hooks); --yes takes it"
    return (f"did not write the bundle's {rel}: the bundle is not sealed by a paired peer "
            "(--yes takes it)")


def _consent(options: ImportOptions, rel: str, replacing: bool) -> bool:
    if options.assume_yes:
        return True
    if not (options.interactive and options.ask is not None):
        return False
    kind = "can run commands (hooks)" if rel == SETTINGS else "steers claude"
    unsealed = "" if options.sender_verified else " (not sealed by a paired peer)"
    question = (f"the bundle's {rel} differs from yours and {kind}; replace yours?" if replacing
                else f"the bundle{unsealed} brings {rel}, which {kind}; write it?")
    return options.ask(question, ("no", "yes")) == "yes"
