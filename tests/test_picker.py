"""The session picker: export, push and send with no id on a terminal, in a project with
several sessions, list them newest first and take the number typed (Enter: the newest)."""

from __future__ import annotations

import os
import pty
import re
import select
import subprocess
import sys
import time
from pathlib import Path

import pytest
from claude_home import PLAIN, PLAN, RESUMED, SUBAGENT, TOOLS, transcript
from peerhelp import ServeProcess
from transhelp import ALICE, BOB, env_for, make_world, run, trust

from commuter.commands.table import cells, fit_words
from commuter.picker import Choice, menu_lines

PROMPT = b"session number"
# my.app's five sessions, newest first once _order has run
ORDER = (PLAIN, PLAN, TOOLS, RESUMED, SUBAGENT)


def _order(home: Path, project: Path) -> None:
    now = time.time()
    for i, sid in enumerate(ORDER):
        stamp = now - 60 * (i + 1) * 10
        os.utime(transcript(home, project, sid), (stamp, stamp))


@pytest.fixture
def world(tmp_path):
    w = make_world(tmp_path)
    _order(w.a.home, w.project_a)
    return w


def on_tty(
    env, *args, cwd: Path, answer: bytes | None, when: bytes = PROMPT
) -> tuple[int, str, str]:
    """Run commuter with stdin and stderr on a pseudo-terminal, typing `answer` once `when`
    shows (the picker's question; None: never type, nothing must ask). (status, stdout,
    what the terminal got)."""
    master, slave = pty.openpty()
    proc = subprocess.Popen(
        [sys.executable, "-m", "commuter", *args],
        env={**env, "TERM": "dumb", "COLUMNS": "100", "COMMUTER_NO_PROGRESS": "1"},
        cwd=cwd,
        stdin=slave,
        stdout=subprocess.PIPE,
        stderr=slave,
    )
    os.close(slave)
    got = b""
    deadline = time.monotonic() + 60
    typed = False
    try:
        while time.monotonic() < deadline:
            ready, _, _ = select.select([master], [], [], 0.2)
            if ready:
                try:
                    data = os.read(master, 65536)
                except OSError:  # EIO: the child closed the terminal
                    break
                if not data:
                    break
                got += data
            if answer is not None and not typed and when in got:
                os.write(master, answer)
                typed = True
            if proc.poll() is not None and not ready:
                break
        out, _ = proc.communicate(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()
        os.close(master)
    return proc.returncode, out.decode(), got.decode(errors="replace")


def _exported(tty: str) -> str:
    found = re.findall(r"exported session (\S+) ", tty)
    assert len(found) == 1, tty
    return found[0]


def test_export_on_a_terminal_takes_the_number_typed(world, tmp_path):
    out = tmp_path / "s.bundle"
    env = env_for(world.a.home)
    status, _, tty = on_tty(env, "export", "-o", str(out), cwd=world.project_a, answer=b"2\n")
    assert status == 0, tty
    assert _exported(tty) == PLAN  # the second-newest
    listing = tty[: tty.index("session number")]
    shown = re.findall(r"^ *(\d+)\) +(\S+) ", listing, re.MULTILINE)
    assert shown == [(str(n), sid[:7]) for n, sid in enumerate(ORDER, 1)], listing
    assert "2 msgs" in listing and "Plan a small refactor." in listing


def test_enter_takes_the_newest_and_a_wrong_number_is_asked_again(world, tmp_path):
    env = env_for(world.a.home)
    status, _, tty = on_tty(
        env, "export", "-o", str(tmp_path / "a"), cwd=world.project_a, answer=b"\n"
    )
    assert status == 0, tty
    assert _exported(tty) == PLAIN
    status, _, tty = on_tty(
        env, "export", "-o", str(tmp_path / "b"), cwd=world.project_a, answer=b"9\n3\n"
    )
    assert status == 0, tty
    assert "not in the range" in tty  # 9 is refused, then asked again
    assert _exported(tty) == TOOLS


def test_latest_and_an_id_and_no_terminal_never_ask(world, tmp_path):
    env = env_for(world.a.home)
    for args, want in (
        (("--latest",), PLAIN),
        ((RESUMED[:8],), RESUMED),
    ):
        status, _, tty = on_tty(
            env, "export", *args, "-o", str(tmp_path / want), cwd=world.project_a, answer=None
        )
        assert status == 0, tty
        assert PROMPT.decode() not in tty
        assert _exported(tty) == want
    result = run(env, "export", "-o", str(tmp_path / "piped"), cwd=world.project_a)
    assert result.returncode == 0, result.stderr
    assert "session number" not in result.stderr and PLAIN in result.stderr


def test_a_project_with_one_session_does_not_ask(tmp_path):
    w = make_world(tmp_path)
    project = w.a.home / "projects" / "tui_app"  # one session only
    status, _, tty = on_tty(
        env_for(w.a.home), "export", "-o", str(tmp_path / "t"), cwd=project, answer=None
    )
    assert status == 0, tty
    assert PROMPT.decode() not in tty


def test_push_on_a_terminal_pushes_the_session_picked(world):
    status, out, tty = on_tty(env_for(world.a.home), "push", cwd=world.project_a, answer=b"3\n")
    assert status == 0, tty
    assert f"pushed {TOOLS[:7]} " in out, (out, tty)
    status, out, tty = on_tty(
        env_for(world.a.home), "push", "--latest", cwd=world.project_a, answer=None
    )
    assert status == 0, tty
    assert f"pushed {PLAIN[:7]} " in out and PROMPT.decode() not in tty


def test_send_on_a_terminal_sends_the_session_picked_from_a_subfolder(tmp_path):
    w = make_world(tmp_path, pair=False)
    _order(w.a.home, w.project_a)
    env_a, env_b = env_for(w.a.home), env_for(w.b.home)
    server = ServeProcess(env_b)
    try:
        trust(w.a, "bob", BOB, server.address)
        trust(w.b, "alice", ALICE)
        sub = w.project_a / "notes"
        status, out, tty = on_tty(
            env_a, "send", "bob", "--address", server.address, cwd=sub, answer=b"4\n"
        )
    finally:
        server.stop()
    assert status == 0, tty
    assert f"sent session {RESUMED} to bob" in out, (out, tty)


def test_menu_lines_fit_the_width_and_cut_prompts_after_a_word():
    long = "fix the flaky login test please and then " + "word " * 30
    choices = [
        Choice("aaaa1111-x", "aaaa111", "claude", "5 min ago", 12, long),
        Choice("bbbb2222-y", "bbbb222", "codex", "2 days ago", None, ""),
        Choice("cccc3333-z", "cccc333", "codex", "3 days ago", 7, "日本語のプロンプト " * 10),
    ]
    lines = menu_lines(choices, 60)
    assert all(cells(line) <= 60 for line in lines), lines
    assert lines[0].startswith(" 1)  aaaa111  claude  5 min ago   12 msgs  fix the flaky")
    assert lines[0].endswith("…") and not lines[0].endswith(" …") and "wor…" not in lines[0]
    assert lines[1] == " 2)  bbbb222  codex   2 days ago        -"
    assert lines[2].endswith("…")
    assert fit_words("abcdefghij", 5) == "abcd…"  # one word wider than the room
