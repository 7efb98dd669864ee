"""Place an unpacked Gemini CLI chat: pick the target project's slug folder (gemini's own
rule), decide by message ids, back up, rewrite paths, write all files together."""

from __future__ import annotations

import contextlib
import dataclasses
import json
import os
import time
import uuid
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path

from commuter import forks, fsutil
from commuter.backends import ImportSource
from commuter.backends.gemini.chat import (
    SUB_RE,
    Chat,
    ChatFile,
    GeminiDirs,
    Rewriter,
    chat_files,
    claim_slug,
    file_name,
    is_session_id,
    iso_ms,
    marker,
    now_iso,
    parse_time,
    read_chat,
    read_projects,
    slug_of,
)
from commuter.backends.gemini.lineage import (
    Relation,
    divergence,
    fork_id,
    incoming_keeps_id,
    order_entry,
    relation,
)
from commuter.errors import BackendError, BundleError, SessionBusy
from commuter.model import ImportOptions, ImportResult
from commuter.placing import (
    Backups,
    Pending,
    ProjectConfig,
    Sides,
    confirm_git_state,
    divergence_action,
    project_conflicts,
    resolve_target,
    write_project_files,
)
from commuter.settings import Settings


def _real_ids(chat: Chat) -> list[str]:
    """Message ids without the `<session_context>` one (the same id in every chat)."""
    from commuter.backends.gemini.chat import _is_context

    return [m for m in chat.ids if not _is_context(chat.messages[m])]


@dataclass(slots=True)
class _Plan:
    sid: str
    dest: Path
    action: str
    warnings: list[str] = field(default_factory=list)
    backups: list[Path] = field(default_factory=list)
    fork_of: str | None = None  # a fork: the session it split from
    # Convergence: the local chat of `sid` (at `dest`) moves to this fork id first, then the
    # bundle's replaces it.
    moved_to: str | None = None


