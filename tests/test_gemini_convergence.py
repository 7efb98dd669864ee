"""Convergence for Gemini CLI chats: two machines whose copies of one chat diverged end up,
whichever order the bundles cross in, with the same chats under the same ids, every message
on both, one fork of the divergence (the same id on both, marked a fork of its origin) with
its subagent chats (real 0.61.0 chats, real bundles through core.export/import)."""

from __future__ import annotations

import json
import uuid
from collections.abc import Callable
from pathlib import Path

import pytest
from conftest import settings_for
from test_gemini_backend import SUBAGENT, install

from commuter import config, core, forks
from commuter.backends.gemini.chat import chat_files, read_chat
from commuter.backends.gemini.lineage import fork_id
from commuter.backends.gemini.place import _real_ids
from commuter.errors import SessionBusy
from commuter.model import ImportOptions, ImportResult
from commuter.settings import Settings

SID = SUBAGENT  # a chat with a subagent chat beside it


class Machine:
    """One fake machine: its home, settings and the gemini folder of the project."""

    def __init__(self, name: str, home: Path, settings: Settings, project: Path) -> None:
        self.name, self.home, self.settings, self.project = name, home, settings, project
        self.folder = home / ".gemini" / "tmp" / "my-app"
        self.first = ""  # the session's first message id

    def chats(self) -> dict[str, Path]:
        """The chats of the session's family (same first message): id -> file."""
        from commuter.backends.gemini import GeminiBackend

        dirs = GeminiBackend(self.settings).dirs
        return {
            str(cf.chat.session_id): cf.path
            for cf in chat_files(dirs, self.folder)
            if cf.chat.has_messages and _real_ids(cf.chat)[:1] == [self.first]
        }

    def ids(self) -> set[str]:
        return set(self.chats())

    def path(self, sid: str) -> Path:
        """The chat file of `sid` with messages (there is one)."""
        [found] = [
            p
            for p in (self.folder / "chats").glob("session-*.jsonl")
            if (chat := read_chat(p)).session_id == sid and chat.has_messages
        ]
        return found

    def messages(self, sid: str) -> list[str]:
        return _real_ids(read_chat(self.path(sid)))

    def subagents(self, sid: str) -> set[str]:
        return {p.name for p in (self.folder / "chats" / sid).glob("*.jsonl")}

    def say(self, text: str, when: str, sid: str = SID) -> str:
        """Append one user message, as gemini writes it."""
        mid = str(uuid.uuid4())
        record = {"id": mid, "timestamp": when, "type": "user", "content": [{"text": text}]}
        with self.path(sid).open("a", encoding="utf-8") as fh:
            fh.write(json.dumps(record) + "\n" + json.dumps({"$set": {"lastUpdated": when}}) + "\n")
        return mid

    def export(self, sid: str, out: Path) -> Path:
        ref = core.find_session(self.settings, sid)
        with out.open("wb") as fh:
            core.export_session(self.settings, fh, ref)
        return out

    def take(self, bundle: Path) -> ImportResult:
        return core.import_file(self.settings, bundle, ImportOptions(origin="tester@other x"))


@pytest.fixture
def pair(tmp_path: Path) -> tuple[Machine, Machine]:
    a_home = install(tmp_path / "A")
    b_home = tmp_path / "B"
    (b_home / "code" / "my.app").mkdir(parents=True)
    sa, sb = settings_for(a_home), settings_for(b_home)
    for s in (sa, sb):
        config.set_value(s, "path-map", (str(a_home / "projects"), str(b_home / "code")))
    a = Machine("a", a_home, sa, a_home / "projects" / "my.app")
    b = Machine("b", b_home, sb, b_home / "code" / "my.app")
    a.first = b.first = _real_ids(read_chat(a.path(SID)))[0]
    assert b.take(a.export(SID, tmp_path / "first.bundle")).action == "created"
    assert b.subagents(SID) == a.subagents(SID) != set()
    return a, b


