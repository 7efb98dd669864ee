"""The Codex backend on copies of real codex 0.169.0 sessions (tests/data/codex): listing
(the newest row only in the -wal), export with subagent threads, import at another home whose
codex databases exist, path rewriting (never prose), continuity, hostile bundles, busy threads."""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import sqlite3
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from conftest import settings_for

from commuter import core
from commuter.backends.codex import CodexBackend
from commuter.backends.codex.rewrite import Rewriter
from commuter.errors import BackendError, CommuterError
from commuter.model import ImportOptions, ImportResult
from commuter.pathmap import PathMap
from commuter.settings import Settings

DATA = Path(__file__).parent / "data" / "codex" / "home"
FIXTURE_HOME = "/tmp/rcfix/codex/home"
PLAIN = "01a20de1-b932-72d1-965b-213b9c864c15"
TOOLS = "01a20de1-ba31-7a80-9ef1-1e5d41423c07"
PARENT = "01a20de1-bbc7-7f21-9e14-30f0ac11cc53"
CHILD = "01a20de1-bc14-7162-b2a1-d92ee034471a"
RESUMED = "01a20de1-bd52-7ab2-b775-a4a2cbcbb3c3"
DOT_SPACE = "01a20de1-c061-7b23-8d36-9c6f0412f4d1"


@contextlib.contextmanager
def _db(path: Path) -> Iterator[sqlite3.Connection]:
    """A connection that commits and closes (sqlite3's own `with` only commits)."""
    conn = sqlite3.connect(path)
    try:
        with conn:
            yield conn
    finally:
        conn.close()


@pytest.fixture(autouse=True)
def codex_registered(monkeypatch: pytest.MonkeyPatch) -> None:
    """The CLI and core find the codex backend (as a built-in or, here, registered by the test)."""
    from commuter import backends

    monkeypatch.setitem(backends.BUILTIN, "codex", "commuter.backends.codex:CodexBackend")


def install(home: Path) -> Path:
    """The fixture's ~/.codex and projects at `home`, its paths moved there (rollouts by
    bytes, database rows through SQLite, the -wal kept as codex left it)."""
    home.mkdir(parents=True, exist_ok=True)
    shutil.copytree(DATA, home, dirs_exist_ok=True)
    for path in (home / ".codex" / "sessions").rglob("*.jsonl"):
        path.write_bytes(path.read_bytes().replace(FIXTURE_HOME.encode(), str(home).encode()))
    with _db(home / ".codex" / "state_5.sqlite") as conn:
        conn.execute(
            "UPDATE threads SET rollout_path = replace(rollout_path, ?, ?), "
            "cwd = replace(cwd, ?, ?)",
            (FIXTURE_HOME, str(home)) * 2,
        )
    return home


def rollout(home: Path, tid: str) -> Path:
    return next((home / ".codex" / "sessions").rglob(f"rollout-*-{tid}.jsonl"))


def lines(path: Path) -> list[dict[str, Any]]:
    return [json.loads(x) for x in path.read_text().splitlines() if x.strip()]


def row(home: Path, tid: str) -> dict[str, Any] | None:
    conn = sqlite3.connect(f"file:{home / '.codex' / 'state_5.sqlite'}?mode=ro", uri=True)
    conn.row_factory = sqlite3.Row
    try:
        found = conn.execute("SELECT * FROM threads WHERE id = ?", (tid,)).fetchone()
    finally:
        conn.close()
    return dict(found) if found else None


def carry(sa: Settings, sb: Settings, stage: Path, sid: str, **opts: Any) -> ImportResult:
    stage.mkdir(parents=True, exist_ok=True)
    out = stage / f"{sid}-{time.monotonic_ns()}.bundle"
    with out.open("wb") as fh:
        core.export_to(sa, fh, session=sid)
    return core.import_file(sb, out, ImportOptions(**opts))