def place(
    settings: Settings, dirs: GeminiDirs, source: ImportSource, options: ImportOptions
) -> ImportResult:
    sid = source.session_id
    if not is_session_id(sid):
        raise BundleError(f"bundle names a session id {sid!r} that is not a Gemini CLI one")
    if not source.project_dir.startswith("/"):
        raise BundleError(f"bundle names a relative project dir {source.project_dir!r}")
    names = [n for n in (f"session/{sid}.jsonl", f"session/{sid}.json") if n in source.members]
    if not names or not source.member(names[0]).is_file():
        raise BundleError(f"bundle has no chat session/{sid}.jsonl")
    incoming_path = source.member(names[0])
    try:
        incoming = read_chat(incoming_path)
    except (OSError, UnicodeDecodeError, RecursionError) as exc:
        raise BundleError(f"bundle's chat does not read as one ({exc})") from exc
    if incoming.session_id != sid or incoming.kind == "subagent":
        raise BundleError(f"bundle's chat is not the main chat of session {sid}")
    subs = [
        n
        for n in source.members
        if n.startswith(f"session/{sid}/")
        and SUB_RE.match(n.rsplit("/", 1)[1])
        and n.count("/") == 2
        and ".." not in n
    ]

    where = resolve_target(settings, source, options)
    target = Path(os.path.realpath(where.project))
    project = str(target)
    slug = slug_of(dirs, project) or claim_slug(dirs, project)
    folder = dirs.tmp / slug
    chats = folder / "chats"
    plan = _decide(dirs, folder, sid, incoming, incoming_path.suffix, options)
    for path in (
        dirs.root,
        dirs.tmp,
        folder,
        chats,
        chats / plan.sid,
        dirs.history,
        dirs.history / slug,
        dirs.projects_json,
        plan.dest,
        *((chats / plan.moved_to,) if plan.moved_to else ()),
    ):
        if path.is_symlink():
            raise BackendError(f"{path} is a symlink; not writing through it")
    move = _move_target(dirs, folder, plan) if plan.moved_to else None
    plan.warnings += confirm_git_state(source, target, options)
    if plan.action in ("updated", "replaced") and not options.dry_run:
        from commuter.backends.gemini.procs import busy_pids

        pids = busy_pids(project)
        if pids:
            raise SessionBusy(
                f"gemini is running in {project} (pid {pids[0]}) and may be "
                f"writing to session {plan.sid}; quit it first, then import again"
            )
    config = project_config(dirs)
    backups = Backups(settings)
    if options.dry_run:
        plan.warnings += project_conflicts(source, target, config, options)
        return dataclasses.replace(
            _result(plan, project, "dry-run", sid, source), planned=plan.action
        )
    if plan.action == "unchanged":
        _defuse_cleanup(dirs, settings, plan)
        write_project_files(
            source,
            target,
            config,
            options,
            backups=backups,
            sid=plan.sid,
            warnings=plan.warnings,
            backed_up=plan.backups,
        )
        return _result(plan, project, plan.action, sid, source)

    rewriter = rewriter_for(dirs, source, folder, project, where.path_maps, plan.sid)
    start = start_after(dirs, chats, plan.sid, incoming.start_time)
    _projects_json(dirs, project, slug)  # a projects.json we would not change: stop here
    with Pending() as pending:
        pending.folder(chats)
        fsutil.sweep_temps(chats)
        try:
            with pending.writer(plan.dest, fsync=True) as out:
                rewriter.copy(incoming_path, out, touch=_later(incoming), start=start)
                if plan.dest.suffix == ".jsonl":
                    # gemini's cleanup deletes chats not updated for 30 days: the import is an
                    # update here. `--resume latest` takes the newest startTime: the placed
                    # chat starts after every other chat of the project (as `claude
                    # --continue` takes an import, by its mtime).
                    update = {"lastUpdated": _later(incoming)}
                    if start:
                        update["startTime"] = start
                    out.write(json.dumps({"$set": update}).encode() + b"\n")
            for name in subs:
                dest = chats / plan.sid / name.rsplit("/", 1)[1]
                with pending.writer(dest) as out:
                    rewriter.copy(source.member(name), out)
            moved = _write_move(pending, chats, plan, move) if move is not None else []
        except RecursionError as exc:
            raise BundleError("bundle's chat nests too deep") from exc
        for base in (dirs.tmp, dirs.history):
            if marker(base / slug) is None:
                with pending.writer(base / slug / ".project_root") as out:
                    out.write(project.encode())
        if plan.action == "created" and plan.dest.is_file():  # a message-less file there
            plan.backups.append(backups.file(plan.sid, plan.dest))
        if plan.action in ("updated", "replaced"):
            plan.backups.append(backups.session(plan.sid, plan.dest, chats / plan.sid))
        pending.commit()
    for made in (folder / ".project_root", dirs.history / slug / ".project_root"):
        if made.exists():
            os.chmod(made, 0o644)
    host = _origin_host(source.origin)
    if plan.moved_to is not None:
        # the local branch's subagent chats now live beside its fork (and in the backup)
        theirs = {n.rsplit("/", 1)[1] for n in subs}
        for name in moved:
            if name not in theirs:
                with contextlib.suppress(OSError):
                    (chats / plan.sid / name).unlink()
        forks.record(settings.state_dir, "gemini", plan.moved_to, plan.sid, host)
    if plan.action == "forked":  # `list` shows it as "fork of <sid> from <host>"
        forks.record(settings.state_dir, "gemini", plan.sid, plan.fork_of or sid, host)
    _register(dirs, project, slug, plan.warnings)
    _defuse_cleanup(dirs, settings, plan)
    write_project_files(
        source,
        target,
        config,
        options,
        backups=backups,
        sid=plan.sid,
        warnings=plan.warnings,
        backed_up=plan.backups,
    )
    return _result(plan, project, plan.action, sid, source)


