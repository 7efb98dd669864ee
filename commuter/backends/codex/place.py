"""Import of a Codex thread (and its subagent threads): rewrite paths, decide continuity, write
the rollouts through placing.Pending and their rows in one SQLite transaction.

A divergence imported without a person to ask converges (lineage.py): the branch that began
first keeps the thread id, the other is the fork `lineage.fork_id(id, its first line)`, made,
found again or brought up to date alike on every machine; when the incoming branch keeps the
id, the local one is first written again under the fork id (`_move_local`)."""

from __future__ import annotations

import os
import time
import uuid
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any, BinaryIO

import orjson

from commuter import forks, placing
from commuter.backends import ImportSource
from commuter.backends.codex import db, procs
from commuter.backends.codex.lineage import (
    Key,
    child_id,
    divergence,
    fork_id,
    incoming_keeps_id,
    relation,
)
from commuter.backends.codex.paths import (
    HEAD_LIMIT,
    ROLLOUT_RE,
    UUID_RE,
    archived_rollouts,
    is_archived,
    read_meta,
    rollouts,
    row_path,
)
from commuter.backends.codex.rewrite import Rewriter
from commuter.errors import BackendError, SessionBusy
from commuter.fsutil import CHUNK, copy_prefix
from commuter.model import ImportOptions, ImportResult, SessionRef
from commuter.pathmap import PathMap

if TYPE_CHECKING:
    from commuter.settings import Settings


def uuid7() -> str:
    """A new UUIDv7 (what codex makes its thread ids with)."""
    raw = bytearray(int(time.time() * 1000).to_bytes(6, "big") + os.urandom(10))
    raw[6] = (raw[6] & 0x0F) | 0x70
    raw[8] = (raw[8] & 0x3F) | 0x80
    return str(uuid.UUID(bytes=bytes(raw)))


WRITTEN = ("created", "updated", "replaced", "forked")
MAX_CONVERGE_DEPTH = 4  # a fork of a fork of ...: past this, a fork with a fresh id


@dataclass
class Thread:
    """One thread of the bundle on its way in."""

    old_id: str
    member: Path
    new_id: str = ""
    dest: Path | None = None
    local: Path | None = None
    action: str = "created"
    row: dict[str, Any] = field(default_factory=dict)
    unarchive: bool = False
    keep: int = 0  # a delta: bytes of `local` kept before the member's (translated) lines
    head: Path | None = None  # where its session_meta line is, if not in `member`
    foreign: bool = False  # a local thread the bundle calls its subagent that is not: left alone


class _Store:
    """The local threads: rows, rollouts under sessions/ and archived ones, by id."""

    def __init__(self, home: Path) -> None:
        self.home = home
        self.rows = db.read_threads(home)
        self.files = rollouts(home)
        self.stowed = archived_rollouts(home)
        self.parents = {child: parent for parent, child, _status in db.read_edges(home)}

    def lookup(self, tid: str) -> Path | None:
        return row_path(self.rows.get(tid)) or self.files.get(tid) or self.stowed.get(tid)

    def parent_of(self, tid: str, local: Path) -> str | None:
        """The thread that spawned the local thread `tid`: its edge, else its session_meta."""
        if tid in self.parents:
            return self.parents[tid]
        parent = (read_meta(local) or {}).get("parent_thread_id")
        return parent if isinstance(parent, str) else None


def _subagent_action(store: _Store, t: Thread, family: set[str], warnings: list[str]) -> str:
    """What happens to subagent thread `t`: created, unchanged or updated, the last only when
    the local thread is a subagent of one of the bundle's threads here too (a bundle never
    rewrites another local thread by naming it its subagent)."""
    if t.local is None:
        return "created"
    rel = relation(t.local, t.member)
    if rel in ("same", "behind"):
        return "unchanged"
    if store.parent_of(t.new_id, t.local) not in family:
        t.foreign = True
        warnings.append(
            f"kept the local thread {t.new_id}: the bundle names it as a subagent thread of its "
            "own, but here it is not"
        )
        return "unchanged"
    return "updated"


@dataclass
class _Decision:
    """What happens to the bundle's own thread: `action` under `tid`, whose local rollout is
    `local`; `moved_to`: the local branch of `tid` goes to this fork first."""

    action: str
    tid: str
    local: Path | None
    warnings: list[str] = field(default_factory=list)
    fork_of: str | None = None
    moved_to: str | None = None
    in_step: bool = False


