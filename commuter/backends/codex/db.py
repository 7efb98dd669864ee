"""Codex's thread database (`state_5.sqlite`, `thread_history_1.sqlite`), read and written only
through SQLite: WAL-aware reads, short `BEGIN IMMEDIATE` transactions, fixed statements whose
values are bound parameters (a bundle names no table or column; the columns written are the
intersection of `COLUMNS` with the target table's)."""

from __future__ import annotations

import contextlib
import sqlite3
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from commuter.errors import BackendError

STATE_DB = "state_5.sqlite"
HISTORY_DB = "thread_history_1.sqlite"

# The `threads` columns of 0.169.0 a bundle may carry (names are ours, never the bundle's).
COLUMNS: tuple[str, ...] = (
    "id",
    "rollout_path",
    "created_at",
    "updated_at",
    "source",
    "model_provider",
    "cwd",
    "title",
    "sandbox_policy",
    "approval_mode",
    "tokens_used",
    "has_user_event",
    "archived",
    "archived_at",
    "git_sha",
    "git_branch",
    "git_origin_url",
    "cli_version",
    "first_user_message",
    "agent_nickname",
    "agent_role",
    "memory_mode",
    "model",
    "reasoning_effort",
    "agent_path",
    "created_at_ms",
    "updated_at_ms",
    "thread_source",
    "preview",
    "recency_at",
    "recency_at_ms",
    "history_mode",
    "name",
    "originator",
)
# NOT NULL columns without a default in 0.169.0, and what a row lacking them gets.
REQUIRED: dict[str, object] = {
    "created_at": 0,
    "updated_at": 0,
    "source": "exec",
    "model_provider": "openai",
    "title": "",
    "sandbox_policy": "{}",
    "approval_mode": "never",
}
# Tables of thread_history_1.sqlite holding a projection of one thread's rollout (byte offsets
# into it): dropped when the rollout is replaced, so codex projects it again (as its own
# rebuild does).
HISTORY_TABLES: tuple[str, ...] = (
    "thread_items",
    "thread_turns",
    "thread_realtime_items",
    "thread_history_projection_state",
)
_DELETE_HISTORY = {t: f"DELETE FROM {t} WHERE thread_id = ?" for t in HISTORY_TABLES}
TIMEOUT = 5.0


def _ro(path: Path) -> sqlite3.Connection:
    # mode=ro still reads the -wal (the newest rows may live only there); it never checkpoints.
    conn = sqlite3.connect(f"{path.resolve().as_uri()}?mode=ro", uri=True, timeout=TIMEOUT)
    conn.row_factory = sqlite3.Row
    return conn


def read_threads(codex_home: Path) -> dict[str, dict[str, Any]]:
    """Every `threads` row by id ({} without a readable database)."""
    path = codex_home / STATE_DB
    if not path.is_file():
        return {}
    try:
        with contextlib.closing(_ro(path)) as conn:
            return {str(r["id"]): dict(r) for r in conn.execute("SELECT * FROM threads")}
    except sqlite3.Error:
        return {}


def read_edges(codex_home: Path) -> list[tuple[str, str, str]]:
    path = codex_home / STATE_DB
    if not path.is_file():
        return []
    try:
        with contextlib.closing(_ro(path)) as conn:
            rows = conn.execute(
                "SELECT parent_thread_id, child_thread_id, status FROM thread_spawn_edges"
            )
            return [(str(a), str(b), str(c)) for a, b, c in rows]
    except sqlite3.Error:
        return []


def clean_row(row: Any) -> dict[str, Any]:
    """A bundle's threads row reduced to `COLUMNS` with plain values (else BackendError)."""
    if not isinstance(row, dict):
        raise BackendError("bundle's codex thread row is not an object")
    out: dict[str, Any] = {}
    for key in COLUMNS:
        if key not in row:
            continue
        value = row[key]
        if (value is not None and not isinstance(value, (str, int))) or isinstance(value, bool):
            raise BackendError(f"bundle's codex thread row has a bad {key!r}")
        if isinstance(value, str) and len(value) > 1 << 20:
            raise BackendError(f"bundle's codex thread row has an oversized {key!r}")
        out[key] = value
    return out


