"""The sync daemon's memory (state_dir/sync.sqlite, WAL, every change one transaction): what
was delivered to which peer at which version of each session, what waits to be sent (and
why, and when it is tried again), what waits here to be imported, and labels already read.
A restart reads it back, so nothing a peer acknowledged is sent again."""

from __future__ import annotations

import sqlite3
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from commuter.settings import Settings

DB_NAME = "sync.sqlite"
MAX_LABELS = 5000
BACKOFF_FIRST = 5.0
BACKOFF_MAX = 300.0

_SCHEMA = """
CREATE TABLE IF NOT EXISTS sent (
    peer TEXT NOT NULL, agent TEXT NOT NULL, session TEXT NOT NULL,
    version TEXT NOT NULL, transport TEXT NOT NULL, at REAL NOT NULL,
    PRIMARY KEY (peer, agent, session));
CREATE TABLE IF NOT EXISTS queue (
    peer TEXT NOT NULL, agent TEXT NOT NULL, session TEXT NOT NULL,
    version TEXT NOT NULL, attempts INTEGER NOT NULL, next_at REAL NOT NULL,
    reason TEXT NOT NULL, since REAL NOT NULL,
    PRIMARY KEY (peer, agent, session));
CREATE TABLE IF NOT EXISTS waiting (
    key TEXT PRIMARY KEY, transport TEXT NOT NULL, sender TEXT NOT NULL,
    session TEXT NOT NULL, project TEXT NOT NULL, size INTEGER NOT NULL,
    reason TEXT NOT NULL, since REAL NOT NULL, next_at REAL NOT NULL,
    attempts INTEGER NOT NULL);
CREATE TABLE IF NOT EXISTS labels (
    key TEXT PRIMARY KEY, session TEXT NOT NULL, project TEXT NOT NULL,
    agent TEXT NOT NULL, at REAL NOT NULL);
"""


def backoff(attempts: int) -> float:
    """Seconds before try number `attempts` + 1: 5, 10, 20, ... at most 5 minutes."""
    return float(min(BACKOFF_MAX, BACKOFF_FIRST * 2 ** min(max(attempts - 1, 0), 16)))


@dataclass(frozen=True, slots=True)
class Queued:
    peer: str
    agent: str
    session: str
    version: str
    attempts: int
    next_at: float
    reason: str
    since: float


@dataclass(frozen=True, slots=True)
class Waiting:
    key: str
    transport: str
    sender: str
    session: str
    project: str
    size: int
    reason: str
    since: float
    next_at: float
    attempts: int


