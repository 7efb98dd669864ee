"""Convergence of Codex threads: two machines whose copies of one thread diverged end up,
whichever order the bundles cross in, with the same threads under the same ids, every line on
both, one fork (its id derived alike on both) marked as a fork on both (copies of real codex
0.169.0 rollouts, bundles through core.export/import, codex's thread database at both)."""

from __future__ import annotations

import json
import sqlite3
import subprocess
import sys
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from conftest import settings_for
from test_codex_backend import (
    CHILD,
    DOT_SPACE,
    PARENT,
    PLAIN,
    RESUMED,
    TOOLS,
    _db,
    install,
    row,
)

from commuter import config, core, forks
from commuter.backends.codex import CodexBackend, db, lineage
from commuter.backends.codex.paths import rollouts, row_path
from commuter.errors import SessionBusy
from commuter.model import ImportOptions, ImportResult
from commuter.settings import Settings

PROJECT = "My Project.v2"


class Machine:
    """One fake machine: its home, settings, and the project folder of the thread."""

    def __init__(self, name: str, home: Path, settings: Settings, projects: Path) -> None:
        self.name, self.home, self.settings, self.projects = name, home, settings, projects
        self.project = projects / PROJECT

    def path(self, tid: str) -> Path:
        codex = self.home / ".codex"
        found = row_path(db.read_threads(codex).get(tid)) or rollouts(codex).get(tid)
        assert found is not None, (self.name, tid)
        return found

    def ids(self, project: Path | None = None) -> set[str]:
        """The threads `list` shows for `project` (default: the thread's)."""
        where = project or self.project
        return {r.session_id for r in CodexBackend(self.settings).sessions() if r.project == where}

    def all_ids(self, project: Path) -> set[str]:
        """Every thread row of `project`, subagent threads too."""
        conn = sqlite3.connect(self.home / ".codex" / "state_5.sqlite")
        try:
            found = conn.execute("SELECT id FROM threads WHERE cwd = ?", (str(project),))
            return {str(r[0]) for r in found}
        finally:
            conn.close()

    def keys(self, tid: str) -> list[lineage.Key]:
        return list(lineage.keys(self.path(tid)))

    def say(self, text: str, when: str, tid: str = DOT_SPACE) -> lineage.Key:
        """Append one turn as codex writes it (its context, the prompt, an answer); the key of
        its first line."""
        path = self.path(tid)
        last = json.loads(path.read_text().splitlines()[-1])
        n = int(last["ordinal"])
        turn = str(uuid.uuid4())
        cwd = str(self.project if tid == DOT_SPACE else self.projects / "my.app")
        entries: list[dict[str, Any]] = [
            {"type": "turn_context", "payload": {"turn_id": turn, "cwd": cwd, "model": "m"}},
            {
                "type": "response_item",
                "payload": {
                    "type": "message",
                    "role": "user",
                    "content": [{"type": "input_text", "text": text}],
                },
            },
            {
                "type": "response_item",
                "payload": {
                    "type": "message",
                    "role": "assistant",
                    "content": [{"type": "output_text", "text": f"ok: {text}"}],
                },
            },
        ]
        with path.open("a", encoding="utf-8") as fh:
            for i, entry in enumerate(entries):
                line = {"timestamp": when, "ordinal": n + 1 + i, **entry}
                fh.write(json.dumps(line, separators=(",", ":")) + "\n")
        return (when, n + 1, "turn_context", None)

    def export(self, tid: str, out: Path) -> Path:
        ref = core.find_session(self.settings, tid)
        with out.open("wb") as fh:
            core.export_session(self.settings, fh, ref)
        return out

    def take(self, bundle: Path) -> ImportResult:
        return core.import_file(self.settings, bundle, ImportOptions(origin="the other"))


def _empty(home: Path, *tids: str) -> None:
    """The fixture's threads `tids` gone from `home` (rollouts, rows, edges)."""
    for tid in tids:
        for path in (home / ".codex" / "sessions").rglob(f"rollout-*-{tid}.jsonl"):
            path.unlink()
    marks = ", ".join("?" * len(tids))
    with _db(home / ".codex" / "state_5.sqlite") as conn:
        conn.execute(f"DELETE FROM threads WHERE id IN ({marks})", tids)
        conn.execute("DELETE FROM thread_spawn_edges")