def _decide(store: _Store, sid: str, incoming: Path, options: ImportOptions) -> _Decision:
    local = store.lookup(sid)
    if local is None:
        return _Decision("created", sid, None, in_step=True)
    rel = relation(local, incoming)
    if rel == "same":
        return _Decision("unchanged", sid, local, in_step=True)
    if rel == "behind":
        note = "the local copy of this thread is newer than the bundle's; kept it"
        return _Decision("unchanged", sid, local, [note])
    if rel == "continuation":
        return _Decision("updated", sid, local, in_step=True)
    if options.replace:
        return _Decision("replaced", sid, local, in_step=True)
    if not (options.interactive and options.ask is not None and not options.dry_run):
        return _converge(store, sid, sid, local, incoming, options, 0)
    choice = options.ask(
        "this thread differs from the local one; keep both (fork), "
        "replace the local one, or cancel?",
        ("fork", "replace", "cancel"),
    )
    if choice == "cancel":
        raise BackendError("import cancelled; nothing was written")
    if choice != "fork":
        return _Decision("replaced", sid, local, in_step=True)
    div = divergence(local, incoming)
    entry: Key = div.incoming if div is not None else (uuid.uuid4().hex.encode(),)
    return _fork(store, sid, sid, local, incoming, options, entry, 0)


def _converge(
    store: _Store,
    sid: str,
    local_sid: str,
    local: Path,
    incoming: Path,
    options: ImportOptions,
    depth: int,
) -> _Decision:
    """The bundle's `sid` diverged from the local thread `local_sid` (at `local`): the rule of
    `lineage.incoming_keeps_id` decides, alike on both machines, which branch keeps the id."""
    div = divergence(local, incoming)
    if div is None:  # cannot be: the caller found them divergent
        raise BackendError(f"thread {sid}: the two copies are not divergent")
    if not incoming_keeps_id(div):
        return _fork(store, sid, local_sid, local, incoming, options, div.incoming, depth)
    fork = fork_id(local_sid, div.local)
    note = "an import would move" if options.dry_run else "moved"
    return _Decision(
        "replaced",
        local_sid,
        local,
        [
            f"thread {local_sid} diverged from the bundle's; the bundle's branch began first, "
            f"so it keeps the id, and the local branch ({note}) continues as the fork {fork}"
        ],
        moved_to=fork,
        in_step=local_sid == sid,
    )


def _fork(
    store: _Store,
    sid: str,
    local_sid: str,
    local: Path,
    incoming: Path,
    options: ImportOptions,
    entry: Key,
    depth: int,
) -> _Decision:
    """The bundle's branch as the fork `lineage.fork_id(local_sid, entry)`: made, found again
    (the same, older, or continued: never a second fork of one divergence), or, when that fork
    went on here too, decided again by the same rule one level down."""
    fork = fork_id(local_sid, entry)
    if depth >= MAX_CONVERGE_DEPTH or fork == local_sid:
        fork = uuid7()
    at = store.lookup(fork)
    if at is None:
        note = "an import would make the fork" if options.dry_run else "imported as the fork"
        return _Decision(
            "forked",
            fork,
            None,
            [f"thread {local_sid} diverged from the local copy; {note} {fork}"],
            fork_of=local_sid,
        )
    rel = relation(at, incoming)
    if rel == "divergent":
        if options.interactive and options.ask is not None:
            return _fork(store, sid, fork, at, incoming, options, entry, depth + 1)
        return _converge(store, sid, fork, at, incoming, options, depth + 1)
    if rel == "continuation":
        note = f"thread {sid} diverged from the local copy; updated its fork {fork}"
        return _Decision("updated", fork, at, [note], fork_of=local_sid)
    which = "is the same as" if rel == "same" else "is newer than"
    note = f"thread {sid} was imported before as the fork {fork}, which {which} the bundle's"
    return _Decision("unchanged", fork, at, [note])


def _move_decision(store: _Store, sid: str, fork: str, local: Path) -> _Decision:
    """The local thread `sid` written again as its fork `fork` (or that fork brought up to
    date, when an earlier, interrupted move wrote part of it)."""
    at = store.lookup(fork)
    if at is None:
        return _Decision("forked", fork, None, fork_of=sid)
    rel = relation(at, local)
    if rel == "continuation":
        return _Decision("updated", fork, at, fork_of=sid)
    if rel == "divergent":
        raise BackendError(
            f"thread {sid} should continue as the fork {fork}, but {at} holds another "
            "conversation; kept both as they are"
        )
    return _Decision("unchanged", fork, at, fork_of=sid)


def _rollout_name(source: ImportSource, tid: str) -> str | None:
    names = source.meta.get("codex_rollout_names")
    name = names.get(tid) if isinstance(names, dict) else None
    if isinstance(name, str):
        m = ROLLOUT_RE.fullmatch(name)
        if m and m.group(4) == tid:
            return name
    return None