class SyncState:
    """One connection to the state database; every write is its own transaction."""

    def __init__(self, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        self.path = path
        # Used from the event loop and its worker threads, one statement at a time (the lock).
        self._db = sqlite3.connect(
            path, timeout=10.0, isolation_level=None, check_same_thread=False
        )
        self._lock = threading.RLock()
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("PRAGMA synchronous=NORMAL")
        self._db.executescript(_SCHEMA)

    @classmethod
    def open(cls, settings: Settings) -> SyncState:
        return cls(settings.state_dir / DB_NAME)

    @staticmethod
    def exists(settings: Settings) -> bool:
        return (settings.state_dir / DB_NAME).is_file()

    def close(self) -> None:
        with self._lock:
            self._db.close()

    # --- what each peer has ----------------------------------------------------------------

    def sent_versions(self, peer: str) -> dict[tuple[str, str], str]:
        rows = self._rows("SELECT agent, session, version FROM sent WHERE peer = ?", (peer,))
        return {(a, s): v for a, s, v in rows}

    def all_sent(self) -> dict[tuple[str, str, str], tuple[str, str, float]]:
        rows = self._rows("SELECT peer, agent, session, version, transport, at FROM sent")
        return {(p, a, s): (v, t, at) for p, a, s, v, t, at in rows}

    def mark_sent(self, peer: str, agent: str, session: str, version: str, transport: str) -> None:
        """`peer` has this version (it acknowledged it, or it is where it came from)."""
        with self._tx():
            self._db.execute(
                "INSERT OR REPLACE INTO sent VALUES (?, ?, ?, ?, ?, ?)",
                (peer, agent, session, version, transport, time.time()),
            )
            self._db.execute(
                "DELETE FROM queue WHERE peer = ? AND agent = ? AND session = ?",
                (peer, agent, session),
            )

    def forget_sent(self, peer: str, agent: str, session: str) -> None:
        """`peer` does not hold what we sent it of this session (it refused an increment):
        the session is due for it again."""
        with self._tx():
            self._db.execute(
                "DELETE FROM sent WHERE peer = ? AND agent = ? AND session = ?",
                (peer, agent, session),
            )

    # --- what waits to be sent -------------------------------------------------------------

    def queued(self) -> dict[tuple[str, str, str], Queued]:
        rows = self._rows("SELECT * FROM queue")
        return {(r[0], r[1], r[2]): Queued(*r) for r in rows}

    def queue(
        self,
        peer: str,
        agent: str,
        session: str,
        version: str,
        reason: str,
        *,
        delay: float | None = None,
    ) -> Queued:
        """Record why a send did not happen. Without `delay`, a failed attempt: counted, and
        the next one put off by `backoff`; with it, a wait (an agent holds the session)
        looked at again after `delay` seconds."""
        now = time.time()
        found = self._rows(
            "SELECT attempts, since FROM queue WHERE peer = ? AND agent = ? AND session = ?",
            (peer, agent, session),
        )
        old = found[0] if found else None
        attempts = (old[0] if old else 0) + (1 if delay is None else 0)
        since = old[1] if old else now
        next_at = now + (backoff(attempts) if delay is None else delay)
        row = Queued(peer, agent, session, version, attempts, next_at, reason, since)
        with self._tx():
            self._db.execute(
                "INSERT OR REPLACE INTO queue VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                (peer, agent, session, version, attempts, next_at, reason, since),
            )
        return row

    def unqueue(self, peer: str, agent: str, session: str) -> None:
        with self._tx():
            self._db.execute(
                "DELETE FROM queue WHERE peer = ? AND agent = ? AND session = ?",
                (peer, agent, session),
            )

    def retry_now(self, peer: str) -> int:
        """`peer` showed up: its queued sends are due at once. How many."""
        with self._tx():
            cur = self._db.execute(
                "UPDATE queue SET next_at = ? WHERE peer = ? AND next_at > ?",
                (time.time(), peer, time.time()),
            )
        return cur.rowcount

    # --- what waits here to be imported ----------------------------------------------------

    def waiting(self) -> dict[str, Waiting]:
        rows = self._rows("SELECT * FROM waiting")
        return {r[0]: Waiting(*r) for r in rows}

    def wait(
        self,
        key: str,
        transport: str,
        sender: str,
        session: str,
        project: str,
        size: int,
        reason: str,
        delay: float | None = None,
    ) -> Waiting:
        now = time.time()
        found = self._rows("SELECT since, attempts FROM waiting WHERE key = ?", (key,))
        old = found[0] if found else None
        attempts = (old[1] if old else 0) + 1
        since = old[0] if old else now
        next_at = now + (backoff(attempts) if delay is None else delay)
        row = Waiting(
            key, transport, sender, session, project, size, reason, since, next_at, attempts
        )
        with self._tx():
            self._db.execute(
                "INSERT OR REPLACE INTO waiting VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                (key, transport, sender, session, project, size, reason, since, next_at, attempts),
            )
        return row

    def done_waiting(self, key: str) -> None:
        with self._tx():
            self._db.execute("DELETE FROM waiting WHERE key = ?", (key,))

    def keep_waiting_only(self, keys: set[str]) -> None:
        """Items no longer pending anywhere (imported by a `pull`, deleted) stop waiting."""
        gone = [k for k in self.waiting() if k not in keys]
        if not gone:
            return
        with self._tx():
            for key in gone:
                self._db.execute("DELETE FROM waiting WHERE key = ?", (key,))

    # --- labels read from sealed items -----------------------------------------------------

    def label(self, key: str) -> tuple[str, str, str] | None:
        found = self._rows("SELECT session, project, agent FROM labels WHERE key = ?", (key,))
        return (found[0][0], found[0][1], found[0][2]) if found else None

    def put_label(self, key: str, session: str, project: str, agent: str) -> None:
        with self._tx():
            self._db.execute(
                "INSERT OR REPLACE INTO labels VALUES (?, ?, ?, ?, ?)",
                (key, session, project, agent, time.time()),
            )
            self._db.execute(
                "DELETE FROM labels WHERE key NOT IN "
                "(SELECT key FROM labels ORDER BY at DESC LIMIT ?)",
                (MAX_LABELS,),
            )

    # ---------------------------------------------------------------------------------------

    def _tx(self) -> _Tx:
        return _Tx(self._db, self._lock)

    def _rows(self, sql: str, args: tuple[object, ...] = ()) -> list[tuple[Any, ...]]:
        with self._lock:
            return list(self._db.execute(sql, args))


class _Tx:
    def __init__(self, db: sqlite3.Connection, lock: threading.RLock) -> None:
        self._db = db
        self._lock = lock

    def __enter__(self) -> None:
        self._lock.acquire()
        self._db.execute("BEGIN IMMEDIATE")

    def __exit__(self, exc_type: object, *_: object) -> None:
        try:
            self._db.execute("COMMIT" if exc_type is None else "ROLLBACK")
        finally:
            self._lock.release()
