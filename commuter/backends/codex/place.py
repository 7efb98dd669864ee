"""Import of a Codex thread (and its subagent threads): rewrite paths, decide continuity, write
the rollouts through placing.Pending and their rows in one SQLite transaction."""

from __future__ import annotations

import itertools
import os
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any, BinaryIO

import orjson

from commuter import placing
from commuter.backends.codex import db, procs
from commuter.backends.codex.paths import (
    HEAD_LIMIT,
    ROLLOUT_RE,
    UUID_RE,
    archived_rollouts,
    is_archived,
    rollouts,
    row_path,
)
from commuter.backends.codex.rewrite import Rewriter
from commuter.errors import BackendError
from commuter.fsutil import CHUNK
from commuter.model import ImportOptions, ImportResult
from commuter.pathmap import PathMap

if TYPE_CHECKING:
    from commuter.backends import ImportSource
    from commuter.settings import Settings


def uuid7() -> str:
    """A new UUIDv7 (what codex makes its thread ids with)."""
    raw = bytearray(int(time.time() * 1000).to_bytes(6, "big") + os.urandom(10))
    raw[6] = (raw[6] & 0x0F) | 0x70
    raw[8] = (raw[8] & 0x3F) | 0x80
    return str(uuid.UUID(bytes=bytes(raw)))


_END = object()
WRITTEN = ("created", "updated", "replaced", "forked")


def _keys(path: Path) -> Iterator[tuple[Any, ...]]:
    """Each rollout line's identity (timestamp, ordinal, type): unchanged by path rewrites.
    Read a line at a time (a rollout may be hundreds of MB)."""
    with path.open("rb") as fh:
        for line in fh:
            if not line.strip():
                continue
            try:
                obj = orjson.loads(line)
            except orjson.JSONDecodeError:
                yield (line.rstrip(b"\r\n"),)
                continue
            if isinstance(obj, dict):
                payload = obj.get("payload")
                sub = payload.get("type") if isinstance(payload, dict) else None
                yield (obj.get("timestamp"), obj.get("ordinal"), obj.get("type"), sub)
            else:
                yield (line.rstrip(b"\r\n"),)


def relation(local: Path, incoming: Path) -> str:
    """same | continuation (incoming extends local) | behind (local extends it) | divergent."""
    for a, b in itertools.zip_longest(_keys(local), _keys(incoming), fillvalue=_END):
        if a is _END:
            return "continuation"
        if b is _END:
            return "behind"
        if a != b:
            return "divergent"
    return "same"


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


def _threads_of(source: ImportSource) -> list[Thread]:
    if not UUID_RE.fullmatch(source.session_id):
        raise BackendError(f"bundle's codex thread id {source.session_id!r} is not a UUID")
    main = f"session/{source.session_id}.jsonl"
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
    with t.member.open("rb") as fh:
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


