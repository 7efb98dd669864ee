"""A delta bundle (bundle/delta.py) placed on the Codex thread an earlier import from the same
sender left here.

The local rollout must still be where that import put it and begin with exactly what it wrote
(its size and sha256, recorded by core in acks.py). The thread the sender now has is then, in
local terms, that prefix followed by the translated suffix, placed only when that continues
what is here: the local rollout is the prefix itself, or went on only with lines the suffix
brings too. Anything else (a divergence, a rollout moved, archived or rewritten) is
DeltaBaseMismatch, and the sender sends the whole thread, whose import converges. Subagent
rollouts travel only when new or changed and are placed as a whole import places them; the
rows are written as a whole import writes them.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

from commuter import placing
from commuter.backends.codex.lineage import keys
from commuter.backends.codex.paths import is_archived
from commuter.backends.codex.place import (
    WRITTEN,
    _check_busy,
    _destination,
    _row,
    _source_kind,
    _Store,
    _subagent_action,
    _threads_of,
    _translation,
    _when,
    _write,
)
from commuter.bundle.delta import prefix_sha256
from commuter.errors import BundleError, DeltaBaseMismatch
from commuter.model import ImportResult

if TYPE_CHECKING:
    from commuter.acks import Received
    from commuter.backends import ImportSource
    from commuter.bundle.delta import Spec
    from commuter.model import ImportOptions
    from commuter.settings import Settings


def place_delta(
    home: Path,
    settings: Settings,
    source: ImportSource,
    spec: Spec,
    base: Received,
    options: ImportOptions,
) -> ImportResult:
    """Place a delta on `base` (what the last import from its sender left); see the module."""
    threads = _threads_of(source, spec.suffix_member)
    main = threads[0]
    sid = main.old_id
    suffix = main.member
    if not suffix.is_file():
        raise BundleError(f"delta bundle has no {spec.suffix_member}")
    with suffix.open("rb") as fh:
        if fh.seek(0, 2) and (fh.seek(-1, 2) < 0 or fh.read(1) != b"\n"):
            raise BundleError(f"delta bundle's {spec.suffix_member} does not end a line")
    store = _Store(home)
    dest = store.lookup(sid)
    held = base.local_size
    if dest is None or dest != base.local_path or dest.is_symlink() or is_archived(home, dest):
        raise DeltaBaseMismatch(f"thread {sid} is no longer where its last import put it")
    if dest.stat().st_size < held or prefix_sha256(dest, held) != base.local_sha256:
        raise DeltaBaseMismatch(f"the local copy of thread {sid} changed since its last import")
    ahead = list(keys(dest, held))  # what a local codex added since
    coming = list(keys(suffix))
    if ahead != coming[: len(ahead)] and coming != ahead[: len(coming)]:
        raise DeltaBaseMismatch(
            f"thread {sid} went on here too; the whole thread is needed to converge"
        )
    warnings: list[str] = []
    in_step = False
    if len(coming) > len(ahead):
        main.action, in_step = "updated", True
    elif ahead == coming:
        main.action, in_step = "unchanged", not ahead
    else:
        main.action = "unchanged"
        warnings.append(f"the local copy of thread {sid} is newer than the bundle's; kept it")
    target = placing.resolve_target(settings, source, options)
    warnings += placing.confirm_git_state(source, target.project, options)
    rewriter = _translation(home, source, target)
    ids = {t.old_id: t.old_id for t in threads}
    main.new_id, main.local, main.dest, main.keep, main.head = sid, dest, dest, held, dest
    for t in threads[1:]:
        t.new_id = t.old_id
        t.local = store.lookup(t.old_id)
        t.action = _subagent_action(store, t, set(ids), warnings)
        _destination(home, source, t, warnings)
    for t in threads:
        t.row = _row(source, t, ids, rewriter.paths, target.project)
    common: dict[str, Any] = {
        "session_id": sid,
        "project_dir": target.project,
        "transcript": dest,
        "origin": source.origin or None,
        "last_activity": _when(source),
    }
    if options.dry_run:
        return ImportResult(
            action="dry-run",
            planned=main.action,
            warnings=tuple(warnings),
            extra={"source": _source_kind(main.row)},
            **common,
        )
    _check_busy(home, [t for t in threads if t.action in WRITTEN and t.local is not None])
    backups = _write(home, settings, source, threads, rewriter, [], ids, warnings)
    extra: dict[str, object] = {"source": _source_kind(main.row)}
    if in_step:
        extra |= {"in_step": True, "in_step_size": dest.stat().st_size}
    return ImportResult(
        action=main.action,
        backups=tuple(backups),
        warnings=tuple(warnings),
        extra=extra,
        **common,
    )
