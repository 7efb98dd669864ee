"""What `pull` already imported, by bundle digest (state_dir/pulled.json, written atomically)."""

from __future__ import annotations

import contextlib
import json
from datetime import UTC, datetime
from pathlib import Path

from commuter.fsutil import atomic_write_text
from commuter.settings import Settings

STATE_FILE = "pulled.json"
MAX_ENTRIES = 20_000


class PullState:
    """The set of bundle digests this machine has imported (or must never import twice)."""

    def __init__(self, path: Path, done: dict[str, dict[str, str]]) -> None:
        self.path = path
        self._done = done

    @classmethod
    def load(cls, settings: Settings) -> PullState:
        """Read the state file; a missing or damaged one starts empty (a re-import is harmless)."""
        path = settings.state_dir / STATE_FILE
        done: dict[str, dict[str, str]] = {}
        with contextlib.suppress(OSError, ValueError, TypeError, AttributeError):
            raw = json.loads(path.read_text(encoding="utf-8"))
            done = {str(k): dict(v) for k, v in raw.get("imported", {}).items()}
        return cls(path, done)

    def done(self, digest: str) -> bool:
        return digest in self._done

    def mark(self, digest: str, label: str) -> None:
        """Remember `digest` as imported and save at once."""
        when = datetime.now(UTC).isoformat(timespec="seconds")
        self._done[digest] = {"at": when, "label": label}
        if len(self._done) > MAX_ENTRIES:
            oldest = sorted(self._done, key=lambda d: self._done[d].get("at", ""))
            for key in oldest[: len(self._done) - MAX_ENTRIES]:
                del self._done[key]
        self.save()

    def save(self) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        atomic_write_text(self.path, json.dumps({"version": 1, "imported": self._done}) + "\n")