def place(
    home: Path, settings: Settings, source: ImportSource, options: ImportOptions
) -> ImportResult:
    """Place `source` under the codex home `home` (see the module docstring)."""
    threads = _threads_of(source)
    target = placing.resolve_target(settings, source, options)
    warnings = placing.confirm_git_state(source, target.project, options)
    pairs: list[tuple[str, str]] = [(source.project_dir, str(target.project))]
    src_home = _text(source.meta, "source_codex_home")
    if src_home:
        pairs.append((src_home, str(home)))
    pairs += list(PathMap.from_config(target.path_maps).pairs)
    paths = PathMap.of(pairs)
    rewriter = Rewriter(paths, PathMap.of([(src_home, str(home))]) if src_home else None)

    rows = db.read_threads(home)
    files = rollouts(home)
    stowed = archived_rollouts(home)
    for t in threads:
        t.local = row_path(rows.get(t.old_id)) or files.get(t.old_id) or stowed.get(t.old_id)

    main = threads[0]
    action = "created"
    if main.local is not None:
        rel = relation(main.local, main.member)
        action = {"same": "unchanged", "continuation": "updated", "behind": "unchanged"}.get(
            rel, ""
        )
        if rel == "behind":
            warnings.append("the local copy of this thread is newer than the bundle's; kept it")
        if not action:
            action = "forked"
            if options.replace:
                action = "replaced"
            elif options.interactive and options.ask is not None and not options.dry_run:
                choice = options.ask(
                    "this thread differs from the local one; keep both (fork), "
                    "replace the local one, or cancel?",
                    ("fork", "replace", "cancel"),
                )
                if choice == "cancel":
                    raise BackendError("import cancelled; nothing was written")
                action = "forked" if choice == "fork" else "replaced"

    ids = {t.old_id: t.old_id for t in threads}
    if action == "forked":
        ids = {t.old_id: uuid7() for t in threads}
        for t in threads:
            t.local = None
    for t in threads:
        t.new_id = ids[t.old_id]
        if t is main:
            t.action = action
        elif t.local is None:
            t.action = "created"
        else:
            rel = relation(t.local, t.member)
            t.action = "unchanged" if rel in ("same", "behind") else "updated"
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
            name = None if action == "forked" else _rollout_name(source, t.old_id)
            t.dest = _dest_for(home, name, t.new_id)
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
        row["cwd"] = paths.apply(cwd) if isinstance(cwd, str) else str(target.project)
        t.row = row

    result_of = ImportResult
    last = source.meta.get("last_activity")
    last_ts: float | None = None
    if isinstance(last, str):
        try:
            last_ts = datetime.fromisoformat(last).timestamp()
        except ValueError:
            last_ts = None
    common: dict[str, Any] = {
        "extra": {"source": _source_kind(main.row)},
        "session_id": main.new_id,
        "project_dir": target.project,
        "original_session_id": main.old_id if main.new_id != main.old_id else None,
        "origin": source.origin or None,
        "last_activity": last_ts,
    }
    if options.dry_run:
        return result_of(
            action="dry-run",
            planned=action,
            transcript=main.dest,
            warnings=tuple(warnings),
            **common,
        )

    # A fork's rollouts name each other by id (parent_thread_id, the spawn source): renamed.
    renames = [(old.encode(), new.encode()) for old, new in ids.items() if old != new]
    writing = [t for t in threads if t.action in WRITTEN]
    replacing = [t for t in writing if t.local is not None]
    for t in replacing:
        busy = procs.busy_pids(
            [t.local, home / "thread-writer-locks" / f"{t.new_id}.lock"] if t.local else []
        )
        if busy:
            raise BackendError(
                f"codex (pid {busy[0]}) has thread {t.new_id} open; close it "
                "and import again (nothing was written)"
            )
    backups: list[Path] = []
    if replacing:
        box = placing.Backups(settings)
        for t in replacing:
            assert t.local is not None
            backups.append(box.file(t.new_id, t.local))
    with placing.Pending() as pending:
        for t in writing:
            assert t.dest is not None
            with pending.writer(t.dest, fsync=t is main) as out:
                _copy(t.member, out, rewriter, renames)
        with db.writing(home) as w:
            for t in threads:
                known = (rows.get(t.new_id) or {}).get("rollout_path")
                if t in writing or t.row.get("rollout_path") != known:
                    w.upsert(t.row)
                if t in writing:  # a projection of another rollout under this id: stale
                    w.forget_history(t.new_id)
            for edge in source.meta.get("codex_edges") or []:
                if (
                    isinstance(edge, list)
                    and len(edge) == 3
                    and all(isinstance(e, str) for e in edge)
                    and edge[0] in ids
                    and edge[1] in ids
                ):
                    w.edge(ids[edge[0]], ids[edge[1]], edge[2][:32])
            pending.commit()
            w.commit()
    for t in writing:
        if t.unarchive and t.local is not None and t.local != t.dest:
            try:
                t.local.unlink()  # backed up above; its row now names the new file
            except OSError as exc:
                warnings.append(f"could not remove the archived copy {t.local} ({exc})")
    return result_of(
        action=action,
        transcript=main.dest,
        backups=tuple(backups),
        warnings=tuple(warnings),
        **common,
    )


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