def _dest_for(home: Path, name: str | None, tid: str) -> Path:
    if name is None:
        name = time.strftime("rollout-%Y-%m-%dT%H-%M-%S-", time.localtime()) + f"{tid}.jsonl"
    m = ROLLOUT_RE.fullmatch(name)
    assert m is not None
    return home / "sessions" / m.group(1) / m.group(2) / m.group(3) / name


def _threads_of(source: ImportSource, main: str | None = None) -> list[Thread]:
    """The bundle's threads, its own first (`main`: the member holding its rollout)."""
    if not UUID_RE.fullmatch(source.session_id):
        raise BackendError(f"bundle's codex thread id {source.session_id!r} is not a UUID")
    main = main or f"session/{source.session_id}.jsonl"
    if main not in source.members:
        raise BackendError(f"bundle lacks its rollout {main}")
    threads = [Thread(source.session_id, source.member(main))]
    for member in source.members:
        if member.startswith("subagents/"):
            tid = member[len("subagents/") :].removesuffix(".jsonl")
            if (
                not member.endswith(".jsonl")
                or not UUID_RE.fullmatch(tid)
                or tid == source.session_id
            ):
                raise BackendError(f"bundle member {member!r} is no codex subagent rollout")
            threads.append(Thread(tid, source.member(member)))
    return threads


def _base_row(source: ImportSource, t: Thread) -> dict[str, Any]:
    rows = source.meta.get("codex_threads")
    row = rows.get(t.old_id) if isinstance(rows, dict) else None
    if row is not None:
        return db.clean_row(row)
    # No row at the source (a fresh ~/.codex there): what codex's own backfill takes.
    head = t.head or t.member
    with head.open("rb") as fh:
        first = fh.readline(HEAD_LIMIT)
    try:
        meta = orjson.loads(first).get("payload") or {}
    except (orjson.JSONDecodeError, AttributeError):
        meta = {}
    stamp = int(os.stat(t.member).st_mtime)
    if not isinstance(meta, dict):
        meta = {}

    def text(obj: dict[str, Any], key: str, default: str | None) -> str | None:
        value = obj.get(key)
        return value if isinstance(value, str) else default

    prompt = text(source.meta, "first_prompt", "")
    src = meta.get("source")
    return db.clean_row(
        {
            "source": src
            if isinstance(src, str)
            else orjson.dumps(src).decode()
            if src
            else "exec",
            "model_provider": text(meta, "model_provider", "openai"),
            "cli_version": text(meta, "cli_version", ""),
            "thread_source": text(meta, "thread_source", None),
            "created_at": stamp,
            "updated_at": stamp,
            "created_at_ms": stamp * 1000,
            "updated_at_ms": stamp * 1000,
            "recency_at": stamp,
            "recency_at_ms": stamp * 1000,
            "title": prompt,
            "first_user_message": prompt,
            "preview": prompt,
            "history_mode": text(meta, "history_mode", "legacy"),
        }
    )


def _text(meta: dict[str, Any], key: str) -> str | None:
    value = meta.get(key)
    return value if isinstance(value, str) and value.startswith("/") else None


def _translation(home: Path, source: ImportSource, target: placing.Target) -> Rewriter:
    """The rewriter of the bundle's lines: its project and codex home to this machine's, and
    the config's path-maps."""
    pairs: list[tuple[str, str]] = [(source.project_dir, str(target.project))]
    src_home = _text(source.meta, "source_codex_home")
    if src_home:
        pairs.append((src_home, str(home)))
    pairs += list(PathMap.from_config(target.path_maps).pairs)
    return Rewriter(PathMap.of(pairs), PathMap.of([(src_home, str(home))]) if src_home else None)


def _when(source: ImportSource) -> float | None:
    last = source.meta.get("last_activity")
    if not isinstance(last, str):
        return None
    try:
        return datetime.fromisoformat(last).timestamp()
    except ValueError:
        return None


