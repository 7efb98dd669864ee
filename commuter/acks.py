"""What paired peers hold of this machine's sessions, and what this machine imported from them:
the two sides of a delta (docs/protocol.md, "Delta transfer").

- `acked` (sender side): per (peer device id, agent, session) the state of the session the peer
  confirmed it imported (every bundle member's size and sha256). `pipeline.push_session` makes
  a delta against it; a refusal forgets it, so the next send is whole.
- `received` (receiver side): per (sender device id, agent, session) the last few states this
  machine imported from that sender, each with what the import left in the local transcript
  (its path, size and sha256). A delta is accepted only against one of them, and only while the
  local transcript still begins with exactly what that import wrote.
- `refused` (receiver side): per (sender, agent, session) the deltas (by digest) this machine
  could not apply and kept, and when it last asked the sender for the whole session
  (sync/nack.py); `answered` once an import of that session from that sender succeeded, after
  which those deltas are stale.

One SQLite file in the state dir (WAL, every write one statement: a crash keeps the old row or
the new one). Deleting it costs one whole transfer per session, nothing else.
"""

from __future__ import annotations

import sqlite3
import time
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import orjson

# member name -> (size, sha256 hex)
Members = Mapping[str, tuple[int, str]]

KEEP_RECEIVED = 8  # states kept per session: a delta from an older confirmed base still applies
ASK_AGAIN = 3600.0  # seconds before a sender that did not answer a refusal is asked again
_MAX_REFUSED = 64

_SCHEMA = (
    """CREATE TABLE IF NOT EXISTS acked (
        peer TEXT NOT NULL, agent TEXT NOT NULL, session_id TEXT NOT NULL,
        members TEXT NOT NULL, transcript TEXT NOT NULL, at TEXT NOT NULL,
        PRIMARY KEY (peer, agent, session_id))""",
    """CREATE TABLE IF NOT EXISTS received (
        seq INTEGER PRIMARY KEY AUTOINCREMENT,
        sender TEXT NOT NULL, agent TEXT NOT NULL, session_id TEXT NOT NULL,
        members TEXT NOT NULL, transcript TEXT NOT NULL,
        local_path TEXT NOT NULL, local_size INTEGER NOT NULL, local_sha256 TEXT NOT NULL,
        at TEXT NOT NULL)""",
    "CREATE INDEX IF NOT EXISTS received_key ON received (sender, agent, session_id, seq)",
    """CREATE TABLE IF NOT EXISTS refused (
        sender TEXT NOT NULL, agent TEXT NOT NULL, session_id TEXT NOT NULL,
        digests TEXT NOT NULL, asked_at REAL NOT NULL, answered INTEGER NOT NULL,
        PRIMARY KEY (sender, agent, session_id))""",
)


@dataclass(frozen=True, slots=True)
class Acked:
    """A session state a peer confirmed: `members` of the bundle it imported, `transcript` the
    name of the transcript member among them."""

    peer: str
    agent: str
    session_id: str
    members: dict[str, tuple[int, str]]
    transcript: str
    at: str


@dataclass(frozen=True, slots=True)
class Received:
    """A session state imported from `sender`, and what its import left locally."""

    sender: str
    agent: str
    session_id: str
    members: dict[str, tuple[int, str]]
    transcript: str
    local_path: Path
    local_size: int
    local_sha256: str
    at: str


def _path(state_dir: Path) -> Path:
    return state_dir / "acks.sqlite"


def _connect(state_dir: Path) -> sqlite3.Connection:
    state_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
    db = sqlite3.connect(_path(state_dir), timeout=10.0, isolation_level=None)
    db.execute("PRAGMA journal_mode=WAL")
    for statement in _SCHEMA:
        db.execute(statement)
    return db


def _change(state_dir: Path, sql: str, params: tuple[object, ...]) -> None:
    """Run one writing statement on the records, if there are any (none: nothing to change)."""
    if not _path(state_dir).exists():
        return
    db = _connect(state_dir)
    try:
        db.execute(sql, params)
    finally:
        db.close()


def _dump(members: Members) -> str:
    return orjson.dumps({k: [v[0], v[1]] for k, v in sorted(members.items())}).decode()


def _load(text: str) -> dict[str, tuple[int, str]]:
    obj = orjson.loads(text)
    return {str(k): (int(v[0]), str(v[1])) for k, v in obj.items()}


def _now() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds")


# --- sender side ----------------------------------------------------------------------------


def record_ack(
    state_dir: Path, peer: str, agent: str, session_id: str, members: Members, transcript: str
) -> None:
    """`peer` now holds `session_id` as `members` (replaces what it held before)."""
    db = _connect(state_dir)
    try:
        db.execute(
            "INSERT OR REPLACE INTO acked VALUES (?, ?, ?, ?, ?, ?)",
            (peer, agent, session_id, _dump(members), transcript, _now()),
        )
    finally:
        db.close()


def acked(state_dir: Path, peer: str, agent: str, session_id: str) -> Acked | None:
    """What `peer` confirmed of the session, or None (nothing, or forgotten)."""
    if not _path(state_dir).exists():
        return None
    db = _connect(state_dir)
    try:
        row = db.execute(
            "SELECT members, transcript, at FROM acked WHERE peer=? AND agent=? AND session_id=?",
            (peer, agent, session_id),
        ).fetchone()
    finally:
        db.close()
    if row is None:
        return None
    return Acked(peer, agent, session_id, _load(row[0]), row[1], row[2])


