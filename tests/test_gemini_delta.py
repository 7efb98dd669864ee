"""Delta bundles for Gemini CLI chats (real 0.61.0 chats, real bundles through core): after a
whole import from a sender, the next export carries only the chat's new tail, placed on the
prefix this machine holds (paths rewritten); a local chat that went on or was rewritten
refuses it (DeltaBaseMismatch) and the whole chat converges instead."""

from __future__ import annotations

import json
import uuid
from pathlib import Path

import pytest
from conftest import settings_for
from test_gemini_backend import SUBAGENT, gemini_cleanup, install

from commuter import config, core
from commuter.backends.gemini.chat import read_chat
from commuter.backends.gemini.place import _real_ids
from commuter.errors import DeltaBaseMismatch
from commuter.model import ImportOptions, ImportResult
from commuter.settings import Settings

SENDER = "a" * 16


class Side:
    def __init__(self, home: Path, settings: Settings, project: Path) -> None:
        self.home, self.settings, self.project = home, settings, project
        self.chats = home / ".gemini" / "tmp" / "my-app" / "chats"

    def path(self) -> Path:
        [found] = [
            p
            for p in self.chats.glob("session-*.jsonl")
            if (c := read_chat(p)).session_id == SUBAGENT and c.has_messages
        ]
        return found

    def ids(self) -> list[str]:
        return _real_ids(read_chat(self.path()))

    def append(self, *records: dict[str, object]) -> None:
        with self.path().open("a", encoding="utf-8") as fh:
            for record in records:
                fh.write(json.dumps(record) + "\n")

    def say(self, text: str, n: int = 0) -> str:
        mid = str(uuid.uuid4())
        when = f"2099-01-01T10:00:{n:02d}.000Z"
        self.append(
            {"id": mid, "timestamp": when, "type": "user", "content": [{"text": text}]},
            {"$set": {"lastUpdated": when}},
        )
        return mid


@pytest.fixture
def sides(tmp_path: Path) -> tuple[Side, Side, dict[str, tuple[int, str]]]:
    """A and B, B holding A's chat by a whole import from SENDER; the state B acknowledged."""
    a_home = install(tmp_path / "A")
    b_home = tmp_path / "B"
    (b_home / "code" / "my.app").mkdir(parents=True)
    sa, sb = settings_for(a_home), settings_for(b_home)
    for s in (sa, sb):
        config.set_value(s, "path-map", (str(a_home / "projects"), str(b_home / "code")))
    a = Side(a_home, sa, a_home / "projects" / "my.app")
    b = Side(b_home, sb, b_home / "code" / "my.app")
    sent, delta = _export(a, tmp_path / "whole", None)
    assert not delta
    assert _take(b, tmp_path / "whole").action == "created"
    return a, b, sent


def _export(
    side: Side, out: Path, base: dict[str, tuple[int, str]] | None
) -> tuple[dict[str, tuple[int, str]], bool]:
    ref = core.find_session(side.settings, SUBAGENT)
    with out.open("wb") as fh:
        done = core.export_session(side.settings, fh, ref, base=base)
    return dict(done.state), done.delta


def _take(side: Side, bundle: Path, **opts: object) -> ImportResult:
    options = ImportOptions(sender_verified=True, **opts)  # type: ignore[arg-type]
    return core.import_file(side.settings, bundle, options, sender=SENDER)


def test_an_increment_travels_as_its_tail_and_lands_on_the_prefix(
    sides: tuple[Side, Side, dict[str, tuple[int, str]]], tmp_path: Path
) -> None:
    a, b, base = sides
    held = b.path().read_bytes()
    a.say("more at A", 1)
    a.append(
        {
            "id": str(uuid.uuid4()),
            "timestamp": "2099-01-01T10:00:02.000Z",
            "type": "gemini",
            "content": "",
            "toolCalls": [
                {"id": "t1", "name": "read_file", "args": {"file_path": f"{a.project}/x"}}
            ],
        }
    )
    state, delta = _export(a, tmp_path / "d1", base)
    assert delta
    whole = tmp_path / "w1"
    _export(a, whole, None)
    assert (tmp_path / "d1").stat().st_size < whole.stat().st_size
    res = _take(b, tmp_path / "d1")
    assert res.action == "updated" and res.session_id == SUBAGENT
    assert b.ids() == a.ids()
    text = b.path().read_bytes()
    assert text.startswith(held) and f"{b.project}/x".encode() in text
    assert str(a.home).encode() not in text[len(held) :]
    assert any(p.is_file() for p in res.backups)  # the chat as it was
    assert gemini_cleanup(b.chats) == []
    # and the next one builds on what this one left
    a.say("still more", 3)
    _state, delta = _export(a, tmp_path / "d2", state)
    assert delta and _take(b, tmp_path / "d2").action == "updated"
    assert b.ids() == a.ids()


def test_a_local_resume_without_messages_still_takes_the_tail(
    sides: tuple[Side, Side, dict[str, tuple[int, str]]], tmp_path: Path
) -> None:
    a, b, base = sides
    chat = read_chat(b.path())
    # what gemini appends on a resume: a metadata line, the whole list again, no new message
    b.append(
        {"sessionId": SUBAGENT, "projectHash": "x", "startTime": chat.start_time, "kind": "main"},
        {"$set": {"messages": [chat.messages[m] for m in chat.ids]}},
    )
    a.say("more at A", 1)
    _state, delta = _export(a, tmp_path / "d", base)
    assert delta and _take(b, tmp_path / "d").action == "updated"
    assert b.ids() == a.ids()


def test_a_chat_that_went_on_here_refuses_the_delta_and_converges_whole(
    sides: tuple[Side, Side, dict[str, tuple[int, str]]], tmp_path: Path
) -> None:
    a, b, base = sides
    b.say("only at B", 1)
    a.say("only at A", 2)
    before = b.path().read_bytes()
    _state, delta = _export(a, tmp_path / "d", base)
    assert delta
    with pytest.raises(DeltaBaseMismatch):
        _take(b, tmp_path / "d")
    assert b.path().read_bytes() == before
    _export(a, tmp_path / "w", None)  # the sender then sends it whole
    res = _take(b, tmp_path / "w")
    assert res.action == "forked"  # B's turn began first: it keeps the id, A's is the fork
    assert "only at B" in b.path().read_text()
    assert res.transcript is not None and "only at A" in res.transcript.read_text()
    assert _real_ids(read_chat(res.transcript)) == a.ids()


def test_a_rewritten_local_chat_refuses_the_delta(
    sides: tuple[Side, Side, dict[str, tuple[int, str]]], tmp_path: Path
) -> None:
    a, b, base = sides
    path = b.path()
    data = path.read_bytes()
    assert b"2026-11-24T14:07" in data
    path.write_bytes(data.replace(b"2026-11-24T14:07", b"2026-11-24T14:06", 1))
    a.say("more at A", 1)
    _state, delta = _export(a, tmp_path / "d", base)
    assert delta
    with pytest.raises(DeltaBaseMismatch):
        _take(b, tmp_path / "d")
    with pytest.raises(DeltaBaseMismatch):  # nor is one taken from a plain drop
        core.import_file(b.settings, tmp_path / "d", ImportOptions())