def rewriter_for(
    dirs: GeminiDirs,
    source: ImportSource,
    folder: Path,
    project: str,
    path_maps: Sequence[tuple[str, str]],
    new_sid: str,
) -> Rewriter:
    """The path (and session id) rewrite of a bundle's chat placed in `folder`."""
    pairs: list[tuple[str, str]] = []
    meta = source.meta
    if isinstance(meta.get("source_temp_dir"), str):
        pairs.append((meta["source_temp_dir"], str(folder)))
    if isinstance(meta.get("source_gemini_dir"), str):
        pairs.append((meta["source_gemini_dir"], str(dirs.root)))
    pairs.append((source.project_dir, project))
    for a, b in path_maps:
        pairs += [(a, b), (b, a)]
    return Rewriter(pairs, old_sid=source.session_id, new_sid=new_sid)


def _origin_host(origin: str) -> str:
    """The host of an origin text `user@host time` (what core.source_from writes)."""
    return origin.split(" ", 1)[0].rpartition("@")[2] or "another machine"


def _move_target(dirs: GeminiDirs, folder: Path, plan: _Plan) -> Path | None:
    """Where the local chat `plan.dest` goes as its fork `plan.moved_to`: a new file named
    by its start minute, or the fork's file an earlier, interrupted move wrote (which the
    local chat continues or equals); None when that fork already holds all of it and more;
    BackendError if it holds another conversation."""
    assert plan.moved_to is not None
    local = read_chat(plan.dest)
    there = _local(dirs, folder, plan.moved_to)
    if there is None:
        return folder / "chats" / file_name(local.start_time, plan.moved_to, plan.dest.suffix)
    rel = relation(_real_ids(there.chat), _real_ids(local))
    if rel is Relation.LOCAL_NEWER:
        return None
    if rel is Relation.DIVERGENT:
        raise BackendError(
            f"session {plan.sid} should continue as the fork {plan.moved_to}, but "
            f"{there.path} holds another conversation; kept both as they are"
        )
    return there.path


def _write_move(pending: Pending, chats: Path, plan: _Plan, dest: Path) -> list[str]:
    """Write the local chat of `plan.sid` again as its fork `plan.moved_to` at `dest`, with
    its subagent chats; returns the subagent chats' names."""
    assert plan.moved_to is not None
    with pending.writer(dest, fsync=True) as out:
        Rewriter([], old_sid=plan.sid, new_sid=plan.moved_to).copy(plan.dest, out)
    names: list[str] = []
    subs = chats / plan.sid
    if subs.is_dir() and not subs.is_symlink():
        for name in sorted(_names(subs)):
            src = subs / name
            if SUB_RE.match(name) and src.is_file() and not src.is_symlink():
                pending.copy(src, chats / plan.moved_to / name)
                names.append(name)
    return names


def project_config(dirs: GeminiDirs) -> ProjectConfig:
    """The project files gemini reads, never inside its own dir (a chat of ~ itself)."""
    return ProjectConfig(
        files=("GEMINI.md", ".gemini/settings.json"),
        dirs=(".gemini/commands",),
        runs_commands=(".gemini/settings.json",),
        steers="steers gemini",
        runs="can run commands (hooks, MCP servers)",
        own_dir=dirs.root,
        own_dir_name="Gemini CLI's own dir",
    )


def start_after(dirs: GeminiDirs, chats: Path, sid: str, start: str) -> str | None:
    """A startTime for chat `sid` later than every other main chat's in `chats` (what `gemini
    --resume latest` sorts by), or None when `start` already is."""
    others = [
        moment
        for cf in chat_files(dirs, chats.parent)
        if cf.chat.session_id != sid and cf.chat.has_messages
        for moment in [parse_time(cf.chat.start_time)]
        if moment is not None
    ]
    mine = parse_time(start)
    if not others or (mine is not None and mine > max(others)):
        return None
    return iso_ms(max(others) + timedelta(milliseconds=1))


