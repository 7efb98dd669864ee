"""Which sessions changed, found by cheap polling (see docs/sync.md for why not inotify).

Each poll stats the folders of the session stores (a new session, a new project folder
changes their mtime) and every known transcript (an append changes its size and mtime).
Only when a folder changed, or every `rescan` seconds, is the full listing of every backend
(`core.list_sessions`, which reads the head of each transcript) taken again; `rescan` grows
with the listing's cost so a machine with thousands of sessions does not spend its idle time
listing them. Memory is one small record per session.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path

from commuter.model import SessionRef
from commuter.settings import Settings

RESCAN_MIN = 60.0  # seconds between full listings at least
RESCAN_COST = 200  # ... and at least this many times what the last one took
MAX_DIRS = 20_000


@dataclass(frozen=True, slots=True)
class Seen:
    """One session as the last poll saw it."""

    ref: SessionRef
    version: str  # changes whenever the transcript does: "<size>-<mtime ns>"
    mtime: float  # wall-clock time of its last write

    @property
    def key(self) -> tuple[str, str]:
        return (self.ref.backend, self.ref.session_id)


def version_of(ref: SessionRef) -> tuple[str, float] | None:
    """(version, mtime) of a session's transcript now; None if it is gone."""
    if ref.path is None:
        stamp = ref.updated_at.timestamp()
        return f"{ref.size}-{int(stamp * 1e9)}", stamp
    try:
        st = os.stat(ref.path)
    except OSError:
        return None
    return f"{st.st_size}-{st.st_mtime_ns}", st.st_mtime


def store_roots(settings: Settings) -> list[Path]:
    """The folders where each backend's new sessions appear (its `store_roots()`, watched for
    new ones); for a backend without, its sessions' own folders are watched and new projects
    are found by the periodic full listing."""
    from commuter.backends import all_backends

    roots: list[Path] = []
    for backend in all_backends(settings):
        hook: Callable[[], Iterable[Path]] | None = getattr(backend, "store_roots", None)
        if callable(hook):
            roots += list(hook())
    return roots


class Watcher:
    """Polls the session stores; `poll()` returns every session, keyed by (agent, id)."""

    def __init__(
        self,
        settings: Settings,
        *,
        lister: Callable[[], list[SessionRef]] | None = None,
        rescan_min: float = RESCAN_MIN,
    ) -> None:
        from commuter import core

        self.settings = settings
        self._list = lister or (lambda: core.list_sessions(settings))
        self.rescan_min = rescan_min
        self._roots = store_roots(settings)
        self._seen: dict[tuple[str, str], Seen] = {}
        self._dirs: dict[str, int] = {}
        self._next_scan = 0.0
        self.scans = 0
        self.last_scan_seconds = 0.0

    def poll(self) -> dict[tuple[str, str], Seen]:
        """The sessions now (a full listing if a store folder changed or it is time)."""
        if time.monotonic() >= self._next_scan or self._dirs_changed():
            self._scan()
        else:
            self._restat()
        return self._seen

    def force_scan(self) -> None:
        self._next_scan = 0.0

    def _scan(self) -> None:
        start = time.monotonic()
        seen: dict[tuple[str, str], Seen] = {}
        for ref in self._list():
            got = version_of(ref)
            if got is not None:
                seen[(ref.backend, ref.session_id)] = Seen(ref, *got)
        self._seen = seen
        self._dirs = self._dir_stamps(self._watched_dirs())
        took = time.monotonic() - start
        self.scans += 1
        self.last_scan_seconds = took
        self._next_scan = time.monotonic() + max(self.rescan_min, RESCAN_COST * took)

    def _restat(self) -> None:
        for key, old in list(self._seen.items()):
            got = version_of(old.ref)
            if got is None:
                del self._seen[key]
            elif got[0] != old.version:
                self._seen[key] = Seen(old.ref, *got)

    def _watched_dirs(self) -> set[str]:
        dirs: set[str] = set()
        for root in self._roots:
            dirs.add(str(root))
            try:
                with os.scandir(root) as it:
                    for entry in it:
                        if entry.is_dir(follow_symlinks=False):
                            dirs.add(entry.path)
                        if len(dirs) > MAX_DIRS:
                            break
            except OSError:
                continue
        for seen in self._seen.values():
            if seen.ref.path is not None and len(dirs) < MAX_DIRS:
                # Its folder and the two above: a new day's folder of Codex's YYYY/MM/DD
                # tree, a new chats/ folder of Gemini's, show up as a change there.
                # (Never above a store root: ~/.claude itself changes for other reasons.)
                for folder in seen.ref.path.parents[:3]:
                    if folder == seen.ref.path.parent or self._in_roots(folder):
                        dirs.add(str(folder))
        return dirs

    def _in_roots(self, folder: Path) -> bool:
        return any(folder == root or root in folder.parents for root in self._roots)

    @staticmethod
    def _dir_stamps(dirs: Iterable[str]) -> dict[str, int]:
        stamps: dict[str, int] = {}
        for d in dirs:
            try:
                stamps[d] = os.stat(d).st_mtime_ns
            except OSError:
                stamps[d] = -1
        return stamps

    def _dirs_changed(self) -> bool:
        for d, stamp in self._dirs.items():
            try:
                now = os.stat(d).st_mtime_ns
            except OSError:
                now = -1
            if now != stamp:
                return True
        return False