def _diverge(a: Machine, b: Machine, a_first: bool) -> tuple[str, str]:
    """Both go on apart; the side named by `a_first` began first. The messages' ids."""
    early, late = "2099-01-01T10:00:00.000Z", "2099-01-01T10:05:00.000Z"
    ma = a.say("only at A: add the parser", early if a_first else late)
    mb = b.say("only at B: fix the lexer", late if a_first else early)
    a.say("A goes on", "2099-01-01T11:00:00.000Z")
    return ma, mb


def _converged(a: Machine, b: Machine, ma: str, mb: str, a_first: bool) -> None:
    fork = fork_id(SID, mb if a_first else ma)
    assert a.ids() == b.ids() == {SID, fork}
    for sid in a.ids():
        assert a.messages(sid) == b.messages(sid), sid
        assert a.subagents(sid) == b.subagents(sid) != set(), sid
    winner, loser = ("only at A", "only at B") if a_first else ("only at B", "only at A")
    for m in (a, b):
        assert winner in m.path(SID).read_text() and loser not in m.path(SID).read_text()
        assert loser in m.path(fork).read_text() and winner not in m.path(fork).read_text()
        record = forks.lookup(m.settings.state_dir, "gemini", fork)
        assert record is not None and record.origin_id == SID, m.name
        # the fork names itself everywhere, in its records and its file name
        records = [json.loads(x) for x in m.path(fork).read_text().splitlines() if x.strip()]
        named = {r["sessionId"] for r in records if "sessionId" in r}
        named |= {r["$set"]["sessionId"] for r in records if "sessionId" in r.get("$set", {})}
        assert named == {fork} and m.path(fork).name.endswith(f"-{fork[:8]}.jsonl")
    assert "A goes on" in a.path(SID if a_first else fork).read_text()


Exchange = Callable[[Machine, Machine, Path], None]


def _crossing(a: Machine, b: Machine, tmp: Path) -> None:
    """Both export before either imports: the bundles cross."""
    xa, xb = a.export(SID, tmp / "xa"), b.export(SID, tmp / "xb")
    a.take(xb)
    b.take(xa)
    _sync_all(a, b, tmp)


def _a_then_b(a: Machine, b: Machine, tmp: Path) -> None:
    b.take(a.export(SID, tmp / "xa"))
    _sync_all(b, a, tmp)


def _b_then_a(a: Machine, b: Machine, tmp: Path) -> None:
    a.take(b.export(SID, tmp / "xb"))
    _sync_all(a, b, tmp)


def _sync_all(first: Machine, second: Machine, tmp: Path) -> None:
    """Everything each has goes to the other (what the sync daemons do), twice over."""
    for n in range(2):
        for src, dst in ((first, second), (second, first)):
            for sid in sorted(src.ids()):
                dst.take(src.export(sid, tmp / f"{src.name}-{sid}-{n}"))


@pytest.mark.parametrize("a_first", [True, False], ids=["A-began-first", "B-began-first"])
@pytest.mark.parametrize("exchange", [_crossing, _a_then_b, _b_then_a])
def test_both_machines_reach_the_same_chats(
    pair: tuple[Machine, Machine], tmp_path: Path, a_first: bool, exchange: Exchange
) -> None:
    a, b = pair
    ma, mb = _diverge(a, b, a_first)
    exchange(a, b, tmp_path)
    _converged(a, b, ma, mb, a_first)


def test_the_moved_local_chat_is_backed_up_first(
    pair: tuple[Machine, Machine], tmp_path: Path
) -> None:
    a, b = pair
    _ma, mb = _diverge(a, b, a_first=True)  # A began first: B's own chat moves to the fork
    before = b.path(SID).read_bytes()
    res = b.take(a.export(SID, tmp_path / "xa"))
    assert res.action == "replaced" and res.session_id == SID
    assert any(p.read_bytes() == before for p in res.backups if p.is_file())
    assert any("continues as the fork" in w for w in res.warnings)
    fork = fork_id(SID, mb)
    assert b.ids() == {SID, fork} and "only at B" in b.path(fork).read_text()
    again = b.take(a.export(SID, tmp_path / "xa2"))  # the same bundle again: nothing new
    assert again.action == "unchanged" and b.ids() == {SID, fork}