_WRITTEN = ("created", "updated", "forked", "replaced")


def arrange(dirs: GeminiDirs, results: Sequence[ImportResult]) -> None:
    """Several chats one pull placed in one project: their startTimes follow the order they
    were last active at their source (the newest last, so `--resume latest` takes it), each
    after every other chat there. A `$set` line is appended to each (gemini merges it)."""
    groups: dict[Path, list[ImportResult]] = {}
    for res in results:
        path = res.transcript
        if res.action in _WRITTEN and path is not None and path.suffix == ".jsonl":
            groups.setdefault(path.parent, []).append(res)
    for chats, placed in groups.items():
        if len(placed) < 2:
            continue
        placed.sort(key=lambda res: res.last_activity or 0.0)  # stable: ties keep import order
        starts = [
            parse_time(cf.chat.start_time)
            for cf in chat_files(dirs, chats.parent)
            if cf.chat.has_messages
        ]
        base = max((m for m in starts if m is not None), default=datetime.now(UTC))
        for n, res in enumerate(placed, 1):
            assert res.transcript is not None
            update = {"$set": {"startTime": iso_ms(base + timedelta(milliseconds=n))}}
            with contextlib.suppress(OSError):
                fd = os.open(res.transcript, os.O_WRONLY | os.O_APPEND | os.O_NOFOLLOW)
                with os.fdopen(fd, "ab") as out:
                    out.write(json.dumps(update).encode() + b"\n")


def _later(chat: Chat) -> str:
    now = now_iso()
    last = parse_time(chat.last_updated)
    return chat.last_updated if last is not None and chat.last_updated > now else now


LOCK_STALE = 10.0  # proper-lockfile's default: an older lock is a dead writer's
LOCK_WAIT = LOCK_STALE + 2.0  # a lock left by a writer that died is waited out, then taken


def _register(dirs: GeminiDirs, project: str, slug: str, warnings: list[str]) -> None:
    """Add `project` → `slug` to projects.json under gemini's own lock (proper-lockfile: the
    directory `projects.json.lock`), re-read inside it so an entry a running gemini just
    added is kept; written to a temp file and renamed. Without it gemini still finds the
    chat by the folder's `.project_root`, so a failure here is a warning."""
    lock = dirs.projects_json.with_name(dirs.projects_json.name + ".lock")
    deadline = time.monotonic() + LOCK_WAIT
    while True:
        try:
            os.mkdir(lock)
            break
        except FileExistsError:
            try:
                stale = time.time() - lock.stat().st_mtime > LOCK_STALE
            except OSError:
                continue
            if stale:
                with contextlib.suppress(OSError):
                    os.rmdir(lock)
                continue
            if time.monotonic() > deadline:
                warnings.append(
                    f"{dirs.projects_json} stayed locked; gemini finds the chat "
                    "by its folder's .project_root"
                )
                return
            time.sleep(0.05)
    try:
        data = _projects_json(dirs, project, slug)
        if data is not None:
            fsutil.sweep_temps(dirs.root)
            fsutil.atomic_write_bytes(dirs.projects_json, data, 0o600)
    except (BackendError, OSError) as exc:
        warnings.append(f"did not register the project in {dirs.projects_json} ({exc})")
    finally:
        with contextlib.suppress(OSError):
            os.rmdir(lock)


def _projects_json(dirs: GeminiDirs, project: str, slug: str) -> bytes | None:
    """projects.json with `project` → `slug` added (every other entry and key kept), or None
    when it is there already."""
    try:
        data = json.loads(dirs.projects_json.read_text(encoding="utf-8"))
    except FileNotFoundError:
        data = {}
    except (OSError, ValueError) as exc:
        raise BackendError(
            f"{dirs.projects_json} does not read as JSON ({exc}); not changing it"
        ) from exc
    if not isinstance(data, dict):
        raise BackendError(f"{dirs.projects_json} is not a JSON object; not changing it")
    projects = data.setdefault("projects", {})
    if not isinstance(projects, dict):
        raise BackendError(f"{dirs.projects_json} has no projects object; not changing it")
    if projects.get(project) == slug and read_projects(dirs).get(project) == slug:
        return None
    projects[project] = slug
    return (json.dumps(data, indent=2, ensure_ascii=False) + "\n").encode()


