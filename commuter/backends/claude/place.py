"""Place an unpacked Claude Code session on this machine: decide, back up, rewrite, write."""

from __future__ import annotations

import dataclasses
import filecmp
import os
import shutil
import tempfile
import uuid
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

import orjson

from commuter import forks, fsutil
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
from commuter.model import ImportOptions, ImportResult
from commuter.pathmap import PathMap
from commuter.placing import (
    Backups,
    Pending,
    ProjectConfig,
    Sides,
    Target,
    confirm_git_state,
    divergence_action,
    project_conflicts,
    resolve_target,
    write_project_files,
)
from commuter.settings import Settings

SETTINGS = ".claude/settings.json"
ALLOWED_PROJECT = (SETTINGS, "CLAUDE.md")
PROJECT_DIRS = (".claude/commands",)
# Export carries the session's own history lines; a bundle with more is not one commuter
# made, and the member is read whole.
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
    # The local transcript will hold exactly the bundle's session under its own id (the base
    # a later delta from the same sender builds on: core records it).
    in_step: bool = False
    written: tuple[int, str] | None = None  # (size, sha256) of `dest` as written, if known
    # Convergence: the local copy of `sid` moves to this fork id before the bundle takes `sid`.
    moved_to: str | None = None
    fork_of: str | None = None  # a fork: the session it split from (default: the bundle's)


def place(
    settings: Settings,
    source: ImportSource,
    options: ImportOptions,
    *,
    move_to: str | None = None,
) -> ImportResult:
    """Decide what to do with the incoming session, then write it (see docs/architecture.md).

    `move_to`: `source` is this machine's own copy of the session (`_move_local`), to be
    written again under the fork id `move_to` (no config path-maps: its paths are local)."""
    sid = check_session_id(source.session_id)
    if not source.project_dir.startswith("/"):
        raise BundleError(f"bundle names a relative project dir {source.project_dir!r}")
    incoming = source.member(f"session/{sid}.jsonl")
    if not incoming.is_file():
        raise BundleError(f"bundle has no transcript session/{sid}.jsonl")
    if move_to is None:
        where = resolve_target(settings, source, options)
    else:
        where = Target(Path(source.project_dir), ())
    target = where.project
    dirs = ClaudeDirs.of(settings)
    backups = Backups(settings)
    folder = dirs.project_folder(target)
    if move_to is None:
        plan = _decide(settings, dirs, sid, target, folder / f"{sid}.jsonl", incoming, options)
    else:
        plan = _move_plan(dirs, sid, move_to, target, folder, incoming)
    plan.origin = source.origin
    plan.last_activity = _when(source.meta.get("last_activity"))
    plan.print_mode = read_entrypoint(incoming) == "sdk-cli"
    plan.warnings += confirm_git_state(source, target, options)
    pathmap = _pathmap(source, sid, plan.sid, target, dirs, where.path_maps)
    renames = _file_history_names(source, pathmap)
    config = project_config(dirs)
    if options.dry_run:
        plan.warnings += project_conflicts(source, target, config, options)
        plan.warnings += plan_memory(
            source,
            dirs.memory(folder),
            options,
            local_tag=host_tag(settings.hostname),
            dry_run=True,
        ).warnings
        return dataclasses.replace(_result(plan, "dry-run", sid), planned=plan.action)
    # Memory is decided (and consent asked) before anything is written, and written with
    # the session's files: all or nothing.
    memory = plan_memory(
        source, dirs.memory(folder), options, local_tag=host_tag(settings.hostname)
    )
    plan.warnings += memory.warnings
    if plan.action == "unchanged":
        history = _history_lines(source, dirs, Rewriter(pathmap), plan)
        with Pending() as pending:
            _write_memory(memory.writes, pending)
            pending.commit()
        return finish(source, plan, dirs, history, config, options, backups, sid)
    if plan.moved_to is not None:  # the local branch goes to its fork first, then X is replaced
        moved = _move_local(settings, plan, source.origin)
        plan.backups += moved.backups
    slugs = _plan_slugs(source, sid, plan.sid)
    rewriter = Rewriter(
        pathmap,
        old_sid=sid,
        new_sid=plan.sid,
        backup_names=renames,
        literals=_slug_literals(*slugs) if slugs else (),
    )
    # Everything is rewritten into temp files first: a line the rewriter refuses (bad input)
    # leaves nothing behind. Side files become visible before the transcript that names them.
    with Pending() as pending:
        pending.folder(folder)
        fsutil.sweep_temps(folder)
        with pending.writer(plan.dest, fsync=True) as out:
            rewriter.copy(incoming, out)
        _write_side_files(backups, source, dirs, sid, plan, rewriter, renames, slugs, pending)
        _write_memory(memory.writes, pending)
        history = _history_lines(source, dirs, rewriter, plan)
        if plan.action in ("updated", "replaced"):
            plan.backups.append(backups.session(plan.sid, plan.dest, plan.dest.parent / plan.sid))
        pending.commit()
    result = finish(source, plan, dirs, history, config, options, backups, sid)
    if plan.action == "forked":  # `list` shows it as "fork of <sid> from <host>"
        forks.record(
            settings.state_dir,
            "claude",
            plan.sid,
            plan.fork_of or sid,
            _origin_host(source.origin),
        )
    return result


