"""Rewrite a Claude Code transcript for another machine: paths in known fields, session id."""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Any, BinaryIO

import orjson

from commuter.pathmap import PathMap

# Keys whose string value is a file-system path; nothing else (prose, output) is touched.
PATH_KEYS = frozenset(
    {
        "cwd", "file_path", "filePath", "path", "notebook_path", "notebookPath", "planFilePath",
        "persistedOutputPath", "relocatedCwd", "worktreePath", "project", "directory",
        "outputFile", "output_file", "transcript_path", "absolutePath", "originalCwd",
    }
)
_PATH_KEYS_B = frozenset(k.encode() for k in PATH_KEYS)
_CWD_KEY = b'"cwd":"'
_CHUNK = 1 << 20
_SNAPSHOT = b'"file-history-snapshot"'


def _common_prefix(items: list[bytes]) -> bytes:
    if not items:
        return b""
    first, last = min(items), max(items)
    n = 0
    while n < len(first) and n < len(last) and first[n] == last[n]:
        n += 1
    return first[:n]


def escaped(text: str) -> bytes:
    """`text` as it appears inside a JSON string (no surrounding quotes)."""
    return orjson.dumps(text)[1:-1]


def backup_hash(path: str) -> str:
    """Claude's file-history name stem: first 16 hex of sha256 of the absolute path."""
    return hashlib.sha256(path.encode("utf-8")).hexdigest()[:16]


class Rewriter:
    """Line rewriter: lines without a source prefix are copied as bytes, unparsed."""

    def __init__(
        self,
        pathmap: PathMap,
        *,
        old_sid: str | None = None,
        new_sid: str | None = None,
        backup_names: dict[str, str] | None = None,
    ) -> None:
        self.map = pathmap
        self.needles = [escaped(src) for src in pathmap.sources()]
        self.replacements = {escaped(src): escaped(dst) for src, dst in pathmap.pairs}
        # Only prefixes no other prefix contains are searched; longer ones are tried at hits.
        by_len = sorted(self.needles, key=len)
        self.roots: list[tuple[bytes, list[bytes], bytes]] = []
        common = _common_prefix(self.needles)
        common = common[: common.rfind(b"/") + 1]
        if len(common) > 1:
            # One search for what all prefixes share (e.g. the old HOME), then compare.
            self.roots.append((common, list(reversed(by_len)), b'":"' + common))
        else:
            for needle in by_len:
                if not any(needle.startswith(root) for root, _, _ in self.roots):
                    kids = [n for n in reversed(by_len) if n.startswith(needle)]
                    self.roots.append((needle, kids, b'":"' + needle))
        self.sid = (old_sid.encode(), new_sid.encode()) if old_sid and new_sid else None
        if self.sid and self.sid[0] == self.sid[1]:
            self.sid = None
        self.backup_names = backup_names or {}

    @property
    def is_identity(self) -> bool:
        return not self.needles and self.sid is None and not self.backup_names

    def line(self, raw: bytes) -> bytes:
        """Rewrite one line (with or without its trailing newline)."""
        return self.block(raw)

    def block(self, data: bytes) -> bytes:
        """Rewrite whole lines at once, by positions, without splitting them."""
        if self.sid is not None:
            data = data.replace(self.sid[0], self.sid[1])
        # (start, stop, replacement) edits, in order; snapshot lines are parsed whole.
        edits: list[tuple[int, int, bytes]] = []
        if self.backup_names:
            start = data.find(_SNAPSHOT)
            while start != -1:
                line_start = data.rfind(b"\n", 0, start) + 1
                line_stop = data.find(b"\n", start)
                line_stop = len(data) if line_stop == -1 else line_stop
                if start - line_start < 120:
                    body = data[line_start:line_stop]
                    new = self._parsed(body)
                    if new is not body:
                        edits.append((line_start, line_stop, new))
                start = data.find(_SNAPSHOT, line_stop)
        for _root, kids, marker in self.roots:
            start = data.find(marker)
            while start != -1:
                pos = start + 3
                start = data.find(marker, pos)
                close = pos - 3
                opening = data.rfind(b'"', 0, close)
                # An unescaped `"key":"` cannot occur inside a JSON string: a hit preceded by
                # one is exactly a path-key value that starts with the prefix.
                if opening == -1 or data[opening + 1 : close] not in _PATH_KEYS_B:
                    continue
                for needle in kids:
                    if data.startswith(needle, pos):
                        stop = pos + len(needle)
                        if data[stop : stop + 1] in (b"/", b'"'):
                            edits.append((pos, stop, self.replacements[needle]))
                            break
        if not edits:
            return data
        edits.sort()
        parts: list[bytes] = []
        last = 0
        for begin, stop, new in edits:
            if begin < last:
                continue
            parts += [data[last:begin], new]
            last = stop
        parts.append(data[last:])
        return b"".join(parts)

    def _parsed(self, body: bytes) -> bytes:
        try:
            entry = orjson.loads(body)
        except orjson.JSONDecodeError:
            return body
        return orjson.dumps(entry) if self._walk(entry) else body

    def _walk(self, obj: Any) -> bool:
        changed = False
        if isinstance(obj, dict):
            for key, value in obj.items():
                if isinstance(value, str):
                    if key in PATH_KEYS and value.startswith("/"):
                        new = self.map.translate(value)
                        if new is not None and new != value:
                            obj[key] = new
                            changed = True
                elif isinstance(value, dict) and key == "trackedFileBackups":
                    new_backups, did = self._backups(value)
                    if did:
                        obj[key] = new_backups
                        changed = True
                elif isinstance(value, dict | list):
                    changed |= self._walk(value)
        elif isinstance(obj, list):
            for item in obj:
                if isinstance(item, dict | list):
                    changed |= self._walk(item)
        return changed

    def _backups(self, tracked: dict[str, Any]) -> tuple[dict[str, Any], bool]:
        out: dict[str, Any] = {}
        changed = False
        for key, info in tracked.items():
            new_key = self.map.apply(key) if key.startswith("/") else key
            changed |= new_key != key
            if isinstance(info, dict):
                name = info.get("backupFileName")
                if isinstance(name, str) and name in self.backup_names:
                    info = {**info, "backupFileName": self.backup_names[name]}
                    changed = True
            out[new_key] = info
        return out, changed

    def copy(self, src: Path, out: BinaryIO) -> None:
        """Rewrite the file `src` line by line into `out`."""
        with src.open("rb") as fh:
            if self.is_identity:
                while chunk := fh.read(1 << 20):
                    out.write(chunk)
                return
            tail = b""
            while chunk := fh.read(_CHUNK):
                data = tail + chunk if tail else chunk
                cut = data.rfind(b"\n") + 1
                tail = data[cut:]
                if cut:
                    out.write(self.block(data[:cut]))
            if tail:
                out.write(self.block(tail))