@pytest.fixture
def pair(tmp_path: Path) -> tuple[Machine, Machine]:
    """A (the fixture) and B, whose codex has its own threads; B took A's thread once."""
    a_home, b_home = install(tmp_path / "A"), install(tmp_path / "B")
    _empty(b_home, DOT_SPACE, PARENT, CHILD)
    for sub in (PROJECT, "my.app"):
        (b_home / "work" / sub).mkdir(parents=True)
    sa, sb = settings_for(a_home), settings_for(b_home)
    for s in (sa, sb):
        config.set_value(s, "path-map", (str(a_home / "projects"), str(b_home / "work")))
    a = Machine("a", a_home, sa, a_home / "projects")
    b = Machine("b", b_home, sb, b_home / "work")
    assert b.take(a.export(DOT_SPACE, tmp_path / "first.bundle")).action == "created"
    return a, b


EARLY, LATE, LATER = "2099-01-01T10:00:00.000Z", "2099-01-01T10:05:00.000Z", "2099-01-01T11:00Z"


def _diverge(a: Machine, b: Machine, a_first: bool, tid: str = DOT_SPACE) -> lineage.Key:
    """Both go on apart; the side named by `a_first` began first. The loser's first key."""
    ka = a.say("only at A: add the parser", EARLY if a_first else LATE, tid)
    kb = b.say("only at B: fix the lexer", LATE if a_first else EARLY, tid)
    a.say("A goes on", LATER, tid)
    return kb if a_first else ka


def _converged(a: Machine, b: Machine, loser: lineage.Key, a_first: bool) -> str:
    fork = lineage.fork_id(DOT_SPACE, loser)
    assert a.ids() == b.ids() == {DOT_SPACE, fork}
    for tid in a.ids():
        assert a.keys(tid) == b.keys(tid), tid
    winner_text = "only at A" if a_first else "only at B"
    loser_text = "only at B" if a_first else "only at A"
    for m in (a, b):
        assert winner_text in m.path(DOT_SPACE).read_text()
        assert loser_text not in m.path(DOT_SPACE).read_text()
        text = m.path(fork).read_text()
        assert loser_text in text and DOT_SPACE not in text  # the fork names only itself
        assert json.loads(text.splitlines()[0])["payload"]["id"] == fork
        record = forks.lookup(m.settings.state_dir, "codex", fork)
        assert record is not None and record.origin_id == DOT_SPACE, m.name
        for tid in (DOT_SPACE, fork):
            r = row(m.home, tid)
            assert r is not None and r["rollout_path"] == str(m.path(tid)), (m.name, tid)
            assert r["cwd"] == str(m.project) and r["archived"] == 0
        assert "A goes on" in m.path(DOT_SPACE if a_first else fork).read_text()
    return fork


Exchange = Callable[[Machine, Machine, Path], None]


def _crossing(a: Machine, b: Machine, tmp: Path) -> None:
    """Both export before either imports: the bundles cross."""
    xa, xb = a.export(DOT_SPACE, tmp / "xa"), b.export(DOT_SPACE, tmp / "xb")
    a.take(xb)
    b.take(xa)
    _sync_all(a, b, tmp)


def _a_then_b(a: Machine, b: Machine, tmp: Path) -> None:
    b.take(a.export(DOT_SPACE, tmp / "xa"))
    _sync_all(b, a, tmp)


def _b_then_a(a: Machine, b: Machine, tmp: Path) -> None:
    a.take(b.export(DOT_SPACE, tmp / "xb"))
    _sync_all(a, b, tmp)


def _sync_all(first: Machine, second: Machine, tmp: Path, project: str = PROJECT) -> None:
    """Everything each has goes to the other (what the sync daemons do), twice over."""
    for n in range(2):
        for src, dst in ((first, second), (second, first)):
            for tid in sorted(src.ids(src.projects / project)):
                dst.take(src.export(tid, tmp / f"{src.name}-{tid}-{n}"))