@pytest.fixture
def two(tmp_path: Path):
    """A (the fixture) and B: another home whose codex already has its own threads (the same
    fixture, minus the ones a test carries over), projects under another path."""
    a = install(tmp_path / "A home.v1")
    b = install(tmp_path / "B")
    for tid in (TOOLS, PARENT, CHILD, DOT_SPACE, PLAIN):
        rollout(b, tid).unlink()
    with _db(b / ".codex" / "state_5.sqlite") as conn:
        conn.execute(
            "DELETE FROM threads WHERE id IN (?, ?, ?, ?, ?)",
            (TOOLS, PARENT, CHILD, DOT_SPACE, PLAIN),
        )
        conn.execute("DELETE FROM thread_spawn_edges")
    with _db(b / ".codex" / "thread_history_1.sqlite") as conn:
        for table in ("thread_items", "thread_turns", "thread_history_projection_state"):
            conn.execute(
                f"DELETE FROM {table} WHERE thread_id IN (?, ?, ?, ?, ?)",
                (TOOLS, PARENT, CHILD, DOT_SPACE, PLAIN),
            )
    (b / "work" / "my.app").mkdir(parents=True)
    (b / "work" / "My Project.v2").mkdir(parents=True)
    return a, b, settings_for(a), settings_for(b)


def test_sessions_read_the_wal_and_skip_subagents(tmp_path: Path) -> None:
    a = tmp_path / "A"
    shutil.copytree(DATA, a)  # as codex left it: the newest row only in the -wal
    assert (a / ".codex" / "state_5.sqlite-wal").stat().st_size > 0
    refs = list(CodexBackend(settings_for(a)).sessions())
    ids = [r.session_id for r in refs]
    assert set(ids) == {PLAIN, TOOLS, PARENT, RESUMED, DOT_SPACE}  # CHILD is a subagent
    assert ids[0] == DOT_SPACE  # newest; its row lives only in state_5.sqlite-wal
    assert refs[0].project == Path(FIXTURE_HOME) / "projects" / "My Project.v2"
    assert refs[0].first_prompt == "Remember the codeword KIWI-314."
    assert (a / ".codex" / "state_5.sqlite-wal").is_file()  # read, never checkpointed away


def test_no_codex_home_lists_nothing(tmp_path: Path) -> None:
    backend = CodexBackend(settings_for(tmp_path / "empty"))
    assert list(backend.sessions()) == []
    assert backend.doctor_checks()[1][1] is False


def test_codex_home_env_var(tmp_path: Path) -> None:
    a = install(tmp_path / "A")
    moved = tmp_path / "elsewhere"
    shutil.move(a / ".codex", moved)
    s = Settings.from_env({"HOME": str(tmp_path / "none"), "CODEX_HOME": str(moved)})
    assert len(list(CodexBackend(s).sessions())) == 5


def test_find_by_prefix_and_cwd(tmp_path: Path) -> None:
    a = install(tmp_path / "A")
    backend = CodexBackend(settings_for(a))
    assert backend.find(DOT_SPACE[:13], Path("/")).session_id == DOT_SPACE
    assert backend.find(None, a / "projects" / "my.app").session_id == RESUMED
    with pytest.raises(CommuterError):
        backend.find("01a20de1", Path("/"))  # ambiguous