def _sides(local: Chat, incoming: Chat) -> Sides:
    """Message counts and last prompts of both chats, for the divergence question."""
    from commuter.backends.gemini.chat import _text

    def read(chat: Chat) -> tuple[list[str], str | None]:
        ids = [m for m in chat.ids if chat.messages[m].get("type") in ("user", "gemini")]
        users = [_text(chat.messages[m].get("content")) for m in ids]
        prompts = [
            t
            for m, t in zip(ids, users, strict=True)
            if chat.messages[m].get("type") == "user" and t.strip()
        ]
        return ids, prompts[-1] if prompts else None

    mine, my_prompt = read(local)
    theirs, their_prompt = read(incoming)
    known = set(theirs)
    return Sides(len(mine), my_prompt, len(theirs), their_prompt, sum(i not in known for i in mine))


def _decide(
    dirs: GeminiDirs, folder: Path, sid: str, incoming: Chat, suffix: str, options: ImportOptions
) -> _Plan:
    chats = folder / "chats"
    mine = _local(dirs, folder, sid)
    new_ids = _real_ids(incoming)
    if mine is None:
        # (a local file of this id without messages is moved aside by _defuse_cleanup)
        return _Plan(sid, chats / file_name(incoming.start_time, sid, suffix), "created")
    rel = relation(_real_ids(mine.chat), new_ids)
    if rel is Relation.IDENTICAL:
        return _Plan(sid, mine.path, "unchanged")
    if rel is Relation.LOCAL_NEWER and not options.replace:
        return _Plan(
            sid,
            mine.path,
            "unchanged",
            [f"the local copy of session {sid} is newer than the bundle's; kept it"],
        )
    if rel is Relation.CONTINUED:
        return _Plan(sid, mine.path, "updated")
    if not options.replace and not _asks(options):
        return _converge(dirs, folder, sid, sid, mine, incoming, suffix, options, 0)
    action = divergence_action(sid, options, lambda: _sides(mine.chat, incoming))
    if action != "fork":
        return _Plan(sid, mine.path, action)
    div = divergence(_real_ids(mine.chat), new_ids)  # a person chose it: the bundle's forks
    entry = div.incoming if div is not None else order_entry(new_ids)
    return _fork(dirs, folder, sid, sid, incoming, suffix, options, entry, 0)


def _asks(options: ImportOptions) -> bool:
    return options.interactive and options.ask is not None


def _local(dirs: GeminiDirs, folder: Path, sid: str) -> ChatFile | None:
    """The folder's chat file of session `sid` with messages (the latest updated), or None."""
    found = [cf for cf in chat_files(dirs, folder) if cf.chat.session_id == sid]
    found.sort(key=lambda cf: (cf.chat.has_messages, cf.chat.last_updated), reverse=True)
    return found[0] if found and found[0].chat.has_messages else None


MAX_CONVERGE_DEPTH = 4  # a fork of a fork of ...: past this, a fork with a fresh id


