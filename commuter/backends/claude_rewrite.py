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
_CWD_KEY = b'"cwd":"'
_SNAPSHOT = b'"file-history-snapshot"'


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
        self.sid = (old_sid.encode(), new_sid.encode()) if old_sid and new_sid else None
        if self.sid and self.sid[0] == self.sid[1]:
            self.sid = None
        self.backup_names = backup_names or {}

    @property
    def is_identity(self) -> bool:
        return not self.needles and self.sid is None and not self.backup_names

    def line(self, raw: bytes) -> bytes:
        """Rewrite one line (with or without its trailing newline)."""
        end = b"\n" if raw.endswith(b"\n") else b""
        body = raw[:-1] if end else raw
        if self.sid is not None and self.sid[0] in body:
            body = body.replace(self.sid[0], self.sid[1])
        must_parse = bool(self.backup_names) and _SNAPSHOT in body
        positions: set[int] = set()
        for needle in self.needles:
            start = body.find(needle)
            while start != -1 and len(positions) < 2:
                positions.add(start)
                start = body.find(needle, start + 1)
        if not positions and not must_parse:
            return body + end
        if len(positions) == 1 and not must_parse:
            spliced = self._splice_cwd(body, positions.pop())
            if spliced is not None:
                return spliced + end
        try:
            entry = orjson.loads(body)
        except orjson.JSONDecodeError:
            return body + end
        if self._walk(entry):
            return orjson.dumps(entry) + end
        return body + end

    def _splice_cwd(self, body: bytes, pos: int) -> bytes | None:
        # Most lines hold the prefix once, as the "cwd" value: splice without parsing.
        if body[pos - len(_CWD_KEY) : pos] != _CWD_KEY:
            return None
        stop = body.find(b'"', pos)
        if stop == -1:
            return None
        value = body[pos:stop]
        if b"\\" in value:
            return None
        new = self.map.translate(value.decode("utf-8", "surrogateescape"))
        if new is None:
            return body
        return body[:pos] + escaped(new) + body[stop:]

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
            write = out.write
            line = self.line
            for raw in fh:
                write(line(raw))


def backup_sources(transcript: Path, project: str) -> dict[str, str]:
    """Map each file-history backup name to the absolute path it backs up, from the snapshots."""
    found: dict[str, str] = {}
    cwd = project
    with transcript.open("rb") as fh:
        for raw in fh:
            if _SNAPSHOT not in raw:
                if _CWD_KEY in raw:
                    pos = raw.find(_CWD_KEY) + len(_CWD_KEY)
                    stop = raw.find(b'"', pos)
                    value = raw[pos:stop]
                    if stop != -1 and b"\\" not in value:
                        cwd = value.decode("utf-8", "surrogateescape")
                continue
            try:
                entry = orjson.loads(raw)
            except orjson.JSONDecodeError:
                continue
            snap = entry.get("snapshot") if isinstance(entry, dict) else None
            tracked = snap.get("trackedFileBackups") if isinstance(snap, dict) else None
            if not isinstance(tracked, dict):
                continue
            for key, info in tracked.items():
                name = info.get("backupFileName") if isinstance(info, dict) else None
                if isinstance(name, str) and isinstance(key, str):
                    absolute = key if key.startswith("/") else f"{cwd.rstrip('/')}/{key}"
                    found.setdefault(name, absolute)
    return found