def test_tools_thread_moves_translated_prose_kept(two, tmp_path: Path) -> None:
    a, b, sa, sb = two
    src, dst = a / "projects" / "my.app", b / "work" / "my.app"
    res = carry(sa, sb, tmp_path / "stage", TOOLS, project_dir=dst)
    assert res.action == "created" and res.session_id == TOOLS and res.project_dir == dst
    path = rollout(b, TOOLS)
    assert path.name == rollout(a, TOOLS).name and path.parent.name == "24"
    assert res.transcript == path
    got = lines(path)
    meta = got[0]["payload"]
    assert meta["cwd"] == str(dst) and meta["runtime_workspace_roots"] == [str(dst)]
    assert {e["payload"]["cwd"] for e in got if e["type"] == "turn_context"} == {str(dst)}
    env = next(
        p["text"]
        for e in got
        if e["type"] == "response_item"
        for p in e["payload"].get("content") or []
        if p.get("text", "").startswith("<environment_context>")
    )
    assert f"<cwd>{dst}</cwd>" in env and str(src) not in env
    calls = [
        json.loads(e["payload"]["arguments"])["cmd"]
        for e in got
        if e["payload"].get("type") == "function_call"
    ]
    assert f"*** Update File: {dst}/a.txt" in calls[1]
    assert f"*** Add File: {dst}/notes/new.txt" in calls[2]
    assert calls[0] == f"cat {dst}/a.txt"
    items = [e["payload"]["item"] for e in got if e["payload"].get("type") == "item_completed"]
    changes = [k for i in items if i["type"] == "FileChange" for k in i["changes"]]
    assert changes == [f"{dst}/a.txt", f"{dst}/notes/new.txt"]
    cwds = {i["cwd"] for i in items if i["type"] == "CommandExecution"}
    assert cwds == {"file://" + str(dst)}
    # prose: the prompt, the model's words, tool output still name the source path
    prompt = next(i for i in items if i["type"] == "UserMessage")["content"][0]["text"]
    assert f"TOOL:Read:{src}/a.txt" in prompt
    outputs = " ".join(
        e["payload"]["output"] for e in got if e["payload"].get("type") == "function_call_output"
    )
    stdout = [i.get("stdout", "") for i in items if i["type"] == "FileChange"]
    assert str(src) in stdout[0]
    assert str(dst) not in outputs
    # the database row, written in a transaction at B (whose codex already has threads)
    r = row(b, TOOLS)
    assert r is not None and r["rollout_path"] == str(path) and r["cwd"] == str(dst)
    assert r["title"] == row(a, TOOLS)["title"]  # type: ignore[index]
    assert row(b, RESUMED) is not None  # B's own thread untouched


def test_dot_space_project_and_skills_root(two, tmp_path: Path) -> None:
    a, b, sa, sb = two
    dst = b / "work" / "My Project.v2"
    res = carry(sa, sb, tmp_path / "stage", DOT_SPACE, project_dir=dst)
    text = rollout(b, DOT_SPACE).read_text()
    assert str(a / "projects") not in text
    assert str(a / ".codex" / "skills") not in text
    assert str(b / ".codex" / "skills" / ".system") in text
    assert row(b, DOT_SPACE)["cwd"] == str(dst)  # type: ignore[index]
    backend = CodexBackend(sb)
    assert backend.picks_up(res)
    assert backend.continue_command(res) == f"cd '{dst}' && codex exec resume --last"
    assert backend.resume_command(res) == f"cd '{dst}' && codex resume {DOT_SPACE}"
    assert backend.launch_argv(res) == ["codex", "resume", DOT_SPACE]


def test_subagent_threads_travel(two, tmp_path: Path) -> None:
    _a, b, sa, sb = two
    dst = b / "work" / "my.app"
    res = carry(sa, sb, tmp_path / "stage", PARENT, project_dir=dst)
    assert res.action == "created"
    child = rollout(b, CHILD)
    assert lines(child)[0]["payload"]["cwd"] == str(dst)
    r = row(b, CHILD)
    assert r is not None and r["thread_source"] == "subagent" and r["rollout_path"] == str(child)
    with _db(b / ".codex" / "state_5.sqlite") as conn:
        edges = conn.execute(
            "SELECT parent_thread_id, child_thread_id FROM thread_spawn_edges"
        ).fetchall()
    assert edges == [(PARENT, CHILD)]


def test_fresh_codex_home_gets_only_the_rollout(tmp_path: Path) -> None:
    a = install(tmp_path / "A")
    b = tmp_path / "B"
    (b / "p").mkdir(parents=True)
    res = carry(settings_for(a), settings_for(b), tmp_path / "s", PLAIN, project_dir=b / "p")
    assert res.action == "created"
    assert rollout(b, PLAIN).is_file()
    assert not (b / ".codex" / "state_5.sqlite").exists()  # codex backfills it on first start


