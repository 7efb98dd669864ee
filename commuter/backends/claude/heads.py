"""The heads cache of `list`: what the first bytes of each transcript told (cwd, first prompt,
whether it has messages), by folder, file name, size and mtime, in one file of commuter's cache
dir. Safe to delete: it is rebuilt. It is `marshal` of plain tuples, dicts and strings (loads in
half the time JSON takes; never pickle, whose loading runs code): `marshal.loads` builds values,
it runs nothing, and every value is checked for its type before it is believed; a file of any
other shape counts as empty."""

from __future__ import annotations

import contextlib
import marshal
import os
from pathlib import Path
from typing import Any

HEADS_FILE = "claude-heads.marshal"
OLD_HEADS_FILES = ("claude-heads.json",)  # what 1.0 wrote: removed on the next save
VERSION = 2
MAX_FILE = 64 << 20

# One entry: (size, mtime, cwd, first prompt, has messages).
Entry = tuple[int, float, str | None, str | None, bool]


class HeadCache:
    """The cache of one projects dir (`scope`); only the transcripts seen in this listing are
    kept, so it never grows past the sessions there are."""

    def __init__(self, path: Path, scope: str) -> None:
        self.path = path
        self.scope = scope  # the projects dir it describes (another CLAUDE_CONFIG_DIR: another)
        self.old: dict[str, dict[str, Any]] = {}
        self.new: dict[str, dict[str, Entry]] = {}
        self.changed = False
        try:
            with path.open("rb") as fh:
                # not read(MAX_FILE + 1), which allocates 64 MiB before it reads
                size = os.fstat(fh.fileno()).st_size
                data = fh.read(size + 1) if size <= MAX_FILE else b""
            doc = marshal.loads(data) if 0 < len(data) <= MAX_FILE else None
        except (OSError, EOFError, ValueError, TypeError):
            doc = None
        if (
            type(doc) is tuple
            and len(doc) == 3
            and doc[0] == VERSION
            and doc[1] == scope
            and type(doc[2]) is dict
        ):
            self.old = {k: v for k, v in doc[2].items() if type(k) is str and type(v) is dict}

    def folder(self, name: str) -> tuple[dict[str, Any], dict[str, Entry]]:
        """The old entries of folder `name` (unchecked: see `hit`) and the dict of its new ones."""
        new: dict[str, Entry] = {}
        self.new[name] = new
        return self.old.get(name, _EMPTY), new

    def save(self) -> None:
        """Write the new entries if they differ from what was loaded (no fsync: a cache)."""
        unchanged = not self.changed and self.new.keys() == self.old.keys()
        if unchanged and all(len(v) == len(self.old[k]) for k, v in self.new.items()):
            return  # every entry is one that was loaded, and none was dropped
        from commuter.fsutil import atomic_writer

        # One str object per project dir: marshal writes the others as references to it, so
        # loading builds a few dozen cwd strings, not one per session (10,000 sessions: the
        # file 1.96 -> 1.69 MB, its load 4.1 -> 3.4 ms).
        cwds: dict[str | None, str | None] = {}
        folders = {
            name: {k: (e[0], e[1], cwds.setdefault(e[2], e[2]), e[3], e[4]) for k, e in new.items()}
            for name, new in self.new.items()
        }
        with contextlib.suppress(OSError, ValueError):
            self.path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
            with atomic_writer(self.path, 0o600, fsync=False) as out:
                out.write(marshal.dumps((VERSION, self.scope, folders), 4))
            for old in OLD_HEADS_FILES:
                (self.path.parent / old).unlink(missing_ok=True)


_EMPTY: dict[str, Any] = {}


def hit(entry: object, size: int, mtime: float) -> Entry | None:
    """`entry` if it is a well-formed entry for this size and mtime, else None."""
    if (
        type(entry) is tuple
        and len(entry) == 5
        and entry[0] == size
        and entry[1] == mtime
        and (entry[2] is None or type(entry[2]) is str)
        and (entry[3] is None or type(entry[3]) is str)
        and type(entry[4]) is bool
    ):
        return entry
    return None
