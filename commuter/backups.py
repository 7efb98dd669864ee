"""Backups of what imports replaced (`settings.backups_dir/<UTC stamp>-<sid>-<rand>/`, made by
placing.Backups): listed and pruned. By default the newest KEEP of each session stay and all
of them together at most MAX_MB; the newest backup of each session is never removed by the
size cap alone. Only folders of that name shape directly under backups_dir are touched
(commuter made them); a symlink or any other name is left alone."""

from __future__ import annotations

import os
import re
import shutil
import stat
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

from commuter.settings import Settings

KEEP = 2  # three updates of a 100 MB session leave at most 200 MB of its backups
MAX_MB = 500
_NAME = re.compile(r"([0-9]{8}T[0-9]{6})-([A-Za-z0-9][A-Za-z0-9._-]{0,127})-([0-9a-f]{6})\Z")


@dataclass(frozen=True, slots=True)
class Backup:
    """One backup folder: when, of which session, how many bytes."""

    path: Path
    stamp: str
    session_id: str
    size: int

    @property
    def created_at(self) -> datetime:
        return datetime.strptime(self.stamp, "%Y%m%dT%H%M%S").replace(tzinfo=UTC)


@dataclass(frozen=True, slots=True)
class Limits:
    keep: int = KEEP
    max_bytes: int = MAX_MB << 20

    @classmethod
    def of(cls, settings: Settings, keep: int | None = None, max_mb: int | None = None) -> Limits:
        """The limits given, else the config's `backups-keep` / `backups-max-mb`, else the
        defaults."""
        from commuter import config

        cfg = config.load(settings)
        keep = keep or cfg.backups_keep or KEEP
        max_mb = max_mb or cfg.backups_max_mb or MAX_MB
        return cls(keep, max_mb << 20)


def _size(folder: Path) -> int:
    total = 0
    for root, dirs, files in os.walk(folder, followlinks=False):
        for name in files + dirs:
            try:
                st = os.lstat(os.path.join(root, name))
            except OSError:
                continue
            if stat.S_ISREG(st.st_mode):
                total += st.st_size
    return total


def _entries(settings: Settings) -> Iterator[Backup]:
    root = settings.backups_dir
    try:
        children = list(os.scandir(root))
    except OSError:
        return
    for entry in children:
        found = _NAME.match(entry.name)
        if found is None or not entry.is_dir(follow_symlinks=False):
            continue
        yield Backup(Path(entry.path), found[1], found[2], _size(Path(entry.path)))


def list_backups(settings: Settings) -> list[Backup]:
    """Every backup commuter made here, newest first."""
    return sorted(_entries(settings), key=lambda b: (b.stamp, b.path.name), reverse=True)


def plan_prune(backups: list[Backup], limits: Limits) -> list[Backup]:
    """Which backups (newest first, as list_backups gives them) a prune removes: beyond the
    newest `keep` of each session, then the oldest until the rest fit in `max_bytes` (never
    the newest of a session)."""
    seen: dict[str, int] = {}
    kept: list[Backup] = []
    gone: list[Backup] = []
    for backup in backups:
        seen[backup.session_id] = seen.get(backup.session_id, 0) + 1
        (kept if seen[backup.session_id] <= limits.keep else gone).append(backup)
    newest: dict[str, Backup] = {}
    for backup in kept:
        newest.setdefault(backup.session_id, backup)
    total = sum(b.size for b in kept)
    for backup in reversed(kept):  # oldest first
        if total <= limits.max_bytes:
            break
        if newest[backup.session_id] is backup:
            continue
        gone.append(backup)
        total -= backup.size
    return gone


def prune(settings: Settings, limits: Limits | None = None, dry_run: bool = False) -> list[Backup]:
    """Remove what `plan_prune` names (nothing with `dry_run`); returns it."""
    gone = plan_prune(list_backups(settings), limits or Limits.of(settings))
    if not dry_run:
        for backup in gone:
            # Re-checked right before: still a real folder of ours, not a link put there.
            if _NAME.match(backup.path.name) and not backup.path.is_symlink():
                shutil.rmtree(backup.path, ignore_errors=True)
    return gone


def auto_prune(settings: Settings) -> list[Backup]:
    """The prune every import that made a backup runs; a broken config or a folder that
    cannot be read costs only the pruning, never the import."""
    from commuter.errors import CommuterError

    try:
        return prune(settings)
    except (CommuterError, OSError):
        return []
