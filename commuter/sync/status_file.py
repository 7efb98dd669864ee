"""The daemon's small status file (state_dir/sync-daemon.json, replaced atomically): since
when it runs, its pid tag, what it is sending, counters and the last error. `status` reads
it; a daemon that died without a word is told apart by its pid tag (pid + start time)."""

from __future__ import annotations

import contextlib
import json
import os
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from commuter.fsutil import atomic_write_text, is_dead, process_tag
from commuter.settings import Settings

FILE_NAME = "sync-daemon.json"
MAX_ERROR = 500


def path_of(settings: Settings) -> Path:
    return settings.state_dir / FILE_NAME


def _now() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds")


class StatusWriter:
    """What the running daemon says about itself."""

    def __init__(self, settings: Settings, *, quiet: float) -> None:
        self.path = path_of(settings)
        self.data: dict[str, Any] = {
            "version": 1,
            "pid": os.getpid(),
            "tag": process_tag(),
            "started_at": _now(),
            "quiet": quiet,
            "running": True,
            "sending": None,
            "sent": 0,
            "imported": 0,
            "last_error": None,
            "last_error_at": None,
            "updated_at": _now(),
        }

    def write(self, *, running: bool | None = None) -> None:
        if running is not None:
            self.data["running"] = running
            if not running:
                self.data["stopped_at"] = _now()
                self.data["sending"] = None
        self.data["updated_at"] = _now()
        with contextlib.suppress(OSError):
            self.path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
            atomic_write_text(self.path, json.dumps(self.data) + "\n")

    def error(self, message: str) -> None:
        self.data["last_error"] = message[:MAX_ERROR]
        self.data["last_error_at"] = _now()
        self.write()

    def sending(self, session: str | None, peer: str | None) -> None:
        self.data["sending"] = None if session is None else {"session": session, "peer": peer}
        self.data["sending_since"] = time.time() if session else None
        self.write()

    def count(self, **counters: int) -> None:
        self.data.update(counters)
        self.write()


def read(settings: Settings) -> dict[str, Any] | None:
    """The status file, with `running` corrected for a daemon that is gone; None if none."""
    try:
        data = json.loads(path_of(settings).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    if not isinstance(data, dict):
        return None
    tag = data.get("tag")
    if data.get("running") and isinstance(tag, str) and _dead(tag):
        data["running"] = False
        data["died"] = True
    return data


def _dead(tag: str) -> bool:
    pid, _, start = tag.partition("-")
    if not (pid.isdigit() and start.isdigit()):
        return True
    return is_dead(int(pid), int(start))