def test_continuity_same_continuation_divergence(two, tmp_path: Path) -> None:
    a, b, sa, sb = two
    dst = b / "work" / "my.app"
    stage = tmp_path / "stage"
    assert carry(sa, sb, stage, PLAIN, project_dir=dst).action == "created"
    assert carry(sa, sb, stage, PLAIN, project_dir=dst).action == "unchanged"
    # A continues: lines appended there; B takes it as an update, after a backup
    src = rollout(a, PLAIN)
    extra = json.loads(src.read_text().splitlines()[-1])
    extra["ordinal"] += 1
    extra["timestamp"] = "2026-11-25T00:00:00.000Z"
    with src.open("a") as fh:
        fh.write(json.dumps(extra) + "\n")
    with _db(b / ".codex" / "thread_history_1.sqlite") as conn:
        conn.execute(
            "INSERT OR REPLACE INTO thread_history_projection_state VALUES (?, 1, 1)", (PLAIN,)
        )
    res = carry(sa, sb, stage, PLAIN, project_dir=dst)
    assert res.action == "updated" and res.backups and res.backups[0].is_file()
    assert len(lines(rollout(b, PLAIN))) == len(lines(src))
    with _db(b / ".codex" / "thread_history_1.sqlite") as conn:
        assert conn.execute(
            "SELECT COUNT(*) FROM thread_history_projection_state WHERE thread_id = ?", (PLAIN,)
        ).fetchone() == (0,)
    # B continues on its own, A too: divergent → a fork with a new id, both kept
    mine = rollout(b, PLAIN)
    extra["timestamp"] = "2026-11-26T00:00:00.000Z"
    extra["ordinal"] += 1
    with mine.open("a") as fh:
        fh.write(json.dumps(extra) + "\n")
    extra["timestamp"] = "2026-11-27T00:00:00.000Z"
    with src.open("a") as fh:
        fh.write(json.dumps(extra) + "\n")
    before = mine.read_bytes()
    res = carry(sa, sb, stage, PLAIN, project_dir=dst)
    assert res.action == "forked" and res.original_session_id == PLAIN
    assert res.session_id != PLAIN and CodexBackend(sb).is_session_id(res.session_id)
    assert res.session_id[14] == "7"  # a UUIDv7, as codex makes them
    assert mine.read_bytes() == before
    fork = rollout(b, res.session_id)
    assert lines(fork)[0]["payload"]["id"] == res.session_id
    assert PLAIN not in fork.read_text()
    assert row(b, res.session_id)["rollout_path"] == str(fork)  # type: ignore[index]
    # the local one is newer than a bundle it extends: kept
    res = carry(sb, sa, stage, res.session_id, project_dir=a / "projects" / "my.app")
    assert res.action == "created"


def test_dry_run_writes_nothing(two, tmp_path: Path) -> None:
    _a, b, sa, sb = two
    res = carry(sa, sb, tmp_path / "s", TOOLS, project_dir=b / "work" / "my.app", dry_run=True)
    assert res.action == "dry-run" and res.planned == "created"
    assert row(b, TOOLS) is None
    assert not list((b / ".codex" / "sessions").rglob(f"*{TOOLS}*"))


def test_rewriter_leaves_unknown_and_prose_lines_alone() -> None:
    rw = Rewriter(PathMap.of([("/a/p", "/b/q")]))
    prose = (
        b'{"timestamp":"t","ordinal":1,"type":"response_item","payload":{"type":"message",'
        b'"role":"user","content":[{"type":"input_text","text":"see /a/p/x"}]}}\n'
    )
    assert rw.line(prose) == prose
    assert rw.line(b"not json\n") == b"not json\n"
    meta = b'{"type":"session_meta","payload":{"cwd":"/a/pp","runtime_workspace_roots":["/a/p"]}}'
    assert json.loads(rw.line(meta))["payload"] == {
        "cwd": "/a/pp",
        "runtime_workspace_roots": ["/b/q"],
    }
    call = {
        "type": "response_item",
        "payload": {
            "type": "function_call",
            "arguments": json.dumps({"cmd": "cd /a/p && cat /a/pp/x /a/p/y", "workdir": "/a/p"}),
        },
    }
    args = json.loads(json.loads(rw.line(json.dumps(call).encode()))["payload"]["arguments"])
    assert args == {"cmd": "cd /b/q && cat /a/pp/x /b/q/y", "workdir": "/b/q"}