def test_a_chat_held_by_a_running_gemini_is_not_moved(
    pair: tuple[Machine, Machine], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from commuter.backends.gemini import procs

    a, b = pair
    _diverge(a, b, a_first=True)
    before = b.path(SID).read_bytes()
    monkeypatch.setattr(procs, "busy_pids", lambda _project: [4242])
    bundle = a.export(SID, tmp_path / "xa")
    with pytest.raises(SessionBusy):
        b.take(bundle)
    assert b.path(SID).read_bytes() == before and b.ids() == {SID}
    monkeypatch.undo()  # gemini quit: the next import finishes it
    assert b.take(bundle).action == "replaced"
    _sync_all(a, b, tmp_path)
    assert a.ids() == b.ids() and len(a.ids()) == 2


def test_a_fork_that_went_on_is_updated_not_forked_again(
    pair: tuple[Machine, Machine], tmp_path: Path
) -> None:
    a, b = pair
    _ma, mb = _diverge(a, b, a_first=True)
    fork = fork_id(SID, mb)
    stale = b.export(SID, tmp_path / "x-stale")  # B's own branch, before it moved
    b.take(a.export(SID, tmp_path / "x1"))  # B's branch -> fork at B
    b.say("the fork goes on at B", "2099-01-01T12:00:00.000Z", sid=fork)
    assert a.take(b.export(fork, tmp_path / "x2")).action == "created"
    assert forks.lookup(a.settings.state_dir, "gemini", fork) is not None
    # an out-of-date bundle of B's original branch arrives at A: its fork is found, kept
    res = a.take(stale)
    assert res.action == "unchanged" and res.session_id == fork
    assert a.ids() == {SID, fork} and "the fork goes on" in a.path(fork).read_text()
    # the fork went on at both: one level down, decided by the same rule, alike on both
    a.say("the fork goes on at A", "2099-01-01T13:00:00.000Z", sid=fork)
    b.say("the fork goes on at B again", "2099-01-01T14:00:00.000Z", sid=fork)
    _crossing_of(a, b, fork, tmp_path)
    assert a.ids() == b.ids() and len(a.ids()) == 3
    for sid in a.ids():
        assert a.messages(sid) == b.messages(sid)


def _crossing_of(a: Machine, b: Machine, sid: str, tmp: Path) -> None:
    xa, xb = a.export(sid, tmp / "ya"), b.export(sid, tmp / "yb")
    a.take(xb)
    b.take(xa)
    _sync_all(a, b, tmp)


@pytest.mark.parametrize("went_on", [False, True], ids=["as-it-was", "went-on"])
def test_a_move_that_stopped_half_way_is_finished(
    pair: tuple[Machine, Machine], tmp_path: Path, went_on: bool
) -> None:
    from commuter.backends.gemini.chat import Rewriter

    a, b = pair
    _ma, mb = _diverge(a, b, a_first=True)
    fork = fork_id(SID, mb)
    # an earlier import wrote B's branch as the fork, then stopped before replacing the chat
    local = b.path(SID)
    moved = local.with_name(local.name.replace(SID[:8], fork[:8]))
    with moved.open("wb") as out:
        Rewriter([], old_sid=SID, new_sid=fork).copy(local, out)
    if went_on:
        b.say("the fork went on", "2099-01-01T12:00:00.000Z", sid=fork)
    res = b.take(a.export(SID, tmp_path / "xa"))
    assert res.action == "replaced" and b.ids() == {SID, fork}
    assert ("the fork went on" in moved.read_text()) is went_on
    _sync_all(a, b, tmp_path)
    assert a.ids() == b.ids() == {SID, fork}
    for sid in a.ids():
        assert a.messages(sid) == b.messages(sid)