@pytest.mark.parametrize("a_first", [True, False], ids=["A-began-first", "B-began-first"])
@pytest.mark.parametrize("exchange", [_crossing, _a_then_b, _b_then_a])
def test_both_machines_reach_the_same_threads(
    pair: tuple[Machine, Machine], tmp_path: Path, a_first: bool, exchange: Exchange
) -> None:
    a, b = pair
    loser = _diverge(a, b, a_first)
    exchange(a, b, tmp_path)
    _converged(a, b, loser, a_first)


def test_the_moved_local_copy_is_backed_up_first(
    pair: tuple[Machine, Machine], tmp_path: Path
) -> None:
    a, b = pair
    loser = _diverge(a, b, a_first=True)  # A began first: B's own copy must move to the fork
    before = b.path(DOT_SPACE).read_bytes()
    res = b.take(a.export(DOT_SPACE, tmp_path / "xa"))
    assert res.action == "replaced" and res.session_id == DOT_SPACE
    assert any(p.read_bytes() == before for p in res.backups if p.is_file())
    assert any("continues as the fork" in w for w in res.warnings)
    fork = lineage.fork_id(DOT_SPACE, loser)
    assert b.ids() == {DOT_SPACE, fork}
    assert b.path(fork).read_bytes() == before.replace(DOT_SPACE.encode(), fork.encode())
    again = b.take(a.export(DOT_SPACE, tmp_path / "xa2"))  # the same bundle again: nothing new
    assert again.action == "unchanged" and b.ids() == {DOT_SPACE, fork}