def test_rewriter_shortcut_still_finds_every_form_of_a_path() -> None:
    """Lines naming no source prefix are copied unparsed; a prefix written \\u-escaped, inside
    a JSON string in a JSON string, or percent-encoded in a file:// URL is still found."""
    rw = Rewriter(PathMap.of([("/a/My Dir.é", "/b/q")]))
    plain = b'{"type":"event_msg","payload":{"type":"token_count","cwd":"/elsewhere"}}\n'
    assert rw.line(plain) is plain  # the very bytes: not parsed, not dumped again
    escaped = b'{"type":"session_meta","payload":{"cwd":"/a/My Dir.\\u00e9/x"}}\n'
    assert json.loads(rw.line(escaped))["payload"]["cwd"] == "/b/q/x"
    nested = json.dumps(
        {
            "type": "response_item",
            "payload": {
                "type": "function_call",
                "arguments": json.dumps({"cmd": 'cat "/a/My Dir.é/x"'}, ensure_ascii=False),
            },
        },
        ensure_ascii=False,
    ).encode()
    out = json.loads(json.loads(rw.line(nested))["payload"]["arguments"])
    assert out == {"cmd": 'cat "/b/q/x"'}
    url = json.dumps(
        {
            "type": "event_msg",
            "payload": {
                "type": "item_completed",
                "item": {"type": "CommandExecution", "cwd": "file:///a/My%20Dir.%C3%A9"},
            },
        }
    ).encode()
    assert json.loads(rw.line(url))["payload"]["item"]["cwd"] == "file:///b/q"
    # a source of / leaves no shortcut: every line is looked at
    assert Rewriter(PathMap.of([("/", "/r/")]))._needles is None


# --- bad input and safety ---------------------------------------------------------------------


def _source(tmp_path: Path, sid: str, meta: dict[str, Any], members: dict[str, bytes]):
    from commuter.backends import ImportSource

    root = tmp_path / "unpacked"
    for name, data in members.items():
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        (root / name).write_bytes(data)
    return ImportSource(sid, "/nowhere/p", root, tuple(members), meta=meta)


def test_hostile_ids_and_members_are_refused(two, tmp_path: Path) -> None:
    _a, b, _sa, sb = two
    backend = CodexBackend(sb)
    opts = ImportOptions(project_dir=b / "work" / "my.app")
    assert not backend.is_session_id("../../etc")
    with pytest.raises(BackendError, match="not a UUID"):
        backend.place(_source(tmp_path, "x; DROP TABLE threads", {}, {}), opts)
    line = rollout(b, RESUMED).read_bytes()
    bad = _source(
        tmp_path, PLAIN, {}, {f"session/{PLAIN}.jsonl": line, "subagents/../../evil.jsonl": b"{}"}
    )
    with pytest.raises(BackendError, match="subagent"):
        backend.place(bad, opts)
    rows = {"codex_threads": {PLAIN: {"id": PLAIN, "title": ["not", "text"]}}}
    with pytest.raises(BackendError, match="title"):
        backend.place(_source(tmp_path, PLAIN, rows, {f"session/{PLAIN}.jsonl": line}), opts)
    assert row(b, PLAIN) is None