def all_acked(state_dir: Path) -> list[Acked]:
    """Every confirmed state, for `status` (empty when there is no record file)."""
    if not _path(state_dir).exists():
        return []
    db = _connect(state_dir)
    try:
        rows = db.execute(
            "SELECT peer, agent, session_id, members, transcript, at FROM acked"
        ).fetchall()
    finally:
        db.close()
    return [Acked(r[0], r[1], r[2], _load(r[3]), r[4], r[5]) for r in rows]


def forget_ack(state_dir: Path, peer: str, agent: str, session_id: str) -> None:
    """The peer refused a delta against what we thought it held: send it whole next time."""
    _change(
        state_dir,
        "DELETE FROM acked WHERE peer=? AND agent=? AND session_id=?",
        (peer, agent, session_id),
    )


# --- receiver side --------------------------------------------------------------------------


def record_received(
    state_dir: Path,
    sender: str,
    agent: str,
    session_id: str,
    members: Members,
    transcript: str,
    local_path: Path,
    local_size: int,
    local_sha256: str,
) -> None:
    """An import from `sender` left `local_path` at (`local_size`, `local_sha256`); keep the
    newest KEEP_RECEIVED states of the session."""
    db = _connect(state_dir)
    key = (sender, agent, session_id)
    try:
        db.execute("BEGIN IMMEDIATE")
        db.execute(
            "INSERT INTO received (sender, agent, session_id, members, transcript, local_path,"
            " local_size, local_sha256, at) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
            (*key, _dump(members), transcript, str(local_path), local_size, local_sha256, _now()),
        )
        db.execute(
            "DELETE FROM received WHERE sender=? AND agent=? AND session_id=? AND seq NOT IN"
            " (SELECT seq FROM received WHERE sender=? AND agent=? AND session_id=?"
            " ORDER BY seq DESC LIMIT ?)",
            (*key, *key, KEEP_RECEIVED),
        )
        db.execute("COMMIT")
    except BaseException:
        if db.in_transaction:
            db.execute("ROLLBACK")
        raise
    finally:
        db.close()


def received(state_dir: Path, sender: str, agent: str, session_id: str) -> list[Received]:
    """The states imported from `sender` of this session, newest first."""
    if not _path(state_dir).exists():
        return []
    db = _connect(state_dir)
    try:
        rows = db.execute(
            "SELECT members, transcript, local_path, local_size, local_sha256, at FROM received"
            " WHERE sender=? AND agent=? AND session_id=? ORDER BY seq DESC",
            (sender, agent, session_id),
        ).fetchall()
    finally:
        db.close()
    return [
        Received(sender, agent, session_id, _load(r[0]), r[1], Path(r[2]), r[3], r[4], r[5])
        for r in rows
    ]


def forget_received(state_dir: Path, sender: str, agent: str, session_id: str) -> None:
    """Drop every state of the session from `sender` (its local file moved or was replaced)."""
    _change(
        state_dir,
        "DELETE FROM received WHERE sender=? AND agent=? AND session_id=?",
        (sender, agent, session_id),
    )


def refuse_delta(state_dir: Path, sender: str, agent: str, session_id: str, digest: str) -> str:
    """Note that the delta `digest` from `sender` does not apply here and is kept. "stale": it
    was refused before and an import of the session from `sender` succeeded since (it is
    older than what is here now: drop it); "ask": ask the sender for the whole session (never
    asked, or ASK_AGAIN ago); "wait": asked lately, the whole session is on its way."""
    db = _connect(state_dir)
    key = (sender, agent, session_id)
    try:
        db.execute("BEGIN IMMEDIATE")
        row = db.execute(
            "SELECT digests, asked_at, answered FROM refused"
            " WHERE sender=? AND agent=? AND session_id=?",
            key,
        ).fetchone()
        digests: list[str] = orjson.loads(row[0]) if row else []
        asked_at = float(row[1]) if row else 0.0
        if row and row[2]:
            if digest in digests:
                db.execute("COMMIT")
                return "stale"
            digests, asked_at = [], 0.0  # a new refusal after the last was answered
        if digest not in digests:
            digests = [*digests, digest][-_MAX_REFUSED:]
        db.execute(
            "INSERT OR REPLACE INTO refused VALUES (?, ?, ?, ?, ?, 0)",
            (*key, orjson.dumps(digests).decode(), asked_at),
        )
        db.execute("COMMIT")
    except BaseException:
        if db.in_transaction:
            db.execute("ROLLBACK")
        raise
    finally:
        db.close()
    return "ask" if time.time() - asked_at >= ASK_AGAIN else "wait"


def asked_whole(state_dir: Path, sender: str, agent: str, session_id: str) -> None:
    """The refusal of the session went to `sender` now."""
    db = _connect(state_dir)
    try:
        db.execute(
            "UPDATE refused SET asked_at=? WHERE sender=? AND agent=? AND session_id=?",
            (time.time(), sender, agent, session_id),
        )
    finally:
        db.close()


def answered(state_dir: Path, sender: str, agent: str, session_id: str) -> None:
    """An import of the session from `sender` succeeded: the deltas refused before are stale."""
    _change(
        state_dir,
        "UPDATE refused SET answered=1 WHERE sender=? AND agent=? AND session_id=?",
        (sender, agent, session_id),
    )
