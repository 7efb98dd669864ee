"""Which local sessions are forks, of what, from where: the record `list` shows as
"fork of a296350 from office" and `list --json` as `fork_of` / `fork_from`.

A divergent import (or a sync convergence) makes a fork; whoever makes one calls `record`.
The record lives in commuter's state dir (SQLite, one row per fork), never in the agent's own
files, so deleting it loses only the label, not a session.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

from commuter.settings import FORKS_FILE

_SCHEMA = """
CREATE TABLE IF NOT EXISTS forks (
    agent TEXT NOT NULL,
    fork_id TEXT NOT NULL,
    origin_id TEXT NOT NULL,
    origin_host TEXT NOT NULL,
    created_at TEXT NOT NULL,
    PRIMARY KEY (agent, fork_id)
)
"""


@dataclass(frozen=True, slots=True)
class Fork:
    """One fork: `fork_id` split off `origin_id`; `origin_host` is the machine whose copy
    diverged from this one's (the other side of the divergence)."""

    agent: str
    fork_id: str
    origin_id: str
    origin_host: str
    created_at: str


def _path(state_dir: Path) -> Path:
    return state_dir / FORKS_FILE


def _connect(state_dir: Path) -> sqlite3.Connection:
    state_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
    db = sqlite3.connect(_path(state_dir), timeout=10.0, isolation_level=None)
    db.execute("PRAGMA journal_mode=WAL")
    db.execute(_SCHEMA)
    return db


def record(state_dir: Path, agent: str, fork_id: str, origin_id: str, origin_host: str) -> None:
    """Remember that `fork_id` is a fork of `origin_id` (idempotent: the first record stays)."""
    db = _connect(state_dir)
    try:
        db.execute(
            "INSERT OR IGNORE INTO forks VALUES (?, ?, ?, ?, ?)",
            (agent, fork_id, origin_id, origin_host, datetime.now(UTC).isoformat()),
        )
    finally:
        db.close()


def lookup(state_dir: Path, agent: str, session_id: str) -> Fork | None:
    """The fork record of one session, or None (not a fork, or no record)."""
    return all_forks(state_dir).get((agent, session_id))


def all_forks(state_dir: Path) -> dict[tuple[str, str], Fork]:
    """Every fork record, keyed by (agent, fork id); empty when there is no record file."""
    if not _path(state_dir).exists():
        return {}
    db = _connect(state_dir)
    try:
        rows: Iterable[tuple[str, str, str, str, str]] = db.execute(
            "SELECT agent, fork_id, origin_id, origin_host, created_at FROM forks"
        )
        return {(r[0], r[1]): Fork(*r) for r in rows}
    finally:
        db.close()