def place(
    home: Path,
    settings: Settings,
    source: ImportSource,
    options: ImportOptions,
    *,
    move_to: str | None = None,
) -> ImportResult:
    """Place `source` under the codex home `home` (see the module docstring).

    `move_to`: `source` is this machine's own copy of the thread (`_move_local`), written
    again under the fork id `move_to` (its paths are local: no translation)."""
    threads = _threads_of(source)
    store = _Store(home)
    main = threads[0]
    if move_to is None:
        target = placing.resolve_target(settings, source, options)
        warnings = placing.confirm_git_state(source, target.project, options)
        rewriter = _translation(home, source, target)
        d = _decide(store, main.old_id, main.member, options)
    else:
        target = placing.Target(Path(source.project_dir), ())
        warnings = []
        rewriter = Rewriter(PathMap.of([]))
        d = _move_decision(store, main.old_id, move_to, main.member)
    warnings += d.warnings
    ids = {t.old_id: t.old_id for t in threads}
    if d.tid != main.old_id:  # a fork: its subagent threads get ids of their own too
        ids = {t.old_id: child_id(d.tid, t.old_id) for t in threads}
        ids[main.old_id] = d.tid
    family = set(ids.values())
    for t in threads:
        t.new_id = ids[t.old_id]
        t.local = d.local if t is main else store.lookup(t.new_id)
        t.action = d.action if t is main else _subagent_action(store, t, family, warnings)
        _destination(home, source, t, warnings)
        t.row = _row(source, t, ids, rewriter.paths, target.project)

    common: dict[str, Any] = {
        "extra": {"source": _source_kind(main.row)},
        "session_id": main.new_id,
        "project_dir": target.project,
        "original_session_id": main.old_id if main.new_id != main.old_id else None,
        "origin": source.origin or None,
        "last_activity": _when(source),
    }
    if options.dry_run:
        return ImportResult(
            action="dry-run",
            planned=d.action,
            transcript=main.dest,
            warnings=tuple(warnings),
            **common,
        )
    # A fork's rollouts name each other by id (parent_thread_id, the spawn source): renamed.
    renames = [(old.encode(), new.encode()) for old, new in ids.items() if old != new]
    _check_busy(home, [t for t in threads if t.action in WRITTEN and t.local is not None])
    if d.moved_to is not None and d.local is not None:
        # the local branch goes to its fork first; the bundle's then takes its id
        _move_local(home, settings, d.tid, d.local, d.moved_to, target.project, source.origin)
    backups = _write(home, settings, source, threads, rewriter, renames, ids, warnings)
    if d.fork_of is not None:  # `list` shows it as "fork of <id> from <host>"
        forks.record(settings.state_dir, "codex", d.tid, d.fork_of, _origin_host(source.origin))
    if d.in_step and main.new_id == main.old_id and main.dest is not None:
        common["extra"] = {
            **common["extra"],
            "in_step": True,
            "in_step_size": main.dest.stat().st_size,
        }
    return ImportResult(
        action=d.action,
        transcript=main.dest,
        backups=tuple(backups),
        warnings=tuple(warnings),
        **common,
    )


def _destination(home: Path, source: ImportSource, t: Thread, warnings: list[str]) -> None:
    """Where thread `t` is written (or stays)."""
    if t.local is not None and is_archived(home, t.local) and t.action in WRITTEN:
        # archived here: the new version goes where `codex unarchive` puts it back (the
        # archived copy is backed up and removed once it is written), unarchived
        m = ROLLOUT_RE.fullmatch(t.local.name)
        t.dest = _dest_for(home, t.local.name if m else None, t.new_id)
        t.unarchive = True
    elif t.local is not None:
        t.dest = t.local
        if is_archived(home, t.local):
            warnings.append(
                f"thread {t.new_id} is archived here; `codex unarchive {t.new_id}` to resume it"
            )
    else:
        name = _rollout_name(source, t.old_id) if t.new_id == t.old_id else None
        t.dest = _dest_for(home, name, t.new_id)


def _row(
    source: ImportSource, t: Thread, ids: dict[str, str], paths: PathMap, project: Path
) -> dict[str, Any]:
    """Thread `t`'s row as it is written here: the bundle's, under its id, file and cwd."""
    row = _base_row(source, t)
    for key in ("source", "agent_path"):
        if isinstance(row.get(key), str):
            for old, new in ids.items():
                row[key] = row[key].replace(old, new)
    row["id"] = t.new_id
    row["rollout_path"] = str(t.dest)
    if t.action in WRITTEN:  # written under sessions/: never archived
        row["archived"] = 0
        row.pop("archived_at", None)
    cwd = row.get("cwd")
    row["cwd"] = paths.apply(cwd) if isinstance(cwd, str) else str(project)
    return row


def _check_busy(home: Path, replacing: list[Thread]) -> None:
    """SessionBusy if a running codex holds a thread this import would replace."""
    for t in replacing:
        busy = procs.busy_pids(
            [t.local, home / "thread-writer-locks" / f"{t.new_id}.lock"] if t.local else []
        )
        if busy:
            raise SessionBusy(
                f"codex (pid {busy[0]}) has thread {t.new_id} open; close it "
                "and import again (nothing was written)"
            )