def test_hostile_row_cannot_inject_sql(two, tmp_path: Path) -> None:
    _a, b, _sa, sb = two
    evil = "x'); DROP TABLE threads; --"
    meta = {
        "codex_threads": {
            PLAIN: {
                "id": PLAIN,
                "title": evil,
                "cwd) VALUES (1); DROP TABLE threads; --": "x",
                "rollout_path": "/etc/passwd",
            }
        },
        "codex_rollout_names": {PLAIN: "../../../../evil.jsonl"},
        "codex_edges": [["a'; DROP TABLE threads;--", PLAIN, "open"]],
    }
    data = rollout(b, RESUMED).read_bytes().replace(RESUMED.encode(), PLAIN.encode())
    res = CodexBackend(sb).place(
        _source(tmp_path, PLAIN, meta, {f"session/{PLAIN}.jsonl": data}),
        ImportOptions(project_dir=b / "work" / "my.app"),
    )
    r = row(b, PLAIN)
    assert r is not None and r["title"] == evil
    assert r["rollout_path"] == str(res.transcript)  # ours, never the bundle's
    assert res.transcript is not None and res.transcript.is_relative_to(b / ".codex" / "sessions")
    assert row(b, RESUMED) is not None


def test_a_bundle_cannot_rewrite_a_local_thread_by_calling_it_its_subagent(
    two, tmp_path: Path
) -> None:
    _a, b, _sa, sb = two
    theirs = rollout(b, RESUMED)
    before, row_before = theirs.read_bytes(), row(b, RESUMED)
    forged = [json.loads(x) for x in before.decode().splitlines()]
    forged[-1]["timestamp"] = "2099-01-01T00:00:00.000Z"  # diverges from B's own thread
    forged.append({**forged[-1], "ordinal": forged[-1]["ordinal"] + 1})
    data = rollout(b, RESUMED).read_bytes().replace(RESUMED.encode(), PLAIN.encode())
    meta = {
        "codex_threads": {RESUMED: {"id": RESUMED, "title": "hijacked"}},
        "codex_edges": [[PLAIN, RESUMED, "open"]],
    }
    members = {
        f"session/{PLAIN}.jsonl": data,
        f"subagents/{RESUMED}.jsonl": "".join(json.dumps(e) + "\n" for e in forged).encode(),
    }
    res = CodexBackend(sb).place(
        _source(tmp_path, PLAIN, meta, members), ImportOptions(project_dir=b / "work" / "my.app")
    )
    assert res.action == "created" and any(RESUMED in w for w in res.warnings)
    assert theirs.read_bytes() == before and row(b, RESUMED) == row_before
    with _db(b / ".codex" / "state_5.sqlite") as conn:
        assert conn.execute(
            "SELECT COUNT(*) FROM thread_spawn_edges WHERE child_thread_id = ?", (RESUMED,)
        ).fetchone() == (0,)