def backup_sources(transcript: Path, cwd: str) -> dict[str, str]:
    """Map each file-history backup name to the absolute path it backs up, from the snapshots.

    Relative keys are taken relative to `cwd` (the session's project dir).
    """
    found: dict[str, str] = {}
    with transcript.open("rb") as fh:
        tail = b""
        while chunk := fh.read(_CHUNK):
            data = tail + chunk if tail else chunk
            cut = data.rfind(b"\n") + 1
            tail = data[cut:]
            start = data.find(_SNAPSHOT, 0, cut)
            while start != -1:
                line_start = data.rfind(b"\n", 0, start) + 1
                line_stop = data.find(b"\n", start)
                if start - line_start < 120:
                    _snapshot_sources(data[line_start:line_stop], cwd, found)
                start = data.find(_SNAPSHOT, line_stop, cut)
        if tail and _SNAPSHOT in tail[:120]:
            _snapshot_sources(tail, cwd, found)
    return found


def _snapshot_sources(raw: bytes, cwd: str, found: dict[str, str]) -> None:
    try:
        entry = orjson.loads(raw)
    except orjson.JSONDecodeError:
        return
    snap = entry.get("snapshot") if isinstance(entry, dict) else None
    tracked = snap.get("trackedFileBackups") if isinstance(snap, dict) else None
    if not isinstance(tracked, dict):
        return
    for key, info in tracked.items():
        name = info.get("backupFileName") if isinstance(info, dict) else None
        if isinstance(name, str) and isinstance(key, str):
            absolute = key if key.startswith("/") else f"{cwd.rstrip('/')}/{key}"
            found.setdefault(name, absolute)
