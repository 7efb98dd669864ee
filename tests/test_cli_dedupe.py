"""The same session pushed twice is one item to pull: in the shared folder a newer push
replaces this machine's older unread drop; on the relay the pull imports the newest per sender
and session and then removes the older ones from its own mailbox."""

from __future__ import annotations

import sys
import time
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent / "transports"))
sys.path.insert(0, str(Path(__file__).parent / "relay"))

from claude_home import TOOLS, transcript
from relayhelp import RelayProcess
from transhelp import env_for, make_world, run, say

from commuter import config


@pytest.fixture
def world(tmp_path):
    w = make_world(tmp_path)
    return w, env_for(w.a.home), env_for(w.b.home)


def _grow_whole(path: Path, text: str) -> None:
    """Append more than the session held: the next push is the whole session, not a delta."""
    say(path, text + " " + "x" * ((4 << 20) + 2 * path.stat().st_size))


def _drops(shared: Path) -> list[Path]:
    return sorted(p for p in shared.iterdir() if not p.name.startswith("."))


def test_a_newer_folder_push_replaces_the_older_unread_drop(world):
    w, env_a, env_b = world
    foreign = w.shared / "20250101T000000-0123456789ab.sealed"
    foreign.write_bytes(b"not ours")  # another machine's drop (or anyone's file): never touched
    first = run(env_a, "push", TOOLS, cwd=w.project_a)
    assert first.returncode == 0, first.stderr
    [older] = [p for p in _drops(w.shared) if p != foreign]
    _grow_whole(transcript(w.a.home, w.project_a, TOOLS), "one more thing")
    second = run(env_a, "push", TOOLS, cwd=w.project_a)
    assert second.returncode == 0, second.stderr
    assert f"removed {older.name}, an unread older push" in second.stderr
    drops = [p for p in _drops(w.shared) if p != foreign]
    assert len(drops) == 1 and drops[0] != older
    assert foreign.read_bytes() == b"not ours"
    pulled = run(env_b, "pull", cwd=w.b.home)
    assert pulled.stdout.count("from alice") == 1, pulled.stdout
    assert "imported: session" in pulled.stdout and "unchanged" not in pulled.stdout
    assert "one more thing" in transcript(w.b.home, w.project_b, TOOLS).read_text()


def test_an_older_drop_a_recipient_already_marked_is_left_alone(world):
    w, env_a, _env_b = world
    assert run(env_a, "push", TOOLS, cwd=w.project_a).returncode == 0
    [older] = _drops(w.shared)
    marker = w.shared / f".{older.name}.ack-SOMEDEVICE"
    marker.write_bytes(b"")
    _grow_whole(transcript(w.a.home, w.project_a, TOOLS), "one more thing")
    assert run(env_a, "push", TOOLS, cwd=w.project_a).returncode == 0
    assert older.exists() and marker.exists()
    assert len(_drops(w.shared)) == 2


def test_an_older_drop_changed_since_it_was_written_is_left_alone(world):
    w, env_a, _env_b = world
    assert run(env_a, "push", TOOLS, cwd=w.project_a).returncode == 0
    [older] = _drops(w.shared)
    older.write_bytes(older.read_bytes() + b"x")  # not the bytes this machine wrote
    _grow_whole(transcript(w.a.home, w.project_a, TOOLS), "one more thing")
    assert run(env_a, "push", TOOLS, cwd=w.project_a).returncode == 0
    assert older.exists() and len(_drops(w.shared)) == 2


def test_a_session_pushed_twice_to_the_relay_is_one_import(world, tmp_path):
    w, env_a, env_b = world
    relay = RelayProcess(tmp_path / "relay-data", tmp_path / "relayhome")
    try:
        for s in (w.a, w.b):
            config.set_value(s, "relay", (relay.url,))
        config.unset_value(w.b, "transfer-dir")
        assert (
            run(env_a, "push", TOOLS, "--to", "bob", "--via", "relay", cwd=w.project_a).returncode
            == 0
        )
        time.sleep(1.1)  # created_at has whole seconds: a tie decides nothing
        _grow_whole(transcript(w.a.home, w.project_a, TOOLS), "the newer one")
        assert (
            run(env_a, "push", TOOLS, "--to", "bob", "--via", "relay", cwd=w.project_a).returncode
            == 0
        )
        assert len(list((tmp_path / "relay-data").rglob("*.sealed"))) == 2
        pulled = run(env_b, "pull", cwd=w.b.home)
        assert pulled.returncode == 0, pulled.stderr
        assert pulled.stdout.count("via relay") == 1, pulled.stdout
        assert "imported: session" in pulled.stdout and "unchanged" not in pulled.stdout
        assert "an older push of the same session" in pulled.stderr
        assert "the newer one" in transcript(w.b.home, w.project_b, TOOLS).read_text()
        assert list((tmp_path / "relay-data").rglob("*.sealed")) == []
        assert run(env_b, "pull", cwd=w.b.home).stdout.strip() == "nothing to pull"
    finally:
        relay.kill()


def test_a_dry_run_removes_nothing(world, tmp_path):
    w, env_a, env_b = world
    relay = RelayProcess(tmp_path / "relay-data", tmp_path / "relayhome")
    try:
        for s in (w.a, w.b):
            config.set_value(s, "relay", (relay.url,))
        for text in ("first", "second"):
            say(transcript(w.a.home, w.project_a, TOOLS), text)
            pushed = run(env_a, "push", TOOLS, "--to", "bob", "--via", "relay", cwd=w.project_a)
            assert pushed.returncode == 0, pushed.stderr
        dry = run(env_b, "pull", "--via", "relay", "--dry-run", cwd=w.b.home)
        assert dry.returncode == 0, dry.stderr
        assert len(list((tmp_path / "relay-data").rglob("*.sealed"))) == 2
    finally:
        relay.kill()


def test_deltas_after_a_whole_push_are_all_imported_in_order(world, tmp_path):
    w, env_a, env_b = world
    at_a = transcript(w.a.home, w.project_a, TOOLS)
    for text in ("first", "second", "third"):  # whole, then deltas on it (nothing confirmed)
        time.sleep(1.1)  # drops are named and ordered by the second they were made
        say(at_a, text)
        pushed = run(env_a, "push", TOOLS, cwd=w.project_a)
        assert pushed.returncode == 0, pushed.stderr
    assert len(_drops(w.shared)) == 3  # a delta never replaces the drop it builds on
    pulled = run(env_b, "pull", cwd=w.b.home)
    assert pulled.returncode == 0, pulled.stderr
    text = transcript(w.b.home, w.project_b, TOOLS).read_text()
    assert "first" in text and "second" in text and "third" in text
    assert _drops(w.shared) == []