def test_a_thread_a_running_codex_holds_is_not_replaced(two, tmp_path: Path) -> None:
    a, b, sa, sb = two
    dst = b / "work" / "my.app"
    stage = tmp_path / "stage"
    carry(sa, sb, stage, PLAIN, project_dir=dst)
    held = rollout(b, PLAIN)
    with rollout(a, PLAIN).open("a") as fh:
        fh.write(
            '{"timestamp":"2026-12-01T00:00:00Z","ordinal":99,"type":"event_msg",'
            '"payload":{"type":"task_started"}}\n'
        )
    code = "import sys, time; f = open(sys.argv[1], 'rb'); print('ok', flush=True); time.sleep(60)"
    proc = subprocess.Popen(
        ["codex", "-c", code, str(held)],
        executable=sys.executable,
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert proc.stdout is not None and proc.stdout.readline().strip() == "ok"
        before = held.read_bytes()
        with pytest.raises(BackendError, match=f"pid {proc.pid}"):
            carry(sa, sb, stage, PLAIN, project_dir=dst)
        assert held.read_bytes() == before
    finally:
        proc.kill()
        proc.wait()
        assert proc.stdout is not None
        proc.stdout.close()
    assert carry(sa, sb, stage, PLAIN, project_dir=dst).action == "updated"


def test_database_locked_by_a_writer_fails_cleanly(two, tmp_path: Path, monkeypatch) -> None:
    _a, b, sa, sb = two
    from commuter.backends.codex import db

    monkeypatch.setattr(db, "TIMEOUT", 0.2)
    holder = sqlite3.connect(b / ".codex" / "state_5.sqlite", isolation_level=None)
    holder.execute("BEGIN IMMEDIATE")
    try:
        with pytest.raises(BackendError, match="busy"):
            carry(sa, sb, tmp_path / "s", TOOLS, project_dir=b / "work" / "my.app")
    finally:
        holder.execute("ROLLBACK")
        holder.close()
    assert not list((b / ".codex" / "sessions").rglob(f"*{TOOLS}*"))  # nothing lost or half
    assert os.path.exists(b / ".codex" / "state_5.sqlite")


def archive(home: Path, tid: str) -> Path:
    """What `codex archive <id>` (0.169.0) does: the rollout moves to archived_sessions/ under
    its own name, the row gets archived = 1, archived_at and the new rollout_path."""
    src = rollout(home, tid)
    dest = home / ".codex" / "archived_sessions" / src.name
    dest.parent.mkdir(exist_ok=True)
    src.rename(dest)
    with _db(home / ".codex" / "state_5.sqlite") as conn:
        conn.execute(
            "UPDATE threads SET archived = 1, archived_at = 1796237257, rollout_path = ? "
            "WHERE id = ?",
            (str(dest), tid),
        )
    return dest


def test_a_thread_archived_at_the_target(two, tmp_path: Path) -> None:
    """The same version again leaves it archived (a warning says how to unarchive it); a
    continuation unarchives it as `codex unarchive` does (back under sessions/, archived = 0),
    the archived copy backed up, not left behind."""
    a, b, sa, sb = two
    dst = b / "work" / "my.app"
    stage = tmp_path / "stage"
    assert carry(sa, sb, stage, PLAIN, project_dir=dst).action == "created"
    placed = rollout(b, PLAIN)
    stowed = archive(b, PLAIN)
    res = carry(sa, sb, stage, PLAIN, project_dir=dst)
    assert res.action == "unchanged" and any("codex unarchive" in w for w in res.warnings)
    assert row(b, PLAIN)["archived"] == 1 and stowed.is_file()  # type: ignore[index]
    # the export of an archived thread says why it does not go
    with open(os.devnull, "wb") as sink, pytest.raises(CommuterError, match="archived"):
        core.export_to(sb, sink, session=PLAIN)

    src = rollout(a, PLAIN)
    extra = json.loads(src.read_text().splitlines()[-1])
    extra["ordinal"] += 1
    extra["timestamp"] = "2026-11-25T00:00:00.000Z"
    with src.open("a") as fh:
        fh.write(json.dumps(extra) + "\n")
    res = carry(sa, sb, stage, PLAIN, project_dir=dst)
    assert res.action == "updated"
    assert res.backups and res.backups[0].read_bytes().count(b"\n") == len(lines(src)) - 1
    got = row(b, PLAIN)
    assert got is not None and got["archived"] == 0 and got["archived_at"] is None
    assert got["rollout_path"] == str(placed) and len(lines(placed)) == len(lines(src))
    assert not stowed.exists()
    assert CodexBackend(sb).find(PLAIN, dst).path == placed


def test_a_bundle_row_marked_archived_is_written_unarchived(two, tmp_path: Path) -> None:
    a, b, sa, sb = two
    with _db(a / ".codex" / "state_5.sqlite") as conn:
        conn.execute("UPDATE threads SET archived = 1, archived_at = 5 WHERE id = ?", (TOOLS,))
    res = carry(sa, sb, tmp_path / "stage", TOOLS, project_dir=b / "work" / "my.app")
    got = row(b, TOOLS)
    assert res.action == "created" and got is not None
    assert got["archived"] == 0 and got["archived_at"] is None
    assert Path(got["rollout_path"]).is_relative_to(b / ".codex" / "sessions")