def test_a_busy_local_thread_is_not_moved(pair: tuple[Machine, Machine], tmp_path: Path) -> None:
    a, b = pair
    loser = _diverge(a, b, a_first=True)
    held = b.path(DOT_SPACE)
    before = held.read_bytes()
    bundle = a.export(DOT_SPACE, tmp_path / "xa")
    code = "import sys, time; f = open(sys.argv[1], 'rb'); print('ok', flush=True); time.sleep(60)"
    proc = subprocess.Popen(
        ["codex", "-c", code, str(held)],
        executable=sys.executable,
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert proc.stdout is not None and proc.stdout.readline().strip() == "ok"
        with pytest.raises(SessionBusy, match=f"pid {proc.pid}"):
            b.take(bundle)
        assert held.read_bytes() == before and b.ids() == {DOT_SPACE}
    finally:
        proc.kill()
        proc.wait()
        assert proc.stdout is not None
        proc.stdout.close()
    assert b.take(bundle).action == "replaced"  # codex let go: the next import finishes it
    _sync_all(a, b, tmp_path)
    _converged(a, b, loser, a_first=True)


def test_a_fork_that_went_on_is_updated_not_forked_again(
    pair: tuple[Machine, Machine], tmp_path: Path
) -> None:
    a, b = pair
    loser = _diverge(a, b, a_first=True)
    _crossing(a, b, tmp_path)
    fork = lineage.fork_id(DOT_SPACE, loser)
    b.say("B goes on with its fork", "2099-01-02T09:00:00.000Z", fork)
    res = a.take(b.export(fork, tmp_path / "fork-on"))
    assert res.action == "updated" and res.session_id == fork
    old = a.take(b.export(DOT_SPACE, tmp_path / "x-again"))
    assert old.action == "unchanged"
    assert a.ids() == b.ids() == {DOT_SPACE, fork}
    assert a.keys(fork) == b.keys(fork)


def test_a_fork_of_the_fork_converges_too(pair: tuple[Machine, Machine], tmp_path: Path) -> None:
    """Both machines went on with the fork apart as well: one fork of it, the same on both."""
    a, b = pair
    loser = _diverge(a, b, a_first=True)
    _crossing(a, b, tmp_path)
    fork = lineage.fork_id(DOT_SPACE, loser)
    ka = a.say("A on the fork", "2099-01-03T09:00:00.000Z", fork)
    kb = b.say("B on the fork", "2099-01-03T08:00:00.000Z", fork)  # B began first
    xa, xb = a.export(fork, tmp_path / "fa"), b.export(fork, tmp_path / "fb")
    a.take(xb)
    b.take(xa)
    _sync_all(a, b, tmp_path)
    second = lineage.fork_id(fork, ka)
    assert a.ids() == b.ids() == {DOT_SPACE, fork, second}
    for tid in a.ids():
        assert a.keys(tid) == b.keys(tid), tid
    assert "B on the fork" in a.path(fork).read_text() and kb != ka
    assert "A on the fork" in b.path(second).read_text()
    record = forks.lookup(a.settings.state_dir, "codex", second)
    assert record is not None and record.origin_id == fork


def test_a_diverged_thread_with_a_subagent_converges_with_the_same_ids(tmp_path: Path) -> None:
    """The fork's subagent threads get derived ids too: the same rows on both machines."""
    a_home, b_home = install(tmp_path / "A"), install(tmp_path / "B")
    _empty(b_home, DOT_SPACE, PARENT, CHILD, PLAIN, TOOLS, RESUMED)
    (b_home / "work" / "my.app").mkdir(parents=True)
    sa, sb = settings_for(a_home), settings_for(b_home)
    for s in (sa, sb):
        config.set_value(s, "path-map", (str(a_home / "projects"), str(b_home / "work")))
    a = Machine("a", a_home, sa, a_home / "projects")
    b = Machine("b", b_home, sb, b_home / "work")
    assert b.take(a.export(PARENT, tmp_path / "first")).action == "created"
    a.say("only at A", LATE, PARENT)
    kb = b.say("only at B", EARLY, PARENT)  # B began first: A's branch is the fork
    xa, xb = a.export(PARENT, tmp_path / "xa"), b.export(PARENT, tmp_path / "xb")
    a.take(xb)
    b.take(xa)
    _sync_all(a, b, tmp_path, "my.app")
    ka = (LATE, kb[1], "turn_context", None)
    fork = lineage.fork_id(PARENT, ka)
    app_a, app_b = a.projects / "my.app", b.projects / "my.app"
    assert fork in a.ids(app_a) and a.ids(app_a) - {fork} >= {PARENT}
    assert a.all_ids(app_a) >= {PARENT, CHILD, fork, lineage.child_id(fork, CHILD)}
    assert a.all_ids(app_a) == b.all_ids(app_b)
    for tid in a.all_ids(app_a):
        assert a.keys(tid) == b.keys(tid), tid
    for m in (a, b):
        assert "only at B" in m.path(PARENT).read_text()
        assert "only at A" in m.path(fork).read_text()
        with _db(m.home / ".codex" / "state_5.sqlite") as conn:
            edges = set(
                conn.execute("SELECT parent_thread_id, child_thread_id FROM thread_spawn_edges")
            )
        assert edges == {(PARENT, CHILD), (fork, lineage.child_id(fork, CHILD))}, m.name


def test_a_dry_run_of_a_convergence_writes_nothing(
    pair: tuple[Machine, Machine], tmp_path: Path
) -> None:
    a, b = pair
    _diverge(a, b, a_first=True)
    before = b.path(DOT_SPACE).read_bytes()
    bundle = a.export(DOT_SPACE, tmp_path / "xa")
    res = core.import_file(b.settings, bundle, ImportOptions(dry_run=True))
    assert res.action == "dry-run" and res.planned == "replaced"
    assert any("would move" in w for w in res.warnings)
    assert b.path(DOT_SPACE).read_bytes() == before and b.ids() == {DOT_SPACE}
    assert forks.all_forks(b.settings.state_dir) == {}


def test_a_fork_chosen_on_the_terminal_gets_the_derived_id(
    pair: tuple[Machine, Machine], tmp_path: Path
) -> None:
    from conftest import answering

    a, b = pair
    ka = a.say("only at A", LATE)
    b.say("only at B", EARLY)
    asked: list[str] = []
    options = ImportOptions(interactive=True, ask=answering("fork", asked))
    res = core.import_file(b.settings, a.export(DOT_SPACE, tmp_path / "xa"), options)
    assert asked and res.action == "forked"
    assert res.session_id == lineage.fork_id(DOT_SPACE, ka)
    assert "only at B" in b.path(DOT_SPACE).read_text()
    assert "only at A" in b.path(res.session_id).read_text()
    record = forks.lookup(b.settings.state_dir, "codex", res.session_id)
    assert record is not None and record.origin_id == DOT_SPACE