class Writer:
    """One write transaction on each database that exists (a fresh ~/.codex has none: codex
    fills them from the rollouts on its first start). `begin` takes the write locks (waiting up
    to TIMEOUT for a running codex), `commit`/`rollback` end them."""

    def __init__(self, codex_home: Path) -> None:
        self.state: sqlite3.Connection | None = None
        self.history: sqlite3.Connection | None = None
        self.home = codex_home

    def begin(self) -> None:
        try:
            self.state = self._open(self.home / STATE_DB)
            self.history = self._open(self.home / HISTORY_DB)
        except sqlite3.Error as exc:
            self.rollback()
            raise BackendError(
                f"codex database busy or unreadable ({exc}); nothing was written"
            ) from exc

    @staticmethod
    def _open(path: Path) -> sqlite3.Connection | None:
        if not path.is_file():
            return None
        conn = sqlite3.connect(path, timeout=TIMEOUT, isolation_level=None)
        conn.execute("BEGIN IMMEDIATE")
        return conn

    def upsert(self, row: dict[str, Any]) -> None:
        if self.state is None:
            return
        have = {str(r[1]) for r in self.state.execute("PRAGMA table_info(threads)")}
        values = {
            **{k: v for k, v in REQUIRED.items() if k in have},
            **{k: v for k, v in row.items() if k in have and k in COLUMNS and v is not None},
        }
        if values.get("archived") == 0 and "archived_at" in have:
            values["archived_at"] = None  # unarchived: codex clears it too
        names = [k for k in COLUMNS if k in values]  # names from our fixed list only
        sql = (
            f"INSERT INTO threads ({', '.join(names)}) VALUES ({', '.join('?' * len(names))}) "
            f"ON CONFLICT(id) DO UPDATE SET "
            + ", ".join(f"{k} = excluded.{k}" for k in names if k != "id")
        )
        self.state.execute(sql, [values[k] for k in names])

    def edge(self, parent: str, child: str, status: str) -> None:
        if self.state is None:
            return
        self.state.execute(
            "INSERT INTO thread_spawn_edges (parent_thread_id, child_thread_id, status) "
            "VALUES (?, ?, ?) ON CONFLICT(child_thread_id) DO UPDATE SET "
            "parent_thread_id = excluded.parent_thread_id, status = excluded.status",
            (parent, child, status),
        )

    def drop_children(self, parent: str, keep: set[str]) -> None:
        """Spawn edges of `parent` to threads other than `keep` go (a replaced branch's)."""
        if self.state is None:
            return
        rows = self.state.execute(
            "SELECT child_thread_id FROM thread_spawn_edges WHERE parent_thread_id = ?",
            (parent,),
        ).fetchall()
        for (child,) in rows:
            if child not in keep:
                self.state.execute(
                    "DELETE FROM thread_spawn_edges WHERE parent_thread_id = ? "
                    "AND child_thread_id = ?",
                    (parent, child),
                )

    def forget_history(self, thread_id: str) -> None:
        if self.history is None:
            return
        have = {
            str(r[0])
            for r in self.history.execute("SELECT name FROM sqlite_master WHERE type = 'table'")
        }
        for table, sql in _DELETE_HISTORY.items():
            if table in have:
                self.history.execute(sql, (thread_id,))

    def commit(self) -> None:
        for conn in (self.state, self.history):
            if conn is not None:
                conn.execute("COMMIT")
        self.close()

    def rollback(self) -> None:
        for conn in (self.state, self.history):
            if conn is not None and conn.in_transaction:
                with contextlib.suppress(sqlite3.Error):
                    conn.execute("ROLLBACK")
        self.close()

    def close(self) -> None:
        for conn in (self.state, self.history):
            if conn is not None:
                conn.close()
        self.state = self.history = None


@contextlib.contextmanager
def writing(codex_home: Path) -> Iterator[Writer]:
    w = Writer(codex_home)
    w.begin()
    try:
        yield w
    except BaseException:
        w.rollback()
        raise


def newest_in(codex_home: Path, cwd: str) -> str | None:
    """The id `codex resume --last` takes in `cwd` (newest updated, user threads, unarchived)."""
    path = codex_home / STATE_DB
    if not path.is_file():
        return None
    try:
        with contextlib.closing(_ro(path)) as conn:
            row = conn.execute(
                "SELECT id FROM threads WHERE cwd = ? AND archived = 0 "
                "AND COALESCE(thread_source, 'user') != 'subagent' "
                "ORDER BY updated_at_ms DESC, updated_at DESC LIMIT 1",
                (cwd,),
            ).fetchone()
    except sqlite3.Error:
        return None
    return str(row[0]) if row else None
