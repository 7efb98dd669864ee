"""A delta bundle (bundle/delta.py) placed on the Claude Code session an earlier import from the
same sender left here.

The local transcript must still begin with exactly what that import wrote (its size and
sha256, recorded by core in acks.py). The session the sender now has is then, in local terms,
that prefix followed by the rewritten suffix, and it is placed only when that continues what
is here: the local copy is the prefix itself, or it went on only with entries the suffix
brings too. Anything else (a divergence, a local copy that was rewritten or moved) is
DeltaBaseMismatch, and the sender sends the whole session, whose import applies the
convergence rule. Side files, memory, history and project config travel only when new or
changed and are placed as a whole import places them; nothing here deletes a local file.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import TYPE_CHECKING

from commuter import fsutil
from commuter.backends.claude import lineage
from commuter.backends.claude.memory import host_tag, plan_memory
from commuter.backends.claude.paths import (
    ClaudeDirs,
    check_session_id,
    is_safe_name,
    read_entrypoint,
)
from commuter.backends.claude.place import (
    _check_busy,
    _history_lines,
    _pathmap,
    _Plan,
    _result,
    _when,
    _write_memory,
    _write_side_files,
    finish,
    project_config,
)
from commuter.backends.claude.rewrite import Rewriter, backup_hash
from commuter.bundle.delta import prefix_sha256
from commuter.errors import BundleError, DeltaBaseMismatch
from commuter.fsutil import CHUNK, copy_prefix
from commuter.placing import (
    Backups,
    Pending,
    confirm_git_state,
    project_conflicts,
    resolve_target,
)

if TYPE_CHECKING:
    from commuter.acks import Received
    from commuter.backends import ImportSource
    from commuter.bundle.delta import Spec
    from commuter.model import ImportOptions, ImportResult
    from commuter.pathmap import PathMap
    from commuter.settings import Settings


def place_delta(
    settings: Settings,
    source: ImportSource,
    spec: Spec,
    base: Received,
    options: ImportOptions,
) -> ImportResult:
    """Place a delta on `base` (what the last import from its sender left); see the module."""
    sid = check_session_id(source.session_id)
    if not source.project_dir.startswith("/"):
        raise BundleError(f"bundle names a relative project dir {source.project_dir!r}")
    suffix = source.member(spec.suffix_member)
    if not suffix.is_file():
        raise BundleError(f"delta bundle has no {spec.suffix_member}")
    where = resolve_target(settings, source, options)
    target = where.project
    dirs = ClaudeDirs.of(settings)
    folder = dirs.project_folder(target)
    dest = folder / f"{sid}.jsonl"
    held = base.local_size
    if base.local_path != dest or dest.is_symlink() or not dest.is_file():
        raise DeltaBaseMismatch(f"session {sid} is no longer where its last import put it")
    if dest.stat().st_size < held or prefix_sha256(dest, held) != base.local_sha256:
        raise DeltaBaseMismatch(f"the local copy of session {sid} changed since its last import")
    ahead = _chain_from(dest, held)  # what a local claude added since
    coming = lineage.uuid_chain(suffix)
    if ahead != coming[: len(ahead)] and coming != ahead[: len(coming)]:
        raise DeltaBaseMismatch(
            f"session {sid} went on here too; the whole session is needed to converge"
        )
    if len(coming) > len(ahead):
        plan = _check_busy(dirs, _Plan(sid, target, dest, "updated", in_step=True), options)
    elif ahead == coming:
        plan = _Plan(sid, target, dest, "unchanged", in_step=not ahead)
    else:
        plan = _Plan(
            sid,
            target,
            dest,
            "unchanged",
            [f"the local copy of session {sid} is newer than the bundle's; kept it"],
        )
    plan.origin = source.origin
    plan.last_activity = _when(source.meta.get("last_activity"))
    plan.print_mode = read_entrypoint(dest) == "sdk-cli"
    plan.warnings += confirm_git_state(source, target, options)
    pathmap = _pathmap(source, sid, sid, target, dirs, where.path_maps)
    renames = _backup_names(source, pathmap)
    config = project_config(dirs)
    if options.dry_run:
        plan.warnings += project_conflicts(source, target, config, options)
        return dataclasses.replace(_result(plan, "dry-run", sid), planned=plan.action)
    memory = plan_memory(
        source, dirs.memory(folder), options, local_tag=host_tag(settings.hostname)
    )
    plan.warnings += memory.warnings
    backups = Backups(settings)
    rewriter = Rewriter(pathmap, old_sid=sid, new_sid=sid, backup_names=renames)
    with Pending() as pending:
        fsutil.sweep_temps(folder)
        if plan.action == "updated":
            with pending.writer(dest, fsync=True) as out:
                copy_prefix(dest, held, out, DeltaBaseMismatch)
                rewriter.copy(suffix, out)
        _write_side_files(backups, source, dirs, sid, plan, rewriter, renames, None, pending)
        _write_memory(memory.writes, pending)
        history = _history_lines(source, dirs, rewriter, plan)
        if plan.action == "updated":
            plan.backups.append(backups.session(sid, dest, dest.parent / sid))
        pending.commit()
    return finish(source, plan, dirs, history, config, options, backups, sid)


def _chain_from(path: Path, offset: int) -> list[bytes]:
    """The entry uuids of `path` after its first `offset` bytes (a line boundary)."""
    chain: list[bytes] = []
    tail = b""
    with path.open("rb") as fh:
        fh.seek(offset)
        while chunk := fh.read(CHUNK):
            data = tail + chunk
            cut = data.rfind(b"\n") + 1
            tail = data[cut:]
            chain += lineage._UUID_RE.findall(data, 0, cut)
    return chain + lineage._UUID_RE.findall(tail)


def _backup_names(source: ImportSource, pathmap: PathMap) -> dict[str, str]:
    """Old backup name -> new one for every backup the session names (meta `file_history`),
    also those the delta leaves out: its new lines may name them."""
    renames: dict[str, str] = {}
    paths = source.meta.get("file_history")
    for member, absolute in (paths if isinstance(paths, dict) else {}).items():
        if not isinstance(member, str) or not member.startswith("file-history/"):
            continue
        name = member.split("/", 1)[1]
        _stem, sep, version = name.partition("@")
        if not isinstance(absolute, str) or not sep:
            continue
        new = f"{backup_hash(pathmap.apply(absolute))}@{version}"
        if new != name and is_safe_name(new):
            renames[name] = new
    return renames