def _write(
    home: Path,
    settings: Settings,
    source: ImportSource,
    threads: list[Thread],
    rewriter: Rewriter,
    renames: list[tuple[bytes, bytes]],
    ids: dict[str, str],
    warnings: list[str],
) -> list[Path]:
    """Back up what is replaced, write the rollouts and rows (all or nothing); the backups."""
    writing = [t for t in threads if t.action in WRITTEN]
    backups: list[Path] = []
    replacing = [t for t in writing if t.local is not None]
    if replacing:
        box = placing.Backups(settings)
        for t in replacing:
            assert t.local is not None
            backups.append(box.file(t.new_id, t.local))
    rows = db.read_threads(home)
    foreign = {t.old_id for t in threads if t.foreign}
    edges = [
        edge
        for edge in source.meta.get("codex_edges") or []
        if isinstance(edge, list)
        and len(edge) == 3
        and all(isinstance(e, str) for e in edge)
        and edge[0] in ids
        and edge[1] in ids
        and edge[1] not in foreign
    ]
    main = threads[0]
    with placing.Pending() as pending:
        for t in writing:
            assert t.dest is not None
            with pending.writer(t.dest, fsync=t is main) as out:
                if t.keep and t.local is not None:
                    copy_prefix(t.local, t.keep, out, BackendError)
                _copy(t.member, out, rewriter, renames)
        with db.writing(home) as w:
            for t in threads:
                if t.foreign:
                    continue
                known = (rows.get(t.new_id) or {}).get("rollout_path")
                if t in writing or t.row.get("rollout_path") != known:
                    w.upsert(t.row)
                if t in writing:  # a projection of another rollout under this id: stale
                    w.forget_history(t.new_id)
            if main.action == "replaced":  # the local branch's subagents are not this one's
                w.drop_children(main.new_id, {ids[e[1]] for e in edges if e[0] == main.old_id})
            for edge in edges:
                w.edge(ids[edge[0]], ids[edge[1]], edge[2][:32])
            pending.commit()
            w.commit()
    for t in writing:
        if t.unarchive and t.local is not None and t.local != t.dest:
            try:
                t.local.unlink()  # backed up above; its row now names the new file
            except OSError as exc:
                warnings.append(f"could not remove the archived copy {t.local} ({exc})")
    return backups


@dataclass(frozen=True, slots=True)
class _LocalSource(ImportSource):
    """This machine's own copy of a thread as an ImportSource: members are its files."""

    paths: dict[str, Path] = field(default_factory=dict)

    def member(self, name: str) -> Path:
        return self.paths[name]


def _move_local(
    home: Path,
    settings: Settings,
    sid: str,
    local: Path,
    fork: str,
    project: Path,
    origin: str,
) -> ImportResult:
    """Write the local thread `sid` (at `local`, with its subagent threads) again as its fork
    `fork` (new files; the local one is left to the import that replaces it after a backup),
    recorded as a fork of `sid`."""
    from commuter.backends import get_backend  # by name: no import cycle with the package

    backend = get_backend("codex", settings)
    ref = SessionRef("codex", sid, None, datetime.now(UTC), local, local.stat().st_size)
    plan = backend.collect(ref)
    paths = {name: src for name, src in plan.members if isinstance(src, Path)}
    mine = _LocalSource(
        session_id=sid,
        project_dir=str(project),
        root=local.parent,
        members=tuple(paths),
        meta=plan.meta,
        origin=origin,
        paths=paths,
    )
    options = ImportOptions(project_dir=project, assume_yes=True, sender_verified=True)
    return place(home, settings, mine, options, move_to=fork)


def _origin_host(origin: str) -> str:
    """The host of an origin text `user@host time` (what core.source_from writes)."""
    return origin.split(" ", 1)[0].rpartition("@")[2] or "another machine"


def _copy(
    member: Path, out: BinaryIO, rewriter: Rewriter, renames: list[tuple[bytes, bytes]]
) -> None:
    """The member's lines, translated (and a fork's ids renamed), streamed into `out` in
    batches (memory stays flat whatever the rollout's size)."""
    batch: list[bytes] = []
    size = 0
    with member.open("rb") as fh:
        for raw in fh:
            line = rewriter.line(raw)
            for old, new in renames:
                line = line.replace(old, new)
            batch.append(line)
            size += len(line)
            if size >= CHUNK:
                out.write(b"".join(batch))
                batch, size = [], 0
    if batch:
        out.write(b"".join(batch))


def _source_kind(row: dict[str, Any]) -> str:
    """`exec` for a thread `codex exec` made (the interactive `codex resume --last` leaves
    those out), else `interactive`."""
    return "exec" if row.get("source") == "exec" else "interactive"