def finish(
    source: ImportSource,
    plan: _Plan,
    dirs: ClaudeDirs,
    history: bytes,
    config: ProjectConfig,
    options: ImportOptions,
    backups: Backups,
    original: str,
) -> ImportResult:
    """What every placement ends with once the session's own files are committed: its
    history lines appended, the project files written, the transcript's mtime made now
    (`claude --continue` takes the newest), and the result."""
    _append_history(dirs, history)
    write_project_files(
        source,
        plan.target,
        config,
        options,
        backups=backups,
        sid=plan.sid,
        warnings=plan.warnings,
        backed_up=plan.backups,
    )
    os.utime(plan.dest, None)
    return _result(plan, plan.action, original)


def _origin_host(origin: str) -> str:
    """The host of an origin text `user@host time` (what core.source_from writes)."""
    return origin.split(" ", 1)[0].rpartition("@")[2] or "another machine"


def project_config(dirs: ClaudeDirs) -> ProjectConfig:
    """The project files Claude Code reads, never inside its own config dir."""
    return ProjectConfig(
        files=ALLOWED_PROJECT,
        dirs=PROJECT_DIRS,
        runs_commands=(SETTINGS,),
        steers="steers claude",
        runs="can run commands (hooks)",
        own_dir=dirs.root,
        own_dir_name="Claude Code's own config dir",
    )


def _write_memory(writes: list[MemoryWrite], pending: Pending) -> None:
    for write in writes:
        fsutil.sweep_temps(write.dest.parent)
        with pending.writer(write.dest) as out:
            out.write(write.data)


def _result(plan: _Plan, action: str, original: str) -> ImportResult:
    return ImportResult(
        session_id=plan.sid,
        project_dir=plan.target,
        action=action,
        transcript=plan.dest,
        backups=tuple(plan.backups),
        warnings=tuple(plan.warnings),
        original_session_id=original if plan.sid != original else None,
        origin=plan.origin or None,
        extra={"print_mode": plan.print_mode, **_in_step(plan, action, original)},
        last_activity=plan.last_activity,
    )


