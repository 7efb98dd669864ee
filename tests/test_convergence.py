"""Convergence: two machines whose copies of one session diverged end up, whichever order the
bundles cross in, with the same sessions under the same ids, every message on both, and the
fork marked as a fork on both (Claude Code, real bundles through core.export/import)."""

from __future__ import annotations

import json
import uuid
from collections.abc import Callable
from pathlib import Path

import pytest
from claude_home import DOT_SPACE, install, transcript
from conftest import settings_for

from commuter import config, core, forks
from commuter.backends.claude import lineage
from commuter.errors import SessionBusy
from commuter.model import ImportOptions, ImportResult
from commuter.settings import Settings

PROJECT = "My Project.v2"


class Machine:
    """One fake machine: its home, settings, and the project folder of the session."""

    def __init__(self, name: str, home: Path, settings: Settings, project: Path) -> None:
        self.name, self.home, self.settings, self.project = name, home, settings, project

    def path(self, sid: str) -> Path:
        return transcript(self.home, self.project, sid)

    def ids(self) -> set[str]:
        return {p.stem for p in self.path(DOT_SPACE).parent.glob("*.jsonl")}

    def chain(self, sid: str) -> list[bytes]:
        return lineage.uuid_chain(self.path(sid))

    def say(self, text: str, when: str) -> str:
        """Append one user entry (chained to the last one, as claude writes it)."""
        path = self.path(DOT_SPACE)
        last = [json.loads(x) for x in path.read_text().splitlines() if '"uuid"' in x][-1]
        entry = {
            "parentUuid": last["uuid"],
            "type": "user",
            "uuid": str(uuid.uuid4()),
            "sessionId": DOT_SPACE,
            "cwd": str(self.project),
            "timestamp": when,
            "message": {"role": "user", "content": text},
        }
        with path.open("a", encoding="utf-8") as fh:
            fh.write(json.dumps(entry, separators=(",", ":")) + "\n")
        return str(entry["uuid"])

    def export(self, sid: str, out: Path) -> Path:
        ref = core.find_session(self.settings, sid)
        with out.open("wb") as fh:
            core.export_session(self.settings, fh, ref)
        return out

    def take(self, bundle: Path) -> ImportResult:
        return core.import_file(self.settings, bundle, ImportOptions(origin="the other"))


@pytest.fixture
def pair(tmp_path: Path) -> tuple[Machine, Machine]:
    a_home = install(tmp_path / "A")
    b_home = tmp_path / "B"
    (b_home / "code" / PROJECT).mkdir(parents=True)
    sa, sb = settings_for(a_home), settings_for(b_home)
    for s in (sa, sb):
        config.set_value(s, "path-map", (str(a_home / "projects"), str(b_home / "code")))
    a = Machine("a", a_home, sa, a_home / "projects" / PROJECT)
    b = Machine("b", b_home, sb, b_home / "code" / PROJECT)
    assert b.take(a.export(DOT_SPACE, tmp_path / "first.bundle")).action == "created"
    return a, b


def _diverge(a: Machine, b: Machine, a_first: bool) -> tuple[str, str]:
    """Both go on apart; the side named by `a_first` began first. The entries' uuids."""
    early, late = "2099-01-01T10:00:00.000Z", "2099-01-01T10:05:00.000Z"
    ua = a.say("only at A: add the parser", early if a_first else late)
    ub = b.say("only at B: fix the lexer", late if a_first else early)
    a.say("A goes on", "2099-01-01T11:00:00.000Z")
    return ua, ub


