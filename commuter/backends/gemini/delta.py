"""A delta bundle (bundle/delta.py) placed on the Gemini CLI chat an earlier import from the
same sender left here.

gemini 0.61.0 appends to a `.jsonl` chat record by record, so what the sender added since
its last export is its file's tail. The local chat must still begin with exactly what that
import wrote (its size and sha256, recorded by core in acks.py); the chat the sender now has
is, in local terms, that prefix followed by the rewritten tail. It is placed only when it
continues what is here, compared by message ids as a whole import compares them (a local
gemini that only resumed, or went on with messages the tail brings too, is fine). Anything
else (a divergence, a chat rewritten or moved) is DeltaBaseMismatch, and the sender sends
the whole chat, whose import applies the convergence rule. A `.json` chat (older gemini)
always goes whole. Subagent chats and project config travel only when new or changed.
"""

from __future__ import annotations

import dataclasses
import json
import os
from pathlib import Path
from typing import TYPE_CHECKING

from commuter import fsutil
from commuter.backends.gemini.chat import (
    SUB_RE,
    Chat,
    GeminiDirs,
    _apply,
    is_session_id,
    records,
    slug_of,
)
from commuter.backends.gemini.lineage import Relation, relation
from commuter.backends.gemini.place import (
    _defuse_cleanup,
    _later,
    _Plan,
    _real_ids,
    _register,
    _result,
    project_config,
    rewriter_for,
    start_after,
)
from commuter.bundle.delta import prefix_sha256
from commuter.errors import BundleError, DeltaBaseMismatch, SessionBusy
from commuter.fsutil import CHUNK, copy_prefix
from commuter.placing import (
    Backups,
    Pending,
    confirm_git_state,
    project_conflicts,
    resolve_target,
    write_project_files,
)

if TYPE_CHECKING:
    from commuter.acks import Received
    from commuter.backends import ImportSource
    from commuter.bundle.delta import Spec
    from commuter.model import ImportOptions, ImportResult
    from commuter.settings import Settings


def place_delta(
    settings: Settings,
    dirs: GeminiDirs,
    source: ImportSource,
    spec: Spec,
    base: Received,
    options: ImportOptions,
) -> ImportResult:
    """Place a delta on `base` (what the last import from its sender left); see the module."""
    sid = source.session_id
    if not is_session_id(sid):
        raise BundleError(f"bundle names a session id {sid!r} that is not a Gemini CLI one")
    if not source.project_dir.startswith("/"):
        raise BundleError(f"bundle names a relative project dir {source.project_dir!r}")
    if spec.transcript != f"session/{sid}.jsonl":
        raise DeltaBaseMismatch(f"session {sid}: only a .jsonl chat takes a delta")
    suffix = source.member(spec.suffix_member)
    if not suffix.is_file():
        raise BundleError(f"delta bundle has no {spec.suffix_member}")
    where = resolve_target(settings, source, options)
    project = os.path.realpath(where.project)
    slug = slug_of(dirs, project)
    dest = base.local_path
    folder = dirs.tmp / slug if slug else None
    if folder is None or dest.parent != folder / "chats" or dest.is_symlink() or not dest.is_file():
        raise DeltaBaseMismatch(f"session {sid} is no longer where its last import put it")
    held = base.local_size
    if dest.stat().st_size < held or prefix_sha256(dest, held) != base.local_sha256:
        raise DeltaBaseMismatch(f"the local copy of session {sid} changed since its last import")
    try:
        local = _chat_of(dest, dest.stat().st_size, None)
        incoming = _chat_of(dest, held, suffix)
    except (OSError, UnicodeDecodeError, RecursionError) as exc:
        raise BundleError(f"the chat of session {sid} does not read as one ({exc})") from exc
    if local.session_id != sid or incoming.session_id != sid:
        raise DeltaBaseMismatch(f"the local chat at {dest} is not session {sid}")
    rel = relation(_real_ids(local), _real_ids(incoming))
    if rel is Relation.DIVERGENT:
        raise DeltaBaseMismatch(
            f"session {sid} went on here too; the whole chat is needed to converge"
        )
    if rel is Relation.CONTINUED:
        plan = _Plan(sid, dest, "updated")
    elif rel is Relation.IDENTICAL:
        plan = _Plan(sid, dest, "unchanged")
    else:
        plan = _Plan(
            sid,
            dest,
            "unchanged",
            [f"the local copy of session {sid} is newer than the bundle's; kept it"],
        )
    chats = dest.parent
    for path in (dirs.root, dirs.tmp, folder, chats, chats / sid):
        if path.is_symlink():
            raise BundleError(f"{path} is a symlink; not writing through it")
    plan.warnings += confirm_git_state(source, Path(project), options)
    config = project_config(dirs)
    if options.dry_run:
        plan.warnings += project_conflicts(source, Path(project), config, options)
        return dataclasses.replace(
            _result(plan, project, "dry-run", sid, source), planned=plan.action
        )
    subs = [
        n
        for n in source.members
        if n.startswith(f"session/{sid}/")
        and SUB_RE.match(n.rsplit("/", 1)[1])
        and n.count("/") == 2
        and ".." not in n
    ]
    if plan.action == "updated" or subs:
        from commuter.backends.gemini.procs import busy_pids

        pids = busy_pids(project)
        if pids:
            raise SessionBusy(
                f"gemini is running in {project} (pid {pids[0]}) and may be "
                f"writing to session {sid}; quit it first, then import again"
            )
    backups = Backups(settings)
    rewriter = rewriter_for(dirs, source, folder, project, where.path_maps, sid)
    with Pending() as pending:
        fsutil.sweep_temps(chats)
        try:
            if plan.action == "updated":
                start = start_after(dirs, chats, sid, incoming.start_time)
                with pending.writer(dest, fsync=True) as out:
                    copy_prefix(dest, held, out, DeltaBaseMismatch)
                    rewriter.copy(suffix, out)
                    update = {"lastUpdated": _later(incoming)}
                    if start:
                        update["startTime"] = start
                    out.write(json.dumps({"$set": update}).encode() + b"\n")
            for name in subs:
                with pending.writer(chats / sid / name.rsplit("/", 1)[1]) as out:
                    rewriter.copy(source.member(name), out)
        except RecursionError as exc:
            raise BundleError("bundle's chat nests too deep") from exc
        if plan.action == "updated" or subs:
            plan.backups.append(backups.session(sid, dest, chats / sid))
        pending.commit()
    if plan.action == "updated":
        _register(dirs, project, folder.name, plan.warnings)
    _defuse_cleanup(dirs, settings, plan)
    write_project_files(
        source,
        Path(project),
        config,
        options,
        backups=backups,
        sid=sid,
        warnings=plan.warnings,
        backed_up=plan.backups,
    )
    return _result(plan, project, plan.action, sid, source)


def _chat_of(path: Path, size: int, tail: Path | None) -> Chat:
    """The chat of the first `size` bytes of `path` (whole lines), then the records of
    `tail`, applied as gemini reads them."""
    chat = Chat()
    with path.open("rb") as fh:
        left, rest = size, b""
        while left:
            data = fh.read(min(CHUNK, left))
            if not data:
                break
            left -= len(data)
            lines = (rest + data).split(b"\n")
            rest = lines.pop()
            for line in lines:
                _line(chat, line)
        _line(chat, rest)
    if tail is not None:
        for record in records(tail):
            _apply(chat, record)
    return chat


def _line(chat: Chat, line: bytes) -> None:
    if line.strip():
        try:
            record = json.loads(line)
        except (ValueError, RecursionError):  # gemini skips a line it cannot parse
            return
        _apply(chat, record)