def _in_step(plan: _Plan, action: str, original: str) -> dict[str, object]:
    """`in_step` and the transcript's size, when it now holds exactly the bundle's session."""
    if not plan.in_step or plan.sid != original or action == "dry-run":
        return {}
    try:
        size = plan.dest.stat().st_size
    except OSError:
        return {}
    extra: dict[str, object] = {"in_step": True, "in_step_size": size}
    if plan.written is not None and plan.written[0] == size:
        extra["in_step_sha256"] = plan.written[1]
    return extra


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
    settings: Settings,
    dirs: ClaudeDirs,
    sid: str,
    target: Path,
    dest: Path,
    incoming: Path,
    options: ImportOptions,
) -> _Plan:
    if not dest.exists():
        return _Plan(sid, target, dest, "created", in_step=True)
    relation = lineage.compare_files(dest, incoming)
    if relation is lineage.Relation.IDENTICAL:
        return _Plan(sid, target, dest, "unchanged", in_step=True)
    if relation is lineage.Relation.LOCAL_NEWER and not options.replace:
        return _Plan(
            sid,
            target,
            dest,
            "unchanged",
            [f"the local copy of session {sid} is newer than the bundle's; kept it"],
        )
    if relation is lineage.Relation.CONTINUED:
        return _check_busy(dirs, _Plan(sid, target, dest, "updated", in_step=True), options)
    asks = options.interactive and options.ask is not None
    if relation is lineage.Relation.DIVERGENT and not options.replace and not asks:
        return _converge(dirs, sid, sid, target, dest, incoming, options)
    action = divergence_action(sid, options, lambda: _sides(dest, incoming))
    if action == "fork":  # a person chose it: the bundle's branch is the fork
        div = lineage.divergence(lineage.uuid_chain(dest), lineage.uuid_chain(incoming))
        entry = div.incoming if div is not None else uuid.uuid4().hex.encode()
        return _fork(dirs, sid, sid, target, dest, incoming, options, entry, 0)
    return _check_busy(dirs, _Plan(sid, target, dest, action, in_step=True), options)


MAX_CONVERGE_DEPTH = 4  # a fork of a fork of ...: past this, a fork with a fresh id


def _converge(
    dirs: ClaudeDirs,
    sid: str,
    local_sid: str,
    target: Path,
    dest: Path,
    incoming: Path,
    options: ImportOptions,
    depth: int = 0,
) -> _Plan:
    """Non-interactive divergence of the bundle's `sid` from the local `local_sid` (at
    `dest`): the rule of `lineage.incoming_keeps_id` decides, alike on both machines, which
    branch keeps the id; the other becomes the fork `lineage.fork_id(local_sid, its first
    divergent entry)`. When that is the local branch, it is written under the fork id first
    and the bundle's replaces it (after a backup), unless a claude holds it (SessionBusy:
    both stay as they are and a later import finishes it)."""
    chains = lineage.uuid_chain(dest), lineage.uuid_chain(incoming)
    div = lineage.divergence(*chains)
    if div is None:  # cannot be: the caller found them divergent
        raise BundleError(f"session {sid}: the two copies are not divergent")
    if not lineage.incoming_keeps_id(dest, incoming, div):
        return _fork(dirs, sid, local_sid, target, dest, incoming, options, div.incoming, depth)
    fork = lineage.fork_id(local_sid, div.local)
    note = "an import would move" if options.dry_run else "moved"
    plan = _Plan(
        local_sid,
        target,
        dest,
        "replaced",
        [
            f"session {local_sid} diverged from the bundle's; the bundle's branch began first, "
            f"so it keeps the id, and the local branch ({note}) continues as the fork {fork}"
        ],
        in_step=local_sid == sid,
        moved_to=fork,
    )
    return _check_busy(dirs, plan, options)