def _converged(a: Machine, b: Machine, ua: str, ub: str, a_first: bool) -> None:
    loser = ub if a_first else ua
    fork = lineage.fork_id(DOT_SPACE, loser.encode())
    assert a.ids() == b.ids() and {DOT_SPACE, fork} <= a.ids()
    for sid in a.ids():
        assert a.chain(sid) == b.chain(sid), sid
    winner_text = "only at A" if a_first else "only at B"
    loser_text = "only at B" if a_first else "only at A"
    for m in (a, b):
        assert winner_text in m.path(DOT_SPACE).read_text()
        assert loser_text not in m.path(DOT_SPACE).read_text()
        assert loser_text in m.path(fork).read_text()
        record = forks.lookup(m.settings.state_dir, "claude", fork)
        assert record is not None and record.origin_id == DOT_SPACE, m.name
        # the fork names itself everywhere, and keeps every message of its branch
        entries = [json.loads(x) for x in m.path(fork).read_text().splitlines() if x.strip()]
        assert {e["sessionId"] for e in entries if "sessionId" in e} == {fork}
    assert "A goes on" in (a.path(DOT_SPACE if a_first else fork)).read_text()


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


def _sync_all(first: Machine, second: Machine, tmp: Path) -> None:
    """Everything each has goes to the other (what the sync daemons do), twice over."""
    for n in range(2):
        for src, dst in ((first, second), (second, first)):
            for sid in sorted(src.ids()):
                dst.take(src.export(sid, tmp / f"{src.name}-{sid}-{n}"))


@pytest.mark.parametrize("a_first", [True, False], ids=["A-began-first", "B-began-first"])
@pytest.mark.parametrize("exchange", [_crossing, _a_then_b, _b_then_a])
def test_both_machines_reach_the_same_sessions(
    pair: tuple[Machine, Machine], tmp_path: Path, a_first: bool, exchange: Exchange
) -> None:
    a, b = pair
    ua, ub = _diverge(a, b, a_first)
    exchange(a, b, tmp_path)
    _converged(a, b, ua, ub, a_first)
    assert len(a.ids()) == 2  # one fork of one divergence, on each machine


def test_the_moved_local_copy_is_backed_up_first(
    pair: tuple[Machine, Machine], tmp_path: Path
) -> None:
    a, b = pair
    _diverge(a, b, a_first=True)  # A began first: B's own copy must move to the fork
    before = b.path(DOT_SPACE).read_bytes()
    res = b.take(a.export(DOT_SPACE, tmp_path / "xa"))
    assert res.action == "replaced" and res.session_id == DOT_SPACE
    assert any(p.read_bytes() == before for p in res.backups if p.is_file())
    assert any("continues as the fork" in w for w in res.warnings)
    again = b.take(a.export(DOT_SPACE, tmp_path / "xa2"))  # the same bundle again: nothing new
    assert again.action == "unchanged" and len(b.ids()) == 2


def test_a_busy_local_copy_is_not_moved(
    pair: tuple[Machine, Machine], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from commuter.backends.claude import procs

    a, b = pair
    _diverge(a, b, a_first=True)
    before = b.path(DOT_SPACE).read_bytes()
    monkeypatch.setattr(procs, "session_busy", lambda *_a: "claude (pid 4242) is writing to it")
    bundle = a.export(DOT_SPACE, tmp_path / "xa")
    with pytest.raises(SessionBusy):
        b.take(bundle)
    assert b.path(DOT_SPACE).read_bytes() == before and b.ids() == {DOT_SPACE}
    monkeypatch.undo()  # the agent let go: the next import finishes it
    assert b.take(bundle).action == "replaced"
    _sync_all(a, b, tmp_path)
    assert a.ids() == b.ids() and len(a.ids()) == 2


def test_a_fork_that_went_on_is_updated_not_forked_again(
    pair: tuple[Machine, Machine], tmp_path: Path
) -> None:
    a, b = pair
    _ua, ub = _diverge(a, b, a_first=True)
    fork = lineage.fork_id(DOT_SPACE, ub.encode())
    b.take(a.export(DOT_SPACE, tmp_path / "x1"))  # B's branch -> fork at B
    a.take(b.export(fork, tmp_path / "x2"))  # the fork arrives at A: created, marked a fork
    assert forks.lookup(a.settings.state_dir, "claude", fork) is not None
    old_b = b.export(DOT_SPACE, tmp_path / "x-old")  # an old copy of X (A's branch)
    a.take(old_b)
    # an out-of-date bundle of B's original branch arrives at A again: its fork is found
    assert a.ids() == {DOT_SPACE, fork}