def _converge(
    dirs: GeminiDirs,
    folder: Path,
    sid: str,
    local_sid: str,
    mine: ChatFile,
    incoming: Chat,
    suffix: str,
    options: ImportOptions,
    depth: int,
) -> _Plan:
    """Non-interactive divergence of the bundle's `sid` from the local chat `local_sid`: the
    rule of `lineage.incoming_keeps_id` decides, alike on both machines, which branch keeps
    the id; the other becomes the fork `lineage.fork_id(local_sid, its first message)`.
    When that is the local branch, it is written under the fork id and the bundle's replaces
    it (after a backup; SessionBusy while a gemini runs in the project)."""
    new_ids = _real_ids(incoming)
    div = divergence(_real_ids(mine.chat), new_ids)
    if div is None or not incoming_keeps_id(mine.chat, incoming, div):
        entry = div.incoming if div is not None else order_entry(new_ids)
        return _fork(dirs, folder, sid, local_sid, incoming, suffix, options, entry, depth)
    fork = _free_fork_id(dirs, folder, local_sid, div.local)
    note = "an import would move" if options.dry_run else "moved"
    return _Plan(
        local_sid,
        mine.path,
        "replaced",
        [
            f"session {local_sid} diverged from the bundle's; the bundle's branch began first, "
            f"so it keeps the id, and the local branch ({note}) continues as the fork {fork}"
        ],
        moved_to=fork,
    )


def _free_fork_id(dirs: GeminiDirs, folder: Path, sid: str, entry: str) -> str:
    """`lineage.fork_id(sid, entry)`, or its next candidate while a file of another chat here
    has its 8-character short id (gemini tells chats apart by it)."""
    owner = {cf.path.name: cf.chat.session_id for cf in chat_files(dirs, folder)}
    names = _names(folder / "chats")
    for attempt in range(16):
        fork = fork_id(sid, entry, attempt)
        if all(_short_id(n) != fork[:8] or owner.get(n) == fork for n in names):
            return fork
    return str(uuid.uuid4())  # pragma: no cover


def _fork(
    dirs: GeminiDirs,
    folder: Path,
    sid: str,
    local_sid: str,
    incoming: Chat,
    suffix: str,
    options: ImportOptions,
    entry: str,
    depth: int,
) -> _Plan:
    """The bundle's branch as the fork `lineage.fork_id(local_sid, entry)`: made, found again
    (the same, older, or continued: never a second fork of one divergence), or, when that
    fork itself went on here too, decided again by the same rule one level down."""
    chats = folder / "chats"
    new_ids = _real_ids(incoming)
    if depth >= MAX_CONVERGE_DEPTH:
        return _new_fork(chats, sid, local_sid, incoming, suffix, options)
    fork = _free_fork_id(dirs, folder, local_sid, entry)
    there = _local(dirs, folder, fork)
    if there is not None:
        rel = relation(_real_ids(there.chat), new_ids)
        if rel is Relation.DIVERGENT:
            if not _asks(options):
                return _converge(
                    dirs, folder, sid, fork, there, incoming, suffix, options, depth + 1
                )
            return _fork(dirs, folder, sid, fork, incoming, suffix, options, entry, depth + 1)
        if rel is Relation.CONTINUED:
            return _Plan(
                fork,
                there.path,
                "updated",
                [f"session {sid} diverged from the local copy; updated its fork {fork}"],
                fork_of=local_sid,
            )
        which = "is the same as" if rel is Relation.IDENTICAL else "is newer than"
        return _Plan(
            fork,
            there.path,
            "unchanged",
            [f"session {sid} was imported before as the fork {fork}, which {which} the bundle's"],
        )
    earlier = _earlier_fork(dirs, folder, sid, new_ids)  # a fork made with a random id
    if earlier is not None:
        return earlier
    note = "an import would make the fork" if options.dry_run else "imported as the fork"
    return _Plan(
        fork,
        chats / file_name(incoming.start_time, fork, suffix),
        "forked",
        [f"session {local_sid} diverged from the local copy; {note} {fork}"],
        fork_of=local_sid,
    )