def _fork(
    dirs: ClaudeDirs,
    sid: str,
    local_sid: str,
    target: Path,
    dest: Path,
    incoming: Path,
    options: ImportOptions,
    entry: bytes,
    depth: int,
) -> _Plan:
    """The bundle's branch as the fork `lineage.fork_id(local_sid, entry)`: made, found again
    (the same, older, or continued: never a second fork of one divergence), or, when that
    fork itself went on here too, decided again by the same rule one level down."""
    fork = lineage.fork_id(local_sid, entry)
    at = dest.with_name(f"{fork}.jsonl")
    if depth >= MAX_CONVERGE_DEPTH or (at.exists() and at == dest):
        fork = str(uuid.uuid4())
        at = dest.with_name(f"{fork}.jsonl")
    if at.exists():
        relation = lineage.compare_files(at, incoming)
        if relation is lineage.Relation.DIVERGENT:
            asks = options.interactive and options.ask is not None
            if not asks:
                return _converge(dirs, sid, fork, target, at, incoming, options, depth + 1)
            return _fork(dirs, sid, fork, target, at, incoming, options, entry, depth + 1)
        if relation is lineage.Relation.CONTINUED:
            plan = _Plan(
                fork,
                target,
                at,
                "updated",
                [f"session {sid} diverged from the local copy; updated its fork {fork}"],
                fork_of=local_sid,
            )
            return _check_busy(dirs, plan, options)
        which = "is the same as" if relation is lineage.Relation.IDENTICAL else "is newer than"
        return _Plan(
            fork,
            target,
            at,
            "unchanged",
            [f"session {sid} was imported before as the fork {fork}, which {which} the bundle's"],
        )
    earlier = _earlier_fork(sid, target, dest, incoming)  # a fork made with a random id
    if earlier is not None:
        return _check_busy(dirs, earlier, options)
    note = "an import would make the fork" if options.dry_run else "imported as the fork"
    return _Plan(
        fork,
        target,
        at,
        "forked",
        [f"session {local_sid} diverged from the local copy; {note} {fork}"],
        fork_of=local_sid,
    )


def _move_plan(
    dirs: ClaudeDirs, sid: str, fork: str, target: Path, folder: Path, local: Path
) -> _Plan:
    """The local copy of `sid` written again as its fork `fork` (or that fork brought up to
    date, when an earlier, interrupted move wrote part of it)."""
    at = folder / f"{fork}.jsonl"
    if not at.exists():
        return _Plan(fork, target, at, "forked", fork_of=sid)
    relation = lineage.compare_files(at, local)
    if relation is lineage.Relation.CONTINUED:
        return _check_busy(dirs, _Plan(fork, target, at, "updated", fork_of=sid), ImportOptions())
    if relation is lineage.Relation.DIVERGENT:
        raise BackendError(
            f"session {sid} should continue as the fork {fork}, but {at} holds another "
            "conversation; kept both as they are"
        )
    return _Plan(fork, target, at, "unchanged", fork_of=sid)


@dataclass(frozen=True, slots=True)
class _LocalSource(ImportSource):
    """This machine's own copy of a session as an ImportSource: members are its files."""

    paths: dict[str, Path] = field(default_factory=dict)

    def member(self, name: str) -> Path:
        return self.paths[name]


def _move_local(settings: Settings, plan: _Plan, origin: str) -> ImportResult:
    """Write the local session `plan.sid` again as its fork `plan.moved_to` (a new file; the
    local one is left to the import that replaces it after a backup) and record the fork."""
    from commuter.backends import get_backend  # by name: no import cycle with the package

    assert plan.moved_to is not None
    backend = get_backend("claude", settings)
    ref = backend.find(plan.sid, plan.target)
    if ref.path is None or ref.path.resolve() != plan.dest.resolve():
        raise BackendError(f"session {plan.sid} is not only at {plan.dest}; kept both as they are")
    export = backend.collect(ref)
    settings.staging_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
    tmp = Path(tempfile.mkdtemp(prefix="move-", dir=settings.staging_dir))
    try:
        paths: dict[str, Path] = {}
        for n, (name, src) in enumerate(export.scanned_members()):
            if isinstance(src, bytes):
                path = tmp / f"m{n}"
                path.write_bytes(src)
                src = path
            paths[name] = src
        local = _LocalSource(
            session_id=plan.sid,
            project_dir=str(plan.target),
            root=tmp,
            members=tuple(paths),
            git=export.git,
            meta=export.meta,
            origin=origin,
            paths=paths,
        )
        options = ImportOptions(project_dir=plan.target, assume_yes=True, sender_verified=True)
        result = place(settings, local, options, move_to=plan.moved_to)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    forks.record(settings.state_dir, "claude", plan.moved_to, plan.sid, _origin_host(origin))
    return result


