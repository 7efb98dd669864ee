"""Where Codex keeps its threads: `$CODEX_HOME` (default ~/.codex), rollouts named
`sessions/YYYY/MM/DD/rollout-<local time>-<id>.jsonl`."""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Any

import orjson

from commuter.settings import Settings

UUID_RE = re.compile(r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}")
ROLLOUT_RE = re.compile(
    r"rollout-(\d{4})-(\d{2})-(\d{2})T\d{2}-\d{2}-\d{2}-(" + UUID_RE.pattern + r")\.jsonl"
)
ARCHIVED = "archived_sessions"  # `codex archive` moves a rollout here (flat), by its own name
HEAD_LIMIT = 4 << 20  # the session_meta line carries the base instructions (~20 KB)


def codex_home(settings: Settings) -> Path:
    return Path(settings.env.get("CODEX_HOME") or settings.home / ".codex")


def read_meta(path: Path) -> dict[str, Any] | None:
    """The session_meta payload of a rollout (its first line), or None."""
    try:
        with path.open("rb") as fh:
            line = fh.readline(HEAD_LIMIT)
        obj = orjson.loads(line)
    except (OSError, orjson.JSONDecodeError):
        return None
    if not isinstance(obj, dict) or obj.get("type") != "session_meta":
        return None
    payload = obj.get("payload")
    return payload if isinstance(payload, dict) else None


def rollouts(home: Path) -> dict[str, Path]:
    """Rollout files under sessions/ by thread id (the id is the file name's tail)."""
    out: dict[str, Path] = {}
    root = home / "sessions"
    if not root.is_dir():
        return out
    for dirpath, _dirs, files in os.walk(root):
        for name in files:
            m = ROLLOUT_RE.fullmatch(name)
            if m:
                out.setdefault(m.group(4), Path(dirpath) / name)
    return out


def archived_rollouts(home: Path) -> dict[str, Path]:
    """Rollouts `codex archive` put away (`archived_sessions/<name>`), by thread id."""
    out: dict[str, Path] = {}
    try:
        names = sorted(os.listdir(home / ARCHIVED))
    except OSError:
        return out
    for name in names:
        m = ROLLOUT_RE.fullmatch(name)
        if m and (home / ARCHIVED / name).is_file():
            out.setdefault(m.group(4), home / ARCHIVED / name)
    return out


def is_archived(home: Path, path: Path) -> bool:
    return path.parent == home / ARCHIVED


def row_path(row: dict[str, Any] | None) -> Path | None:
    """The rollout a threads row names, if that file is there."""
    value = (row or {}).get("rollout_path")
    if isinstance(value, str) and value.startswith("/") and Path(value).is_file():
        return Path(value)
    return None


def count_messages(path: Path) -> int:
    n = 0
    with path.open("rb") as fh:
        for line in fh:
            if (
                b'"type":"response_item"' in line
                and b'"type":"message"' in line
                and (b'"role":"user"' in line or b'"role":"assistant"' in line)
            ):
                n += 1
    return n