def _new_fork(
    chats: Path, sid: str, local_sid: str, incoming: Chat, suffix: str, options: ImportOptions
) -> _Plan:
    """A fork with a fresh random id (past the convergence depth)."""
    taken = {n.rsplit("-", 1)[-1].split(".")[0] for n in _names(chats)}
    new = str(uuid.uuid4())
    while new[:8] in taken:
        new = str(uuid.uuid4())
    note = (
        "an import would make a fork with a new id"
        if options.dry_run
        else f"imported as a fork {new}"
    )
    return _Plan(
        new,
        chats / file_name(incoming.start_time, new, suffix),
        "forked",
        [f"session {sid} diverged from the local copy; {note}"],
        fork_of=local_sid,
    )


def _names(folder: Path) -> list[str]:
    try:
        return os.listdir(folder)
    except OSError:
        return []


def _earlier_fork(dirs: GeminiDirs, folder: Path, sid: str, new_ids: list[str]) -> _Plan | None:
    """A fork an earlier import made of this chat (same first message id, another sid)."""
    if not new_ids:
        return None
    for cf in chat_files(dirs, folder):
        other = _real_ids(cf.chat)
        if cf.chat.session_id == sid or not other or other[0] != new_ids[0]:
            continue
        rel = relation(other, new_ids)
        fork = str(cf.chat.session_id)
        if rel is Relation.DIVERGENT:
            continue
        if rel is Relation.CONTINUED:
            return _Plan(
                fork,
                cf.path,
                "updated",
                [f"session {sid} diverged from the local copy; updated its fork {fork}"],
            )
        note = (
            "is the same as the bundle's"
            if rel is Relation.IDENTICAL
            else "is newer than the bundle's; kept it"
        )
        return _Plan(
            fork,
            cf.path,
            "unchanged",
            [f"session {sid} was imported before as the fork {fork}, which {note}"],
        )
    return None


def _defuse_cleanup(dirs: GeminiDirs, settings: Settings, plan: _Plan) -> None:
    """gemini's start-up cleanup deletes every chat sharing its 8-character short id with a
    chat file that has no messages (the file a resume in a later minute leaves): such files
    beside a chat with messages in the placed chat's folder (its own and the project's other
    chats', which the import makes no longer `latest`) are moved into commuter's backups."""
    chats = plan.dest.parent
    kept = {plan.sid[:8]}
    empty: list[tuple[str, Path, str]] = []
    for name in sorted(_names(chats)):
        path = chats / name
        short = _short_id(name)
        if short is None or path.is_symlink() or not path.is_file():
            continue
        if path == plan.dest:
            continue
        try:
            chat: Chat | None = read_chat(path)
        except (OSError, UnicodeDecodeError, RecursionError):
            chat = None
        if chat is not None and chat.has_messages:
            kept.add(short)
        else:
            sid = chat.session_id if chat is not None and chat.session_id else plan.sid
            empty.append((short, path, sid if is_session_id(sid) else plan.sid))
    for short, path, sid in empty:
        if short not in kept:
            continue
        plan.backups.append(Backups(settings).file(sid, path))
        path.unlink()
        plan.warnings.append(
            f"moved {path.name} (no messages; gemini's cleanup would delete "
            "the chat with it) into the backups"
        )


def _short_id(name: str) -> str | None:
    """The 8-character short id of a chat file name `session-<time>-<short>.json(l)`."""
    if not name.startswith("session-") or not name.endswith((".json", ".jsonl")):
        return None
    short = name.rsplit("-", 1)[-1].split(".", 1)[0]
    return short if len(short) == 8 else None


def _result(
    plan: _Plan, project: str, action: str, original: str, source: ImportSource
) -> ImportResult:
    last = parse_time(str(source.meta.get("last_activity") or ""))
    return ImportResult(
        session_id=plan.sid,
        project_dir=Path(project),
        action=action,
        transcript=plan.dest,
        backups=tuple(plan.backups),
        warnings=tuple(plan.warnings),
        original_session_id=original if plan.sid != original else None,
        origin=source.origin or None,
        last_activity=last.timestamp() if last else None,
    )