def _sides(local: Path, incoming: Path) -> Sides:
    """Message counts and last prompts of both copies, for the divergence question."""
    from commuter.backends.claude.paths import _prompt_text

    def read(path: Path) -> tuple[list[str], str | None]:
        ids: list[str] = []
        prompt: str | None = None
        with path.open("rb") as fh:
            for line in fh:
                if b'"type":"user"' not in line and b'"type":"assistant"' not in line:
                    continue
                try:
                    entry = orjson.loads(line)
                except orjson.JSONDecodeError:
                    continue
                if not isinstance(entry, dict) or entry.get("type") not in ("user", "assistant"):
                    continue
                ids.append(str(entry.get("uuid")))
                if entry.get("type") == "user" and not entry.get("isMeta"):
                    prompt = _prompt_text(entry.get("message")) or prompt
        return ids, prompt

    mine, my_prompt = read(local)
    theirs, their_prompt = read(incoming)
    known = set(theirs)
    lost = sum(1 for i in mine if i not in known)
    return Sides(len(mine), my_prompt, len(theirs), their_prompt, lost)


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
            return _Plan(
                fork,
                target,
                other,
                "updated",
                [f"session {sid} diverged from the local copy; updated its fork {fork}"],
            )
        note = (
            "is the same as the bundle's"
            if relation is lineage.Relation.IDENTICAL
            else "is newer than the bundle's; kept it"
        )
        return _Plan(
            fork,
            target,
            other,
            "unchanged",
            [f"session {sid} was imported before as the fork {fork}, which {note}"],
        )
    return None


def _pathmap(
    source: ImportSource,
    old_sid: str,
    new_sid: str,
    target: Path,
    dirs: ClaudeDirs,
    config_maps: Iterable[tuple[str, str]],
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
    """Old backup name -> new one, recomputed from the translated absolute path: for every
    backup the transcript names (those the bundle carries and the others, as the one-pass
    import, which finds them in the transcript, does)."""
    renames: dict[str, str] = {}
    paths = source.meta.get("file_history") or {}
    for member in paths if isinstance(paths, dict) else ():
        if not member.startswith("file-history/"):
            continue
        name = member.split("/", 1)[1]
        absolute = paths.get(member)
        _stem, sep, version = name.partition("@")
        if not isinstance(absolute, str) or not sep:
            continue
        new = f"{backup_hash(pathmap.apply(absolute))}@{version}"
        if new != name and is_safe_name(new):
            renames[name] = new
    return renames


def _write_side_files(
    backups: Backups,
    source: ImportSource,
    dirs: ClaudeDirs,
    sid: str,
    plan: _Plan,
    rewriter: Rewriter,
    renames: dict[str, str],
    slugs: tuple[str, str] | None,
    pending: Pending,
) -> None:
    session_prefix = f"session/{sid}/"
    slug = source.meta.get("plan_slug")
    side = plan.dest.parent / plan.sid
    fsutil.sweep_temps(
        *(side / sub for sub in SESSION_DIRS),
        dirs.file_history(plan.sid),
        dirs.tasks(plan.sid),
        dirs.root / "plans",
    )
    for member in source.members:
        src = source.member(member)
        if member.startswith(session_prefix):
            parts = member[len(session_prefix) :].split("/")
            if (
                parts[0] not in SESSION_DIRS
                or not 2 <= len(parts) <= MAX_SESSION_DEPTH + 2
                or not all(is_safe_name(p) for p in parts)
            ):
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
                    plan.backups.append(backups.file(plan.sid, dest))
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
    return [
        (f'"slug":"{old}"'.encode(), f'"slug":"{new}"'.encode()),
        (f"/plans/{old}.md".encode(), f"/plans/{new}.md".encode()),
    ]


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
            view = view[os.write(fd, view) :]
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
